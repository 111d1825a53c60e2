// The user side of unprivileged devices: who counts as privileged, what counts as a
// udev handover, and the messages a user gets; and the node names `ubloop udev` takes.
import t from 'tap';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { explainAddError, findHandover, hasCapSysAdmin, ublksMax } from '../../lib/unprivileged.js';
import { parseNodeName } from '../../lib/udev-handover.js';

const dir = mkdtempSync(join(tmpdir(), 'ubloop-unpriv-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

t.test('CAP_SYS_ADMIN is bit 21 of CapEff', async (t) => {
  t.equal(hasCapSysAdmin('Name:\tnode\nCapEff:\t000001ffffffffff\n'), true, 'root');
  t.equal(hasCapSysAdmin('CapEff:\t0000000000000000\n'), false, 'an ordinary user');
  t.equal(hasCapSysAdmin('CapEff:\t0000000000200000\n'), true, 'CAP_SYS_ADMIN alone');
  t.equal(hasCapSysAdmin('CapEff:\t00000000001fffff\n'), false, 'every capability below it');
  t.equal(hasCapSysAdmin('no such line'), false, 'unreadable: not privileged');
});

t.test('a handover is a udev rule naming ublkc nodes or `ubloop udev`, or a uevent helper', async (t) => {
  const rules = join(dir, 'rules.d');
  mkdirSync(rules);
  const hotplug = join(dir, 'hotplug');
  writeFileSync(hotplug, '\n');
  writeFileSync(join(rules, '60-other.rules'), 'KERNEL=="loop*", GROUP="disk"\n');
  writeFileSync(join(rules, '70-ublk.rules.disabled'), 'KERNEL=="ublkc*", RUN+="x"\n');
  t.equal(findHandover([rules, join(dir, 'missing')], hotplug), null, 'none: other rules, a disabled file and no helper');
  writeFileSync(join(rules, '99-ubloop.rules'), 'ACTION=="add", KERNEL=="ublkb[0-9]*", RUN+="/usr/local/bin/ubloop udev %k"\n');
  t.equal(findHandover([rules], hotplug), join(rules, '99-ubloop.rules'), 'the contrib rule');
  rmSync(join(rules, '99-ubloop.rules'));
  writeFileSync(hotplug, '/sbin/hotplug-helper\n');
  t.equal(findHandover([rules], hotplug), 'uevent helper /sbin/hotplug-helper', 'a kernel uevent helper');
});

t.test('ublks_max is read as a number, or null', async (t) => {
  const p = join(dir, 'ublks_max');
  writeFileSync(p, '64\n');
  t.equal(ublksMax(p), 64);
  t.equal(ublksMax(join(dir, 'none')), null, 'no parameter (e.g. 6.1)');
});

t.test("ADD_DEV's EACCES is explained only for a caller without CAP_SYS_ADMIN", async (t) => {
  const err = Object.assign(new Error('ADD_DEV failed: Permission denied (EACCES)'), { code: 'EACCES', syscall: 'ADD_DEV' });
  const other = Object.assign(new Error('x'), { code: 'EINVAL', syscall: 'ADD_DEV' });
  t.equal(explainAddError(other), other, 'other errors pass through');
  if (hasCapSysAdmin()) t.equal(explainAddError(err), err, 'root: passes through (the cap is not root\'s)');
  else t.match((explainAddError(err) as Error).message, /ublks_max/, 'a user: names ublks_max');
});

t.test('ubloop udev takes kernel names and /dev paths of ublk nodes only', async (t) => {
  t.same(parseNodeName('ublkc3'), { node: '/dev/ublkc3', id: 3 });
  t.same(parseNodeName('ublkb12'), { node: '/dev/ublkb12', id: 12 });
  t.same(parseNodeName('ublkb2p1'), { node: '/dev/ublkb2p1', id: 2 }, 'a partition belongs to its disk\'s device');
  t.same(parseNodeName('/dev/ublkc0'), { node: '/dev/ublkc0', id: 0 });
  for (const bad of ['loop0', 'ublk-control', 'ublkc', 'ublkcx1', '../ublkc1x']) {
    t.throws(() => parseNodeName(bad), { code: 'EINVAL', message: /is not a ublk node/ }, `"${bad}" refused`);
  }
});

t.test("a user's serve keeps its control socket in their runtime directory, root's under /run/ubloop", async (t) => {
  const { serveRoot } = await import('../../lib/daemon/paths.js');
  t.equal(serveRoot(0, {}), '/run/ubloop');
  t.equal(serveRoot(1001, { XDG_RUNTIME_DIR: dir }), join(dir, 'ubloop'), '$XDG_RUNTIME_DIR');
  t.equal(serveRoot(1001, { XDG_RUNTIME_DIR: join(dir, 'missing') }), join(tmpdir(), 'ubloop-1001'), 'no runtime directory: a per-user one in the temp directory');
});
