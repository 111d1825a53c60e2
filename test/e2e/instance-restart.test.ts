// Restart: SIGTERM stops every device; a new daemon on the same state file restores
// instances, limits and owners, rebinds devices whose image is still the same file,
// reports the others, and the data is intact. A corrupt state file is kept aside; one
// of a newer version keeps the daemon from starting.
import t from 'tap';
import { existsSync, readFileSync, readdirSync, renameSync, writeFileSync } from 'node:fs';
import { createHash, randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { CLI, MiB, readDirect, run, sparseImage, workDir, writeDirect } from '../helpers/e2e.js';
import { startDaemon, ublkCount } from '../helpers/daemon.js';

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

t.test('restart restores instances, max, owners and bindings; data intact', async (t) => {
  const dir = workDir(t);
  const keep = sparseImage(join(dir, 'keep.img'), 4 * MiB);
  const swapped = sparseImage(join(dir, 'swapped.img'), MiB);
  const state = join(dir, 'state.json');
  const before = ublkCount();

  const d1 = await startDaemon(t, dir, [], state);
  t.equal(d1.cli(['instance', 'create', 'a', '--max', '3', '--owner', '1001:1002', '--mode', '0640', '--owner-max', '5']).status, 0);
  await d1.admin().request({ op: 'instance.create', name: 'b', max: 7 });
  const dev = d1.cli(['attach', '--instance', 'a', keep, '--block-size', '4096']).stdout.trim();
  t.equal(dev, join(d1.root, 'instances', 'a', 'loop0'));
  const dev2 = d1.cli(['attach', '--instance', 'a', swapped]).stdout.trim();
  t.equal(dev2, join(d1.root, 'instances', 'a', 'loop1'));
  const data = randomBytes(MiB);
  t.equal(writeDirect(dev, MiB, data).status, 0, 'data written through loop0');
  const sum = sha(data);
  t.equal(ublkCount(), before + 2);

  const exit = await d1.stop();
  t.same(exit, { code: 0, signal: null }, 'SIGTERM: the daemon exits 0');
  t.equal(ublkCount(), before, 'every device was stopped');
  t.notOk(existsSync(dev), 'loop0 node removed');
  t.match(d1.stderr(), /stopped every device/);
  const saved = JSON.parse(readFileSync(state, 'utf8')) as { instances: { name: string; bindings: unknown[] }[] };
  t.same(saved.instances.map((i) => [i.name, i.bindings.length]), [['a', 2], ['b', 0]], 'the state kept both bindings');

  // the second image is replaced by another file with the same name
  renameSync(swapped, `${swapped}.old`);
  sparseImage(swapped, MiB);

  const d2 = await startDaemon(t, dir, [], state);
  const list = JSON.parse(d2.cli(['instance', 'list', '--json']).stdout) as Record<string, unknown>[];
  t.match(list, [
    { name: 'a', max: 3, uid: 1001, gid: 1002, mode: 0o640, ownerMax: 5, count: 2, bound: 1 },
    { name: 'b', max: 7, uid: 0, gid: 0, count: 0, bound: 0 },
  ], 'instances, max, owners and owner limit restored');
  t.ok(existsSync(dev), 'loop0 is back');
  t.equal(sha(readDirect(dev, MiB, MiB)), sum, 'the data read back through the restored loop0 is intact');
  t.match(d2.stderr(), /restored 2 instance\(s\) and 1 device\(s\)/);
  t.match(d2.stderr(), /not restored: a\/loop1: .*swapped\.img is no longer the file that was bound/, 'the replaced image is reported');
  const devices = JSON.parse(d2.cli(['list', '--all', '--json']).stdout) as { instance: string; index: number; state: string; options: { blockSize: number } | null }[];
  t.match(devices, [{ instance: 'a', index: 0, state: 'bound', options: { blockSize: 4096 } }, { instance: 'a', index: 1, state: 'unbound' }], 'options restored; the other index stays, unbound');
  t.equal(ublkCount(), before + 1);
  await d2.stop();
  t.equal(ublkCount(), before);
});

t.test('a corrupt state file is reported and kept aside, not overwritten', async (t) => {
  const dir = workDir(t);
  const state = join(dir, 'state.json');
  writeFileSync(state, '{"version":1,"instances":[{"name":"a"');
  const d = await startDaemon(t, dir, [], state);
  t.match(d.stderr(), /state file .* is not valid JSON.*kept it as .*state\.json\.corrupt-/, 'the problem and where the file went are logged');
  const aside = readdirSync(dir).filter((n) => n.startsWith('state.json.corrupt-'));
  t.equal(aside.length, 1, 'one file kept aside');
  t.equal(readFileSync(join(dir, aside[0] as string), 'utf8'), '{"version":1,"instances":[{"name":"a"', 'with its content');
  t.match(JSON.parse(readFileSync(state, 'utf8')), { version: 2, instances: [] }, 'a fresh state is written');
  t.equal(d.cli(['instance', 'list', '--json']).stdout.trim(), '[]');
});

t.test('a state file of a newer version stops the daemon from starting, and is left as it is', async (t) => {
  const dir = workDir(t);
  const state = join(dir, 'state.json');
  const newer = '{"version":99,"owners":[],"instances":[{"name":"kept","future":true}]}\n';
  writeFileSync(state, newer);
  const r = run(process.execPath, [CLI, 'daemon', '--socket', join(dir, 'admin.sock'), '--root', join(dir, 'run'), '--state', state], { timeout: 60_000 });
  t.not(r.status, 0, 'the daemon exits with an error');
  t.match(r.stderr, `state file ${state} has version 99`, 'naming the file and its version');
  t.equal(readFileSync(state, 'utf8'), newer, 'the file is untouched');
  t.same(readdirSync(dir).filter((n) => n.startsWith('state.json')), ['state.json'], 'and not moved aside');
});
