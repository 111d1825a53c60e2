// The one place that opens, inspects and checks an image: a path ubloop opens itself or a
// descriptor someone passed. createDevice, the daemon's bind, the state restore and
// `ubloop attach` all come here, so an image refused by one is refused by the others,
// with the same words. Each image is fstat'ed once and its open flags are read at most
// once (not at all when ubloop opened it, since then it knows them).
import { closeSync, constants, fstatSync, openSync, readFileSync, readlinkSync } from 'node:fs';
import { splitDev, type DevNum } from './devnum.js';
import { UbloopError, invalid, isSystemError } from './errors.js';

/** What the device will do with the image: it decides the open flags and what a passed descriptor must allow. */
export interface ImageAccess {
  readOnly: boolean;
  /** O_DIRECT: bypass the page cache. */
  directIo: boolean;
}

/** An open, checked image: a regular file, readable (and writable unless read-only). */
export interface Image {
  readonly fd: number;
  /** How messages name it: its path, or "the descriptor passed as the image". */
  readonly name: string;
  /** The path it was opened by, or undefined for a passed descriptor. */
  readonly path: string | undefined;
  /** Size in bytes. */
  readonly size: number;
  /** st_dev and st_ino: which file it is (a restore rebinds only the same file). */
  readonly dev: number;
  readonly ino: number;
  /** The disk holding the file (st_dev), for its logical block size. */
  readonly disk: DevNum;
  readonly uid: number;
  readonly gid: number;
  readonly mode: number;
  /** The descriptor's open flags (fcntl F_GETFL). */
  readonly flags: number;
  /** ubloop opened it, so closeImage closes it; a passed descriptor stays open. */
  readonly owned: boolean;
}

const DESCRIPTOR = 'the descriptor passed as the image';

/** fcntl(F_GETFL) as the kernel shows it in /proc/self/fdinfo. */
function fdFlags(fd: number): number {
  const m = /^flags:\s*([0-7]+)$/m.exec(readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'));
  return m?.[1] ? parseInt(m[1], 8) : 0;
}

// Flags that make a descriptor unusable as a block device's backing store, and why.
const REFUSED: readonly { flag: number; name: string; why: string }[] = [
  { flag: constants.O_APPEND, name: 'O_APPEND', why: 'every write would land at the end of the file' },
  {
    flag: constants.O_NONBLOCK,
    name: 'O_NONBLOCK',
    why: 'on a file system without non-blocking I/O every read and write would fail with EAGAIN',
  },
];

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

/** The one fstat of an image: refuses anything but a regular file. */
function stat(fd: number, name: string, path: string | undefined, flags: number, owned: boolean): Image {
  const st = fstatSync(fd, { bigint: true });
  const mode = Number(st.mode);
  if ((mode & constants.S_IFMT) !== constants.S_IFREG) {
    const code = (mode & constants.S_IFMT) === constants.S_IFDIR ? 'EISDIR' : 'EINVAL';
    throw new UbloopError(code, `${name} is ${kind(mode)}, not an image file`);
  }
  return {
    fd,
    name,
    path,
    size: Number(st.size),
    dev: Number(st.dev),
    ino: Number(st.ino),
    disk: splitDev(st.dev),
    uid: Number(st.uid),
    gid: Number(st.gid),
    mode,
    flags,
    owned,
  };
}

function openError(err: unknown, path: string, access: ImageAccess): unknown {
  if (!isSystemError(err)) return err;
  switch (err.code) {
    case 'ENOENT':
      return new UbloopError('ENOENT', `image file ${path} does not exist`);
    case 'EISDIR':
      return new UbloopError('EISDIR', `${path} is a directory, not an image file`);
    case 'ELOOP':
      return new UbloopError('ELOOP', `${path} is a symbolic link; name the image itself`);
    case 'EACCES':
    case 'EROFS':
    case 'EPERM':
      return new UbloopError(
        'EACCES',
        `cannot open ${path} for ${access.readOnly ? 'reading' : 'writing'} (${err.code})${access.readOnly ? '' : '; use read-only to serve it read-only'}`,
      );
    case 'EINVAL':
      if (access.directIo) return new UbloopError('EINVAL', `the filesystem of ${path} does not support direct I/O (O_DIRECT)`);
      return err;
    default:
      return err;
  }
}

/**
 * Opens the image at path with the rights of this process (O_RDWR, or O_RDONLY when
 * read-only; O_DIRECT for direct I/O; with noFollow, not through a symbolic link) and
 * checks it is a regular file. Close it with closeImage.
 */
export function openImage(path: string, access: ImageAccess, options: { noFollow?: boolean } = {}): Image {
  const flags =
    (access.readOnly ? constants.O_RDONLY : constants.O_RDWR) |
    (access.directIo ? constants.O_DIRECT : 0) |
    (options.noFollow ? constants.O_NOFOLLOW : 0);
  let fd: number;
  try {
    fd = openSync(path, flags);
  } catch (err) {
    throw openError(err, path, access);
  }
  try {
    return stat(fd, path, path, flags, true);
  } catch (err) {
    closeSync(fd);
    throw err;
  }
}

/**
 * Checks a descriptor someone passed as the image: a regular file, open without
 * O_APPEND or O_NONBLOCK, readable, writable unless the device is read-only, and with
 * O_DIRECT when direct I/O is asked for. The descriptor stays the caller's.
 */
export function inspectImage(fd: number, access: ImageAccess, name = DESCRIPTOR): Image {
  const image = stat(fd, name, undefined, fdFlags(fd), false);
  for (const { flag, name: flagName, why } of REFUSED) {
    if ((image.flags & flag) !== 0) {
      throw new UbloopError('EINVAL', `the image descriptor is open with ${flagName}: ${why}; pass a descriptor opened without ${flagName}`);
    }
  }
  const acc = image.flags & 3; // O_ACCMODE
  if (acc === constants.O_WRONLY) throw new UbloopError('EBADF', 'the image descriptor is open write-only; it must be readable');
  if (!access.readOnly && acc !== constants.O_RDWR) {
    throw new UbloopError('EBADF', 'the image descriptor is open read-only; make the device read-only or pass a read-write descriptor');
  }
  if (access.directIo && (image.flags & constants.O_DIRECT) === 0) {
    throw new UbloopError('EINVAL', 'direct I/O needs an image descriptor opened with O_DIRECT');
  }
  return image;
}

/** Closes the image if ubloop opened it; a passed descriptor stays open. */
export function closeImage(image: Image): void {
  if (image.owned) closeSync(image.fd);
}

/** The image's path as this process sees it (for the state file and for people). */
export function imagePath(image: Image): string {
  if (image.path !== undefined) return image.path;
  try {
    return readlinkSync(`/proc/self/fd/${image.fd}`);
  } catch {
    return `(fd ${image.fd})`;
  }
}

/** Whether uid/gid may open the image by its mode bits (root always may). */
export function mayOpen(image: Image, who: { uid: number; gid: number }, write: boolean): boolean {
  if (who.uid === 0) return true;
  const bits = image.uid === who.uid ? (image.mode >> 6) & 7 : image.gid === who.gid ? (image.mode >> 3) & 7 : image.mode & 7;
  return (bits & 4) !== 0 && (!write || (bits & 2) !== 0);
}

/**
 * The logical block size of the disk under the image, from sysfs; null when the file
 * lives on something without one (tmpfs, a network or virtual filesystem).
 */
function diskLogicalBlockSize(disk: DevNum): number | null {
  const dev = `/sys/dev/block/${disk.major}:${disk.minor}`;
  for (const queue of [`${dev}/queue`, `${dev}/../queue`]) {
    try {
      return Number(readFileSync(`${queue}/logical_block_size`, 'utf8').trim());
    } catch {
      // a partition keeps its queue in the parent disk's directory
    }
  }
  return null;
}

/** With O_DIRECT every request must be aligned to the logical block size of the disk holding the image. */
export function checkDirectIoAlignment(image: Image, blockSize: number, offset: number): void {
  const needed = diskLogicalBlockSize(image.disk);
  if (needed === null) return;
  if (blockSize < needed) {
    throw invalid(
      `block size ${blockSize} is smaller than the logical block size ${needed} of the disk holding ${image.name}; ` +
        `direct I/O needs a block size of at least ${needed}`,
    );
  }
  if (offset % needed !== 0) {
    throw invalid(`offset ${offset} is not a multiple of ${needed}, the logical block size of the disk holding ${image.name}`);
  }
}
