// ublk devices whose server has died stay in the kernel (their id taken, /dev/ublkcN
// present) until someone deletes them. This finds and deletes them.
import { readdirSync, statSync } from 'node:fs';
import { isSystemError } from './errors.js';
import { hasFlag } from './kernel.js';
import { native, type NativeKernelDeviceInfo } from './native.js';
import { someProcessHasOpen } from './open-files.js';

export interface StaleDevice {
  id: number;
  serverPid: number;
  state: NativeKernelDeviceInfo['state'];
}

/** ids of every ublk device the kernel has, from /sys/class/ublk-char. */
export function ublkDeviceIds(): number[] {
  let names: string[];
  try {
    names = readdirSync('/sys/class/ublk-char');
  } catch {
    return [];
  }
  return names
    .map((n) => /^ublkc(\d+)$/.exec(n)?.[1])
    .filter((n): n is string => n !== undefined)
    .map(Number)
    .sort((a, b) => a - b);
}

/** Whether process pid exists (a device's server). */
export function serverAlive(pid: number): boolean {
  if (pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return isSystemError(err) && err.code === 'EPERM';
  }
}

/** Whether any process has /dev/ublkcN open: a server serving or tearing it down. */
function charDeviceHeld(id: number): boolean {
  let rdev: bigint;
  try {
    rdev = statSync(`/dev/ublkc${id}`, { bigint: true }).rdev;
  } catch {
    return false; // no node, so nobody can hold it
  }
  return someProcessHasOpen('char', rdev);
}

/**
 * Devices whose server process is gone and whose char device nobody holds open. A recoverable device
 * (quiesced, failing I/O, or about to be quiesced) waits for a new server to recover it, so it counts only
 * when includeQuiesced is set.
 */
export async function findStaleDevices(includeQuiesced = false): Promise<StaleDevice[]> {
  const stale: StaleDevice[] = [];
  for (const id of ublkDeviceIds()) {
    let info: NativeKernelDeviceInfo;
    try {
      info = await native().getDeviceInfo(id);
    } catch {
      continue; // gone meanwhile
    }
    if (serverAlive(info.serverPid) || charDeviceHeld(id)) continue;
    // A recoverable device whose server died waits for a new one ('quiesced', or
    // 'fail-io'); Linux 6.1 shows it 'live' for up to 5 s before it notices.
    const recoverable = hasFlag(info.flags, 'UBLK_F_USER_RECOVERY') && info.state !== 'dead';
    if (recoverable && !includeQuiesced) continue;
    stale.push({ id, serverPid: info.serverPid, state: info.state });
  }
  return stale;
}

export async function deleteStaleDevice(id: number): Promise<void> {
  await native().deleteDevice(id);
}
