// Brings a parsed state file of any version this code knows up to the current one; a
// newer version is refused (StateVersionError), never guessed at, so that the caller
// can keep the file and its instances for the newer daemon that wrote it.
import { UbloopError, invalid } from '../errors.js';
import { STATE_VERSION, checkStoredState, type StoredState } from './schema.js';

type Rec = Readonly<Record<string, unknown>>;

function isRec(v: unknown): v is Rec {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** The state file was written by a newer ubloop: refuse it rather than lose what it holds. */
export class StateVersionError extends UbloopError {
  readonly version: number;
  constructor(version: number, message: string) {
    super('EPROTONOSUPPORT', message);
    this.name = 'StateVersionError';
    this.version = version;
  }
}

/**
 * Version 1 (ubloop up to issue 11): binding options were read by the wire protocol's
 * bind checker, which filled in a missing option with the protocol's default of the
 * time, and `boundBy` was optional (files written before it existed meant the instance
 * owner). Version 2 spells both out, with the defaults version 1 had, frozen here.
 */
const V1_OPTION_DEFAULTS = { offset: 0, sizeLimit: 0, readOnly: false, directIo: false, blockSize: 512, queues: 1, depth: 128, autoclear: false };

function v1to2(state: Rec): Rec {
  const instances = state['instances'];
  return {
    ...state,
    version: 2,
    instances: Array.isArray(instances)
      ? instances.map((inst: unknown) => {
          if (!isRec(inst) || !Array.isArray(inst['bindings'])) return inst;
          return {
            ...inst,
            bindings: inst['bindings'].map((b: unknown) => {
              if (!isRec(b)) return b;
              return {
                ...b,
                options: isRec(b['options']) ? { ...V1_OPTION_DEFAULTS, ...b['options'] } : b['options'],
                boundBy: b['boundBy'] ?? { uid: inst['uid'], gid: inst['gid'] },
              };
            }),
          };
        })
      : instances,
  };
}

/** MIGRATIONS[n] turns a version n record into a version n + 1 record. */
const MIGRATIONS: Readonly<Record<number, (state: Rec) => Rec>> = {
  1: v1to2,
};

/**
 * Checks parsed state-file content of any known version and returns it as the current
 * version, with the version it was read as. Throws StateVersionError for a newer
 * version, an EINVAL naming the problem for anything else unusable.
 */
export function upgradeState(value: unknown, file: string): { state: StoredState; from: number } {
  if (!isRec(value)) throw invalid('the state must be an object');
  const from = value['version'];
  if (typeof from !== 'number' || !Number.isInteger(from) || from < 1) {
    throw invalid(`the state has no valid version (got ${JSON.stringify(from) ?? 'nothing'})`);
  }
  if (from > STATE_VERSION) {
    throw new StateVersionError(
      from,
      `state file ${file} has version ${from}, newer than this ubloop understands (${STATE_VERSION}): it was written by a newer ubloop; run that, or move the file away to start with no instances`,
    );
  }
  let state: Rec = value;
  for (let v = from; v < STATE_VERSION; v++) {
    const step = MIGRATIONS[v];
    if (!step) throw invalid(`no migration from state version ${v}`);
    state = step(state);
  }
  return { state: checkStoredState(state), from };
}
