// Resident memory of a serving process: `ubloop serve` with one device, and
// `ubloop daemon` with 1 and N images attached. Each is measured idle, after I/O has
// touched the buffers fio's depth reaches, and once the idle queues have released them.
import { spawn, type ChildProcessByStdio } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { runFio } from './fio.js';
import type { MemoryRecord } from './model.js';
import { memorySnapshot } from './probe.js';
import { DaemonClient } from '../lib/daemon/client.js';

type Child = ChildProcessByStdio<null, Readable, Readable>;

interface Running {
  child: Child;
  paths: string[];
  exited: Promise<number | null>;
}

/** Spawns node with args and waits for its first JSON line naming the devices. */
function startServing(args: string[]): Promise<Running> {
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const exited = new Promise<number | null>((resolve) => child.on('exit', resolve));
  return new Promise((resolve, reject) => {
    let ready = false;
    void exited.then((code) => {
      if (!ready) reject(new Error(`${args.join(' ')} exited (${code}) before serving: ${stderr.trim()}`));
    });
    createInterface({ input: child.stdout }).on('line', (line) => {
      if (ready) return;
      try {
        const msg = JSON.parse(line) as { path?: unknown; paths?: unknown };
        const paths = Array.isArray(msg.paths) ? msg.paths.map(String) : typeof msg.path === 'string' ? [msg.path] : [];
        if (paths.length) {
          ready = true;
          resolve({ child, paths, exited });
        }
      } catch {
        // not a JSON line
      }
    });
  });
}

async function stopServing(r: Running): Promise<void> {
  r.child.kill('SIGTERM');
  const timer = setTimeout(() => r.child.kill('SIGKILL'), 60_000);
  await r.exited;
  clearTimeout(timer);
}

/**
 * 4k random writes at QD32, then 1M writes at QD8, on every device at once: a write
 * is copied into the server's buffer for its tag, so this faults in the buffer pages
 * that this depth and size reach (reads of the null target would only map the zero page).
 */
async function touch(paths: string[]): Promise<void> {
  const args = ['--ioengine=io_uring', '--direct=1', '--time_based', '--runtime=1', '--output-format=terse'];
  for (const [i, p] of paths.entries()) {
    args.push(`--name=w4k${i}`, `--filename=${p}`, '--rw=randwrite', '--bs=4k', '--iodepth=32');
  }
  for (const [i, p] of paths.entries()) {
    // The first 1M job waits for every 4k job (the jobs after it start with it).
    args.push(`--name=w1m${i}`, `--filename=${p}`, '--rw=write', '--bs=1M', '--iodepth=8', ...(i === 0 ? ['--stonewall'] : []));
  }
  await runFio(args, 600_000);
}

/** How long a queue waits with nothing in flight before releasing its buffers (kIdleReleaseNs in native/queue.cc). */
const IDLE_RELEASE_MS = 2000;

/** Snapshots of one serving process: idle, after the writes, and after the idle release. */
async function snapshots(pid: number, paths: string[], what: string, devices: number, note: string): Promise<MemoryRecord[]> {
  await sleep(1000);
  const idle = memorySnapshot(pid);
  await touch(paths);
  const busy = memorySnapshot(pid);
  // Queues give their buffers back after 2 s without a request.
  await sleep(IDLE_RELEASE_MS + 1500);
  const released = memorySnapshot(pid);
  return [
    { what: `${what}, idle`, devices, ...idle, note },
    { what: `${what}, after 4k QD32 + 1M QD8 writes`, devices, ...busy, note },
    { what: `${what}, ${(IDLE_RELEASE_MS + 1500) / 1000} s after the writes`, devices, ...released, note },
  ];
}


async function measureServe(repoRoot: string): Promise<MemoryRecord[]> {
  const r = await startServing([`${repoRoot}/bin/ubloop.js`, 'serve', '--target', 'null', '--size', '64M', '--json']);
  try {
    return await snapshots(r.child.pid as number, r.paths, 'ubloop serve --target null', 1, 'the CLI process (node + addon), defaults');
  } finally {
    await stopServing(r);
  }
}

/**
 * `ubloop daemon` with one instance and N images attached to it through the admin
 * socket (8 MiB sparse images in imageDir, buffered, default depth and max I/O).
 */
async function measureDaemon(repoRoot: string, imageDir: string, devices: number): Promise<MemoryRecord[]> {
  const dir = mkdtempSync(join(imageDir, 'ubloop-bench-daemon-'));
  const socket = join(dir, 'admin.sock');
  const child = spawn(
    process.execPath,
    [`${repoRoot}/bin/ubloop.js`, 'daemon', '--socket', socket, '--root', join(dir, 'run'), '--state', join(dir, 'state.json')],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const exited = new Promise<number | null>((resolve) => child.on('exit', resolve));
  let client: DaemonClient | undefined;
  try {
    for (let i = 0; !existsSync(socket); i++) {
      if (i > 600 || child.exitCode !== null) throw new Error(`ubloop daemon did not start: ${stderr.trim()}`);
      await sleep(100);
    }
    client = DaemonClient.connect(socket);
    await client.request({ op: 'instance.create', name: 'bench', max: devices });
    const paths: string[] = [];
    for (let i = 0; i < devices; i++) {
      const image = join(dir, `img${i}`);
      writeFileSync(image, '');
      truncateSync(image, 8 << 20);
      const reply = await client.request({ op: 'bind', instance: 'bench', path: image });
      const device = reply['device'] as { ublkPath: string };
      paths.push(device.ublkPath);
    }
    return await snapshots(
      child.pid as number,
      paths,
      `ubloop daemon, ${devices} attached`,
      devices,
      'one instance; 8 MiB images attached over the admin socket, defaults',
    );
  } finally {
    client?.close();
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 120_000);
    await exited;
    clearTimeout(timer);
    rmSync(dir, { recursive: true, force: true });
  }
}

export async function measureMemory(repoRoot: string, imageDir: string, many: number): Promise<MemoryRecord[]> {
  return [
    ...(await measureServe(repoRoot)),
    ...(await measureDaemon(repoRoot, imageDir, 1)),
    ...(await measureDaemon(repoRoot, imageDir, many)),
  ];
}
