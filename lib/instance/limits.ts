// Caps on what the daemon commits: devices, queue depth and memory, daemon-wide (the
// `ubloop daemon --max-*` options) and per instance (like `max`, at create and live).
// Each refusal names the limit it hit, with an errno that says which kind:
// ENOSPC for a device count, EINVAL for a depth above a limit, ENOMEM for a memory cap.
import { UbloopError } from '../errors.js';
import { DEFAULTS } from '../device-options.js';
import { formatSize } from '../size.js';

/** The daemon-wide caps; null: none. */
export interface GlobalCaps {
  /** Loop devices (indices) across every instance. */
  maxDevices: number | null;
  /** Requests in flight per queue, for any device. */
  maxDepth: number | null;
  /** Bytes committed by every bound device together (see deviceMemory). */
  maxMemory: number | null;
}

export const NO_CAPS: GlobalCaps = { maxDevices: null, maxDepth: null, maxMemory: null };

/** A device's shape as far as its memory goes. */
export interface DeviceShape {
  queues: number;
  depth: number;
  /** Default: the device option's default. */
  maxIoBytes?: number | undefined;
}

const PAGE = 4096;
/** sizeof(struct ublksrv_io_desc): the per-tag descriptor the queue maps from /dev/ublkcN. */
const IO_DESC_BYTES = 24;
/** Per io_uring entry: a 64-byte SQE, two 16-byte CQEs (the CQ ring is twice the SQ) and a 4-byte index. */
const RING_BYTES_PER_ENTRY = 64 + 2 * 16 + 4;

const pageAlign = (n: number): number => Math.ceil(n / PAGE) * PAGE;

function nextPow2(n: number): number {
  let p = 1;
  while (p < n) p *= 2;
  return p;
}

/**
 * What the daemon commits for one device (native/queue.cc, Queue::setup), per queue:
 * one I/O buffer of maxIoBytes per tag (mapped for every data path), the io_uring of
 * 3 × depth + 1 entries (rounded up to a power of two by the kernel) and the mapped
 * I/O descriptors. The buffers are mapped without reserve and touched only by requests
 * of that size, so this is what the device may come to use, not what it uses idle.
 */
export function deviceMemory(shape: DeviceShape): number {
  const perQueue = shape.depth * (shape.maxIoBytes ?? DEFAULTS.maxIoBytes) + nextPow2(3 * shape.depth + 1) * RING_BYTES_PER_ENTRY + pageAlign(shape.depth * IO_DESC_BYTES);
  return shape.queues * perQueue;
}

/** Refusal of a device count at a cap (ENOSPC, like the instance's own max). */
export function globalDeviceRefusal(caps: GlobalCaps, total: number): UbloopError | null {
  if (caps.maxDevices === null || total < caps.maxDevices) return null;
  return new UbloopError('ENOSPC', `global device limit ${caps.maxDevices} reached (${total} device(s) across every instance)`);
}

/** Refusal of a depth above the instance's or the daemon's limit (EINVAL), or null. */
export function depthRefusal(depth: number, instance: { name: string; maxDepth: number | null }, caps: GlobalCaps): UbloopError | null {
  if (instance.maxDepth !== null && depth > instance.maxDepth) {
    return new UbloopError('EINVAL', `queue depth ${depth} above instance ${instance.name}'s limit ${instance.maxDepth}`);
  }
  if (caps.maxDepth !== null && depth > caps.maxDepth) {
    return new UbloopError('EINVAL', `queue depth ${depth} above the daemon's limit ${caps.maxDepth}`);
  }
  return null;
}

/**
 * Refusal of a device needing `need` bytes (ENOMEM) when the instance already commits
 * `instanceUsed` and every instance together `globalUsed`, or null.
 */
export function memoryRefusal(
  need: number,
  instance: { name: string; maxMemory: number | null; used: number },
  caps: GlobalCaps,
  globalUsed: number,
): UbloopError | null {
  if (instance.maxMemory !== null && instance.used + need > instance.maxMemory) {
    return new UbloopError(
      'ENOMEM',
      `the device needs ${formatSize(need)} of memory; instance ${instance.name} commits ${formatSize(instance.used)} of its limit ${formatSize(instance.maxMemory)}`,
    );
  }
  if (caps.maxMemory !== null && globalUsed + need > caps.maxMemory) {
    return new UbloopError(
      'ENOMEM',
      `the device needs ${formatSize(need)} of memory; the daemon commits ${formatSize(globalUsed)} of its global memory limit ${formatSize(caps.maxMemory)}`,
    );
  }
  return null;
}
