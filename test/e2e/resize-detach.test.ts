// `ubloop resize` (like losetup -c) where the kernel has UPDATE_SIZE, and a clear
// refusal naming it where it does not; `ubloop detach` of a mounted device answers
// EBUSY on every kernel (by the kernel itself where it has TRY_STOP_DEV).
import t from 'tap';
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { MiB, blockdevSize, cli, mount, run, serve, sh, sparseImage, workDir } from '../helpers/e2e.js';
import { startDaemon } from '../helpers/daemon.js';

// Whether the kernel grants UPDATE_SIZE is the kernel's answer, read from the device.
t.test('resize of a serve device: grows ext4 online, refuses to cut it, keeps data across a re-serve', async (t) => {
  const dir = workDir(t);
  const image = sparseImage(join(dir, 'grow.img'), 64 * MiB);
  const mnt = join(dir, 'mnt');
  mkdirSync(mnt);
  const s = await serve(t, [image]);
  const dev = s.info.path;
  if (!s.info.flags.includes('UBLK_F_UPDATE_SIZE')) {
    truncateSync(image, 128 * MiB);
    const r = cli(['resize', dev]);
    t.not(r.status, 0, 'resize fails on a kernel without UPDATE_SIZE');
    t.match(r.stderr, /UPDATE_SIZE/, `and the message names the kernel feature: ${r.stderr.trim()}`);
    t.equal(blockdevSize(dev), 64 * MiB, 'the device keeps its size');
    t.equal((await s.stop()).code, 0);
    return;
  }
  sh('mkfs.ext4', ['-q', '-F', '-E', 'nodiscard', dev]);
  mount(t, dev, mnt);
  truncateSync(image, 192 * MiB);
  const r = cli(['resize', dev]);
  t.equal(r.status, 0, `ubloop resize exits 0 ${r.stderr.trim()}`);
  t.match(r.stdout, /201326592 bytes/, 'and prints the new size');
  t.equal(blockdevSize(dev), 192 * MiB, 'the disk now has the image\'s size');
  sh('resize2fs', [dev]);
  const data = randomBytes(120 * MiB);
  writeFileSync(join(mnt, 'big.bin'), data);
  const sum = createHash('sha256').update(data).digest('hex');
  t.ok(data.length > 64 * MiB, 'a file larger than the old device fits');

  const cut = cli(['resize', dev, '--size', '96M']);
  t.not(cut.status, 0, 'shrinking below the filesystem is refused');
  t.match(cut.stderr, /ext4 filesystem of \d+ bytes.*cut it short/, `with a message: ${cut.stderr.trim()}`);
  t.equal(blockdevSize(dev), 192 * MiB, 'and the device keeps its size');
  const big = cli(['resize', dev, '--size', '1G']);
  t.not(big.status, 0, 'a size larger than the image is refused');
  t.match(big.stderr, /larger than/, big.stderr.trim());

  sh('umount', [mnt]);
  t.equal((await s.stop()).code, 0, 'serve exits 0');
  const again = await serve(t, [image]);
  t.equal(blockdevSize(again.info.path), 192 * MiB, 're-served at the image\'s new size');
  mount(t, again.info.path, mnt, ['-o', 'ro']);
  t.equal(createHash('sha256').update(readFileSync(join(mnt, 'big.bin'))).digest('hex'), sum, 'the file in the new space survives');
  sh('umount', [mnt]);
  const fsck = run('e2fsck', ['-fn', again.info.path]);
  t.equal(fsck.status, 0, 'e2fsck -fn is clean');
  t.equal((await again.stop()).code, 0);
});

t.test('instance devices: resize through the daemon, detach refuses a mounted device with EBUSY', async (t) => {
  const dir = workDir(t);
  const image = sparseImage(join(dir, 'inst.img'), 64 * MiB);
  const mnt = join(dir, 'mnt');
  mkdirSync(mnt);
  const d = await startDaemon(t, dir);
  await d.admin().request({ op: 'instance.create', name: 'rz' });
  const attached = d.cli(['attach', '--instance', 'rz', image, '--json']);
  t.equal(attached.status, 0, `attach ${attached.stderr.trim()}`);
  const entry = JSON.parse(attached.stdout) as { path: string; ublkPath: string };

  truncateSync(image, 96 * MiB);
  const r = d.cli(['resize', entry.path]);
  const kernelCanResize = !/UPDATE_SIZE/.test(r.stderr);
  if (kernelCanResize) {
    t.equal(r.status, 0, `resize through the daemon ${r.stderr.trim()}`);
    t.equal(blockdevSize(entry.ublkPath), 96 * MiB, 'the instance device grew');
    const listed = JSON.parse(d.cli(['list', '--json']).stdout) as { size: number }[];
    t.equal(listed[0]?.size, 96 * MiB, 'ubloop list shows the new size');
  } else {
    t.not(r.status, 0, 'no UPDATE_SIZE: resize fails');
    t.match(r.stderr, /UPDATE_SIZE/, r.stderr.trim());
  }

  sh('mkfs.ext4', ['-q', '-F', '-E', 'nodiscard', entry.ublkPath]);
  mount(t, entry.ublkPath, mnt);
  const busy = d.cli(['detach', entry.path]);
  t.not(busy.status, 0, 'detach of a mounted device fails');
  t.match(busy.stderr, /EBUSY|in use/, `with EBUSY: ${busy.stderr.trim()}`);
  // The state through the socket API: each CLI start costs seconds in the emulated guest.
  const devices = async () => ((await d.admin().request({ op: 'list' }))['devices'] as { state: string }[]).filter((e) => e.state !== 'unbound');
  const still = await devices();
  t.equal(still[0]?.state, 'bound', 'and the device stays bound');
  t.equal(run('touch', [join(mnt, 'still-works')]).status, 0, 'the filesystem still works');
  sh('umount', [mnt]);
  const done = d.cli(['detach', entry.path]);
  t.equal(done.status, 0, `after umount detach succeeds ${done.stderr.trim()}`);
  t.same(await devices(), [], 'no bound device is left');
});
