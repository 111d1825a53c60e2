// ubloop-e2e-kernels: >=6.16 -- a live upgrade needs UBLK_F_QUIESCE (QUIESCE_DEV), which Linux 6.16 added
// Live upgrade: `ubloop daemon --upgrade` has the running daemon quiesce its devices,
// save its state and exit, then takes the devices over; fio verifying through ext4
// across it sees no error, and the new daemon's pid serves the device.
import t from 'tap';
import { spawn } from 'node:child_process';
import { mkdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { MiB, cli, ioEngine, mount, run, sh, sleep, sparseImage, workDir } from '../helpers/e2e.js';
import { jsonOut, startDaemon, ublkCount } from '../helpers/daemon.js';

interface ListEntry {
  instance: string | null;
  index: number | null;
  ublkId: number | null;
  serverPid?: number;
}

t.test('daemon --upgrade under fio: the devices change hands, fio verify sees no error', async (t) => {
  const dir = workDir(t, true);
  const image = sparseImage(join(dir, 'u.img'), 128 * MiB);
  const state = join(dir, 'state.json');
  const before = ublkCount();
  const d1 = await startDaemon(t, dir, [], state);
  t.equal(d1.cli(['instance', 'create', 'u']).status, 0);
  const node = d1.cli(['attach', '--instance', 'u', image]).stdout.trim();
  const id = jsonOut<ListEntry[]>(d1.cli(['list', '--json'])).find((e) => e.instance === 'u')?.ublkId;
  const rdev = statSync(node).rdev;
  sh('mkfs.ext4', ['-q', '-F', '-E', 'nodiscard', node]);
  const mnt = join(dir, 'mnt');
  mkdirSync(mnt);
  mount(t, node, mnt);

  const fio = spawn('fio', [
    '--output-format=json', '--name=upgrade', `--filename=${join(mnt, 'fio.dat')}`, '--size=48M', '--rw=randwrite', '--bsrange=4k-64k',
    '--iodepth=16', `--ioengine=${ioEngine()}`, '--direct=1', '--verify=crc32c', '--do_verify=1', '--verify_fatal=1', '--verify_state_save=0',
  ]);
  let out = '';
  let err = '';
  fio.stdout.setEncoding('utf8').on('data', (s: string) => (out += s));
  fio.stderr.setEncoding('utf8').on('data', (s: string) => (err += s));
  const fioDone = new Promise<number | null>((r) => fio.on('exit', (code) => r(code)));
  await sleep(1500);
  t.equal(fio.exitCode, null, 'fio is running when the upgrade starts');

  const t0 = Date.now();
  const d2 = await startDaemon(t, dir, ['--upgrade'], state);
  await new Promise<void>((r) => (d1.alive() ? d1.proc.once('exit', () => r()) : r()));
  for (let i = 0; i < 1200 && !/listening on/.test(d2.stderr()); i++) await sleep(100);
  t.comment(`upgrade: the new daemon served the device ${Date.now() - t0} ms after it was started`);
  t.same(await d1.stop(), { code: 0, signal: null }, 'the old daemon exits 0 after handing over');
  t.match(d1.stderr(), /handed every device over in \d+ ms/);
  t.match(d2.stderr(), /asking the running daemon \(pid \d+\) to hand its devices over/);
  t.match(d2.stderr(), /\(1 recovered from the previous run\)/, 'the new daemon took the device over');

  let timer: NodeJS.Timeout | undefined;
  const code = await Promise.race([fioDone, new Promise<string>((r) => (timer = setTimeout(() => r('timeout'), 300_000)))]);
  clearTimeout(timer);
  t.equal(code, 0, `fio completes ${err.trim().slice(0, 300)}`);
  const job = (JSON.parse(out.slice(Math.max(0, out.indexOf('{')))) as { jobs: { error: number; read: { io_bytes: number } }[] }).jobs[0];
  t.equal(job?.error, 0, 'fio: no I/O or verify error');
  t.ok((job?.read.io_bytes ?? 0) >= 48 * MiB, 'fio verified all it wrote');

  const entries = jsonOut<ListEntry[]>(d2.cli(['list', '--json']));
  t.same(entries.map((e) => [e.instance, e.index, e.ublkId]), [['u', 0, id]], 'ubloop list: the one device, its old id');
  const kernel = jsonOut<ListEntry[]>(cli(['list', '--json', '--socket', '/nonexistent/ubloop.sock'])).find((e) => e.ublkId === id);
  t.equal(kernel?.serverPid, d2.proc.pid, 'the new daemon\'s pid serves the device');
  t.equal(statSync(node).rdev, rdev, 'same block device');
  sh('umount', [mnt]);
  const fsck = run('e2fsck', ['-fn', node]);
  t.equal(fsck.status, 0, `e2fsck -fn is clean ${fsck.stdout.trim().split('\n').slice(-1).join('')}`);
  await d2.stop();
  t.equal(ublkCount(), before);
});
