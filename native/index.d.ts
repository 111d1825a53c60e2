// Hand-written declarations for build/Release/ubloop.node (native/addon.cc).
// Keep in step with the exports there; test/unit/native-api.test.ts checks them
// against the loaded module: its members, and the flag names against ublkFlags.

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
  /** Microseconds a queue thread spins for its next event (a completion or a request) before it sleeps (0: never). */
  pollUs: number;
  /** How request data moves (default 'auto': the fastest the kernel offers and the caller may use). */
  copy?: NativeCopyMode;
}

/**
 * A data path: 'kernel' (the kernel copies to and from our buffers), 'user' (we copy
 * through /dev/ublkcN, UBLK_F_USER_COPY), 'zero' (we register the request's pages,
 * UBLK_F_SUPPORT_ZERO_COPY), 'auto-buf' (the kernel registers them, UBLK_F_AUTO_BUF_REG).
 */
export type NativeDataPath = 'kernel' | 'user' | 'zero' | 'auto-buf';
export type NativeCopyMode = 'auto' | NativeDataPath;

/** GET_DEV_INFO2 (GET_DEV_INFO before Linux 6.3), as the kernel reports it. */
export interface NativeKernelDeviceInfo {
  id: number;
  queues: number;
  depth: number;
  /**
   * 'quiesced': its server died (or gave it back with QUIESCE_DEV) and it holds its I/O
   * for a new server; 'fail-io': the same, but failing new I/O meanwhile
   * (UBLK_F_USER_RECOVERY_FAIL_IO); 'dead': not started, or stopped.
   */
  state: 'dead' | 'live' | 'quiesced' | 'fail-io';
  maxIoBytes: number;
  serverPid: number;
  /** Who added the device (Linux 6.3+; 0 on older kernels, where only root can). */
  ownerUid: number;
  ownerGid: number;
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
  /** The data path the device's queues use. */
  dataPath: NativeDataPath;
  /** The image's size in bytes now (fstat of the device's own descriptor), or null for the null target. */
  imageSize: number | null;
  /** The image file has no name left (unlinked while served; st_nlink 0): it keeps working through the open descriptor. */
  imageDeleted: boolean;
  /** remove() has completed. */
  removed: boolean;
}

/** A request that failed: the errno it was committed with, its op and when. */
export interface NativeLastError {
  errno: number;
  /** The errno's name, e.g. 'EIO', 'ENOSPC'. */
  code: string;
  op: 'read' | 'write' | 'flush' | 'discard' | 'write-zeroes' | 'other';
  /** When it failed, ms since the epoch. */
  atMs: number;
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
  /** Times the queue gave its idle I/O buffers back to the system. */
  bufferReleases: number;
  /** REGISTER_IO_BUF commands the queue made: one per data request in 'zero', a failed automatic registration's fallback in 'auto-buf'. */
  registrations: number;
  /** Failed READ requests. */
  readErrors: number;
  /** Failed WRITE requests. */
  writeErrors: number;
  /** Failed FLUSH requests. */
  flushErrors: number;
  /** Failed DISCARD and WRITE_ZEROES requests. */
  discardErrors: number;
  /** The queue's last failed request, or null if none has failed. */
  lastError: NativeLastError | null;
  /** Linux thread id of the queue thread. */
  threadId: number;
  /** IORING_SETUP_* flags the queue ring was created with. */
  ringFlags: number;
  /**
   * Why the queue thread stopped serving on its own (an Error with code, errno and
   * syscall), or null while it is healthy. A failed queue's requests fail with EIO.
   */
  failure: (Error & { code: string; errno: number; syscall: string }) | null;
}

export declare class NativeDevice {
  private constructor();
  readonly id: number;
  info(): NativeDeviceInfo;
  stats(): NativeQueueStats[];
  /**
   * STOP_DEV, join the queue threads, DEL_DEV. Idempotent. With onlyIfUnused the
   * kernel stops the device only if nobody has the disk open (TRY_STOP_DEV; rejects
   * with EBUSY and changes nothing otherwise, EOPNOTSUPP without UBLK_F_SAFE_STOP_DEV).
   */
  remove(options?: { onlyIfUnused?: boolean }): Promise<void>;
  /** UPDATE_SIZE: the disk's new size in bytes (a multiple of 512); EOPNOTSUPP without UBLK_F_UPDATE_SIZE. */
  resize(bytes: number): Promise<void>;
  /**
   * Live upgrade: QUIESCE_DEV (waiting up to timeoutMs for the requests in flight, 0:
   * no limit), then the queue threads end and /dev/ublkcN is closed, and the device is
   * left QUIESCED, holding its I/O, for a new server's recoverDevice. This process
   * never deletes it afterwards. EOPNOTSUPP without UBLK_F_QUIESCE (Linux 6.16+).
   */
  handOver(timeoutMs: number): Promise<void>;
}

/**
 * The UBLK_F_* flags ubloop knows (native/ublk_flags.h), for type-checked names;
 * test/unit/native-api.test.ts checks this list against the addon's ublkFlags.
 */
export type NativeUblkFlagName =
  | 'UBLK_F_SUPPORT_ZERO_COPY'
  | 'UBLK_F_URING_CMD_COMP_IN_TASK'
  | 'UBLK_F_NEED_GET_DATA'
  | 'UBLK_F_USER_RECOVERY'
  | 'UBLK_F_USER_RECOVERY_REISSUE'
  | 'UBLK_F_UNPRIVILEGED_DEV'
  | 'UBLK_F_CMD_IOCTL_ENCODE'
  | 'UBLK_F_USER_COPY'
  | 'UBLK_F_ZONED'
  | 'UBLK_F_USER_RECOVERY_FAIL_IO'
  | 'UBLK_F_UPDATE_SIZE'
  | 'UBLK_F_AUTO_BUF_REG'
  | 'UBLK_F_QUIESCE'
  | 'UBLK_F_PER_IO_DAEMON'
  | 'UBLK_F_BUF_REG_OFF_DAEMON'
  | 'UBLK_F_BATCH_IO'
  | 'UBLK_F_INTEGRITY'
  | 'UBLK_F_SAFE_STOP_DEV'
  | 'UBLK_F_NO_AUTO_PART_SCAN'
  | 'UBLK_F_SHMEM_ZC'
  | 'UBLK_F_IO_DESC_SIZE';

/** One UBLK_F_* feature flag: its name as <linux/ublk_cmd.h> spells it, and its bit number. */
export type NativeUblkFlag = readonly [name: NativeUblkFlagName, bit: number];

// ---- CUSE loop-control (native/cuse_loop_control.cc; native/cuse_unavailable.cc without libfuse3) ----

/** One ioctl on a CUSE device, as its handler sees it. */
export interface NativeIoctlRequest {
  /** ioctl command, e.g. 0x4C80 LOOP_CTL_ADD, 0x4C81 REMOVE, 0x4C82 GET_FREE. */
  cmd: number;
  /** The ioctl argument as a signed long (LOOP_CTL_* pass the index by value). */
  arg: number;
  /** The caller, from the FUSE request header; pid is the calling thread's id. */
  uid: number;
  gid: number;
  pid: number;
}

/**
 * Answers one ioctl: its non-negative result, or a negative errno (-17 for EEXIST).
 * Called on the JS thread; replies may be given in any order. A handler that throws,
 * rejects, or gives anything but an integer in [-4095, 2^31-1] answers EIO.
 */
export type NativeIoctlHandler = (req: NativeIoctlRequest) => number | Promise<number>;

export declare class NativeCuseDevice {
  private constructor();
  /** Name under /dev given to CUSE (DEVNAME=...), e.g. "ubloop-a-loop-control". */
  readonly devName: string;
  readonly major: number;
  readonly minor: number;
  /**
   * Ends the CUSE session: ioctls still unanswered get ENODEV and /dev/<devName>
   * disappears. Idempotent. An open device keeps the process alive until closed.
   */
  close(): Promise<void>;
}

// ---- Unix stream sockets with peer credentials and SCM_RIGHTS (native/unix_socket.cc) ----

export interface NativePeer {
  pid: number;
  uid: number;
  gid: number;
}

export declare class NativeUnixConnection {
  private constructor();
  /** SO_PEERCRED at accept/connect time. */
  readonly peer: NativePeer;
  /**
   * Queues bytes, and descriptors to pass along with their first byte (duplicated now:
   * the caller may close its own at once). Ignored once the connection is closed or
   * ending. Descriptors need at least one byte; at most 253 per write.
   */
  write(data: Uint8Array | string, fds?: number[]): void;
  /** Closes after pending writes are flushed. */
  end(): void;
  /** Closes now. Idempotent. */
  destroy(): void;
}

export interface NativeUnixHandlers {
  /** Bytes received, with any fds that arrived with them (close-on-exec; the receiver owns and must close them). */
  data(conn: NativeUnixConnection, data: Buffer, fds: number[]): void;
  /** Called exactly once, on a later loop turn, however the connection closed (peer, error, end, destroy). */
  close(conn: NativeUnixConnection): void;
}

export type NativeUnixConnectionHandler = (conn: NativeUnixConnection) => void;

export declare class NativeUnixServer {
  private constructor();
  readonly path: string;
  /** Stops listening and unlinks path; open connections stay. Idempotent. */
  close(): void;
}

export interface NativeBinding {
  NativeDevice: typeof NativeDevice;
  /** ADD_DEV, SET_PARAMS, queue threads, START_DEV; all undone on failure. */
  createDevice(options: NativeCreateOptions): Promise<NativeDevice>;
  /**
   * Takes over device options.id, left 'quiesced' or 'fail-io' by a server that died:
   * START_USER_RECOVERY, queue threads FETCHing every tag on a new /dev/ublkcN, then
   * END_USER_RECOVERY. Queues, depth, buffer size, flags and data path are the
   * device's own (options give the image, offset, size and the rest). Rejects before
   * changing anything with EINVAL (not created recoverable), EBUSY (not waiting for
   * recovery, or the old server has not released /dev/ublkcN yet: try again), EPERM
   * (unprivileged device); any later failure deletes the device (its I/O fails).
   */
  recoverDevice(options: NativeCreateOptions): Promise<NativeDevice>;
  probeKernel(): NativeKernelSupport;
  getDeviceInfo(id: number): Promise<NativeKernelDeviceInfo>;
  /** STOP_DEV + DEL_DEV of a device this process does not serve. */
  deleteDevice(id: number): Promise<void>;
  /** Stops and deletes, synchronously, every device this environment still serves (for process 'exit'). */
  removeAllDevicesSync(): void;
  /** Every UBLK_F_* flag ubloop knows (native/ublk_flags.h), in bit order. */
  ublkFlags: readonly NativeUblkFlag[];

  /**
   * mknod(2) of a block ('b') or char ('c') node, synchronously (one syscall); mode's
   * permission bits are filtered by the umask. Throws Error{code, errno, syscall: 'mknod', path}.
   */
  mknod(path: string, mode: number, type: 'b' | 'c', major: number, minor: number): void;

  /** Whether the addon was built with libfuse3; without it createCuseDevice rejects with ENOTSUP. */
  cuseAvailable: boolean;
  NativeCuseDevice: typeof NativeCuseDevice;
  /**
   * Creates a CUSE char device /dev/<devName> whose ioctls are answered by handler (on
   * the JS thread). open/release always succeed; read/write fail with EINVAL like the
   * kernel's loop-control. Rejects with ENOENT when /dev/cuse is missing, EEXIST when
   * the name is taken, ENOTSUP ("CUSE loop-control unavailable: ubloop was built
   * without libfuse3") when cuseAvailable is false; throws TypeError for a name outside
   * [A-Za-z0-9._-]{1,128}.
   */
  createCuseDevice(devName: string, handler: NativeIoctlHandler): Promise<NativeCuseDevice>;

  NativeUnixConnection: typeof NativeUnixConnection;
  NativeUnixServer: typeof NativeUnixServer;
  /**
   * Listens on path (replacing a stale socket; EADDRINUSE if a server answers there),
   * chmod to mode. onConnection is called per accepted client on the JS thread (uv_poll
   * on the main loop, no threads). The server keeps the process alive until closed.
   */
  listenUnix(path: string, mode: number, onConnection: NativeUnixConnectionHandler, handlers: NativeUnixHandlers): NativeUnixServer;
  /** Client side: a blocking connect (ENOENT, ECONNREFUSED, EACCES as Error codes). */
  connectUnix(path: string, handlers: NativeUnixHandlers): NativeUnixConnection;
}
