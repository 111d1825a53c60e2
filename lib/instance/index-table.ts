// An instance's loop-control index table: which loop indices exist, what state each is
// in, and GET_FREE reservations, with the semantics of Linux 6.1's
// drivers/block/loop.c (loop_add, loop_control_remove, loop_control_get_free) plus
// ENOSPC at the instance's limit. What is bound at an index is the payload B, which
// this table carries but never looks into (see bindings.ts).
import { UbloopError } from '../errors.js';
import { MAX_INDEX } from '../protocol/limits.js';
import { holds, type Caller } from './caller.js';
import { LOOP_CTL_ADD, LOOP_CTL_GET_FREE, LOOP_CTL_REMOVE, indexArg } from './loop-ctl.js';

export type SlotState = 'unbound' | 'binding' | 'bound' | 'unbinding';

export interface Slot<B> {
  readonly index: number;
  state: SlotState;
  binding: B | null;
  reservation: { holder: string; until: number } | null;
}

export interface IndexTableContext {
  /** The instance's name, for messages. */
  readonly name: string;
  now(): number;
  /** How long GET_FREE's answer stays reserved for its caller. */
  reservationMs: number;
  /** Why the table may not grow by one index now (ENOSPC), or null. */
  roomCheck(): UbloopError | null;
  /** The set of indices changed (for the state file). */
  changed(): void;
}

export class IndexTable<B> {
  readonly #slots = new Map<number, Slot<B>>();
  readonly #ctx: IndexTableContext;

  constructor(ctx: IndexTableContext) {
    this.#ctx = ctx;
  }

  /** Indices held, bound or not. */
  get count(): number {
    return this.#slots.size;
  }

  indices(): number[] {
    return [...this.#slots.keys()].sort((a, b) => a - b);
  }

  slot(index: number): Slot<B> | undefined {
    return this.#slots.get(index);
  }

  slots(): Slot<B>[] {
    return [...this.#slots.values()];
  }

  /** Whether the slot is still in the table (it may be removed while a bind waits). */
  holds(slot: Slot<B>): boolean {
    return this.#slots.get(slot.index) === slot;
  }

  /** LOOP_CTL_ADD: the new index; EEXIST if taken, EINVAL past the last minor, ENOSPC at max. */
  add(arg: number): number {
    let index = indexArg(arg);
    if (index >= 0) {
      if (this.#slots.has(index)) throw new UbloopError('EEXIST', `loop${index} already exists in instance ${this.#ctx.name}`);
      if (index > MAX_INDEX) throw new UbloopError('EINVAL', `index ${index} is beyond the last loop index ${MAX_INDEX}`);
    }
    const full = this.#ctx.roomCheck();
    if (full) throw full;
    if (index < 0) index = this.#lowestUnused();
    this.#slots.set(index, { index, state: 'unbound', binding: null, reservation: null });
    this.#ctx.changed();
    return index;
  }

  /** Puts back an index from the saved state, whatever the limits say now (they never detach). */
  restore(index: number): void {
    if (!this.#slots.has(index)) this.#slots.set(index, { index, state: 'unbound', binding: null, reservation: null });
  }

  /** LOOP_CTL_REMOVE: 0; EINVAL if negative, ENODEV if absent, EBUSY if bound, busy or reserved. */
  remove(arg: number, caller: Caller): number {
    const index = indexArg(arg);
    if (index < 0) throw new UbloopError('EINVAL', `cannot remove negative index ${index}`);
    const slot = this.#slots.get(index);
    if (!slot) throw new UbloopError('ENODEV', `loop${index} does not exist in instance ${this.#ctx.name}`);
    if (slot.state !== 'unbound') throw new UbloopError('EBUSY', `loop${index} is ${slot.state}; unbind it first`);
    this.#refuseReservedByOther(slot, caller);
    this.#slots.delete(index);
    this.#ctx.changed();
    return 0;
  }

  /**
   * LOOP_CTL_GET_FREE: the lowest existing unbound index not reserved by someone else,
   * else a new one (ENOSPC at max). The answer is reserved for the caller for a while.
   */
  getFree(caller: Caller): number {
    for (const index of this.indices()) {
      const slot = this.#slots.get(index) as Slot<B>;
      if (slot.state === 'unbound' && !this.#reservedByOther(slot, caller)) {
        this.#reserve(slot, caller);
        return index;
      }
    }
    const index = this.add(-1);
    this.#reserve(this.#slots.get(index) as Slot<B>, caller);
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

  /**
   * Takes an index for binding (`index`, or GET_FREE's answer): its state becomes
   * 'binding' and its reservation ends. EINVAL for an impossible index, ENODEV if it
   * does not exist, EBUSY if bound or reserved by another. `created`: GET_FREE made it,
   * so a failed bind gives it back (release).
   */
  take(caller: Caller, index?: number): { slot: Slot<B>; created: boolean } {
    let slot: Slot<B>;
    let created = false;
    if (index === undefined) {
      const before = this.count;
      slot = this.#slots.get(this.getFree(caller)) as Slot<B>;
      created = this.count > before;
    } else {
      if (index < 0) throw new UbloopError('EINVAL', `cannot bind negative index ${index}`);
      if (index > MAX_INDEX) throw new UbloopError('EINVAL', `index ${index} is beyond the last loop index ${MAX_INDEX}`);
      const found = this.#slots.get(index);
      if (!found) {
        throw new UbloopError('ENODEV', `loop${index} does not exist in instance ${this.#ctx.name} (LOOP_CTL_ADD it first, or bind without an index)`);
      }
      if (found.state !== 'unbound') throw new UbloopError('EBUSY', `loop${index} is already ${found.state}`);
      this.#refuseReservedByOther(found, caller);
      slot = found;
    }
    slot.state = 'binding';
    slot.reservation = null;
    return { slot, created };
  }

  /** A bind of a taken slot failed: it is unbound again, and gone if the bind created it. */
  release(slot: Slot<B>, created: boolean): void {
    slot.binding = null;
    slot.state = 'unbound';
    if (created && this.holds(slot)) {
      this.#slots.delete(slot.index);
      this.#ctx.changed();
    }
  }

  /** The holder went away: its reservations end. */
  endReservations(holder: string): void {
    for (const slot of this.#slots.values()) if (slot.reservation?.holder === holder) slot.reservation = null;
  }

  #lowestUnused(): number {
    let i = 0;
    while (this.#slots.has(i)) i++;
    return i;
  }

  #reservedByOther(slot: Slot<B>, caller: Caller): boolean {
    const r = slot.reservation;
    if (!r) return false;
    if (r.until <= this.#ctx.now()) {
      slot.reservation = null;
      return false;
    }
    return !holds(caller, r.holder);
  }

  #refuseReservedByOther(slot: Slot<B>, caller: Caller): void {
    if (this.#reservedByOther(slot, caller)) throw new UbloopError('EBUSY', `loop${slot.index} is reserved by another client's GET_FREE`);
  }

  #reserve(slot: Slot<B>, caller: Caller): void {
    slot.reservation = { holder: caller.key, until: this.#ctx.now() + this.#ctx.reservationMs };
  }
}
