// One instance: its settings (name, owner, mode, limit, directory) and the two halves of
// its model: the loop-control index table with GET_FREE reservations (index-table.ts)
// and the binding lifecycle with the autoclear sweep (bindings.ts).
import { loopNode } from '../daemon/paths.js';
import { UbloopError } from '../errors.js';
import type { DeviceEntry } from '../protocol/results.js';
import { Bindings, type BindArgs, type Binding, type SavedBinding, type UnbindResult } from './bindings.js';
import type { Caller } from './caller.js';
import type { BoundDevice, DeviceFactory } from './device-factory.js';
import { IndexTable } from './index-table.js';
import { deviceMemory } from './limits.js';

export type { Backing, BindArgs, Binding, UnbindResult } from './bindings.js';
export type { SlotState } from './index-table.js';

export interface InstanceSettings {
  name: string;
  max: number;
  uid: number;
  gid: number;
  mode: number;
  dir: string;
  /** Largest queue depth of a device bound here, or null for none beyond the daemon's. */
  maxDepth?: number | null;
  /** Most memory (bytes, see deviceMemory) its bound devices may commit together, or null. */
  maxMemory?: number | null;
}

/** The caller key of the daemon's restore at start: saved bindings come back whatever the limits say now. */
export const RESTORE_KEY = 'restore';

export interface InstanceHooks {
  /** After a device is bound: e.g. create the loopN node. Throwing undoes the bind. */
  bound(instance: Instance, index: number, device: BoundDevice): Promise<void> | void;
  /** Before a bound device is stopped: e.g. remove the loopN node. */
  unbound(instance: Instance, index: number): Promise<void> | void;
  /** Something persistent changed (indices, bindings). */
  changed(): void;
}

export interface InstanceContext {
  factory: DeviceFactory;
  hooks: InstanceHooks;
  now(): number;
  reservationMs: number;
  /** Why the instance may not grow by one device now (ENOSPC), or null. */
  roomCheck(instance: Instance): UbloopError | null;
  /** Throws why a device of these options may not be bound here now (a depth or memory limit). */
  admit(instance: Instance, options: BindArgs['options']): void;
}

export class Instance {
  readonly name: string;
  readonly uid: number;
  readonly gid: number;
  readonly mode: number;
  readonly dir: string;
  #max: number;
  maxDepth: number | null;
  maxMemory: number | null;
  /** Memory of the binds under way (admitted, not yet bound). */
  #pendingMemory = 0;
  readonly #admit: (options: BindArgs['options']) => void;
  readonly #table: IndexTable<Binding>;
  readonly #bindings: Bindings;
  /** Path of the loop-control node, or null when serving by socket only. */
  loopControlPath: string | null = null;

  constructor(settings: InstanceSettings, ctx: InstanceContext) {
    this.name = settings.name;
    this.uid = settings.uid;
    this.gid = settings.gid;
    this.mode = settings.mode;
    this.dir = settings.dir;
    this.#max = settings.max;
    this.maxDepth = settings.maxDepth ?? null;
    this.maxMemory = settings.maxMemory ?? null;
    this.#admit = (options) => ctx.admit(this, options);
    const changed = () => ctx.hooks.changed();
    this.#table = new IndexTable<Binding>({
      name: this.name,
      now: ctx.now,
      reservationMs: ctx.reservationMs,
      roomCheck: () => ctx.roomCheck(this),
      changed,
    });
    this.#bindings = new Bindings(this.#table, {
      name: this.name,
      factory: ctx.factory,
      now: ctx.now,
      nodePath: (index) => this.nodePath(index),
      bound: (index, device) => ctx.hooks.bound(this, index, device),
      unbound: (index) => ctx.hooks.unbound(this, index),
      changed,
    });
  }

  get max(): number {
    return this.#max;
  }

  /** Changing max never detaches anything; below the count it only refuses new devices. */
  set max(value: number) {
    this.#max = value;
  }

  /** Indices the instance holds, bound or not. */
  get count(): number {
    return this.#table.count;
  }

  get boundCount(): number {
    return this.#bindings.boundCount;
  }

  /** Bytes its devices commit (deviceMemory), counting the binds under way. */
  get memory(): number {
    return this.#bindings.committedMemory() + this.#pendingMemory;
  }

  indices(): number[] {
    return this.#table.indices();
  }

  nodePath(index: number): string {
    return loopNode(this.dir, index);
  }

  // ---------------------------------------------------------------- loop-control

  /** LOOP_CTL_ADD: the new index; EEXIST if taken, EINVAL past the last minor, ENOSPC at max. */
  add(arg: number): number {
    return this.#table.add(arg);
  }

  /** Puts back an index from the saved state, whatever the limits say now (they never detach). */
  restoreIndex(index: number): void {
    this.#table.restore(index);
  }

  /** LOOP_CTL_REMOVE: 0; EINVAL if negative, ENODEV if absent, EBUSY if bound, busy or reserved. */
  remove(arg: number, caller: Caller): number {
    return this.#table.remove(arg, caller);
  }

  /** LOOP_CTL_GET_FREE: the lowest unbound index not reserved by another (reserved for the caller). */
  getFree(caller: Caller): number {
    return this.#table.getFree(caller);
  }

  /** Performs a loop-control ioctl; throws the errno as a UbloopError (ENOSYS for unknown commands). */
  control(cmd: number, arg: number, caller: Caller): number {
    return this.#table.control(cmd, arg, caller);
  }

  /** Answers a loop-control ioctl like the kernel: the result, or a negative errno. */
  ioctl(cmd: number, arg: number, caller: Caller): number {
    try {
      return this.control(cmd, arg, caller);
    } catch (err) {
      if (err instanceof UbloopError) return err.errno;
      throw err;
    }
  }

  // ---------------------------------------------------------------- binding

  /** Binds an image to `index` (or to GET_FREE's answer); EBUSY if bound or reserved by another. */
  async bind(args: BindArgs): Promise<DeviceEntry> {
    if (args.caller.key === RESTORE_KEY) return this.#bindings.bind(args);
    // checked and counted in one step, so concurrent binds cannot all pass one check
    this.#admit(args.options);
    const need = deviceMemory(args.options);
    this.#pendingMemory += need;
    try {
      return await this.#bindings.bind(args);
    } finally {
      this.#pendingMemory -= need;
    }
  }

  /** Whether index's device was taken over from the daemon's previous run (crash recovery). */
  recovered(index: number): boolean {
    return this.#bindings.recovered(index);
  }

  /** Unbinds `index` (the index stays); a busy device is detached once released, or refused. */
  unbind(index: number, busy: 'defer' | 'refuse' = 'defer'): Promise<UnbindResult> {
    return this.#bindings.unbind(index, busy);
  }

  /** Resizes a bound device (losetup -c); resolves with its entry. */
  resize(index: number, size?: number): Promise<DeviceEntry> {
    return this.#bindings.resize(index, size);
  }

  handOverProblems(): string[] {
    return this.#bindings.handOverProblems();
  }

  handOver(): Promise<void> {
    return this.#bindings.handOver();
  }

  /** Stops every device without forgetting the bindings in the state (daemon shutdown). */
  shutdown(): Promise<void> {
    return this.#bindings.shutdown();
  }

  /** Unbinds everything (instance removal with --force). */
  unbindAll(): Promise<void> {
    return this.#bindings.unbindAll();
  }

  /** The requesting client went away: autoclear bindings may now go, its reservations end. */
  clientGone(key: string): void {
    this.#bindings.clientGone(key);
    this.#table.endReservations(key);
  }

  /** Unbinds the devices that are due (autoclear, lazy detach); resolves with their indices. */
  sweep(graceMs: number): Promise<number[]> {
    return this.#bindings.sweep(graceMs);
  }

  /** Unbinds the mounted devices whose filesystem has gone (clearOnUnmount); resolves with their indices. */
  sweepUnmounted(lookMs: number): Promise<number[]> {
    return this.#bindings.sweepUnmounted(lookMs);
  }

  // ---------------------------------------------------------------- views

  entry(index: number): DeviceEntry | null {
    return this.#bindings.entry(index);
  }

  entries(): DeviceEntry[] {
    return this.indices().map((i) => this.entry(i) as DeviceEntry);
  }

  /** Bindings as they persist. */
  bindings(): SavedBinding[] {
    return this.#bindings.saved();
  }
}
