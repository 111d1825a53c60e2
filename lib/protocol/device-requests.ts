// Requests about one instance's loop devices: the loop-control operations plus bind,
// unbind, list and info. On an instance's own socket they address that instance; on
// the admin socket they name it in `instance`.
import { invalid } from '../errors.js';
import { MAX_DEPTH, MAX_QUEUES } from '../device-options.js';
import { INSTANCE_NAME, MAX_INDEX } from './limits.js';
import { guard, int, onlyKeys, optBool, optInt, optStr, type Fields } from './fields.js';

const INT32 = { min: -(2 ** 31), max: 2 ** 31 - 1 };

function optInstance(f: Fields): string | undefined {
  const name = optStr(f, 'instance', 64);
  if (name !== undefined && !INSTANCE_NAME.test(name)) throw invalid(`instance name ${JSON.stringify(name)} is not valid`);
  return name;
}

/** LOOP_CTL_ADD: `index` as the ioctl argument (negative = lowest unused). */
export const LOOP_ADD = 'loop.add';
export interface LoopAddRequest {
  op: typeof LOOP_ADD;
  instance?: string;
  index: number;
}
export function checkLoopAdd(f: Fields): LoopAddRequest {
  onlyKeys(f, LOOP_ADD, ['instance', 'index']);
  const instance = optInstance(f);
  return { op: LOOP_ADD, index: int(f, 'index', INT32.min, INT32.max), ...(instance === undefined ? {} : { instance }) };
}
export const isLoopAddRequest = guard(checkLoopAdd);

/** LOOP_CTL_REMOVE. */
export const LOOP_REMOVE = 'loop.remove';
export interface LoopRemoveRequest {
  op: typeof LOOP_REMOVE;
  instance?: string;
  index: number;
}
export function checkLoopRemove(f: Fields): LoopRemoveRequest {
  onlyKeys(f, LOOP_REMOVE, ['instance', 'index']);
  const instance = optInstance(f);
  return { op: LOOP_REMOVE, index: int(f, 'index', INT32.min, INT32.max), ...(instance === undefined ? {} : { instance }) };
}
export const isLoopRemoveRequest = guard(checkLoopRemove);

/** LOOP_CTL_GET_FREE (reserves the index for the caller for a short time). */
export const LOOP_GET_FREE = 'loop.get_free';
export interface LoopGetFreeRequest {
  op: typeof LOOP_GET_FREE;
  instance?: string;
}
export function checkLoopGetFree(f: Fields): LoopGetFreeRequest {
  onlyKeys(f, LOOP_GET_FREE, ['instance']);
  const instance = optInstance(f);
  return { op: LOOP_GET_FREE, ...(instance === undefined ? {} : { instance }) };
}
export const isLoopGetFreeRequest = guard(checkLoopGetFree);

/** Any ioctl number, answered exactly like the instance's loop-control char device. */
export const LOOP_IOCTL = 'loop.ioctl';
export interface LoopIoctlRequest {
  op: typeof LOOP_IOCTL;
  instance?: string;
  cmd: number;
  arg: number;
}
export function checkLoopIoctl(f: Fields): LoopIoctlRequest {
  onlyKeys(f, LOOP_IOCTL, ['instance', 'cmd', 'arg']);
  const instance = optInstance(f);
  return {
    op: LOOP_IOCTL,
    cmd: int(f, 'cmd', 0, 2 ** 32 - 1),
    arg: int(f, 'arg', Number.MIN_SAFE_INTEGER, Number.MAX_SAFE_INTEGER),
    ...(instance === undefined ? {} : { instance }),
  };
}
export const isLoopIoctlRequest = guard(checkLoopIoctl);

/** Options of a binding, as they travel and as they are stored. */
export interface BindOptions {
  offset: number;
  sizeLimit: number;
  readOnly: boolean;
  directIo: boolean;
  blockSize: number;
  queues: number;
  depth: number;
  autoclear: boolean;
}

/**
 * Binds an image to an index (or, without `index`, to GET_FREE's answer in one step).
 * The image is the descriptor passed with the request (SCM_RIGHTS); root may name a
 * `path` instead.
 */
export const BIND = 'bind';
export interface BindRequest {
  op: typeof BIND;
  instance?: string;
  index?: number;
  path?: string;
  options: BindOptions;
}
export function checkBind(f: Fields): BindRequest {
  onlyKeys(f, BIND, ['instance', 'index', 'path', 'offset', 'sizeLimit', 'readOnly', 'directIo', 'blockSize', 'queues', 'depth', 'autoclear']);
  const instance = optInstance(f);
  const index = optInt(f, 'index', INT32.min, INT32.max);
  const path = optStr(f, 'path');
  const blockSize = optInt(f, 'blockSize', 512, 4096) ?? 512;
  if (![512, 1024, 2048, 4096].includes(blockSize)) throw invalid(`"blockSize" must be 512, 1024, 2048 or 4096, got ${blockSize}`);
  const options: BindOptions = {
    offset: optInt(f, 'offset', 0, Number.MAX_SAFE_INTEGER) ?? 0,
    sizeLimit: optInt(f, 'sizeLimit', 0, Number.MAX_SAFE_INTEGER) ?? 0,
    readOnly: optBool(f, 'readOnly') ?? false,
    directIo: optBool(f, 'directIo') ?? false,
    blockSize,
    queues: optInt(f, 'queues', 1, MAX_QUEUES) ?? 1,
    depth: optInt(f, 'depth', 1, MAX_DEPTH) ?? 128,
    autoclear: optBool(f, 'autoclear') ?? false,
  };
  return {
    op: BIND,
    options,
    ...(instance === undefined ? {} : { instance }),
    ...(index === undefined ? {} : { index }),
    ...(path === undefined ? {} : { path }),
  };
}
export const isBindRequest = guard(checkBind);

/** Unbinds (detaches) an index; the index itself stays, like LOOP_CLR_FD. */
export const UNBIND = 'unbind';
export interface UnbindRequest {
  op: typeof UNBIND;
  instance?: string;
  index: number;
  /**
   * A device still in use: 'defer' (the default, like losetup -d) detaches it once
   * released; 'refuse' answers EBUSY and leaves it bound (ubloop detach).
   */
  busy: 'defer' | 'refuse';
}
export function checkUnbind(f: Fields): UnbindRequest {
  onlyKeys(f, UNBIND, ['instance', 'index', 'busy']);
  const instance = optInstance(f);
  const busy = optStr(f, 'busy') ?? 'defer';
  if (busy !== 'defer' && busy !== 'refuse') throw invalid(`"busy" must be "defer" or "refuse", got ${JSON.stringify(busy).slice(0, 40)}`);
  return { op: UNBIND, index: int(f, 'index', INT32.min, INT32.max), busy, ...(instance === undefined ? {} : { instance }) };
}
export const isUnbindRequest = guard(checkUnbind);

/** Lists the devices of the instance (admin socket without `instance`: of every instance). */
export const LIST = 'list';
export interface ListRequest {
  op: typeof LIST;
  instance?: string;
}
export function checkList(f: Fields): ListRequest {
  onlyKeys(f, LIST, ['instance']);
  const instance = optInstance(f);
  return { op: LIST, ...(instance === undefined ? {} : { instance }) };
}
export const isListRequest = guard(checkList);

/** One device of the instance. */
export const INFO = 'info';
export interface InfoRequest {
  op: typeof INFO;
  instance?: string;
  index: number;
}
export function checkInfo(f: Fields): InfoRequest {
  onlyKeys(f, INFO, ['instance', 'index']);
  const instance = optInstance(f);
  return { op: INFO, index: int(f, 'index', 0, MAX_INDEX), ...(instance === undefined ? {} : { instance }) };
}
export const isInfoRequest = guard(checkInfo);

/**
 * Resizes a bound device (losetup -c): to `size` bytes, or to what its image now
 * holds. Needs a kernel with UBLK_F_UPDATE_SIZE.
 */
export const RESIZE = 'resize';
export interface ResizeRequest {
  op: typeof RESIZE;
  instance?: string;
  index: number;
  size?: number;
}
export function checkResize(f: Fields): ResizeRequest {
  onlyKeys(f, RESIZE, ['instance', 'index', 'size']);
  const instance = optInstance(f);
  const size = optInt(f, 'size', 1, Number.MAX_SAFE_INTEGER);
  return {
    op: RESIZE,
    index: int(f, 'index', 0, MAX_INDEX),
    ...(instance === undefined ? {} : { instance }),
    ...(size === undefined ? {} : { size }),
  };
}
export const isResizeRequest = guard(checkResize);

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
