// Administration requests (admin socket, root only): create, change, list and remove
// instances.
import { invalid } from '../errors.js';
import { MAX_DEPTH } from '../device-options.js';
import { INSTANCE_NAME, MAX_DEVICES } from './limits.js';
import { guard, onlyKeys, optBool, optInt, str, type Fields } from './fields.js';

const ID_MAX = 2 ** 32 - 2;
const DEPTH_RANGE = [1, MAX_DEPTH] as const;
const MEMORY_RANGE = [0, Number.MAX_SAFE_INTEGER] as const;

function name(f: Fields): string {
  const n = str(f, 'name', 64);
  if (!INSTANCE_NAME.test(n)) {
    throw invalid(`instance name ${JSON.stringify(n)} is not valid: use letters, digits, "_", "." and "-" (at most 64, not starting with "." or "-")`);
  }
  return n;
}

/** The optional integer fields that are present, each checked against its range. */
function optInts<K extends string>(f: Fields, ranges: Readonly<Record<K, readonly [number, number]>>): Partial<Record<K, number>> {
  const out: Partial<Record<K, number>> = {};
  for (const key of Object.keys(ranges) as K[]) {
    const [min, max] = ranges[key];
    const v = optInt(f, key, min, max);
    if (v !== undefined) out[key] = v;
  }
  return out;
}

/** The checker of a request that has no fields of its own. */
function bare<Op extends string>(op: Op): (f: Fields) => { op: Op } {
  return (f) => {
    onlyKeys(f, op, []);
    return { op };
  };
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
  /** Largest queue depth of a device bound in the instance. */
  maxDepth?: number;
  /** Most memory its devices may commit together (bytes). */
  maxMemory?: number;
}
export function checkInstanceCreate(f: Fields): InstanceCreateRequest {
  onlyKeys(f, INSTANCE_CREATE, ['name', 'max', 'uid', 'gid', 'mode', 'ownerMax', 'maxDepth', 'maxMemory']);
  return {
    op: INSTANCE_CREATE,
    name: name(f),
    ...optInts(f, {
      max: [0, MAX_DEVICES], uid: [0, ID_MAX], gid: [0, ID_MAX], mode: [0, 0o777], ownerMax: [0, MAX_DEVICES],
      maxDepth: DEPTH_RANGE, maxMemory: MEMORY_RANGE,
    }),
  };
}
export const isInstanceCreateRequest = guard(checkInstanceCreate);

export const INSTANCE_SET = 'instance.set';
export interface InstanceSetRequest {
  op: typeof INSTANCE_SET;
  name: string;
  max?: number;
  ownerMax?: number;
  /** null: no depth limit of its own any more. */
  maxDepth?: number | null;
  /** null: no memory limit of its own any more. */
  maxMemory?: number | null;
}

/** An optional integer field that may also be null (to clear a limit). */
function optIntOrNull(f: Fields, key: string, [min, max]: readonly [number, number]): { [k: string]: number | null } {
  if (f[key] === null) return { [key]: null };
  const v = optInt(f, key, min, max);
  return v === undefined ? {} : { [key]: v };
}

export function checkInstanceSet(f: Fields): InstanceSetRequest {
  onlyKeys(f, INSTANCE_SET, ['name', 'max', 'ownerMax', 'maxDepth', 'maxMemory']);
  const r: InstanceSetRequest = {
    op: INSTANCE_SET,
    name: name(f),
    ...optInts(f, { max: [0, MAX_DEVICES], ownerMax: [0, MAX_DEVICES] }),
    ...(optIntOrNull(f, 'maxDepth', DEPTH_RANGE) as { maxDepth?: number | null }),
    ...(optIntOrNull(f, 'maxMemory', MEMORY_RANGE) as { maxMemory?: number | null }),
  };
  if (r.max === undefined && r.ownerMax === undefined && r.maxDepth === undefined && r.maxMemory === undefined) {
    throw invalid('"instance.set" needs "max", "ownerMax", "maxDepth" or "maxMemory"');
  }
  return r;
}
export const isInstanceSetRequest = guard(checkInstanceSet);

export const INSTANCE_LIST = 'instance.list';
export const checkInstanceList = bare(INSTANCE_LIST);
export type InstanceListRequest = ReturnType<typeof checkInstanceList>;
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
export const checkPing = bare(PING);
export type PingRequest = ReturnType<typeof checkPing>;
export const isPingRequest = guard(checkPing);

export type InstanceRequest =
  | InstanceCreateRequest
  | InstanceSetRequest
  | InstanceListRequest
  | InstanceRemoveRequest
  | PingRequest;
