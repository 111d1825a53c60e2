// Live `max` limits of an instance and GET_FREE under a race, on real ublk devices.
import t from 'tap';
import { closeSync, existsSync, openSync } from 'node:fs';
import { join } from 'node:path';
import { DaemonClient } from '../../lib/daemon/client.js';
import { MiB, sparseImage, workDir } from '../helpers/e2e.js';
import { testAddon } from '../helpers/test-addon.js';
import { startDaemon, ublkCount } from '../helpers/daemon.js';

const ADD = 0x4c80;
const GET_FREE = 0x4c82;

function attempt(fn: () => number): number | string {
  try {
    return fn();
  } catch (err) {
    return (err as { code?: string }).code ?? String(err);
  }
}

t.test('max 4 → ENOSPC on the 5th; raised to 6 live → two more; lowered to 2 → all 6 stay, the next is refused', async (t) => {
  const b = testAddon();
  const dir = workDir(t);
  const img = sparseImage(join(dir, 'm.img'), MiB);
  const d = await startDaemon(t, dir);
  const r = d.cli(['instance', 'create', 'lim', '--max', '4']);
  t.equal(r.status, 0, `instance create: ${r.stderr}`);
  t.equal(r.stdout.trim(), join(d.root, 'instances', 'lim'), 'it prints the instance directory');
  const ctl = openSync(join(d.root, 'instances', 'lim', 'loop-control'), 'r+');
  const fd = openSync(img, 'r+');
  t.teardown(() => {
    closeSync(ctl);
    closeSync(fd);
  });
  const inst = d.instance('lim');
  const bind = async (index?: number): Promise<number | string> => {
    try {
      const reply = await inst.request({ op: 'bind', ...(index === undefined ? {} : { index }) }, [fd]);
      return (reply['device'] as { index: number }).index;
    } catch (err) {
      return (err as { code: string }).code;
    }
  };

  const a = d.cli(['attach', '--instance', 'lim', img]);
  t.equal(a.status, 0, `ubloop attach: ${a.stderr}`);
  t.equal(a.stdout.trim(), join(d.root, 'instances', 'lim', 'loop0'), 'attach prints the device path');
  t.ok(existsSync(a.stdout.trim()), 'the node exists');
  t.equal(await bind(), 1);
  t.equal(await bind(), 2);
  t.equal(attempt(() => b.ioctlInt(ctl, ADD, 3)), 3, '4th device by LOOP_CTL_ADD');
  t.equal(attempt(() => b.ioctlInt(ctl, ADD, 4)), 'ENOSPC', '5th ADD: ENOSPC');
  t.equal(attempt(() => b.ioctlInt(ctl, GET_FREE, 0)), 3, 'GET_FREE still hands out the unbound loop3');
  t.equal(await bind(3), 3, 'which binds');
  t.equal(attempt(() => b.ioctlInt(ctl, GET_FREE, 0)), 'ENOSPC', '5th GET_FREE: ENOSPC');
  const full = d.cli(['attach', '--instance', 'lim', img]);
  t.not(full.status, 0, 'ubloop attach fails when the instance is full');
  t.equal(full.stderr, 'ubloop: instance lim holds 4 device(s), its max is 4\n', 'with one line naming the limit');

  t.equal(d.cli(['instance', 'set', 'lim', '--max', '6']).status, 0, 'ubloop instance set --max 6 (live)');
  t.equal(await bind(), 4, '5th bind');
  t.equal(attempt(() => b.ioctlInt(ctl, ADD, -1)), 5, '6th by ADD');
  t.equal(await bind(5), 5, 'bound too');
  t.equal(attempt(() => b.ioctlInt(ctl, GET_FREE, 0)), 'ENOSPC', '7th: ENOSPC');

  await d.admin().request({ op: 'instance.set', name: 'lim', max: 2 });
  const listed = JSON.parse(d.cli(['list', '--instance', 'lim', '--json']).stdout) as { index: number; state: string }[];
  t.same(listed.map((e) => `${e.index}:${e.state}`), ['0:bound', '1:bound', '2:bound', '3:bound', '4:bound', '5:bound'], 'max lowered to 2: all six stay bound');
  for (let i = 0; i < 6; i++) t.ok(existsSync(join(d.root, 'instances', 'lim', `loop${i}`)), `loop${i} node still there`);
  t.equal(attempt(() => b.ioctlInt(ctl, GET_FREE, 0)), 'ENOSPC', 'the next GET_FREE is refused');
  t.equal(attempt(() => b.ioctlInt(ctl, ADD, 9)), 'ENOSPC', 'and the next ADD');
  t.match((await d.admin().request({ op: 'instance.list' }))['instances'], [{ name: 'lim', max: 2, count: 6, bound: 6 }], 'max 2 with 6 devices');
  const bad = d.cli(['instance', 'set', 'lim', '--max', '1048577']);
  t.not(bad.status, 0, 'max out of range refused');
  t.match(bad.stderr, /"max" must be from 0 to 1048576, got 1048577/, 'EINVAL naming the range');
  await t.rejects(d.admin().request({ op: 'instance.set', name: 'lim', max: -1 }), { code: 'EINVAL' });
  t.match((await d.admin().request({ op: 'instance.list' }))['instances'], [{ max: 2 }], 'a refused change leaves max alone');
  await inst.request({ op: 'unbind', index: 5 });
  t.notOk(existsSync(join(d.root, 'instances', 'lim', 'loop5')), 'unbind removes the node');
  t.equal(attempt(() => b.ioctlInt(ctl, GET_FREE, 0)), 5, 'an existing unbound index is still handed out over max');
  const before = ublkCount();
  await t.rejects(d.admin().request({ op: 'instance.remove', name: 'lim' }), { code: 'EBUSY' }, 'remove refuses while devices are bound');
  await d.admin().request({ op: 'instance.remove', name: 'lim', force: true });
  t.equal(ublkCount(), before - 5, 'remove --force deletes its five ublk devices');
  t.notOk(existsSync(join(d.root, 'instances', 'lim')), 'and its directory');
});

t.test('64 concurrent GET_FREE+bind with max=8: exactly 8 bound, the rest ENOSPC, no ublk device leaked', async (t) => {
  const dir = workDir(t);
  const img = sparseImage(join(dir, 'race.img'), MiB);
  const d = await startDaemon(t, dir);
  await d.admin().request({ op: 'instance.create', name: 'race', max: 8 });
  const before = ublkCount();
  const sock = join(d.root, 'instances', 'race', 'control.sock');
  const fd = openSync(img, 'r+');
  const clients = Array.from({ length: 64 }, () => DaemonClient.connect(sock));
  t.teardown(() => {
    for (const c of clients) c.close();
    closeSync(fd);
  });
  const results = await Promise.allSettled(
    clients.map(async (c) => {
      const free = (await c.request({ op: 'loop.get_free' }))['index'] as number;
      const bound = await c.request({ op: 'bind', index: free }, [fd]);
      return (bound['device'] as { index: number }).index;
    }),
  );
  const indices = results.filter((r) => r.status === 'fulfilled').map((r) => (r as PromiseFulfilledResult<number>).value);
  const errors = results.filter((r) => r.status === 'rejected').map((r) => ((r as PromiseRejectedResult).reason as { code: string }).code);
  t.equal(indices.length, 8, 'exactly 8 bound');
  t.same([...indices].sort((a, b) => a - b), [0, 1, 2, 3, 4, 5, 6, 7], 'each index once');
  t.equal(errors.length, 56);
  t.same([...new Set(errors)], ['ENOSPC'], 'the rest got ENOSPC');
  t.equal(ublkCount(), before + 8, 'exactly 8 ublk devices exist for it');
  await d.admin().request({ op: 'instance.remove', name: 'race', force: true });
  t.equal(ublkCount(), before, 'none left after removing the instance');
});

t.test('caps on devices, depth and memory: global and per instance, refusals named in the CLI, nothing half-created', async (t) => {
  const dir = workDir(t);
  const img = sparseImage(join(dir, 'cap.img'), MiB);
  // a default device commits 1 queue × 128 × 1 MiB buffers plus its ring and descriptors: a little over 128 MiB
  const d = await startDaemon(t, dir, ['--max-devices', '3', '--max-queue-depth', '256', '--max-memory', '300M']);
  t.equal(d.cli(['instance', 'create', 'cap', '--max-depth', '64', '--max-memory', '150M']).status, 0, 'instance create --max-depth --max-memory');
  const before = ublkCount();
  const listed = () => (JSON.parse(d.cli(['list', '--instance', 'cap', '--json']).stdout) as { index: number }[]).map((e) => e.index);

  const deep = d.cli(['attach', '--instance', 'cap', '--depth', '128', img]);
  t.not(deep.status, 0, 'attach --depth 128 refused');
  t.equal(deep.stderr, "ubloop: queue depth 128 above instance cap's limit 64\n", 'naming the instance\'s depth limit');
  t.same([listed(), ublkCount()], [[], before], 'no index, no ublk device');

  t.equal(d.cli(['attach', '--instance', 'cap', '--depth', '64', img]).status, 0, 'depth 64: bound (64 MiB of buffers)');
  t.equal(d.cli(['attach', '--instance', 'cap', '--depth', '64', img]).status, 0, 'a second (128 MiB together)');
  const mem = d.cli(['attach', '--instance', 'cap', '--depth', '64', img]);
  t.not(mem.status, 0, 'a third is refused');
  t.equal(mem.stderr, 'ubloop: the device needs 65565K of memory; instance cap commits 131130K of its limit 150M\n', 'naming the instance\'s memory limit');
  t.same([listed(), ublkCount()], [[0, 1], before + 2], 'still two');

  t.equal(d.cli(['instance', 'set', 'cap', '--max-depth', 'none', '--max-memory', 'none']).status, 0, 'instance set ... none clears both');
  const global = d.cli(['attach', '--instance', 'cap', '--depth', '512', img]);
  t.equal(global.stderr, "ubloop: queue depth 512 above the daemon's limit 256\n", 'the daemon\'s depth limit still holds');
  const gmem = d.cli(['attach', '--instance', 'cap', '--depth', '256', img]);
  t.equal(gmem.stderr, 'ubloop: the device needs 262252K of memory; the daemon commits 131130K of its global memory limit 300M\n', 'the global memory limit');
  t.equal(d.cli(['attach', '--instance', 'cap', '--depth', '16', img]).status, 0, 'a small third device fits');
  const count = d.cli(['attach', '--instance', 'cap', '--depth', '1', img]);
  t.equal(count.stderr, 'ubloop: global device limit 3 reached (3 device(s) across every instance)\n', 'the global device limit');
  t.same([listed(), ublkCount()], [[0, 1, 2], before + 3], 'three devices, nothing half-created');
  const ctl = join(d.root, 'instances', 'cap', 'loop-control');
  if (existsSync(ctl)) {
    const fd = openSync(ctl, 'r+');
    t.equal(attempt(() => testAddon().ioctlInt(fd, ADD, 7)), 'ENOSPC', 'LOOP_CTL_ADD: ENOSPC at the global limit');
    closeSync(fd);
  }
  await d.admin().request({ op: 'instance.remove', name: 'cap', force: true });
  t.equal(ublkCount(), before, 'removed: no ublk device left');
});
