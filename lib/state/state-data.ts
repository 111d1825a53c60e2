// What the daemon persists, as the daemon uses it: instances with their limits, owners
// and indices, the owner limits, and every binding with its backing file (path +
// device/inode), its options and whose rights opened it. toRecord and fromRecord are
// the one boundary between these runtime types and the stored format (schema.ts).
import type { BindOptions } from '../protocol/device-requests.js';
import { STATE_VERSION, STORED_OPTION_KEYS, STORED_TUNING_KEYS, type StoredBinding, type StoredInstance, type StoredOptions, type StoredState } from './schema.js';

/** The saved state's shape, whatever form its binding options take. */
export interface StateShape<O> {
  owners: { uid: number; max: number }[];
  instances: (Omit<StoredInstance, 'bindings'> & { bindings: (Omit<StoredBinding, 'options'> & { options: O })[] })[];
}

/** The state as the daemon takes it from its instances. */
export type StateData = StateShape<BindOptions>;
/** The state as read back from the file: options as stored, checked binding by binding at restore. */
export type SavedState = StateShape<StoredOptions>;
export type SavedBinding = SavedState['instances'][number]['bindings'][number];

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
      ...(i.maxDepth === undefined ? {} : { maxDepth: i.maxDepth }),
      ...(i.maxMemory === undefined ? {} : { maxMemory: i.maxMemory }),
      indices: [...i.indices],
      bindings: i.bindings.map((b) => ({
        index: b.index,
        backing: { path: b.backing.path, dev: b.backing.dev, ino: b.backing.ino },
        options: options(b.options),
        boundBy: { uid: b.boundBy.uid, gid: b.boundBy.gid },
        ...(b.ublkId === undefined ? {} : { ublkId: b.ublkId }),
      })),
    })),
  };
}

// The stored options are the bind options of the same names. Should the bind options be
// renamed or changed, these two functions are where the stored names are mapped (and
// the compiler points here): the stored format stays as it is. Stored options are
// checked as bind options when each binding is restored (restore.ts), not here: one bad
// binding must not cost the whole file.

function optionsToRecord(o: BindOptions): StoredOptions {
  const out: Record<string, number | boolean | string> = {};
  for (const key of STORED_OPTION_KEYS) out[key] = o[key];
  for (const key of STORED_TUNING_KEYS) {
    const v = o[key];
    if (v !== undefined) out[key] = v;
  }
  return out as StoredOptions;
}

function optionsFromRecord(o: StoredOptions): StoredOptions {
  return { ...o };
}

/** The runtime state as it is written to the state file. */
export function toRecord(state: StateData): StoredState {
  return { version: STATE_VERSION, ...convert(state, optionsToRecord) };
}

/** A checked state record as the daemon restores it. */
export function fromRecord(record: StoredState): SavedState {
  return convert(record, optionsFromRecord);
}
