// The real device factory: a ublk loop device over the descriptor a client passed.
import { readFileSync } from 'node:fs';
import { UbloopError } from '../errors.js';
import { recoverDevice, startDevice, type Device } from '../device.js';
import { bindDeviceOptions } from '../device-options.js';
import { inspectImage, type Image } from '../image.js';
import type { BoundDevice, DeviceFactory } from '../instance/device-factory.js';
import { abandonOrphan, awaitOrphan, type RecoveryMode } from '../recovery.js';
import { ublkDiskBusy, ublkDiskClaimed } from './busy.js';
import { log } from './log.js';

function diskNumbers(id: number): { major: number; minor: number } {
  const text = readFileSync(`/sys/block/ublkb${id}/dev`, 'utf8').trim();
  const m = /^(\d+):(\d+)$/.exec(text);
  if (!m) throw new Error(`unexpected /sys/block/ublkb${id}/dev: ${text}`);
  return { major: Number(m[1]), minor: Number(m[2]) };
}

/**
 * Takes over the device a binding had when the daemon died, if it still waits for
 * recovery; null when there is none to take over (deleted by a clean stop, or the id
 * is some other server's now), so that the binding gets a new device. An orphan that
 * cannot be recovered is deleted (its held I/O fails with EIO) and the bind fails.
 */
async function takeOver(id: number, options: ReturnType<typeof bindDeviceOptions>, image: Image): Promise<Device | null> {
  const t0 = Date.now();
  const orphan = await awaitOrphan(id);
  if (orphan.kind !== 'orphan') return null;
  const t1 = Date.now();
  try {
    const device = await recoverDevice(options, id, image);
    log(`took /dev/ublkb${id} over (waited ${t1 - t0} ms for the kernel to quiesce it, recovery took ${Date.now() - t1} ms)`);
    return device;
  } catch (err) {
    const deleted = await abandonOrphan(id).catch(() => false);
    const e = err as { code?: string; message: string };
    throw new UbloopError(
      e.code === 'ENOENT' || e.code === 'EINVAL' ? e.code : 'EIO',
      `could not recover /dev/ublkb${id}: ${e.message}${deleted ? '; it was deleted, its held I/O failed with EIO' : ''}`,
    );
  }
}

/** The daemon's devices, added with the given recovery mode. */
export function ublkFactoryWith(recovery: RecoveryMode): DeviceFactory {
  return (spec) => bindUblk(spec, recovery);
}

export const ublkFactory: DeviceFactory = ublkFactoryWith('reissue');

async function bindUblk(spec: Parameters<DeviceFactory>[0], recovery: RecoveryMode): Promise<BoundDevice> {
  // The options were checked where the request came in, the image where it was opened
  // or received; a bind without an inspected image (a restore) inspects it here.
  const image = spec.image ?? inspectImage(spec.fd, spec.options);
  const options = bindDeviceOptions(spec.options, spec.fd, recovery);
  const recovered = spec.recover === undefined ? null : await takeOver(spec.recover, options, image);
  const device = recovered ?? (await startDevice(options, image));
  let numbers: { major: number; minor: number };
  try {
    numbers = diskNumbers(device.id);
  } catch (err) {
    await device.stop();
    throw err;
  }
  const bound: BoundDevice = {
    ublkId: device.id,
    path: device.path,
    major: numbers.major,
    minor: numbers.minor,
    get size() {
      return device.size;
    },
    // the looks first; the exclusive-open probe only when asked for, and last
    isBusy: async (check) => (await ublkDiskBusy(device.id, numbers.major, numbers.minor)) || (check?.exclusive === true && ublkDiskClaimed(device.id)),
    claimed: () => ublkDiskClaimed(device.id),
    stop: (options) => device.stop(options),
    canStopIfUnused: device.canStopIfUnused,
    resize: (size) => device.resize(size),
    failure: () => device.failure(),
    ioErrors: () => device.ioErrors(),
    imageDeleted: () => device.imageDeleted(),
    partscan: device.partscan,
    recovered: recovered !== null,
    ...(device.canHandOver ? { handOver: () => device.handOver() } : {}),
  };
  return bound;
}
