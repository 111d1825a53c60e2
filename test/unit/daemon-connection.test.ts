// The daemon's request path on the host: a Connection fed bytes and descriptors as the
// native socket would, dispatching to an InstanceManager with a fake device factory.
import t from 'tap';
import { closeSync, fstatSync, mkdtempSync, openSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Connection, type Scope } from '../../lib/daemon/connection.js';
import { dispatch } from '../../lib/daemon/dispatch.js';
import { InstanceManager, type BoundDevice } from '../../lib/instance/index.js';
import type { UnixConnection } from '../../lib/daemon/native-ipc.js';

function isOpen(fd: number): boolean {
  try {
    fstatSync(fd);
    return true;
  } catch {
    return false;
  }
}

function setup(scope: Scope, peer = { pid: 4242, uid: 0, gid: 0 }) {
  const m = new InstanceManager({
    root: '/r',
    factory: async (): Promise<BoundDevice> => ({ ublkId: 7, path: '/dev/ublkb7', major: 259, minor: 7, size: 4096, isBusy: () => false, failure: () => null, stop: async () => {}, canStopIfUnused: false, resize: async () => 4096 }),
  });
  const written: string[] = [];
  let ended = false;
  const fake = {
    peer,
    write: (data: Uint8Array | string) => void written.push(String(data)),
    end: () => void (ended = true),
    destroy: () => void (ended = true),
  } as unknown as UnixConnection;
  const conn = new Connection(fake, scope, (req, ctx) => dispatch(m, req, ctx));
  const replies = async (n: number) => {
    for (let i = 0; i < 100 && written.length < n; i++) await new Promise((r) => setTimeout(r, 5));
    return written.splice(0, n).map((l) => JSON.parse(l) as Record<string, unknown>);
  };
  return { m, conn, replies, ended: () => ended };
}

const dir = mkdtempSync(join(tmpdir(), 'ubloop-conn-'));
const image = join(dir, 'img');
writeFileSync(image, Buffer.alloc(8192));

t.test('requests are answered in order, ids echoed, descriptors closed after use', async (t) => {
  const { m, conn, replies } = setup({ kind: 'instance', name: 'a' });
  await m.create({ name: 'a' });
  const fd = openSync(image, 'r+');
  // one chunk per descriptor-carrying write, as recvmsg delivers them
  conn.data(Buffer.from('{"op":"bind","id":1}\n'), [fd]);
  conn.data(Buffer.from('{"op":"list","id":2}\n{"op":"nope","id":3}\n'));
  const [bind, list, nope] = await replies(3);
  t.match(bind, { ok: true, id: 1, device: { index: 0, state: 'bound', backing: { path: image } } });
  t.match(list, { ok: true, id: 2, devices: [{ index: 0 }] });
  t.match(nope, { id: 3, error: { code: 'ENOSYS', errno: 38, message: /unknown op "nope"/ } });
  t.notOk(isOpen(fd), 'the passed descriptor was closed by the daemon side');
});

t.test('descriptors of bad or overlong requests are closed too', async (t) => {
  const { m, conn, replies } = setup({ kind: 'instance', name: 'a' });
  await m.create({ name: 'a' });
  const dirFd = openSync(dir, 'r');
  const fd2 = openSync(image, 'r');
  conn.data(Buffer.from('{"op":"bind"}\n'), [dirFd]);
  conn.data(Buffer.from(`{"op":"bind","x":"${'a'.repeat(70_000)}"}\n`), [fd2]);
  conn.data(Buffer.from('{"op":"ping"}\n'));
  const [dirReply, huge, ping] = await replies(3);
  t.match(dirReply, { error: { code: 'EISDIR', message: /is a directory/ } });
  t.match(huge, { error: { code: 'EMSGSIZE' } });
  t.match(ping, { ok: true, pid: process.pid });
  t.notOk(isOpen(dirFd));
  t.notOk(isOpen(fd2));
  t.same(m.get('a').indices(), [], 'a failed bind without an index leaves no index');
});

t.test('scopes: instance sockets reach only their instance; admin ops only on the admin socket', async (t) => {
  const { m, conn, replies } = setup({ kind: 'instance', name: 'a' });
  await m.create({ name: 'a' });
  await m.create({ name: 'b' });
  conn.data(Buffer.from('{"op":"list","instance":"b"}\n{"op":"instance.list"}\n{"op":"loop.add","index":2,"instance":"a"}\n'));
  const [other, admin, add] = await replies(3);
  t.match(other, { error: { code: 'ENOENT' } });
  t.match(admin, { error: { code: 'EPERM' } });
  t.match(add, { ok: true, index: 2 });
  const a = setup({ kind: 'admin' });
  await a.m.create({ name: 'x' });
  a.conn.data(Buffer.from('{"op":"loop.add","index":1}\n{"op":"loop.add","index":1,"instance":"x"}\n{"op":"instance.set","name":"x","max":9}\n'));
  const [noName, ok, set] = await a.replies(3);
  t.match(noName, { error: { code: 'EINVAL', message: /name the instance/ } });
  t.match(ok, { ok: true, index: 1 });
  t.match(set, { ok: true, instance: { name: 'x', max: 9, count: 1 } });
  const nonRoot = setup({ kind: 'instance', name: 'a' }, { pid: 1, uid: 1001, gid: 1001 });
  await nonRoot.m.create({ name: 'a', uid: 1001, gid: 1001 });
  nonRoot.conn.data(Buffer.from(`{"op":"bind","path":${JSON.stringify(image)}}\n`));
  t.match(await nonRoot.replies(1), [{ error: { code: 'EPERM', message: /only root may bind by path/ } }]);
});

t.test('a read-only descriptor cannot back a writable device', async (t) => {
  const { m, conn, replies } = setup({ kind: 'instance', name: 'a' });
  await m.create({ name: 'a' });
  const ro = openSync(image, 'r');
  const ro2 = openSync(image, 'r');
  conn.data(Buffer.from('{"op":"bind"}\n'), [ro]);
  conn.data(Buffer.from('{"op":"bind","readOnly":true}\n'), [ro2]);
  const [rw, ok] = await replies(2);
  t.match(rw, { error: { code: 'EBADF', message: /open read-only/ } });
  t.match(ok, { ok: true, device: { options: { readOnly: true } } });
  closeSync(openSync(image, 'r'));
});

t.test('a refused connection answers its first request with the refusal, then closes', async (t) => {
  const { conn, replies, ended } = setup({ kind: 'admin' }, { pid: 9, uid: 1001, gid: 1001 });
  const { UbloopError } = await import('../../lib/errors.js');
  conn.refuse(new UbloopError('EACCES', 'the admin socket is for root only'));
  t.notOk(ended(), 'nothing is sent before the client asks');
  const fd = openSync(image, 'r');
  conn.data(Buffer.from('{"op":"instance.list","id":5}\n'), [fd]);
  t.match(await replies(1), [{ error: { code: 'EACCES', message: /root only/ } }]);
  t.ok(ended(), 'then the connection is closed');
  t.notOk(isOpen(fd), 'descriptors sent along are closed');
});
