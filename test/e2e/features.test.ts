// `ubloop features` on the ublk test kernel (Linux 6.1): ublk is there, commands use
// the legacy encoding, and the text form says so in words.
import t from 'tap';
import { release } from 'node:os';
import { cliAsync } from '../helpers/e2e.js';

// Both forms start at once: node starts are slow under TCG.
const [json, text] = await Promise.all([cliAsync(['features', '--json']), cliAsync(['features'])]);

t.test('features --json reports available ublk and the legacy encoding on Linux 6.1', async (t) => {
  if (!json) throw new Error('no result');
  t.equal(json.status, 0, `exit 0 (stderr: ${json.stderr.trim()})`);
  const f = JSON.parse(json.stdout) as { kernel: string; available: boolean; problem: string | null; encoding: string; features: unknown };
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
  if (!text) throw new Error('no result');
  t.equal(text.status, 0);
  t.match(text.stdout, /ublk:\s+available/);
  t.match(text.stdout, new RegExp(`kernel:\\s+${release().replace(/[.+]/g, '\\$&')}`));
  t.match(text.stdout, /command encoding:\s+(legacy|ioctl)/);
  t.equal(text.stderr, '', 'nothing on stderr');
});
