// The daemon's busy looks on the host: no ublk here, but the looks only read sysfs and
// /proc, so a mounted device number and an unused one show what they see and what the
// passes over /proc cost.
import t from 'tap';
import { statSync } from 'node:fs';
import { passes, ublkDiskBusy } from '../../lib/daemon/busy.js';
import { splitDev } from '../../lib/devnum.js';

const UNUSED = { id: 99_999, major: 259, minor: 999_999 };

t.test('a device number mounted here is busy, without a pass over /proc', async (t) => {
  const { major, minor } = splitDev(statSync('/', { bigint: true }).dev);
  const before = { ...passes };
  t.equal(await ublkDiskBusy(UNUSED.id, major, minor), true, `${major}:${minor} is mounted at /`);
  t.same(passes, before, 'decided by the daemon\'s own mountinfo');
});

t.test('idle devices looked at together share one pass over /proc', async (t) => {
  const before = { ...passes };
  const answers = await Promise.all(Array.from({ length: 8 }, (_, i) => ublkDiskBusy(UNUSED.id + i, UNUSED.major, UNUSED.minor + i)));
  t.same(answers, Array(8).fill(false), 'nothing uses them');
  t.same(passes, { mounts: before.mounts + 1, opens: before.opens + 1 }, 'one pass over mountinfo and one over descriptors for all eight');
  let ticks = 0;
  const timer = setInterval(() => ticks++, 1);
  await ublkDiskBusy(UNUSED.id, UNUSED.major, UNUSED.minor);
  clearInterval(timer);
  t.ok(ticks > 0, 'timers run while a pass is under way (the JS thread is not blocked)');
});
