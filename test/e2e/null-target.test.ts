// The null target: a device of the requested size whose I/O the engine completes at
// once; fio random reads run on it and the server's counters see them.
import t from 'tap';
import { blockdevSize, fio, ioEngine, serve, waitGone } from '../helpers/e2e.js';

t.test('null target: requested size, fio randread runs, counters count it', async (t) => {
  const s = await serve(t, ['--target', 'null', '--size', '1G', '--queues', '2']);
  t.match(s.info.path, /^\/dev\/ublkb\d+$/, `device ${s.info.path}`);
  t.equal(s.info.size, 2 ** 30, 'info reports 1 GiB');
  t.equal(blockdevSize(s.info.path), 2 ** 30, 'blockdev --getsize64 is 1 GiB');
  t.equal(s.info.queues, 2, 'two queues');
  t.equal(s.info.state, 'live');

  const f = fio([
    '--name=nullread',
    `--filename=${s.info.path}`,
    '--rw=randread',
    '--bs=4k',
    '--iodepth=32',
    `--ioengine=${ioEngine()}`,
    '--direct=1',
    '--time_based',
    '--runtime=3',
    '--numjobs=1',
  ]);
  t.equal(f.status, 0, `fio exits 0 ${f.stderr.trim()}`);
  const job = f.jobs[0];
  t.ok(job, 'fio reported a job');
  if (!job) return;
  t.equal(job.error, 0, 'no fio error');
  t.ok(job.read.total_ios > 100, `fio completed ${job.read.total_ios} reads`);
  t.comment(`null randread: ${job.read.total_ios} ios in 3 s`);

  const st = await s.stats();
  t.ok(st.ops >= job.read.total_ios, `server counted ${st.ops} ops >= fio's ${job.read.total_ios}`);
  t.ok(st.bytesRead >= job.read.io_bytes, 'server counted the bytes read');
  t.equal(st.errors, 0, 'no errors');
  t.equal(st.queues.length, 2, 'stats for both queues');

  const e = await s.stop('SIGTERM');
  t.equal(e.code, 0, 'serve exits 0 on SIGTERM');
  t.same(await waitGone(s.info.id), [], 'device removed');
});
