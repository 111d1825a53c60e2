import t from 'tap';
import { existsSync, mkdtempSync, readdirSync, readFileSync, writeFileSync, openSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { InstanceManager, type BoundDevice } from '../../lib/instance/index.js';
import { readState, restore, snapshot, writeState, checkState, isStateData, type StateData } from '../../lib/state/index.js';
import type { BindOptions } from '../../lib/protocol/index.js';

const OPTS: BindOptions = { offset: 4096, sizeLimit: 0, readOnly: true, directIo: false, blockSize: 4096, queues: 2, depth: 32, autoclear: false };

function fakeManager() {
  const live = new Set<number>();
  let next = 0;
  const fds: number[] = [];
  const m = new InstanceManager({
    root: '/r',
    factory: async (spec): Promise<BoundDevice> => {
      fds.push(spec.fd);
      const id = next++;
      live.add(id);
      return { ublkId: id, path: `/dev/ublkb${id}`, major: 259, minor: id, size: 1 << 20, isBusy: () => false, stop: async () => { live.delete(id); }, canStopIfUnused: false, resize: async () => 1 << 20, failure: () => null };
    },
  });
  return { m, live, fds };
}

const SAMPLE: StateData = {
  version: 1,
  owners: [{ uid: 1001, max: 10 }],
  instances: [
    { name: 'a', max: 2, uid: 1001, gid: 1001, mode: 0o660, indices: [0, 1, 2, 5], bindings: [
      { index: 0, backing: { path: '/img/a0', dev: 10, ino: 100 }, options: OPTS },
      { index: 1, backing: { path: '/img/a1', dev: 10, ino: 101 }, options: OPTS, boundBy: { uid: 0, gid: 0 } },
      { index: 5, backing: { path: '/img/gone', dev: 10, ino: 105 }, options: OPTS },
    ] },
    { name: 'b', max: 8, uid: 1002, gid: 1002, mode: 0o600, indices: [], bindings: [] },
  ],
};

t.test('writeState replaces the file atomically and leaves no temp file', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'ubloop-state-'));
  const path = join(dir, 'state.json');
  writeFileSync(path, 'old');
  writeState(path, SAMPLE);
  t.same(JSON.parse(readFileSync(path, 'utf8')), SAMPLE);
  t.same(readdirSync(dir), ['state.json'], 'no temp file left');
  t.same(readState(path), { kind: 'ok', state: SAMPLE });
});

t.test('a corrupt or invalid state file is reported and moved aside, never reused', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'ubloop-state-'));
  const path = join(dir, 'state.json');
  writeFileSync(path, '{"version":1,"owners":[],"instan');
  const r = readState(path, new Date('2026-01-02T03:04:05.678Z'));
  t.equal(r.kind, 'corrupt');
  if (r.kind !== 'corrupt') return;
  t.match(r.problem, /not valid JSON/);
  t.equal(r.movedTo, `${path}.corrupt-2026-01-02T03-04-05-678Z`);
  t.notOk(existsSync(path), 'the bad file no longer sits where the next write goes');
  t.equal(readFileSync(r.movedTo as string, 'utf8'), '{"version":1,"owners":[],"instan', 'its content is kept');
  writeFileSync(path, JSON.stringify({ ...SAMPLE, instances: [{ ...SAMPLE.instances[0], max: -3 }] }));
  const r2 = readState(path);
  t.match(r2, { kind: 'corrupt', problem: /"max" must be from 0 to 1048576, got -3/ });
  t.same(readState(join(dir, 'none.json')), { kind: 'missing' });
});

t.test('state checks name the problem', async (t) => {
  t.ok(isStateData(SAMPLE));
  t.throws(() => checkState({ ...SAMPLE, version: 2 }), /unsupported state version 2/);
  t.throws(() => checkState({ ...SAMPLE, instances: [SAMPLE.instances[1], SAMPLE.instances[1]] }), /instance b appears twice/);
  const orphan = { ...SAMPLE.instances[0], indices: [1] };
  t.throws(() => checkState({ ...SAMPLE, instances: [orphan] }), /binding of loop0 has no index/);
});

t.test('restore brings back instances, limits, owners and matching bindings, and reports the rest', async (t) => {
  const { m, live, fds } = fakeManager();
  const principals: { uid: number; gid: number }[] = [];
  const report = await restore(m, SAMPLE, (b, who) => {
    principals.push(who);
    if (b.backing.path === '/img/gone') throw new Error('cannot reopen /img/gone: ENOENT');
    // a1 was replaced by another file with the same name
    return { fd: openSync('/dev/null', 'r'), dev: 10, ino: b.backing.path === '/img/a1' ? 999 : b.backing.ino };
  });
  t.same(report.instances, ['a', 'b']);
  t.same(report.rebound, [{ instance: 'a', index: 0, path: '/img/a0' }]);
  t.equal(report.failed.length, 2);
  t.match(report.failed[0], { instance: 'a', index: 1, reason: /no longer the file that was bound/ });
  t.match(report.failed[1], { instance: 'a', index: 5, reason: /ENOENT/ });
  t.equal(live.size, 1);
  t.equal(fds.length, 1, 'the factory saw one descriptor');
  const a = m.get('a');
  t.equal(a.max, 2);
  t.same(a.indices(), [0, 1, 2, 5], 'indices are restored even above a lowered max');
  t.equal(m.ownerMax(1001), 10);
  t.match(m.info(m.get('b')), { uid: 1002, gid: 1002, mode: 0o600, max: 8 });
  const again = snapshot(m);
  t.same(principals[0], { uid: 1001, gid: 1001 }, 'without boundBy, the owner\'s rights are checked');
  t.same(principals[1], { uid: 0, gid: 0 }, 'with boundBy, those rights');
  t.same(again.instances[0]?.bindings, [{ ...SAMPLE.instances[0]?.bindings[0], boundBy: { uid: 1001, gid: 1001 } }], 'the snapshot holds what is bound now');
  t.same(again.owners, SAMPLE.owners);
});
