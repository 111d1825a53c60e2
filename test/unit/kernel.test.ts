import t from 'tap';
import { flagNames, kernelAtLeast, readScheduler, ublkProblem } from '../../lib/kernel.js';
import { native } from '../../lib/native.js';

const c = native().constants;

t.test('flagNames names each UBLK_F_* bit that is set, nothing else', async (t) => {
  t.same(flagNames(0n), []);
  t.same(flagNames(c.UBLK_F_USER_RECOVERY), ['UBLK_F_USER_RECOVERY']);
  // Linux 6.1 grants these four; ubloop reports them by name in `serve --json` and `features`.
  const linux61 = c.UBLK_F_URING_CMD_COMP_IN_TASK | c.UBLK_F_NEED_GET_DATA | c.UBLK_F_USER_RECOVERY | c.UBLK_F_USER_RECOVERY_REISSUE;
  t.same(flagNames(linux61), [
    'UBLK_F_URING_CMD_COMP_IN_TASK',
    'UBLK_F_NEED_GET_DATA',
    'UBLK_F_USER_RECOVERY',
    'UBLK_F_USER_RECOVERY_REISSUE',
  ]);
  t.same(flagNames(c.UBLK_F_CMD_IOCTL_ENCODE | c.UBLK_F_USER_COPY), ['UBLK_F_CMD_IOCTL_ENCODE', 'UBLK_F_USER_COPY']);
  t.same(flagNames(1n << 60n), [], 'unknown bits are not given a name');
});

t.test('flagNames knows every UBLK_F_* constant the addon exports, with distinct bits', async (t) => {
  const names = Object.keys(c).filter((k) => k.startsWith('UBLK_F_'));
  let all = 0n;
  const seen = new Set<bigint>();
  for (const name of names) {
    const bit = c[name as keyof typeof c];
    t.equal(typeof bit, 'bigint', `${name} is a bigint`);
    if (typeof bit !== 'bigint') continue;
    t.same(flagNames(bit), [name], `${name} maps back to its name`);
    t.notOk(seen.has(bit), `${name} has its own bit`);
    seen.add(bit);
    all |= bit;
  }
  t.equal(flagNames(all).length, names.length, 'all flags at once give every name');
  // Values from the kernel's include/uapi/linux/ublk_cmd.h.
  t.equal(c.UBLK_F_SUPPORT_ZERO_COPY, 1n << 0n);
  t.equal(c.UBLK_F_USER_RECOVERY, 1n << 3n);
  t.equal(c.UBLK_F_CMD_IOCTL_ENCODE, 1n << 6n);
  t.equal(c.UBLK_F_USER_COPY, 1n << 7n);
});

t.test('kernelAtLeast compares with the running kernel', async (t) => {
  t.ok(kernelAtLeast(2, 6), 'every supported machine is newer than 2.6');
  t.notOk(kernelAtLeast(99, 0), 'no kernel 99 yet');
});

t.test('ublkProblem tells the user what to do', async (t) => {
  t.match(ublkProblem('EACCES'), /needs root/);
  t.match(ublkProblem('EPERM'), /needs root/);
  t.match(ublkProblem('EIO'), /cannot open \/dev\/ublk-control \(EIO\)/);
  t.match(ublkProblem(null), /unknown error/);
});

t.test('readScheduler parses the sysfs scheduler line', async (t) => {
  const { readdirSync } = await import('node:fs');
  const disks = readdirSync('/sys/block').filter((d) => {
    try {
      readScheduler(d);
      return true;
    } catch {
      return false;
    }
  });
  if (disks.length === 0) {
    t.comment('this machine has no disk with a scheduler file; parsing is covered by the e2e suite');
    t.throws(() => readScheduler('no-such-disk'), { code: 'ENOENT' });
    return;
  }
  const s = readScheduler(disks[0] as string);
  t.ok(s.available.length > 0, 'lists schedulers');
  t.ok(s.active === null || s.available.includes(s.active), 'the active one is among them');
  t.notOk(s.available.some((x) => x.includes('[')), 'brackets are stripped');
});
