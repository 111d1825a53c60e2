import t from 'tap';
import { abandonOrphan, awaitOrphan, checkRecoveryMode, checkSameDisk, recoveryFlags } from '../../lib/recovery.js';
import type { NativeKernelDeviceInfo } from '../../lib/native.js';

const RECOVERY = (1n << 3n) | (1n << 4n);
const info = (state: NativeKernelDeviceInfo['state'], flags = RECOVERY, serverPid = 4242): NativeKernelDeviceInfo => ({
  id: 3, queues: 1, depth: 128, state, maxIoBytes: 1 << 20, serverPid, ownerUid: 0, ownerGid: 0, flags,
});

t.test('recovery modes and the flags ADD_DEV is asked for', async (t) => {
  t.equal(checkRecoveryMode('reissue'), 'reissue');
  t.throws(() => checkRecoveryMode('sometimes', '--recovery'), { code: 'EINVAL', message: /--recovery must be one of reissue, fail-io, none, got "sometimes"/ });
  t.equal(recoveryFlags('none', null), 0n, 'none: the kernel deletes the disk with its server');
  t.equal(recoveryFlags('reissue', null), RECOVERY, 'reissue on 6.1 too (no GET_FEATURES): USER_RECOVERY | REISSUE');
  t.equal(recoveryFlags('fail-io', 1n << 9n), (1n << 3n) | (1n << 9n));
  t.equal(recoveryFlags('reissue', 1n << 12n), RECOVERY | (1n << 12n), 'QUIESCE too where offered (live upgrade)');
  t.equal(recoveryFlags('none', 1n << 12n), 0n, 'never QUIESCE without recovery (the kernel refuses it)');
  t.throws(() => recoveryFlags('fail-io', null), { code: 'EOPNOTSUPP', message: /UBLK_F_USER_RECOVERY_FAIL_IO .*Linux 6\.1/ }, 'refused before anything is added');
  t.throws(() => recoveryFlags('fail-io', 1n << 3n), { code: 'EOPNOTSUPP' });
});

t.test('awaitOrphan tells an orphan from what is not one, and waits for a dead server to be noticed', async (t) => {
  const dead = () => false;
  const gone = async () => {
    throw Object.assign(new Error('x'), { code: 'ENODEV' });
  };
  t.match(await awaitOrphan(3, { info: gone, alive: dead }), { kind: 'absent', reason: /does not exist \(ENODEV\)/ });
  t.match(await awaitOrphan(3, { info: async () => info('quiesced'), alive: dead }), { kind: 'orphan' });
  t.match(await awaitOrphan(3, { info: async () => info('fail-io'), alive: dead }), { kind: 'orphan' });
  t.match(await awaitOrphan(3, { info: async () => info('live'), alive: () => true }), { kind: 'foreign', reason: /live, served by pid 4242/ });
  t.match(await awaitOrphan(3, { info: async () => info('quiesced', 0n), alive: dead }), { kind: 'foreign', reason: /not created recoverable/ });
  t.match(await awaitOrphan(3, { info: async () => info('dead'), alive: dead }), { kind: 'foreign', reason: /not started/ });
  // Linux 6.1: live for a while after the server died, then quiesced
  let calls = 0;
  const later = async () => info(++calls < 4 ? 'live' : 'quiesced');
  t.match(await awaitOrphan(3, { info: later, alive: dead, pollMs: 1 }), { kind: 'orphan' });
  t.equal(calls, 4, 'polled until quiesced');
  const start = Date.now();
  await t.rejects(awaitOrphan(3, { info: async () => info('live'), alive: dead, pollMs: 5, timeoutMs: 50 }), { code: 'ETIMEDOUT', message: /still live .*\(pid 4242\) died/ });
  t.ok(Date.now() - start < 1000, 'the wait is bounded');
  t.equal(await abandonOrphan(3, { info: async () => info('live'), alive: () => true }), false, 'a served device is never deleted');
  t.equal(await abandonOrphan(3, { info: gone, alive: dead }), false);
});

t.test('checkSameDisk names what differs', async (t) => {
  const have = { size: 1 << 20, blockSize: 512, readOnly: false };
  t.doesNotThrow(() => checkSameDisk(3, have, have));
  t.throws(() => checkSameDisk(3, { ...have, size: 2 << 20, readOnly: true }, have), {
    code: 'EINVAL',
    message: 'ublk device 3 does not match the image and options given: it is 1048576 bytes, not 2097152, writable',
  });
});
