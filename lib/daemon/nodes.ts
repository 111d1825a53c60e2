// Device nodes and directories of an instance: created as root, handed to the owner.
import { chmodSync, chownSync, lstatSync, mkdirSync, readFileSync, readdirSync, rmdirSync, unlinkSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
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

/**
 * The partition nodes of a bound device beside its loopN node: loopNpM for each
 * /dev/ublkbKpM the kernel scanned (losetup -P), as /dev/loopNpM sit beside /dev/loopN,
 * so that `${dev}p1` of a losetup script names the first partition.
 */
export function makePartitionNodes(diskNode: string, ublkId: number, uid: number, gid: number, mode: number): void {
  const disk = `ublkb${ublkId}`;
  let names: string[];
  try {
    names = readdirSync(`/sys/block/${disk}`).filter((n) => new RegExp(`^${disk}p\\d+$`).test(n));
  } catch {
    return;
  }
  for (const name of names) {
    const m = /^(\d+):(\d+)$/.exec(readFileSync(`/sys/block/${disk}/${name}/dev`, 'utf8').trim());
    if (m) makeNode(`${diskNode}${name.slice(disk.length)}`, 'b', Number(m[1]), Number(m[2]), uid, gid, mode);
  }
}

/** Removes loopNpM nodes beside loopN. */
export function removePartitionNodes(diskNode: string): void {
  const base = basename(diskNode);
  let names: string[];
  try {
    names = readdirSync(dirname(diskNode));
  } catch {
    return;
  }
  for (const name of names) if (name.startsWith(`${base}p`) && /^p\d+$/.test(name.slice(base.length))) removeNode(join(dirname(diskNode), name));
}
