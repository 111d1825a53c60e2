import t from 'tap';
import { InstanceManager, LOOP_CTL_ADD, LOOP_CTL_GET_FREE, LOOP_CTL_REMOVE, type BoundDevice, type BindSpec, type BusyCheck, type Caller } from '../../lib/instance/index.js';
import type { BindOptions } from '../../lib/protocol/index.js';

const OPTS: BindOptions = { offset: 0, sizeLimit: 0, readOnly: false, directIo: false, blockSize: 512, queues: 1, depth: 64, autoclear: false };
const BACKING = { path: '/img', dev: 1, ino: 2 };

/**
 * A fake ublk device factory: counts live devices, can be made slow, busy or failing.
 * `busy`: the looks see it in use; `claimed`: only the exclusive-open probe does.
 */
class FakeUblk {
  live = new Set<number>();
  next = 0;
  busy = new Set<number>();
  claimed = new Set<number>();
  /** Device ids, one per exclusive-open probe. */
  probes: number[] = [];
  delayMs = 0;
  failNext: Error | null = null;
  factory = async (spec: BindSpec): Promise<BoundDevice> => {
    if (this.delayMs) await new Promise((r) => setTimeout(r, this.delayMs));
    if (this.failNext) {
      const e = this.failNext;
      this.failNext = null;
      throw e;
    }
    const id = this.next++;
    this.live.add(id);
    const live = this.live;
    const busy = this.busy;
    const claimed = this.claimed;
    const probes = this.probes;
    return {
      ublkId: id, path: `/dev/ublkb${id}`, major: 259, minor: id, size: 4096 * (spec.fd + 1),
      isBusy: (check?: BusyCheck) => {
        if (busy.has(id)) return true;
        if (!check?.exclusive) return false;
        probes.push(id);
        return claimed.has(id);
      },
      claimed: () => {
        probes.push(id);
        return claimed.has(id);
      },
      stop: async () => { live.delete(id); },
      canStopIfUnused: false,
      resize: async (size?: number) => size ?? 4096,
      failure: () => null,
    };
  };
}

function setup(opts: { max?: number; now?: () => number } = {}) {
  const fake = new FakeUblk();
  const events: string[] = [];
  let changes = 0;
  const m = new InstanceManager({
    factory: fake.factory,
    root: '/tmp/ubloop-test',
    ...(opts.now ? { now: opts.now } : {}),
    hooks: {
      bound: (i, index, d) => { events.push(`bound ${i.name}/${index} ublkb${d.ublkId}`); },
      unbound: (i, index) => { events.push(`unbound ${i.name}/${index}`); },
      changed: () => { changes++; },
    },
  });
  return { m, fake, events, changes: () => changes };
}

const caller = (n: number): Caller => ({ uid: 0, gid: 0, pid: 100, key: `conn:${n}` });
const code = (fn: () => unknown): string | number => {
  try { return fn() as number; } catch (e) { return (e as { code: string }).code; }
};

t.test('LOOP_CTL_ADD / REMOVE / GET_FREE follow the kernel', async (t) => {
  const { m } = setup();
  const a = await m.create({ name: 'a' });
  const c = caller(1);
  t.equal(a.ioctl(LOOP_CTL_GET_FREE, 0, c), 0, 'GET_FREE on an empty instance creates loop0');
  t.equal(a.ioctl(LOOP_CTL_GET_FREE, 0, c), 0, 'and keeps answering 0 while it is unbound');
  t.equal(a.ioctl(LOOP_CTL_ADD, 5, c), 5, 'ADD returns the index');
  t.equal(a.ioctl(LOOP_CTL_ADD, 5, c), -17, 'ADD of an existing index: EEXIST');
  t.equal(a.ioctl(LOOP_CTL_ADD, -1, c), 1, 'ADD of a negative index takes the lowest unused one');
  t.equal(a.ioctl(LOOP_CTL_ADD, 2 ** 32 + 3, c), 3, 'only the low 32 bits of the argument count');
  t.equal(a.ioctl(LOOP_CTL_ADD, 1048575, c), 1048575, 'the last minor is fine');
  t.equal(a.ioctl(LOOP_CTL_ADD, 1048576, c), -22, 'beyond the last minor: EINVAL');
  t.equal(a.ioctl(LOOP_CTL_ADD, 2 ** 31 - 1, c), -22);
  t.equal(a.ioctl(LOOP_CTL_REMOVE, -1, c), -22, 'REMOVE of a negative index: EINVAL');
  t.equal(a.ioctl(LOOP_CTL_REMOVE, 77, c), -19, 'REMOVE of an absent index: ENODEV');
  t.equal(a.ioctl(LOOP_CTL_REMOVE, 5, c), 0);
  t.equal(a.ioctl(LOOP_CTL_REMOVE, 5, c), -19);
  t.equal(a.ioctl(0x4c83, 0, c), -38, 'unknown ioctl: ENOSYS');
  t.same(a.indices(), [0, 1, 3, 1048575]);
});

t.test('GET_FREE returns the lowest existing unbound index, not the lowest hole', async (t) => {
  const { m } = setup();
  const a = await m.create({ name: 'a' });
  const c = caller(1);
  for (const i of [0, 2, 3]) a.add(i);
  await a.bind({ index: 0, fd: 0, backing: BACKING, options: OPTS, caller: c });
  t.equal(a.getFree(c), 2, 'loop1 does not exist, loop2 is the lowest unbound');
  await a.bind({ index: 2, fd: 0, backing: BACKING, options: OPTS, caller: c });
  await a.bind({ index: 3, fd: 0, backing: BACKING, options: OPTS, caller: c });
  t.equal(a.getFree(c), 1, 'all bound: a new device at the lowest unused index');
  t.equal(a.ioctl(LOOP_CTL_REMOVE, 2, c), -16, 'REMOVE of a bound index: EBUSY');
});

t.test('max: ENOSPC at max, live raise allows more, lowering detaches nothing', async (t) => {
  const { m, fake } = setup();
  const a = await m.create({ name: 'a', max: 4 });
  const c = caller(1);
  for (let i = 0; i < 4; i++) await a.bind({ fd: 0, backing: BACKING, options: OPTS, caller: c });
  t.equal(a.ioctl(LOOP_CTL_GET_FREE, 0, c), -28, '5th GET_FREE: ENOSPC');
  t.equal(a.ioctl(LOOP_CTL_ADD, 9, c), -28, '5th ADD: ENOSPC');
  t.equal(a.ioctl(LOOP_CTL_ADD, 2, c), -17, 'EEXIST wins over ENOSPC');
  m.set('a', { max: 6 });
  await a.bind({ fd: 0, backing: BACKING, options: OPTS, caller: c });
  t.equal(a.ioctl(LOOP_CTL_ADD, -1, c), 5);
  await a.bind({ index: 5, fd: 0, backing: BACKING, options: OPTS, caller: c });
  t.equal(a.boundCount, 6);
  m.set('a', { max: 2 });
  t.equal(a.boundCount, 6, 'lowering max keeps all six bound');
  t.equal(fake.live.size, 6);
  t.equal(a.ioctl(LOOP_CTL_GET_FREE, 0, c), -28, 'and refuses the next');
  await a.unbind(5);
  t.equal(a.ioctl(LOOP_CTL_GET_FREE, 0, c), 5, 'an existing unbound index is still handed out');
  t.equal(a.ioctl(LOOP_CTL_REMOVE, 5, c), 0);
  t.equal(a.ioctl(LOOP_CTL_ADD, -1, c), -28, 'still 5 > max 2: refused');
  t.equal(code(() => m.set('a', { max: -1 })), 'EINVAL');
  t.equal(code(() => m.set('a', { max: 1048577 })), 'EINVAL');
  t.equal(code(() => m.set('a', { max: 2.5 })), 'EINVAL');
  t.equal(a.max, 2, 'a refused change leaves max alone');
});

t.test('owner limit counts devices across all instances of the owner', async (t) => {
  const { m } = setup();
  const a = await m.create({ name: 'a', uid: 1001, ownerMax: 3 });
  const b = await m.create({ name: 'b', uid: 1001 });
  const other = await m.create({ name: 'c', uid: 1002 });
  const c = caller(1);
  a.add(-1); a.add(-1); b.add(-1);
  t.equal(b.ioctl(LOOP_CTL_ADD, -1, c), -28, 'fourth device of uid 1001: ENOSPC');
  t.equal(other.ioctl(LOOP_CTL_ADD, -1, c), 0, 'another owner is not affected');
  t.equal(m.ownerCount(1001), 3);
  m.set('b', { ownerMax: 4 });
  t.equal(b.ioctl(LOOP_CTL_ADD, -1, c), 1);
  t.equal(m.info(a).ownerMax, 4);
});

t.test('64 racing GET_FREE+bind with max=8: exactly 8 bound, the rest ENOSPC', async (t) => {
  const { m, fake } = setup();
  fake.delayMs = 5;
  const a = await m.create({ name: 'a', max: 8 });
  const results = await Promise.allSettled(
    Array.from({ length: 64 }, async (_, n) => {
      const c = caller(n);
      const index = a.getFree(c);
      await new Promise((r) => setTimeout(r, (n * 7) % 11));
      return a.bind({ index, fd: 0, backing: BACKING, options: OPTS, caller: c });
    }),
  );
  const ok = results.filter((r) => r.status === 'fulfilled');
  const codes = results.filter((r) => r.status === 'rejected').map((r) => (r as PromiseRejectedResult).reason.code);
  t.equal(ok.length, 8);
  t.same([...new Set(codes)], ['ENOSPC']);
  t.equal(fake.live.size, 8, 'one device per bound index, none leaked');
  t.same(a.indices(), [0, 1, 2, 3, 4, 5, 6, 7]);
});

t.test('a GET_FREE reservation keeps racing callers apart and expires', async (t) => {
  let now = 1000;
  const { m } = setup({ now: () => now });
  const a = await m.create({ name: 'a' });
  const c1 = caller(1);
  const c2 = caller(2);
  t.equal(a.getFree(c1), 0);
  t.equal(a.getFree(c2), 1, 'a second caller gets another index');
  t.equal(a.getFree(c1), 0, 'the holder gets its own index again');
  await t.rejects(a.bind({ index: 0, fd: 0, backing: BACKING, options: OPTS, caller: c2 }), { code: 'EBUSY', message: /reserved/ });
  t.equal(a.ioctl(LOOP_CTL_REMOVE, 0, c2), -16, 'nor can another caller remove it');
  const viaCuse: Caller = { uid: 0, gid: 0, pid: 4242, key: 'pid:4242' };
  const sameProcessSocket: Caller = { uid: 0, gid: 0, pid: 4242, key: 'conn:99' };
  t.equal(a.getFree(viaCuse), 2);
  await a.bind({ index: 2, fd: 0, backing: BACKING, options: OPTS, caller: sameProcessSocket });
  t.pass('a reservation made through the char device is honoured on the socket of the same process');
  now += 10_001;
  t.equal(a.getFree(c2), 0, 'expired reservations free the index');
  m.clientGone('conn:2');
  t.equal(a.getFree(c1), 0, 'reservations of a gone client end');
});

t.test('bind and unbind errors, with precedence', async (t) => {
  const { m, fake, events } = setup();
  const a = await m.create({ name: 'a' });
  const c = caller(1);
  await t.rejects(a.bind({ index: -1, fd: 0, backing: BACKING, options: OPTS, caller: c }), { code: 'EINVAL', message: /negative/ });
  await t.rejects(a.bind({ index: 1048576, fd: 0, backing: BACKING, options: OPTS, caller: c }), { code: 'EINVAL', message: /beyond/ });
  await t.rejects(a.bind({ index: 3, fd: 0, backing: BACKING, options: OPTS, caller: c }), { code: 'ENODEV' });
  const e = await a.bind({ fd: 1, backing: BACKING, options: OPTS, caller: c });
  t.match(e, { instance: 'a', index: 0, state: 'bound', path: '/tmp/ubloop-test/instances/a/loop0', ublkPath: '/dev/ublkb0', size: 8192 });
  await t.rejects(a.bind({ index: 0, fd: 0, backing: BACKING, options: OPTS, caller: c }), { code: 'EBUSY', message: /already bound/ });
  fake.failNext = Object.assign(new Error('/img is a directory'), { code: 'EISDIR' });
  await t.rejects(a.bind({ fd: 0, backing: BACKING, options: OPTS, caller: c }), { code: 'EISDIR' });
  t.same(a.indices(), [0], 'a failed bind without index leaves no index behind');
  await t.rejects(a.unbind(4), { code: 'ENODEV' });
  a.add(4);
  await t.rejects(a.unbind(4), { code: 'ENXIO' });
  t.same(await a.unbind(0), { deferred: false });
  t.same(events, ['bound a/0 ublkb0', 'unbound a/0']);
  t.equal(fake.live.size, 0);
  t.same(a.indices(), [0, 4], 'unbind keeps the index, like LOOP_CLR_FD');
});

t.test('a busy device is detached lazily; autoclear waits for the client and the grace time', async (t) => {
  let now = 0;
  const { m, fake } = setup({ now: () => now });
  const a = await m.create({ name: 'a' });
  const c = caller(1);
  await a.bind({ fd: 0, backing: BACKING, options: OPTS, caller: c });
  fake.busy.add(0);
  t.same(await a.unbind(0), { deferred: true });
  t.equal(a.entry(0)?.detachPending, true);
  t.same(await m.sweep(1000), [], 'still busy: nothing');
  fake.busy.delete(0);
  t.same(await m.sweep(1000), [{ instance: 'a', index: 0 }], 'released: unbound');

  await a.bind({ fd: 0, backing: BACKING, options: { ...OPTS, autoclear: true }, caller: c });
  t.same(await m.sweep(0), [], 'the client is still there');
  m.clientGone('conn:1');
  fake.busy.add(1);
  t.same(await m.sweep(0), [], 'open or mounted: kept');
  fake.busy.delete(1);
  t.same(await m.sweep(1000), [], 'idle, but within the grace time');
  now += 1000;
  t.same(await m.sweep(1000), [{ instance: 'a', index: 0 }]);
  t.equal(fake.live.size, 0);
});

t.test('a mount\'s autoclear (clearOnUnmount): kept while claimed, detached once the claim and every user are gone', async (t) => {
  let now = 0;
  const { m, fake } = setup({ now: () => now });
  const a = await m.create({ name: 'a' });
  await a.bind({ fd: 0, backing: BACKING, options: { ...OPTS, clearOnUnmount: true }, caller: caller(1) });
  t.same(await m.sweepUnmounted(1000), [], 'the mounting client is still there: not even probed');
  t.same(fake.probes, []);
  t.same(await m.sweep(0), [], 'the slow sweep leaves it to the claim poll');
  fake.claimed.add(0);
  m.clientGone('conn:1');
  for (let i = 0; i < 5; i++) t.same(await m.sweepUnmounted(1000), [], 'mounted (claimed): kept');
  t.equal(fake.probes.length, 5, 'one probe per poll, nothing more');
  fake.claimed.delete(0);
  fake.busy.add(0);
  t.same(await m.sweepUnmounted(1000), [], 'unmounted, but someone has it open for I/O: kept (loop: the last close)');
  now += 100;
  t.same(await m.sweepUnmounted(1000), [], 'the looks are not repeated within lookMs');
  fake.busy.delete(0);
  t.same(await m.sweepUnmounted(1000), [], 'closed, but looked at a moment ago');
  now += 1000;
  t.same(await m.sweepUnmounted(1000), [{ instance: 'a', index: 0 }], 'closed: detached');
  t.equal(fake.live.size, 0);

  await a.bind({ fd: 0, backing: BACKING, options: { ...OPTS, clearOnUnmount: true }, caller: caller(2) });
  m.clientGone('conn:2');
  t.same(await m.sweepUnmounted(1000), [{ instance: 'a', index: 0 }], 'never mounted (the mount failed) once its client left: detached at once');
  t.same(a.bindings(), [], 'and gone from the state');
});

t.test('the sweep probes exclusively only once a device is due, and keeps it if claimed (issue 8)', async (t) => {
  let now = 0;
  const { m, fake } = setup({ now: () => now });
  const a = await m.create({ name: 'a' });
  const c = caller(1);
  await a.bind({ fd: 0, backing: BACKING, options: { ...OPTS, autoclear: true }, caller: c });
  m.clientGone('conn:1');
  for (; now < 1000; now += 100) t.same(await m.sweep(1000), [], `idle for ${now} ms: within the grace time`);
  t.same(fake.probes, [], 'no exclusive probe during the grace period');
  fake.busy.add(0);
  now += 100;
  t.same(await m.sweep(1000), [], 'seen in use by the looks: the idle clock stops');
  fake.busy.delete(0);
  for (const step of [0, 500, 499]) {
    now += step;
    t.same(await m.sweep(1000), [], 'idle again, within a new grace time');
  }
  t.same(fake.probes, [], 'still no exclusive probe');

  // due, but the final probe finds it claimed (a lazily unmounted filesystem): kept, clock restarts
  now += 1;
  fake.claimed.add(0);
  t.same(await m.sweep(1000), [], 'claimed: kept');
  t.same(fake.probes, [0], 'one exclusive probe once due');
  t.equal(fake.live.size, 1);
  now += 500;
  t.same(await m.sweep(1000), [], 'within the restarted grace time');
  t.same(fake.probes, [0], 'no probe while the restarted clock runs');
  now += 500;
  fake.claimed.delete(0);
  t.same(await m.sweep(1000), [{ instance: 'a', index: 0 }], 'due again and released: torn down');
  t.same(fake.probes, [0, 0], 'one more probe, right before the teardown');
  t.equal(fake.live.size, 0);

  // a user's detach uses the probe too; a claimed device is detached lazily, with the grace time
  await a.bind({ index: 0, fd: 0, backing: BACKING, options: OPTS, caller: c });
  fake.claimed.add(1);
  t.same(await a.unbind(0), { deferred: true }, 'claimed: the detach is deferred');
  t.same(fake.probes, [0, 0, 1]);
  fake.claimed.delete(1);
  t.same(await m.sweep(1000), [], 'claimed at the detach: not probed again at once');
  t.same(fake.probes, [0, 0, 1]);
  now += 1000;
  t.same(await m.sweep(1000), [{ instance: 'a', index: 0 }], 'after the grace time: probed and detached');
  t.same(fake.probes, [0, 0, 1, 1]);
  t.equal(fake.live.size, 0);
});

t.test('instances: create, duplicate, remove busy / forced, shutdown keeps bindings', async (t) => {
  const { m, fake, changes } = setup();
  const a = await m.create({ name: 'a', max: 4, uid: 1001, gid: 1001, mode: 0o600 });
  t.match(m.info(a), { name: 'a', max: 4, uid: 1001, gid: 1001, mode: 0o600, count: 0, bound: 0, dir: '/tmp/ubloop-test/instances/a' });
  await t.rejects(m.create({ name: 'a' }), { code: 'EEXIST' });
  await t.rejects(m.create({ name: 'x/y' }), { code: 'EINVAL' });
  await t.rejects(m.create({ name: 'z', max: 1048577 }), { code: 'EINVAL' });
  t.equal(code(() => m.get('nope')), 'ENOENT');
  await a.bind({ fd: 0, backing: BACKING, options: OPTS, caller: caller(1) });
  await t.rejects(m.remove('a', false), { code: 'EBUSY', message: /--force/ });
  const b = await m.create({ name: 'b' });
  await b.bind({ fd: 0, backing: BACKING, options: OPTS, caller: caller(1) });
  await m.shutdown();
  t.equal(fake.live.size, 0, 'shutdown stops every device');
  t.equal(b.bindings().length, 0);
  await a.bind({ index: 0, fd: 0, backing: BACKING, options: OPTS, caller: caller(1) });
  await m.remove('a', true);
  t.equal(fake.live.size, 0);
  t.same(m.instances().map((i) => i.name), ['b']);
  t.ok(changes() > 5, 'changes are reported for persistence');
});

t.test('live upgrade: every device is handed over, or none when one cannot be', async (t) => {
  const fake = new FakeUblk();
  const handed: number[] = [];
  let quiesce = true;
  const m = new InstanceManager({
    root: '/tmp/ubloop-test',
    factory: async (spec) => {
      const d = await fake.factory(spec);
      return quiesce ? { ...d, handOver: async () => { handed.push(d.ublkId); } } : d;
    },
  });
  const a = await m.create({ name: 'a' });
  const c = caller(1);
  for (const i of [0, 1, 2]) a.add(i);
  await a.bind({ index: 0, fd: 0, backing: BACKING, options: OPTS, caller: c });
  await a.bind({ index: 1, fd: 0, backing: BACKING, options: OPTS, caller: c });
  t.same(m.handOverProblems(), [], 'both devices can be handed over');
  quiesce = false;
  await a.bind({ index: 2, fd: 0, backing: BACKING, options: OPTS, caller: c });
  t.match(m.handOverProblems(), [/a\/loop2 \(\/dev\/ublkb2\) was not granted UBLK_F_QUIESCE/], 'a device without QUIESCE is named');
  await a.unbind(2);
  await m.handOver();
  t.same(handed.sort(), [0, 1], 'every bound device was handed over');
  t.equal(fake.live.size, 2, 'and none was stopped: they stay for the next daemon');
  t.same(m.get('a').bindings().map((b) => [b.index, b.ublkId]), [[0, 0], [1, 1]], 'the bindings stay, with their ublk ids, for the state file');
});
