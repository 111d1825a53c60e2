// Resident memory of a serving process: `ubloop serve` with one device, and one process
// serving 1 and N devices through the library API (bench/memory-server.ts; there is no
// daemon yet, and N `ubloop serve` processes would measure N node runtimes instead).
// Each is measured idle and after I/O has touched the buffers fio's depth reaches.
import { spawn, type ChildProcessByStdio } from 'node:child_process';
import type { Readable } from 'node:stream';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { runFio } from './fio.js';
import type { MemoryRecord } from './model.js';
import { memorySnapshot } from './probe.js';

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

async function measureOne(what: string, args: string[], devices: number, note: string): Promise<MemoryRecord[]> {
  const r = await startServing(args);
  try {
    await sleep(1000);
    const idle = memorySnapshot(r.child.pid as number);
    await touch(r.paths);
    const busy = memorySnapshot(r.child.pid as number);
    return [
      { what: `${what}, idle`, devices, ...idle, note },
      { what: `${what}, after 4k QD32 + 1M QD8 writes`, devices, ...busy, note },
    ];
  } finally {
    await stopServing(r);
  }
}

export async function measureMemory(repoRoot: string, many: number): Promise<MemoryRecord[]> {
  const server = `${repoRoot}/dist/bench/memory-server.js`;
  return [
    ...(await measureOne(
      'ubloop serve --target null',
      [`${repoRoot}/bin/ubloop.js`, 'serve', '--target', 'null', '--size', '64M', '--json'],
      1,
      'the CLI process (node + addon), defaults',
    )),
    ...(await measureOne('library, 1 device', [server, '--devices', '1'], 1, 'createDevice() in one node process')),
    ...(await measureOne(
      `library, ${many} devices`,
      [server, '--devices', String(many)],
      many,
      'createDevice() × N in one node process (no daemon yet)',
    )),
  ];
}
