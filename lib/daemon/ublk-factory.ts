// The real device factory: a ublk loop device over the descriptor a client passed.
import { readFileSync } from 'node:fs';
import { startDevice } from '../device.js';
import { bindDeviceOptions } from '../device-options.js';
import { inspectImage } from '../image.js';
import type { BoundDevice, DeviceFactory } from '../instance/device-factory.js';
import { ublkDiskBusy, ublkDiskClaimed } from './busy.js';

function diskNumbers(id: number): { major: number; minor: number } {
  const text = readFileSync(`/sys/block/ublkb${id}/dev`, 'utf8').trim();
  const m = /^(\d+):(\d+)$/.exec(text);
  if (!m) throw new Error(`unexpected /sys/block/ublkb${id}/dev: ${text}`);
  return { major: Number(m[1]), minor: Number(m[2]) };
}

export const ublkFactory: DeviceFactory = async (spec) => {
  // The options were checked where the request came in, the image where it was opened
  // or received; a bind without an inspected image (a restore) inspects it here.
  const image = spec.image ?? inspectImage(spec.fd, spec.options);
  const device = await startDevice(bindDeviceOptions(spec.options, spec.fd), image);
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
  };
  return bound;
};
