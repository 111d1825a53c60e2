// The state file on disk: written atomically (temp file, fsync, rename, fsync of the
// directory) off the JS thread, read back through the version migrations with every
// problem reported. A corrupt or unreadable file is moved aside rather than
// overwritten; a file of a newer version is left where it is and refused.
import { closeSync, fsyncSync, openSync, readFileSync, renameSync } from 'node:fs';
import { mkdir, open, rename, unlink } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { isSystemError } from '../errors.js';
import { StateVersionError, upgradeState } from './migrate.js';
import { fromRecord, toRecord, type SavedState, type StateData } from './state-data.js';

export type ReadResult =
  | { kind: 'missing' }
  /** from: the version the file had (older ones are migrated on the next write). */
  | { kind: 'ok'; state: SavedState; from: number }
  /** Written by a newer ubloop: left untouched; the caller must not write over it. */
  | { kind: 'newer'; version: number; problem: string }
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
export async function writeState(path: string, state: StateData): Promise<void> {
  const dir = dirname(path);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const tmp = join(dir, `.${basename(path)}.${process.pid}.tmp`);
  const file = await open(tmp, 'w', 0o600);
  try {
    await file.writeFile(`${JSON.stringify(toRecord(state), null, 2)}\n`);
    await file.sync();
  } catch (err) {
    await file.close();
    await unlink(tmp).catch(() => undefined);
    throw err;
  }
  await file.close();
  await rename(tmp, path);
  const d = await open(dir, 'r');
  try {
    await d.sync();
  } finally {
    await d.close();
  }
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

/**
 * Reads the state file (once, at start: synchronously). An older version is migrated;
 * a newer one is reported and left alone; a bad one is moved aside (never left to be
 * overwritten) and reported.
 */
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
    const { state, from } = upgradeState(value, path);
    return { kind: 'ok', state: fromRecord(state), from };
  } catch (err) {
    if (err instanceof StateVersionError) return { kind: 'newer', version: err.version, problem: err.message };
    return { kind: 'corrupt', problem: `state file ${path} is not usable: ${(err as Error).message}`, movedTo: moveAside(path, now) };
  }
}
