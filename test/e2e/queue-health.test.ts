// The idle release of a queue's buffers must never lose a write (issue 8).
import t from 'tap';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { MiB, readDirect, serve, sleep, sparseImage, workDir, writeDirect } from '../helpers/e2e.js';

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
