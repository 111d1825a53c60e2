// Crash recovery (UBLK_F_USER_RECOVERY). A device added recoverable outlives its
// server: when the server dies (SIGKILL, crash, OOM) the kernel holds the device's I/O
// (state QUIESCED; with FAIL_IO it fails it meanwhile) until a new server takes it
// over with START_USER_RECOVERY ... END_USER_RECOVERY. This module decides the flags a
// device is added with and finds out whether a device id is such an orphan.
import { readFileSync } from 'node:fs';
import { UbloopError, invalid } from './errors.js';
import { hasFlag } from './kernel.js';
import { native, type NativeKernelDeviceInfo } from './native.js';
import { serverAlive } from './stale.js';

/**
 * What a device does when its server dies:
 * - 'reissue': holds its I/O for the next server, which gets the requests the dead one
 *   had taken but not completed again (UBLK_F_USER_RECOVERY | _REISSUE);
 * - 'fail-io': fails I/O with EIO until a new server takes over, and fails the taken
 *   requests too (UBLK_F_USER_RECOVERY | _FAIL_IO, Linux 6.13+);
 * - 'none': the kernel deletes the disk (today's `serve` behaviour).
 */
export type RecoveryMode = 'reissue' | 'fail-io' | 'none';
export const RECOVERY_MODES: readonly RecoveryMode[] = ['reissue', 'fail-io', 'none'];

const USER_RECOVERY = 1n << 3n;
const REISSUE = 1n << 4n;
const FAIL_IO = 1n << 9n;
const QUIESCE = 1n << 12n;

export function checkRecoveryMode(value: unknown, label = 'recovery'): RecoveryMode {
  if (typeof value === 'string' && (RECOVERY_MODES as readonly string[]).includes(value)) return value as RecoveryMode;
  throw invalid(`${label} must be one of ${RECOVERY_MODES.join(', ')}, got ${JSON.stringify(value) ?? 'nothing'}`);
}

/**
 * The UBLK_F_* bits ADD_DEV is asked for. 'fail-io' is refused, before anything is
 * added, where GET_FEATURES does not offer it (Linux 6.1 has no GET_FEATURES and no
 * FAIL_IO, but has USER_RECOVERY and REISSUE). The kernel drops the recovery flags for
 * an unprivileged device: such a device is never recoverable (its flags say so).
 */
export function recoveryFlags(mode: RecoveryMode, features: bigint | null = native().probeKernel().features): bigint {
  if (mode === 'none') return 0n;
  // QUIESCE (needs USER_RECOVERY) where offered: a live upgrade can hand the device over.
  const quiesce = features !== null && (features & QUIESCE) !== 0n ? QUIESCE : 0n;
  if (mode === 'reissue') return USER_RECOVERY | REISSUE | quiesce;
  if (features === null || (features & FAIL_IO) === 0n) {
    throw new UbloopError(
      'EOPNOTSUPP',
      `recovery mode 'fail-io' needs UBLK_F_USER_RECOVERY_FAIL_IO (Linux 6.13+), which this kernel does not offer${features === null ? ' (no GET_FEATURES: Linux 6.1)' : ''}; use 'reissue' or 'none'`,
    );
  }
  return USER_RECOVERY | FAIL_IO | quiesce;
}

/** What a ublk id is, seen by a server that wants to take it over. */
export type Orphan =
  | { kind: 'orphan'; info: NativeKernelDeviceInfo }
  | { kind: 'absent'; reason: string }
  | { kind: 'foreign'; reason: string };

export interface AwaitOptions {
  /** How long a device whose server died may take to become recoverable (6.1 notices every 5 s). */
  timeoutMs?: number;
  pollMs?: number;
  /** Device info by id (tests inject one). */
  info?: (id: number) => Promise<NativeKernelDeviceInfo>;
  alive?: (pid: number) => boolean;
  /** abandonOrphan: how long to wait for DEL_DEV before going on without it (it waits for the disk's last user). */
  deleteWaitMs?: number;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/**
 * Whether device `id` is an orphan a new server may recover: recoverable, its server
 * gone, and QUIESCED or FAIL_IO. A device that is still LIVE although its server is
 * gone is waited for: Linux 6.1 notices a dead server only in a periodic check (every
 * 5 s) and 7.x once the dead process's files are released. Rejects with ETIMEDOUT
 * if it does not get there within timeoutMs.
 */
export async function awaitOrphan(id: number, o: AwaitOptions = {}): Promise<Orphan> {
  const getInfo = o.info ?? ((n: number) => native().getDeviceInfo(n));
  const alive = o.alive ?? serverAlive;
  const end = Date.now() + (o.timeoutMs ?? 30_000);
  for (;;) {
    let info: NativeKernelDeviceInfo;
    try {
      info = await getInfo(id);
    } catch (err) {
      return { kind: 'absent', reason: `ublk device ${id} does not exist (${(err as { code?: string }).code ?? (err as Error).message})` };
    }
    if (!hasFlag(info.flags, 'UBLK_F_USER_RECOVERY')) {
      return { kind: 'foreign', reason: `ublk device ${id} was not created recoverable (no UBLK_F_USER_RECOVERY)` };
    }
    if (info.state === 'dead') return { kind: 'foreign', reason: `ublk device ${id} is not started` };
    if (info.state === 'live' && alive(info.serverPid)) {
      return { kind: 'foreign', reason: `ublk device ${id} is live, served by pid ${info.serverPid}` };
    }
    if (info.state === 'quiesced' || info.state === 'fail-io') return { kind: 'orphan', info };
    if (Date.now() >= end) {
      throw new UbloopError(
        'ETIMEDOUT',
        `ublk device ${id} is still live ${Math.round((o.timeoutMs ?? 30_000) / 1000)} s after its server (pid ${info.serverPid}) died; the kernel has not quiesced it`,
      );
    }
    await sleep(o.pollMs ?? 100);
  }
}

/**
 * Deletes an orphan nobody can recover (its image is gone, its options no longer
 * hold): the I/O it holds fails with EIO instead of waiting forever. Anything else
 * under that id (absent, live, not recoverable) is left alone. Resolves with whether
 * it deleted the device.
 */
export async function abandonOrphan(id: number, o: AwaitOptions = {}): Promise<boolean> {
  const orphan = await awaitOrphan(id, o);
  if (orphan.kind !== 'orphan') return false;
  // STOP_DEV fails the held I/O and removes the disk at once; DEL_DEV then waits until
  // nobody has the disk open any more (a filesystem still mounted on it): not for that.
  const deleting = native()
    .deleteDevice(id)
    .then(
      () => null,
      (err: unknown) => err,
    );
  const outcome = await Promise.race([deleting, sleep(o.deleteWaitMs ?? 5000).then(() => null)]);
  if (outcome) throw outcome;
  return true;
}

/** The disk's geometry as the kernel shows it, for checking that an orphan is the device a binding describes. */
export function diskShape(id: number): { size: number; blockSize: number; readOnly: boolean } {
  const read = (f: string) => readFileSync(`/sys/block/ublkb${id}/${f}`, 'utf8').trim();
  return { size: Number(read('size')) * 512, blockSize: Number(read('queue/logical_block_size')), readOnly: read('ro') === '1' };
}

/** Throws EINVAL naming the difference when the orphan's disk is not what the options and image make. */
export function checkSameDisk(id: number, want: { size: number; blockSize: number; readOnly: boolean }, have = diskShape(id)): void {
  const diffs: string[] = [];
  if (have.size !== want.size) diffs.push(`${have.size} bytes, not ${want.size}`);
  if (have.blockSize !== want.blockSize) diffs.push(`block size ${have.blockSize}, not ${want.blockSize}`);
  if (have.readOnly !== want.readOnly) diffs.push(have.readOnly ? 'read-only' : 'writable');
  if (diffs.length > 0) throw invalid(`ublk device ${id} does not match the image and options given: it is ${diffs.join(', ')}`);
}
