// ubloop-e2e-kernels: <7.0 -- runs once, on the floor: every case is refused before the kernel is touched, so the kernel cannot change the answer
// Bad input to `ubloop serve` ends with one clear line on stderr that names the
// problem, a non-zero exit, and no ublk device left behind.
import t from 'tap';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { MiB, cliMany, sleep, sparseImage, ublkCharEntries, workDir } from '../helpers/e2e.js';

const dir = workDir(t);
const good = sparseImage(join(dir, 'good.img'), 4 * MiB);
const empty = join(dir, 'empty.img');
writeFileSync(empty, '');
const odd = join(dir, 'odd.img');
writeFileSync(odd, Buffer.alloc(MiB + 100));
const folder = join(dir, 'folder');
mkdirSync(folder);
const missing = join(dir, 'missing.img');

const cases: [string, string[], RegExp][] = [
  ['missing file', [missing], new RegExp(`${missing}.*does not exist`)],
  ['a directory', [folder], new RegExp(`${folder} is a directory`)],
  ['empty image', [empty], /empty\.img is empty/],
  ['size not a multiple of the block size', [odd], /1048676.*not a multiple of the block size 512/],
  ['block size 1000', [good, '--block-size', '1000'], /block size 1000/],
  ['offset past EOF', [good, '--offset', '8M'], /offset 8388608 is at or past the end/],
  ['queues 0', [good, '--queues', '0'], /queues .*\b0\b/],
  ['depth 100000', [good, '--depth', '100000'], /depth .*100000/],
  ['null target without a size', ['--target', 'null'], /needs --size/],
  ['a size that is not a size', [good, '--sizelimit', 'lots'], /size limit "lots" is not a size/],
];

// The cases run two at a time (each is a fresh node process, slow to start in the VM);
// none may create a device, so the set of ublk devices must not change at any point.
const before = ublkCharEntries();
const appeared = new Set<string>();
let watching = true;
const watcher = (async () => {
  while (watching) {
    for (const e of ublkCharEntries()) if (!before.includes(e)) appeared.add(e);
    await sleep(20);
  }
})();
const results = await cliMany(cases.map(([, args]) => ['serve', ...args]));
watching = false;
await watcher;
const after = ublkCharEntries();

cases.forEach(([what, args, message], i) => {
  const r = results[i];
  t.test(`serve ${what}: one clear error line, non-zero exit`, async (t) => {
    if (!r) throw new Error('no result');
    t.not(r.status, 0, `ubloop serve ${args.join(' ')} exits non-zero (${r.status})`);
    t.equal(r.signal, null, 'exits by itself, not killed');
    const lines = r.stderr.trimEnd().split('\n');
    t.equal(lines.length, 1, `one line on stderr: ${JSON.stringify(r.stderr)}`);
    t.match(lines[0], /^ubloop: /, 'starts with "ubloop: "');
    t.match(lines[0], message, 'names the problem');
    t.equal(r.stdout, '', 'no device path printed');
  });
});

t.test('bad input leaves no ublk device behind', async (t) => {
  t.same([...appeared], [], 'no device appeared while the bad commands ran');
  t.same(after, before, '/sys/class/ublk-char is as before');
});
