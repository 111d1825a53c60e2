// Which devices a bench run measures on which kernel: the data paths and kublk's modes
// only where the kernel offers their flags, so that a 6.1 run never tries them.
import t from 'tap';
import type { RunRecord } from '../../bench/model.js';
import { LINUX_7_3_FEATURES, deviceMatrix, parseOptions } from '../../bench/options.js';
import { pairedRatiosTo } from '../../bench/report.js';

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

t.test('--engine measures another built checkout of ubloop beside this one, at its defaults', async (t) => {
  const dir = t.testdir({ bin: { 'ubloop.js': '' } });
  const o = parseOptions(['--queues', '1', '--configs', 'kernel-loop,ubloop-direct', '--engine', `old=${dir}`]);
  t.same(o.engines, [{ name: 'old', args: [], root: dir }]);
  t.same(
    deviceMatrix(o, []).map((d) => `${d.config}${d.variant ? `+${d.variant.name}` : ''}`),
    ['kernel-loop', 'ubloop-direct', 'ubloop-direct+old'],
  );
  t.throws(() => parseOptions(['--engine', `${dir}`]), /--engine must be NAME=DIR/);
  t.throws(() => parseOptions(['--engine', 'old=/nonexistent']), /--engine old: \/nonexistent is not a ubloop checkout/);
});

t.test('ratios to another build pair the two devices repeat by repeat', async (t) => {
  const run = (device: string, repeat: number, iops: number) => ({ job: 'j', device, repeat, fio: { iops } }) as unknown as RunRecord;
  const runs = [run('a', 1, 100), run('b', 1, 50), run('a', 2, 90), run('b', 2, 100), run('b', 3, 70)];
  t.same(pairedRatiosTo(runs, 'j', 'a', 'b'), [2, 0.9]);
});
