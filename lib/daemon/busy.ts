// Whether a ublk disk is in use, in two strengths.
//
// ublkDiskBusy looks without touching the device, so it may run on every sweep: holders
// of the disk or a partition (dm, md, bcache...), swap on it, a mount of the disk or a
// partition in any mount namespace, or a descriptor on it in a process other than the
// daemon. The cheap looks (sysfs holders, /proc/swaps, the daemon's own mountinfo) come
// first; the passes over /proc (the mountinfo of every other namespace, every
// process's descriptors) only when those found nothing. The passes are asynchronous, so
// the daemon's JS thread keeps answering requests meanwhile, and shared: every check
// that starts while a pass is running (the sweep looks at all its devices at once)
// uses that pass instead of making its own. (Opening the disk, even with O_EXCL, would
// be cheaper, but gets in the way of a user's mount: issue 8.)
//
// ublkDiskClaimed opens the disk with O_EXCL. That also sees in-kernel claims the looks
// cannot (a lazily unmounted filesystem that is still alive, a mount whose st_dev is not
// the disk's), but while it holds the disk, a `mount` of the disk or a partition fails
// with EBUSY (issue 8). So it is only the final confirmation right before a teardown.
import { closeSync, constants, openSync } from 'node:fs';
import { readFile, readdir, readlink, stat } from 'node:fs/promises';
import { isSystemError } from '../errors.js';
import { makeDev, type DevNum } from '../devnum.js';

/** How many processes a pass over /proc reads at once (keeps libuv's pool free for others). */
const PASS_WIDTH = 8;

/** The sysfs directories and device numbers of disk ublkbN and of its partitions. */
async function diskAndPartitions(id: number, disk: DevNum): Promise<{ dirs: string[]; numbers: DevNum[] }> {
  const base = `/sys/block/ublkb${id}`;
  const dirs = [base];
  const numbers = [disk];
  let names: string[] = [];
  try {
    names = (await readdir(base)).filter((n) => n.startsWith(`ublkb${id}p`));
  } catch {
    // no sysfs entry: the disk alone
  }
  for (const name of names) {
    try {
      const m = /^(\d+):(\d+)$/.exec((await readFile(`${base}/${name}/dev`, 'utf8')).trim());
      if (!m) continue;
      dirs.push(`${base}/${name}`);
      numbers.push({ major: Number(m[1]), minor: Number(m[2]) });
    } catch {
      // the partition went away meanwhile
    }
  }
  return { dirs, numbers };
}

async function held(dirs: string[]): Promise<boolean> {
  for (const dir of dirs) {
    try {
      if ((await readdir(`${dir}/holders`)).length > 0) return true;
    } catch {
      // no sysfs entry: treat as not held
    }
  }
  return false;
}

/** /proc/swaps escapes space, tab, newline and backslash as octal. */
function unescapeOctal(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
}

/** True when one of the devices (by st_rdev, or by its /dev/ublkbN[pM] name) is used as swap. */
async function swapOn(id: number, rdevs: ReadonlySet<bigint>): Promise<boolean> {
  let text: string;
  try {
    text = await readFile('/proc/swaps', 'utf8');
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
      const st = await stat(path, { bigint: true });
      if (st.isBlockDevice() && rdevs.has(st.rdev)) return true;
    } catch {
      // a path of another mount namespace, or a swap file: the final probe is the backstop
    }
  }
  return false;
}

/** The st_dev ("major:minor", field 3) of every mount in a mountinfo text. */
function mountedDevs(text: string, into: Set<string>): void {
  for (const line of text.split('\n')) {
    // "36 35 98:0 /root /mnt rw,noatime shared:1 - ext4 /dev/ublkb0 rw"
    const dev = line.split(' ', 3)[2];
    if (dev !== undefined) into.add(dev);
  }
}

/** The numeric entries of /proc (every process), or none. */
async function pids(): Promise<string[]> {
  try {
    return (await readdir('/proc')).filter((p) => /^\d+$/.test(p));
  } catch {
    return [];
  }
}

/** Runs `each` over the items, at most `width` at a time. */
async function pool<T>(items: T[], width: number, each: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) await each(items[next++] as T);
  };
  await Promise.all(Array.from({ length: Math.min(width, items.length) }, worker));
}

/**
 * Every mount's st_dev in every mount namespace: /proc/PID/mountinfo is read once per
 * namespace (namespaces told apart by the inode of /proc/PID/ns/mnt, as readlink shows
 * it: "mnt:[4026531841]").
 */
async function mountsEverywhere(): Promise<Set<string>> {
  passes.mounts++;
  const devs = new Set<string>();
  const seen = new Set<string>();
  try {
    seen.add(await readlink('/proc/self/ns/mnt'));
  } catch {
    // then this namespace is read once more below: harmless
  }
  await pool(await pids(), PASS_WIDTH, async (pid) => {
    try {
      const ns = await readlink(`/proc/${pid}/ns/mnt`);
      if (seen.has(ns)) return;
      seen.add(ns);
      mountedDevs(await readFile(`/proc/${pid}/mountinfo`, 'utf8'), devs);
    } catch {
      // gone meanwhile (or a kernel thread): another process of its namespace will do
    }
  });
  return devs;
}

/** The st_rdev of every block device some process other than this one has open. */
async function openBlockDevices(): Promise<Set<bigint>> {
  passes.opens++;
  const rdevs = new Set<bigint>();
  const others = (await pids()).filter((p) => Number(p) !== process.pid);
  await pool(others, PASS_WIDTH, async (pid) => {
    let fds: string[];
    try {
      fds = await readdir(`/proc/${pid}/fd`);
    } catch {
      return; // gone, or a kernel thread
    }
    for (const fd of fds) {
      try {
        const st = await stat(`/proc/${pid}/fd/${fd}`, { bigint: true });
        if (st.isBlockDevice()) rdevs.add(st.rdev);
      } catch {
        // closed meanwhile
      }
    }
  });
  return rdevs;
}

/** Runs a pass, or joins the one already running. */
function shared<T>(pass: () => Promise<T>): () => Promise<T> {
  let running: Promise<T> | null = null;
  return () => {
    running ??= pass().finally(() => {
      running = null;
    });
    return running;
  };
}

/** Counts of the passes over /proc so far (for tests and measurements). */
export const passes = { mounts: 0, opens: 0 };

const mountPass = shared(mountsEverywhere);
const openPass = shared(openBlockDevices);

/**
 * Whether ublkbN is in use, by looking only (never opening it, so never in the way of a
 * user's mount): holders of the disk or a partition, swap, mounted in any mount
 * namespace, or open in a process other than this one.
 */
export async function ublkDiskBusy(id: number, major: number, minor: number): Promise<boolean> {
  const { dirs, numbers } = await diskAndPartitions(id, { major, minor });
  if (await held(dirs)) return true;
  const rdevs = new Set(numbers.map((n) => makeDev(n)));
  if (await swapOn(id, rdevs)) return true;
  const devs = numbers.map((n) => `${n.major}:${n.minor}`);
  const here = new Set<string>();
  try {
    mountedDevs(await readFile('/proc/self/mountinfo', 'utf8'), here);
  } catch {
    // no procfs: the passes below find nothing either
  }
  if (devs.some((d) => here.has(d))) return true;
  const mounted = await mountPass();
  if (devs.some((d) => mounted.has(d))) return true;
  const open = await openPass();
  return [...rdevs].some((r) => open.has(r));
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
