// A queue thread that stops serving must not leave a device that looks healthy, and
// the idle release of a queue's buffers must never lose a write (issue 8).
import t from 'tap';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { MiB, readDirect, run, serve, sleep, sparseImage, waitGone, workDir, writeDirect } from '../helpers/e2e.js';

t.test('a queue whose ring fails shows as failed, and its I/O fails instead of hanging', async (t) => {
  const image = sparseImage(join(workDir(t), 'fail.img'), 64 * MiB);
  // The test hook makes the queue loop's 40th wait fail as if io_uring_enter had
  // answered EIO; the queue thread then stops serving.
  const s = await serve(t, [image, '--poll-us', '0'], 60_000, { UBLOOP_INJECT_QUEUE_FAULT: 'EIO:40' });
  const before = await s.stats();
  t.equal(before.failed, false, 'healthy before the fault');

  const started = Date.now();
  const w = run('timeout', ['60', 'dd', 'if=/dev/zero', `of=${s.info.path}`, 'bs=4k', 'count=5000', 'oflag=direct', 'status=none']);
  t.not(w.status, 124, `the writer did not hang (${Date.now() - started} ms)`);
  t.not(w.status, 0, 'the writer saw its I/O fail');
  t.match(w.stderr, /Input\/output error|No such device|No such device or address/, `with an I/O error: ${w.stderr.trim()}`);

  for (let i = 0; i < 50 && !/failed/.test(s.stderr()); i++) await sleep(100);
  t.match(s.stderr(), /ublkb\d+ failed: queue 0: io_uring_enter failed: Input\/output error \(EIO\)/, 'serve says on stderr which queue failed and why');
  const notice = s.lines.map((l) => JSON.parse(l) as { failed?: { failure: string } }).find((l) => l.failed);
  t.match(notice?.failed?.failure ?? '', /EIO/, 'serve --json prints a "failed" line');
  const after = await s.stats();
  t.equal(after.failed, true, 'SIGUSR1 stats say failed');
  t.match(after.queues[0]?.failure ?? '', /io_uring_enter.*EIO/, 'and name the queue\'s error');

  const r = run('timeout', ['30', 'dd', `if=${s.info.path}`, 'of=/dev/null', 'bs=4k', 'count=1', 'iflag=direct', 'status=none']);
  t.not(r.status, 124, 'a later read does not hang');
  t.not(r.status, 0, `a later read fails (${r.stderr.trim()})`);

  const exit = await s.stop('SIGTERM', 30_000);
  t.equal(exit.code, 1, 'serve exits 1 after a failure');
  t.same(await waitGone(s.info.id), [], 'the device is removed');
});

t.test('writes that arrive just after an idle buffer release are all kept', async (t) => {
  const image = sparseImage(join(workDir(t, true), 'idle.img'), 64 * MiB);
  const s = await serve(t, [image, '--direct-io']);
  const rounds = 12;
  const bursts: Buffer[] = [];
  for (let i = 0; i < rounds; i++) {
    // The queue releases its buffers after 2 s with nothing to do: each burst comes
    // just after that, when a request is delivered into freshly released pages.
    await sleep(2100 + (i % 3) * 50);
    const data = randomBytes(256 * 1024);
    bursts.push(data);
    const w = writeDirect(s.info.path, i * MiB, data);
    t.equal(w.status, 0, `burst ${i} written`);
  }
  const st = await s.stats();
  t.ok(st.bufferReleases >= rounds - 2, `the queue released its buffers ${st.bufferReleases} times between bursts`);
  bursts.forEach((data, i) => t.ok(readDirect(s.info.path, i * MiB, data.length).equals(data), `burst ${i} reads back intact`));
  t.equal(st.errors, 0, 'no I/O errors');
  t.equal((await s.stop()).code, 0, 'serve exits 0');
});
