// What successful replies carry.
import type { BindOptions } from './device-requests.js';

export interface InstanceInfo {
  name: string;
  max: number;
  uid: number;
  gid: number;
  mode: number;
  /** The owner's limit across all of their instances, or null for none. */
  ownerMax: number | null;
  /** Devices (indices) the instance holds, bound or not. */
  count: number;
  bound: number;
  dir: string;
  /** Path of the loop-control char device, or null when serving by socket only. */
  loopControl: string | null;
  /** Largest queue depth of a device bound here (present only when set). */
  maxDepth?: number;
  /** Memory limit of its devices together, in bytes (present only when set)... */
  maxMemory?: number;
  /** ...and what they commit now. */
  memory?: number;
}

/** A device's failed requests by op, and the last one. */
export interface IoErrorCounts {
  readErrors: number;
  writeErrors: number;
  flushErrors: number;
  /** DISCARD and WRITE_ZEROES. */
  discardErrors: number;
  /** The last failed request: errno, its name (EIO, ENOSPC...), the op, when (ISO 8601); null if none failed. */
  lastError: { errno: number; code: string; op: string; at: string } | null;
}

export interface DeviceEntry {
  instance: string;
  index: number;
  state: 'unbound' | 'binding' | 'bound' | 'unbinding';
  /** Node in the instance directory (loopN), or null while unbound. */
  path: string | null;
  /** The ublk block device behind it (/dev/ublkbN), or null while unbound. */
  ublkPath: string | null;
  ublkId: number | null;
  /** The image; `deleted` once its file was unlinked while bound (losetup's "(deleted)"). */
  backing: { path: string; dev: number; ino: number; deleted: boolean } | null;
  size: number | null;
  options: BindOptions | null;
  /** Unbind is waiting for the device to be released (lazy detach or autoclear). */
  detachPending: boolean;
  /** Why the device stopped serving (a queue thread failed; its I/O fails with EIO), or null. */
  failure: string | null;
  /** Failed requests since the device was bound, or null while unbound (or not counted). */
  ioErrors: IoErrorCounts | null;
  /** Whether the kernel scanned the disk's partition table (/dev/ublkbNpM), as losetup's PARTSCAN. */
  partscan: boolean;
}
