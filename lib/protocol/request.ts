// One request line → a typed request, or an error naming what was wrong with it.
import { UbloopError, invalid } from '../errors.js';
import {
  BIND, INFO, LIST, LOOP_ADD, LOOP_GET_FREE, LOOP_IOCTL, LOOP_REMOVE, RESIZE, UNBIND,
  checkBind, checkInfo, checkList, checkLoopAdd, checkLoopGetFree, checkLoopIoctl, checkLoopRemove, checkResize, checkUnbind,
  type DeviceRequest,
} from './device-requests.js';
import {
  INSTANCE_CREATE, INSTANCE_LIST, INSTANCE_REMOVE, INSTANCE_SET, PING,
  checkInstanceCreate, checkInstanceList, checkInstanceRemove, checkInstanceSet, checkPing,
  type InstanceRequest,
} from './instance-requests.js';
import { isRecord, type Fields } from './fields.js';

export type Request = DeviceRequest | InstanceRequest;
export type Op = Request['op'];

const CHECKS: Readonly<Record<Op, (f: Fields) => Request>> = {
  [LOOP_ADD]: checkLoopAdd,
  [LOOP_REMOVE]: checkLoopRemove,
  [LOOP_GET_FREE]: checkLoopGetFree,
  [LOOP_IOCTL]: checkLoopIoctl,
  [BIND]: checkBind,
  [UNBIND]: checkUnbind,
  [LIST]: checkList,
  [INFO]: checkInfo,
  [RESIZE]: checkResize,
  [INSTANCE_CREATE]: checkInstanceCreate,
  [INSTANCE_SET]: checkInstanceSet,
  [INSTANCE_LIST]: checkInstanceList,
  [INSTANCE_REMOVE]: checkInstanceRemove,
  [PING]: checkPing,
};

export const OPS: readonly Op[] = Object.keys(CHECKS) as Op[];

export const ADMIN_OPS: ReadonlySet<Op> = new Set<Op>([INSTANCE_CREATE, INSTANCE_SET, INSTANCE_LIST, INSTANCE_REMOVE]);

export function isOp(value: unknown): value is Op {
  return typeof value === 'string' && Object.hasOwn(CHECKS, value);
}

export interface Parsed {
  /** The request's `id`, echoed in the reply (also when the request was bad). */
  id?: number | string;
  request?: Request;
  error?: UbloopError;
}

function requestId(v: Fields): number | string | undefined {
  const id = v['id'];
  if ((typeof id === 'number' && Number.isFinite(id)) || (typeof id === 'string' && id.length <= 128)) return id;
  return undefined;
}

/** Parses and checks one request line (without its newline). */
export function parseRequest(line: string): Parsed {
  let value: unknown;
  try {
    value = JSON.parse(line);
  } catch (err) {
    return { error: invalid(`malformed JSON request: ${(err as Error).message}`) };
  }
  if (!isRecord(value)) return { error: invalid('a request must be a JSON object with an "op"') };
  const id = requestId(value);
  const withId = (p: Parsed): Parsed => (id === undefined ? p : { id, ...p });
  if (value['id'] !== undefined && id === undefined) {
    return withId({ error: invalid('"id" must be a number or a string of at most 128 characters') });
  }
  const op = value['op'];
  if (op === undefined) return withId({ error: invalid('the request has no "op"') });
  if (!isOp(op)) {
    return withId({ error: new UbloopError('ENOSYS', `unknown op ${JSON.stringify(op).slice(0, 60)} (known: ${OPS.join(', ')})`) });
  }
  try {
    return withId({ request: CHECKS[op](value) });
  } catch (err) {
    if (err instanceof UbloopError) return withId({ error: err });
    throw err;
  }
}
