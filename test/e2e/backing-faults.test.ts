// Issue 13, backing faults: the image's own I/O fails (device-mapper `error` under its
// filesystem), its filesystem fills up, the image is deleted or truncated while the
// device is in use. Only the affected requests fail, with the errno the backing I/O
// gave (EIO, ENOSPC); the device and the others keep serving; the counters and
// `ubloop list` say what failed; nothing hangs (every reader and writer runs under
// `timeout 30`). Deleted and truncated images behave as on kernel loop, which each
// scenario runs beside ours.
import t, { type Test } from 'tap';
import { spawn } from 'node:child_process';
import { closeSync, constants, mkdirSync, openSync, readFileSync, rmSync, statSync, truncateSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { kernelFeatures } from '../../lib/kernel.js';
import { MiB, readDirect, run, serve, sh, sleep, sparseImage, workDir, writeDirect, type Server } from '../helpers/e2e.js';
import { jsonOut, startDaemon, ublkCount, type DaemonHandle } from '../helpers/daemon.js';

interface IoErrors {
  readErrors: number;
  writeErrors: number;
  flushErrors: number;
  discardErrors: number;
  lastError: { errno: number; code: string; op: string; at: string } | null;
}
interface Entry {
  instance: string | null;
  index: number | null;
  state: string;
  path: string | null;
  ublkPath: string | null;
  backing?: { path: string; deleted: boolean } | null;
  failure?: string | null;
  ioErrors?: IoErrors | null;
}

const INSTANCE = 'bf';
const NO_ERRORS = { readErrors: 0, writeErrors: 0, flushErrors: 0, discardErrors: 0, lastError: null };

/** Runs argv under `timeout 30`; fails the test if it had to be killed. */
function bounded(t: Test, argv: string[]): ReturnType<typeof run> {
  const started = Date.now();
  const r = run('timeout', ['30', ...argv]);
  t.not(r.status, 124, `${argv[0]} ${argv[1] ?? ''} returned within 30 s (${Date.now() - started} ms)`);
  return r;
}

/** One 4 KiB O_DIRECT read at offset: dd's result. */
function read4k(t: Test, dev: string, offset: number): ReturnType<typeof run> {
  return bounded(t, ['dd', `if=${dev}`, 'of=/dev/null', 'bs=4k', 'count=1', `skip=${offset}`, 'iflag=direct,skip_bytes', 'status=none']);
}

/** One 4 KiB O_DIRECT write of zeros at offset: dd's result. */
function write4k(t: Test, dev: string, offset: number): ReturnType<typeof run> {
  return bounded(t, ['dd', 'if=/dev/zero', `of=${dev}`, 'bs=4k', 'count=1', `seek=${offset}`, 'oflag=direct,seek_bytes', 'conv=notrunc', 'status=none']);
}

/** fio in the background, random reads and writes with verification, until stop() (SIGINT: it reports and exits). */
function fioBackground(dev: string): { stop: () => void; result: Promise<{ status: number | null; errors: number; ios: number; out: string }> } {
  let stop = () => {};
  const result = new Promise<{ status: number | null; errors: number; ios: number; out: string }>((done) => {
    const p = spawn('fio', [
      '--name=neighbour', `--filename=${dev}`, '--rw=randrw', '--bs=4k', '--iodepth=8', '--ioengine=libaio', '--direct=1',
      '--size=8M', '--runtime=120', '--time_based', '--verify=crc32c', '--output-format=json',
    ], { stdio: ['ignore', 'pipe', 'pipe'] });
    stop = () => void p.kill('SIGINT');
    let out = '';
    p.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
    p.stderr.setEncoding('utf8').on('data', (d: string) => (out += d));
    p.on('close', (status) => {
      let errors = -1;
      let ios = 0;
      try {
        const job = (JSON.parse(out.slice(out.indexOf('{'))) as { jobs: { error: number; total_err?: number; read: { total_ios: number }; write: { total_ios: number } }[] }).jobs[0];
        if (job) {
          errors = job.error + (job.total_err ?? 0);
          ios = job.read.total_ios + job.write.total_ios;
        }
      } catch {
        // errors stays -1
      }
      done({ status, errors, ios, out });
    });
  });
  return { stop, result };
}

/** Waits (up to 30 s) until the disk has completed both reads and writes (/sys/block/NAME/stat). */
async function ioStarted(dev: string): Promise<boolean> {
  const stat = `/sys/block/${dev.replace('/dev/', '')}/stat`;
  for (let i = 0; i < 300; i++) {
    const f = readFileSync(stat, 'utf8').trim().split(/\s+/).map(Number);
    if ((f[0] ?? 0) > 0 && (f[4] ?? 0) > 0) return true;
    await sleep(100);
  }
  return false;
}

// One daemon and instance for every scenario; each scenario detaches its own devices.
const baseline = ublkCount();
const dir = workDir(t);
const daemon: DaemonHandle = await startDaemon(t, dir);
await daemon.admin().request({ op: 'instance.create', name: INSTANCE });
const inst = () => daemon.instance(INSTANCE);

async function bind(image: string, options: Record<string, unknown> = {}): Promise<Entry> {
  // A direct-I/O binding takes a descriptor opened with O_DIRECT (as losetup --direct-io opens it).
  const fd = openSync(image, options['directIo'] === true ? constants.O_RDWR | constants.O_DIRECT : constants.O_RDWR);
  try {
    return (await inst().request({ op: 'bind', ...options }, [fd]))['device'] as Entry;
  } finally {
    closeSync(fd);
  }
}

async function entry(index: number): Promise<Entry> {
  return (await inst().request({ op: 'info', index }))['device'] as Entry;
}

async function unbindAll(): Promise<Entry[]> {
  for (const e of (await inst().request({ op: 'list' }))['devices'] as Entry[]) {
    if (e.state === 'bound' && e.index !== null) await inst().request({ op: 'unbind', index: e.index }).catch(() => {});
  }
  return ((await inst().request({ op: 'list' }))['devices'] as Entry[]).filter((e) => e.state !== 'unbound');
}

/** Each scenario detaches its devices at the end, and also when it fails half-way. */
function scenario(name: string, fn: (t: Test) => Promise<void>): void {
  t.test(name, async (t) => {
    t.teardown(async () => void (await unbindAll()));
    await fn(t);
    t.same(await unbindAll(), [], 'every device of the scenario is detached');
  });
}

/** dd copying file into dev at offset with O_DIRECT and fsync, under `timeout 30`. */
function ddInto(t: Test, file: string, dev: string, offset: number): ReturnType<typeof run> {
  return bounded(t, ['dd', `if=${file}`, `of=${dev}`, 'bs=64K', `seek=${offset}`, 'oflag=direct,seek_bytes', 'conv=notrunc,fsync', 'status=none']);
}

/** `ubloop list --json`: the ublk devices it shows, and the entries. */
function listed(): { paths: string[]; entries: Entry[] } {
  const entries = jsonOut<Entry[]>(daemon.cli(['list', '--json']));
  return { paths: entries.map((e) => e.ublkPath ?? '?').sort(), entries };
}

scenario('EIO under part of the image: those requests fail, the rest and a neighbour keep serving', async (t) => {
  const work = join(dir, 'eio');
  mkdirSync(work);
  // The image's filesystem lives on a device-mapper device over a kernel loop device;
  // once the image is written, the table's middle is swapped for an `error` target
  // right under image bytes [2 MiB, 3 MiB).
  const lower = sparseImage(join(work, 'lower.img'), 48 * MiB);
  const loop = sh('losetup', ['-f', '--show', lower]).trim();
  const dm = `ubloop-bf-${process.pid}`;
  const mnt = join(work, 'mnt');
  mkdirSync(mnt);
  // In this order, also when the scenario fails half-way (after its devices are detached).
  const cleanup = () => {
    if (run('mountpoint', ['-q', mnt]).status === 0) run('umount', [mnt]);
    run('dmsetup', ['remove', '--noudevsync', dm]);
    run('losetup', ['-d', loop]);
  };
  let served: Server | undefined;
  t.teardown(async () => {
    await served?.stop('SIGTERM', 15_000).catch(() => {});
    await unbindAll();
    cleanup();
  });
  const sectors = (48 * MiB) / 512;
  // No udev in the test VM: the node comes from mknodes, and nobody waits for udev.
  sh('dmsetup', ['create', '--noudevsync', dm, '--table', `0 ${sectors} linear ${loop} 0`]);
  sh('dmsetup', ['mknodes', dm]);
  sh('mkfs.ext4', ['-q', '-F', '-b', '4096', `/dev/mapper/${dm}`]);
  sh('mount', [`/dev/mapper/${dm}`, mnt]);
  const image = join(mnt, 'faulty.img');
  sh('dd', ['if=/dev/urandom', `of=${image}`, 'bs=1M', 'count=8', 'conv=fsync', 'status=none']);
  // filefrag -b512: extents in 512-byte units; the first line names logical 0.
  const frag = sh('filefrag', ['-v', '-b512', image]);
  const ext = /^\s*0:\s+0\.\.\s*(\d+):\s+(\d+)\.\./m.exec(frag);
  const extentEnd = Number(ext?.[1] ?? -1);
  const physical = Number(ext?.[2] ?? -1);
  t.ok(ext && extentEnd >= (3 * MiB) / 512, `the image's first extent covers its first 3 MiB (${frag.split('\n')[3]?.trim() ?? frag})`);
  const badStart = physical + (2 * MiB) / 512;
  const badLen = MiB / 512;
  const table = [
    `0 ${badStart} linear ${loop} 0`,
    `${badStart} ${badLen} error`,
    `${badStart + badLen} ${sectors - badStart - badLen} linear ${loop} ${badStart + badLen}`,
  ].join('\n');

  const neighbourImage = sparseImage(join(work, 'neighbour.img'), 16 * MiB);
  const neighbour = await bind(neighbourImage);
  // One device per data path the kernel has (6.1: the kernel copy only), each over the
  // faulty image with O_DIRECT, so every failing read reaches the sick sectors.
  const f = kernelFeatures();
  const has = (flag: string) => f.features?.includes(flag) ?? false;
  const modes = ['kernel', ...(has('UBLK_F_USER_COPY') ? ['user'] : []), ...(has('UBLK_F_SUPPORT_ZERO_COPY') ? ['zero'] : []), ...(has('UBLK_F_AUTO_BUF_REG') ? ['auto-buf'] : [])];
  const faulty: Entry[] = [];
  for (const copy of modes) faulty.push(await bind(image, { directIo: true, copy }));
  const good = readFileSync(image).subarray(MiB, MiB + 4096);
  // And one `ubloop serve` of it: its SIGUSR1 stats and `ubloop list` count the same.
  served = await serve(t, [image, '--direct-io']);
  const servedDev = served.info.path;
  const targets = [
    ...faulty.map((d, i) => ({ label: `--copy ${modes[i] ?? '?'}`, dev: d.path as string, counters: async () => (await entry(d.index as number)).ioErrors })),
    { label: 'serve', dev: servedDev, counters: async () => ((await (served as Server).stats()) as unknown as IoErrors) },
  ];

  sh('dmsetup', ['load', dm, '--table', table]);
  sh('dmsetup', ['resume', '--noudevsync', dm]);
  const fio = fioBackground(neighbour.path as string);
  t.teardown(fio.stop);
  t.ok(await ioStarted(neighbour.ublkPath as string), 'fio is doing I/O on the neighbour before the faults start');
  for (const { label, dev, counters } of targets) {
    const bad = read4k(t, dev, 2 * MiB + 64 * 1024);
    t.not(bad.status, 0, `${label}: a read over the error target fails`);
    t.match(bad.stderr, /Input\/output error/, `${label}: with EIO (${bad.stderr.trim()})`);
    const w = write4k(t, dev, 2 * MiB + 128 * 1024);
    t.not(w.status, 0, `${label}: a write over the error target fails`);
    t.match(w.stderr, /Input\/output error/, `${label}: with EIO (${w.stderr.trim()})`);
    t.same(readDirect(dev, MiB, 4096), good, `${label}: a read elsewhere still returns the image's bytes`);
    t.same(readDirect(dev, 3 * MiB, 4096).length, 4096, `${label}: so does one right after the bad range`);
    t.match(await counters(), { readErrors: 1, writeErrors: 1, flushErrors: 0, discardErrors: 0, lastError: { code: 'EIO', errno: 5 } }, `${label}: the counters show one read and one write error, the last EIO`);
  }
  fio.stop();
  const n = await fio.result;
  t.equal(n.errors, 0, `fio on the neighbour ran without errors meanwhile (${n.ios} I/Os)`);
  t.ok(n.ios > 0, 'and did I/O');
  t.same((await entry(neighbour.index as number)).ioErrors, NO_ERRORS, 'the neighbour counted no errors');

  const l = listed();
  t.same(l.paths, [servedDev, neighbour.ublkPath, ...faulty.map((d) => d.ublkPath)].sort(), 'ubloop list --json shows exactly the scenario\'s devices');
  t.same(l.entries.filter((e) => e.instance !== null).map((e) => [e.state, e.failure]), [...faulty, neighbour].map(() => ['bound', null]), 'the instance devices are all still bound, none failed');
  const first = l.entries.find((e) => e.ublkPath === faulty[0]?.ublkPath);
  t.match(first?.ioErrors, { readErrors: 1, writeErrors: 1, lastError: { code: 'EIO', op: 'write' } }, 'with their error counters');
  const human = daemon.cli(['list']);
  const row = (p: string | null) => human.stdout.split('\n').find((line) => p !== null && line.includes(`${p} `));
  t.match(row(faulty[0]?.ublkPath ?? null), /\sread:1,write:1 last:EIO\s*$/, 'ubloop list shows the errors by op and the last errno');
  t.match(row(neighbour.ublkPath), /\s0\s*$/, 'and 0 for the neighbour');
  t.match(row(servedDev), /\sread:1,write:1 last:EIO\s*$/, 'and the errors of the `ubloop serve` device, from its control socket');
  t.equal((await served.stop()).code, 0, 'serve stops cleanly after the errors');

  sh('dmsetup', ['load', dm, '--table', `0 ${sectors} linear ${loop} 0`]);
  sh('dmsetup', ['resume', '--noudevsync', dm]);
  t.same(await unbindAll(), [], 'every device of the scenario is detached');
  cleanup();
  t.notMatch(run('dmsetup', ['ls']).stdout, dm, 'the device-mapper device is gone (its filesystem unmounted)');
});

scenario('ENOSPC: a sparse image whose filesystem fills up', async (t) => {
  const small = join(dir, 'small');
  mkdirSync(small);
  sh('mount', ['-t', 'tmpfs', '-o', 'size=24M', 'ubloop-bf', small]);
  t.teardown(() => void run('umount', ['-l', small]));
  // 8 MiB of filler leaves 16 MiB for a 64 MiB sparse image.
  const filler = join(small, 'filler');
  writeFileSync(filler, Buffer.alloc(8 * MiB, 1));
  const image = sparseImage(join(small, 'sparse.img'), 64 * MiB);
  const d = await bind(image);
  const dev = d.path as string;
  const data = randomBytes(24 * MiB);
  const source = join(dir, 'enospc-data');
  writeFileSync(source, data);
  const w = ddInto(t, source, dev, 0);
  t.not(w.status, 0, 'writing 24 MiB into 16 MiB of free space fails');
  t.match(w.stderr, /No space left on device/, `the writer sees ENOSPC (${w.stderr.trim()})`);
  const e = await entry(d.index as number);
  t.ok((e.ioErrors?.writeErrors ?? 0) >= 1, `write errors are counted (${e.ioErrors?.writeErrors ?? 'none'})`);
  t.match(e.ioErrors?.lastError, { code: 'ENOSPC', errno: 28, op: 'write' }, 'the last error is ENOSPC on a write');
  t.equal(e.ioErrors?.readErrors, 0, 'no read failed');
  t.equal(e.state, 'bound', 'the device is still bound');
  t.same(readDirect(dev, 0, MiB), data.subarray(0, MiB), 'what was written before the disk filled reads back');
  const again = write4k(t, dev, 20 * MiB);
  t.match(again.stderr, /No space left on device/, 'a write to unallocated space still fails while the disk is full');
  rmSync(filler);
  const later = data.subarray(0, MiB);
  const ok = writeDirect(dev, 20 * MiB, later);
  t.equal(ok.status, 0, `once space is freed, writes succeed again ${ok.stderr.trim()}`);
  t.same(readDirect(dev, 20 * MiB, MiB), later, 'and read back');
  t.same(listed().paths, [d.ublkPath], 'ubloop list --json shows exactly the scenario\'s device');
});

scenario('a deleted image keeps working, shown as "(deleted)" as kernel loop shows it', async (t) => {
  const work = join(dir, 'deleted');
  mkdirSync(work);
  const image = sparseImage(join(work, 'gone.img'), 16 * MiB);
  const twin = sparseImage(join(work, 'gone-loop.img'), 16 * MiB);
  const d = await bind(image);
  const loop = sh('losetup', ['-f', '--show', twin]).trim();
  t.teardown(() => void run('losetup', ['-d', loop]));
  const dev = d.path as string;
  const before = randomBytes(MiB);
  t.equal(writeDirect(dev, 0, before).status, 0, 'written before the delete');
  unlinkSync(image);
  unlinkSync(twin);
  const after = randomBytes(MiB);
  t.equal(writeDirect(dev, 4 * MiB, after).status, 0, 'a write after the delete succeeds');
  t.same(readDirect(dev, 0, MiB), before, 'data written before reads back');
  t.same(readDirect(dev, 4 * MiB, MiB), after, 'so does data written after');
  const kernel = readFileSync(`/sys/block/${loop.replace('/dev/', '')}/loop/backing_file`, 'utf8').trim();
  t.equal(kernel, `${twin} (deleted)`, 'kernel loop names the file "(deleted)"');
  const e = await entry(d.index as number);
  t.match(e.backing, { path: image, deleted: true }, 'the entry says the image is deleted');
  t.same(e.ioErrors, NO_ERRORS, 'no request failed');
  const l = listed();
  t.same(l.paths, [d.ublkPath], 'ubloop list --json shows exactly the scenario\'s device');
  const human = daemon.cli(['list']);
  t.match(human.stdout, `${image} (deleted)`, 'ubloop list shows the backing file as kernel loop does');
});

scenario('a truncated image reads zeros past its end and grows again on writes', async (t) => {
  const work = join(dir, 'truncated');
  mkdirSync(work);
  const content = randomBytes(8 * MiB);
  const ours = join(work, 'ours.img');
  const theirs = join(work, 'theirs.img');
  writeFileSync(ours, content);
  writeFileSync(theirs, content);
  const d = await bind(ours);
  const loop = sh('losetup', ['-f', '--show', theirs]).trim();
  t.teardown(() => void run('losetup', ['-d', loop]));
  const dev = d.path as string;
  // Not a multiple of the sector size: a request straddles the new end.
  const cut = 3 * MiB + 1536;
  truncateSync(ours, cut);
  truncateSync(theirs, cut);
  t.ok(readDirect(dev, 0, 3 * MiB).equals(content.subarray(0, 3 * MiB)), 'the bytes before the new end are the image\'s');
  t.ok(readDirect(loop, 0, 3 * MiB).equals(content.subarray(0, 3 * MiB)), 'as on kernel loop');
  const tail = readDirect(dev, 3 * MiB, 5 * MiB);
  t.ok(tail.subarray(0, 1536).equals(content.subarray(3 * MiB, cut)), 'a read across the new end gets the image\'s last bytes');
  t.ok(tail.subarray(1536).equals(Buffer.alloc(5 * MiB - 1536)), 'then zeros up to the device\'s end');
  // Kernel loop fills a short buffered read with zeros on 6.1 (lo_read_simple) but, where
  // it reads through lo_rw_aio (7.x, and --direct-io everywhere), fails what lies past
  // the end with EIO: ubloop reads zeros on every kernel (README, "Backing faults").
  const theirTail = run('dd', [`if=${loop}`, 'of=/dev/null', 'bs=64K', `skip=${4 * MiB}`, 'count=1', 'iflag=direct,skip_bytes', 'status=none']);
  t.comment(`kernel loop past the new end: ${theirTail.status === 0 ? 'zeros' : theirTail.stderr.trim()}`);
  t.equal(Number(sh('blockdev', ['--getsize64', dev]).trim()), 8 * MiB, 'the device keeps its size');
  const data = randomBytes(64 * 1024);
  t.equal(writeDirect(dev, 6 * MiB, data).status, 0, 'a write past the new end succeeds');
  t.equal(writeDirect(loop, 6 * MiB, data).status, 0, 'as on kernel loop');
  t.equal(statSync(ours).size, statSync(theirs).size, `the image grows back as kernel loop's does (${statSync(ours).size} bytes)`);
  const grown = 6 * MiB + 64 * 1024;
  t.ok(readDirect(dev, 0, grown).equals(readDirect(loop, 0, grown)), 'and both devices read the same up to its new end');
  t.same((await entry(d.index as number)).ioErrors, NO_ERRORS, 'no request failed');
  t.same(listed().paths, [d.ublkPath], 'ubloop list --json shows exactly the scenario\'s device');
});

t.test('after every scenario nothing is left', async (t) => {
  t.same(listed().paths, [], 'ubloop list --json shows no device');
  t.equal(ublkCount(), baseline, 'no ublk device is left');
});
