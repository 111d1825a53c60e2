// Hand-written declarations for build/Release/ubloop.node (native/addon.cc).
// Keep in step with the exports there; test/unit/native-api.test.ts checks that the
// loaded module has exactly these members.

/** What the running kernel's ublk offers. */
export interface NativeKernelSupport {
  /** /dev/ublk-control exists and could be opened. */
  present: boolean;
  /** errno code of the failed open of /dev/ublk-control, or null. */
  controlError: string | null;
  /** How control and I/O commands are encoded: 'legacy' (Linux 6.1) or 'ioctl' (6.4+). */
  encoding: 'legacy' | 'ioctl';
  /** UBLK_F_* bits from GET_FEATURES (Linux 6.5+), or null where the kernel lacks it. */
  features: bigint | null;
}

export interface NativeCreateOptions {
  /** Requested ublk device id, or -1 for the kernel's choice. */
  id: number;
  target: 'loop' | 'null';
  /** Backing file descriptor for 'loop' (the device keeps a dup); -1 for 'null'. */
  fd: number;
  /** Byte offset of the device's first byte in the backing file. */
  offset: number;
  /** Device size in bytes: a positive multiple of blockSize. */
  size: number;
  readOnly: boolean;
  queues: number;
  depth: number;
  blockSize: 512 | 1024 | 2048 | 4096;
  /** Largest single I/O in bytes (a multiple of 4096). */
  maxIoBytes: number;
  /** Extra UBLK_F_* flags to request. */
  flags: bigint;
  /** Advertise DISCARD and WRITE_ZEROES. */
  discard: boolean;
}

/** GET_DEV_INFO, as the kernel reports it. */
export interface NativeKernelDeviceInfo {
  id: number;
  queues: number;
  depth: number;
  state: 'dead' | 'live' | 'quiesced';
  maxIoBytes: number;
  serverPid: number;
  /** UBLK_F_* flags the kernel granted. */
  flags: bigint;
}

export interface NativeDeviceInfo extends NativeKernelDeviceInfo {
  target: 'loop' | 'null';
  size: number;
  offset: number;
  blockSize: number;
  readOnly: boolean;
  encoding: 'legacy' | 'ioctl';
  /** remove() has completed. */
  removed: boolean;
}

export interface NativeQueueStats {
  queue: number;
  /** Requests completed. */
  ops: number;
  bytesRead: number;
  bytesWritten: number;
  /** Requests completed with an error. */
  errors: number;
  /** io_uring_enter calls made by the queue loop. */
  ringEnters: number;
  /** Linux thread id of the queue thread. */
  threadId: number;
  /** IORING_SETUP_* flags the queue ring was created with. */
  ringFlags: number;
}

export declare class NativeDevice {
  private constructor();
  readonly id: number;
  info(): NativeDeviceInfo;
  stats(): NativeQueueStats[];
  /** STOP_DEV, join the queue threads, DEL_DEV. Idempotent. */
  remove(): Promise<void>;
}

export interface NativeConstants {
  UBLK_MAX_QUEUE_DEPTH: number;
  UBLK_F_SUPPORT_ZERO_COPY: bigint;
  UBLK_F_URING_CMD_COMP_IN_TASK: bigint;
  UBLK_F_NEED_GET_DATA: bigint;
  UBLK_F_USER_RECOVERY: bigint;
  UBLK_F_USER_RECOVERY_REISSUE: bigint;
  UBLK_F_UNPRIVILEGED_DEV: bigint;
  UBLK_F_CMD_IOCTL_ENCODE: bigint;
  UBLK_F_USER_COPY: bigint;
  UBLK_F_ZONED: bigint;
  UBLK_F_USER_RECOVERY_FAIL_IO: bigint;
  UBLK_F_UPDATE_SIZE: bigint;
  UBLK_F_AUTO_BUF_REG: bigint;
  UBLK_F_QUIESCE: bigint;
  IORING_SETUP_COOP_TASKRUN: number;
  IORING_SETUP_SINGLE_ISSUER: number;
  IORING_SETUP_DEFER_TASKRUN: number;
}

export interface NativeBinding {
  NativeDevice: typeof NativeDevice;
  /** ADD_DEV, SET_PARAMS, queue threads, START_DEV; all undone on failure. */
  createDevice(options: NativeCreateOptions): Promise<NativeDevice>;
  probeKernel(): NativeKernelSupport;
  getDeviceInfo(id: number): Promise<NativeKernelDeviceInfo>;
  /** STOP_DEV + DEL_DEV of a device this process does not serve. */
  deleteDevice(id: number): Promise<void>;
  constants: NativeConstants;
}
