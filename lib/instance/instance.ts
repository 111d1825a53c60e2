// One instance: its own loop indices, limit and owner, with loop-control semantics that
// match Linux 6.1's drivers/block/loop.c (loop_add, loop_control_remove,
// loop_control_get_free), plus ENOSPC at `max` and GET_FREE reservations.
import { loopNode } from '../daemon/paths.js';
import { UbloopError } from '../errors.js';
import { MAX_INDEX } from '../protocol/limits.js';
import type { BindOptions } from '../protocol/device-requests.js';
import type { DeviceEntry } from '../protocol/results.js';
import { holds, type Caller } from './caller.js';
import type { BoundDevice, DeviceFactory } from './device-factory.js';
import { LOOP_CTL_ADD, LOOP_CTL_GET_FREE, LOOP_CTL_REMOVE, indexArg } from './loop-ctl.js';

export type SlotState = 'unbound' | 'binding' | 'bound' | 'unbinding';

export interface Backing {
  /** Path of the image as the daemon sees it (for the state file and for people). */
  path: string;
  dev: number;
  ino: number;
}

export interface Binding {
  device: BoundDevice;
  backing: Backing;
  options: BindOptions;
  /** Key of the client that asked for the binding (autoclear waits for it to go). */
  clientKey: string;
  /** Whose rights the image was opened with (checked again when restoring). */
  boundBy: { uid: number; gid: number };
  clientGone: boolean;
  /** Unbind asked for while the device was busy: done once it is released. */
  detachPending: boolean;
  /** Since when the device has been seen idle (for the autoclear grace), or null. */
  idleSince: number | null;
  /**
   * The final exclusive-open probe found it claimed although the looks saw it idle (e.g.
   * a lazily unmounted filesystem): probe again only after another grace time, even
   * for a pending detach, rather than on every sweep.
   */
  claimed: boolean;
}

interface Slot {
  index: number;
  state: SlotState;
  binding: Binding | null;
  reservation: { holder: string; until: number } | null;
}

export interface InstanceSettings {
  name: string;
  max: number;
  uid: number;
  gid: number;
  mode: number;
  dir: string;
}

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
}

export interface BindArgs {
  index?: number;
  fd: number;
  backing: Backing;
  options: BindOptions;
  caller: Caller;
  /** Whose rights opened the image, when not the caller's (restore). */
  boundBy?: { uid: number; gid: number };
}

export interface UnbindResult {
  /** The device was busy: it is unbound as soon as it is released. */
  deferred: boolean;
}

export class Instance {
  readonly name: string;
  readonly uid: number;
  readonly gid: number;
  readonly mode: number;
  readonly dir: string;
  #max: number;
  readonly #slots = new Map<number, Slot>();
  readonly #ctx: InstanceContext;
  /** Path of the loop-control node, or null when serving by socket only. */
  loopControlPath: string | null = null;

  constructor(settings: InstanceSettings, ctx: InstanceContext) {
    this.name = settings.name;
    this.uid = settings.uid;
    this.gid = settings.gid;
    this.mode = settings.mode;
    this.dir = settings.dir;
    this.#max = settings.max;
    this.#ctx = ctx;
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
    return this.#slots.size;
  }

  get boundCount(): number {
    let n = 0;
    for (const s of this.#slots.values()) if (s.state !== 'unbound') n++;
    return n;
  }

  indices(): number[] {
    return [...this.#slots.keys()].sort((a, b) => a - b);
  }

  nodePath(index: number): string {
    return loopNode(this.dir, index);
  }

  // ---------------------------------------------------------------- loop-control

  /** LOOP_CTL_ADD: the new index; EEXIST if taken, EINVAL past the last minor, ENOSPC at max. */
  add(arg: number): number {
    let index = indexArg(arg);
    if (index >= 0) {
      if (this.#slots.has(index)) throw new UbloopError('EEXIST', `loop${index} already exists in instance ${this.name}`);
      if (index > MAX_INDEX) throw new UbloopError('EINVAL', `index ${index} is beyond the last loop index ${MAX_INDEX}`);
    }
    const full = this.#ctx.roomCheck(this);
    if (full) throw full;
    if (index < 0) index = this.#lowestUnused();
    this.#slots.set(index, { index, state: 'unbound', binding: null, reservation: null });
    this.#ctx.hooks.changed();
    return index;
  }

  /** Puts back an index from the saved state, whatever the limits say now (they never detach). */
  restoreIndex(index: number): void {
    if (!this.#slots.has(index)) this.#slots.set(index, { index, state: 'unbound', binding: null, reservation: null });
  }

  /** LOOP_CTL_REMOVE: 0; EINVAL if negative, ENODEV if absent, EBUSY if bound, busy or reserved. */
  remove(arg: number, caller: Caller): number {
    const index = indexArg(arg);
    if (index < 0) throw new UbloopError('EINVAL', `cannot remove negative index ${index}`);
    const slot = this.#slots.get(index);
    if (!slot) throw new UbloopError('ENODEV', `loop${index} does not exist in instance ${this.name}`);
    if (slot.state !== 'unbound') throw new UbloopError('EBUSY', `loop${index} is ${slot.state}; unbind it first`);
    if (this.#reservedByOther(slot, caller)) {
      throw new UbloopError('EBUSY', `loop${index} is reserved by another client's GET_FREE`);
    }
    this.#slots.delete(index);
    this.#ctx.hooks.changed();
    return 0;
  }

  /**
   * LOOP_CTL_GET_FREE: the lowest existing unbound index not reserved by someone else,
   * else a new one (ENOSPC at max). The answer is reserved for the caller for a while.
   */
  getFree(caller: Caller): number {
    for (const index of this.indices()) {
      const slot = this.#slots.get(index) as Slot;
      if (slot.state === 'unbound' && !this.#reservedByOther(slot, caller)) {
        this.#reserve(slot, caller);
        return index;
      }
    }
    const index = this.add(-1);
    this.#reserve(this.#slots.get(index) as Slot, caller);
    return index;
  }

  /** Performs a loop-control ioctl; throws the errno as a UbloopError (ENOSYS for unknown commands). */
  control(cmd: number, arg: number, caller: Caller): number {
    switch (cmd) {
      case LOOP_CTL_ADD:
        return this.add(arg);
      case LOOP_CTL_REMOVE:
        return this.remove(arg, caller);
      case LOOP_CTL_GET_FREE:
        return this.getFree(caller);
      default:
        throw new UbloopError('ENOSYS', `0x${cmd.toString(16)} is not a loop-control ioctl`);
    }
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
    let slot: Slot;
    let created = false;
    if (args.index === undefined) {
      const before = this.count;
      slot = this.#slots.get(this.getFree(args.caller)) as Slot;
      created = this.count > before;
    } else {
      const index = args.index;
      if (index < 0) throw new UbloopError('EINVAL', `cannot bind negative index ${index}`);
      if (index > MAX_INDEX) throw new UbloopError('EINVAL', `index ${index} is beyond the last loop index ${MAX_INDEX}`);
      const found = this.#slots.get(index);
      if (!found) {
        throw new UbloopError('ENODEV', `loop${index} does not exist in instance ${this.name} (LOOP_CTL_ADD it first, or bind without an index)`);
      }
      if (found.state !== 'unbound') throw new UbloopError('EBUSY', `loop${index} is already ${found.state}`);
      if (this.#reservedByOther(found, args.caller)) {
        throw new UbloopError('EBUSY', `loop${index} is reserved by another client's GET_FREE`);
      }
      slot = found;
    }
    slot.state = 'binding';
    slot.reservation = null;
    let device: BoundDevice;
    try {
      device = await this.#ctx.factory({ fd: args.fd, options: args.options });
    } catch (err) {
      slot.state = 'unbound';
      if (created && this.#slots.get(slot.index) === slot) {
        this.#slots.delete(slot.index);
        this.#ctx.hooks.changed();
      }
      throw err;
    }
    if (this.#slots.get(slot.index) !== slot) {
      await device.stop();
      throw new UbloopError('ENODEV', `loop${slot.index} was removed while binding`);
    }
    slot.binding = {
      device,
      backing: args.backing,
      options: args.options,
      clientKey: args.caller.key,
      boundBy: args.boundBy ?? { uid: args.caller.uid, gid: args.caller.gid },
      clientGone: false,
      detachPending: false,
      idleSince: null,
      claimed: false,
    };
    try {
      await this.#ctx.hooks.bound(this, slot.index, device);
    } catch (err) {
      slot.binding = null;
      slot.state = 'unbound';
      await device.stop();
      if (created) this.#slots.delete(slot.index);
      throw err;
    }
    slot.state = 'bound';
    this.#ctx.hooks.changed();
    return this.entry(slot.index) as DeviceEntry;
  }

  /**
   * Unbinds `index` (the index stays, like LOOP_CLR_FD): ENODEV if absent, ENXIO if not
   * bound, EBUSY while binding/unbinding. A busy device is detached once released
   * (busy 'defer', like losetup -d), or refused with EBUSY (busy 'refuse').
   */
  async unbind(index: number, busy: 'defer' | 'refuse' = 'defer'): Promise<UnbindResult> {
    const slot = this.#bound(index);
    const b = slot.binding as Binding;
    if (busy === 'refuse') {
      const inUse = () => new UbloopError('EBUSY', `loop${index} (${b.device.path}) is in use (mounted or open); unmount or close it first`);
      if (b.device.canStopIfUnused) {
        // The kernel's own check and stop in one command (TRY_STOP_DEV): nothing can
        // open the disk between the check and the stop.
        slot.state = 'unbinding';
        try {
          await b.device.stop({ ifUnused: true });
        } catch (err) {
          slot.state = 'bound';
          if (err instanceof Error && (err as NodeJS.ErrnoException).code === 'EBUSY') throw inUse();
          throw err;
        }
        slot.state = 'bound';
      } else if (b.device.isBusy() || b.device.isBusy({ exclusive: true })) {
        throw inUse();
      }
      await this.#teardown(slot, true);
      return { deferred: false };
    }
    // A user's explicit detach: the looks, then the exclusive-open probe as the last
    // word right before the teardown (see sweep for why last).
    if (b.device.isBusy()) {
      b.detachPending = true;
      return { deferred: true };
    }
    if (b.device.isBusy({ exclusive: true })) {
      b.detachPending = true;
      b.claimed = true;
      b.idleSince = this.#ctx.now();
      return { deferred: true };
    }
    await this.#teardown(slot, true);
    return { deferred: false };
  }

  /** Resizes a bound device (losetup -c); resolves with its entry. */
  async resize(index: number, size?: number): Promise<DeviceEntry> {
    const slot = this.#bound(index);
    await (slot.binding as Binding).device.resize(size);
    return this.entry(index) as DeviceEntry;
  }

  #bound(index: number): Slot {
    const slot = this.#slots.get(index);
    if (index < 0 || !slot) throw new UbloopError('ENODEV', `loop${index} does not exist in instance ${this.name}`);
    if (slot.state === 'unbound') throw new UbloopError('ENXIO', `loop${index} is not bound`);
    if (slot.state !== 'bound' || !slot.binding) throw new UbloopError('EBUSY', `loop${index} is ${slot.state}`);
    return slot;
  }

  async #teardown(slot: Slot, persist: boolean): Promise<void> {
    const binding = slot.binding;
    if (!binding) return;
    slot.state = 'unbinding';
    try {
      await this.#ctx.hooks.unbound(this, slot.index);
    } finally {
      try {
        await binding.device.stop();
      } finally {
        slot.binding = null;
        slot.state = 'unbound';
        if (persist) this.#ctx.hooks.changed();
      }
    }
  }

  /** Stops every device without forgetting the bindings in the state (daemon shutdown). */
  async shutdown(): Promise<void> {
    const slots = [...this.#slots.values()].filter((s) => s.binding);
    await Promise.allSettled(slots.map((s) => this.#teardown(s, false)));
  }

  /** Unbinds everything (instance removal with --force). */
  async unbindAll(): Promise<void> {
    const slots = [...this.#slots.values()].filter((s) => s.binding);
    const results = await Promise.allSettled(slots.map((s) => this.#teardown(s, true)));
    const failed = results.find((r) => r.status === 'rejected');
    if (failed) throw (failed as PromiseRejectedResult).reason;
  }

  /** The requesting client went away: autoclear bindings may now go, its reservations end. */
  clientGone(key: string): void {
    for (const slot of this.#slots.values()) {
      if (slot.binding?.clientKey === key) slot.binding.clientGone = true;
      if (slot.reservation?.holder === key) slot.reservation = null;
    }
  }

  /**
   * Unbinds devices that are due: autoclear ones whose client has gone once they have
   * been idle for graceMs, and lazily detached ones once they are idle.
   *
   * Every sweep only looks (isBusy(): holders, mounts in every namespace, swap, open
   * descriptors), which never gets in a user's way. The exclusive-open probe
   * (isBusy({ exclusive: true })) runs only for a slot that is due, as the final
   * confirmation right before its teardown, and last: while it holds the device a
   * user's mount of it fails with EBUSY (issue 8), but at that moment the device is
   * about to go, so a mount racing with it would lose to the detach anyway. It is still
   * worth doing, because it sees claims the looks cannot (a lazily unmounted filesystem
   * still alive). If it says busy, the slot stays and its idle clock restarts.
   */
  async sweep(graceMs: number): Promise<number[]> {
    const now = this.#ctx.now();
    const due: Slot[] = [];
    for (const slot of this.#slots.values()) {
      const b = slot.binding;
      if (slot.state !== 'bound' || !b) continue;
      const wanted = b.detachPending || (b.options.autoclear && b.clientGone);
      if (!wanted) continue;
      if (b.device.isBusy()) {
        b.idleSince = null;
        b.claimed = false;
        continue;
      }
      b.idleSince ??= now;
      const waited = now - b.idleSince >= graceMs;
      if (waited || (b.detachPending && !b.claimed)) due.push(slot); // else within the grace time: no probe
    }
    const gone: number[] = [];
    for (const slot of due) {
      const b = slot.binding;
      if (slot.state !== 'bound' || !b) continue; // changed while an earlier one was torn down
      // the final probe right before this slot's own teardown, not before all of them
      if (b.device.isBusy({ exclusive: true })) {
        b.idleSince = this.#ctx.now();
        b.claimed = true;
        continue;
      }
      await this.#teardown(slot, true);
      gone.push(slot.index);
    }
    return gone;
  }

  // ---------------------------------------------------------------- views

  entry(index: number): DeviceEntry | null {
    const slot = this.#slots.get(index);
    if (!slot) return null;
    const b = slot.binding;
    return {
      instance: this.name,
      index,
      state: slot.state,
      path: b && slot.state === 'bound' ? this.nodePath(index) : null,
      ublkPath: b ? b.device.path : null,
      ublkId: b ? b.device.ublkId : null,
      backing: b ? { ...b.backing } : null,
      size: b ? b.device.size : null,
      options: b ? { ...b.options } : null,
      detachPending: b?.detachPending ?? false,
      failure: b ? b.device.failure() : null,
    };
  }

  entries(): DeviceEntry[] {
    return this.indices().map((i) => this.entry(i) as DeviceEntry);
  }

  /** Bindings as they persist. */
  bindings(): { index: number; backing: Backing; options: BindOptions; boundBy: { uid: number; gid: number } }[] {
    const out: { index: number; backing: Backing; options: BindOptions; boundBy: { uid: number; gid: number } }[] = [];
    for (const index of this.indices()) {
      const b = this.#slots.get(index)?.binding;
      if (b) out.push({ index, backing: { ...b.backing }, options: { ...b.options }, boundBy: { ...b.boundBy } });
    }
    return out;
  }

  /** The bound device of an index (for the daemon's node bookkeeping), or null. */
  device(index: number): BoundDevice | null {
    return this.#slots.get(index)?.binding?.device ?? null;
  }

  // ---------------------------------------------------------------- internals

  #lowestUnused(): number {
    let i = 0;
    while (this.#slots.has(i)) i++;
    return i;
  }

  #reservedByOther(slot: Slot, caller: Caller): boolean {
    const r = slot.reservation;
    if (!r) return false;
    if (r.until <= this.#ctx.now()) {
      slot.reservation = null;
      return false;
    }
    return !holds(caller, r.holder);
  }

  #reserve(slot: Slot, caller: Caller): void {
    slot.reservation = { holder: caller.key, until: this.#ctx.now() + this.#ctx.reservationMs };
  }
}
