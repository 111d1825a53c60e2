import t from 'tap';
import { existsSync, mkdtempSync, readdirSync, readFileSync, writeFileSync, openSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { InstanceManager, type BoundDevice } from '../../lib/instance/index.js';
import {
  STATE_VERSION, StateVersionError, StateWriter, checkStoredState, readState, restore, snapshot, upgradeState, writeState, type StateData,
} from '../../lib/state/index.js';
import type { BindOptions } from '../../lib/protocol/index.js';

const FIXTURES = join(import.meta.dirname, '..', 'fixtures');
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
  owners: [{ uid: 1001, max: 10 }],
  instances: [
    { name: 'a', max: 2, uid: 1001, gid: 1001, mode: 0o660, indices: [0, 1, 2, 5], bindings: [
      { index: 0, backing: { path: '/img/a0', dev: 10, ino: 100 }, options: OPTS, boundBy: { uid: 1001, gid: 1001 } },
      { index: 1, backing: { path: '/img/a1', dev: 10, ino: 101 }, options: OPTS, boundBy: { uid: 0, gid: 0 } },
      { index: 5, backing: { path: '/img/gone', dev: 10, ino: 105 }, options: OPTS, boundBy: { uid: 1001, gid: 1001 } },
    ] },
    { name: 'b', max: 8, uid: 1002, gid: 1002, mode: 0o600, indices: [], bindings: [] },
  ],
};

function tempState(): { dir: string; path: string } {
  const dir = mkdtempSync(join(tmpdir(), 'ubloop-state-'));
  return { dir, path: join(dir, 'state.json') };
}

t.test('writeState replaces the file atomically and leaves no temp file', async (t) => {
  const { dir, path } = tempState();
  writeFileSync(path, 'old');
  await writeState(path, SAMPLE);
  t.match(JSON.parse(readFileSync(path, 'utf8')), { version: STATE_VERSION, owners: SAMPLE.owners });
  t.same(readdirSync(dir), ['state.json'], 'no temp file left');
  t.same(readState(path), { kind: 'ok', state: SAMPLE, from: STATE_VERSION });
});

t.test('the stored format is pinned: what is written is exactly the version 2 fixture', async (t) => {
  // A renamed or added field of the protocol's bind options must not change this file.
  const { path } = tempState();
  const fixture = readFileSync(join(FIXTURES, 'state-v2.json'), 'utf8');
  const record = readState(join(FIXTURES, 'state-v2.json'));
  t.equal(record.kind, 'ok');
  if (record.kind !== 'ok') return;
  await writeState(path, record.state);
  t.equal(readFileSync(path, 'utf8'), fixture);
});

t.test('a version 1 state file (the format before issue 11) loads and is migrated', async (t) => {
  // written by the version 1 writer (writeState(snapshot(manager)) of commit 7197e47)
  const { path } = tempState();
  writeFileSync(path, readFileSync(join(FIXTURES, 'state-v1.json')));
  const r = readState(path);
  t.equal(r.kind, 'ok');
  if (r.kind !== 'ok') return;
  t.equal(r.from, 1, 'read as version 1');
  t.same(r.state.owners, [{ uid: 1001, max: 10 }]);
  t.same(r.state.instances.map((i) => [i.name, i.max, i.uid, i.gid, i.mode, i.indices]), [
    ['ci', 4, 1001, 1001, 0o660, [0, 1, 5]],
    ['empty', 8, 1002, 1002, 0o600, []],
  ]);
  t.same(r.state.instances[0]?.bindings, [
    {
      index: 0,
      backing: { path: '/srv/images/ci0.img', dev: 2049, ino: 131075 },
      options: { offset: 4096, sizeLimit: 0, readOnly: true, directIo: false, blockSize: 4096, queues: 2, depth: 32, autoclear: false },
      boundBy: { uid: 1001, gid: 1001 },
    },
    {
      index: 5,
      backing: { path: '/srv/images/ci5.img', dev: 2049, ino: 131080 },
      options: { offset: 0, sizeLimit: 1048576, readOnly: false, directIo: true, blockSize: 512, queues: 1, depth: 128, autoclear: true },
      boundBy: { uid: 0, gid: 0 },
    },
  ]);
  await writeState(path, r.state);
  t.equal(readFileSync(path, 'utf8'), readFileSync(join(FIXTURES, 'state-v2.json'), 'utf8'), 'written back as the version 2 fixture');
});

t.test('version 1 without boundBy and with options left out gets what version 1 meant', async (t) => {
  // Files written before boundBy existed, read by version 1 through the protocol's
  // bind checker: a missing option took the protocol's default of the time.
  const v1 = JSON.parse(readFileSync(join(FIXTURES, 'state-v1.json'), 'utf8'));
  delete v1.instances[0].bindings[1].boundBy;
  v1.instances[0].bindings[1].options = { readOnly: true };
  const { state, from } = upgradeState(v1, 'state.json');
  t.equal(from, 1);
  t.same(state.instances[0]?.bindings[1]?.boundBy, { uid: 1001, gid: 1001 }, 'the instance owner\'s rights');
  t.same(state.instances[0]?.bindings[1]?.options, { offset: 0, sizeLimit: 0, readOnly: true, directIo: false, blockSize: 512, queues: 1, depth: 128, autoclear: false });
});

t.test('a state file of a newer version is refused with its version and path, and left where it is', async (t) => {
  const { dir, path } = tempState();
  const newer = JSON.stringify({ version: STATE_VERSION + 1, owners: [], instances: [{ name: 'x', shiny: true }] });
  writeFileSync(path, newer);
  const r = readState(path);
  t.match(r, { kind: 'newer', version: STATE_VERSION + 1 });
  if (r.kind !== 'newer') return;
  t.match(r.problem, `state file ${path} has version ${STATE_VERSION + 1}, newer than this ubloop understands (${STATE_VERSION})`);
  t.same(readdirSync(dir), ['state.json'], 'not moved aside');
  t.equal(readFileSync(path, 'utf8'), newer, 'not changed');
  t.throws(() => upgradeState(JSON.parse(newer), path), StateVersionError);
});

t.test('a corrupt or invalid state file is reported and moved aside, never reused', async (t) => {
  const { dir, path } = tempState();
  writeFileSync(path, '{"version":2,"owners":[],"instan');
  const r = readState(path, new Date('2026-01-02T03:04:05.678Z'));
  t.equal(r.kind, 'corrupt');
  if (r.kind !== 'corrupt') return;
  t.match(r.problem, /not valid JSON/);
  t.equal(r.movedTo, `${path}.corrupt-2026-01-02T03-04-05-678Z`);
  t.notOk(existsSync(path), 'the bad file no longer sits where the next write goes');
  t.equal(readFileSync(r.movedTo as string, 'utf8'), '{"version":2,"owners":[],"instan', 'its content is kept');
  await writeState(path, SAMPLE);
  const bad = JSON.parse(readFileSync(path, 'utf8'));
  bad.instances[0].max = -3;
  writeFileSync(path, JSON.stringify(bad));
  t.match(readState(path), { kind: 'corrupt', problem: /instances\[0\]\.max must be an integer from 0 to 2147483647, got -3/ });
  writeFileSync(path, JSON.stringify({ owners: [], instances: [] }));
  t.match(readState(path), { kind: 'corrupt', problem: /has no valid version \(got nothing\)/ });
  t.same(readState(join(dir, 'none.json')), { kind: 'missing' });
});

t.test('state checks name the problem', async (t) => {
  const record = JSON.parse(readFileSync(join(FIXTURES, 'state-v2.json'), 'utf8'));
  t.ok(checkStoredState(record));
  const twice = { ...record, instances: [record.instances[1], record.instances[1]] };
  t.throws(() => checkStoredState(twice), /instance empty appears twice/);
  const orphan = { ...record, instances: [{ ...record.instances[0], indices: [1] }] };
  t.throws(() => checkStoredState(orphan), /the binding of loop0 has no index/);
  const noBoundBy = structuredClone(record);
  delete noBoundBy.instances[0].bindings[0].boundBy;
  t.throws(() => checkStoredState(noBoundBy), /instances\[0\]\.bindings\[0\]\.boundBy must be an object/, 'version 2 spells out boundBy');
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
  t.same(report.rebound, [{ instance: 'a', index: 0, path: '/img/a0', recovered: false }]);
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
  t.same(principals[0], { uid: 1001, gid: 1001 }, 'the rights that bound it are checked');
  t.same(principals[1], { uid: 0, gid: 0 }, 'root\'s, for what root bound');
  t.same(again.instances[0]?.bindings, [{ ...SAMPLE.instances[0]?.bindings[0], ublkId: 0 }], 'the snapshot holds what is bound now, with its ublk id');
  t.same(again.owners, SAMPLE.owners);
});

t.test('a tuned binding keeps its tuning across a restart; a bad stored option fails that binding only', async (t) => {
  const tuned: BindOptions = {
    ...OPTS, readOnly: false, maxIoBytes: 1 << 20, discard: false, pollUs: 0, copy: 'kernel', scheduler: 'mq-deadline', partscan: true, clearOnUnmount: true,
  };
  const state: StateData = {
    owners: [],
    instances: [{ name: 't', max: 4, uid: 0, gid: 0, mode: 0o600, indices: [0, 1], bindings: [
      { index: 0, backing: { path: '/img/t0', dev: 10, ino: 200 }, options: tuned, boundBy: { uid: 0, gid: 0 } },
      { index: 1, backing: { path: '/img/t1', dev: 10, ino: 201 }, options: OPTS, boundBy: { uid: 0, gid: 0 } },
    ] }],
  };
  const { path } = tempState();
  await writeState(path, state);
  const stored = JSON.parse(readFileSync(path, 'utf8')) as { instances: { bindings: { options: Record<string, unknown> }[] }[] };
  t.match(stored.instances[0]?.bindings[0]?.options, { maxIoBytes: 1 << 20, discard: false, pollUs: 0, copy: 'kernel', scheduler: 'mq-deadline', partscan: true, clearOnUnmount: true });
  t.notOk('copy' in (stored.instances[0]?.bindings[1]?.options ?? {}), 'untuned options are not written (the default then is the day\'s default)');
  t.notOk('partscan' in (stored.instances[0]?.bindings[1]?.options ?? {}), 'nor partscan');
  t.notOk('clearOnUnmount' in (stored.instances[0]?.bindings[1]?.options ?? {}), 'nor a mount\'s autoclear: files of before issue 12 look the same');
  // a stored copy mode this build does not know: that binding fails, the other comes back
  const bound = stored.instances[0]?.bindings[1];
  if (bound) bound.options['copy'] = 'warp';
  writeFileSync(path, JSON.stringify(stored));
  const r = readState(path);
  t.equal(r.kind, 'ok');
  if (r.kind !== 'ok') return;
  const { m } = fakeManager();
  const report = await restore(m, r.state, (b) => ({ fd: openSync('/dev/null', 'r'), dev: 10, ino: b.backing.ino }));
  t.same(report.rebound, [{ instance: 't', index: 0, path: '/img/t0', recovered: false }]);
  t.match(report.failed, [{ instance: 't', index: 1, reason: /copy/ }]);
  t.same(snapshot(m).instances[0]?.bindings[0]?.options, tuned, 'the restored binding has the tuning it was bound with');
});

/** A StateWriter over a fake write that takes `ms` and records the state it wrote. */
function fakeWriter(ms: number) {
  let n = 0;
  const written: number[] = [];
  const w = new StateWriter({
    path: '/nowhere',
    take: () => ({ owners: [{ uid: 0, max: n }], instances: [] }),
    failed: () => undefined,
    write: async (_path, state) => {
      await new Promise((r) => setTimeout(r, ms));
      written.push(state.owners[0]?.max ?? -1);
    },
  });
  const change = () => {
    n++;
    w.changed();
  };
  return { w, written, change };
}

t.test('state writes are coalesced: changes in one turn, or while a write is in flight, go out together', async (t) => {
  const { w, written, change } = fakeWriter(20);
  change();
  change();
  change();
  await w.flush();
  t.same(written, [3], 'three changes, one write of the latest state');
  change();
  await new Promise((r) => setTimeout(r, 5)); // the write of 4 is in flight
  change();
  change();
  await w.flush();
  t.same(written, [3, 4, 6], 'the changes made during a write are merged into the next');
  await w.flush();
  t.equal(w.writes, 3, 'nothing to write, no write');
});

t.test('a request\'s changes are written once, before its reply; a request that changed nothing does not wait', async (t) => {
  const { w, written, change } = fakeWriter(30);
  const result = await w.during(async () => {
    change();
    await new Promise((r) => setTimeout(r, 40)); // e.g. the device being created
    change();
    t.same(written, [], 'nothing written while the request runs');
    return 'reply';
  });
  t.equal(result, 'reply');
  t.same(written, [2], 'written once, and on disk when the request resolves');
  await t.rejects(w.during(async () => {
    change();
    throw new Error('bind failed');
  }), /bind failed/);
  t.same(written, [2, 3], 'a failed request\'s changes are written too, before its error reply');
  change(); // outside a request: written in the background
  const start = Date.now();
  await w.during(async () => 'list');
  t.ok(Date.now() - start < 25, 'a read does not wait for a write it did not cause');
  await w.close();
  change();
  await w.flush();
  t.same(written, [2, 3, 4], 'after close, changes are no longer written');
});

t.test('a change from a callback set up during a finished request is still written', async (t) => {
  const { w, written, change } = fakeWriter(5);
  await w.during(async () => {
    change();
    // e.g. a CUSE ioctl handler registered by instance.create: runs in its context later
    setTimeout(change, 20);
  });
  t.same(written, [1]);
  await new Promise((resolve) => setTimeout(resolve, 60));
  t.same(written, [1, 2], 'written although it ran in the ended request\'s context');
});

t.test('crash recovery: a binding keeps its ublk id in the file, optional in both directions', async (t) => {
  const record = JSON.parse(readFileSync(join(FIXTURES, 'state-v2.json'), 'utf8'));
  t.notOk('ublkId' in record.instances[0].bindings[0], 'the fixture predates the field');
  t.ok(checkStoredState(record), 'a file without ublk ids loads');
  const withId = structuredClone(record);
  withId.instances[0].bindings[0].ublkId = 7;
  t.equal(checkStoredState(withId).instances[0]?.bindings[0]?.ublkId, 7, 'and one with them keeps them');
  t.equal(checkStoredState(withId).version, STATE_VERSION, 'same version: an older reader of version 2 ignores the field');
  withId.instances[0].bindings[0].ublkId = -1;
  t.throws(() => checkStoredState(withId), /instances\[0\]\.bindings\[0\]\.ublkId must be an integer/);
  const { path } = tempState();
  const { m } = fakeManager();
  await restore(m, { owners: [], instances: [{ name: 'x', max: 2, uid: 0, gid: 0, mode: 0o600, indices: [0], bindings: [] }] }, () => {
    throw new Error('unused');
  });
  await m.get('x').bind({ index: 0, fd: openSync('/dev/null', 'r'), backing: { path: '/img/x', dev: 1, ino: 2 }, options: OPTS, caller: { uid: 0, gid: 0, pid: 1, key: 'k' } });
  await writeState(path, snapshot(m));
  const back = readState(path);
  t.equal(back.kind === 'ok' ? back.state.instances[0]?.bindings[0]?.ublkId : null, 0, 'written and read back');
});

t.test('crash recovery: restore asks the factory to take over the saved device, and deletes the ones it cannot restore', async (t) => {
  const asked: (number | undefined)[] = [];
  const m = new InstanceManager({
    root: '/r',
    factory: async (spec): Promise<BoundDevice> => {
      asked.push(spec.recover);
      const id = spec.recover ?? 40;
      return { ublkId: id, path: `/dev/ublkb${id}`, major: 259, minor: id, size: 1 << 20, isBusy: () => false, stop: async () => {}, canStopIfUnused: false, resize: async () => 1 << 20, failure: () => null, recovered: spec.recover !== undefined };
    },
  });
  const abandoned: number[] = [];
  const state = {
    owners: [],
    instances: [{ name: 'r', max: 4, uid: 0, gid: 0, mode: 0o600, indices: [0, 1, 2, 3], bindings: [
      { index: 0, backing: { path: '/img/r0', dev: 1, ino: 10 }, options: OPTS, boundBy: { uid: 0, gid: 0 }, ublkId: 3 },
      { index: 1, backing: { path: '/img/r1', dev: 1, ino: 11 }, options: OPTS, boundBy: { uid: 0, gid: 0 } },
      { index: 2, backing: { path: '/img/gone', dev: 1, ino: 12 }, options: OPTS, boundBy: { uid: 0, gid: 0 }, ublkId: 5 },
      { index: 3, backing: { path: '/img/replaced', dev: 1, ino: 13 }, options: OPTS, boundBy: { uid: 0, gid: 0 }, ublkId: 6 },
    ] }],
  };
  const report = await restore(
    m,
    state,
    (b) => {
      if (b.backing.path === '/img/gone') throw new Error('cannot reopen /img/gone: ENOENT');
      return { fd: openSync('/dev/null', 'r'), dev: 1, ino: b.backing.path === '/img/replaced' ? 99 : b.backing.ino };
    },
    async (id) => {
      abandoned.push(id);
      return id === 5;
    },
  );
  t.same(asked, [3, undefined], 'the saved id is handed to the factory; a binding without one gets a new device');
  t.same(report.rebound, [
    { instance: 'r', index: 0, path: '/img/r0', recovered: true },
    { instance: 'r', index: 1, path: '/img/r1', recovered: false },
  ]);
  t.same(abandoned, [5, 6], 'the devices of bindings that cannot come back are deleted');
  t.match(report.failed, [
    { index: 2, reason: /ENOENT; \/dev\/ublkb5 was deleted, its held I\/O failed with EIO/ },
    { index: 3, reason: /no longer the file that was bound/ },
  ]);
  t.notMatch(report.failed[1]?.reason ?? '', /was deleted/, 'said only when there was a device to delete');
  t.equal(snapshot(m).instances[0]?.bindings[0]?.ublkId, 3, 'the recovered device keeps its id in the state');
});
