// A queue thread that stops serving must not leave a device that looks healthy (issue 8).
import t from 'tap';
import { join } from 'node:path';
import { MiB, run, serve, sleep, sparseImage, waitGone, workDir } from '../helpers/e2e.js';
import { jsonOut, startDaemon } from '../helpers/daemon.js';

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

  // serve checks its queues once a second; a loaded emulated guest may take several.
  // It writes the stderr message and the JSON line together, but they come through two
  // pipes, so either may be read first: wait for both.
  const failedLine = () => s.lines.map((l) => JSON.parse(l) as { failed?: { failure: string } }).find((l) => l.failed);
  for (let i = 0; i < 300 && !(/ublkb\d+ failed/.test(s.stderr()) && failedLine()); i++) await sleep(100);
  t.match(s.stderr(), /ublkb\d+ failed: queue 0: io_uring_enter failed: Input\/output error \(EIO\)/, 'serve says on stderr which queue failed and why');
  const notice = failedLine();
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

t.test('a daemon device whose queue fails shows as failed in ubloop list and the daemon log', async (t) => {
  const dir = workDir(t);
  const image = sparseImage(join(dir, 'dfail.img'), 64 * MiB);
  const d = await startDaemon(t, dir, ['--sweep-interval', '200'], undefined, { UBLOOP_INJECT_QUEUE_FAULT: 'EIO:40' });
  await d.admin().request({ op: 'instance.create', name: 'qf' });
  const a = d.cli(['attach', '--instance', 'qf', image]);
  t.equal(a.status, 0, `attached: ${a.stderr}`);
  const node = a.stdout.trim();
  type Entry = { index: number; state: string; ublkPath: string | null; ublkId: number | null; failure: string | null };
  // The state through the socket API (a CLI start costs seconds in the emulated guest);
  // `ubloop list` itself is checked once the device has failed.
  const entry = async () => ((await d.instance('qf').request({ op: 'list' }))['devices'] as Entry[]).find((e) => e.index === 0);
  const before = await entry();
  t.equal(before?.failure, null, 'healthy before the fault');
  const ublkId = before?.ublkId ?? -1;

  const w = run('timeout', ['60', 'dd', 'if=/dev/zero', `of=${node}`, 'bs=4k', 'count=5000', 'oflag=direct', 'status=none']);
  t.not(w.status, 124, 'the writer did not hang');
  t.not(w.status, 0, `the writer saw its I/O fail (${w.stderr.trim()})`);

  for (let i = 0; i < 300 && !/qf\/loop0 .* failed/.test(d.stderr()); i++) await sleep(100);
  t.match(d.stderr(), /qf\/loop0 \(\/dev\/ublkb\d+\) failed: queue 0: io_uring_enter failed: Input\/output error \(EIO\)/, 'the daemon log names the device, the queue and the error');
  const listed = jsonOut<Entry[]>(d.cli(['list', '--json', '--instance', 'qf'])).find((e) => e.index === 0);
  t.match(listed?.failure ?? '', /queue 0: io_uring_enter.*EIO/, 'ubloop list --json gives the failure');
  const table = d.cli(['list', '--instance', 'qf']);
  t.match(table.stdout, /^qf\s+0\s+failed\s/m, 'ubloop list shows the device as failed');

  const r = run('timeout', ['30', 'dd', `if=${node}`, 'of=/dev/null', 'bs=4k', 'count=1', 'iflag=direct', 'status=none']);
  t.not(r.status, 124, 'a later read does not hang');
  t.not(r.status, 0, `a later read fails (${r.stderr.trim()})`);
  const det = d.cli(['detach', '--instance', 'qf', '0']);
  t.equal(det.status, 0, `the failed device detaches: ${det.stderr}`);
  const after = await entry();
  t.ok(after === undefined || (after.state === 'unbound' && after.failure === null), `loop0 is no longer bound or failed (${JSON.stringify(after)})`);
  t.same(await waitGone(ublkId), [], 'its ublk device is deleted');
});
