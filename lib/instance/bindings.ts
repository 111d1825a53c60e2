// The binding lifecycle of an instance's indices: bind an image (through the device
// factory), unbind now or once released, resize, the autoclear / lazy-detach sweep,
// and the views of what is bound. Which indices exist is the index table's business.
import { UbloopError } from '../errors.js';
import type { BindOptions } from '../protocol/device-requests.js';
import type { DeviceEntry } from '../protocol/results.js';
import type { Image } from '../image.js';
import type { Caller } from './caller.js';
import type { BoundDevice, DeviceFactory } from './device-factory.js';
import type { IndexTable, Slot } from './index-table.js';
import { deviceMemory } from './limits.js';

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

export interface BindArgs {
  index?: number;
  fd: number;
  /** The image behind fd, if already inspected (handed to the factory). */
  image?: Image;
  backing: Backing;
  options: BindOptions;
  caller: Caller;
  /** Whose rights opened the image, when not the caller's (restore). */
  boundBy?: { uid: number; gid: number };
  /** ublk id of the binding's device in the daemon's previous run, to take over if it waits for recovery (restore). */
  recover?: number;
}

export interface UnbindResult {
  /** The device was busy: it is unbound as soon as it is released. */
  deferred: boolean;
}

/** A binding as it persists. */
export interface SavedBinding {
  index: number;
  backing: Backing;
  options: BindOptions;
  boundBy: { uid: number; gid: number };
  /** The ublk device serving it, so that a daemon restarted after a crash can take that device over. */
  ublkId?: number;
}

export interface BindingsContext {
  readonly name: string;
  factory: DeviceFactory;
  now(): number;
  /** The loopN node of an index (its path in entries). */
  nodePath(index: number): string;
  /** After a device is bound: e.g. create the loopN node. Throwing undoes the bind. */
  bound(index: number, device: BoundDevice): Promise<void> | void;
  /** Before a bound device is stopped: e.g. remove the loopN node. */
  unbound(index: number): Promise<void> | void;
  /** The bindings changed (for the state file). */
  changed(): void;
}

type BSlot = Slot<Binding>;

export class Bindings {
  readonly #table: IndexTable<Binding>;
  readonly #ctx: BindingsContext;

  constructor(table: IndexTable<Binding>, ctx: BindingsContext) {
    this.#table = table;
    this.#ctx = ctx;
  }

  get boundCount(): number {
    return this.#table.slots().filter((s) => s.state !== 'unbound').length;
  }

  /** Memory its devices commit (deviceMemory), binds under way excepted. */
  committedMemory(): number {
    let n = 0;
    for (const s of this.#table.slots()) if (s.binding && s.state !== 'binding') n += deviceMemory(s.binding.options);
    return n;
  }

  /** Binds an image to `index` (or to GET_FREE's answer); EBUSY if bound or reserved by another. */
  async bind(args: BindArgs): Promise<DeviceEntry> {
    const { slot, created } = this.#table.take(args.caller, args.index);
    let device: BoundDevice;
    try {
      device = await this.#ctx.factory({
        fd: args.fd,
        options: args.options,
        ...(args.image ? { image: args.image } : {}),
        ...(args.recover === undefined ? {} : { recover: args.recover }),
      });
    } catch (err) {
      this.#table.release(slot, created);
      throw err;
    }
    if (!this.#table.holds(slot)) {
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
      await this.#ctx.bound(slot.index, device);
    } catch (err) {
      this.#table.release(slot, created);
      await device.stop();
      throw err;
    }
    slot.state = 'bound';
    this.#ctx.changed();
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
      } else {
        if ((await b.device.isBusy()) || (await b.device.isBusy({ exclusive: true }))) throw inUse();
        this.#still(slot, b, index);
      }
      await this.#teardown(slot, true);
      return { deferred: false };
    }
    // A user's explicit detach: the looks, then the exclusive-open probe as the last
    // word right before the teardown (see sweep for why last).
    if (await b.device.isBusy()) {
      b.detachPending = true;
      return { deferred: true };
    }
    if (await b.device.isBusy({ exclusive: true })) {
      b.detachPending = true;
      b.claimed = true;
      b.idleSince = this.#ctx.now();
      return { deferred: true };
    }
    this.#still(slot, b, index);
    await this.#teardown(slot, true);
    return { deferred: false };
  }

  /** Resizes a bound device (losetup -c); resolves with its entry. */
  async resize(index: number, size?: number): Promise<DeviceEntry> {
    const slot = this.#bound(index);
    await (slot.binding as Binding).device.resize(size);
    return this.entry(index) as DeviceEntry;
  }

  /** Stops every device without forgetting the bindings in the state (daemon shutdown). */
  async shutdown(): Promise<void> {
    const slots = this.#table.slots().filter((s) => s.binding);
    await Promise.allSettled(slots.map((s) => this.#teardown(s, false)));
  }

  /** Why a live upgrade cannot hand these devices over (one line each), or nothing. */
  handOverProblems(): string[] {
    return this.#table.slots().flatMap((s) => {
      if (!s.binding) return [];
      if (s.state !== 'bound') return [`${this.#ctx.name}/loop${s.index} is ${s.state}`];
      if (!s.binding.device.handOver) return [`${this.#ctx.name}/loop${s.index} (${s.binding.device.path}) was not granted UBLK_F_QUIESCE`];
      return [];
    });
  }

  /** Live upgrade: every device is left to the next daemon; the bindings stay in the state. */
  async handOver(): Promise<void> {
    const slots = this.#table.slots().filter((s) => s.binding);
    const results = await Promise.allSettled(slots.map((s) => (s.binding as Binding).device.handOver?.()));
    const failed = results.find((r) => r.status === 'rejected');
    if (failed) throw (failed as PromiseRejectedResult).reason;
  }

  /** Unbinds everything (instance removal with --force). */
  async unbindAll(): Promise<void> {
    const slots = this.#table.slots().filter((s) => s.binding);
    const results = await Promise.allSettled(slots.map((s) => this.#teardown(s, true)));
    const failed = results.find((r) => r.status === 'rejected');
    if (failed) throw (failed as PromiseRejectedResult).reason;
  }

  /** The requesting client went away: its autoclear bindings may now go. */
  clientGone(key: string): void {
    for (const slot of this.#table.slots()) if (slot.binding?.clientKey === key) slot.binding.clientGone = true;
  }

  /**
   * Unbinds devices that are due: autoclear ones whose client has gone once they have
   * been idle for graceMs, and lazily detached ones once they are idle.
   *
   * Every sweep only looks (isBusy(): holders, mounts in every namespace, swap, open
   * descriptors), which never gets in a user's way; the looks of every candidate run
   * at once, so they share one pass over /proc. The exclusive-open probe
   * (isBusy({ exclusive: true })) runs only for a slot that is due, as the final
   * confirmation right before its teardown, and last: while it holds the device a
   * user's mount of it fails with EBUSY (issue 8), but at that moment the device is
   * about to go, so a mount racing with it would lose to the detach anyway. It is still
   * worth doing, because it sees claims the looks cannot (a lazily unmounted filesystem
   * still alive). If it says busy, the slot stays and its idle clock restarts.
   */
  async sweep(graceMs: number): Promise<number[]> {
    const candidates = this.#table.slots().flatMap((slot) => {
      const b = slot.binding;
      if (slot.state !== 'bound' || !b) return [];
      return b.detachPending || (b.options.autoclear && !b.options.clearOnUnmount && b.clientGone) ? [{ slot, b }] : [];
    });
    const looks = await Promise.all(candidates.map(({ b }) => b.device.isBusy()));
    const now = this.#ctx.now();
    const due: { slot: BSlot; b: Binding }[] = [];
    candidates.forEach(({ slot, b }, i) => {
      if (slot.binding !== b) return; // changed while looking
      if (looks[i]) {
        b.idleSince = null;
        b.claimed = false;
        return;
      }
      b.idleSince ??= now;
      const waited = now - b.idleSince >= graceMs;
      if (waited || (b.detachPending && !b.claimed)) due.push({ slot, b }); // else within the grace time: no probe
    });
    const gone: number[] = [];
    for (const { slot, b } of due) {
      if (slot.state !== 'bound' || slot.binding !== b) continue; // changed while an earlier one was torn down
      // the final probe right before this slot's own teardown, not before all of them
      if (await b.device.isBusy({ exclusive: true })) {
        b.idleSince = this.#ctx.now();
        b.claimed = true;
        continue;
      }
      if (slot.state !== 'bound' || slot.binding !== b) continue;
      await this.#teardown(slot, true);
      gone.push(slot.index);
    }
    return gone;
  }

  /**
   * The autoclear of a mount (clearOnUnmount), checked often and cheaply: once the client
   * that bound and mounted the device has gone, the device stays while it is claimed (one
   * exclusive-open probe: a mounted filesystem, even lazily unmounted while a file in it
   * is open, claims it; so does a mount in a namespace nobody can see). When the claim
   * is gone, the looks (open descriptors, holders, swap, mounts anywhere) decide: a disk
   * someone opened for I/O stays until they close it, like the last close of a kernel loop
   * device, and is probed and looked at again only every lookMs meanwhile. Then it is unbound as
   * `ubloop detach` would (refused, and retried, should anyone have it open by then).
   */
  async sweepUnmounted(lookMs: number): Promise<number[]> {
    const gone: number[] = [];
    for (const slot of this.#table.slots()) {
      const b = slot.binding;
      if (slot.state !== 'bound' || !b || !b.options.clearOnUnmount || !b.clientGone || b.detachPending) continue;
      // Found open (not mounted) a moment ago: neither probed nor looked at again for lookMs,
      // so that someone using the disk is not met by the probe's exclusive open every poll.
      if (b.idleSince !== null && this.#ctx.now() - b.idleSince < lookMs) continue;
      const claimed = b.device.claimed ? b.device.claimed() : await b.device.isBusy({ exclusive: true });
      if (claimed) {
        b.idleSince = null;
        continue;
      }
      b.idleSince = this.#ctx.now();
      if (await b.device.isBusy()) continue;
      if (slot.binding !== b || slot.state !== 'bound') continue;
      if (b.device.canStopIfUnused) {
        // the kernel's own check and stop in one command (TRY_STOP_DEV)
        try {
          await this.unbind(slot.index, 'refuse');
          gone.push(slot.index);
        } catch (err) {
          if (!(err instanceof UbloopError && (err.code === 'EBUSY' || err.code === 'ENXIO'))) throw err;
        }
        continue;
      }
      // without it (Linux 6.1): the looks were just taken; the probe once more right before
      // the teardown, as the final word (not the looks again: a pass over /proc is slow)
      const again = b.device.claimed ? b.device.claimed() : await b.device.isBusy({ exclusive: true });
      if (again || slot.binding !== b || slot.state !== 'bound') continue;
      await this.#teardown(slot, true);
      gone.push(slot.index);
    }
    return gone;
  }

  entry(index: number): DeviceEntry | null {
    const slot = this.#table.slot(index);
    if (!slot) return null;
    const b = slot.binding;
    return {
      instance: this.#ctx.name,
      index,
      state: slot.state,
      path: b && slot.state === 'bound' ? this.#ctx.nodePath(index) : null,
      ublkPath: b ? b.device.path : null,
      ublkId: b ? b.device.ublkId : null,
      backing: b ? { ...b.backing, deleted: b.device.imageDeleted?.() ?? false } : null,
      size: b ? b.device.size : null,
      options: b ? { ...b.options } : null,
      detachPending: b?.detachPending ?? false,
      failure: b ? b.device.failure() : null,
      ioErrors: b?.device.ioErrors?.() ?? null,
      partscan: b?.device.partscan ?? false,
    };
  }

  recovered(index: number): boolean {
    return this.#table.slot(index)?.binding?.device.recovered === true;
  }

  /** Bindings as they persist. */
  saved(): SavedBinding[] {
    const out: SavedBinding[] = [];
    for (const index of this.#table.indices()) {
      const b = this.#table.slot(index)?.binding;
      if (b) out.push({ index, backing: { ...b.backing }, options: { ...b.options }, boundBy: { ...b.boundBy }, ublkId: b.device.ublkId });
    }
    return out;
  }

  #bound(index: number): BSlot {
    const slot = this.#table.slot(index);
    if (index < 0 || !slot) throw new UbloopError('ENODEV', `loop${index} does not exist in instance ${this.#ctx.name}`);
    if (slot.state === 'unbound') throw new UbloopError('ENXIO', `loop${index} is not bound`);
    if (slot.state !== 'bound' || !slot.binding) throw new UbloopError('EBUSY', `loop${index} is ${slot.state}`);
    return slot;
  }

  /** After a wait for the busy check: the slot must still hold the same bound binding. */
  #still(slot: BSlot, b: Binding, index: number): void {
    if (slot.binding !== b || !this.#table.holds(slot)) throw new UbloopError('ENXIO', `loop${index} was unbound meanwhile`);
    if (slot.state !== 'bound') throw new UbloopError('EBUSY', `loop${index} is ${slot.state}`);
  }

  async #teardown(slot: BSlot, persist: boolean): Promise<void> {
    const binding = slot.binding;
    if (!binding) return;
    slot.state = 'unbinding';
    try {
      await this.#ctx.unbound(slot.index);
    } finally {
      try {
        await binding.device.stop();
      } finally {
        slot.binding = null;
        slot.state = 'unbound';
        if (persist) this.#ctx.changed();
      }
    }
  }
}
