// Crash recovery (UBLK_F_USER_RECOVERY): the server is SIGKILLed under a mounted ext4
// filesystem, a new one takes the device over, and the filesystem above sees a pause:
// fio's crc32c verify finds every block, e2fsck finds the filesystem clean, `sync`
// issued during the outage completes after it. A device whose image is gone when the
// daemon comes back fails its held I/O with EIO and is deleted instead of hanging.
// The kill moments are random: replay a run with UBLK_RECOVERY_SEED=<seed> (UBLK_* reaches the test VM);
// UBLK_RECOVERY_FIO_MB sets the size fio writes per round (default 32).
import t, { type Test } from 'tap';
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { MiB, cli, ioEngine, mount, run, serve, sh, sleep, sparseImage, waitGone, workDir, type Server } from '../helpers/e2e.js';
import { jsonOut, startDaemon, ublkCount, type DaemonHandle } from '../helpers/daemon.js';
import { rng } from '../helpers/random.js';

const SEED = Number(process.env['UBLK_RECOVERY_SEED'] ?? Date.now() % 2 ** 31);
const FIO_MB = Number(process.env['UBLK_RECOVERY_FIO_MB'] ?? 32);
const KILLS = 3;
const engine = ioEngine();
t.comment(`seed ${SEED} (replay with UBLK_RECOVERY_SEED=${SEED}); fio writes ${FIO_MB} MiB per round`);


interface FioResult {
  status: number | null;
  stdout: string;
  stderr: string;
}

function startFio(file: string, seed: number): { done: Promise<FioResult>; running: () => boolean } {
  const p = spawn('fio', [
    '--output-format=json',
    '--name=recover',
    `--filename=${file}`,
    `--size=${FIO_MB}M`,
    '--rw=randwrite',
    '--bsrange=4k-64k',
    '--iodepth=16',
    `--ioengine=${engine}`,
    '--direct=1',
    '--verify=crc32c',
    '--do_verify=1',
    '--verify_fatal=1',
    '--verify_state_save=0',
    `--randseed=${seed}`,
  ]);
  let stdout = '';
  let stderr = '';
  p.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  p.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  let over = false;
  const timer = setTimeout(() => p.kill('SIGKILL'), 300_000);
  const done = new Promise<FioResult>((r) =>
    p.on('exit', (status) => {
      over = true;
      clearTimeout(timer);
      r({ status, stdout, stderr });
    }),
  );
  return { done, running: () => !over };
}

/**
 * Runs fio verify rounds on file and kills the server KILLS times at random moments
 * while a round runs (a round that ends first is followed by another), then lets the
 * last round finish. Every round must end clean.
 */
async function fioUnderKills(t: Test, file: string, label: string, crash: (n: number) => Promise<void>): Promise<void> {
  const rand = rng(SEED ^ label.length);
  const rounds: Promise<FioResult>[] = [];
  let current: ReturnType<typeof startFio> | null = null;
  let kills = 0;
  const started = Date.now();
  while (kills < KILLS) {
    if (!current || !current.running()) {
      current = startFio(file, SEED + rounds.length);
      rounds.push(current.done);
    }
    const delay = 300 + Math.floor(rand() * 1700);
    const ended = await Promise.race([sleep(delay).then(() => false), current.done.then(() => true)]);
    if (ended) continue;
    kills++;
    const t0 = Date.now();
    await crash(kills);
    t.comment(`${label}: kill ${kills} ${delay} ms into the run; serving again ${Date.now() - t0} ms later`);
  }
  const results = await Promise.all(rounds);
  t.comment(`${label}: ${results.length} fio round(s), ${Date.now() - started} ms in all`);
  results.forEach((r, i) => {
    t.equal(r.status, 0, `${label}: fio round ${i + 1} exits 0 ${r.stderr.trim().slice(0, 300)}`);
    const json = r.stdout.slice(Math.max(0, r.stdout.indexOf('{')));
    let jobs: { error: number; write: { io_bytes: number }; read: { io_bytes: number } }[] = [];
    try {
      jobs = (JSON.parse(json) as { jobs: typeof jobs }).jobs;
    } catch {
      t.fail(`${label}: fio round ${i + 1} printed no JSON report`);
    }
    t.equal(jobs[0]?.error, 0, `${label}: fio round ${i + 1}: no I/O or verify error`);
    t.ok((jobs[0]?.read.io_bytes ?? 0) >= FIO_MB * MiB, `${label}: fio round ${i + 1} read back all it wrote to verify it`);
    t.notMatch(r.stderr, /verify: bad|verify failed|Input\/output error/, `${label}: fio round ${i + 1}: no verify failure or EIO`);
  });
}

interface ListEntry {
  instance: string | null;
  index: number | null;
  ublkId: number | null;
  state: string;
  serverPid?: number;
}

/** `ubloop list --json` (with the daemon's socket, or none) as [instance, index, ublkId]. */
function listed(d: DaemonHandle | null): [string | null, number | null, number | null][] {
  const r = d ? d.cli(['list', '--json']) : cli(['list', '--json', '--socket', '/nonexistent/ubloop.sock']);
  return jsonOut<ListEntry[]>(r).map((e) => [e.instance, e.index, e.ublkId]);
}

function ublkIdOf(d: DaemonHandle, instance: string, index: number): number {
  const e = jsonOut<ListEntry[]>(d.cli(['list', '--json'])).find((x) => x.instance === instance && x.index === index);
  if (e?.ublkId == null) throw new Error(`${instance}/loop${index} has no device`);
  return e.ublkId;
}

/** p, or 'timeout' after ms (the timer does not outlive the wait). */
async function within<T>(p: Promise<T>, ms: number): Promise<T | 'timeout'> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([p, new Promise<'timeout'>((r) => (timer = setTimeout(() => r('timeout'), ms)))]);
  } finally {
    clearTimeout(timer);
  }
}

function fsck(t: Test, dev: string): void {
  const r = run('e2fsck', ['-fn', dev]);
  t.equal(r.status, 0, `e2fsck -fn is clean: ${r.stdout.trim().split('\n').slice(-1).join('')} ${r.stderr.trim()}`);
}

t.test('daemon: fio verify through ext4 while the daemon is SIGKILLed 3 times and restarted', async (t) => {
  const dir = workDir(t, true);
  const image = sparseImage(join(dir, 'r.img'), (FIO_MB + 64) * MiB);
  const state = join(dir, 'state.json');
  const before = ublkCount();
  let d = await startDaemon(t, dir, [], state);
  t.equal(d.cli(['instance', 'create', 'r']).status, 0);
  // O_DIRECT on the image: the dead server's writes do not pile up in the page cache
  const node = d.cli(['attach', '--instance', 'r', image, '--direct-io']).stdout.trim();
  const id = ublkIdOf(d, 'r', 0);
  const rdev = statSync(node).rdev;
  const saved = JSON.parse(readFileSync(state, 'utf8')) as { instances: { bindings: { ublkId?: number }[] }[] };
  t.equal(saved.instances[0]?.bindings[0]?.ublkId, id, 'the state file records the binding\'s ublk id');
  sh('mkfs.ext4', ['-q', '-F', '-E', 'nodiscard', node]);
  const mnt = join(dir, 'mnt');
  mkdirSync(mnt);
  mount(t, node, mnt);

  await fioUnderKills(t, join(mnt, 'fio.dat'), 'daemon', async (n) => {
    await d.kill();
    d = await startDaemon(t, dir, [], state);
    t.match(d.stderr(), /restored 1 instance\(s\) and 1 device\(s\) .*\(1 recovered from the previous run\)/, `restart ${n}: the device was taken over, not created`);
    t.comment(`restart ${n}: ${/took \/dev\/ublkb\d+ over .*/.exec(d.stderr())?.[0] ?? ''}`);
  });

  t.same(listed(d), [['r', 0, id]], 'ubloop list: the one device, under its old ublk id');
  t.equal(statSync(node).rdev, rdev, 'loop0 is the same block device (same device number)');
  const info = jsonOut<ListEntry[]>(cli(['list', '--json', '--socket', '/nonexistent/ubloop.sock'])).find((e) => e.ublkId === id);
  t.equal(info?.serverPid, d.proc.pid, 'the new daemon serves it');
  sh('umount', [mnt]);
  fsck(t, node);
  await d.stop();
  t.equal(ublkCount(), before, 'a clean stop deletes the device, as before');
});

t.test('serve: fio verify through ext4 while serve is SIGKILLed 3 times and taken over with --recover', async (t) => {
  const dir = workDir(t, true);
  const image = sparseImage(join(dir, 's.img'), (FIO_MB + 64) * MiB);
  const before = ublkCount();
  let s: Server = await serve(t, [image, '--direct-io', '--recovery', 'reissue']);
  const id = s.info.id;
  t.ok(s.info.flags.includes('UBLK_F_USER_RECOVERY') && s.info.flags.includes('UBLK_F_USER_RECOVERY_REISSUE'), 'added recoverable, reissuing');
  const busy = cli(['serve', image, '--recover', String(id)], { timeout: 60_000 });
  t.not(busy.status, 0, '--recover of a live device is refused');
  t.match(busy.stderr, new RegExp(`cannot recover ublk device ${id}: ublk device ${id} is live, served by pid ${s.proc.pid}`));
  sh('mkfs.ext4', ['-q', '-F', '-E', 'nodiscard', s.info.path]);
  const mnt = join(dir, 'mnt');
  mkdirSync(mnt);
  mount(t, s.info.path, mnt);

  await fioUnderKills(t, join(mnt, 'fio.dat'), 'serve', async () => {
    await s.stop('SIGKILL');
    s = await serve(t, [image, '--direct-io', '--recover', String(id)]);
    t.equal(s.info.id, id, 'the same device, taken over');
  });

  t.same(listed(null), [[null, null, id]], 'ubloop list: the one device');
  sh('umount', [mnt]);
  fsck(t, s.info.path);
  const e = await s.stop();
  t.equal(e.code, 0, 'the last serve stops cleanly');
  t.same(await waitGone(id), [], 'and deletes the device');
  t.equal(ublkCount(), before);
});

t.test('daemon down: sync waits and completes after the restart; a device whose image was deleted fails its held I/O with EIO and goes', async (t) => {
  const dir = workDir(t);
  const image = sparseImage(join(dir, 'y.img'), 64 * MiB);
  const doomed = sparseImage(join(dir, 'g.img'), 16 * MiB);
  const state = join(dir, 'state.json');
  const before = ublkCount();
  let d = await startDaemon(t, dir, [], state);
  t.equal(d.cli(['instance', 'create', 'y']).status, 0);
  const node = d.cli(['attach', '--instance', 'y', image]).stdout.trim();
  const gnode = d.cli(['attach', '--instance', 'y', doomed]).stdout.trim();
  const id = ublkIdOf(d, 'y', 0);
  const gid = ublkIdOf(d, 'y', 1);
  sh('mkfs.ext4', ['-q', '-F', '-E', 'nodiscard', node]);
  const mnt = join(dir, 'mnt');
  mkdirSync(mnt);
  mount(t, node, mnt);
  sh('sync', []);
  const data = randomBytes(3 * MiB + 123);
  const src = join(dir, 'src.bin');
  writeFileSync(src, data);

  await d.kill();
  // Both in children: the write itself may wait for the device (ext4 reading its
  // bitmaps), and this process must go on to start the next daemon.
  const sync = spawn('sh', ['-c', 'cp "$1" "$2" && sync "$2"', 'sh', src, join(mnt, 'during-outage.bin')], { stdio: 'ignore' });
  let syncedAt = 0;
  const synced = new Promise<number | null>((r) =>
    sync.on('exit', (code) => {
      syncedAt = Date.now();
      r(code);
    }),
  );
  const reader = spawn('dd', [`if=${gnode}`, 'of=/dev/null', 'bs=4096', 'count=1', 'skip=7', 'iflag=direct'], { stdio: ['ignore', 'ignore', 'pipe'] });
  let readerErr = '';
  reader.stderr.setEncoding('utf8').on('data', (s: string) => (readerErr += s));
  const readerDone = new Promise<number | null>((r) => reader.on('exit', (code) => r(code)));
  rmSync(doomed);
  await sleep(1500);
  t.equal(syncedAt, 0, 'the write and sync wait while nobody serves the device');
  t.equal(reader.exitCode, null, 'so does the read of the other device');

  const restart = Date.now();
  d = await startDaemon(t, dir, [], state);
  t.match(d.stderr(), /restored 1 instance\(s\) and 1 device\(s\) .*\(1 recovered from the previous run\)/, 'loop0 was taken over');
  t.match(d.stderr(), new RegExp(`not restored: y/loop1: cannot reopen .*g\\.img.*; /dev/ublkb${gid} was deleted, its held I/O failed with EIO`), 'loop1 could not be: the daemon says what it did');
  t.equal(await within(synced, 30_000), 0, 'sync completes after the restart');
  t.comment(`sync completed ${syncedAt - restart} ms after the new daemon was started`);
  const code = await within(readerDone, 30_000);
  t.not(code, 'timeout', 'the held read ends within 30 s');
  t.not(code, 0, 'and fails');
  t.match(readerErr, /Input\/output error/, 'with EIO');
  t.comment(`the held read failed ${Date.now() - restart} ms after the new daemon was started`);
  t.same(await waitGone(gid, 10_000), [], 'the device of the deleted image is deleted');

  sh('umount', [mnt]);
  mount(t, node, mnt);
  t.equal(createHash('sha256').update(readFileSync(join(mnt, 'during-outage.bin'))).digest('hex'), createHash('sha256').update(data).digest('hex'), 'the file written during the outage is on the device');
  sh('umount', [mnt]);
  fsck(t, node);
  t.same(listed(d), [['y', 0, id]], 'ubloop list: loop0 under its old id, nothing else');
  await d.stop();
  t.equal(ublkCount(), before);
});
