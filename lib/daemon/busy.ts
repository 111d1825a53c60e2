// Whether a ublk disk is in use, in two strengths.
//
// ublkDiskBusy looks without touching the device, so it may run on every sweep: holders
// of the disk or a partition (dm, md, bcache...), a mount of the disk or a partition in
// any mount namespace, swap on it, or a descriptor on it in a process other than the
// daemon.
//
// ublkDiskClaimed opens the disk with O_EXCL. That also sees in-kernel claims the looks
// cannot (a lazily unmounted filesystem that is still alive, a mount whose st_dev is not
// the disk's), but while it holds the disk, a `mount` of the disk or a partition fails
// with EBUSY (issue 8). So it is only the final confirmation right before a teardown.
import { closeSync, constants, openSync, readFileSync, readdirSync, readlinkSync, statSync } from 'node:fs';
import { isSystemError } from '../errors.js';
import { makeDev, type DevNum } from '../devnum.js';
import { someProcessHasOpen } from '../open-files.js';

/** The sysfs directories and device numbers of disk ublkbN and of its partitions. */
function diskAndPartitions(id: number, disk: DevNum): { dirs: string[]; numbers: DevNum[] } {
  const base = `/sys/block/ublkb${id}`;
  const dirs = [base];
  const numbers = [disk];
  let names: string[] = [];
  try {
    names = readdirSync(base).filter((n) => n.startsWith(`ublkb${id}p`));
  } catch {
    // no sysfs entry: the disk alone
  }
  for (const name of names) {
    try {
      const m = /^(\d+):(\d+)$/.exec(readFileSync(`${base}/${name}/dev`, 'utf8').trim());
      if (!m) continue;
      dirs.push(`${base}/${name}`);
      numbers.push({ major: Number(m[1]), minor: Number(m[2]) });
    } catch {
      // the partition went away meanwhile
    }
  }
  return { dirs, numbers };
}

function held(dirs: string[]): boolean {
  for (const dir of dirs) {
    try {
      if (readdirSync(`${dir}/holders`).length > 0) return true;
    } catch {
      // no sysfs entry: treat as not held
    }
  }
  return false;
}

/**
 * True when a filesystem on one of the devices ("major:minor") is mounted in any mount
 * namespace: /proc/PID/mountinfo is read once per namespace (namespaces told apart by
 * the inode of /proc/PID/ns/mnt, as readlink shows it: "mnt:[4026531841]").
 */
export function mountedInAnyNamespace(devs: ReadonlySet<string>): boolean {
  let pids: string[];
  try {
    pids = readdirSync('/proc').filter((p) => /^\d+$/.test(p));
  } catch {
    pids = [];
  }
  const seen = new Set<string>();
  for (const pid of ['self', ...pids]) {
    let ns: string;
    let text: string;
    try {
      ns = readlinkSync(`/proc/${pid}/ns/mnt`);
      if (seen.has(ns)) continue;
      text = readFileSync(`/proc/${pid}/mountinfo`, 'utf8');
    } catch {
      continue; // gone meanwhile (or a kernel thread): another process of its namespace will do
    }
    seen.add(ns);
    for (const line of text.split('\n')) {
      // "36 35 98:0 /root /mnt rw,noatime shared:1 - ext4 /dev/ublkb0 rw": field 3 is st_dev
      const dev = line.split(' ', 3)[2];
      if (dev !== undefined && devs.has(dev)) return true;
    }
  }
  return false;
}

/** /proc/swaps escapes space, tab, newline and backslash as octal. */
function unescapeOctal(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
}

/** True when one of the devices (by st_rdev, or by its /dev/ublkbN[pM] name) is used as swap. */
function swapOn(id: number, rdevs: ReadonlySet<bigint>): boolean {
  let text: string;
  try {
    text = readFileSync('/proc/swaps', 'utf8');
  } catch {
    return false;
  }
  const name = new RegExp(`/ublkb${id}(p\\d+)?$`);
  for (const line of text.split('\n').slice(1)) {
    const field = line.split(/\s+/)[0];
    if (!field) continue;
    const path = unescapeOctal(field);
    if (name.test(path)) return true;
    try {
      const st = statSync(path, { bigint: true });
      if (st.isBlockDevice() && rdevs.has(st.rdev)) return true;
    } catch {
      // a path of another mount namespace, or a swap file: the final probe is the backstop
    }
  }
  return false;
}

/**
 * Whether ublkbN is in use, by looking only (never opening it, so never in the way of a
 * user's mount): holders of the disk or a partition, mounted in any mount namespace,
 * swap, or open in a process other than this one.
 */
export function ublkDiskBusy(id: number, major: number, minor: number): boolean {
  const { dirs, numbers } = diskAndPartitions(id, { major, minor });
  if (held(dirs)) return true;
  const rdevs = new Set(numbers.map((n) => makeDev(n)));
  if (swapOn(id, rdevs)) return true;
  if (mountedInAnyNamespace(new Set(numbers.map((n) => `${n.major}:${n.minor}`)))) return true;
  return someProcessHasOpen('block', rdevs, process.pid);
}

/**
 * Whether ublkbN is claimed in the kernel: an exclusive open (O_EXCL) fails with EBUSY.
 * A claim of a partition counts too (the whole disk cannot be claimed then). While this
 * holds the disk, anyone else's exclusive open, a mount among them, fails with EBUSY:
 * call it only right before tearing the device down.
 */
export function ublkDiskClaimed(id: number): boolean {
  try {
    closeSync(openSync(`/dev/ublkb${id}`, constants.O_RDONLY | constants.O_EXCL | constants.O_NONBLOCK));
  } catch (err) {
    if (isSystemError(err) && err.code === 'EBUSY') return true;
  }
  return false;
}
