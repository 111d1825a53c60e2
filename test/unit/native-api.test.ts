// native/index.d.ts (what TypeScript callers are told) against the loaded addon (what
// they get): a member exported without a declaration, or declared and never exported,
// would surface as a crash far from its cause; a flag name typed in the .d.ts that the
// addon's table lacks would make hasFlag() throw at run time.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { native } from '../../lib/native.js';

const dts = readFileSync(fileURLToPath(new URL('../../native/index.d.ts', import.meta.url)), 'utf8');

/** Member names declared in `interface Name {...}` or `class Name {...}` of the .d.ts. */
function declared(name: string): string[] {
  const m = new RegExp(`(?:interface|class) ${name}\\b[^{]*\\{([\\s\\S]*?)\\n\\}`).exec(dts);
  if (!m?.[1]) throw new Error(`native/index.d.ts declares no ${name}`);
  const body = m[1].replace(/\/\*[\s\S]*?\*\//g, '').replace(/\/\/.*$/gm, '');
  const names = [...body.matchAll(/^\s*(?:readonly\s+)?([A-Za-z_$][\w$]*)\s*[?]?\s*[:(]/gm)].map((x) => x[1] as string);
  return names.filter((n) => n !== 'constructor').sort();
}

const sorted = (xs: Iterable<string>) => [...xs].sort();
const members = (cls: unknown) =>
  sorted(Object.getOwnPropertyNames((cls as { prototype: object }).prototype).filter((n) => n !== 'constructor'));

t.test("the .d.ts flag-name union is the addon's flag table, in bit order", async (t) => {
  const m = /export type NativeUblkFlagName =([^;]*);/.exec(dts);
  if (!m?.[1]) throw new Error('native/index.d.ts declares no NativeUblkFlagName');
  const typed = [...m[1].matchAll(/'([^']+)'/g)].map((x) => x[1]);
  t.same(typed, native().ublkFlags.map(([name]) => name));
});

t.test('the loaded addon exports exactly what NativeBinding declares', async (t) => {
  const b = native() as unknown as Record<string, unknown>;
  t.same(sorted(Object.keys(b)), declared('NativeBinding'), 'top-level exports');
  for (const [name, value] of Object.entries(b)) {
    const m = new RegExp(`\\n  ${name}(\\(|: )`).exec(dts.slice(dts.indexOf('interface NativeBinding')));
    if (m?.[1] === '(') t.equal(typeof value, 'function', `${name} is a function`);
  }
  t.type(b['cuseAvailable'], 'boolean');
});

t.test('the classes have exactly the declared members and cannot be built from JS', async (t) => {
  const b = native() as unknown as Record<string, unknown>;
  const classes = ['NativeDevice', 'NativeUnixConnection', 'NativeUnixServer'];
  // Built without libfuse3, NativeCuseDevice is a constructor that only refuses.
  if (native().cuseAvailable) classes.push('NativeCuseDevice');
  for (const name of classes) {
    t.same(members(b[name]), declared(name), name);
    t.throws(() => new (b[name] as new () => object)(), TypeError, `${name} cannot be built from JS`);
  }
  const proto = (b['NativeDevice'] as { prototype: object }).prototype;
  t.equal(typeof Object.getOwnPropertyDescriptor(proto, 'id')?.get, 'function', 'id is a read-only accessor');
  t.equal(Object.getOwnPropertyDescriptor(proto, 'id')?.set, undefined);
});

t.test('probeKernel returns the declared shape', async (t) => {
  const k = native().probeKernel();
  t.same(sorted(Object.keys(k)), declared('NativeKernelSupport'));
  t.equal(typeof k.present, 'boolean');
  t.ok(k.encoding === 'legacy' || k.encoding === 'ioctl', `encoding ${k.encoding}`);
  t.ok(k.features === null || typeof k.features === 'bigint', 'features is a bigint or null');
  if (k.present) t.equal(k.controlError, null, 'no error when present');
  else t.type(k.controlError, 'string', 'names the errno when absent');
});

t.test('bad arguments are rejected by the addon itself, not by a crash', async (t) => {
  const b = native();
  t.throws(() => b.createDevice(undefined as never), { name: 'TypeError', message: /expected an options object/ });
  t.throws(() => b.createDevice({} as never), { name: 'TypeError', message: /option 'id' must be a number/ });
  t.throws(() => b.getDeviceInfo(-1), { name: 'TypeError', message: /expected a device id/ });
  t.throws(() => b.deleteDevice('x' as never), { name: 'TypeError', message: /expected a device id/ });
  t.throws(() => b.mknod('/tmp/x', 0o600, 'x' as never, 1, 3), { name: 'TypeError', message: /'b' \| 'c'/ });
});

t.test('a control command that fails rejects its promise with the errno', async (t) => {
  // No ublk on the host, or no device 4000000 on a kernel with ublk: ENOENT or ENODEV either way.
  await t.rejects(native().getDeviceInfo(4_000_000), { code: /^E[A-Z]+$/, syscall: /GET_DEV_INFO|open/ });
  await t.rejects(native().deleteDevice(4_000_000), { code: /^E[A-Z]+$/ });
});

t.test('mknod makes the node in one syscall and reports failures as errno errors', { skip: process.getuid?.() !== 0 && 'needs root' }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'ubloop-mknod-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, 'null');
  native().mknod(path, 0o640, 'c', 1, 3);
  const st = statSync(path);
  t.ok(st.isCharacterDevice(), 'a char node');
  t.equal(st.rdev, (1 << 8) | 3, 'with the device number asked for (1:3)');
  t.equal(st.mode & 0o777 & ~0o640, 0, 'no permission beyond the mode asked for');
  native().mknod(join(dir, 'blk'), 0o600, 'b', 7, 0);
  t.ok(statSync(join(dir, 'blk')).isBlockDevice(), 'a block node');
  t.throws(() => native().mknod(path, 0o640, 'c', 1, 3), { code: 'EEXIST', errno: -17, syscall: 'mknod', path });
  t.throws(() => native().mknod(join(dir, 'no', 'x'), 0o640, 'c', 1, 3), { code: 'ENOENT', syscall: 'mknod' });
});

t.test('built without libfuse3, CUSE says so instead of failing obscurely', { skip: native().cuseAvailable && 'built with libfuse3' }, async (t) => {
  await t.rejects(native().createCuseDevice('ubloop-test-loop-control', () => 0), {
    code: 'ENOTSUP',
    message: 'CUSE loop-control unavailable: ubloop was built without libfuse3',
  });
});

t.test('workers that end with control commands in flight end cleanly', async (t) => {
  // Each job runs on a thread of its own and settles through the environment's
  // thread-safe function; a worker torn down meanwhile must neither crash on a job
  // finishing late nor have the addon unmapped under a running job thread.
  const addon = createRequire(import.meta.url).resolve('../../build/Release/ubloop.node');
  const script = `
    const { Worker } = require('worker_threads');
    let n = 0;
    const one = () => {
      const w = new Worker(\`const b = require(\${JSON.stringify(process.argv[1])});
        for (let i = 0; i < 50; i++) { b.getDeviceInfo(4000000 + i).catch(() => {}); b.createCuseDevice('ubloop-nx-' + i, () => 0).catch(() => {}); }
        require('worker_threads').parentPort.postMessage(1);\`, { eval: true });
      w.once('message', () => { if (n % 2) w.terminate(); });
      w.once('exit', () => (++n < 30 ? one() : console.log('done', n)));
    };
    one();`;
  const r = spawnSync(process.execPath, ['-e', script, addon], { encoding: 'utf8', timeout: 60_000 });
  t.equal(r.signal, null, `no crash (${r.stderr.slice(0, 200)})`);
  t.equal(r.status, 0);
  t.equal(r.stdout.trim(), 'done 30', 'every worker ran and ended');
});
