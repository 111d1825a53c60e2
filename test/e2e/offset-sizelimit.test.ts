// --offset and --sizelimit: the device is the window [offset, offset+limit) of the
// image, like losetup -o/--sizelimit. Checked against the image file itself.
import t from 'tap';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { MiB, blockdevSize, readDirect, readFileRange, serve, sparseImage, waitGone, workDir, writeDirect } from '../helpers/e2e.js';

for (const directIo of [false, true]) {
  t.test(`offset 3 MiB, size limit 16 MiB (${directIo ? 'O_DIRECT' : 'buffered'} backing)`, async (t) => {
    const dir = workDir(t, directIo);
    const image = sparseImage(join(dir, 'window.img'), 32 * MiB);
    const offset = 3 * MiB;
    const limit = 16 * MiB;
    const s = await serve(t, [image, '--offset', '3M', '--sizelimit', '16M', ...(directIo ? ['--direct-io'] : [])]);
    t.equal(blockdevSize(s.info.path), limit, 'device size is the size limit');
    t.equal(s.info.offset, offset, 'info reports the offset');

    // Three places in the window: the first block, the middle, the last block.
    const spots = [0, 5 * MiB + 4096, limit - 64 * 1024];
    const data = spots.map(() => randomBytes(64 * 1024));
    spots.forEach((x, i) => {
      const w = writeDirect(s.info.path, x, data[i] as Buffer);
      t.equal(w.status, 0, `write at device offset ${x} ${w.stderr.trim()}`);
    });
    spots.forEach((x, i) => {
      t.ok(readFileRange(image, offset + x, 64 * 1024).equals(data[i] as Buffer), `bytes at device ${x} are at image ${offset + x}`);
      t.ok(readDirect(s.info.path, x, 64 * 1024).equals(data[i] as Buffer), `device reads back ${x}`);
    });
    t.ok(readFileRange(image, 0, offset).equals(Buffer.alloc(offset)), 'image before the offset untouched');
    t.ok(readFileRange(image, offset + limit, 32 * MiB - offset - limit).equals(Buffer.alloc(32 * MiB - offset - limit)), 'image after the window untouched');

    const w = writeDirect(s.info.path, limit, Buffer.alloc(4096, 1));
    t.not(w.status, 0, 'a write past the end of the device fails');

    const e = await s.stop();
    t.equal(e.code, 0, 'serve exits 0');
    t.same(await waitGone(s.info.id), [], 'device removed');
  });
}

t.test('without a size limit the device runs from the offset to the end of the image', async (t) => {
  const dir = workDir(t);
  const image = sparseImage(join(dir, 'tail.img'), 8 * MiB);
  const s = await serve(t, [image, '--offset', '1M']);
  t.equal(blockdevSize(s.info.path), 7 * MiB, 'size is image size minus offset');
  const data = randomBytes(4096);
  t.equal(writeDirect(s.info.path, 7 * MiB - 4096, data).status, 0, 'write the last block');
  t.ok(readFileRange(image, 8 * MiB - 4096, 4096).equals(data), 'it is the last block of the image');
  t.equal((await s.stop()).code, 0);
});
