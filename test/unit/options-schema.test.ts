// One table of device options: every option `serve` has reaches a daemon device through
// the bind request and `ubloop attach`, and a bad value gets the same words whether it
// came over the socket, on the command line or in a library call.
import t from 'tap';
import { TUNABLES, TUNABLE_NAMES, bindDeviceOptions, checkBindOptions, checkOptions, checkTunable, type OptionSpec } from '../../lib/device-options.js';
import { parseRequest, type BindRequest } from '../../lib/protocol/index.js';
import { main } from '../../lib/cli/main.js';

const SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGUSR1'] as const;

/** Runs the CLI in this process; its stderr. The signal handlers serve leaves are taken away again. */
async function cli(args: string[]): Promise<{ code: number; stderr: string }> {
  const before = new Map(SIGNALS.map((s) => [s, process.listeners(s)]));
  let stderr = '';
  const write = process.stderr.write.bind(process.stderr);
  process.stderr.write = ((chunk: string | Uint8Array) => {
    stderr += String(chunk);
    return true;
  }) as typeof process.stderr.write;
  try {
    const code = await main(args);
    return { code, stderr };
  } finally {
    process.stderr.write = write;
    for (const s of SIGNALS) for (const l of process.listeners(s)) if (!before.get(s)?.includes(l)) process.off(s, l);
  }
}

function bind(fields: Record<string, unknown>): BindRequest {
  const p = parseRequest(JSON.stringify({ op: 'bind', ...fields }));
  if (!p.request) throw p.error ?? new Error('no request');
  return p.request as BindRequest;
}

t.test('each option has a flag, a label, a description and a default its own check accepts', async (t) => {
  const flags = new Set<string>();
  for (const name of TUNABLE_NAMES) {
    const spec = TUNABLES[name] as OptionSpec;
    t.ok(spec.describe.length > 10, `${name} is described`);
    t.notOk(flags.has(spec.flag), `--${spec.flag} is one option's`);
    flags.add(spec.flag);
    t.equal(checkTunable(name, spec.default), spec.default, `the default of ${name} passes its check`);
  }
});

// A value of each option other than its default, as JSON and as typed on a command line.
const tuned: [name: string, value: unknown, flag: string[]][] = [
  ['offset', 1 << 20, ['--offset', '1M']],
  ['sizeLimit', 8 << 20, ['--sizelimit', '8M']],
  ['readOnly', true, ['--read-only']],
  ['directIo', true, ['--direct-io']],
  ['blockSize', 4096, ['--block-size', '4096']],
  ['queues', 4, ['--queues', '4']],
  ['depth', 64, ['--depth', '64']],
  ['maxIoBytes', 256 * 1024, ['--max-io', '256K']],
  ['discard', false, ['--no-discard']],
  ['pollUs', 0, ['--poll-us', '0']],
  ['copy', 'user', ['--copy', 'user']],
  ['scheduler', 'mq-deadline', ['--scheduler', 'mq-deadline']],
  ['partscan', true, ['--partscan']],
];

t.test('the tuned values cover every option', async (t) => {
  t.same(tuned.map(([n]) => n).sort(), [...TUNABLE_NAMES].sort());
});

t.test('a bind request with each option reaches the device options', async (t) => {
  for (const [name, value] of tuned) {
    const req = bind({ [name]: value });
    t.equal((req.options as unknown as Record<string, unknown>)[name], value, `${name} in the bind options`);
    const device = bindDeviceOptions(req.options, 7) as unknown as Record<string, unknown>;
    t.equal(device[name], name === 'scheduler' && value === 'kernel' ? null : value, `${name} in the device's options`);
    t.equal(device['fd'], 7, 'over the passed descriptor');
  }
  t.equal(bindDeviceOptions(bind({ scheduler: 'kernel' }).options, 3).scheduler, null, '"kernel" leaves the kernel\'s scheduler');
});

t.test('an old bind request means what it meant: the stored fields, nothing new', async (t) => {
  t.same(bind({ readOnly: true, queues: 2 }).options, {
    offset: 0, sizeLimit: 0, readOnly: true, directIo: false, blockSize: 512, queues: 2, depth: 128, autoclear: false,
  });
  const device = bindDeviceOptions(bind({}).options, 3);
  t.match(device, { maxIoBytes: 1 << 20, discard: true, pollUs: 500, copy: 'auto', scheduler: 'none', target: 'loop', id: -1 }, 'table defaults');
  t.same(device, { ...checkOptions({ fd: 3 }) }, 'a bind without options is createDevice({fd}) without options');
});

t.test('attach sends every option to the bind request', async (t) => {
  // attach refuses a bad value before it opens anything; with good ones it would go on to
  // open the image, so the proof that each flag is read is the check seeing it.
  for (const [name, , flag] of tuned) {
    if (flag[0] === '--read-only' || flag[0] === '--direct-io' || flag[0] === '--no-discard' || flag[0] === '--partscan') continue;
    const bad = flag[0] === '--copy' || flag[0] === '--scheduler' ? 'nope' : flag[0] === '--block-size' ? '1000' : '-5';
    const r = await cli(['attach', '/nonexistent/ubloop-test.img', flag[0] as string, bad]);
    t.equal(r.code, 2, `attach ${flag[0]} ${bad}: a usage error`);
    const label = (TUNABLES as Record<string, OptionSpec>)[name]?.label as string;
    t.match(r.stderr, new RegExp(`^ubloop: ${label.replace(/[()/]/g, '\\$&')}`), `names ${label}: ${r.stderr.trim()}`);
  }
});

t.test('the CLI and the socket refuse the same bad values with the same words', async (t) => {
  const bad: [fields: Record<string, unknown>, flags: string[]][] = [
    [{ queues: 0 }, ['--queues', '0']],
    [{ queues: 65 }, ['--queues', '65']],
    [{ depth: 100000 }, ['--depth', '100000']],
    [{ blockSize: 1000 }, ['--block-size', '1000']],
    [{ maxIoBytes: 6000 }, ['--max-io', '6000']],
    [{ maxIoBytes: 1024 }, ['--max-io', '1K']],
    [{ pollUs: 2_000_000 }, ['--poll-us', '2000000']],
    [{ copy: 'fast' }, ['--copy', 'fast']],
    [{ scheduler: 'cfq' }, ['--scheduler', 'cfq']],
    [{ directIo: true, offset: 100 }, ['--direct-io', '--offset', '100']],
  ];
  for (const [fields, flags] of bad) {
    const socket = parseRequest(JSON.stringify({ op: 'bind', ...fields }));
    t.equal(socket.error?.code, 'EINVAL', `bind ${JSON.stringify(fields)} refused`);
    const words = socket.error?.message ?? '';
    for (const command of [['serve', '/nonexistent/ubloop-test.img'], ['attach', '/nonexistent/ubloop-test.img']]) {
      const r = await cli([...command, ...flags]);
      t.equal(r.stderr, `ubloop: ${words}\n`, `${command[0]} ${flags.join(' ')}: "${words}"`);
      t.equal(r.code, 2, 'exit 2, a usage error');
    }
    t.throws(() => checkOptions({ file: 'f', ...fields }), { code: 'EINVAL', message: words }, 'createDevice: the same words');
  }
});

t.test('bind options: the check of attach and of the socket is one', async (t) => {
  t.same(checkBindOptions({ queues: 2, copy: 'zero' }), bind({ queues: 2, copy: 'zero' }).options);
  t.throws(() => checkBindOptions({ autoclear: 'yes' }), { code: 'EINVAL', message: /autoclear must be true or false, got "yes"/ });
});

t.test('the daemon\'s device factory hands each bind option to the device', async (t) => {
  const seen: Record<string, unknown>[] = [];
  const stop = new Error('captured');
  const { ublkFactory } = await t.mockImport<typeof import('../../lib/daemon/ublk-factory.js')>('../../lib/daemon/ublk-factory.js', {
    '../../lib/device.js': {
      startDevice: async (o: Record<string, unknown>) => {
        seen.push(o);
        throw stop;
      },
      recoverDevice: async () => {
        throw new Error('no recovery asked for');
      },
    },
    '../../lib/image.js': { inspectImage: () => ({ fd: 9, size: 1 << 20 }) },
  });
  for (const [name, value] of tuned) {
    await t.rejects(ublkFactory({ fd: 9, options: bind({ [name]: value }).options }), stop);
    const o = seen.pop();
    t.equal(o?.[name], value, `bind ${name}: ${JSON.stringify(value)} reaches startDevice`);
    t.match(o, { target: 'loop', fd: 9, id: -1 });
  }
});
