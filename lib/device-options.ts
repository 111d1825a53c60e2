// Checks device options before anything touches the kernel, so that bad input ends
// with a message naming the bad value and nothing half-created.
import { invalid } from './errors.js';
import type { NativeCopyMode, NativeDataPath } from './native.js';

export type TargetName = 'loop' | 'null';
export type BlockSize = 512 | 1024 | 2048 | 4096;
export type Scheduler = 'none' | 'mq-deadline' | 'kyber' | 'bfq';

/**
 * How request data moves between the kernel and the image: 'kernel' (the kernel
 * copies it into and out of the queue's buffers; every kernel), 'user' (the queue
 * copies it through /dev/ublkcN; UBLK_F_USER_COPY), 'zero' (the queue registers the
 * request's own pages and the image I/O uses them; UBLK_F_SUPPORT_ZERO_COPY),
 * 'auto-buf' (the kernel registers them as it hands the request over;
 * UBLK_F_AUTO_BUF_REG). 'auto' picks the fastest the kernel offers and the caller
 * may use (devices of users without CAP_SYS_ADMIN get 'kernel').
 */
export type DataPath = NativeDataPath;
export type CopyMode = NativeCopyMode;
export const COPY_MODES: readonly CopyMode[] = ['auto', 'kernel', 'user', 'zero', 'auto-buf'];

export const BLOCK_SIZES: readonly BlockSize[] = [512, 1024, 2048, 4096];
export const MAX_QUEUES = 64;
export const MAX_DEPTH = 4096;
export const DEFAULTS = {
  queues: 1,
  depth: 128,
  blockSize: 512 as BlockSize,
  maxIoBytes: 1 << 20,
  pollUs: 500,
  scheduler: 'none' as Scheduler,
};

export interface DeviceOptions {
  /** 'loop' (an image file, the default) or 'null' (completes I/O without data). */
  target?: TargetName;
  /** loop: path of the image file. */
  file?: string;
  /** loop: an already open descriptor of the image (instead of file); not closed. */
  fd?: number;
  /** null: device size in bytes. */
  size?: number;
  /** loop: byte offset of the device's start in the image. */
  offset?: number;
  /** loop: largest device size in bytes (0 = to the end of the image). */
  sizeLimit?: number;
  readOnly?: boolean;
  /** loop: open the image with O_DIRECT (bypass the page cache). */
  directIo?: boolean;
  /** Logical block size. */
  blockSize?: number;
  queues?: number;
  depth?: number;
  /** Request this ublk device id (default: the kernel picks). */
  id?: number;
  /** Largest single request in bytes. */
  maxIoBytes?: number;
  /** Advertise discard and write-zeroes (loop and null, not read-only). */
  discard?: boolean;
  /** I/O scheduler for the disk; null leaves the kernel's choice. */
  scheduler?: Scheduler | null;
  /** Microseconds a queue thread busy-polls for its next event (a completion or a request) before sleeping, while its recent waits were shorter (0: never). */
  pollUs?: number;
  /** The data path (default 'auto'). */
  copy?: CopyMode;
}

export interface CheckedOptions {
  target: TargetName;
  file: string | undefined;
  fd: number | undefined;
  size: number | undefined;
  offset: number;
  sizeLimit: number;
  readOnly: boolean;
  directIo: boolean;
  blockSize: BlockSize;
  queues: number;
  depth: number;
  id: number;
  maxIoBytes: number;
  discard: boolean;
  scheduler: Scheduler | null;
  pollUs: number;
  copy: CopyMode;
}

function integer(value: unknown, name: string, min: number, max: number): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    throw invalid(`${name} must be an integer from ${min} to ${max}, got ${String(value)}`);
  }
  return value;
}

export function checkOptions(o: DeviceOptions): CheckedOptions {
  const target = o.target ?? 'loop';
  if (target !== 'loop' && target !== 'null') throw invalid(`target must be "loop" or "null", got "${String(target)}"`);
  const blockSize = o.blockSize ?? DEFAULTS.blockSize;
  if (!BLOCK_SIZES.includes(blockSize as BlockSize)) {
    throw invalid(`block size ${String(blockSize)} is not one of ${BLOCK_SIZES.join(', ')}`);
  }
  const checked: CheckedOptions = {
    target,
    file: o.file,
    fd: o.fd,
    size: o.size,
    offset: integer(o.offset ?? 0, 'offset', 0, Number.MAX_SAFE_INTEGER),
    sizeLimit: integer(o.sizeLimit ?? 0, 'size limit', 0, Number.MAX_SAFE_INTEGER),
    readOnly: o.readOnly ?? false,
    directIo: o.directIo ?? false,
    blockSize: blockSize as BlockSize,
    queues: integer(o.queues ?? DEFAULTS.queues, 'queues', 1, MAX_QUEUES),
    depth: integer(o.depth ?? DEFAULTS.depth, 'depth', 1, MAX_DEPTH),
    id: integer(o.id ?? -1, 'device id', -1, 0xfffff),
    maxIoBytes: integer(o.maxIoBytes ?? DEFAULTS.maxIoBytes, 'max I/O size', 4096, 1 << 24),
    discard: o.discard ?? true,
    scheduler: o.scheduler === undefined ? DEFAULTS.scheduler : o.scheduler,
    pollUs: integer(o.pollUs ?? DEFAULTS.pollUs, 'poll time (µs)', 0, 1_000_000),
    copy: o.copy ?? 'auto',
  };
  if (!COPY_MODES.includes(checked.copy)) {
    throw invalid(`copy mode must be one of ${COPY_MODES.join(', ')}, got "${String(checked.copy)}"`);
  }
  if (checked.maxIoBytes % 4096 !== 0) throw invalid(`max I/O size ${checked.maxIoBytes} is not a multiple of 4096`);
  if (target === 'loop') {
    if ((checked.file === undefined) === (checked.fd === undefined)) {
      throw invalid('the loop target needs exactly one of an image file or an open descriptor');
    }
    if (checked.fd !== undefined) integer(checked.fd, 'fd', 0, 2 ** 31 - 1);
    if (checked.size !== undefined) throw invalid('the loop target takes its size from the image; use sizeLimit');
    if (checked.directIo && checked.offset % checked.blockSize !== 0) {
      throw invalid(`offset ${checked.offset} must be a multiple of the block size ${checked.blockSize} with direct I/O`);
    }
  } else {
    if (checked.file !== undefined || checked.fd !== undefined) throw invalid('the null target takes no image file');
    if (checked.size === undefined) throw invalid('the null target needs a size');
    integer(checked.size, 'size', 1, Number.MAX_SAFE_INTEGER);
    if (checked.size % checked.blockSize !== 0) {
      throw invalid(`size ${checked.size} is not a multiple of the block size ${checked.blockSize}`);
    }
  }
  return checked;
}

/**
 * The device size of a loop device over an image of imageSize bytes: what is left
 * after the offset, capped by the size limit; it must be a whole number of blocks.
 */
export function loopDeviceSize(imageSize: number, o: CheckedOptions, imageName: string): number {
  if (imageSize === 0) throw invalid(`image ${imageName} is empty`);
  if (o.offset >= imageSize) {
    throw invalid(`offset ${o.offset} is at or past the end of ${imageName} (${imageSize} bytes)`);
  }
  const rest = imageSize - o.offset;
  const size = o.sizeLimit > 0 ? Math.min(o.sizeLimit, rest) : rest;
  if (size % o.blockSize !== 0) {
    const why = o.sizeLimit > 0 && o.sizeLimit <= rest ? 'size limit' : o.offset > 0 ? 'image size minus offset' : 'image size';
    throw invalid(`device size ${size} (${why}) is not a multiple of the block size ${o.blockSize}`);
  }
  return size;
}
