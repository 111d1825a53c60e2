// Caps on devices, queue depth and memory: daemon-wide and per instance, each refusal
// naming its limit, nothing half-created; the protocol and state carry the new limits
// while replies to old requests keep their shape.
import t from 'tap';
import { InstanceManager, deviceMemory, type BindSpec, type BoundDevice, type Caller, type GlobalCaps } from '../../lib/instance/index.js';
import { LOOP_CTL_ADD } from '../../lib/instance/loop-ctl.js';
import { RESTORE_KEY } from '../../lib/instance/instance.js';
import { dispatch } from '../../lib/daemon/dispatch.js';
import { parseRequest, type Request } from '../../lib/protocol/index.js';
import type { BindOptions } from '../../lib/protocol/index.js';
import { snapshot } from '../../lib/state/snapshot.js';
import { checkStoredState } from '../../lib/state/schema.js';
import { fromRecord, toRecord } from '../../lib/state/state-data.js';

const MiB = 2 ** 20;
const OPTS: BindOptions = { offset: 0, sizeLimit: 0, readOnly: false, directIo: false, blockSize: 512, queues: 1, depth: 64, autoclear: false };
const BACKING = { path: '/img', dev: 1, ino: 2 };
const CALLER: Caller = { uid: 0, gid: 0, pid: 1, key: 'c1' };

function setup(caps: Partial<GlobalCaps> = {}) {
  const live = new Set<number>();
  let next = 0;
  let gate: Promise<void> | null = null;
  const factory = async (_spec: BindSpec): Promise<BoundDevice> => {
    if (gate) await gate;
    const id = next++;
    live.add(id);
    return {
      ublkId: id, path: `/dev/ublkb${id}`, major: 259, minor: id, size: 4096,
      isBusy: () => false, stop: async () => { live.delete(id); }, canStopIfUnused: false,
      resize: async () => 4096, failure: () => null,
    };
  };
  const m = new InstanceManager({ factory, root: '/tmp/ubloop-limits', caps });
  return { m, live, hold: (p: Promise<void> | null) => { gate = p; } };
}

async function code(p: Promise<unknown> | (() => unknown)): Promise<string> {
  try {
    await (typeof p === 'function' ? p() : p);
    return 'ok';
  } catch (err) {
    return `${(err as { code: string }).code}: ${(err as Error).message}`;
  }
}

t.test('deviceMemory: buffers of every tag of every queue, the rings and the descriptors', async (t) => {
  // depth 128: 128 × 1 MiB buffers, a ring of 512 entries (3 × 128 + 1 rounded up) × 100 B, one page of descriptors
  t.equal(deviceMemory({ queues: 1, depth: 128, maxIoBytes: MiB }), 128 * MiB + 512 * 100 + 4096);
  t.equal(deviceMemory({ queues: 4, depth: 128, maxIoBytes: MiB }), 4 * (128 * MiB + 512 * 100 + 4096), 'times the queues');
  t.equal(deviceMemory({ queues: 1, depth: 128 }), deviceMemory({ queues: 1, depth: 128, maxIoBytes: MiB }), 'the default max I/O size is 1 MiB');
});

t.test('global device limit: counted across instances, ENOSPC naming it, nothing created', async (t) => {
  const { m, live } = setup({ maxDevices: 3 });
  const a = await m.create({ name: 'a' });
  const b = await m.create({ name: 'b' });
  t.equal(a.add(-1), 0);
  t.equal(a.add(-1), 1);
  await b.bind({ fd: 3, backing: BACKING, options: OPTS, caller: CALLER });
  t.equal(await code(() => a.add(5)), 'ENOSPC: global device limit 3 reached (3 device(s) across every instance)');
  t.equal(await code(b.bind({ fd: 3, backing: BACKING, options: OPTS, caller: CALLER })), 'ENOSPC: global device limit 3 reached (3 device(s) across every instance)');
  t.equal(a.ioctl(LOOP_CTL_ADD, 7, CALLER), -28, 'LOOP_CTL_ADD answers -ENOSPC');
  t.same([a.indices(), b.indices(), live.size], [[0, 1], [0], 1], 'no index or device was left behind');
  t.equal(await code(b.bind({ index: 0, fd: 3, backing: BACKING, options: OPTS, caller: CALLER })), 'EBUSY: loop0 is already bound', 'an existing index is not a new device');
  a.remove(1, CALLER);
  t.equal(a.add(-1), 1, 'room again once one is removed');
});

t.test('queue depth: the instance\'s limit, then the daemon\'s; EINVAL naming the limit; nothing half-created', async (t) => {
  const { m, live } = setup({ maxDepth: 256 });
  const a = await m.create({ name: 'a', maxDepth: 128 });
  const bind = (depth: number, index?: number) =>
    code(a.bind({ fd: 3, backing: BACKING, options: { ...OPTS, depth }, caller: CALLER, ...(index === undefined ? {} : { index }) }));
  t.equal(await bind(512), "EINVAL: queue depth 512 above instance a's limit 128");
  t.equal(await bind(129, 4), "EINVAL: queue depth 129 above instance a's limit 128");
  t.same([a.indices(), live.size], [[], 0], 'no index, no device');
  t.equal(await bind(128), 'ok');
  m.set('a', { maxDepth: null });
  t.equal(await bind(512), "EINVAL: queue depth 512 above the daemon's limit 256", 'cleared: the daemon\'s limit still holds');
  t.equal(await bind(256), 'ok');
  m.set('a', { maxDepth: 16 });
  t.equal(a.boundCount, 2, 'lowering the limit detaches nothing');
  t.equal(await bind(32), "EINVAL: queue depth 32 above instance a's limit 16");
});

t.test('memory: the instance\'s limit and the global one, counted over bound devices and binds under way', async (t) => {
  const dev = deviceMemory(OPTS);
  const { m, live, hold } = setup({ maxMemory: 3 * dev });
  const a = await m.create({ name: 'a', maxMemory: 2 * dev });
  const b = await m.create({ name: 'b' });
  const bind = (inst = a) => inst.bind({ fd: 3, backing: BACKING, options: OPTS, caller: CALLER });
  await bind();
  // two at once with room for one: exactly one gets it
  let open!: () => void;
  hold(new Promise<void>((r) => (open = r)));
  const racing = [code(bind()), code(bind())];
  open();
  hold(null);
  const results = (await Promise.all(racing)).sort();
  t.equal(results[0], "ENOMEM: the device needs 65565K of memory; instance a commits 131130K of its limit 131130K", "the other: ENOMEM naming the instance's limit");
  t.equal(results[1], 'ok');
  t.equal(a.memory, 2 * dev, 'the instance commits two devices');
  t.same(a.indices(), [0, 1], 'the refused bind left no index');
  await bind(b);
  const refused = await code(bind(b));
  t.match(refused, /^ENOMEM: the device needs .* of memory; the daemon commits .* of its global memory limit /);
  t.equal(m.memory, 3 * dev);
  t.equal(live.size, 3);
  await a.unbind(0);
  t.equal(a.memory, dev, 'an unbound device frees its share');
  t.equal(await code(bind(b)), 'ok', 'and room is there again');
  t.match(m.info(a), { maxMemory: 2 * dev, memory: dev });
});

t.test('restore brings saved bindings back whatever the limits say now', async (t) => {
  const { m } = setup({ maxDepth: 8 });
  const a = await m.create({ name: 'a' });
  a.restoreIndex(0);
  t.match(await code(a.bind({ index: 0, fd: 3, backing: BACKING, options: OPTS, caller: CALLER })), /^EINVAL: queue depth 64 above the daemon's limit 8/);
  await a.bind({ index: 0, fd: 3, backing: BACKING, options: OPTS, caller: { ...CALLER, key: RESTORE_KEY } });
  t.equal(a.boundCount, 1);
});

t.test('protocol: the new fields checked; null clears on set; old requests answered in the old shape', async (t) => {
  const { m } = setup();
  const ctx = { caller: CALLER, scope: { kind: 'admin' as const }, fds: [] };
  const run = (line: string) => {
    const p = parseRequest(line);
    if (p.error) return Promise.resolve({ error: `${p.error.code}: ${p.error.message}` });
    return dispatch(m, p.request as Request, ctx);
  };
  const old = (await run('{"op":"instance.create","name":"old","max":4}')) as { instance: Record<string, unknown> };
  t.same(Object.keys(old.instance).sort(), ['bound', 'count', 'dir', 'gid', 'loopControl', 'max', 'mode', 'name', 'ownerMax', 'uid']);
  const capped = (await run('{"op":"instance.create","name":"c","maxDepth":64,"maxMemory":1073741824}')) as { instance: Record<string, unknown> };
  t.match(capped.instance, { maxDepth: 64, maxMemory: 2 ** 30, memory: 0 });
  t.same(await run('{"op":"instance.create","name":"d","maxDepth":0}'), { error: 'EINVAL: "maxDepth" must be from 1 to 4096, got 0' });
  t.same(await run('{"op":"instance.create","name":"d","maxMemory":-1}'), { error: `EINVAL: "maxMemory" must be from 0 to ${Number.MAX_SAFE_INTEGER}, got -1` });
  t.same(await run('{"op":"instance.create","name":"d","maxDepth":null}'), { error: 'EINVAL: "maxDepth" must be an integer, got null' }, 'null only clears, on set');
  const cleared = (await run('{"op":"instance.set","name":"c","maxDepth":null}')) as { instance: Record<string, unknown> };
  t.notOk('maxDepth' in cleared.instance);
  t.match(cleared.instance, { maxMemory: 2 ** 30 });
  t.same(await run('{"op":"instance.set","name":"c"}'), { error: 'EINVAL: "instance.set" needs "max", "ownerMax", "maxDepth" or "maxMemory"' });
  t.same(await run('{"op":"instance.set","name":"c","maxDepth":"8"}'), { error: 'EINVAL: "maxDepth" must be an integer, got "8"' });
});

t.test('state: the limits persist when set and only then; the file reads back', async (t) => {
  const { m } = setup();
  await m.create({ name: 'a', maxDepth: 32, maxMemory: 1 << 30 });
  await m.create({ name: 'b' });
  const rec = toRecord(snapshot(m));
  const [a, b] = rec.instances;
  t.match(a, { name: 'a', maxDepth: 32, maxMemory: 1 << 30 });
  t.notOk(b !== undefined && ('maxDepth' in b || 'maxMemory' in b), 'an instance without them stores the old shape');
  const back = fromRecord(checkStoredState(JSON.parse(JSON.stringify(rec))));
  t.match(back.instances[0], { maxDepth: 32, maxMemory: 1 << 30 });
  t.throws(() => checkStoredState({ ...rec, instances: [{ ...a, maxDepth: -1 }] }), /maxDepth must be an integer/);
});

t.test('CLI: the daemon\'s caps and the instance\'s are checked before anything starts or is sent', async (t) => {
  const { main } = await import('../../lib/cli/main.js');
  const run = async (argv: string[]) => {
    let err = '';
    const write = process.stderr.write.bind(process.stderr);
    process.stderr.write = ((s: string | Uint8Array) => ((err += String(s)), true)) as typeof process.stderr.write;
    try {
      return { code: await main(argv), err };
    } finally {
      process.stderr.write = write;
    }
  };
  t.same(await run(['daemon', '--max-queue-depth', '0', '--socket', '/nonexistent/x.sock']), { code: 2, err: 'ubloop: --max-queue-depth must be a whole number of at least 1, got 0\n' });
  t.same(await run(['daemon', '--max-devices', '-1', '--socket', '/nonexistent/x.sock']), { code: 2, err: 'ubloop: --max-devices must be a whole number of at least 0, got -1\n' });
  t.same(await run(['daemon', '--max-memory', 'lots', '--socket', '/nonexistent/x.sock']), { code: 2, err: 'ubloop: --max-memory "lots" is not a size (examples: 4096, 512K, 256M, 1G)\n' });
  t.same(await run(['instance', 'create', 'x', '--max-depth', 'none', '--socket', '/nonexistent/x.sock']), {
    code: 2, err: 'ubloop: --max-depth none is for "instance set" (a new instance has no limit unless given one)\n',
  });
  t.same(await run(['instance', 'set', 'x', '--max-depth', '1.5', '--socket', '/nonexistent/x.sock']), { code: 2, err: 'ubloop: --max-depth must be a whole number or "none", got "1.5"\n' });
});
