// What the instance manager needs from a device: made by an injected factory, so the
// manager runs on the host with a fake and in the daemon with real ublk devices.
import type { BindOptions } from '../protocol/device-requests.js';

export interface BoundDevice {
  /** ublk device id (N of /dev/ublkbN). */
  readonly ublkId: number;
  /** /dev/ublkbN */
  readonly path: string;
  readonly major: number;
  readonly minor: number;
  /** Device size in bytes. */
  readonly size: number;
  /** Opened, mounted or held by anyone (so it must not be torn down now). */
  isBusy(): boolean;
  /** Stops and deletes the device; idempotent. */
  stop(): Promise<void>;
}

export interface BindSpec {
  /** Descriptor of the backing image, owned by the caller of the factory (it may close it after). */
  fd: number;
  options: BindOptions;
}

export type DeviceFactory = (spec: BindSpec) => Promise<BoundDevice>;
