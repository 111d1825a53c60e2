import t from 'tap';
import { BLOCK_SIZES, DEFAULTS, MAX_DEPTH, MAX_QUEUES, checkOptions, loopDeviceSize } from '../../lib/device-options.js';
import { UbloopError } from '../../lib/errors.js';

const einval = (message: RegExp) => ({ name: 'UbloopError', code: 'EINVAL', message });

t.test('a loop device over a file gets the documented defaults', async (t) => {
  const o = checkOptions({ file: 'disk.img' });
  t.same(o, {
    target: 'loop',
    file: 'disk.img',
    fd: undefined,
    size: undefined,
    offset: 0,
    sizeLimit: 0,
    readOnly: false,
    directIo: false,
    blockSize: 512,
    queues: 1,
    depth: 128,
    id: -1,
    maxIoBytes: 1 << 20,
    discard: true,
    scheduler: 'none',
    pollUs: DEFAULTS.pollUs,
    copy: 'auto',
    partscan: false,
    recovery: 'none',
  });
  t.equal(DEFAULTS.scheduler, 'none', 'ubloop picks no scheduler by default, not mq-deadline');
});

t.test('options a user sets are kept', async (t) => {
  const o = checkOptions({
    file: 'x.img',
    offset: 4096,
    sizeLimit: 1 << 20,
    readOnly: true,
    directIo: true,
    blockSize: 4096,
    queues: 4,
    depth: 64,
    id: 7,
    maxIoBytes: 512 * 1024,
    discard: false,
    scheduler: null,
    pollUs: 0,
  });
  t.match(o, {
    offset: 4096,
    sizeLimit: 1 << 20,
    readOnly: true,
    directIo: true,
    blockSize: 4096,
    queues: 4,
    depth: 64,
    id: 7,
    maxIoBytes: 512 * 1024,
    discard: false,
    pollUs: 0,
  });
  t.equal(o.scheduler, null, 'null keeps the kernel default scheduler');
  t.equal(checkOptions({ fd: 5 }).fd, 5, 'an open descriptor instead of a file');
  t.equal(checkOptions({ target: 'null', size: 1 << 30 }).size, 1 << 30);
});

t.test('every allowed block size is accepted, others are refused by value', async (t) => {
  for (const bs of BLOCK_SIZES) t.equal(checkOptions({ file: 'f', blockSize: bs }).blockSize, bs);
  for (const bs of [0, 256, 1000, 8192, 513]) {
    t.throws(() => checkOptions({ file: 'f', blockSize: bs }), einval(new RegExp(`block size ${bs} is not one of 512, 1024, 2048, 4096`)));
  }
});

t.test('queues, depth and id are range-checked with the bad value in the message', async (t) => {
  t.throws(() => checkOptions({ file: 'f', queues: 0 }), einval(/queues must be an integer from 1 to 64, got 0/));
  t.throws(() => checkOptions({ file: 'f', queues: MAX_QUEUES + 1 }), einval(/queues .* got 65/));
  t.throws(() => checkOptions({ file: 'f', queues: 1.5 }), einval(/queues .* got 1.5/));
  t.throws(() => checkOptions({ file: 'f', depth: 0 }), einval(/depth must be an integer from 1 to 4096, got 0/));
  t.throws(() => checkOptions({ file: 'f', depth: 100000 }), einval(/depth .* got 100000/));
  t.equal(checkOptions({ file: 'f', depth: MAX_DEPTH }).depth, MAX_DEPTH, 'the largest depth is allowed');
  t.equal(checkOptions({ file: 'f', queues: MAX_QUEUES }).queues, MAX_QUEUES, 'the most queues are allowed');
  t.throws(() => checkOptions({ file: 'f', id: -2 }), einval(/device id .* got -2/));
  t.throws(
    () => checkOptions({ file: 'f', copy: 'zerocopy' as never }),
    einval(/copy mode must be one of auto, kernel, user, zero, auto-buf, got "zerocopy"/),
  );
  t.throws(() => checkOptions({ file: 'f', offset: -512 }), einval(/offset .* got -512/));
  t.throws(() => checkOptions({ file: 'f', sizeLimit: -1 }), einval(/size limit .* got -1/));
  t.throws(() => checkOptions({ file: 'f', offset: Number.NaN }), einval(/offset .* got NaN/));
  t.throws(() => checkOptions({ file: 'f', pollUs: -1 }), einval(/poll time \(µs\) must be an integer from 0 to 1000000, got -1/));
  t.throws(() => checkOptions({ file: 'f', pollUs: 2_000_000 }), einval(/poll time .* got 2000000/));
  t.throws(() => checkOptions({ file: 'f', pollUs: 1.5 }), einval(/poll time .* got 1.5/));
});

t.test('max I/O size must be whole 4 KiB pages', async (t) => {
  t.throws(() => checkOptions({ file: 'f', maxIoBytes: 6000 }), einval(/max I\/O size 6000 is not a multiple of 4096/));
  t.throws(() => checkOptions({ file: 'f', maxIoBytes: 1024 }), einval(/max I\/O size must be .* got 1024/));
});

t.test('target-specific rules', async (t) => {
  t.throws(() => checkOptions({ target: 'nbd' as 'loop', file: 'f' }), einval(/target must be "loop" or "null", got "nbd"/));
  t.throws(() => checkOptions({}), einval(/exactly one of an image file or an open descriptor/));
  t.throws(() => checkOptions({ file: 'f', fd: 3 }), einval(/exactly one of/));
  t.throws(() => checkOptions({ fd: -1 }), einval(/fd must be .* got -1/));
  t.throws(() => checkOptions({ file: 'f', size: 4096 }), einval(/takes its size from the image; use sizeLimit/));
  t.throws(() => checkOptions({ file: 'f', directIo: true, offset: 100 }), einval(/offset 100 must be a multiple of the block size 512 with direct I\/O/));
  t.equal(checkOptions({ file: 'f', offset: 100 }).offset, 100, 'a buffered loop device may start anywhere');
  t.throws(() => checkOptions({ target: 'null' }), einval(/the null target needs a size/));
  t.throws(() => checkOptions({ target: 'null', size: 4096, file: 'f' }), einval(/the null target takes no image file/));
  t.throws(() => checkOptions({ target: 'null', size: 0 }), einval(/size must be .* got 0/));
  t.throws(() => checkOptions({ target: 'null', size: 1000 }), einval(/size 1000 is not a multiple of the block size 512/));
  t.throws(() => checkOptions({ target: 'null', size: 4096 + 512, blockSize: 4096 }), einval(/size 4608 is not a multiple of the block size 4096/));
});

t.test('loopDeviceSize: what is left after the offset, capped by the size limit', async (t) => {
  const o = (x: Parameters<typeof checkOptions>[0]) => checkOptions({ file: 'img', ...x });
  const MiB = 1 << 20;
  t.equal(loopDeviceSize(64 * MiB, o({}), 'img'), 64 * MiB, 'whole image');
  t.equal(loopDeviceSize(64 * MiB, o({ offset: MiB }), 'img'), 63 * MiB, 'after the offset');
  t.equal(loopDeviceSize(64 * MiB, o({ offset: MiB, sizeLimit: 8 * MiB }), 'img'), 8 * MiB, 'capped by the limit');
  t.equal(loopDeviceSize(64 * MiB, o({ offset: 60 * MiB, sizeLimit: 8 * MiB }), 'img'), 4 * MiB, 'limit beyond the end: to the end');
  t.throws(() => loopDeviceSize(0, o({}), 'empty.img'), einval(/empty.img is empty \(0 bytes\)/));
  t.throws(() => loopDeviceSize(MiB, o({ offset: MiB }), 'a.img'), einval(/offset 1048576 is at or past the end of a.img \(1048576 bytes\)/));
  t.throws(() => loopDeviceSize(MiB + 100, o({}), 'odd.img'), einval(/device size 1048676 \(image size\) is not a multiple of the block size 512/));
  t.throws(() => loopDeviceSize(MiB, o({ offset: 100 }), 'b.img'), einval(/\(image size minus offset\) is not a multiple/));
  t.throws(() => loopDeviceSize(MiB, o({ sizeLimit: 1000 }), 'c.img'), einval(/device size 1000 \(size limit\)/));
  t.throws(() => loopDeviceSize(8192, o({ blockSize: 4096, sizeLimit: 6144 }), 'd.img'), einval(/block size 4096/));
  try {
    loopDeviceSize(0, o({}), 'x');
  } catch (err) {
    t.type(err, UbloopError, 'a UbloopError, so the CLI prints it as one line');
    t.notMatch((err as Error).message, /\n/, 'one line');
  }
});
