import t from 'tap';
import { formatSize, parseSize } from '../../lib/size.js';
import { UbloopError } from '../../lib/errors.js';

t.test('parseSize reads the sizes people type', async (t) => {
  t.equal(parseSize('4096', 'size'), 4096);
  t.equal(parseSize('0', 'size'), 0);
  t.equal(parseSize('512K', 'size'), 512 * 1024);
  t.equal(parseSize('256M', 'size'), 256 * 2 ** 20);
  t.equal(parseSize('1G', 'size'), 2 ** 30);
  t.equal(parseSize('1GiB', 'size'), 2 ** 30);
  t.equal(parseSize('1gb', 'size'), 2 ** 30, 'units are case-insensitive');
  t.equal(parseSize(' 2T ', 'size'), 2 * 2 ** 40, 'surrounding blanks are ignored');
  t.equal(parseSize(8192, 'size'), 8192, 'numbers pass through');
});

t.test('parseSize rejects what is not a size, naming it', async (t) => {
  for (const bad of ['', 'abc', '1.5G', '-1', '1X', '12 34', '0x10']) {
    t.throws(() => parseSize(bad, 'offset'), { name: 'UbloopError', code: 'EINVAL' }, `"${bad}"`);
  }
  try {
    parseSize('lots', 'size limit');
    t.fail('did not throw');
  } catch (err) {
    t.type(err, UbloopError);
    t.match((err as Error).message, /size limit "lots" is not a size/);
  }
  t.throws(() => parseSize(-5, 'offset'), { code: 'EINVAL', message: /offset must be a whole number of bytes, got -5/ });
  t.throws(() => parseSize(1.5, 'offset'), { code: 'EINVAL' });
  t.throws(() => parseSize('99999999999T', 'size'), { code: 'EINVAL', message: /too large/ });
});

t.test('formatSize uses the largest exact unit', async (t) => {
  t.equal(formatSize(2 ** 30), '1G');
  t.equal(formatSize(3 * 2 ** 20), '3M');
  t.equal(formatSize(1536 * 2 ** 20), '1536M', 'not exact in G, so M');
  t.equal(formatSize(4096), '4K');
  t.equal(formatSize(2 ** 40), '1T');
  t.equal(formatSize(1000), '1000');
  t.equal(formatSize(0), '0');
  for (const n of [512, 4096, 2 ** 28, 5 * 2 ** 40, 12345]) {
    t.equal(parseSize(formatSize(n), 'size'), n, `round trip ${n}`);
  }
});
