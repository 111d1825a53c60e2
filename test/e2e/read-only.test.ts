// --read-only: the kernel sees a read-only disk, writes fail, reads return the
// image's bytes, and the image is not changed.
import t from 'tap';
import { createHash, randomBytes } from 'node:crypto';
import { chmodSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { MiB, readDirect, run, serve, waitGone, workDir, writeDirect } from '../helpers/e2e.js';

t.test('read-only device: reads the image, refuses writes', async (t) => {
  const dir = workDir(t);
  const image = join(dir, 'ro.img');
  const content = randomBytes(8 * MiB);
  writeFileSync(image, content);
  chmodSync(image, 0o444);
  const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

  const s = await serve(t, [image, '--read-only']);
  t.equal(s.info.readOnly, true, 'info says read-only');
  t.equal(run('blockdev', ['--getro', s.info.path]).stdout.trim(), '1', 'the kernel marks the disk read-only');
  t.ok(readDirect(s.info.path, 0, 8 * MiB).equals(content), 'reading the whole device gives the image bytes');

  const w = writeDirect(s.info.path, 4096, Buffer.alloc(4096, 0xaa));
  t.not(w.status, 0, 'dd oflag=direct write fails');
  t.match(w.stderr, /Read-only|Operation not permitted|Permission denied|Input\/output error/, `dd says why: ${w.stderr.trim()}`);
  const d = run('blkdiscard', [s.info.path]);
  t.not(d.status, 0, 'blkdiscard fails');

  t.equal((await s.stop()).code, 0, 'serve exits 0');
  t.same(await waitGone(s.info.id), [], 'device removed');
  t.equal(sha(readFileSync(image)), sha(content), 'image unchanged');
});
