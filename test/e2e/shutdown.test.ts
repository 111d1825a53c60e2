// Stopping the server under load: SIGTERM while fio runs ends the server within 5 s,
// fio sees I/O errors instead of hanging, and no trace of the device is left.
import t from 'tap';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { MiB, ioEngine, leftovers, serve, sleep, sparseImage, ublkCharEntries, workDir } from '../helpers/e2e.js';

const engine = ioEngine();

for (const target of ['loop', 'null'] as const) {
  t.test(`SIGTERM with fio running (${target} target)`, async (t) => {
    const before = ublkCharEntries();
    const dir = workDir(t, true);
    const args =
      target === 'loop'
        ? [sparseImage(join(dir, 'busy.img'), 64 * MiB), '--direct-io', '--queues', '2']
        : ['--target', 'null', '--size', '1G', '--queues', '2'];
    const s = await serve(t, args);
    const dev = s.info.path;

    const fio = spawn(
      'fio',
      [
        '--name=busy',
        `--filename=${dev}`,
        '--rw=randrw',
        '--bs=4k',
        '--iodepth=32',
        `--ioengine=${engine}`,
        '--direct=1',
        '--time_based',
        '--runtime=120',
        '--output-format=json',
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let fioOut = '';
    fio.stdout.setEncoding('utf8').on('data', (d: string) => (fioOut += d));
    fio.stderr.setEncoding('utf8').on('data', (d: string) => (fioOut += d));
    const fioDone = new Promise<{ code: number | null; at: number }>((r) => fio.on('exit', (code) => r({ code, at: Date.now() })));
    t.teardown(() => {
      if (fio.exitCode === null && fio.signalCode === null) fio.kill('SIGKILL');
    });

    // Let fio get going, and make sure it really is doing I/O through us.
    await sleep(2000);
    const st = await s.stats();
    t.ok(st.ops > 0, `the server is serving fio (${st.ops} ops so far)`);
    t.equal(fio.exitCode, null, 'fio is still running');

    const exit = await s.stop('SIGTERM', 30_000);
    t.ok(exit.ms < 5000, `serve ended ${exit.ms} ms after SIGTERM (limit 5000)`);
    t.equal(exit.code, 0, 'serve exits 0');

    let timer: NodeJS.Timeout | undefined;
    const f = await Promise.race([
      fioDone,
      new Promise<null>((r) => (timer = setTimeout(() => r(null), 20_000))),
    ]).finally(() => clearTimeout(timer));
    t.ok(f, 'fio ended by itself within 20 s instead of hanging');
    t.not(f?.code, 0, `fio reports failure (exit ${f?.code})`);
    t.match(fioOut, /error|Input\/output|No such device|err=/i, 'fio reports I/O errors');

    const left = leftovers(s.info.id);
    t.same(left, [], `no /dev/ublkb${s.info.id}, /dev/ublkc${s.info.id} or sysfs entry left`);
    t.same(ublkCharEntries(), before, '/sys/class/ublk-char is as before');
  });
}
