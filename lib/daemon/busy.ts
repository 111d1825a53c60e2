// Whether a ublk disk is in use: held by another block device (holders), mounted or
// claimed (an exclusive open fails with EBUSY), or simply open in some process.
import { closeSync, constants, openSync, readdirSync } from 'node:fs';
import { isSystemError } from '../errors.js';
import { makeDev } from '../devnum.js';
import { someProcessHasOpen } from '../open-files.js';

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
  return someProcessHasOpen('block', makeDev({ major, minor }), process.pid);
}
