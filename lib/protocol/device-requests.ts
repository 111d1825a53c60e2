// Requests about one instance's loop devices: the loop-control operations plus bind,
// unbind, list and info. On an instance's own socket they address that instance; on
// the admin socket they name it in `instance`.
import { invalid } from '../errors.js';
import { TUNABLE_NAMES, checkBindOptions, type BindOptions } from '../device-options.js';
import { INSTANCE_NAME, MAX_INDEX } from './limits.js';
import { int, onlyKeys, optInt, optStr, type Fields } from './fields.js';

export type { BindOptions } from '../device-options.js';

const INT32 = { min: -(2 ** 31), max: 2 ** 31 - 1 };

/**
 * The checker of one request about an instance's devices: it takes only `instance` and
 * `keys`, checks `instance` (optional on an instance's own socket) and adds what `body`
 * reads from the other fields.
 */
function deviceRequest<O extends string, B extends object>(
  op: O,
  keys: readonly string[],
  body: (f: Fields) => B,
): (f: Fields) => { op: O; instance?: string } & B {
  return (f) => {
    onlyKeys(f, op, ['instance', ...keys]);
    const name = optStr(f, 'instance', 64);
    if (name !== undefined && !INSTANCE_NAME.test(name)) throw invalid(`instance name ${JSON.stringify(name)} is not valid`);
    return { op, ...body(f), ...(name === undefined ? {} : { instance: name }) };
  };
}

const index32 = (f: Fields) => ({ index: int(f, 'index', INT32.min, INT32.max) });

/** LOOP_CTL_ADD: `index` as the ioctl argument (negative = lowest unused). */
export const LOOP_ADD = 'loop.add';
export const checkLoopAdd = deviceRequest(LOOP_ADD, ['index'], index32);
export type LoopAddRequest = ReturnType<typeof checkLoopAdd>;

/** LOOP_CTL_REMOVE. */
export const LOOP_REMOVE = 'loop.remove';
export const checkLoopRemove = deviceRequest(LOOP_REMOVE, ['index'], index32);
export type LoopRemoveRequest = ReturnType<typeof checkLoopRemove>;

/** LOOP_CTL_GET_FREE (reserves the index for the caller for a short time). */
export const LOOP_GET_FREE = 'loop.get_free';
export const checkLoopGetFree = deviceRequest(LOOP_GET_FREE, [], () => ({}));
export type LoopGetFreeRequest = ReturnType<typeof checkLoopGetFree>;

/** Any ioctl number, answered exactly like the instance's loop-control char device. */
export const LOOP_IOCTL = 'loop.ioctl';
export const checkLoopIoctl = deviceRequest(LOOP_IOCTL, ['cmd', 'arg'], (f) => ({
  cmd: int(f, 'cmd', 0, 2 ** 32 - 1),
  arg: int(f, 'arg', Number.MIN_SAFE_INTEGER, Number.MAX_SAFE_INTEGER),
}));
export type LoopIoctlRequest = ReturnType<typeof checkLoopIoctl>;

/**
 * Binds an image to an index (or, without `index`, to GET_FREE's answer in one step).
 * The image is the descriptor passed with the request (SCM_RIGHTS); root may name a
 * `path` instead. Its options are the device options (TUNABLES in device-options.ts),
 * each an optional field of the request, plus `autoclear` and `clearOnUnmount` (device-options.ts).
 */
export const BIND = 'bind';
export const checkBind = deviceRequest(BIND, ['index', 'path', ...TUNABLE_NAMES, 'autoclear', 'clearOnUnmount'], (f) => {
  const index = optInt(f, 'index', INT32.min, INT32.max);
  const path = optStr(f, 'path');
  // the kernel's paths end at a NUL; node refuses them with a code that is no errno
  if (path?.includes('\0')) throw invalid('"path" must not contain a NUL character');
  return {
    options: checkBindOptions(f),
    ...(index === undefined ? {} : { index }),
    ...(path === undefined ? {} : { path }),
  };
});
export type BindRequest = ReturnType<typeof checkBind>;

/** Unbinds (detaches) an index; the index itself stays, like LOOP_CLR_FD. */
export const UNBIND = 'unbind';
/**
 * busy: what to do with a device still in use: 'defer' (the default, like losetup -d)
 * detaches it once released; 'refuse' answers EBUSY and leaves it bound (ubloop detach).
 */
export const checkUnbind = deviceRequest(UNBIND, ['index', 'busy'], (f) => {
  const busy = optStr(f, 'busy') ?? 'defer';
  if (busy !== 'defer' && busy !== 'refuse') throw invalid(`"busy" must be "defer" or "refuse", got ${JSON.stringify(busy).slice(0, 40)}`);
  return { ...index32(f), busy: busy as 'defer' | 'refuse' };
});
export type UnbindRequest = ReturnType<typeof checkUnbind>;

/** Lists the devices of the instance (admin socket without `instance`: of every instance). */
export const LIST = 'list';
export const checkList = deviceRequest(LIST, [], () => ({}));
export type ListRequest = ReturnType<typeof checkList>;

/** One device of the instance. */
export const INFO = 'info';
export const checkInfo = deviceRequest(INFO, ['index'], (f) => ({ index: int(f, 'index', 0, MAX_INDEX) }));
export type InfoRequest = ReturnType<typeof checkInfo>;

/**
 * Resizes a bound device (losetup -c): to `size` bytes, or to what its image now
 * holds. Needs a kernel with UBLK_F_UPDATE_SIZE.
 */
export const RESIZE = 'resize';
export const checkResize = deviceRequest(RESIZE, ['index', 'size'], (f) => {
  const size = optInt(f, 'size', 1, Number.MAX_SAFE_INTEGER);
  return { index: int(f, 'index', 0, MAX_INDEX), ...(size === undefined ? {} : { size }) };
});
export type ResizeRequest = ReturnType<typeof checkResize>;

export type DeviceRequest =
  | LoopAddRequest
  | LoopRemoveRequest
  | LoopGetFreeRequest
  | LoopIoctlRequest
  | BindRequest
  | UnbindRequest
  | ListRequest
  | InfoRequest
  | ResizeRequest;
