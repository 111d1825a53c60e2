// Shared code for the end-to-end tests: they run as root on a kernel with ublk (the
// test VM), drive the real CLI (`node bin/ubloop.js serve ...`) and look at the
// result the way a user would: through /dev/ublkbN, the image file and sysfs.
import { spawn, spawnSync, type ChildProcess, type SpawnSyncOptions } from 'node:child_process';
import { chownSync, existsSync, mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The project root: the nearest directory above this file with package.json (this file also runs compiled, from dist/test/helpers). */
export const ROOT = (() => {
  let dir = resolve(fileURLToPath(new URL('.', import.meta.url)));
  while (!existsSync(join(dir, 'package.json')) && dirname(dir) !== dir) dir = dirname(dir);
  return dir;
})();
export const CLI = join(ROOT, 'bin', 'ubloop.js');
export const MiB = 1 << 20;

/** The smallest part of the tap Test API these helpers need. */
export interface TestLike {
  teardown(fn: () => void | Promise<void>): void;
  fail(message: string): void;
  comment(...args: unknown[]): void;
}

/** Sets /dev/ublk-control's mode (and its group, if given) for one test; the teardown restores both. */
export function setControlAccess(t: TestLike, mode: string, gid?: number): void {
  const st = statSync('/dev/ublk-control');
  if (gid !== undefined) chownSync('/dev/ublk-control', 0, gid);
  run('chmod', [mode, '/dev/ublk-control']);
  t.teardown(() => {
    chownSync('/dev/ublk-control', st.uid, st.gid);
    run('chmod', [(st.mode & 0o777).toString(8), '/dev/ublk-control']);
  });
}

/** The ublk char devices that exist now: ['ublkc0', ...]. */
export function ublkCharEntries(): string[] {
  try {
    return readdirSync('/sys/class/ublk-char').sort();
  } catch {
    return [];
  }
}

/** What is left of device id: a list of paths that still exist (empty = all gone). */
export function leftovers(id: number): string[] {
  return [`/dev/ublkb${id}`, `/dev/ublkc${id}`, `/sys/class/ublk-char/ublkc${id}`, `/sys/block/ublkb${id}`].filter((p) =>
    existsSync(p),
  );
}

export async function sleep(ms: number): Promise<void> {
  await new Promise((r) => setTimeout(r, ms));
}

/** Waits up to ms for device id to disappear; returns what is still there. */
export async function waitGone(id: number, ms = 5000): Promise<string[]> {
  const end = Date.now() + ms;
  for (;;) {
    const left = leftovers(id);
    if (left.length === 0 || Date.now() > end) return left;
    await sleep(50);
  }
}

export interface RunResult {
  status: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Runs a command to completion; never throws for a non-zero exit. */
export function run(cmd: string, args: string[], opts: SpawnSyncOptions = {}): RunResult {
  const r = spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 256 * MiB, timeout: 300_000, ...opts });
  if (r.error) throw new Error(`${cmd}: ${r.error.message}`);
  return {
    status: r.status,
    signal: r.signal,
    stdout: String(r.stdout ?? ''),
    stderr: String(r.stderr ?? ''),
  };
}

/** Runs a command that must succeed; returns stdout. */
export function sh(cmd: string, args: string[], opts: SpawnSyncOptions = {}): string {
  const r = run(cmd, args, opts);
  if (r.status !== 0) {
    throw new Error(`${cmd} ${args.join(' ')} failed (exit ${r.status ?? r.signal}): ${r.stderr.trim() || r.stdout.trim()}`);
  }
  return r.stdout;
}

/** Runs the CLI to completion (for commands that end by themselves). */
export function cli(args: string[], opts: SpawnSyncOptions = {}): RunResult {
  // Generous: two guests at once share 2 host cores, and a node start under TCG can take 30 s.
  return run(process.execPath, [CLI, ...args], { timeout: 180_000, ...opts });
}

/**
 * Runs many CLI commands, at most `parallel` at a time (one per vCPU): node starts are
 * CPU-bound and slow under TCG, so more at once only makes each one later.
 */
export async function cliMany(commands: string[][], parallel = 2): Promise<RunResult[]> {
  const results: RunResult[] = new Array<RunResult>(commands.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < commands.length) {
      const i = next++;
      results[i] = await cliAsync(commands[i] as string[]);
    }
  };
  await Promise.all(Array.from({ length: Math.min(parallel, commands.length) }, worker));
  return results;
}

/** Runs the CLI without blocking; a run longer than timeoutMs is killed (and shows as signal SIGTERM). */
export function cliAsync(args: string[], timeoutMs = 300_000): Promise<RunResult> {
  return new Promise((done, fail) => {
    const child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGTERM'), timeoutMs);
    child.on('error', fail);
    child.on('close', (status, signal) => {
      clearTimeout(timer);
      done({ status, signal, stdout, stderr });
    });
  });
}

/**
 * A directory for image files, removed after the test. On the VM's scratch ext4 disk
 * ($UBLK_VM_SCRATCH) when there is one, because the guest's tmpfs has no O_DIRECT.
 */
export function workDir(t: TestLike, needDirectIo = false): string {
  const base = process.env['UBLK_VM_SCRATCH'] ?? process.env['UBLK_TEST_DIR'] ?? tmpdir();
  if (needDirectIo && !process.env['UBLK_VM_SCRATCH'] && !process.env['UBLK_TEST_DIR']) {
    t.comment(`no $UBLK_VM_SCRATCH: using ${base} for O_DIRECT images; it must support O_DIRECT`);
  }
  const dir = mkdtempSync(join(base, 'ubloop-e2e-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** Creates a sparse file of size bytes. */
export function sparseImage(path: string, size: number): string {
  sh('truncate', ['-s', String(size), path]);
  return path;
}

/** Allocated bytes of a file (st_blocks * 512). */
export function allocatedBytes(path: string): number {
  return statSync(path).blocks * 512;
}

/** DeviceInfo as printed by `ubloop serve --json`. */
export interface ServedInfo {
  id: number;
  path: string;
  charPath: string;
  size: number;
  offset: number;
  blockSize: number;
  readOnly: boolean;
  directIo: boolean;
  queues: number;
  depth: number;
  state: string;
  flags: string[];
  encoding: string;
  scheduler: string | null;
  serverPid: number;
  [k: string]: unknown;
}

export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
  /** ms from the stop request (or from when we started waiting) to exit. */
  ms: number;
}

export interface Server {
  info: ServedInfo;
  proc: ChildProcess;
  stderr(): string;
  /** Extra stdout lines after the first (e.g. SIGUSR1 stats). */
  lines: string[];
  exited: Promise<Exit>;
  /** Sends a signal and waits for the server to exit (rejects after ms). */
  stop(signal?: NodeJS.Signals, ms?: number): Promise<Exit>;
  /** SIGUSR1 → the next stats JSON line. */
  stats(): Promise<ServerStats>;
}

export interface ServerStats {
  dataPath: string;
  ops: number;
  bytesRead: number;
  bytesWritten: number;
  errors: number;
  ringEnters: number;
  bufferReleases: number;
  registrations: number;
  failed: boolean;
  queues: { queue: number; ops: number; threadId: number; ringFlags: number; failure: string | null }[];
}

/**
 * Starts `ubloop serve ARGS --json` and resolves once the device is live (its JSON
 * line is printed). The teardown stops the server and makes sure nothing is left; a
 * device that outlives its server fails the test and is deleted through the addon.
 */
export async function serve(
  t: TestLike,
  args: string[],
  startMs = 180_000,
  env: NodeJS.ProcessEnv = {},
  /** The command that runs ubloop (e.g. as another user): node and the CLI by default. */
  launch: string[] = [process.execPath, CLI],
): Promise<Server> {
  const [cmd = process.execPath, ...pre] = launch;
  const proc = spawn(cmd, [...pre, 'serve', ...args, '--json'], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, ...env },
  });
  let stderr = '';
  let out = '';
  const lines: string[] = [];
  const waiters: (() => void)[] = [];
  proc.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  let exitTime = 0;
  const exited = new Promise<Exit>((done) =>
    proc.on('exit', (code, signal) => {
      exitTime = Date.now();
      done({ code, signal, ms: 0 });
    }),
  );
  let first: ((line: string) => void) | undefined;
  const firstLine = new Promise<string>((r) => (first = r));
  proc.stdout.setEncoding('utf8').on('data', (d: string) => {
    out += d;
    let nl: number;
    while ((nl = out.indexOf('\n')) >= 0) {
      const line = out.slice(0, nl);
      out = out.slice(nl + 1);
      if (first) {
        const f = first;
        first = undefined;
        f(line);
      } else {
        lines.push(line);
        // Every waiter looks at `lines` itself: two lines in one chunk must not
        // leave the second without its reader.
        for (const w of waiters.splice(0)) w();
      }
    }
  });

  let info: ServedInfo | undefined;
  const stop = async (signal: NodeJS.Signals = 'SIGTERM', ms = 10_000): Promise<Exit> => {
    const sent = Date.now();
    if (proc.exitCode === null && proc.signalCode === null) proc.kill(signal);
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`ubloop serve did not exit within ${ms} ms of ${signal}`)), ms);
    });
    try {
      const e = await Promise.race([exited, timeout]);
      return { ...e, ms: Math.max(0, exitTime - sent) };
    } finally {
      clearTimeout(timer);
    }
  };

  t.teardown(async () => {
    if (proc.exitCode === null && proc.signalCode === null) {
      try {
        await stop('SIGTERM', 15_000);
      } catch {
        proc.kill('SIGKILL');
        await exited;
        t.fail(`ubloop serve ${args.join(' ')} ignored SIGTERM for 15 s and was killed`);
      }
    }
    if (info) {
      const left = await waitGone(info.id, 5000);
      if (left.length > 0) {
        t.fail(`device ${info.id} outlived its server: ${left.join(', ')}`);
        const { native } = await import('../../lib/native.js');
        await native()
          .deleteDevice(info.id)
          .catch(() => {});
      }
    }
  });

  let timer: NodeJS.Timeout | undefined;
  const line = await Promise.race([
    firstLine,
    exited.then((e) => {
      throw new Error(`ubloop serve ${args.join(' ')} exited (${e.code ?? e.signal}) before the device was live: ${stderr.trim()}`);
    }),
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`ubloop serve ${args.join(' ')} printed nothing for ${startMs} ms: ${stderr.trim()}`)), startMs);
    }),
  ]).finally(() => clearTimeout(timer));
  try {
    info = JSON.parse(line) as ServedInfo;
  } catch {
    throw new Error(`ubloop serve --json printed a line that is not JSON: ${line}`);
  }

  /** Line `index` of `lines` (counting after the first), once it has arrived. */
  const lineAt = async (index: number): Promise<string> => {
    while (lines.length <= index) await new Promise<void>((r) => waiters.push(r));
    return lines[index] as string;
  };
  const stats = async (): Promise<ServerStats> => {
    let index = lines.length;
    proc.kill('SIGUSR1');
    let tm: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => (tm = setTimeout(() => reject(new Error('no stats line within 10 s of SIGUSR1')), 10_000)));
    try {
      // Other lines (a failure notice) may come first.
      for (;;) {
        const parsed = JSON.parse(await Promise.race([lineAt(index++), timeout])) as { stats?: ServerStats };
        if (parsed.stats) return parsed.stats;
      }
    } finally {
      clearTimeout(tm);
    }
  };

  return { info, proc, stderr: () => stderr, lines, exited, stop, stats };
}

/** Size of a block device in bytes, as the kernel reports it. */
export function blockdevSize(dev: string): number {
  return Number(sh('blockdev', ['--getsize64', dev]).trim());
}

/** Reads len bytes at offset from a file or device with O_DIRECT (bypassing caches). */
export function readDirect(path: string, offset: number, len: number): Buffer {
  const r = spawnSync(
    'dd',
    [`if=${path}`, 'bs=64K', `skip=${offset}`, `count=${len}`, 'iflag=direct,skip_bytes,count_bytes', 'status=none'],
    { maxBuffer: len + MiB, timeout: 120_000 },
  );
  if (r.status !== 0) throw new Error(`dd read of ${path} failed: ${String(r.stderr).trim()}`);
  return r.stdout;
}

/** Writes data at offset with O_DIRECT and fsync; returns the dd result (does not throw). */
export function writeDirect(path: string, offset: number, data: Buffer): RunResult {
  const r = spawnSync(
    'dd',
    [`of=${path}`, 'bs=64K', `seek=${offset}`, 'oflag=direct,seek_bytes', 'iflag=fullblock', 'conv=notrunc,fsync', 'status=none'],
    { input: data, timeout: 120_000 },
  );
  if (r.error) throw r.error;
  return { status: r.status, signal: r.signal, stdout: String(r.stdout), stderr: String(r.stderr) };
}

/** Reads bytes from a regular file (the image) through the page cache. */
export function readFileRange(path: string, offset: number, len: number): Buffer {
  const r = spawnSync('dd', [`if=${path}`, 'bs=64K', `skip=${offset}`, `count=${len}`, 'iflag=skip_bytes,count_bytes', 'status=none'], {
    maxBuffer: len + MiB,
  });
  if (r.status !== 0) throw new Error(`dd read of ${path} failed: ${String(r.stderr).trim()}`);
  return r.stdout;
}

export interface FioJob {
  jobname: string;
  error: number;
  read: { io_bytes: number; total_ios: number };
  write: { io_bytes: number; total_ios: number };
  total_err?: number;
  [k: string]: unknown;
}

/** Runs fio with JSON output; returns the exit status and the parsed jobs (if any). */
export function fio(args: string[], timeoutMs = 300_000): { status: number | null; jobs: FioJob[]; stderr: string; raw: string } {
  const r = run('fio', ['--output-format=json', ...args], { timeout: timeoutMs });
  let jobs: FioJob[] = [];
  // fio may print warnings before the JSON document.
  const start = r.stdout.indexOf('{');
  if (start >= 0) {
    try {
      jobs = (JSON.parse(r.stdout.slice(start)) as { jobs: FioJob[] }).jobs;
    } catch {
      jobs = [];
    }
  }
  return { status: r.status, jobs, stderr: r.stderr, raw: r.stdout };
}

/** The io engine to use: io_uring when this fio has it, else libaio. */
export function ioEngine(): string {
  const r = run('fio', ['--enghelp']);
  return /io_uring/.test(r.stdout) ? 'io_uring' : 'libaio';
}

/** Mounts dev on a fresh directory; the teardown unmounts it if the test did not. */
export function mount(t: TestLike, dev: string, dir: string, opts: string[] = []): string {
  sh('mount', [...opts, dev, dir]);
  t.teardown(() => {
    if (run('mountpoint', ['-q', dir]).status === 0) run('umount', ['-l', dir]);
  });
  return dir;
}
