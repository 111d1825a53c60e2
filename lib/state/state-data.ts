// What the daemon persists, as the daemon uses it: instances with their limits, owners
// and indices, the owner limits, and every binding with its backing file (path +
// device/inode), its options and whose rights opened it. toRecord and fromRecord are
// the one boundary between these runtime types and the stored format (schema.ts).
import type { BindOptions } from '../protocol/device-requests.js';
import { STATE_VERSION, STORED_OPTION_KEYS, type StoredBinding, type StoredInstance, type StoredOptions, type StoredState } from './schema.js';

/** The saved state's shape, whatever form its binding options take. */
export interface StateShape<O> {
  owners: { uid: number; max: number }[];
  instances: (Omit<StoredInstance, 'bindings'> & { bindings: (Omit<StoredBinding, 'options'> & { options: O })[] })[];
}

export type StateData = StateShape<BindOptions>;
export type StateInstance = StateData['instances'][number];
export type StateBinding = StateInstance['bindings'][number];

/** A copy of a state with each binding's options converted. */
function convert<A, B>(s: StateShape<A>, options: (o: A) => B): StateShape<B> {
  return {
    owners: s.owners.map((o) => ({ uid: o.uid, max: o.max })),
    instances: s.instances.map((i) => ({
      name: i.name,
      max: i.max,
      uid: i.uid,
      gid: i.gid,
      mode: i.mode,
      indices: [...i.indices],
      bindings: i.bindings.map((b) => ({
        index: b.index,
        backing: { path: b.backing.path, dev: b.backing.dev, ino: b.backing.ino },
        options: options(b.options),
        boundBy: { uid: b.boundBy.uid, gid: b.boundBy.gid },
      })),
    })),
  };
}

// The stored options are, for now, the bind options of the same names. Should the bind
// options be renamed or changed, these two functions are where the stored names are
// mapped (and the compiler points here): the stored format stays as it is.

function optionsToRecord(o: Pick<BindOptions, keyof StoredOptions>): StoredOptions {
  const out: Partial<Record<keyof StoredOptions, number | boolean>> = {};
  for (const key of STORED_OPTION_KEYS) out[key] = o[key];
  return out as StoredOptions;
}

function optionsFromRecord(o: StoredOptions): BindOptions {
  const options: BindOptions = { ...o };
  return options;
}

/** The runtime state as it is written to the state file. */
export function toRecord(state: StateData): StoredState {
  return { version: STATE_VERSION, ...convert(state, optionsToRecord) };
}

/** A checked state record as the daemon restores it. */
export function fromRecord(record: StoredState): StateData {
  return convert(record, optionsFromRecord);
}
