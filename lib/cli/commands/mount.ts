// ubloop mount / ubloop umount, and mount.ubloop (the helper mount(8) runs for
// `mount -t ubloop IMAGE DIR` and for fstab lines of type ubloop): `mount -o loop` on
// ubloop's devices. The image is attached through the daemon (started when none runs, the
// `default` instance as losetup's), with the mount's autoclear (clearOnUnmount): the
// device goes when its filesystem does, however it is unmounted. The mounting itself is
// mount(8)'s, on /dev/ublkbN, so the filesystem type is detected as mount detects it.
//
// Loop options in -o (util-linux's offset=, sizelimit=, ro; loop[=DEV] is ignored) go to
// the attach, the rest to mount. mount(8) strips offset=, sizelimit= and loop before it
// runs any helper (util-linux marks them "not for helpers"), so for mount.ubloop they are
// spelt ubloop.offset= and ubloop.sizelimit= (accepted by ubloop mount too).
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, realpathSync } from 'node:fs';
import { basename, join, resolve } from 'node:path';
import { DaemonClient } from '../../daemon/client.js';
import { DEFAULT_ROOT, DEFAULT_SOCKET, DEFAULT_STATE, instanceSocket, instancesDir } from '../../daemon/paths.js';
import { checkBindOptions, type BindOptions } from '../../device-options.js';
import { closeImage, openImage, type Image } from '../../image.js';
import type { DeviceEntry } from '../../protocol/results.js';
import { defaultInstance } from '../daemon-options.js';
import { parseLosetupSize } from '../losetup/size.js';
import { bound, codeOf, devices, instanceReady, request, strerror, type Ctx } from './losetup.js';

export class MountUsageError extends Error {}

/** What a mount command line asks for. */
export interface MountRequest {
  image: string;
  dir: string;
  /** -t: the filesystem type (from ubloop.TYPE for the helper), or null to let mount detect it. */
  fsType: string | null;
  /** The device's options. */
  offset: number;
  sizeLimit: number;
  readOnly: boolean;
  /** rw was asked for explicitly: no read-only fallback. */
  readWrite: boolean;
  /** What goes to mount(8)'s -o. */
  mountOptions: string[];
  /** mount(8)'s flags passed through: -s -f -n -v, and -N NS. */
  flags: string[];
  fake: boolean;
  instance: string | null;
}

/** Splits a mount option string at commas outside double quotes (as libmount does). */
export function splitOptions(text: string): string[] {
  const out: string[] = [];
  let cur = '';
  let quoted = false;
  for (const ch of text) {
    if (ch === '"') quoted = !quoted;
    if (ch === ',' && !quoted) {
      if (cur !== '') out.push(cur);
      cur = '';
    } else cur += ch;
  }
  if (cur !== '') out.push(cur);
  return out;
}

function size(name: string, value: string): number {
  const v = parseLosetupSize(value);
  if (v === null || v > BigInt(Number.MAX_SAFE_INTEGER)) throw new MountUsageError(`invalid ${name} value: ${JSON.stringify(value)}`);
  return Number(v);
}

/** Sorts -o options into the device's (offset, sizelimit, ro, instance) and mount's. */
export function sortOptions(list: readonly string[]): Pick<MountRequest, 'offset' | 'sizeLimit' | 'readOnly' | 'readWrite' | 'mountOptions' | 'instance'> {
  const r = { offset: 0, sizeLimit: 0, readOnly: false, readWrite: false, mountOptions: [] as string[], instance: null as string | null };
  for (const opt of list) {
    const eq = opt.indexOf('=');
    const name = eq < 0 ? opt : opt.slice(0, eq);
    const value = eq < 0 ? null : opt.slice(eq + 1);
    const need = (): string => {
      if (value === null || value === '') throw new MountUsageError(`option ${name} needs a value`);
      return value;
    };
    switch (name) {
      case 'offset':
      case 'ubloop.offset':
        r.offset = size('offset', need());
        break;
      case 'sizelimit':
      case 'ubloop.sizelimit':
        r.sizeLimit = size('sizelimit', need());
        break;
      case 'ubloop.instance':
        r.instance = need();
        break;
      case 'loop':
        break; // the device is ubloop's to choose, as with loop= and an existing device
      case 'ro':
        r.readOnly = true;
        r.readWrite = false;
        r.mountOptions.push(opt);
        break;
      case 'rw':
        r.readOnly = false;
        r.readWrite = true;
        r.mountOptions.push(opt);
        break;
      default:
        r.mountOptions.push(opt);
    }
  }
  return r;
}

/** `ubloop mount [-o OPTS]... [-t TYPE] [-r] [-w] [-v] [--instance NAME] IMAGE DIR`. */
export function parseMountArgs(argv: readonly string[]): MountRequest {
  const options: string[] = [];
  const positional: string[] = [];
  const flags: string[] = [];
  let fsType: string | null = null;
  let instance: string | null = null;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i] as string;
    const next = (): string => {
      const v = argv[++i];
      if (v === undefined) throw new MountUsageError(`option ${a} needs a value`);
      return v;
    };
    if (a === '-o' || a === '--options') options.push(...splitOptions(next()));
    else if (a.startsWith('-o') && a.length > 2) options.push(...splitOptions(a.slice(2)));
    else if (a.startsWith('--options=')) options.push(...splitOptions(a.slice(10)));
    else if (a === '-t' || a === '--types') fsType = next();
    else if (a.startsWith('--types=')) fsType = a.slice(8);
    else if (a === '-r' || a === '--read-only') options.push('ro');
    else if (a === '-w' || a === '--rw' || a === '--read-write') options.push('rw');
    else if (a === '-v' || a === '--verbose') flags.push('-v');
    else if (a === '--instance') instance = next();
    else if (a.startsWith('--instance=')) instance = a.slice(11);
    else if (a === '--') positional.push(...argv.slice(i + 1)), (i = argv.length);
    else if (a.startsWith('-') && a !== '-') throw new MountUsageError(`unknown option ${a}`);
    else positional.push(a);
  }
  return finish(positional, options, fsType, flags, instance);
}

/**
 * mount(8)'s helper convention (mount(8), "External helpers"):
 * `mount.ubloop SPEC DIR [-sfnv] [-N NAMESPACE] [-o OPTIONS] [-t ubloop.SUBTYPE]`;
 * SUBTYPE, when given, is the filesystem type to mount.
 */
export function parseHelperArgs(argv: readonly string[]): MountRequest {
  const options: string[] = [];
  const positional: string[] = [];
  const flags: string[] = [];
  let fsType: string | null = null;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i] as string;
    const next = (): string => {
      const v = argv[++i];
      if (v === undefined) throw new MountUsageError(`option ${a} needs a value`);
      return v;
    };
    if (a === '-o') options.push(...splitOptions(next()));
    else if (a === '-t') {
      const t = next();
      const dot = t.indexOf('.');
      fsType = dot < 0 ? null : t.slice(dot + 1) || null;
    } else if (a === '-N') flags.push('-N', next());
    else if (/^-[sfnv]+$/.test(a)) for (const c of a.slice(1)) flags.push(`-${c}`);
    else if (a.startsWith('-')) throw new MountUsageError(`unknown option ${a}`);
    else positional.push(a);
  }
  return finish(positional, options, fsType, flags, null);
}

function finish(positional: string[], options: string[], fsType: string | null, flags: string[], instance: string | null): MountRequest {
  if (positional.length !== 2) throw new MountUsageError('expected an image file and a directory');
  if (fsType === 'ubloop' || fsType?.startsWith('ubloop.')) fsType = fsType === 'ubloop' ? null : fsType.slice(7);
  const sorted = sortOptions(options);
  return {
    image: positional[0] as string,
    dir: positional[1] as string,
    fsType,
    ...sorted,
    flags: flags.filter((f) => f !== '-f'),
    fake: flags.includes('-f'),
    instance: instance ?? sorted.instance,
  };
}

/** mount(8) from util-linux; `-i`-free, so a filesystem's own helper (mount.ntfs, ...) still runs. */
function runMount(args: string[]): number {
  const r = spawnSync('mount', args, { stdio: 'inherit', env: { ...process.env, PATH: `${process.env['PATH'] ?? ''}:/usr/sbin:/sbin:/usr/bin:/bin` } });
  if (r.error) {
    process.stderr.write(`ubloop: cannot run mount(8): ${r.error.message}\n`);
    return 32;
  }
  return r.status ?? 32;
}

function sameBacking(d: DeviceEntry, image: Image): boolean {
  return d.backing !== null && d.backing.dev === image.dev && d.backing.ino === image.ino;
}

/**
 * The device to mount: one already bound to the same file and offset (and size limit),
 * as libmount reuses a loop device; else a new one with the mount's autoclear. An
 * overlapping device with another range is refused, and a read-only one for a
 * read-write mount (EROFS), as libmount does.
 */
async function attach(ctx: Ctx, m: MountRequest): Promise<{ dev: string; client: DaemonClient | null; index: number | null } | number> {
  const fail = (what: string, code = 32): number => {
    process.stderr.write(`${ctx.prog}: ${m.dir}: ${what}\n`);
    return code;
  };
  let options: BindOptions;
  try {
    options = checkBindOptions({ offset: m.offset, sizeLimit: m.sizeLimit, readOnly: m.readOnly, autoclear: false, clearOnUnmount: true });
  } catch (err) {
    return fail(err instanceof Error ? err.message : String(err));
  }
  let image: Image;
  let readOnly = options.readOnly;
  try {
    try {
      image = openImage(m.image, options);
    } catch (err) {
      // like libmount: a file it may only read gets a read-only device (and mount says so)
      if (options.readOnly || m.readWrite || (codeOf(err) !== 'EACCES' && codeOf(err) !== 'EROFS')) throw err;
      image = openImage(m.image, { ...options, readOnly: true });
      readOnly = true;
    }
  } catch (err) {
    return fail(`failed to setup loop device for ${m.image}: ${err instanceof Error ? err.message : String(err)}`);
  }
  try {
    let sock: string;
    try {
      sock = await instanceReady(ctx);
    } catch (err) {
      return fail(`failed to setup loop device for ${m.image}: ${err instanceof Error ? err.message : String(err)}`);
    }
    const end = (o: number, limit: number) => (limit > 0 ? o + limit : image.size);
    for (const d of bound(await devices(ctx))) {
      // one on its way out (detach pending, unbinding) is neither reused nor in the way
      if (!sameBacking(d, image) || !d.options || d.ublkPath === null || d.state !== 'bound' || d.detachPending) continue;
      if (d.options.offset === options.offset && d.options.sizeLimit === options.sizeLimit) {
        if (d.options.readOnly && !readOnly) {
          return fail(`${m.image} is already set up read-only (${d.ublkPath}); mount it with -o ro`);
        }
        return { dev: d.ublkPath, client: null, index: null };
      }
      if (d.options.offset < end(options.offset, options.sizeLimit) && options.offset < end(d.options.offset, d.options.sizeLimit)) {
        return fail(`overlapping loop device exists for ${m.image}`);
      }
    }
    // The connection stays open until mount(8) is done: the daemon arms the autoclear
    // only once the mounting client has gone, by which time the filesystem claims the disk.
    const client = DaemonClient.connect(sock);
    try {
      const reply = await client.request({ op: 'bind', ...options, readOnly }, [image.fd]);
      const device = reply['device'] as DeviceEntry;
      return { dev: device.ublkPath as string, client, index: device.index };
    } catch (err) {
      client.close();
      return fail(`failed to setup loop device for ${m.image}: ${strerror(err)}${err instanceof Error && err.message !== strerror(err) ? ` (${err.message})` : ''}`);
    }
  } finally {
    closeImage(image);
  }
}

async function mountWith(ctx: Ctx, m: MountRequest): Promise<number> {
  if (m.fake) return 0;
  const got = await attach(ctx, m);
  if (typeof got === 'number') return got;
  const args = [...m.flags, ...(m.fsType ? ['-t', m.fsType] : []), ...(m.mountOptions.length ? ['-o', m.mountOptions.join(',')] : []), got.dev, m.dir];
  const status = runMount(args);
  if (got.client) {
    if (status !== 0 && got.index !== null) {
      // nothing mounted it: let it go now rather than at the next autoclear poll
      await got.client.request({ op: 'unbind', index: got.index, busy: 'defer' }).catch(() => undefined);
    }
    got.client.close();
  }
  return status;
}

function context(prog: string, instance: string | null): Ctx {
  return {
    prog,
    socket: process.env['UBLOOP_SOCKET'] ?? DEFAULT_SOCKET,
    root: process.env['UBLOOP_ROOT'] ?? DEFAULT_ROOT,
    state: process.env['UBLOOP_STATE'] ?? DEFAULT_STATE,
    instance: instance ?? defaultInstance(),
    warn: (line) => process.stderr.write(`${prog}: ${line}\n`),
    why: () => undefined,
  };
}

const MOUNT_USAGE = `Usage:
 ubloop mount [-o OPTIONS] [-t TYPE] [-r] [--instance NAME] IMAGE DIR
 ubloop umount [-l] [-f] DIR

Attach IMAGE as a ubloop device and mount it on DIR, like mount -o loop; the device is
released when the filesystem is unmounted (autoclear). Loop options in -o: offset=,
sizelimit= (also ubloop.offset=, ubloop.sizelimit=), ro; loop[=DEV] is ignored; the rest
go to mount(8). A device already attached to IMAGE at the same offset is reused.
ubloop umount unmounts DIR (umount(8)) and detaches its device (umount -d).
`;

/** `ubloop mount ...`; resolves to the exit status (mount(8)'s own on its failures). */
export async function mountMain(argv: readonly string[]): Promise<number> {
  if (argv.includes('-h') || argv.includes('--help')) {
    process.stdout.write(MOUNT_USAGE);
    return 0;
  }
  let m: MountRequest;
  try {
    m = parseMountArgs(argv);
  } catch (err) {
    if (!(err instanceof MountUsageError)) throw err;
    process.stderr.write(`ubloop mount: ${err.message}\n${MOUNT_USAGE}`);
    return 1;
  }
  return mountWith(context('ubloop mount', m.instance), m);
}

/** mount.ubloop, as mount(8) runs it. */
export async function mountHelperMain(argv: readonly string[]): Promise<number> {
  let m: MountRequest;
  try {
    m = parseHelperArgs(argv);
  } catch (err) {
    if (!(err instanceof MountUsageError)) throw err;
    process.stderr.write(`mount.ubloop: ${err.message}\nUsage: mount.ubloop IMAGE DIR [-sfnv] [-N NAMESPACE] [-o OPTIONS] [-t ubloop.FSTYPE]\n`);
    return 1;
  }
  return mountWith(context(basename(process.argv[1] ?? 'mount.ubloop').replace(/\.js$/, ''), m.instance), m);
}

/** Unescapes mountinfo's octal escapes (\040 for a space). */
function unescape(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
}

/** The device numbers of what is mounted on dir (the topmost mount), or null. */
export function mountedOn(mountinfo: string, dir: string): string | null {
  let found: string | null = null;
  for (const line of mountinfo.split('\n')) {
    const f = line.split(' ');
    if (f.length > 4 && unescape(f[4] as string) === dir) found = f[2] as string;
  }
  return found;
}

/** The instance and index of the bound device whose disk has these numbers. */
async function bindingOf(ctx: Ctx, majMin: string): Promise<{ instance: string; index: number; entry: DeviceEntry } | null> {
  let names: string[] = [];
  try {
    names = readdirSync(instancesDir(ctx.root)).filter((n) => existsSync(instanceSocket(ctx.root, n)));
  } catch {
    return null;
  }
  for (const instance of names) {
    const list = bound(await devices({ ...ctx, instance }));
    for (const d of list) {
      if (d.ublkId === null) continue;
      try {
        if (readFileSync(`/sys/block/ublkb${d.ublkId}/dev`, 'utf8').trim() === majMin) return { instance, index: d.index, entry: d };
      } catch {
        // gone meanwhile
      }
    }
  }
  return null;
}

/** `ubloop umount [umount(8) flags] DIR`: umount(8), then the device is detached (umount -d). */
export async function umountMain(argv: readonly string[]): Promise<number> {
  if (argv.includes('-h') || argv.includes('--help')) {
    process.stdout.write(MOUNT_USAGE);
    return 0;
  }
  const dirArg = argv.filter((a) => !a.startsWith('-')).at(-1);
  if (dirArg === undefined) {
    process.stderr.write(`ubloop umount: expected a directory\n${MOUNT_USAGE}`);
    return 1;
  }
  let dir = resolve(dirArg);
  try {
    dir = realpathSync(dir);
  } catch {
    // as typed
  }
  const ctx = context('ubloop umount', null);
  let majMin: string | null = null;
  try {
    majMin = mountedOn(readFileSync('/proc/self/mountinfo', 'utf8'), dir);
  } catch {
    // umount(8) says what is wrong
  }
  const r = spawnSync('umount', [...argv], { stdio: 'inherit', env: { ...process.env, PATH: `${process.env['PATH'] ?? ''}:/usr/sbin:/sbin:/usr/bin:/bin` } });
  const status = r.error ? 32 : (r.status ?? 32);
  if (status !== 0 || majMin === null) return status;
  const b = await bindingOf(ctx, majMin).catch(() => null);
  if (!b) return 0;
  if (b.entry.options?.clearOnUnmount) {
    // a device a mount set up goes by itself (its autoclear sees every way of unmounting):
    // wait a little for it, so that the image is free when this returns (not after umount -l
    // while files in it are open: then it goes when they are closed)
    const end = Date.now() + 3000;
    while (Date.now() < end) {
      const still = bound(await devices({ ...ctx, instance: b.instance })).some((d) => d.index === b.index && d.ublkId === b.entry.ublkId);
      if (!still) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    return 0;
  }
  try {
    await request(join(ctx.root, 'instances', b.instance, 'control.sock'), { op: 'unbind', index: b.index, busy: 'defer' });
  } catch (err) {
    process.stderr.write(`ubloop umount: ${dir}: cannot detach ${b.entry.ublkPath ?? ''}: ${strerror(err)}\n`);
    return 1;
  }
  return 0;
}
