// Which devices a bench run measures on which kernel: the data paths and kublk's modes
// only where the kernel offers their flags, so that a 6.1 run never tries them.
import t from 'tap';
import { LINUX_7_3_FEATURES, deviceMatrix, parseOptions } from '../../bench/options.js';

const labels = (argv: string[], features: readonly string[]) =>
  deviceMatrix(parseOptions(argv), features).map((d) => `${d.config}${d.variant ? `+${d.variant.name}` : ''} q${d.queues}`);

t.test('on Linux 7.3 ubloop runs in every data path (auto-buf once, as auto) and kublk in both of its fast modes', async (t) => {
  t.same(labels(['--queues', '1', '--kublk', '/x/kublk'], LINUX_7_3_FEATURES), [
    'kernel-loop q1',
    'ubloop-direct q1',
    'ubloop-direct+copy-kernel q1',
    'ubloop-direct+copy-user q1',
    'ubloop-direct+copy-zero q1',
    'ubloop-buffered q1',
    'ubloop-null q1',
    'kublk-auto-zc q1',
    'kublk-auto-zc-batch q1',
  ]);
});

t.test('a kernel without GET_FEATURES (6.1) gets the kernel copy only (as auto) and no kublk', async (t) => {
  t.same(labels(['--queues', '1', '--kublk', '/x/kublk'], []), [
    'kernel-loop q1',
    'ubloop-direct q1',
    'ubloop-buffered q1',
    'ubloop-null q1',
  ]);
});

t.test('without a kublk binary its columns are left out; --copy picks the paths', async (t) => {
  t.same(labels(['--queues', '1', '--configs', 'kernel-loop,ubloop-direct,kublk-auto-zc', '--copy', 'auto,zero'], LINUX_7_3_FEATURES), [
    'kernel-loop q1',
    'ubloop-direct q1',
    'ubloop-direct+copy-zero q1',
  ]);
});

t.test('a path named without auto is measured as a variant even where auto would take it', async (t) => {
  t.same(labels(['--queues', '1', '--configs', 'kernel-loop,ubloop-direct', '--copy', 'auto-buf,kernel'], LINUX_7_3_FEATURES), [
    'kernel-loop q1',
    'ubloop-direct+copy-auto-buf q1',
    'ubloop-direct+copy-kernel q1',
  ]);
});

t.test('--smoke measures ubloop at its defaults only', async (t) => {
  t.same(labels(['--smoke'], LINUX_7_3_FEATURES), ['kernel-loop q1', 'ubloop-direct q1', 'ubloop-buffered q1', 'ubloop-null q1']);
});

t.test('--kernel takes the test kernels by name, all of them by default', async (t) => {
  t.same(parseOptions([]).kernels, ['7.3', '6.1']);
  t.same(parseOptions(['--kernel', '6.1']).kernels, ['6.1']);
  t.throws(() => parseOptions(['--kernel', '5.15']), /--kernel: unknown test kernel "5.15" \(known: 7.3, 6.1, all\)/);
  t.throws(() => parseOptions(['--copy', 'fast']), /--copy: unknown data path "fast"/);
});
