// The CUSE device behind an instance's loop-control, on the real kernel: other
// processes open /dev/<devName> and issue ioctls; the JS handler sees who asked what
// and its answers (results, negative errnos, late promises) come back as the ioctl's
// return value or errno. close() removes the device without hanging, even with an
// ioctl still waiting. ioctlInt (test addon) also drives the kernel's own /dev/loop-control.
import t from 'tap';
import type { Test } from 'tap';
import { spawn } from 'node:child_process';
import { chmodSync, closeSync, existsSync, openSync, readFileSync, readSync, statSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT } from '../helpers/e2e.js';
import { native } from '../../lib/native.js';
import { TEST_ADDON, testAddon } from '../helpers/test-addon.js';
import type { NativeIoctlHandler, NativeIoctlRequest } from '../../lib/native.js';

const ADD = 0x4c80;
const REMOVE = 0x4c81;
const GET_FREE = 0x4c82;
const ADDON = join(ROOT, 'build', 'Release', 'ubloop.node');
// Children get a plain environment: no tap loader hooks (which a non-root child could
// not write for), no colours.
const childEnv = { PATH: process.env['PATH'] ?? '/usr/bin:/bin' };
let seq = 0;
const devName = () => `ubloop-t${process.pid}-${seq++}-loop-control`;

/** What one client process got for each [cmd, arg]: the result or the error code. */
interface ClientResult {
  pid: number;
  out: (number | string)[];
  ms: number[];
  status: number | null;
  stderr: string;
}

// The client: opens the device, issues the ioctls in order, prints what each returned.
const CLIENT = `
const b = require(process.argv[1]);
const fs = require('fs');
const fd = fs.openSync(process.argv[2], 'r+');
const out = [], ms = [];
for (const [cmd, arg] of JSON.parse(process.argv[3])) {
  const t0 = Date.now();
  try { out.push(b.ioctlInt(fd, cmd, arg)); } catch (e) { out.push(e.code); }
  ms.push(Date.now() - t0);
}
console.log(JSON.stringify({ pid: process.pid, out, ms }));
`;

/** Runs the ioctls in a separate process (never on this thread: the handler runs here). */
function client(path: string, ops: [number, number][], opts: { uid?: number; gid?: number } = {}): Promise<ClientResult> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, ['-e', CLIENT, TEST_ADDON, path, JSON.stringify(ops)], { ...opts, env: childEnv, stdio: 'pipe' });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    p.on('error', reject);
    p.on('close', (status) => {
      const parsed = stdout.trim() ? (JSON.parse(stdout) as { pid: number; out: (number | string)[]; ms: number[] }) : null;
      resolve({ pid: parsed?.pid ?? p.pid ?? -1, out: parsed?.out ?? [], ms: parsed?.ms ?? [], status, stderr });
    });
  });
}

/** major:minor of a device number as stat() gives it. */
function devOf(rdev: number): [number, number] {
  const major = Math.floor(rdev / 256) & 0xfff;
  const minor = (rdev & 0xff) | ((Math.floor(rdev / 4096) & ~0xff) >>> 0);
  return [major, minor];
}

async function create(t: Test, handler: NativeIoctlHandler) {
  const name = devName();
  const dev = await native().createCuseDevice(name, handler);
  t.teardown(() => dev.close());
  return { dev, path: `/dev/${name}` };
}

t.test('the device appears under /dev with the reported numbers and goes on close()', async (t) => {
  const name = devName();
  const dev = await native().createCuseDevice(name, () => 0);
  const path = `/dev/${name}`;
  t.equal(dev.devName, name);
  t.ok(existsSync(path), `${path} exists`);
  const st = statSync(path);
  t.ok(st.isCharacterDevice(), 'it is a character device');
  t.same(devOf(st.rdev), [dev.major, dev.minor], `stat gives ${dev.major}:${dev.minor}`);
  t.equal(readFileSync(`/sys/class/cuse/${name}/dev`, 'utf8').trim(), `${dev.major}:${dev.minor}`, 'sysfs agrees');
  t.ok(dev.major > 0, 'a real major number');

  await t.rejects(native().createCuseDevice(name, () => 0), { code: 'EEXIST' }, 'the name is taken while served');
  t.throws(() => native().createCuseDevice('a/b', () => 0), TypeError, 'a name with / is refused');
  t.throws(() => native().createCuseDevice('', () => 0), TypeError, 'an empty name is refused');

  const t0 = Date.now();
  await dev.close();
  t.ok(Date.now() - t0 < 5000, `close took ${Date.now() - t0} ms`);
  t.notOk(existsSync(path), 'the node is gone');
  t.notOk(existsSync(`/sys/class/cuse/${name}`), 'the sysfs entry is gone');
  await dev.close();
  t.pass('a second close() resolves');
  // the name can be used again
  const again = await native().createCuseDevice(name, () => 0);
  t.ok(existsSync(path), 'the same name serves again');
  await again.close();
});

t.test('loop-control ioctls reach the handler with cmd, arg and caller; answers come back', async (t) => {
  const seen: NativeIoctlRequest[] = [];
  const taken = new Set([3]);
  const { path } = await create(t, (req) => {
    seen.push(req);
    switch (req.cmd) {
      case ADD:
        if (taken.has(req.arg)) return -17; // EEXIST
        taken.add(req.arg);
        return req.arg;
      case REMOVE:
        if (req.arg < 0) return -22; // EINVAL
        return taken.delete(req.arg) ? 0 : -19; // ENODEV
      case GET_FREE: {
        let i = 0;
        while (taken.has(i)) i++;
        return Promise.resolve(i); // a promise answers too
      }
      case 0x4c99:
        return -38; // ENOSYS, the kernel loop-control's answer to an unknown command...
      default:
        return -28; // ENOSPC: any errno the handler picks comes back
    }
  });
  const r = await client(path, [
    [ADD, 1],
    [ADD, 3],
    [GET_FREE, 0],
    [REMOVE, 1],
    [REMOVE, 1],
    [REMOVE, -1],
    [0x1234, 7],
    [0x4c99, 0],
  ]);
  t.equal(r.status, 0, `client exits 0 ${r.stderr}`);
  t.same(r.out.slice(0, 7), [1, 'EEXIST', 0, 0, 'ENODEV', 'EINVAL', 'ENOSPC'], 'results and errnos as the handler gave them');
  // ...which FUSE turns into ENOTTY on the way to the caller (fs/fuse/ioctl.c): a CUSE
  // loop-control cannot answer ENOSYS.
  t.equal(r.out[7], 'ENOTTY', 'ENOSYS from the handler reaches the caller as ENOTTY');
  t.same(
    seen.map((s) => [s.cmd, s.arg]),
    [
      [ADD, 1],
      [ADD, 3],
      [GET_FREE, 0],
      [REMOVE, 1],
      [REMOVE, 1],
      [REMOVE, -1],
      [0x1234, 7],
      [0x4c99, 0],
    ],
    'the handler saw every ioctl with its argument (negative stays negative)',
  );
  for (const s of seen) t.same([s.uid, s.gid, s.pid], [0, 0, r.pid], 'caller uid/gid/pid');
});

t.test('the caller uid and gid are those of the calling process', async (t) => {
  const seen: NativeIoctlRequest[] = [];
  const { path } = await create(t, (req) => {
    seen.push(req);
    return 42;
  });
  chmodSync(path, 0o666);
  const r = await client(path, [[GET_FREE, 0]], { uid: 1001, gid: 1002 });
  t.equal(r.status, 0, `client as uid 1001 exits 0 ${r.stderr}`);
  t.same(r.out, [42]);
  t.same(seen.map((s) => [s.uid, s.gid, s.pid]), [[1001, 1002, r.pid]]);
});

t.test('replies may go out of order: a slow answer does not hold up a fast one', async (t) => {
  const { path } = await create(t, (req) =>
    req.arg === 1 ? new Promise<number>((r) => setTimeout(() => r(100), 1500)) : 200,
  );
  const slow = client(path, [[GET_FREE, 1]]);
  await new Promise((r) => setTimeout(r, 300)); // let the slow one be asked first
  const fast = await client(path, [[GET_FREE, 2]]);
  let slowDone = false;
  void slow.then(() => (slowDone = true));
  await new Promise((r) => setImmediate(r));
  t.same(fast.out, [200], 'fast ioctl answered');
  t.notOk(slowDone, 'while the slow one is still waiting');
  const s = await slow;
  t.same(s.out, [100], 'slow ioctl answered later');
  t.ok((s.ms[0] ?? 0) >= 1000, `slow ioctl took ${s.ms[0]} ms`);
});

t.test('concurrent ioctls from several processes are all answered', async (t) => {
  let next = 0;
  const pids = new Set<number>();
  const { path } = await create(t, (req) => {
    pids.add(req.pid);
    const n = next++;
    return n % 2 ? n : new Promise<number>((r) => setTimeout(() => r(n), 5));
  });
  const ops: [number, number][] = Array.from({ length: 25 }, () => [GET_FREE, 0]);
  const results = await Promise.all(Array.from({ length: 4 }, () => client(path, ops)));
  const all = results.flatMap((r) => r.out);
  for (const r of results) t.equal(r.status, 0, `client ${r.pid} exits 0 ${r.stderr}`);
  t.equal(all.length, 100, '4 x 25 answers');
  t.same(
    [...all].sort((a, b) => Number(a) - Number(b)),
    Array.from({ length: 100 }, (_, i) => i),
    'each answer is the one the handler gave to that call, none lost or doubled',
  );
  t.same([...pids].sort(), results.map((r) => r.pid).sort(), 'the handler saw each client pid');
});

t.test('a handler that throws, rejects or answers nonsense gives EIO; read/write give EINVAL', async (t) => {
  const { path } = await create(t, (req) => {
    if (req.arg === 1) throw new Error('handler bug');
    if (req.arg === 2) return Promise.reject(new Error('async handler bug'));
    if (req.arg === 3) return 1.5;
    if (req.arg === 4) return 'x' as unknown as number;
    return 7;
  });
  const r = await client(path, [
    [GET_FREE, 1],
    [GET_FREE, 2],
    [GET_FREE, 3],
    [GET_FREE, 4],
    [GET_FREE, 5],
  ]);
  t.same(r.out, ['EIO', 'EIO', 'EIO', 'EIO', 7], 'the device keeps serving after handler errors');
  const fd = openSync(path, 'r+');
  t.throws(() => readSync(fd, Buffer.alloc(8)), { code: 'EINVAL' }, 'read');
  t.throws(() => writeSync(fd, Buffer.alloc(8)), { code: 'EINVAL' }, 'write');
  closeSync(fd);
});

t.test('close() with an ioctl still waiting: the caller gets ENODEV, the node goes, no hang', async (t) => {
  let asked: () => void = () => {};
  const askedP = new Promise<void>((r) => (asked = r));
  const name = devName();
  const dev = await native().createCuseDevice(name, () => {
    asked();
    return new Promise<number>(() => {}); // never settles
  });
  const waiting = client(`/dev/${name}`, [[GET_FREE, 0]]);
  await askedP;
  const t0 = Date.now();
  await dev.close();
  t.ok(Date.now() - t0 < 5000, `close took ${Date.now() - t0} ms`);
  const r = await waiting;
  t.same(r.out, ['ENODEV'], 'the waiting caller was answered ENODEV');
  t.notOk(existsSync(`/dev/${name}`), 'the node is gone');
});

t.test('process.exit() with a device open ends promptly and removes the device', async (t) => {
  const name = devName();
  const script = `
    const b = require(process.argv[1]);
    b.createCuseDevice(process.argv[2], () => 0).then(() => {
      console.log(String(require('fs').existsSync('/dev/' + process.argv[2])));
      process.exit(0);
    });`;
  const t0 = Date.now();
  const r = await new Promise<{ status: number | null; out: string }>((resolve) => {
    const p = spawn(process.execPath, ['-e', script, ADDON, name], { env: childEnv });
    let out = '';
    p.stdout.on('data', (d: Buffer) => (out += d.toString()));
    const timer = setTimeout(() => p.kill('SIGKILL'), 30_000);
    p.on('close', (status) => {
      clearTimeout(timer);
      resolve({ status, out });
    });
  });
  t.equal(r.out.trim(), 'true', 'the child served the device');
  t.equal(r.status, 0, `child exited 0 after ${Date.now() - t0} ms`);
  t.notOk(existsSync(`/dev/${name}`), 'no device left behind');
});

t.test("ioctlInt on the kernel's /dev/loop-control", async (t) => {
  const fd = openSync('/dev/loop-control', 'r+');
  t.teardown(() => closeSync(fd));
  const free = testAddon().ioctlInt(fd, GET_FREE, 0);
  t.ok(Number.isInteger(free) && free >= 0, `GET_FREE returned index ${free}`);
  t.ok(existsSync(`/dev/loop${free}`), `/dev/loop${free} exists`);
  t.throws(() => testAddon().ioctlInt(fd, ADD, free), { code: 'EEXIST', errno: -17, syscall: 'ioctl' }, 'ADD of a taken index');
  t.equal(testAddon().ioctlInt(fd, REMOVE, free), 0, 'REMOVE returns 0');
  t.throws(() => testAddon().ioctlInt(fd, REMOVE, free), { code: 'ENODEV' }, 'REMOVE again: ENODEV');
  t.equal(testAddon().ioctlInt(fd, ADD, free), free, 'ADD returns the index');
  t.equal(testAddon().ioctlInt(fd, REMOVE, free), 0);
  t.throws(() => testAddon().ioctlInt(-1, GET_FREE, 0), { code: 'EBADF' }, 'a bad fd');
  t.throws(() => testAddon().ioctlInt('x' as unknown as number, GET_FREE, 0), TypeError);
});
