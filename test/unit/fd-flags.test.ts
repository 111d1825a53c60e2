// Image descriptors opened with O_APPEND or O_NONBLOCK are refused before any device is
// made, by the one check both the daemon's bind and createDevice({fd}) use.
import t from 'tap';
import { closeSync, constants, mkdtempSync, openSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { checkImageFdFlags } from '../../lib/fd-flags.js';
import { inspectBacking } from '../../lib/daemon/backing.js';
import { createDevice } from '../../lib/device.js';

const dir = mkdtempSync(join(tmpdir(), 'ubloop-flags-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
const image = join(dir, 'img');
writeFileSync(image, Buffer.alloc(8192));

const bindOptions = { offset: 0, sizeLimit: 0, readOnly: false, directIo: false, blockSize: 512, queues: 1, depth: 128, autoclear: false };

for (const [name, flag] of [['O_APPEND', constants.O_APPEND], ['O_NONBLOCK', constants.O_NONBLOCK]] as const) {
  t.test(`a descriptor opened with ${name} is refused, naming the flag`, async (t) => {
    const fd = openSync(image, constants.O_RDWR | flag);
    t.teardown(() => closeSync(fd));
    const refusal = { code: 'EINVAL', message: new RegExp(`open with ${name}.*without ${name}`) };
    t.throws(() => checkImageFdFlags(fd), refusal, 'the check itself');
    t.throws(() => inspectBacking(fd, bindOptions), refusal, 'the daemon bind path');
    await t.rejects(createDevice({ fd }), refusal, 'createDevice({fd}), before the kernel is touched');
  });
}

t.test('a plain O_RDWR descriptor is accepted', async (t) => {
  const fd = openSync(image, constants.O_RDWR);
  t.teardown(() => closeSync(fd));
  t.equal(checkImageFdFlags(fd) & 3, constants.O_RDWR, 'returns the flags (O_ACCMODE is 3)');
  t.match(inspectBacking(fd, bindOptions), { path: image });
});
