// Devices created through the library die with the process that serves them, never
// before: a worker thread that loads the addon and exits leaves the main thread's
// devices alone, and process.exit() without stop() still deletes them.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { ROOT, ublkCharEntries } from '../helpers/e2e.js';

const LIB = join(ROOT, 'dist', 'lib', 'index.js');

const script = `
import { createDevice } from ${JSON.stringify(LIB)};
import { Worker } from 'node:worker_threads';
import { existsSync } from 'node:fs';
const d = await createDevice({ target: 'null', size: 64 << 20 });
await new Promise((res) => {
  const w = new Worker("import(" + JSON.stringify(${JSON.stringify(LIB)}) + ").then((m) => m.kernelFeatures())", { eval: true });
  w.on('exit', res);
});
console.log(JSON.stringify({ id: d.id, exists: existsSync(d.path), state: d.info().state }));
process.exit(0);
`;

t.test('a worker exit keeps the devices; process.exit() removes them', async (t) => {
  const before = ublkCharEntries();
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', timeout: 120_000 });
  t.equal(r.status, 0, `the script exits 0 ${r.stderr}`);
  const seen = JSON.parse(r.stdout.trim().split('\n').pop() ?? '{}') as { id?: number; exists?: boolean; state?: string };
  t.equal(seen.exists, true, 'the block device still exists after the worker exited');
  t.equal(seen.state, 'live', 'and is live');
  t.same(ublkCharEntries(), before, `no ublk device left after process.exit() (device ${seen.id})`);
});
