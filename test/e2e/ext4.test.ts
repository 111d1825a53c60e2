// The headline: a real ext4 filesystem on /dev/ublkbN survives unmount,
// server stop and restart byte for byte, and fsck finds it clean.
import t from 'tap';
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { MiB, allocatedBytes, mount, run, serve, sh, sparseImage, waitGone, workDir } from '../helpers/e2e.js';

t.test('ext4 round trip through stop and restart', async (t) => {
  const dir = workDir(t);
  const image = sparseImage(join(dir, 'ext4.img'), 256 * MiB);
  const mnt = join(dir, 'mnt');
  mkdirSync(mnt);
  t.ok(allocatedBytes(image) < MiB, 'the new image is sparse');

  // First life: make the filesystem and fill it.
  const s1 = await serve(t, [image]);
  sh('mkfs.ext4', ['-q', '-F', '-E', 'nodiscard', s1.info.path]);
  mount(t, s1.info.path, mnt);
  const sums = new Map<string, string>();
  let total = 0;
  const sizes = [1, 3, 7, 12, 5, 9, 2, 11, 0.25, 6]; // MiB, 56.25 in all, some not block-aligned
  sizes.forEach((mib, i) => {
    const sub = join(mnt, `d${i % 3}`);
    mkdirSync(sub, { recursive: true });
    const data = randomBytes(Math.round(mib * MiB) + i * 37);
    const name = join(`d${i % 3}`, `f${i}.bin`);
    writeFileSync(join(mnt, name), data);
    sums.set(name, createHash('sha256').update(data).digest('hex'));
    total += data.length;
  });
  t.ok(total >= 50 * MiB, `wrote ${(total / MiB).toFixed(1)} MiB in ${sums.size} files`);
  sh('umount', [mnt]);
  const e1 = await s1.stop();
  t.equal(e1.code, 0, 'first serve exits 0');
  t.same(await waitGone(s1.info.id), [], 'first device removed');
  t.ok(allocatedBytes(image) >= 50 * MiB, 'the data reached the image file');

  // Second life: a new device over the same image.
  const s2 = await serve(t, [image]);
  mount(t, s2.info.path, mnt, ['-o', 'ro']);
  for (const [name, sum] of sums) {
    const got = createHash('sha256').update(readFileSync(join(mnt, name))).digest('hex');
    t.equal(got, sum, `${name} has the same sha256 after restart`);
  }
  sh('umount', [mnt]);
  const fsck = run('e2fsck', ['-fn', s2.info.path]);
  t.equal(fsck.status, 0, `e2fsck -fn is clean: ${fsck.stdout.trim().split('\n').slice(-2).join(' / ')}`);
  const e2 = await s2.stop();
  t.equal(e2.code, 0, 'second serve exits 0');
  t.same(await waitGone(s2.info.id), [], 'second device removed');
});
