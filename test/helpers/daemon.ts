// Shared code for the instance e2e tests: a `ubloop daemon` of our own (own socket,
// root directory and state file), clients for its sockets, and the CLI run as another
// user.
import { spawn, type ChildProcess, type SpawnSyncOptions } from 'node:child_process';
import { cpSync, existsSync, mkdtempSync, readdirSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DaemonClient } from '../../lib/daemon/client.js';
import { CLI, ROOT, cli, run, sleep, type RunResult, type TestLike } from './e2e.js';

/** Parses a CLI's JSON output, failing with its stderr when it did not succeed. */
export function jsonOut<T>(r: RunResult): T {
  if (r.status !== 0) throw new Error(`ubloop exited ${r.status ?? r.signal}: ${r.stderr.trim()}`);
  return JSON.parse(r.stdout) as T;
}

export interface DaemonHandle {
  proc: ChildProcess;
  socket: string;
  root: string;
  state: string;
  stderr(): string;
  /** SIGTERM and wait for the exit. */
  stop(ms?: number): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** SIGKILL (a crash) and wait for the exit; removes the socket it leaves, so that the next startDaemon waits for its own. */
  kill(): Promise<void>;
  alive(): boolean;
  /** A client of the admin socket (closed at teardown). */
  admin(): DaemonClient;
  /** A client of an instance's control.sock (closed at teardown). */
  instance(name: string): DaemonClient;
  /** ubloop CLI with this daemon's --socket/--root appended where they apply. */
  cli(args: string[], opts?: SpawnSyncOptions): RunResult;
  /** The same, run as another user (from a copy the user can load the addon from). */
  cliAs(uid: number, gid: number, args: string[]): RunResult;
  /** Open descriptors of the daemon process. */
  fdCount(): number;
}

/** Starts `ubloop daemon` on paths under dir; the teardown stops it. */
export async function startDaemon(t: TestLike, dir: string, extra: string[] = [], state?: string, env: NodeJS.ProcessEnv = {}): Promise<DaemonHandle> {
  const socket = join(dir, 'admin.sock');
  const root = join(dir, 'run');
  const stateFile = state ?? join(dir, 'state.json');
  const proc = spawn(process.execPath, [CLI, 'daemon', '--socket', socket, '--root', root, '--state', stateFile, ...extra], {
    stdio: ['ignore', 'ignore', 'pipe'],
    env: { ...process.env, ...env },
  });
  let stderr = '';
  proc.stderr?.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) =>
    proc.on('exit', (code, signal) => r({ code, signal })),
  );
  const clients: DaemonClient[] = [];
  const alive = () => proc.exitCode === null && proc.signalCode === null;
  let stopped = false;
  const stop = async (ms = 30_000) => {
    stopped = true;
    if (alive()) proc.kill('SIGTERM');
    let timer: NodeJS.Timeout | undefined;
    try {
      return await Promise.race([
        exited,
        new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`daemon ignored SIGTERM for ${ms} ms`)), ms))),
      ]);
    } finally {
      clearTimeout(timer);
    }
  };
  t.teardown(async () => {
    for (const c of clients) c.close();
    if (!alive() && !stopped) t.fail(`the daemon died (${proc.exitCode ?? proc.signalCode}): ${stderr.trim()}`);
    if (alive()) {
      try {
        await stop();
      } catch {
        proc.kill('SIGKILL');
        t.fail('the daemon had to be killed');
      }
    }
  });
  // Generous: two guests at once share 2 host cores.
  const end = Date.now() + 180_000;
  while (!existsSync(socket)) {
    if (!alive()) throw new Error(`the daemon exited before listening: ${stderr.trim()}`);
    if (Date.now() > end) throw new Error(`the daemon did not listen within 180 s: ${stderr.trim()}`);
    await sleep(50);
  }
  const withPaths = (args: string[]) =>
    ['instance', 'attach', 'detach', 'list', 'resize'].includes(args[0] ?? '') ? [...args, '--socket', socket, '--root', root] : args;
  const connect = (path: string) => {
    const c = DaemonClient.connect(path);
    clients.push(c);
    return c;
  };
  return {
    proc,
    socket,
    root,
    state: stateFile,
    stderr: () => stderr,
    stop,
    kill: async () => {
      stopped = true;
      proc.kill('SIGKILL');
      await exited;
      rmSync(socket, { force: true });
    },
    alive,
    admin: () => connect(socket),
    instance: (name) => connect(join(root, 'instances', name, 'control.sock')),
    cli: (args, opts = {}) => cli(withPaths(args), { timeout: 180_000, ...opts }),
    cliAs: (uid, gid, args) =>
      run('sh', ['-c', `${UNHOOK} exec "$@"`, 'sh', process.execPath, userCli(), ...withPaths(args)], { uid, gid, env: USER_ENV, cwd: '/', timeout: 180_000 }),
    fdCount: () => readdirSync(`/proc/${proc.pid}/fd`).length,
  };
}

/** ublk devices that exist now (/sys/class/ublk-char entries). */
export function ublkCount(): number {
  try {
    return readdirSync('/sys/class/ublk-char').length;
  } catch {
    return 0;
  }
}

/** Runs a shell command as another user. */
export function shAs(uid: number, gid: number, script: string, opts: SpawnSyncOptions = {}): RunResult {
  return run('sh', ['-c', `${UNHOOK} ${script}`], { uid, gid, env: USER_ENV, ...opts });
}

/**
 * tap's process tracking puts its loader back into the environment of every child; a
 * process of another user cannot write tap's records, so the shell drops it first.
 */
const UNHOOK = 'unset NODE_OPTIONS NODE_V8_COVERAGE;';

/** A clean environment for commands run as another user. */
export const USER_ENV = { PATH: '/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin', HOME: '/tmp', LANG: 'C' };

let userCopy: string | undefined;

/**
 * bin/ubloop.js in a world-readable copy of bin/, dist/ and the addon (node_modules is
 * linked): the guest's 9p mount of the project does not let other users load the addon.
 */
export function userCli(): string {
  if (!userCopy) {
    const dir = mkdtempSync(join(tmpdir(), 'ubloop-user-'));
    for (const part of ['bin', 'dist', 'package.json', 'build/Release/ubloop.node']) cpSync(join(ROOT, part), join(dir, part), { recursive: true });
    symlinkSync(join(ROOT, 'node_modules'), join(dir, 'node_modules'));
    run('chmod', ['-R', 'a+rX', dir]);
    userCopy = dir;
  }
  return join(userCopy, 'bin', 'ubloop.js');
}
