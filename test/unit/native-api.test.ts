// The addon's runtime exports, native/index.d.ts (what TypeScript callers are told) and
// the list below must all agree: a member added to addon.cc without a declaration (or
// declared but never exported) would surface as a crash far from its cause.
import t from 'tap';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { native } from '../../lib/native.js';

const EXPECTED = {
  NativeBinding: [
    'NativeDevice',
    'constants',
    'ublkFlags',
    'createDevice',
    'deleteDevice',
    'removeAllDevicesSync',
    'getDeviceInfo',
    'probeKernel',
    'NativeCuseDevice',
    'createCuseDevice',
    'ioctlInt',
    'NativeUnixConnection',
    'NativeUnixServer',
    'listenUnix',
    'connectUnix',
  ],
  NativeCuseDevice: ['close', 'devName', 'major', 'minor'],
  NativeUnixConnection: ['destroy', 'end', 'peer', 'write'],
  NativeUnixServer: ['close', 'path'],
  NativeDevice: ['id', 'info', 'remove', 'resize', 'stats'],
  NativeConstants: [
    'IORING_SETUP_COOP_TASKRUN',
    'IORING_SETUP_DEFER_TASKRUN',
    'IORING_SETUP_SINGLE_ISSUER',
    'UBLK_MAX_QUEUE_DEPTH',
  ],
  NativeKernelSupport: ['controlError', 'encoding', 'features', 'present'],
};

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

t.test('native/index.d.ts declares exactly the expected members', async (t) => {
  for (const [name, members] of Object.entries(EXPECTED)) {
    t.same(declared(name), sorted(members), name);
  }
});

t.test('the loaded addon exports exactly what is declared', async (t) => {
  const b = native() as unknown as Record<string, unknown>;
  t.same(sorted(Object.keys(b)), sorted(EXPECTED.NativeBinding), 'top-level exports');
  for (const fn of ['createDevice', 'deleteDevice', 'removeAllDevicesSync', 'getDeviceInfo', 'probeKernel']) {
    t.equal(typeof b[fn], 'function', `${fn} is a function`);
  }
  t.equal(typeof b['NativeDevice'], 'function', 'NativeDevice is a class');
  const proto = (b['NativeDevice'] as { prototype: object }).prototype;
  t.same(sorted(Object.getOwnPropertyNames(proto).filter((n) => n !== 'constructor')), sorted(EXPECTED.NativeDevice), 'NativeDevice members');
  t.equal(typeof Object.getOwnPropertyDescriptor(proto, 'id')?.get, 'function', 'id is a read-only accessor');
  t.equal(Object.getOwnPropertyDescriptor(proto, 'id')?.set, undefined);
  const constants = b['constants'] as Record<string, unknown>;
  t.same(sorted(Object.keys(constants)), sorted(EXPECTED.NativeConstants), 'constants');
  for (const k of Object.keys(constants)) {
    t.equal(typeof constants[k], k.startsWith('UBLK_F_') ? 'bigint' : 'number', `${k} has the declared type`);
  }
});

t.test('the instance classes (CUSE device, unix sockets) have exactly the declared members', async (t) => {
  const b = native() as unknown as Record<string, { prototype: object }>;
  for (const name of ['NativeCuseDevice', 'NativeUnixConnection', 'NativeUnixServer'] as const) {
    const proto = b[name]?.prototype ?? {};
    t.same(sorted(Object.getOwnPropertyNames(proto).filter((n) => n !== 'constructor')), sorted(EXPECTED[name]), name);
    t.throws(() => new (b[name] as unknown as new () => object)(), TypeError, `${name} cannot be built from JS`);
  }
});

t.test('probeKernel returns the declared shape', async (t) => {
  const k = native().probeKernel();
  t.same(sorted(Object.keys(k)), sorted(EXPECTED.NativeKernelSupport));
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
  t.throws(() => new (b.NativeDevice as unknown as new () => object)(), Error, 'NativeDevice cannot be built from JS');
});
