// The devices under test, all over the same image: kernel loop, ubloop (`ubloop serve`
// in its own process, one per device), the kernel's own reference server kublk (in its
// fastest modes, where the kernel offers them) and optionally ublksrv.
import { execFileSync, spawn, type ChildProcessByStdio } from 'node:child_process';
import type { Readable } from 'node:stream';
import { createInterface } from 'node:readline';
import { basename } from 'node:path';
import { activeScheduler, setScheduler } from './probe.js';

type Child = ChildProcessByStdio<null, Readable, Readable>;

export type ConfigName =
  | 'kernel-loop'
  | 'ubloop-direct'
  | 'ubloop-buffered'
  | 'ubloop-null'
  | 'kublk-auto-zc'
  | 'kublk-auto-zc-batch'
  | 'ublksrv';
export const CONFIG_NAMES: readonly ConfigName[] = [
  'kernel-loop',
  'ubloop-direct',
  'ubloop-buffered',
  'ubloop-null',
  'kublk-auto-zc',
  'kublk-auto-zc-batch',
  'ublksrv',
];

/** The peers: servers other than ubloop that ubloop must beat. */
export const PEER_CONFIGS: readonly ConfigName[] = ['kublk-auto-zc', 'kublk-auto-zc-batch', 'ublksrv'];

/** What the serving process counted, summed over its queues. */
export interface ServerStats {
  ops: number;
  ringEnters: number;
}

export interface Server {
  /** e.g. "ubloop-direct q1"; the kernel loop device is just "kernel-loop". */
  readonly label: string;
  readonly config: ConfigName;
  readonly queues: number;
  /** /dev/xxx */
  readonly path: string;
  /** Name under /sys/block. */
  readonly disk: string;
  /** The process serving the device, or null for the kernel loop driver. */
  readonly pid: number | null;
  readonly scheduler: string;
  /** How request data reaches the image: ubloop's data path (what `auto` chose), or the peer's mode. */
  readonly dataPath: string;
  /** Anything else worth recording (the serving process's own description). */
  readonly info: unknown;
  /** The server's own counters, or null when it has none to offer. */
  stats(): Promise<ServerStats | null>;
  stop(): Promise<void>;
}

export interface ServerOptions {
  image: string;
  imageBytes: number;
  repoRoot: string;
  /** Extra arguments for every `ubloop serve` (tuning experiments). */
  ubloopArgs: readonly string[];
  ublksrv: string | null;
  ublksrvScheduler: string;
  /** Run ublksrv in its zero-copy mode (-z): where the kernel offers UBLK_F_SUPPORT_ZERO_COPY. */
  ublksrvZeroCopy: boolean;
  /** The kublk binary (bench/build-kublk.sh), or null. */
  kublk: string | null;
}

export function labelOf(config: ConfigName, queues: number, variant: string | null = null): string {
  return config === 'kernel-loop' ? config : `${config}${variant === null ? '' : `+${variant}`} q${queues}`;
}

/** A variant: a name for the label, extra `ubloop serve` arguments, and optionally another ubloop checkout that serves it. */
export interface ServerVariant {
  name: string;
  args: readonly string[];
  root?: string;
}

export async function startServer(
  config: ConfigName,
  queues: number,
  o: ServerOptions,
  variant: ServerVariant | null = null,
): Promise<Server> {
  switch (config) {
    case 'kernel-loop':
      return startKernelLoop(o);
    case 'ubloop-direct':
      return UbloopServer.start(config, queues, o, [o.image, '--direct-io', ...(variant?.args ?? [])], variant);
    case 'ubloop-buffered':
      return UbloopServer.start(config, queues, o, [o.image]);
    case 'ubloop-null':
      return UbloopServer.start(config, queues, o, ['--target', 'null', '--size', String(o.imageBytes)]);
    case 'kublk-auto-zc':
    case 'kublk-auto-zc-batch':
      if (o.kublk === null) throw new Error('kublk: no binary (--kublk PATH, or let the bench build it)');
      return startUblkCli(
        config,
        o.kublk,
        queues,
        o,
        ['--auto_zc', ...(config === 'kublk-auto-zc-batch' ? ['--batch'] : [])],
        config === 'kublk-auto-zc-batch' ? 'auto-buf, batch I/O' : 'auto-buf',
      );
    case 'ublksrv':
      if (o.ublksrv === null) throw new Error('ublksrv: no binary given (--ublksrv PATH or UBLK_BENCH_UBLKSRV)');
      // -z: its zero-copy mode, where the kernel offers it.
      return startUblkCli(config, o.ublksrv, queues, o, o.ublksrvZeroCopy ? ['-z'] : [], o.ublksrvZeroCopy ? 'zero' : 'kernel');
  }
}

function startKernelLoop(o: ServerOptions): Server {
  const path = execFileSync('losetup', ['--direct-io=on', '--find', '--show', o.image], { encoding: 'utf8' }).trim();
  const disk = basename(path);
  const dio = execFileSync('losetup', ['--list', '--noheadings', '--output', 'DIO', path], { encoding: 'utf8' }).trim();
  return {
    label: 'kernel-loop',
    config: 'kernel-loop',
    queues: 1,
    path,
    disk,
    pid: null,
    scheduler: activeScheduler(disk),
    dataPath: dio === '1' ? 'kernel loop, direct I/O' : 'kernel loop, buffered',
    info: { directIo: dio === '1' },
    stats: () => Promise.resolve(null),
    stop: () => {
      execFileSync('losetup', ['--detach', path]);
      return Promise.resolve();
    },
  };
}

interface UbloopInfo {
  path: string;
  /** Absent from engines older than the data paths, which only had the kernel copy. */
  dataPath?: string;
  serverPid: number;
  scheduler: string | null;
}

function isUbloopInfo(v: unknown): v is UbloopInfo {
  return typeof v === 'object' && v !== null && typeof (v as UbloopInfo).path === 'string';
}

function isStatsLine(v: unknown): v is { stats: ServerStats } {
  return typeof v === 'object' && v !== null && typeof (v as { stats?: ServerStats }).stats?.ringEnters === 'number';
}

class UbloopServer implements Server {
  readonly pid: number;
  readonly path: string;
  readonly disk: string;
  readonly scheduler: string;
  readonly dataPath: string;
  readonly #child: Child;
  readonly #statsWaiters: ((s: ServerStats) => void)[] = [];
  readonly #exited: Promise<number | null>;

  private constructor(
    readonly label: string,
    readonly config: ConfigName,
    readonly queues: number,
    readonly info: UbloopInfo,
    child: Child,
    exited: Promise<number | null>,
  ) {
    this.#child = child;
    this.#exited = exited;
    this.path = info.path;
    this.disk = basename(info.path);
    this.pid = child.pid ?? info.serverPid;
    this.scheduler = activeScheduler(this.disk);
    this.dataPath = info.dataPath ?? 'kernel (engine without data paths)';
  }

  static start(
    config: ConfigName,
    queues: number,
    o: ServerOptions,
    args: readonly string[],
    variant: ServerVariant | null = null,
  ): Promise<Server> {
    const argv = [`${variant?.root ?? o.repoRoot}/bin/ubloop.js`, 'serve', ...args, '--queues', String(queues), '--json', ...o.ubloopArgs];
    const child = spawn(process.execPath, argv, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    const lines = createInterface({ input: child.stdout });
    // Generous: node loads its modules over 9p in the VM, which a loaded host makes slow.
    return new Promise<Server>((resolve, reject) => {
      let server: UbloopServer | undefined;
      const timer = setTimeout(() => {
        child.kill('SIGKILL');
        reject(new Error(`ubloop serve ${args.join(' ')}: no device after 300 s; stderr: ${stderr.trim()}`));
      }, 300_000);
      void exited.then((code) => {
        clearTimeout(timer);
        if (!server) reject(new Error(`ubloop serve ${args.join(' ')} exited (${code}) before serving: ${stderr.trim()}`));
      });
      lines.on('line', (line) => {
        let msg: unknown;
        try {
          msg = JSON.parse(line);
        } catch {
          return;
        }
        if (!server && isUbloopInfo(msg)) {
          clearTimeout(timer);
          server = new UbloopServer(labelOf(config, queues, variant?.name ?? null), config, queues, msg, child, exited);
          resolve(server);
        } else if (server && isStatsLine(msg)) {
          server.#statsWaiters.shift()?.(msg.stats);
        }
      });
    });
  }

  stats(): Promise<ServerStats | null> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${this.label}: no stats line within 10 s of SIGUSR1`)), 10_000);
      this.#statsWaiters.push((s) => {
        clearTimeout(timer);
        resolve(s);
      });
      this.#child.kill('SIGUSR1');
    });
  }

  async stop(): Promise<void> {
    this.#child.kill('SIGTERM');
    const timer = setTimeout(() => this.#child.kill('SIGKILL'), 120_000);
    const code = await this.#exited;
    clearTimeout(timer);
    if (code !== 0) throw new Error(`${this.label}: ubloop serve exited with ${code} on SIGTERM`);
  }
}

// ublksrv (https://github.com/ublk-org/ublksrv) and kublk share a command line: `add`
// starts a daemon and prints "dev id N: ..."; `list -n ID` names its "daemon pid";
// `del -n ID` removes it. ublksrv takes the image as `-f IMAGE`, kublk as an operand;
// both open it O_DIRECT.
function startUblkCli(config: ConfigName, bin: string, queues: number, o: ServerOptions, extra: string[], dataPath: string): Server {
  const image = config === 'ublksrv' ? ['-f', o.image] : [o.image];
  const added = execFileSync(bin, ['add', '-t', 'loop', '-q', String(queues), '-d', '128', ...extra, ...image], {
    encoding: 'utf8',
  });
  const id = /dev id (\d+)/.exec(added)?.[1];
  if (id === undefined) throw new Error(`${config}: cannot find the device id in: ${added.trim()}`);
  const listed = execFileSync(bin, ['list', '-n', id], { encoding: 'utf8' });
  const pid = Number(/pid\s+(\d+)/.exec(listed)?.[1] ?? NaN);
  if (!Number.isInteger(pid)) throw new Error(`${config}: cannot find the daemon pid in: ${listed.trim()}`);
  const disk = `ublkb${id}`;
  setScheduler(disk, o.ublksrvScheduler);
  return {
    label: labelOf(config, queues),
    config,
    queues,
    path: `/dev/${disk}`,
    disk,
    pid,
    scheduler: activeScheduler(disk),
    dataPath,
    info: { list: listed.trim() },
    stats: () => Promise.resolve(null),
    stop: () => {
      execFileSync(bin, ['del', '-n', id]);
      return Promise.resolve();
    },
  };
}
