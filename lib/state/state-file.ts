// The state file on disk: written atomically (temp file, fsync, rename, fsync of the
// directory), read back with every problem reported, and a corrupt or unreadable file
// moved aside rather than overwritten.
import { closeSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, unlinkSync, writeSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { isSystemError } from '../errors.js';
import { checkState, type StateData } from './state-data.js';

export type ReadResult =
  | { kind: 'missing' }
  | { kind: 'ok'; state: StateData }
  /** The file could not be used; it was renamed to movedTo (null if even that failed). */
  | { kind: 'corrupt'; problem: string; movedTo: string | null };

function fsyncDir(dir: string): void {
  const fd = openSync(dir, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** Writes the state so that a crash at any point leaves either the old or the new file. */
export function writeState(path: string, state: StateData): void {
  const dir = dirname(path);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const tmp = join(dir, `.${basename(path)}.${process.pid}.tmp`);
  const fd = openSync(tmp, 'w', 0o600);
  try {
    writeSync(fd, `${JSON.stringify(state, null, 2)}\n`);
    fsyncSync(fd);
  } catch (err) {
    closeSync(fd);
    try {
      unlinkSync(tmp);
    } catch {
      // nothing to clean up
    }
    throw err;
  }
  closeSync(fd);
  renameSync(tmp, path);
  fsyncDir(dir);
}

function moveAside(path: string, now: Date): string | null {
  const aside = `${path}.corrupt-${now.toISOString().replace(/[:.]/g, '-')}`;
  try {
    renameSync(path, aside);
    fsyncDir(dirname(path));
    return aside;
  } catch {
    return null;
  }
}

/** Reads the state file; a bad one is moved aside (never left to be overwritten) and reported. */
export function readState(path: string, now = new Date()): ReadResult {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    if (isSystemError(err) && err.code === 'ENOENT') return { kind: 'missing' };
    const problem = `cannot read state file ${path}: ${(err as Error).message}`;
    return { kind: 'corrupt', problem, movedTo: moveAside(path, now) };
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    return { kind: 'corrupt', problem: `state file ${path} is not valid JSON: ${(err as Error).message}`, movedTo: moveAside(path, now) };
  }
  try {
    return { kind: 'ok', state: checkState(value) };
  } catch (err) {
    return { kind: 'corrupt', problem: `state file ${path} is not usable: ${(err as Error).message}`, movedTo: moveAside(path, now) };
  }
}
