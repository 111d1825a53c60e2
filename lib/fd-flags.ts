// What an image descriptor's open flags allow, checked before any device is created.
// createDevice({fd}) and the daemon's bind both use checkImageFdFlags, so a descriptor
// refused by one is refused by the other, with the same words.
import { constants, readFileSync } from 'node:fs';
import { UbloopError } from './errors.js';

/** fcntl(F_GETFL) as the kernel shows it in /proc/self/fdinfo. */
export function fdFlags(fd: number): number {
  const m = /^flags:\s*([0-7]+)$/m.exec(readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'));
  return m?.[1] ? parseInt(m[1], 8) : 0;
}

// Flags that make the image unusable as a block device's backing store, and why.
const REFUSED: readonly { flag: number; name: string; why: string }[] = [
  { flag: constants.O_APPEND, name: 'O_APPEND', why: 'every write would land at the end of the file' },
  {
    flag: constants.O_NONBLOCK,
    name: 'O_NONBLOCK',
    why: 'on a file system without non-blocking I/O every read and write would fail with EAGAIN',
  },
];

/** Refuses an image descriptor opened with O_APPEND or O_NONBLOCK; returns its flags otherwise. */
export function checkImageFdFlags(fd: number): number {
  const flags = fdFlags(fd);
  for (const { flag, name, why } of REFUSED) {
    if ((flags & flag) !== 0) {
      throw new UbloopError('EINVAL', `the image descriptor is open with ${name}: ${why}; pass a descriptor opened without ${name}`);
    }
  }
  return flags;
}
