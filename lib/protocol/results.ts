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
  backing: { path: string; dev: number; ino: number } | null;
  size: number | null;
  options: BindOptions | null;
  /** Unbind is waiting for the device to be released (lazy detach or autoclear). */
  detachPending: boolean;
  /** Why the device stopped serving (a queue thread failed; its I/O fails with EIO), or null. */
  failure: string | null;
  /** Whether the kernel scanned the disk's partition table (/dev/ublkbNpM), as losetup's PARTSCAN. */
  partscan: boolean;
}
