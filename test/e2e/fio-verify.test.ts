// fio random writes with crc32c verification through /dev/ublkbN, with 1 and 2 queues,
// over O_DIRECT and buffered backing: every block read back must match. A second pass
// after restarting the server verifies the same data again, from the image.
import t, { type Test } from 'tap';
import { join } from 'node:path';
import { MiB, fio, ioEngine, serve, sleep, sparseImage, waitGone, workDir, type FioJob } from '../helpers/e2e.js';

const DEVICE = 64 * MiB;
const WRITE = 24 * MiB; // per run; sized for a 2-core TCG guest

function verifyArgs(dev: string, engine: string, extra: string[]): string[] {
  return [
    '--name=verify',
    `--filename=${dev}`,
    '--rw=randwrite',
    '--bsrange=4k-64k',
    '--iodepth=32',
    `--ioengine=${engine}`,
    '--direct=1',
    `--size=${WRITE}`,
    '--verify=crc32c',
    '--do_verify=1',
    '--verify_fatal=1',
    '--verify_state_save=0',
    '--randseed=1234',
    ...extra,
  ];
}

function checkJob(t: Test, label: string, r: ReturnType<typeof fio>): FioJob | undefined {
  const job = r.jobs[0];
  t.equal(r.status, 0, `${label}: fio exits 0 ${r.stderr.trim().slice(0, 400)}`);
  t.ok(job, `${label}: fio printed its JSON report`);
  if (!job) return undefined;
  t.equal(job.error, 0, `${label}: no fio error (verify errors show as EILSEQ here)`);
  t.notMatch(r.stderr, /verify: bad|crc32c: verify failed/, `${label}: no verify failure reported`);
  return job;
}

const engine = ioEngine();

for (const directIo of [true, false]) {
  for (const queues of [1, 2]) {
    const label = `${queues} queue${queues > 1 ? 's' : ''}, ${directIo ? 'O_DIRECT' : 'buffered'} backing`;
    t.test(`fio crc32c verify: ${label}`, async (t) => {
      const dir = workDir(t, directIo);
      const image = sparseImage(join(dir, 'fio.img'), DEVICE);
      const args = [image, '--queues', String(queues), '--depth', '64', ...(directIo ? ['--direct-io'] : [])];
      const s = await serve(t, args);
      t.equal(s.info.queues, queues, `${queues} queue(s)`);
      const started = Date.now();
      const job = checkJob(t, 'write+verify', fio(verifyArgs(s.info.path, engine, [])));
      if (job) {
        t.ok(job.write.io_bytes >= WRITE, `wrote ${job.write.io_bytes} bytes`);
        t.ok(job.read.io_bytes >= WRITE, `read back ${job.read.io_bytes} bytes to verify`);
      }
      t.comment(`${label}: ${engine} write+verify of ${WRITE / MiB} MiB took ${Date.now() - started} ms`);
      if (queues === 1 && directIo) {
        // After 2 s idle the queue releases its buffers; reads through the re-faulted
        // buffers must still return the data.
        await sleep(3000);
        checkJob(t, 'verify after the idle buffer release', fio(verifyArgs(s.info.path, engine, ['--verify_only'])));
      }
      const st = await s.stats();
      t.equal(st.errors, 0, 'the server counted no I/O errors');
      if (queues > 1) {
        t.ok(st.queues.every((q) => q.ops > 0), `every queue served requests (${st.queues.map((q) => q.ops).join(', ')})`);
      }
      t.equal((await s.stop()).code, 0, 'serve exits 0');
      t.same(await waitGone(s.info.id), [], 'device removed');

      if (queues === 2) {
        // The data outlives the server: serve the image again and verify only, this
        // time with a queue thread that never busy-polls (the other path of its loop).
        const again = await serve(t, [...args, '--poll-us', '0']);
        checkJob(t, 'verify after restart', fio(verifyArgs(again.info.path, engine, ['--verify_only'])));
        t.equal((await again.stop()).code, 0, 'second serve exits 0');
        t.same(await waitGone(again.info.id), [], 'device removed again');
      }
    });
  }
}
