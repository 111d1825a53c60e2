// The device API: createDevice() serves an image file (or nothing, for 'null') as
// /dev/ublkbN from native queue threads of this process; stop() removes it.
import { execFile } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import { UbloopError, invalid, isSystemError } from './errors.js';
import { checkOptions, loopDeviceSize, type CheckedOptions, type DataPath, type DeviceOptions, type Scheduler } from './device-options.js';
import { checkDirectIoAlignment, closeImage, inspectImage, openImage, type Image } from './image.js';
import { filesystemSize } from './filesystem-size.js';
import { flagNames, hasFlag, readScheduler } from './kernel.js';
import { checkCanAddDevice, explainAddError, waitForOwnNode } from './unprivileged.js';
import { native, type NativeCreateOptions, type NativeDevice, type NativeLastError, type NativeQueueStats } from './native.js';
import { awaitOrphan, checkSameDisk, recoveryFlags } from './recovery.js';

export type { DeviceOptions } from './device-options.js';

export interface DeviceInfo {
  id: number;
  /** The block device, /dev/ublkbN. */
  path: string;
  /** The ublk char device served by this process, /dev/ublkcN. */
  charPath: string;
  target: 'loop' | 'null';
  file: string | null;
  /** The image file was deleted while served: the device keeps working on the open file (as kernel loop does). */
  fileDeleted: boolean;
  size: number;
  offset: number;
  blockSize: number;
  readOnly: boolean;
  directIo: boolean;
  queues: number;
  depth: number;
  maxIoBytes: number;
  state: 'dead' | 'live' | 'quiesced' | 'fail-io';
  /** UBLK_F_* flags granted by the kernel. */
  flags: string[];
  /** How commands were encoded: 'legacy' (Linux 6.1) or 'ioctl'. */
  encoding: 'legacy' | 'ioctl';
  /** How request data moves between the kernel and the image (see DataPath). */
  dataPath: DataPath;
  /** Active I/O scheduler of the disk, or null if unknown. */
  scheduler: string | null;
  serverPid: number;
  /** Who owns the device: the user who added it (root's own devices, and on kernels before 6.3, uid 0). */
  owner: { uid: number; gid: number };
  /** Added by a user without CAP_SYS_ADMIN (UBLK_F_UNPRIVILEGED_DEV): only the owner may open or control it. */
  unprivileged: boolean;
  /** Why the device stopped serving (a queue thread failed; its I/O fails with EIO), or null. */
  failure: string | null;
  /**
   * Whether the kernel scanned the disk's partition table (partitions appear as
   * /dev/ublkbNpM): asked for (partscan), or by the kernel's own choice on kernels
   * without UBLK_F_NO_AUTO_PART_SCAN (before 7.0), which scan every ublk disk.
   */
  partscan: boolean;
}

/** The device's failed requests by op, and the last one (the latest over its queues). */
export interface IoErrorStats {
  readErrors: number;
  writeErrors: number;
  flushErrors: number;
  /** DISCARD and WRITE_ZEROES. */
  discardErrors: number;
  /** The last failed request: its errno and op, and when (ISO 8601); null if none failed. */
  lastError: { errno: number; code: string; op: NativeLastError['op']; at: string } | null;
}

/** One queue's counters, as the addon counts them; its failure as a message. */
export interface QueueStats extends Omit<NativeQueueStats, 'failure'> {
  /** Why this queue stopped serving, or null while it is healthy. */
  failure: string | null;
}

/** The counters the device sums over its queues. */
type Summed =
  | 'ops'
  | 'bytesRead'
  | 'bytesWritten'
  | 'errors'
  | 'ringEnters'
  | 'bufferReleases'
  | 'registrations'
  | 'readErrors'
  | 'writeErrors'
  | 'flushErrors'
  | 'discardErrors';

export interface DeviceStats extends Pick<QueueStats, Summed> {
  lastError: IoErrorStats['lastError'];
  /** The data path the queues use. */
  dataPath: DataPath;
  /** A queue thread stopped serving on an error: the device's I/O fails. */
  failed: boolean;
  queues: QueueStats[];
}

/** The latest of the queues' last failures. */
function lastErrorOf(queues: readonly Pick<NativeQueueStats, 'lastError'>[]): IoErrorStats['lastError'] {
  let last: NativeLastError | null = null;
  for (const q of queues) if (q.lastError !== null && (last === null || q.lastError.atMs > last.atMs)) last = q.lastError;
  return last === null ? null : { errno: last.errno, code: last.code, op: last.op, at: new Date(last.atMs).toISOString() };
}

export class Device {
  readonly id: number;
  readonly path: string;
  readonly charPath: string;
  readonly #native: NativeDevice;
  readonly #options: CheckedOptions;
  #stopping: Promise<void> | undefined;
  /** See DeviceInfo.partscan. @internal set by startDevice */
  partscan = false;

  /** @internal use createDevice() */
  constructor(dev: NativeDevice, options: CheckedOptions) {
    this.#native = dev;
    this.#options = options;
    this.id = dev.id;
    this.path = `/dev/ublkb${dev.id}`;
    this.charPath = `/dev/ublkc${dev.id}`;
  }

  get stopped(): boolean {
    return this.#stopping !== undefined;
  }

  /** The disk's size in bytes now (resize() changes it). */
  get size(): number {
    return this.#native.info().size;
  }

  info(): DeviceInfo {
    const n = this.#native.info();
    let scheduler: string | null = null;
    try {
      scheduler = readScheduler(`ublkb${this.id}`).active;
    } catch {
      scheduler = null;
    }
    return {
      id: n.id,
      path: this.path,
      charPath: this.charPath,
      target: n.target,
      file: this.#options.file ?? null,
      fileDeleted: n.imageDeleted,
      size: n.size,
      offset: n.offset,
      blockSize: n.blockSize,
      readOnly: n.readOnly,
      directIo: this.#options.directIo,
      queues: n.queues,
      depth: n.depth,
      maxIoBytes: n.maxIoBytes,
      state: n.removed ? 'dead' : n.state,
      flags: flagNames(n.flags),
      encoding: n.encoding,
      dataPath: n.dataPath,
      scheduler,
      serverPid: n.serverPid,
      owner: { uid: n.ownerUid, gid: n.ownerGid },
      unprivileged: hasFlag(n.flags, 'UBLK_F_UNPRIVILEGED_DEV'),
      failure: this.failure(),
      partscan: this.partscan,
    };
  }

  stats(): DeviceStats {
    const queues = this.#native.stats().map((q) => ({
      ...q,
      failure: q.failure === null ? null : `queue ${q.queue}: ${q.failure.message}`,
    }));
    const sum = (k: Summed) => queues.reduce((a, q) => a + q[k], 0);
    return {
      dataPath: this.#native.info().dataPath,
      ops: sum('ops'),
      bytesRead: sum('bytesRead'),
      bytesWritten: sum('bytesWritten'),
      errors: sum('errors'),
      ringEnters: sum('ringEnters'),
      bufferReleases: sum('bufferReleases'),
      registrations: sum('registrations'),
      readErrors: sum('readErrors'),
      writeErrors: sum('writeErrors'),
      flushErrors: sum('flushErrors'),
      discardErrors: sum('discardErrors'),
      lastError: lastErrorOf(queues),
      failed: queues.some((q) => q.failure !== null),
      queues,
    };
  }

  /** The failed requests (cheap: the counters only, no sysfs). */
  ioErrors(): IoErrorStats {
    const queues = this.#native.stats();
    const sum = (k: 'readErrors' | 'writeErrors' | 'flushErrors' | 'discardErrors') => queues.reduce((a, q) => a + q[k], 0);
    return {
      readErrors: sum('readErrors'),
      writeErrors: sum('writeErrors'),
      flushErrors: sum('flushErrors'),
      discardErrors: sum('discardErrors'),
      lastError: lastErrorOf(queues),
    };
  }

  /** The image file was deleted while served (it keeps working through the open descriptor). */
  imageDeleted(): boolean {
    return this.#native.info().imageDeleted;
  }

  /** Why the device stopped serving (the first failed queue), or null while it serves. */
  failure(): string | null {
    for (const q of this.#native.stats()) {
      if (q.failure !== null) return `queue ${q.queue}: ${q.failure.message}`;
    }
    return null;
  }

  /**
   * Removes the disk (in-flight I/O completes first) and deletes the ublk device.
   * With ifUnused, the kernel itself refuses (EBUSY, and the device stays) while
   * anyone has the disk open or mounted: devices granted UBLK_F_SAFE_STOP_DEV only
   * (see canStopIfUnused).
   */
  async stop(options: { ifUnused?: boolean } = {}): Promise<void> {
    if (options.ifUnused && this.#stopping === undefined) {
      await this.#native.remove({ onlyIfUnused: true });
      this.#stopping = Promise.resolve();
    }
    this.#stopping ??= this.#native.remove();
    return this.#stopping;
  }

  /**
   * Live upgrade: the device stops being served by this process but stays, holding its
   * I/O, for another process to take over (recoverDevice). Waits up to timeoutMs for the
   * requests in flight (0: no limit). Needs UBLK_F_QUIESCE (see canHandOver).
   */
  async handOver(timeoutMs = 30_000): Promise<void> {
    if (this.#stopping !== undefined) throw new UbloopError('ENODEV', `${this.path} is stopped`);
    await this.#native.handOver(timeoutMs);
    this.#stopping = Promise.resolve();
  }

  /** Whether handOver() is available: the kernel granted UBLK_F_QUIESCE. */
  get canHandOver(): boolean {
    return hasFlag(this.#native.info().flags, 'UBLK_F_QUIESCE');
  }

  /** Whether stop({ ifUnused: true }) is available: the kernel granted UBLK_F_SAFE_STOP_DEV. */
  get canStopIfUnused(): boolean {
    return hasFlag(this.#native.info().flags, 'UBLK_F_SAFE_STOP_DEV');
  }

  /**
   * Changes the disk's size, like `losetup -c`: to `bytes`, or by default to what the
   * image now holds (after the offset, within the size limit), rounded down to the
   * block size. Needs a kernel that granted UBLK_F_UPDATE_SIZE (Linux 6.16+).
   * Resolves with the new size.
   */
  async resize(bytes?: number): Promise<number> {
    const n = this.#native.info();
    const o = this.#options;
    if (!hasFlag(n.flags, 'UBLK_F_UPDATE_SIZE')) {
      throw new UbloopError('EOPNOTSUPP', `${this.path} cannot be resized: this kernel's ublk lacks UPDATE_SIZE (UBLK_F_UPDATE_SIZE, Linux 6.16+)`);
    }
    if (n.imageSize === null) throw invalid(`${this.path} has no image to take a size from (null target)`);
    const room = n.imageSize - o.offset;
    if (room <= 0) throw invalid(`the image of ${this.path} (${n.imageSize} bytes) ends before the offset ${o.offset}`);
    let size = Math.min(room, o.sizeLimit > 0 ? o.sizeLimit : room);
    if (bytes !== undefined) {
      if (!Number.isInteger(bytes) || bytes <= 0) throw invalid(`size must be a positive number of bytes, got ${String(bytes)}`);
      if (bytes > size) {
        throw invalid(`size ${bytes} is larger than the ${size} bytes the image holds${o.offset ? ` after offset ${o.offset}` : ''}${o.sizeLimit ? ` within the size limit ${o.sizeLimit}` : ''}`);
      }
      size = bytes;
    }
    size -= size % o.blockSize;
    if (size === 0) throw invalid(`${this.path} would have no whole block of ${o.blockSize} bytes left`);
    if (size < n.size) {
      const fs = filesystemSize(this.path);
      if (fs !== null && fs.bytes > size) {
        throw new UbloopError(
          'EBUSY',
          `${this.path} holds an ${fs.type} filesystem of ${fs.bytes} bytes; shrinking the device to ${size} bytes would cut it short (shrink the filesystem first)`,
        );
      }
    }
    await this.#native.resize(size);
    return size;
  }
}

function nativeOptions(o: CheckedOptions, image: Image | undefined, size: number, flags: bigint): NativeCreateOptions {
  return {
    id: o.id,
    target: o.target,
    fd: image?.fd ?? -1,
    offset: o.offset,
    size,
    readOnly: o.readOnly,
    queues: o.queues,
    depth: o.depth,
    blockSize: o.blockSize,
    maxIoBytes: o.maxIoBytes,
    flags,
    discard: o.discard,
    pollUs: o.pollUs,
    copy: o.copy,
  };
}

function setScheduler(id: number, scheduler: Scheduler): void {
  const disk = `ublkb${id}`;
  const { active, available } = readScheduler(disk);
  if (!available.includes(scheduler)) {
    throw invalid(`I/O scheduler "${scheduler}" is not offered for ${disk} (offered: ${available.join(', ')})`);
  }
  if (active === scheduler) return;
  try {
    writeFileSync(`/sys/block/${disk}/queue/scheduler`, scheduler);
  } catch (err) {
    if (!isSystemError(err) || err.code !== 'EACCES') throw err;
    throw new UbloopError('EACCES', `only root may set the I/O scheduler of ${disk} (to "${scheduler}"); leave the kernel's ("${active ?? '?'}") with --scheduler kernel`);
  }
}

/**
 * Creates and starts a ublk device served by this process. On failure nothing is
 * left behind: no ublk device, no thread, no open descriptor.
 */
export async function createDevice(options: DeviceOptions): Promise<Device> {
  return startDevice(checkOptions(options));
}

/**
 * createDevice with options already checked where they entered (the daemon's bind), and
 * for a loop device the image already opened and inspected (otherwise it is opened
 * from o.file or inspected from o.fd here). The image stays open for the caller.
 * @internal
 */
export async function startDevice(o: CheckedOptions, given?: Image): Promise<Device> {
  checkCanAddDevice();
  let size = o.size ?? 0;
  let image: Image | undefined = given;
  try {
    if (o.target === 'loop') {
      image ??= o.fd !== undefined ? inspectImage(o.fd, o, `fd ${o.fd}`) : openImage(o.file as string, o);
      size = loopDeviceSize(image.size, o, image.name);
      if (o.directIo) checkDirectIoAlignment(image, o.blockSize, o.offset);
    }
    let dev: NativeDevice;
    try {
      dev = await native().createDevice(nativeOptions(o, image, size, recoveryFlags(o.recovery) | (o.target === 'loop' ? partScanFlags() : 0n)));
    } catch (err) {
      throw explainAddError(err);
    }
    const device = new Device(dev, o);
    if (hasFlag(dev.info().flags, 'UBLK_F_UNPRIVILEGED_DEV')) {
      try {
        await waitForOwnNode(device.path);
      } catch (err) {
        await device.stop();
        throw err;
      }
    }
    try {
      device.partscan = await scanPartitions(device, o.partscan && o.target === 'loop');
    } catch (err) {
      await device.stop();
      throw err;
    }
    if (o.scheduler !== null) {
      try {
        setScheduler(device.id, o.scheduler);
      } catch (err) {
        await device.stop();
        throw err;
      }
    }
    return device;
  } finally {
    if (image && image !== given) closeImage(image);
  }
}

let noAutoPartScan: bigint | undefined;

/**
 * UBLK_F_NO_AUTO_PART_SCAN where the kernel offers it (GET_FEATURES, Linux 7.0+): the
 * disk is then scanned only when asked (partscan), as a loop device without -P. Older
 * kernels scan every ublk disk they start.
 */
function partScanFlags(): bigint {
  if (noAutoPartScan === undefined) {
    const features = native().probeKernel().features;
    const entry = native().ublkFlags.find(([name]) => name === 'UBLK_F_NO_AUTO_PART_SCAN');
    if (!entry) throw new Error("the addon's flag table has no UBLK_F_NO_AUTO_PART_SCAN");
    noAutoPartScan = features !== null && hasFlag(features, 'UBLK_F_NO_AUTO_PART_SCAN') ? 1n << BigInt(entry[1]) : 0n;
  }
  return noAutoPartScan;
}

/** blockdev(8) from util-linux: BLKRRPART without an addon function for one ioctl. */
function blockdevPath(): string {
  for (const dir of ['/usr/sbin', '/sbin', '/usr/bin', '/bin']) if (existsSync(`${dir}/blockdev`)) return `${dir}/blockdev`;
  return 'blockdev';
}

/** Whether the kernel scanned the disk without being asked (every ublk disk before NO_AUTO_PART_SCAN, unprivileged ones never). */
function kernelScans(device: Device): boolean {
  const info = device.info();
  return !info.flags.includes('UBLK_F_NO_AUTO_PART_SCAN') && !info.unprivileged;
}

/**
 * Scans the partition table when asked (BLKRRPART, as loop does for LO_FLAGS_PARTSCAN),
 * so that /dev/ublkbNpM exist when the device is handed out; resolves with whether the
 * kernel scanned the disk at all (see DeviceInfo.partscan). A kernel that keeps
 * scanning suppressed (an unprivileged device on Linux 7.x) refuses with EINVAL: the
 * device is then not scanned, and says so.
 */
async function scanPartitions(device: Device, asked: boolean): Promise<boolean> {
  const flags = device.info();
  if (!asked) return kernelScans(device);
  return new Promise((resolve, reject) => {
    execFile(blockdevPath(), ['--rereadpt', device.path], { timeout: 60_000 }, (err, _out, stderr) => {
      if (!err) return resolve(true);
      if (flags.unprivileged || /Invalid argument/.test(stderr)) return resolve(false);
      reject(new UbloopError('EIO', `cannot scan the partitions of ${device.path}: ${stderr.trim() || err.message}`));
    });
  });
}

export interface RecoverOptions {
  /** How long to wait for the device to be recoverable (its dead server noticed, /dev/ublkcN released). */
  timeoutMs?: number;
}

/**
 * Takes over ublk device `id`, left waiting for recovery by a server of this image that
 * died (see lib/recovery.ts): same id, same disk, same device number, so whatever has
 * the disk open or mounted sees a pause. Waits up to timeoutMs for the kernel to notice
 * the dead server. Refuses, leaving the device as it was, when it is not such an orphan
 * (ENODEV: no such device; EBUSY: live or not recoverable) or when the image and options
 * do not make the same disk (EINVAL); a failure after the kernel handed the device over
 * deletes it, so that its held I/O fails rather than hangs.
 * @internal
 */
export async function recoverDevice(o: CheckedOptions, id: number, given?: Image, r: RecoverOptions = {}): Promise<Device> {
  const deadline = Date.now() + (r.timeoutMs ?? 30_000);
  let image: Image | undefined = given;
  try {
    let size = o.size ?? 0;
    if (o.target === 'loop') {
      image ??= o.fd !== undefined ? inspectImage(o.fd, o, `fd ${o.fd}`) : openImage(o.file as string, o);
      size = loopDeviceSize(image.size, o, image.name);
      if (o.directIo) checkDirectIoAlignment(image, o.blockSize, o.offset);
    }
    const orphan = await awaitOrphan(id, { timeoutMs: Math.max(0, deadline - Date.now()) });
    if (orphan.kind !== 'orphan') {
      throw new UbloopError(orphan.kind === 'absent' ? 'ENODEV' : 'EBUSY', `cannot recover ublk device ${id}: ${orphan.reason}`);
    }
    checkSameDisk(id, { size, blockSize: o.blockSize, readOnly: o.readOnly });
    for (;;) {
      try {
        const dev = await native().recoverDevice(nativeOptions({ ...o, id }, image, size, 0n));
        const device = new Device(dev, o);
        // The disk was not added again: its partitions are as the first server left them.
        device.partscan = (o.partscan && o.target === 'loop') || kernelScans(device);
        return device;
      } catch (err) {
        // EBUSY before the takeover: the dead server's /dev/ublkcN is not released yet
        if (!isSystemError(err) || err.code !== 'EBUSY' || err.syscall !== 'START_USER_RECOVERY' || Date.now() >= deadline) throw err;
        await new Promise((res) => setTimeout(res, 50));
      }
    }
  } finally {
    if (image && image !== given) closeImage(image);
  }
}
