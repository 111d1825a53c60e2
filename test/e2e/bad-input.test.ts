// Bad input to `ubloop serve` ends with one clear line on stderr that names the
// problem, a non-zero exit, and no ublk device left behind.
import t from 'tap';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { MiB, cli, sparseImage, ublkCharEntries, workDir } from '../helpers/e2e.js';

t.test('bad input is refused cleanly', async (t) => {
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
    ['empty image', [empty], /is empty/],
    ['size not a multiple of the block size', [odd], /1048676.*not a multiple of the block size 512/],
    ['block size 1000', [good, '--block-size', '1000'], /block size 1000/],
    ['offset past EOF', [good, '--offset', '8M'], /offset 8388608 is at or past the end/],
    ['queues 0', [good, '--queues', '0'], /queues .*0/],
    ['depth 100000', [good, '--depth', '100000'], /depth .*100000/],
    ['null target without a size', ['--target', 'null'], /needs --size/],
    ['not a size', [good, '--sizelimit', 'lots'], /size limit "lots" is not a size/],
  ];

  for (const [what, args, message] of cases) {
    await t.test(what, async (t) => {
      const before = ublkCharEntries();
      const r = cli(['serve', ...args]);
      const after = ublkCharEntries();
      t.not(r.status, 0, 'exits non-zero');
      t.equal(r.signal, null, 'exits by itself, not killed');
      const lines = r.stderr.trimEnd().split('\n');
      t.equal(lines.length, 1, `one line on stderr: ${JSON.stringify(r.stderr)}`);
      t.match(lines[0], /^ubloop: /, 'starts with "ubloop: "');
      t.match(lines[0], message, 'names the problem');
      t.notMatch(r.stderr, /\s+at .*\.js:\d+/, 'no stack trace');
      t.equal(r.stdout, '', 'no device path printed');
      t.same(after, before, 'no ublk device created or left behind');
    });
  }
});
