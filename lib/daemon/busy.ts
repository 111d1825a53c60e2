// Whether a ublk disk is in use: held by another block device (holders), mounted or
// claimed (an exclusive open fails with EBUSY), or simply open in some process.
import { closeSync, constants, openSync, readdirSync, statSync } from 'node:fs';
import { isSystemError } from '../errors.js';
import { makedev } from './nodes.js';

function openInSomeProcess(rdev: number): boolean {
  let pids: string[];
  try {
    pids = readdirSync('/proc').filter((p) => /^\d+$/.test(p) && Number(p) !== process.pid);
  } catch {
    return false;
  }
  for (const pid of pids) {
    let fds: string[];
    try {
      fds = readdirSync(`/proc/${pid}/fd`);
    } catch {
      continue;
    }
    for (const fd of fds) {
      try {
        const st = statSync(`/proc/${pid}/fd/${fd}`);
        if (st.isBlockDevice() && st.rdev === rdev) return true;
      } catch {
        // gone meanwhile
      }
    }
  }
  return false;
}

export function ublkDiskBusy(id: number, major: number, minor: number): boolean {
  try {
    if (readdirSync(`/sys/block/ublkb${id}/holders`).length > 0) return true;
  } catch {
    // no sysfs entry: treat as not held
  }
  try {
    closeSync(openSync(`/dev/ublkb${id}`, constants.O_RDONLY | constants.O_EXCL | constants.O_NONBLOCK));
  } catch (err) {
    if (isSystemError(err) && err.code === 'EBUSY') return true;
  }
  return openInSomeProcess(makedev(major, minor));
}
