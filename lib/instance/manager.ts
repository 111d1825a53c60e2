// All instances of a daemon: creation and live limits (per instance `max`, per owner
// `ownerMax` across instances), lookup, and the autoclear sweep.
import { DEFAULT_ROOT, instanceDir } from '../daemon/paths.js';
import { UbloopError, invalid } from '../errors.js';
import { DEFAULT_MAX, INSTANCE_NAME, MAX_DEVICES } from '../protocol/limits.js';
import type { InstanceCreateRequest } from '../protocol/instance-requests.js';
import type { InstanceInfo } from '../protocol/results.js';
import type { DeviceFactory } from './device-factory.js';
import { Instance, type InstanceHooks } from './instance.js';
import { NO_CAPS, depthRefusal, deviceMemory, globalDeviceRefusal, memoryRefusal, type DeviceShape, type GlobalCaps } from './limits.js';

export interface ManagerHooks extends InstanceHooks {
  /** After an instance is created (e.g. make its directory, socket and loop-control). Throwing undoes it. */
  created(instance: Instance): Promise<void> | void;
  /** After an instance is removed (its devices already unbound). */
  removed(instance: Instance): Promise<void> | void;
}

export interface ManagerOptions {
  factory: DeviceFactory;
  /** Directory holding instances/NAME/ (default DEFAULT_ROOT). */
  root?: string;
  hooks?: Partial<ManagerHooks>;
  now?: () => number;
  /** How long GET_FREE's answer stays reserved for its caller (default 10 s). */
  reservationMs?: number;
  /** Daemon-wide caps (default: none). */
  caps?: Partial<GlobalCaps>;
}

/** A live change of an instance's limits; null clears maxDepth / maxMemory. */
export interface LimitChange {
  max?: number;
  ownerMax?: number;
  maxDepth?: number | null;
  maxMemory?: number | null;
}

/** What an instance is created with: instance.create's fields. */
export type CreateSpec = Omit<InstanceCreateRequest, 'op'>;

const noop = (): void => undefined;

function checkCap(value: number | null | undefined, what: string, min: number): void {
  if (value === null || value === undefined) return;
  if (!Number.isSafeInteger(value) || value < min) throw invalid(`${what} must be an integer of at least ${min}, got ${value}`);
}

function checkMax(value: number, what: string): void {
  if (!Number.isInteger(value) || value < 0 || value > MAX_DEVICES) {
    throw invalid(`${what} must be an integer from 0 to ${MAX_DEVICES}, got ${value}`);
  }
}

export class InstanceManager {
  readonly root: string;
  readonly #instances = new Map<string, Instance>();
  readonly #ownerMax = new Map<number, number>();
  readonly #factory: DeviceFactory;
  readonly #hooks: ManagerHooks;
  readonly #now: () => number;
  readonly #reservationMs: number;
  readonly caps: GlobalCaps;

  constructor(options: ManagerOptions) {
    this.root = options.root ?? DEFAULT_ROOT;
    this.#factory = options.factory;
    const h = options.hooks ?? {};
    this.#hooks = {
      bound: h.bound ?? noop,
      unbound: h.unbound ?? noop,
      changed: h.changed ?? noop,
      created: h.created ?? noop,
      removed: h.removed ?? noop,
    };
    this.#now = options.now ?? Date.now;
    this.#reservationMs = options.reservationMs ?? 10_000;
    this.caps = { ...NO_CAPS, ...options.caps };
    checkCap(this.caps.maxDevices, 'the global device limit', 0);
    checkCap(this.caps.maxDepth, 'the global queue depth limit', 1);
    checkCap(this.caps.maxMemory, 'the global memory limit', 0);
  }

  /** Devices (indices) across every instance. */
  get deviceCount(): number {
    let n = 0;
    for (const inst of this.#instances.values()) n += inst.count;
    return n;
  }

  /** Bytes every instance's devices commit together (deviceMemory). */
  get memory(): number {
    let n = 0;
    for (const inst of this.#instances.values()) n += inst.memory;
    return n;
  }

  get(name: string): Instance {
    const inst = this.#instances.get(name);
    if (!inst) throw new UbloopError('ENOENT', `no instance named ${JSON.stringify(name)}`);
    return inst;
  }

  has(name: string): boolean {
    return this.#instances.has(name);
  }

  instances(): Instance[] {
    return [...this.#instances.values()].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  ownerMax(uid: number): number | null {
    return this.#ownerMax.get(uid) ?? null;
  }

  ownerLimits(): { uid: number; max: number }[] {
    return [...this.#ownerMax].map(([uid, max]) => ({ uid, max })).sort((a, b) => a.uid - b.uid);
  }

  /** Sets (or with null clears) the device limit of an owner across their instances. */
  setOwnerMax(uid: number, max: number | null): void {
    if (max === null) this.#ownerMax.delete(uid);
    else {
      checkMax(max, 'the owner limit');
      this.#ownerMax.set(uid, max);
    }
    this.#hooks.changed();
  }

  /** Devices held by all instances of an owner. */
  ownerCount(uid: number): number {
    let n = 0;
    for (const inst of this.#instances.values()) if (inst.uid === uid) n += inst.count;
    return n;
  }

  async create(spec: CreateSpec): Promise<Instance> {
    if (!INSTANCE_NAME.test(spec.name)) throw invalid(`instance name ${JSON.stringify(spec.name)} is not valid`);
    if (this.#instances.has(spec.name)) throw new UbloopError('EEXIST', `instance ${spec.name} already exists`);
    const max = spec.max ?? DEFAULT_MAX;
    checkMax(max, 'max');
    if (spec.ownerMax !== undefined) checkMax(spec.ownerMax, 'the owner limit');
    checkCap(spec.maxDepth, 'maxDepth', 1);
    checkCap(spec.maxMemory, 'maxMemory', 0);
    const mode = spec.mode ?? 0o660;
    if (!Number.isInteger(mode) || mode < 0 || mode > 0o777) throw invalid(`mode must be from 0 to 0777, got ${mode.toString(8)}`);
    const uid = spec.uid ?? 0;
    const gid = spec.gid ?? 0;
    const inst = new Instance(
      {
        name: spec.name, max, uid, gid, mode, dir: instanceDir(this.root, spec.name),
        maxDepth: spec.maxDepth ?? null, maxMemory: spec.maxMemory ?? null,
      },
      {
        factory: this.#factory,
        hooks: this.#hooks,
        now: this.#now,
        reservationMs: this.#reservationMs,
        roomCheck: (i) => this.#roomCheck(i),
        admit: (i, options) => this.#admit(i, options),
      },
    );
    this.#instances.set(spec.name, inst);
    try {
      await this.#hooks.created(inst);
    } catch (err) {
      this.#instances.delete(spec.name);
      throw err;
    }
    if (spec.ownerMax !== undefined) this.#ownerMax.set(uid, spec.ownerMax);
    this.#hooks.changed();
    return inst;
  }

  /** Changes limits live: nothing already there is detached. */
  set(name: string, change: LimitChange): Instance {
    const inst = this.get(name);
    if (change.max !== undefined) checkMax(change.max, 'max');
    if (change.ownerMax !== undefined) checkMax(change.ownerMax, 'the owner limit');
    checkCap(change.maxDepth, 'maxDepth', 1);
    checkCap(change.maxMemory, 'maxMemory', 0);
    if (change.max !== undefined) inst.max = change.max;
    if (change.maxDepth !== undefined) inst.maxDepth = change.maxDepth;
    if (change.maxMemory !== undefined) inst.maxMemory = change.maxMemory;
    if (change.ownerMax !== undefined) this.#ownerMax.set(inst.uid, change.ownerMax);
    this.#hooks.changed();
    return inst;
  }

  /** Removes an instance: EBUSY while it has bound devices, unless force (then they are unbound). */
  async remove(name: string, force: boolean): Promise<void> {
    const inst = this.get(name);
    if (inst.boundCount > 0) {
      if (!force) {
        throw new UbloopError('EBUSY', `instance ${name} has ${inst.boundCount} bound device(s); detach them or use --force`);
      }
      await inst.unbindAll();
    }
    this.#instances.delete(name);
    try {
      await this.#hooks.removed(inst);
    } finally {
      this.#hooks.changed();
    }
  }

  info(inst: Instance): InstanceInfo {
    return {
      name: inst.name,
      max: inst.max,
      uid: inst.uid,
      gid: inst.gid,
      mode: inst.mode,
      ownerMax: this.ownerMax(inst.uid),
      count: inst.count,
      bound: inst.boundCount,
      dir: inst.dir,
      loopControl: inst.loopControlPath,
      // only when set: the reply of an instance without them is as it always was
      ...(inst.maxDepth === null ? {} : { maxDepth: inst.maxDepth }),
      ...(inst.maxMemory === null ? {} : { maxMemory: inst.maxMemory, memory: inst.memory }),
    };
  }

  /** A client connection or process went away. */
  clientGone(key: string): void {
    for (const inst of this.#instances.values()) inst.clientGone(key);
  }

  /** Runs the autoclear / lazy-detach sweep over every instance. */
  async sweep(graceMs: number): Promise<{ instance: string; index: number }[]> {
    // all at once, so that the busy looks of every instance share their passes over /proc
    const all = [...this.#instances.values()];
    const results = await Promise.allSettled(all.map((inst) => inst.sweep(graceMs)));
    const failed = results.find((r) => r.status === 'rejected');
    if (failed) throw (failed as PromiseRejectedResult).reason;
    return all.flatMap((inst, i) => {
      const r = results[i];
      return r?.status === 'fulfilled' ? r.value.map((index) => ({ instance: inst.name, index })) : [];
    });
  }

  /** The mount autoclear (clearOnUnmount) over every instance; see Bindings.sweepUnmounted. */
  async sweepUnmounted(lookMs: number): Promise<{ instance: string; index: number }[]> {
    const out: { instance: string; index: number }[] = [];
    for (const inst of this.#instances.values()) {
      for (const index of await inst.sweepUnmounted(lookMs)) out.push({ instance: inst.name, index });
    }
    return out;
  }

  /** Why a live upgrade cannot hand every device over now, or nothing. */
  handOverProblems(): string[] {
    return [...this.#instances.values()].flatMap((i) => i.handOverProblems());
  }

  /** Live upgrade: every device is left, holding its I/O, to the next daemon; rejects with the first failure. */
  async handOver(): Promise<void> {
    const results = await Promise.allSettled([...this.#instances.values()].map((i) => i.handOver()));
    const failed = results.find((r) => r.status === 'rejected');
    if (failed) throw (failed as PromiseRejectedResult).reason;
  }

  /** Stops every device (daemon shutdown); bindings stay in the state for the next start. */
  async shutdown(): Promise<void> {
    await Promise.allSettled([...this.#instances.values()].map((i) => i.shutdown()));
  }

  #admit(inst: Instance, options: DeviceShape): void {
    const depth = depthRefusal(options.depth, inst, this.caps);
    if (depth) throw depth;
    const memory = memoryRefusal(deviceMemory(options), { name: inst.name, maxMemory: inst.maxMemory, used: inst.memory }, this.caps, this.memory);
    if (memory) throw memory;
  }

  #roomCheck(inst: Instance): UbloopError | null {
    const global = globalDeviceRefusal(this.caps, this.deviceCount);
    if (global) return global;
    if (inst.count >= inst.max) {
      return new UbloopError('ENOSPC', `instance ${inst.name} holds ${inst.count} device(s), its max is ${inst.max}`);
    }
    const limit = this.#ownerMax.get(inst.uid);
    if (limit !== undefined) {
      const used = this.ownerCount(inst.uid);
      if (used >= limit) {
        return new UbloopError('ENOSPC', `owner uid ${inst.uid} holds ${used} device(s) across instances, the owner limit is ${limit}`);
      }
    }
    return null;
  }
}
