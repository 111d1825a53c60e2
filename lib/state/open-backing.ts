// Reopens a saved binding's backing file at restore: by its path, with the flags the
// binding needs, and only if whoever first bound it could still open it themselves.
import { constants, fstatSync, openSync, closeSync, type Stats } from 'node:fs';
import { UbloopError } from '../errors.js';
import type { StateBinding } from './state-data.js';
import type { OpenedBacking } from './restore.js';

function ownerMay(st: Stats, uid: number, gid: number, write: boolean): boolean {
  if (uid === 0) return true;
  const bits = st.uid === uid ? (st.mode >> 6) & 7 : st.gid === gid ? (st.mode >> 3) & 7 : st.mode & 7;
  return (bits & 4) !== 0 && (!write || (bits & 2) !== 0);
}

/** principal: whose rights the image was first opened with; they must still suffice. */
export function openBacking(b: StateBinding, principal: { uid: number; gid: number }): OpenedBacking {
  const write = !b.options.readOnly;
  const flags = (write ? constants.O_RDWR : constants.O_RDONLY) | (b.options.directIo ? constants.O_DIRECT : 0) | constants.O_NOFOLLOW;
  let fd: number;
  try {
    fd = openSync(b.backing.path, flags);
  } catch (err) {
    throw new UbloopError('ENOENT', `cannot reopen ${b.backing.path}: ${(err as Error).message}`);
  }
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) throw new UbloopError('EINVAL', `${b.backing.path} is no longer a regular file`);
    if (!ownerMay(st, principal.uid, principal.gid, write)) {
      throw new UbloopError('EACCES', `uid ${principal.uid} may no longer ${write ? 'write' : 'read'} ${b.backing.path}`);
    }
    return { fd, dev: st.dev, ino: st.ino };
  } catch (err) {
    closeSync(fd);
    throw err;
  }
}
