// What the instance manager needs from a device: made by an injected factory, so the
// manager runs on the host with a fake and in the daemon with real ublk devices.
import type { BindOptions } from '../device-options.js';
import type { Image } from '../image.js';
import type { IoErrorCounts } from '../protocol/results.js';

export interface BusyCheck {
  /**
   * After the other checks found nothing, also open the device exclusively (O_EXCL): that
   * sees in-kernel claims the others cannot (e.g. a lazily unmounted filesystem still
   * alive), but while it holds the device a user's mount of it fails with EBUSY. Only for
   * the final confirmation right before a teardown, never on every sweep.
   */
  exclusive?: boolean;
}

export interface BoundDevice {
  /** ublk device id (N of /dev/ublkbN). */
  readonly ublkId: number;
  /** /dev/ublkbN */
  readonly path: string;
  readonly major: number;
  readonly minor: number;
  /** Device size in bytes. */
  readonly size: number;
  /**
   * Opened, mounted or held by anyone (so it must not be torn down now). Without options
   * it only looks (holders, mounts in every namespace, swap, open descriptors) and never
   * gets in anyone's way; see BusyCheck.exclusive for the final probe.
   */
  isBusy(check?: BusyCheck): boolean | Promise<boolean>;
  /**
   * Claimed in the kernel (an exclusive open fails with EBUSY): a filesystem holds the
   * disk or a partition, even one lazily unmounted. The probe alone, one open(2); while it
   * runs it holds the disk, so only for devices that are mounted already (clearOnUnmount).
   * Absent: isBusy({ exclusive: true }) stands in.
   */
  claimed?(): boolean;
  /**
   * Stops and deletes the device; idempotent. With ifUnused (only where
   * canStopIfUnused) the kernel refuses with EBUSY while the disk is open or mounted.
   */
  stop(options?: { ifUnused?: boolean }): Promise<void>;
  /** The kernel can refuse a stop itself while the disk is in use (TRY_STOP_DEV). */
  readonly canStopIfUnused: boolean;
  /** Takes the image's size now (or `size` bytes); resolves with the new size. */
  resize(size?: number): Promise<number>;
  /** Why the device stopped serving (a queue failed; its I/O fails), or null. */
  failure(): string | null;
  /** Its failed requests (absent: not counted, e.g. a test's fake device). */
  ioErrors?(): IoErrorCounts;
  /** The image file was deleted while bound: it keeps working through the open descriptor. */
  imageDeleted?(): boolean;
  /** Whether the kernel scanned its partition table (/dev/ublkbNpM); absent: no. */
  readonly partscan?: boolean;
  /** The device was taken over from the daemon's previous run (crash recovery), not created. */
  readonly recovered?: boolean;
  /** Live upgrade: leave the device, holding its I/O, for the next daemon; absent where the kernel cannot (no UBLK_F_QUIESCE). */
  handOver?(): Promise<void>;
}

export interface BindSpec {
  /** Descriptor of the backing image, owned by the caller of the factory (it may close it after). */
  fd: number;
  /** The image behind fd, already inspected where it came in; without it the factory inspects fd itself. */
  image?: Image;
  options: BindOptions;
  /**
   * ublk id the binding had in the daemon's previous run: if that device still waits
   * for recovery (the daemon died), the factory takes it over instead of adding one.
   */
  recover?: number;
}

export type DeviceFactory = (spec: BindSpec) => Promise<BoundDevice>;
