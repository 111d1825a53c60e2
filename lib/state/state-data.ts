// What the daemon persists, as the daemon uses it: instances with their limits, owners
// and indices, the owner limits, and every binding with its backing file (path +
// device/inode), its options and whose rights opened it. toRecord and fromRecord are
// the one boundary between these runtime types and the stored format (schema.ts).
import type { BindOptions } from '../protocol/device-requests.js';
import { STATE_VERSION, type StoredBinding, type StoredInstance, type StoredOptions, type StoredState } from './schema.js';

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

/** The stored options are the bind options, field by field, for now. */
function optionsToRecord(o: BindOptions): StoredOptions {
  return {
    offset: o.offset,
    sizeLimit: o.sizeLimit,
    readOnly: o.readOnly,
    directIo: o.directIo,
    blockSize: o.blockSize,
    queues: o.queues,
    depth: o.depth,
    autoclear: o.autoclear,
  };
}

function optionsFromRecord(o: StoredOptions): BindOptions {
  const { offset, sizeLimit, readOnly, directIo, blockSize, queues, depth, autoclear } = o;
  return { offset, sizeLimit, readOnly, directIo, blockSize, queues, depth, autoclear };
}

/** The runtime state as it is written to the state file. */
export function toRecord(state: StateData): StoredState {
  return { version: STATE_VERSION, ...convert(state, optionsToRecord) };
}

/** A checked state record as the daemon restores it. */
export function fromRecord(record: StoredState): StateData {
  return convert(record, optionsFromRecord);
}
