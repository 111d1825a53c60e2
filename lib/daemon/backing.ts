// Checks a descriptor a client passed as an image before anything is created: it must
// be a regular file opened with the access the binding needs.
import { constants, fstatSync, readlinkSync } from 'node:fs';
import { UbloopError } from '../errors.js';
import { checkImageFdFlags } from '../fd-flags.js';
import type { BindOptions } from '../protocol/device-requests.js';
import type { Backing } from '../instance/instance.js';

function kind(mode: number): string {
  switch (mode & constants.S_IFMT) {
    case constants.S_IFDIR: return 'a directory';
    case constants.S_IFSOCK: return 'a socket';
    case constants.S_IFIFO: return 'a pipe';
    case constants.S_IFCHR: return 'a character device';
    case constants.S_IFBLK: return 'a block device';
    case constants.S_IFLNK: return 'a symbolic link';
    default: return 'not a regular file';
  }
}

export function inspectBacking(fd: number, options: BindOptions): Backing {
  const st = fstatSync(fd);
  if (!st.isFile()) {
    const code = st.isDirectory() ? 'EISDIR' : 'EINVAL';
    throw new UbloopError(code, `the descriptor passed as the image is ${kind(st.mode)}, not an image file`);
  }
  const flags = checkImageFdFlags(fd);
  const acc = flags & 3; // O_ACCMODE
  if (acc === constants.O_WRONLY) throw new UbloopError('EBADF', 'the image descriptor is open write-only; it must be readable');
  if (!options.readOnly && acc !== constants.O_RDWR) {
    throw new UbloopError('EBADF', 'the image descriptor is open read-only; bind read-only or pass a read-write descriptor');
  }
  if (options.directIo && (flags & constants.O_DIRECT) === 0) {
    throw new UbloopError('EINVAL', 'direct I/O needs an image descriptor opened with O_DIRECT');
  }
  let path: string;
  try {
    path = readlinkSync(`/proc/self/fd/${fd}`);
  } catch {
    path = `(fd ${fd})`;
  }
  return { path, dev: st.dev, ino: st.ino };
}
