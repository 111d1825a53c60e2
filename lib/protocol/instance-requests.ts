// Administration requests (admin socket, root only): create, change, list and remove
// instances.
import { invalid } from '../errors.js';
import { INSTANCE_NAME, MAX_DEVICES } from './limits.js';
import { guard, onlyKeys, optBool, optInt, str, type Fields } from './fields.js';

const ID_MAX = 2 ** 32 - 2;

function name(f: Fields): string {
  const n = str(f, 'name', 64);
  if (!INSTANCE_NAME.test(n)) {
    throw invalid(`instance name ${JSON.stringify(n)} is not valid: use letters, digits, "_", "." and "-" (at most 64, not starting with "." or "-")`);
  }
  return n;
}

export const INSTANCE_CREATE = 'instance.create';
export interface InstanceCreateRequest {
  op: typeof INSTANCE_CREATE;
  name: string;
  max?: number;
  uid?: number;
  gid?: number;
  /** Mode of the instance's nodes (loop-control, loopN, control.sock), e.g. 0o660. */
  mode?: number;
  /** Limit on devices across every instance of this owner. */
  ownerMax?: number;
}
export function checkInstanceCreate(f: Fields): InstanceCreateRequest {
  onlyKeys(f, INSTANCE_CREATE, ['name', 'max', 'uid', 'gid', 'mode', 'ownerMax']);
  const r: InstanceCreateRequest = { op: INSTANCE_CREATE, name: name(f) };
  const max = optInt(f, 'max', 0, MAX_DEVICES);
  const uid = optInt(f, 'uid', 0, ID_MAX);
  const gid = optInt(f, 'gid', 0, ID_MAX);
  const mode = optInt(f, 'mode', 0, 0o777);
  const ownerMax = optInt(f, 'ownerMax', 0, MAX_DEVICES);
  if (max !== undefined) r.max = max;
  if (uid !== undefined) r.uid = uid;
  if (gid !== undefined) r.gid = gid;
  if (mode !== undefined) r.mode = mode;
  if (ownerMax !== undefined) r.ownerMax = ownerMax;
  return r;
}
export const isInstanceCreateRequest = guard(checkInstanceCreate);

export const INSTANCE_SET = 'instance.set';
export interface InstanceSetRequest {
  op: typeof INSTANCE_SET;
  name: string;
  max?: number;
  ownerMax?: number;
}
export function checkInstanceSet(f: Fields): InstanceSetRequest {
  onlyKeys(f, INSTANCE_SET, ['name', 'max', 'ownerMax']);
  const r: InstanceSetRequest = { op: INSTANCE_SET, name: name(f) };
  const max = optInt(f, 'max', 0, MAX_DEVICES);
  const ownerMax = optInt(f, 'ownerMax', 0, MAX_DEVICES);
  if (max === undefined && ownerMax === undefined) throw invalid('"instance.set" needs "max" or "ownerMax"');
  if (max !== undefined) r.max = max;
  if (ownerMax !== undefined) r.ownerMax = ownerMax;
  return r;
}
export const isInstanceSetRequest = guard(checkInstanceSet);

export const INSTANCE_LIST = 'instance.list';
export interface InstanceListRequest {
  op: typeof INSTANCE_LIST;
}
export function checkInstanceList(f: Fields): InstanceListRequest {
  onlyKeys(f, INSTANCE_LIST, []);
  return { op: INSTANCE_LIST };
}
export const isInstanceListRequest = guard(checkInstanceList);

export const INSTANCE_REMOVE = 'instance.remove';
export interface InstanceRemoveRequest {
  op: typeof INSTANCE_REMOVE;
  name: string;
  /** Unbind its devices first instead of refusing with EBUSY. */
  force: boolean;
}
export function checkInstanceRemove(f: Fields): InstanceRemoveRequest {
  onlyKeys(f, INSTANCE_REMOVE, ['name', 'force']);
  return { op: INSTANCE_REMOVE, name: name(f), force: optBool(f, 'force') ?? false };
}
export const isInstanceRemoveRequest = guard(checkInstanceRemove);

/** Liveness check; answers with the daemon's pid. */
export const PING = 'ping';
export interface PingRequest {
  op: typeof PING;
}
export function checkPing(f: Fields): PingRequest {
  onlyKeys(f, PING, []);
  return { op: PING };
}
export const isPingRequest = guard(checkPing);

export type InstanceRequest =
  | InstanceCreateRequest
  | InstanceSetRequest
  | InstanceListRequest
  | InstanceRemoveRequest
  | PingRequest;
