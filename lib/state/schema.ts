// The state file's own format, versioned, checked by its own readers: nothing here
// comes from the wire protocol, so a protocol change (a field renamed, a default or a
// limit changed) cannot make a saved state unreadable. Every field is written out (no
// defaults are filled in when reading), and the checks are about shape only: whether a
// saved instance or binding still makes sense is decided when it is restored, one at a
// time, and reported there rather than costing the whole file.
//
// Changing the format: bump STATE_VERSION, change the Stored* types and readers, and
// add a migration from the previous version in migrate.ts with a fixture of it.
import { invalid } from '../errors.js';

export const STATE_VERSION = 2;

/** A binding's stored options, each a byte count, a count or a flag. */
const OPTION_FIELDS = {
  offset: 'bytes',
  sizeLimit: 'bytes',
  readOnly: 'flag',
  directIo: 'flag',
  blockSize: 'count',
  queues: 'count',
  depth: 'count',
  autoclear: 'flag',
} as const;

/**
 * Tuning a binding may have been given (the device options beyond the loop device's own),
 * and the later flags (clearOnUnmount: a mount's autoclear): written only when given, so
 * that the device takes today's default otherwise and files without them still load.
 */
const TUNING_FIELDS = {
  maxIoBytes: 'bytes',
  discard: 'flag',
  pollUs: 'count',
  copy: 'name',
  scheduler: 'name',
  partscan: 'flag',
  clearOnUnmount: 'flag',
} as const;

type Kind = 'bytes' | 'count' | 'flag' | 'name';
type ValueOf<K extends Kind> = K extends 'flag' ? boolean : K extends 'name' ? string : number;

export type StoredOptions = { [K in keyof typeof OPTION_FIELDS]: ValueOf<(typeof OPTION_FIELDS)[K]> } & {
  [K in keyof typeof TUNING_FIELDS]?: ValueOf<(typeof TUNING_FIELDS)[K]>;
};

/** The option names every binding has, in the order they are written. */
export const STORED_OPTION_KEYS = Object.keys(OPTION_FIELDS) as (keyof typeof OPTION_FIELDS)[];
/** The tuning names a binding may have, in the order they are written. */
export const STORED_TUNING_KEYS = Object.keys(TUNING_FIELDS) as (keyof typeof TUNING_FIELDS)[];

export interface StoredBinding {
  index: number;
  /** The image as the daemon saw it: path, and device/inode to recognise it again. */
  backing: { path: string; dev: number; ino: number };
  options: StoredOptions;
  /** Whose rights opened the image (checked again at restore). */
  boundBy: { uid: number; gid: number };
  /**
   * The ublk id of the device serving it (written since crash recovery; optional, so
   * files without it load, and a ubloop of the same version that does not know it
   * ignores it): a daemon restarted after dying takes that device over.
   */
  ublkId?: number;
}

export interface StoredInstance {
  name: string;
  max: number;
  uid: number;
  gid: number;
  mode: number;
  /** Written only when the instance has it (no version bump: older readers ignore it). */
  maxDepth?: number;
  maxMemory?: number;
  indices: number[];
  bindings: StoredBinding[];
}

export interface StoredState {
  version: typeof STATE_VERSION;
  owners: { uid: number; max: number }[];
  instances: StoredInstance[];
}

type Rec = Readonly<Record<string, unknown>>;

const ID_MAX = 2 ** 32 - 2;
const COUNT_MAX = 2 ** 31 - 1;
/** ublk ids are minors of the ublk char device (UBLK_MAX_UBLKS: 1 << MINORBITS). */
const UBLK_ID_MAX = (1 << 20) - 1;

function rec(v: unknown, where: string): Rec {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw invalid(`${where} must be an object`);
  return v as Rec;
}

function whole(r: Rec, key: string, where: string, max: number): number {
  const v = r[key];
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > max) {
    throw invalid(`${where}.${key} must be an integer from 0 to ${max}, got ${JSON.stringify(v) ?? 'nothing'}`);
  }
  return v;
}

function text(r: Rec, key: string, where: string): string {
  const v = r[key];
  if (typeof v !== 'string' || v.length === 0) throw invalid(`${where}.${key} must be a non-empty string`);
  return v;
}

function yes(r: Rec, key: string, where: string): boolean {
  const v = r[key];
  if (typeof v !== 'boolean') throw invalid(`${where}.${key} must be true or false`);
  return v;
}

function list(r: Rec, key: string, where: string): unknown[] {
  const v = r[key];
  if (!Array.isArray(v)) throw invalid(`${where}.${key} must be an array`);
  return v;
}

function ids(v: unknown, where: string): { uid: number; gid: number } {
  const r = rec(v, where);
  return { uid: whole(r, 'uid', where, ID_MAX), gid: whole(r, 'gid', where, ID_MAX) };
}

function value(r: Rec, key: string, kind: Kind, where: string): number | boolean | string {
  if (kind === 'flag') return yes(r, key, where);
  if (kind === 'name') return text(r, key, where);
  return whole(r, key, where, kind === 'bytes' ? Number.MAX_SAFE_INTEGER : COUNT_MAX);
}

function options(v: unknown, where: string): StoredOptions {
  const r = rec(v, where);
  const out: Record<string, number | boolean | string> = {};
  for (const key of STORED_OPTION_KEYS) out[key] = value(r, key, OPTION_FIELDS[key], where);
  for (const key of STORED_TUNING_KEYS) {
    if (r[key] !== undefined) out[key] = value(r, key, TUNING_FIELDS[key], where);
  }
  return out as StoredOptions;
}

function binding(v: unknown, where: string): StoredBinding {
  const r = rec(v, where);
  const b = rec(r['backing'], `${where}.backing`);
  return {
    index: whole(r, 'index', where, COUNT_MAX),
    backing: {
      path: text(b, 'path', `${where}.backing`),
      dev: whole(b, 'dev', `${where}.backing`, Number.MAX_SAFE_INTEGER),
      ino: whole(b, 'ino', `${where}.backing`, Number.MAX_SAFE_INTEGER),
    },
    options: options(r['options'], `${where}.options`),
    boundBy: ids(r['boundBy'], `${where}.boundBy`),
    ...(r['ublkId'] === undefined ? {} : { ublkId: whole(r, 'ublkId', where, UBLK_ID_MAX) }),
  };
}

function instance(v: unknown, where: string): StoredInstance {
  const r = rec(v, where);
  const indices = list(r, 'indices', where).map((x, i) => whole({ index: x }, 'index', `${where}.indices[${i}]`, COUNT_MAX));
  const bindings = list(r, 'bindings', where).map((b, i) => binding(b, `${where}.bindings[${i}]`));
  for (const b of bindings) {
    if (!indices.includes(b.index)) throw invalid(`${where}: the binding of loop${b.index} has no index`);
  }
  return {
    name: text(r, 'name', where),
    max: whole(r, 'max', where, COUNT_MAX),
    uid: whole(r, 'uid', where, ID_MAX),
    gid: whole(r, 'gid', where, ID_MAX),
    mode: whole(r, 'mode', where, 0o7777),
    ...(r['maxDepth'] === undefined ? {} : { maxDepth: whole(r, 'maxDepth', where, COUNT_MAX) }),
    ...(r['maxMemory'] === undefined ? {} : { maxMemory: whole(r, 'maxMemory', where, Number.MAX_SAFE_INTEGER) }),
    indices,
    bindings,
  };
}

/** Checks a state record of the current version; throws an EINVAL naming the first problem. */
export function checkStoredState(value: unknown): StoredState {
  const r = rec(value, 'the state');
  if (r['version'] !== STATE_VERSION) throw invalid(`expected state version ${STATE_VERSION}, got ${JSON.stringify(r['version'])}`);
  const owners = list(r, 'owners', 'the state').map((o, i) => {
    const or = rec(o, `owners[${i}]`);
    return { uid: whole(or, 'uid', `owners[${i}]`, ID_MAX), max: whole(or, 'max', `owners[${i}]`, COUNT_MAX) };
  });
  const instances = list(r, 'instances', 'the state').map((x, i) => instance(x, `instances[${i}]`));
  const names = new Set<string>();
  for (const i of instances) {
    if (names.has(i.name)) throw invalid(`instance ${i.name} appears twice`);
    names.add(i.name);
  }
  return { version: STATE_VERSION, owners, instances };
}
