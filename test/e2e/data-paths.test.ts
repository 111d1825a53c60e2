// ubloop-e2e-kernels: >=7.0 -- the user-copy, zero-copy and auto-registration paths need UBLK_F_USER_COPY, UBLK_F_SUPPORT_ZERO_COPY and UBLK_F_AUTO_BUF_REG (Linux 6.15+ for all three); 6.1's one path is what every other file tests
// Issue 10: every data path (--copy kernel|user|zero|auto-buf) keeps every byte, over
// O_DIRECT and buffered images, with 1 and 2 queues; reads past the image's end give
// zeros, never what the request's pages held before; and the device says which path
// it uses. The default (auto) is automatic registration for root.
import t, { type Test } from 'tap';
import { spawnSync } from 'node:child_process';
import { truncateSync } from 'node:fs';
import { join } from 'node:path';
import { MiB, fio, ioEngine, run, serve, sparseImage, waitGone, workDir, writeDirect } from '../helpers/e2e.js';

const MODES = ['kernel', 'user', 'zero', 'auto-buf'] as const;
const DEVICE = 64 * MiB;
const WRITE = 32 * MiB;
const engine = ioEngine();

/** Reads len bytes at offset through the page cache (fresh page-cache pages are the request's pages). */
function readBuffered(dev: string, offset: number, len: number): Buffer {
  const r = spawnSync('dd', [`if=${dev}`, 'bs=1M', `skip=${offset}`, `count=${len}`, 'iflag=skip_bytes,count_bytes', 'status=none'], {
    maxBuffer: len + MiB,
    timeout: 120_000,
  });
  if (r.status !== 0) throw new Error(`dd read of ${dev} failed: ${String(r.stderr).trim()}`);
  return r.stdout;
}

/** The distinct byte values in b, as hex. */
function bytesSeen(b: Buffer): string[] {
  const seen = new Set<number>(b);
  return [...seen].sort((x, y) => x - y).map((x) => x.toString(16).padStart(2, '0'));
}

function verify(t: Test, dev: string, label: string): void {
  const r = fio([
    '--name=verify',
    `--filename=${dev}`,
    '--rw=randwrite',
    '--bsrange=4k-1m',
    '--iodepth=32',
    `--ioengine=${engine}`,
    '--direct=1',
    // Two jobs, one per CPU, each over its own half: every queue gets requests.
    '--numjobs=2',
    `--size=${WRITE / 2}`,
    `--offset_increment=${DEVICE / 2}`,
    '--cpus_allowed=0-1',
    '--cpus_allowed_policy=split',
    '--group_reporting',
    '--verify=crc32c',
    '--do_verify=1',
    '--verify_fatal=1',
    '--verify_state_save=0',
    '--randseed=4321',
  ]);
  const job = r.jobs[0];
  t.equal(r.status, 0, `${label}: fio exits 0 ${r.stderr.trim().slice(0, 400)}`);
  t.equal(job?.error, 0, `${label}: no fio error (a verify error shows as EILSEQ)`);
  t.ok((job?.read.io_bytes ?? 0) >= WRITE, `${label}: read back ${job?.read.io_bytes} bytes to verify`);
  t.notMatch(r.stderr, /verify: bad|crc32c: verify failed/, `${label}: no verify failure reported`);
}

for (const copy of MODES) {
  for (const [queues, directIo] of [
    [1, true],
    [2, false],
  ] as const) {
    const label = `--copy ${copy}, ${queues} queue${queues > 1 ? 's' : ''}, ${directIo ? 'O_DIRECT' : 'buffered'} image`;
    t.test(`fio crc32c verify, bs 4k-1M: ${label}`, async (t) => {
      const image = sparseImage(join(workDir(t, directIo), 'paths.img'), DEVICE);
      const s = await serve(t, [image, '--copy', copy, '--queues', String(queues), '--depth', '64', ...(directIo ? ['--direct-io'] : [])]);
      t.equal(s.info['dataPath'], copy, `serve --json names the data path: ${String(s.info['dataPath'])}`);
      verify(t, s.info.path, label);
      const st = await s.stats();
      t.equal(st.dataPath, copy, 'the stats name the data path');
      t.equal(st.errors, 0, 'the server counted no I/O errors');
      if (copy === 'zero') t.ok(st.registrations > 0, `zero copy registered ${st.registrations} request buffers`);
      else t.equal(st.registrations, 0, 'no explicit buffer registrations in this path');
      if (queues > 1) t.ok(st.queues.every((q) => q.ops > 0), `every queue served requests (${st.queues.map((q) => q.ops).join(', ')})`);
      t.equal((await s.stop()).code, 0, 'serve exits 0');
      t.same(await waitGone(s.info.id), [], 'device removed');
    });
  }

  t.test(`--copy ${copy}: a read past the end of a shrunk image gives zeros, not old page contents`, async (t) => {
    const image = sparseImage(join(workDir(t, false), 'short.img'), 16 * MiB);
    const s = await serve(t, [image, '--copy', copy]);
    // Fill the tail through the device, then drop the block device's cached pages:
    // those freed pages, full of 0x5a, are what new page-cache pages are likely to
    // be made of. The image then loses its second half.
    const tail = 8 * MiB;
    t.equal(writeDirect(s.info.path, tail, Buffer.alloc(4 * MiB, 0x5a)).status, 0, 'wrote 0x5a over the tail');
    t.equal(run('dd', [`if=${s.info.path}`, 'of=/dev/null', 'bs=1M', `skip=${tail / MiB}`, 'count=4', 'status=none']).status, 0, 'read it into the page cache');
    t.equal(run('blockdev', ['--flushbufs', s.info.path]).status, 0, 'dropped the device page cache');
    truncateSync(image, tail);
    const past = readBuffered(s.info.path, tail, 4 * MiB);
    t.equal(past.length, 4 * MiB, 'read 4 MiB past the image end');
    t.same(bytesSeen(past), ['00'], `only zero bytes past the end (bytes seen: ${bytesSeen(past).join(' ')})`);
    t.equal((await s.stats()).errors, 0, 'no I/O errors');
    t.equal((await s.stop()).code, 0, 'serve exits 0');
  });

  if (copy === 'zero' || copy === 'auto-buf') {
    // The copy-less paths fill a READ's pages themselves; the copying ones hand over
    // the queue's own buffer, which holds what an earlier request left there.
    t.test(`--copy ${copy}: the null target reads zeros, not old page contents`, async (t) => {
      const s = await serve(t, ['--target', 'null', '--size', '64M', '--copy', copy]);
      t.equal(s.info['dataPath'], copy, 'the data path');
      // Buffered writes of 0x77 fill page-cache pages that the flush then frees.
      const w = spawnSync('dd', [`of=${s.info.path}`, 'bs=1M', 'status=none'], { input: Buffer.alloc(8 * MiB, 0x77), timeout: 120_000 });
      t.equal(w.status, 0, `8 MiB of 0x77 written through the page cache ${String(w.stderr).trim()}`);
      t.equal(run('blockdev', ['--flushbufs', s.info.path]).status, 0, 'written back and dropped the device page cache');
      const got = readBuffered(s.info.path, 0, 8 * MiB);
      t.same(bytesSeen(got), ['00'], `only zeros (bytes seen: ${bytesSeen(got).join(' ')})`);
      t.equal((await s.stop()).code, 0, 'serve exits 0');
    });
  }
}

t.test('auto-buf: a request whose automatic registration fails is registered by the queue instead', async (t) => {
  const image = sparseImage(join(workDir(t, true), 'fallback.img'), DEVICE);
  // The hook makes every 7th FETCH/COMMIT name a buffer index that is always taken.
  const s = await serve(t, [image, '--copy', 'auto-buf', '--direct-io', '--depth', '64'], 180_000, { UBLOOP_INJECT_AUTO_REG_FAIL: '7' });
  t.ok(s.info.flags.includes('UBLK_F_SUPPORT_ZERO_COPY'), 'the device has explicit registration to fall back on');
  verify(t, s.info.path, 'auto-buf with failing automatic registrations');
  const st = await s.stats();
  t.ok(st.registrations > 0, `the queue registered ${st.registrations} requests itself after failed automatic registrations`);
  t.ok(st.registrations < st.ops, `and only those: ${st.registrations} of ${st.ops} requests`);
  t.equal(st.errors, 0, 'no I/O errors');
  t.equal((await s.stop()).code, 0, 'serve exits 0');
});

t.test('auto (the default) picks automatic registration for root on this kernel', async (t) => {
  const s = await serve(t, ['--target', 'null', '--size', '64M']);
  t.equal(s.info['dataPath'], 'auto-buf', 'dataPath auto-buf');
  t.ok(s.info.flags.includes('UBLK_F_AUTO_BUF_REG'), 'granted UBLK_F_AUTO_BUF_REG');
  t.ok(s.info.flags.includes('UBLK_F_SUPPORT_ZERO_COPY'), 'and UBLK_F_SUPPORT_ZERO_COPY, for the per-request fallback');
  t.equal((await s.stop()).code, 0);
});
