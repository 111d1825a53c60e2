// The device options: one table (name → type, range, default, description) from which
// the library (createDevice), the daemon's bind request and the CLI (`serve`, `attach`)
// all take their options, their defaults and their checks. Each option is checked once
// where it enters (a library call, a socket request, a command line), with the same
// words everywhere, and carried typed after that: nothing half-created on bad input.
import { invalid } from './errors.js';
import type { NativeCopyMode, NativeDataPath } from './native.js';
import { checkRecoveryMode, type RecoveryMode } from './recovery.js';

export type TargetName = 'loop' | 'null';
export type BlockSize = 512 | 1024 | 2048 | 4096;
export type Scheduler = 'none' | 'mq-deadline' | 'kyber' | 'bfq';
/** An I/O scheduler to set, or 'kernel' to leave the kernel's choice. */
export type SchedulerChoice = Scheduler | 'kernel';

/**
 * How request data moves between the kernel and the image: 'kernel' (the kernel
 * copies it into and out of the queue's buffers; every kernel), 'user' (the queue
 * copies it through /dev/ublkcN; UBLK_F_USER_COPY), 'zero' (the queue registers the
 * request's own pages and the image I/O uses them; UBLK_F_SUPPORT_ZERO_COPY),
 * 'auto-buf' (the kernel registers them as it hands the request over;
 * UBLK_F_AUTO_BUF_REG). 'auto' picks the fastest the kernel offers and the caller
 * may use (devices of users without CAP_SYS_ADMIN get 'kernel').
 */
export type DataPath = NativeDataPath;
export type CopyMode = NativeCopyMode;
export const COPY_MODES: readonly CopyMode[] = ['auto', 'kernel', 'user', 'zero', 'auto-buf'];
export const SCHEDULERS: readonly SchedulerChoice[] = ['none', 'mq-deadline', 'kyber', 'bfq', 'kernel'];
export const BLOCK_SIZES: readonly BlockSize[] = [512, 1024, 2048, 4096];
export const MAX_QUEUES = 64;
export const MAX_DEPTH = 4096;

/** Everything about a device one may tune, on every way in (library, socket, CLI). */
export interface Tunables {
  /** loop: byte offset of the device's start in the image. */
  offset: number;
  /** loop: largest device size in bytes (0 = to the end of the image). */
  sizeLimit: number;
  readOnly: boolean;
  /** loop: open the image with O_DIRECT (bypass the page cache). */
  directIo: boolean;
  /** Logical block size. */
  blockSize: BlockSize;
  queues: number;
  depth: number;
  /** Largest single request in bytes. */
  maxIoBytes: number;
  /** Advertise discard and write-zeroes (not read-only). */
  discard: boolean;
  /** Microseconds a queue thread busy-polls for its next event before sleeping, while its recent waits were shorter (0: never). */
  pollUs: number;
  /** The data path. */
  copy: CopyMode;
  /** I/O scheduler for the disk ('kernel': leave the kernel's choice). */
  scheduler: SchedulerChoice;
  /** Scan the disk's partition table (/dev/ublkbNpM), like losetup -P. */
  partscan: boolean;
}
export type TunableName = keyof Tunables;

interface Described {
  /** How messages name the option. */
  label: string;
  /** The command-line flag (--flag) and its one-letter alias. */
  flag: string;
  alias?: string;
  describe: string;
}
export interface IntSpec extends Described {
  kind: 'int';
  min: number;
  max: number;
  multipleOf?: number;
  /** The command line takes a size with a unit (512K, 1M). */
  bytes?: boolean;
  default: number;
}
export interface BoolSpec extends Described {
  kind: 'bool';
  default: boolean;
}
export interface ChoiceSpec<T extends string | number> extends Described {
  kind: 'choice';
  values: readonly T[];
  default: T;
}
type SpecOf<T> = [T] extends [boolean] ? BoolSpec : [T] extends [string] ? ChoiceSpec<T> : IntSpec | ChoiceSpec<T & number>;
export type OptionSpec = IntSpec | BoolSpec | ChoiceSpec<string> | ChoiceSpec<number>;

/** The table. Its order is the order of the --help listing. */
export const TUNABLES: { readonly [K in TunableName]: SpecOf<Tunables[K]> } = {
  offset: {
    kind: 'int', label: 'offset', flag: 'offset', alias: 'o', bytes: true, min: 0, max: Number.MAX_SAFE_INTEGER, default: 0,
    describe: 'start this many bytes into the image',
  },
  sizeLimit: {
    kind: 'int', label: 'size limit', flag: 'sizelimit', bytes: true, min: 0, max: Number.MAX_SAFE_INTEGER, default: 0,
    describe: 'largest device size in bytes (0: to the end)',
  },
  readOnly: { kind: 'bool', label: 'read-only', flag: 'read-only', alias: 'r', default: false, describe: 'read-only device' },
  directIo: { kind: 'bool', label: 'direct I/O', flag: 'direct-io', default: false, describe: 'open the image with O_DIRECT' },
  blockSize: { kind: 'choice', label: 'block size', flag: 'block-size', alias: 'b', values: BLOCK_SIZES, default: 512, describe: 'logical block size' },
  queues: { kind: 'int', label: 'queues', flag: 'queues', alias: 'q', min: 1, max: MAX_QUEUES, default: 1, describe: 'hardware queues (one thread each)' },
  depth: { kind: 'int', label: 'depth', flag: 'depth', alias: 'd', min: 1, max: MAX_DEPTH, default: 128, describe: 'requests in flight per queue' },
  maxIoBytes: {
    kind: 'int', label: 'max I/O size', flag: 'max-io', bytes: true, min: 4096, max: 1 << 24, multipleOf: 4096, default: 1 << 20,
    describe: 'largest single request',
  },
  discard: {
    kind: 'bool', label: 'discard', flag: 'discard', default: true,
    describe: 'support discard and write-zeroes (--no-discard to turn off)',
  },
  pollUs: {
    kind: 'int', label: 'poll time (µs)', flag: 'poll-us', min: 0, max: 1_000_000, default: 500,
    describe: 'a queue thread busy-polls up to this many µs for its next event before sleeping, while recent waits were shorter (0: never poll)',
  },
  copy: {
    kind: 'choice', label: 'copy mode', flag: 'copy', values: COPY_MODES, default: 'auto',
    describe:
      'how request data moves: kernel (the kernel copies it), user (ubloop copies it through /dev/ublkcN), zero (ubloop registers the request pages), auto-buf (the kernel registers them); auto: the fastest the kernel offers (kernel copy for users without CAP_SYS_ADMIN)',
  },
  scheduler: {
    kind: 'choice', label: 'scheduler', flag: 'scheduler', values: SCHEDULERS, default: 'none',
    describe: 'I/O scheduler of the disk ("kernel": leave the kernel\'s)',
  },
  partscan: {
    kind: 'bool', label: 'partition scan', flag: 'partscan', alias: 'P', default: false,
    describe: 'scan the partition table: partitions appear as /dev/ublkbNpM (like losetup -P; Linux before 7.0 always scans)',
  },
};
export const TUNABLE_NAMES = Object.keys(TUNABLES) as TunableName[];

/** The defaults, from the table. */
export const DEFAULTS = {
  queues: TUNABLES.queues.default,
  depth: TUNABLES.depth.default,
  blockSize: TUNABLES.blockSize.default as BlockSize,
  maxIoBytes: TUNABLES.maxIoBytes.default,
  pollUs: TUNABLES.pollUs.default,
  scheduler: 'none' as Scheduler,
};

/** A value as messages show it: short, strings quoted. */
export function show(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value.length > 40 ? `${value.slice(0, 40)}...` : value);
  if (value === undefined) return 'nothing';
  if (typeof value === 'number' || typeof value === 'boolean' || typeof value === 'bigint') return String(value);
  try {
    const s = JSON.stringify(value);
    return s.length > 40 ? `${s.slice(0, 40)}...` : s;
  } catch {
    return String(value);
  }
}

function checkSpec(spec: OptionSpec, value: unknown): unknown {
  switch (spec.kind) {
    case 'bool':
      if (typeof value !== 'boolean') throw invalid(`${spec.label} must be true or false, got ${show(value)}`);
      return value;
    case 'int':
      if (typeof value !== 'number' || !Number.isInteger(value) || value < spec.min || value > spec.max) {
        throw invalid(`${spec.label} must be an integer from ${spec.min} to ${spec.max}, got ${show(value)}`);
      }
      if (spec.multipleOf !== undefined && value % spec.multipleOf !== 0) {
        throw invalid(`${spec.label} ${value} is not a multiple of ${spec.multipleOf}`);
      }
      return value;
    case 'choice':
      if (!(spec.values as readonly unknown[]).includes(value)) {
        if (typeof spec.default === 'number') throw invalid(`${spec.label} ${show(value)} is not one of ${spec.values.join(', ')}`);
        throw invalid(`${spec.label} must be one of ${spec.values.join(', ')}, got ${show(value)}`);
      }
      return value;
  }
}

/** The one check of one option's value: returns it typed, or throws EINVAL naming the option and the value. */
export function checkTunable<K extends TunableName>(name: K, value: unknown): Tunables[K] {
  return checkSpec(TUNABLES[name] as OptionSpec, value) as Tunables[K];
}

/** Checks the options present in raw (undefined = not given); unknown keys are left alone. */
export function pickTunables(raw: Readonly<Record<string, unknown>>): Partial<Tunables> {
  const out: Record<string, unknown> = {};
  for (const name of TUNABLE_NAMES) {
    if (raw[name] !== undefined) out[name] = checkTunable(name, raw[name]);
  }
  return out as Partial<Tunables>;
}

/** Every option: the given ones, the table's defaults for the rest. */
export function withDefaults(given: Partial<Tunables>): Tunables {
  const out: Record<string, unknown> = {};
  for (const name of TUNABLE_NAMES) out[name] = given[name] ?? TUNABLES[name].default;
  return out as unknown as Tunables;
}

/** What only the options together can say is wrong, for a device over an image. */
export function checkLoopTunables(t: Pick<Tunables, 'directIo' | 'offset' | 'blockSize'>): void {
  if (t.directIo && t.offset % t.blockSize !== 0) {
    throw invalid(`offset ${t.offset} must be a multiple of the block size ${t.blockSize} with direct I/O`);
  }
}

/**
 * The daemon's bind options: the device options, plus autoclear and clearOnUnmount. The
 * fields a binding has always carried are always present (the state file stores them);
 * the later ones only when a client set them, so a binding that tunes nothing is stored
 * as before.
 *
 * autoclear: detached once the client that bound it has gone and nothing has used the
 * device for the grace time (`ubloop attach --autoclear`). clearOnUnmount (present only
 * when true): the autoclear of `mount -o loop`, set by `ubloop mount` and mount.ubloop,
 * which mount the device before they let go of their connection: from then on it is
 * detached as soon as nothing claims it (no filesystem holds it: unmounted, a lazy
 * unmount's last user gone, its mount namespace gone) and nothing has it open.
 */
export const BIND_BASE = ['offset', 'sizeLimit', 'readOnly', 'directIo', 'blockSize', 'queues', 'depth'] as const;
type BindBase = (typeof BIND_BASE)[number];
export type BindOptions = Pick<Tunables, BindBase> & Partial<Omit<Tunables, BindBase>> & { autoclear: boolean; clearOnUnmount?: true };

/** Checks bind options (as a request or a command line gives them); throws EINVAL naming the first bad one. */
export function checkBindOptions(raw: Readonly<Record<string, unknown>>): BindOptions {
  const given = pickTunables(raw);
  const all = withDefaults(given);
  const autoclear = raw['autoclear'] ?? false;
  if (typeof autoclear !== 'boolean') throw invalid(`autoclear must be true or false, got ${show(autoclear)}`);
  const clearOnUnmount = raw['clearOnUnmount'] ?? false;
  if (typeof clearOnUnmount !== 'boolean') throw invalid(`clearOnUnmount must be true or false, got ${show(clearOnUnmount)}`);
  checkLoopTunables(all);
  const base = Object.fromEntries(BIND_BASE.map((k) => [k, all[k]])) as Pick<Tunables, BindBase>;
  return { ...given, ...base, autoclear, ...(clearOnUnmount ? { clearOnUnmount: true as const } : {}) };
}

/** The library's options (createDevice): the device options, plus what only a library caller chooses. */
export interface DeviceOptions extends Partial<Omit<Tunables, 'blockSize' | 'scheduler'>> {
  /** 'loop' (an image file, the default) or 'null' (completes I/O without data). */
  target?: TargetName;
  /** loop: path of the image file. */
  file?: string;
  /** loop: an already open descriptor of the image (instead of file); not closed. */
  fd?: number;
  /** null: device size in bytes. */
  size?: number;
  /** Logical block size: 512, 1024, 2048 or 4096. */
  blockSize?: number;
  /** Request this ublk device id (default: the kernel picks). */
  id?: number;
  /** I/O scheduler for the disk; null or 'kernel' leaves the kernel's choice. */
  scheduler?: SchedulerChoice | null;
  /** What the device does when this process dies without stopping it (default 'none': the kernel deletes it); see RecoveryMode. */
  recovery?: RecoveryMode;
}

export interface CheckedOptions extends Omit<Tunables, 'scheduler'> {
  target: TargetName;
  file: string | undefined;
  fd: number | undefined;
  size: number | undefined;
  id: number;
  scheduler: Scheduler | null;
  recovery: RecoveryMode;
}

function integer(value: unknown, name: string, min: number, max: number): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    throw invalid(`${name} must be an integer from ${min} to ${max}, got ${show(value)}`);
  }
  return value;
}

/** Device options with everything filled in, from bind options (already checked) and the image's descriptor. */
export function bindDeviceOptions(options: BindOptions, fd: number, recovery: RecoveryMode = 'none'): CheckedOptions {
  const all = withDefaults(options);
  return { ...all, target: 'loop', file: undefined, fd, size: undefined, id: -1, scheduler: all.scheduler === 'kernel' ? null : all.scheduler, recovery };
}

/** The library's check of createDevice's options. */
export function checkOptions(o: DeviceOptions): CheckedOptions {
  const target = o.target ?? 'loop';
  if (target !== 'loop' && target !== 'null') throw invalid(`target must be "loop" or "null", got ${show(target)}`);
  const raw: Record<string, unknown> = { ...o, scheduler: o.scheduler === null ? 'kernel' : o.scheduler };
  const all = withDefaults(pickTunables(raw));
  const checked: CheckedOptions = {
    ...all,
    target,
    file: o.file,
    fd: o.fd,
    size: o.size,
    id: integer(o.id ?? -1, 'device id', -1, 0xfffff),
    scheduler: all.scheduler === 'kernel' ? null : all.scheduler,
    recovery: checkRecoveryMode(o.recovery ?? 'none'),
  };
  if (target === 'loop') {
    if ((checked.file === undefined) === (checked.fd === undefined)) {
      throw invalid('the loop target needs exactly one of an image file or an open descriptor');
    }
    if (checked.fd !== undefined) integer(checked.fd, 'fd', 0, 2 ** 31 - 1);
    if (checked.size !== undefined) throw invalid('the loop target takes its size from the image; use sizeLimit');
    checkLoopTunables(checked);
  } else {
    if (checked.file !== undefined || checked.fd !== undefined) throw invalid('the null target takes no image file');
    if (checked.size === undefined) throw invalid('the null target needs a size');
    integer(checked.size, 'size', 1, Number.MAX_SAFE_INTEGER);
    if (checked.size % checked.blockSize !== 0) {
      throw invalid(`size ${checked.size} is not a multiple of the block size ${checked.blockSize}`);
    }
  }
  return checked;
}

/**
 * The device size of a loop device over an image of imageSize bytes: what is left
 * after the offset, capped by the size limit; it must be a whole number of blocks.
 */
export function loopDeviceSize(imageSize: number, o: Pick<Tunables, 'offset' | 'sizeLimit' | 'blockSize'>, imageName: string): number {
  if (imageSize === 0) throw invalid(`${imageName} is empty (0 bytes), nothing to serve`);
  if (o.offset >= imageSize) {
    throw invalid(`offset ${o.offset} is at or past the end of ${imageName} (${imageSize} bytes)`);
  }
  const rest = imageSize - o.offset;
  const size = o.sizeLimit > 0 ? Math.min(o.sizeLimit, rest) : rest;
  if (size % o.blockSize !== 0) {
    const why = o.sizeLimit > 0 && o.sizeLimit <= rest ? 'size limit' : o.offset > 0 ? 'image size minus offset' : 'image size';
    throw invalid(`device size ${size} (${why}) is not a multiple of the block size ${o.blockSize}`);
  }
  return size;
}
