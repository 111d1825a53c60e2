// `ubloop features` on the ublk test kernel (Linux 6.1): ublk is there, commands use
// the legacy encoding, and the text form says so in words.
import t from 'tap';
import { release } from 'node:os';
import { cli } from '../helpers/e2e.js';

t.test('features --json reports available ublk and the legacy encoding on Linux 6.1', async (t) => {
  const r = cli(['features', '--json']);
  t.equal(r.status, 0, `exit 0 (stderr: ${r.stderr.trim()})`);
  const f = JSON.parse(r.stdout) as { kernel: string; available: boolean; problem: string | null; encoding: string; features: unknown };
  t.equal(f.kernel, release(), 'names the running kernel');
  t.equal(f.available, true, 'ublk is available');
  t.equal(f.problem, null, 'no problem reported');
  if (/^6\.[0-3]\./.test(release())) {
    t.equal(f.encoding, 'legacy', 'Linux 6.1 takes legacy-encoded commands only');
    t.equal(f.features, null, 'no GET_FEATURES before Linux 6.5');
  } else {
    t.ok(f.encoding === 'legacy' || f.encoding === 'ioctl', `encoding ${f.encoding}`);
  }
});

t.test('features prints a readable summary', async (t) => {
  const r = cli(['features']);
  t.equal(r.status, 0);
  t.match(r.stdout, /ublk:\s+available/);
  t.match(r.stdout, new RegExp(`kernel:\\s+${release().replace(/[.+]/g, '\\$&')}`));
  t.match(r.stdout, /command encoding:\s+(legacy|ioctl)/);
  t.equal(r.stderr, '', 'nothing on stderr');
});
