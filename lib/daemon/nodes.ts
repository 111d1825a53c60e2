// Device nodes and directories of an instance: created as root, handed to the owner.
import { chmodSync, chownSync, lstatSync, mkdirSync, rmdirSync, unlinkSync } from 'node:fs';
import { UbloopError, isSystemError } from '../errors.js';
import { native } from '../native.js';

/** Creates a block or char node with the given owner and mode, replacing a stale one. */
export function makeNode(path: string, type: 'b' | 'c', major: number, minor: number, uid: number, gid: number, mode: number): void {
  removeNode(path);
  // mknod(2) from the addon: one syscall, no child process blocking the daemon. Throws
  // Error{code, errno, syscall: 'mknod', path}.
  native().mknod(path, mode & 0o777, type, major, minor);
  chownSync(path, uid, gid);
  chmodSync(path, mode & 0o777);
}

/** Removes a node (or socket) if present. */
export function removeNode(path: string): void {
  try {
    unlinkSync(path);
  } catch (err) {
    if (!(isSystemError(err) && err.code === 'ENOENT')) throw err;
  }
}

/** The instance directory: root-owned so the owner cannot swap nodes, readable by all. */
export function makeInstanceDir(dir: string): void {
  mkdirSync(dir, { recursive: true, mode: 0o755 });
  const st = lstatSync(dir);
  if (!st.isDirectory() || st.isSymbolicLink()) throw new UbloopError('ENOTDIR', `${dir} is not a directory`);
  chownSync(dir, 0, 0);
  chmodSync(dir, 0o755);
}

export function removeInstanceDir(dir: string): void {
  try {
    rmdirSync(dir);
  } catch (err) {
    if (!(isSystemError(err) && err.code === 'ENOENT')) throw err;
  }
}
