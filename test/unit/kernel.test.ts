import t from 'tap';
import { flagNames, hasFlag, kernelAtLeast, readScheduler, ublkProblem } from '../../lib/kernel.js';
import { native } from '../../lib/native.js';

const table = native().ublkFlags;
const bit = (name: string): bigint => {
  const entry = table.find(([n]) => n === name);
  if (!entry) throw new Error(`no flag ${name} in the addon's table`);
  return 1n << BigInt(entry[1]);
};

t.test('flagNames names each UBLK_F_* bit that is set, nothing else', async (t) => {
  t.same(flagNames(0n), []);
  t.same(flagNames(bit('UBLK_F_USER_RECOVERY')), ['UBLK_F_USER_RECOVERY']);
  // Linux 6.1 grants these four; ubloop reports them by name in `serve --json` and `features`.
  const linux61 = bit('UBLK_F_URING_CMD_COMP_IN_TASK') | bit('UBLK_F_NEED_GET_DATA') | bit('UBLK_F_USER_RECOVERY') | bit('UBLK_F_USER_RECOVERY_REISSUE');
  t.same(flagNames(linux61), [
    'UBLK_F_URING_CMD_COMP_IN_TASK',
    'UBLK_F_NEED_GET_DATA',
    'UBLK_F_USER_RECOVERY',
    'UBLK_F_USER_RECOVERY_REISSUE',
  ]);
  t.same(flagNames(bit('UBLK_F_CMD_IOCTL_ENCODE') | bit('UBLK_F_USER_COPY')), ['UBLK_F_CMD_IOCTL_ENCODE', 'UBLK_F_USER_COPY']);
  t.same(flagNames((1n << 60n) | bit('UBLK_F_QUIESCE')), ['UBLK_F_QUIESCE', 'bit 60'], 'a bit the table does not know is "bit N"');
});

t.test("the addon's flag table has Linux 7.3's 21 flags, each with its own bit", async (t) => {
  t.equal(table.length, 21, 'bits 0 to 20');
  t.same(table.map(([, b]) => b), [...Array(21).keys()], 'one entry per bit, in order');
  t.equal(new Set(table.map(([n]) => n)).size, 21, 'distinct names');
  // Values from Linux 7.3's include/uapi/linux/ublk_cmd.h.
  t.equal(bit('UBLK_F_SUPPORT_ZERO_COPY'), 1n << 0n);
  t.equal(bit('UBLK_F_USER_RECOVERY'), 1n << 3n);
  t.equal(bit('UBLK_F_CMD_IOCTL_ENCODE'), 1n << 6n);
  t.equal(bit('UBLK_F_USER_COPY'), 1n << 7n);
  t.equal(bit('UBLK_F_PER_IO_DAEMON'), 1n << 13n);
  t.equal(bit('UBLK_F_BATCH_IO'), 1n << 15n);
  t.equal(bit('UBLK_F_SAFE_STOP_DEV'), 1n << 17n);
  t.equal(bit('UBLK_F_SHMEM_ZC'), 1n << 19n);
  t.equal(bit('UBLK_F_IO_DESC_SIZE'), 1n << 20n);
  const all = table.reduce((a, [, b]) => a | (1n << BigInt(b)), 0n);
  t.same(flagNames(all), table.map(([n]) => n), 'every flag at once gives every name');
});

t.test('hasFlag tests the one bit the name has in the addon\'s table', async (t) => {
  const granted = bit('UBLK_F_UNPRIVILEGED_DEV') | bit('UBLK_F_SAFE_STOP_DEV');
  t.ok(hasFlag(granted, 'UBLK_F_UNPRIVILEGED_DEV'), 'an unprivileged device is seen as one');
  t.ok(hasFlag(granted, 'UBLK_F_SAFE_STOP_DEV'));
  t.notOk(hasFlag(granted, 'UBLK_F_UPDATE_SIZE'), 'a flag not granted');
  t.notOk(hasFlag(1n << 60n, 'UBLK_F_UPDATE_SIZE'), 'an unknown bit is no known flag');
  t.throws(() => hasFlag(granted, 'UBLK_F_NOPE' as never), /flag table has no UBLK_F_NOPE/, 'a name outside the table is a bug, not false');
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
