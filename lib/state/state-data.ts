// What the daemon persists: instances with their limits, owners and indices, the owner
// limits, and every binding with its backing file (path + device/inode) and options.
import { invalid } from '../errors.js';
import { checkBind, type BindOptions } from '../protocol/device-requests.js';
import { int, isRecord, str, type Fields } from '../protocol/fields.js';
import { INSTANCE_NAME, MAX_DEVICES, MAX_INDEX } from '../protocol/limits.js';

export const STATE_VERSION = 1;

export interface StateBinding {
  index: number;
  backing: { path: string; dev: number; ino: number };
  options: BindOptions;
  /** Whose rights opened the image (default: the instance owner). */
  boundBy?: { uid: number; gid: number };
}

export interface StateInstance {
  name: string;
  max: number;
  uid: number;
  gid: number;
  mode: number;
  indices: number[];
  bindings: StateBinding[];
}

export interface StateData {
  version: typeof STATE_VERSION;
  owners: { uid: number; max: number }[];
  instances: StateInstance[];
}

function arr(f: Fields, key: string): unknown[] {
  const v = f[key];
  if (!Array.isArray(v)) throw invalid(`"${key}" must be an array`);
  return v;
}

function rec(v: unknown, what: string): Fields {
  if (!isRecord(v)) throw invalid(`${what} must be an object`);
  return v;
}

function binding(v: unknown, where: string): StateBinding {
  const f = rec(v, where);
  const b = rec(f['backing'], `${where}.backing`);
  const o = rec(f['options'], `${where}.options`);
  const options = checkBind({ ...o, op: 'bind' }).options;
  const out: StateBinding = {
    index: int(f, 'index', 0, MAX_INDEX),
    backing: { path: str(b, 'path'), dev: int(b, 'dev', 0, Number.MAX_SAFE_INTEGER), ino: int(b, 'ino', 0, Number.MAX_SAFE_INTEGER) },
    options,
  };
  if (f['boundBy'] !== undefined) {
    const by = rec(f['boundBy'], `${where}.boundBy`);
    out.boundBy = { uid: int(by, 'uid', 0, 2 ** 32 - 2), gid: int(by, 'gid', 0, 2 ** 32 - 2) };
  }
  return out;
}

function instance(v: unknown, where: string): StateInstance {
  const f = rec(v, where);
  const name = str(f, 'name', 64);
  if (!INSTANCE_NAME.test(name)) throw invalid(`${where}: instance name ${JSON.stringify(name)} is not valid`);
  const indices = arr(f, 'indices').map((x) => int({ index: x }, 'index', 0, MAX_INDEX));
  const bindings = arr(f, 'bindings').map((b, i) => binding(b, `${where}.bindings[${i}]`));
  for (const b of bindings) {
    if (!indices.includes(b.index)) throw invalid(`${where}: binding of loop${b.index} has no index`);
  }
  return {
    name,
    max: int(f, 'max', 0, MAX_DEVICES),
    uid: int(f, 'uid', 0, 2 ** 32 - 2),
    gid: int(f, 'gid', 0, 2 ** 32 - 2),
    mode: int(f, 'mode', 0, 0o777),
    indices,
    bindings,
  };
}

/** Checks parsed state-file content; throws an EINVAL naming the first problem. */
export function checkState(value: unknown): StateData {
  const f = rec(value, 'the state');
  if (f['version'] !== STATE_VERSION) throw invalid(`unsupported state version ${JSON.stringify(f['version'])}`);
  const owners = arr(f, 'owners').map((o, i) => {
    const r = rec(o, `owners[${i}]`);
    return { uid: int(r, 'uid', 0, 2 ** 32 - 2), max: int(r, 'max', 0, MAX_DEVICES) };
  });
  const instances = arr(f, 'instances').map((x, i) => instance(x, `instances[${i}]`));
  const names = new Set<string>();
  for (const i of instances) {
    if (names.has(i.name)) throw invalid(`instance ${i.name} appears twice`);
    names.add(i.name);
  }
  return { version: STATE_VERSION, owners, instances };
}

export function isStateData(value: unknown): value is StateData {
  try {
    checkState(value);
    return true;
  } catch {
    return false;
  }
}
