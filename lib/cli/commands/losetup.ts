// ubloop losetup (also the `ubloop-losetup` bin): util-linux losetup's command line on
// ubloop's daemon. The parsing and the output are pure modules (../losetup/); this file
// only talks to the daemon: the instance's socket for its devices, the admin socket to
// create the default instance, and it starts a daemon in the background when none runs.
//
// Device names: a device is named by its instance node, …/instances/NAME/loopN (what
// `ubloop attach` prints): a block device node any tool takes (mkfs, mount, dd), the
// same for root and for an instance's owner, stable across daemon restarts, and it
// addresses exactly one instance. /dev/ublkbN is accepted wherever a device is named.
import { spawn } from 'node:child_process';
import { existsSync, readFileSync, realpathSync, statSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DaemonClient } from '../../daemon/client.js';
import { DEFAULT_ROOT, DEFAULT_SOCKET, DEFAULT_STATE, instanceSocket, loopNode } from '../../daemon/paths.js';
import { checkBindOptions } from '../../device-options.js';
import { closeImage, openImage, type Image } from '../../image.js';
import type { DeviceEntry } from '../../protocol/results.js';
import { defaultInstance } from '../daemon-options.js';
import { COLUMNS } from '../losetup/columns.js';
import { formatTable, plainLine, type LoopRecord } from '../losetup/format.js';
import { LosetupError, parseLosetupArgs, type LosetupCommand, type OutputOptions, type SetupOptions } from '../losetup/parse.js';

/** strerror(3)'s words for the errors losetup reports. */
const STRERROR: Readonly<Record<string, string>> = {
  EPERM: 'Operation not permitted', ENOENT: 'No such file or directory', EIO: 'Input/output error', ENXIO: 'No such device or address',
  EBADF: 'Bad file descriptor', EAGAIN: 'Resource temporarily unavailable', ENOMEM: 'Cannot allocate memory', EACCES: 'Permission denied',
  EBUSY: 'Device or resource busy', EEXIST: 'File exists', ENODEV: 'No such device', ENOTDIR: 'Not a directory', EISDIR: 'Is a directory',
  EINVAL: 'Invalid argument', ENOSPC: 'No space left on device', EROFS: 'Read-only file system', EFBIG: 'File too large',
  ENOTTY: 'Inappropriate ioctl for device', EOPNOTSUPP: 'Operation not supported', ENOTSUP: 'Operation not supported', ELOOP: 'Too many levels of symbolic links',
  ECONNREFUSED: 'Connection refused', ETIMEDOUT: 'Connection timed out', EOVERFLOW: 'Value too large for defined data type',
};

export function strerror(err: unknown): string {
  const code = (err as { code?: unknown }).code;
  if (typeof code === 'string' && STRERROR[code]) return STRERROR[code] as string;
  return err instanceof Error ? err.message : String(err);
}

export function codeOf(err: unknown): string | undefined {
  const code = (err as { code?: unknown }).code;
  return typeof code === 'string' ? code : undefined;
}

export interface Ctx {
  prog: string;
  socket: string;
  root: string;
  state: string;
  instance: string;
  /** Lines for stderr: "PROG: " is added. */
  warn(line: string): void;
  /** ubloop's own explanation of a failure (why, beyond strerror), only with $UBLOOP_VERBOSE or when it adds a reason. */
  why(err: unknown): void;
}

export function request(socket: string, message: Record<string, unknown>, fds: number[] = []): Promise<Record<string, unknown>> {
  const client = DaemonClient.connect(socket);
  return client.request(message, fds).finally(() => client.close());
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** contrib/ubloop.socket: connecting to it makes systemd start ubloop.service. */
export const ACTIVATION_SOCKET = '/run/ubloop-activate.sock';

async function waitForSocket(path: string, gone: () => boolean): Promise<void> {
  const end = Date.now() + 120_000;
  while (!existsSync(path)) {
    if (gone() || Date.now() > end) throw new Error('the ubloop daemon did not start (run "ubloop daemon" by hand to see why)');
    await sleep(50);
  }
}

/**
 * Starts the daemon: through systemd's ubloop.socket when it is installed (and the
 * default socket is used), else `ubloop daemon` in the background. Says so on stderr.
 */
async function startDaemon(ctx: Ctx): Promise<void> {
  if (ctx.socket === DEFAULT_SOCKET && existsSync(ACTIVATION_SOCKET)) {
    const { connect } = await import('node:net');
    const conn = connect(ACTIVATION_SOCKET);
    const failed = await new Promise<boolean>((done) => {
      conn.once('connect', () => done(false));
      conn.once('error', () => done(true));
    });
    if (!failed) {
      process.stderr.write(`${ctx.prog}: no ubloop daemon was running: started ubloop.service through ${ACTIVATION_SOCKET}\n`);
      try {
        await waitForSocket(ctx.socket, () => false);
      } finally {
        conn.destroy();
      }
      return;
    }
  }
  const cli = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', '..', 'bin', 'ubloop.js');
  const child = spawn(process.execPath, [cli, 'daemon', '--socket', ctx.socket, '--root', ctx.root, '--state', ctx.state], {
    detached: true,
    stdio: 'ignore',
  });
  child.unref();
  process.stderr.write(`${ctx.prog}: no ubloop daemon was running: started one (pid ${child.pid ?? '?'}, socket ${ctx.socket})\n`);
  let exited = false;
  child.once('exit', () => (exited = true));
  await waitForSocket(ctx.socket, () => exited);
}

/** Whether a daemon answers at the admin socket (a socket file left by a dead one does not). */
async function daemonUp(ctx: Ctx): Promise<boolean> {
  if (!existsSync(ctx.socket)) return false;
  try {
    await request(ctx.socket, { op: 'ping' });
    return true;
  } catch (err) {
    if (codeOf(err) === 'ECONNREFUSED' || codeOf(err) === 'ENOENT') return false;
    throw err;
  }
}

/**
 * The instance's socket, for a command that sets a device up. As root: starts the
 * daemon when none answers, and creates the `default` instance when it is missing.
 * Throws (ENOENT, with what to do) when the instance is not there.
 */
export async function instanceReady(ctx: Ctx): Promise<string> {
  const sock = instanceSocket(ctx.root, ctx.instance);
  const root = process.getuid?.() === 0;
  if (root && !(await daemonUp(ctx))) await startDaemon(ctx);
  if (existsSync(sock)) return sock;
  if (root && ctx.instance === 'default') {
    try {
      await request(ctx.socket, { op: 'instance.create', name: 'default' });
    } catch (err) {
      if (codeOf(err) !== 'EEXIST') throw err;
    }
    return sock;
  }
  const why = root
    ? `create it first: ubloop instance create ${ctx.instance}`
    : `ask root to create it for you (ubloop instance create ${ctx.instance} --owner UID:GID), and the daemon to run`;
  throw Object.assign(new Error(`ubloop has no instance ${ctx.instance} (no ${sock}): ${why}`), { code: 'ENOENT' });
}

/** The instance's devices; none when there is no daemon or no such instance (util-linux shows nothing without loop devices). */
export async function devices(ctx: Ctx): Promise<DeviceEntry[]> {
  const sock = instanceSocket(ctx.root, ctx.instance);
  if (!existsSync(sock)) return [];
  const reply = await request(sock, { op: 'list' });
  return reply['devices'] as DeviceEntry[];
}

export function bound(list: DeviceEntry[]): DeviceEntry[] {
  return list.filter((d) => d.backing !== null && (d.state === 'bound' || d.state === 'unbinding')).sort((a, b) => a.index - b.index);
}

export function nodeName(ctx: Ctx, index: number): string {
  return loopNode(dirname(instanceSocket(ctx.root, ctx.instance)), index);
}

function record(ctx: Ctx, d: DeviceEntry): LoopRecord {
  let dev: LoopRecord['dev'] = null;
  if (d.ublkId !== null) {
    try {
      const [major, minor] = readFileSync(`/sys/block/ublkb${d.ublkId}/dev`, 'utf8').trim().split(':').map(Number);
      if (major !== undefined && minor !== undefined) dev = { major, minor };
    } catch {
      // the disk is gone meanwhile
    }
  }
  const o = d.options;
  return {
    name: nodeName(ctx, d.index),
    // A lazy detach waiting for the last user shows as autoclear, as the kernel's does;
    // so does a device set up by a mount (ubloop mount, mount.ubloop), as mount -o loop's.
    autoclear: (o?.autoclear ?? false) || (o?.clearOnUnmount ?? false) || d.detachPending,
    // As the kernel's loop shows an unlinked backing file (d_path): "PATH (deleted)".
    backFile: d.backing ? `${d.backing.path}${d.backing.deleted ? ' (deleted)' : ''}` : null,
    backIno: d.backing?.ino ?? null,
    backDev: d.backing?.dev ?? null,
    dev,
    offset: o?.offset ?? 0,
    sizeLimit: o?.sizeLimit ?? 0,
    partscan: d.partscan ?? false,
    readOnly: o?.readOnly ?? false,
    directIo: o?.directIo ?? false,
    logicalSectorSize: o?.blockSize ?? 512,
    ref: null,
  };
}

/** Which index of the instance a device argument names: …/instances/NAME/loopN, loopN, or /dev/ublkbN. */
async function indexOf(ctx: Ctx, device: string): Promise<number> {
  const path = resolve(device);
  const m = /\/instances\/([^/]+)\/loop(\d+)$/.exec(path);
  if (m?.[1] && m[2]) {
    if (m[1] !== ctx.instance) ctx.instance = m[1];
    return Number(m[2]);
  }
  const ublk = /^\/dev\/ublkb(\d+)$/.exec(path);
  if (ublk?.[1]) {
    const found = (await devices(ctx)).find((d) => d.ublkId === Number(ublk[1]));
    if (found) return found.index;
    throw Object.assign(new Error(`${device} is not a device of instance ${ctx.instance}`), { code: 'ENXIO' });
  }
  throw Object.assign(new Error(`${device} is not a device of ubloop (…/instances/NAME/loopN or /dev/ublkbN)`), { code: existsSync(path) ? 'ENOTTY' : 'ENOENT' });
}

function toNumber(v: bigint | null, what: string): number | undefined {
  if (v === null) return undefined;
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw Object.assign(new Error(`${what} ${v} is too large`), { code: 'EINVAL' });
  return Number(v);
}

/** Same file (st_dev and st_ino, or the canonical path) as losetup's loopcxt_is_used. */
function sameFile(d: DeviceEntry, file: string): boolean {
  if (!d.backing) return false;
  try {
    const st = statSync(file);
    if (st.dev === d.backing.dev && st.ino === d.backing.ino) return true;
  } catch {
    // compare by name
  }
  let canon = resolve(file);
  try {
    canon = realpathSync(file);
  } catch {
    // as typed
  }
  return d.backing.path === file || d.backing.path === canon;
}

async function create(ctx: Ctx, cmd: { device: string | null; file: string; show: boolean; setup: SetupOptions }): Promise<number> {
  const s = cmd.setup;
  let options;
  let image: Image;
  let readOnly = s.readOnly;
  const fail = (err: unknown, who = cmd.file): number => {
    ctx.warn(`${who}: failed to set up loop device: ${strerror(err)}`);
    ctx.why(err);
    return 1;
  };
  try {
    const offset = toNumber(s.offset, 'offset');
    const sizeLimit = toNumber(s.sizeLimit, 'size limit');
    const blockSize = toNumber(s.sectorSize, 'sector size');
    // The one check of the device options (device-options.ts), as the bind request does it.
    options = checkBindOptions({
      offset, sizeLimit, blockSize, readOnly: s.readOnly, directIo: s.directIo ?? false, autoclear: false,
      ...(s.partscan ? { partscan: true } : {}),
    });
  } catch (err) {
    return fail(err);
  }
  // Opened here with the caller's rights; like losetup, read-only when it may only read it.
  try {
    try {
      image = openImage(cmd.file, options);
    } catch (err) {
      if (options.readOnly || (codeOf(err) !== 'EACCES' && codeOf(err) !== 'EROFS')) throw err;
      image = openImage(cmd.file, { ...options, readOnly: true });
      readOnly = true;
    }
  } catch (err) {
    return fail(err);
  }
  try {
    // A named device first: its path names its instance (…/instances/NAME/loopN).
    let index: number | undefined;
    if (cmd.device !== null) {
      try {
        index = await indexOf(ctx, cmd.device);
      } catch (err) {
        ctx.warn(`${cmd.device}: failed to use device: ${strerror(err)}`);
        return 1;
      }
    }
    let sock: string;
    try {
      sock = await instanceReady(ctx);
    } catch (err) {
      ctx.warn(`${cmd.file}: failed to set up loop device: ${strerror(err)}`);
      ctx.warn(err instanceof Error ? err.message : String(err));
      return 1;
    }
    if (s.noOverlap) {
      const end = (o: number, limit: number, size: number) => (limit > 0 ? o + limit : size);
      for (const d of bound(await devices(ctx))) {
        if (!d.backing || d.backing.dev !== image.dev || d.backing.ino !== image.ino || !d.options) continue;
        const same = d.options.offset === options.offset && d.options.sizeLimit === options.sizeLimit;
        if (same && index === undefined) {
          if (d.options.readOnly && !readOnly) {
            ctx.warn(`${cmd.file}: overlapping read-only loop device exists`);
            return 1;
          }
          if (cmd.show) process.stdout.write(`${nodeName(ctx, d.index)}\n`);
          return 0;
        }
        const a0 = d.options.offset;
        const a1 = end(a0, d.options.sizeLimit, image.size);
        const b0 = options.offset;
        const b1 = end(b0, options.sizeLimit, image.size);
        if (a0 < b1 && b0 < a1) {
          ctx.warn(`${cmd.file}: overlapping loop device exists`);
          return 1;
        }
      }
    }
    if (index !== undefined) {
      try {
        await request(sock, { op: 'loop.add', index });
      } catch (err) {
        if (codeOf(err) !== 'EEXIST') return fail(err);
      }
    }
    let reply;
    try {
      reply = await request(sock, { op: 'bind', ...(index === undefined ? {} : { index }), ...options, readOnly }, [image.fd]);
    } catch (err) {
      return fail(err);
    }
    const device = reply['device'] as DeviceEntry;
    if (cmd.show) process.stdout.write(`${nodeName(ctx, device.index)}\n`);
    return 0;
  } finally {
    closeImage(image);
  }
}

async function show(ctx: Ctx, file: string | null, offset: bigint | null, out: OutputOptions): Promise<number> {
  let list = bound(await devices(ctx));
  if (file !== null) list = list.filter((d) => sameFile(d, file) && (offset === null || BigInt(d.options?.offset ?? 0) === offset));
  const records = list.map((d) => record(ctx, d));
  if (out.list) process.stdout.write(formatTable(records, out));
  else process.stdout.write(records.map(plainLine).join(''));
  return 0;
}

async function showOne(ctx: Ctx, device: string, out: OutputOptions): Promise<number> {
  let index: number;
  try {
    index = await useDevice(ctx, device);
  } catch (err) {
    ctx.warn(`${device}: failed to use device: ${strerror(err)}`);
    return 1;
  }
  const found = bound(await devices(ctx)).find((d) => d.index === index);
  if (!found) {
    ctx.warn(`${device}: ${strerror({ code: 'ENXIO' })}`);
    return 1;
  }
  const r = record(ctx, found);
  process.stdout.write(out.list ? formatTable([r], out) : plainLine(r));
  return 0;
}

/**
 * The index a device argument names, if the instance has it (util-linux 2.38's
 * is_loopdev + loopcxt_set_device); throws ENODEV ("No such device") otherwise.
 */
async function useDevice(ctx: Ctx, device: string): Promise<number> {
  let index: number;
  try {
    index = await indexOf(ctx, device);
  } catch {
    throw Object.assign(new Error(`${device} is not a device of instance ${ctx.instance}`), { code: 'ENODEV' });
  }
  if (!(await devices(ctx)).some((d) => d.index === index)) {
    throw Object.assign(new Error(`loop${index} does not exist in instance ${ctx.instance}`), { code: 'ENODEV' });
  }
  return index;
}

/**
 * Each device: `op` (the action's request), failures as "DEV: WHAT failed: strerror".
 * The first device must exist (util-linux checks it while reading the options and
 * stops); a later one that does not is reported and skipped.
 */
async function eachDevice(ctx: Ctx, devicesToDo: string[], what: string, op: (sock: string, index: number) => Promise<unknown>): Promise<number> {
  let failed = 0;
  for (const [i, device] of devicesToDo.entries()) {
    let index: number;
    try {
      index = await useDevice(ctx, device);
    } catch (err) {
      ctx.warn(`${device}: failed to use device: ${strerror(err)}`);
      if (i === 0) return 1;
      failed++;
      continue;
    }
    try {
      await op(instanceSocket(ctx.root, ctx.instance), index);
    } catch (err) {
      ctx.warn(`${device}: ${what} failed: ${strerror(err)}`);
      ctx.why(err);
      failed++;
    }
  }
  return failed > 0 ? 1 : 0;
}

function usage(prog: string): string {
  const lines = [
    '',
    'Usage:',
    ` ${prog} [options] [<loopdev>]`,
    ` ${prog} [options] -f | <loopdev> <file>`,
    '',
    'Set up and control loop devices (ubloop: ublk devices of an instance, named …/instances/NAME/loopN).',
    '',
    'Options:',
    ' -a, --all                     list all used devices',
    ' -d, --detach <loopdev>...     detach one or more devices',
    ' -D, --detach-all              detach all used devices',
    ' -f, --find                    find first unused device',
    ' -c, --set-capacity <loopdev>  resize the device',
    ' -j, --associated <file>       list all devices associated with <file>',
    ' -L, --nooverlap               avoid possible conflict between devices',
    '     --remove <loopdev>...     remove one or more devices',
    '',
    ' -o, --offset <num>            start at offset <num> into file',
    '     --sizelimit <num>         device is limited to <num> bytes of the file',
    ' -b, --sector-size <num>       set the logical sector size to <num>',
    ' -P, --partscan                create a partitioned loop device',
    ' -r, --read-only               set up a read-only loop device',
    '     --direct-io[=<on|off>]    open backing file with O_DIRECT',
    '     --show                    print device name after setup (with -f)',
    '',
    ' -J, --json                    use JSON --list output format',
    ' -l, --list                    list info about all or specified (default)',
    ' -n, --noheadings              don\'t print headings for --list output',
    ' -O, --output <cols>           specify columns to output for --list',
    '     --output-all              output all columns',
    '     --raw                     use raw --list output format',
    '',
    ' ubloop:',
    '     --instance <name>         the instance (default: $UBLOOP_INSTANCE or "default")',
    `     --socket <path>           the daemon's admin socket (default: ${DEFAULT_SOCKET})`,
    `     --root <dir>              the daemon's runtime directory (default: ${DEFAULT_ROOT})`,
    `     --state <file>            state file of a daemon started here (default: ${DEFAULT_STATE})`,
    '',
    ' -h, --help                    display this help',
    ' -V, --version                 display version',
    '',
    'Available output columns:',
    ...COLUMNS.map((c) => ` ${c.name.padStart(12)}  ${c.help}`),
    '',
  ];
  return `${lines.join('\n')}\n`;
}

/** The program name messages start with: "losetup" when run by that name (a shim), else "ubloop-losetup". */
function progName(): string {
  const name = basename(process.argv[1] ?? '').replace(/\.js$/, '');
  return name === 'losetup' ? 'losetup' : 'ubloop-losetup';
}

/** Runs losetup with argv (without the program name); resolves to the exit status. */
export async function losetupMain(argv: readonly string[], prog = progName()): Promise<number> {
  let cmd: LosetupCommand;
  try {
    cmd = parseLosetupArgs(argv);
  } catch (err) {
    if (!(err instanceof LosetupError)) throw err;
    for (const line of err.lines) process.stderr.write(`${prog}: ${line}\n`);
    if (err.tryHelp) process.stderr.write(`Try '${prog} --help' for more information.\n`);
    return 1;
  }
  const verbose = process.env['UBLOOP_VERBOSE'] !== undefined;
  const ctx: Ctx = {
    prog,
    socket: cmd.ubloop.socket ?? DEFAULT_SOCKET,
    root: cmd.ubloop.root ?? DEFAULT_ROOT,
    state: cmd.ubloop.state ?? DEFAULT_STATE,
    instance: cmd.ubloop.instance ?? defaultInstance(),
    warn: (line) => process.stderr.write(`${prog}: ${line}\n`),
    why: (err) => {
      if (verbose && err instanceof Error) process.stderr.write(`${prog}: (ubloop: ${err.message})\n`);
    },
  };
  try {
    switch (cmd.action) {
      case 'help':
        process.stdout.write(usage(prog));
        return 0;
      case 'version':
        process.stdout.write(`${prog} from ubloop (util-linux losetup compatible)\n`);
        return 0;
      case 'create':
        return await create(ctx, cmd);
      case 'show':
        return await show(ctx, cmd.file, cmd.offset, cmd.output);
      case 'show-one':
        return await showOne(ctx, cmd.device, cmd.output);
      case 'find-free': {
        try {
          const sock = await instanceReady(ctx);
          const reply = await request(sock, { op: 'loop.get_free' });
          process.stdout.write(`${nodeName(ctx, Number(reply['index']))}\n`);
          return 0;
        } catch (err) {
          ctx.warn(`cannot find an unused loop device: ${strerror(err)}`);
          // ubloop's reason too (no instance, no daemon, the instance's limit), in its words
          if (err instanceof Error && err.message !== strerror(err)) ctx.warn(err.message);
          return 1;
        }
      }
      case 'detach':
        return await eachDevice(ctx, cmd.devices, 'detach', (sock, index) => request(sock, { op: 'unbind', index, busy: 'defer' }));
      case 'detach-all': {
        let failed = 0;
        for (const d of bound(await devices(ctx))) {
          failed += await eachDevice(ctx, [nodeName(ctx, d.index)], 'detach', (sock, index) => request(sock, { op: 'unbind', index, busy: 'defer' }));
        }
        return failed > 0 ? 1 : 0;
      }
      case 'remove':
        return await eachDevice(ctx, cmd.devices, 'remove', (sock, index) => request(sock, { op: 'loop.remove', index }));
      case 'set-capacity': {
        // Says why beyond strerror: ublk resizes only with UPDATE_SIZE (Linux 6.16+).
        const explain: Ctx = { ...ctx, why: (err) => ctx.warn(`${cmd.device}: ${err instanceof Error ? err.message : String(err)}`) };
        return await eachDevice(explain, [cmd.device], 'set capacity', (sock, index) => request(sock, { op: 'resize', index }));
      }
      case 'set-dio':
      case 'set-blocksize': {
        const what = cmd.action === 'set-dio' ? 'set direct io' : 'set logical block size';
        ctx.warn(`${cmd.device}: ${what} failed: ${strerror({ code: 'EOPNOTSUPP' })}`);
        process.stderr.write(`${prog}: ubloop sets direct I/O and the sector size when a device is set up (-f --direct-io, -b), not on a bound device\n`);
        return 1;
      }
    }
  } catch (err) {
    ctx.warn(err instanceof Error ? err.message : String(err));
    return 1;
  }
}
