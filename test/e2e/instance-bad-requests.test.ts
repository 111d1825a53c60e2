// Bad requests to the daemon: each gets an error reply naming the problem, the daemon
// stays up, and nothing leaks (no ublk device, no descriptor in the daemon).
import t from 'tap';
import { closeSync, mkdirSync, openSync } from 'node:fs';
import { join } from 'node:path';
import { native } from '../../lib/native.js';
import { MiB, sh, sleep, sparseImage, workDir } from '../helpers/e2e.js';
import { startDaemon, ublkCount } from '../helpers/daemon.js';

/** A raw connection: writes bytes (and fds) and collects reply lines. */
function raw(path: string) {
  const lines: string[] = [];
  let buf = '';
  let closed = false;
  const conn = native().connectUnix(path, {
    data: (_c, data, fds) => {
      for (const fd of fds) closeSync(fd);
      buf += data.toString();
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        lines.push(buf.slice(0, nl));
        buf = buf.slice(nl + 1);
      }
    },
    close: () => (closed = true),
  });
  const next = async (count: number): Promise<Record<string, unknown>[]> => {
    const end = Date.now() + 30_000;
    while (lines.length < count && Date.now() < end && !closed) await sleep(10);
    return lines.splice(0, count).map((l) => JSON.parse(l) as Record<string, unknown>);
  };
  return { conn, next, closed: () => closed };
}

t.test('bad requests get an error reply naming the problem; the daemon stays up; nothing leaks', async (t) => {
  const dir = workDir(t);
  const img = sparseImage(join(dir, 'ok.img'), MiB);
  const folder = join(dir, 'folder');
  mkdirSync(folder);
  const fifo = join(dir, 'fifo');
  sh('mkfifo', [fifo]);
  const d = await startDaemon(t, dir);
  await d.admin().request({ op: 'instance.create', name: 'bad', max: 8 });
  const sock = join(d.root, 'instances', 'bad', 'control.sock');
  const c = raw(sock);
  t.teardown(() => c.conn.destroy());
  // warm up (first bind loads everything), then measure
  const imgFd = openSync(img, 'r+');
  const roFd = openSync(img, 'r');
  const dirFd = openSync(folder, 'r');
  const fifoFd = openSync(fifo, 'r+');
  const charFd = openSync('/dev/null', 'r+');
  t.teardown(() => [imgFd, roFd, dirFd, fifoFd, charFd].forEach((fd) => closeSync(fd)));
  c.conn.write('{"op":"bind","index":0}\n', [imgFd]);
  t.match(await c.next(1), [{ error: { code: 'ENODEV', message: /loop0 does not exist/ } }], 'bind of an index never added: ENODEV');
  c.conn.write('{"op":"bind","id":1}\n', [imgFd]);
  t.match(await c.next(1), [{ ok: true, id: 1, device: { index: 0, state: 'bound' } }], 'a good bind works');
  const ublkBefore = ublkCount();
  const fdsBefore = d.fdCount();

  const cases: [string, string, number[], string, RegExp][] = [
    ['unknown op', '{"op":"explode"}', [], 'ENOSYS', /unknown op "explode"/],
    ['malformed JSON', '{"op":"list",', [], 'EINVAL', /malformed JSON/],
    ['not an object', '"list"', [], 'EINVAL', /JSON object/],
    ['wrong field type', '{"op":"unbind","index":"zero"}', [], 'EINVAL', /"index" must be an integer, got "zero"/],
    ['negative index', '{"op":"bind","index":-3}', [imgFd], 'EINVAL', /negative index -3/],
    ['index beyond range', '{"op":"bind","index":1048576}', [imgFd], 'EINVAL', /beyond the last loop index 1048575/],
    ['ADD beyond range', '{"op":"loop.add","index":1048576}', [], 'EINVAL', /beyond the last loop index/],
    ['REMOVE negative', '{"op":"loop.remove","index":-1}', [], 'EINVAL', /negative index/],
    ['double bind', '{"op":"bind","index":0}', [imgFd], 'EBUSY', /loop0 is already bound/],
    ['directory fd', '{"op":"bind"}', [dirFd], 'EISDIR', /descriptor passed as the image is a directory/],
    ['pipe fd', '{"op":"bind"}', [fifoFd], 'EINVAL', /is a pipe, not an image file/],
    ['char device fd', '{"op":"bind"}', [charFd], 'EINVAL', /is a character device, not an image file/],
    ['read-only fd for a writable device', '{"op":"bind"}', [roFd], 'EBADF', /open read-only/],
    ['no fd', '{"op":"bind"}', [], 'EBADF', /descriptor passed with the request/],
    ['two fds', '{"op":"bind"}', [imgFd, imgFd], 'EINVAL', /one image descriptor, got 2/],
    ['fd on a request that takes none', '{"op":"list"}', [imgFd], 'EINVAL', /"list" takes no descriptor/],
    ['bind by path from an instance client (root may)', `{"op":"bind","path":${JSON.stringify(folder)}}`, [], 'EISDIR', /directory/],
    ['admin op on an instance socket', '{"op":"instance.create","name":"x"}', [], 'EPERM', /only root manages instances/],
    ['another instance by name', '{"op":"list","instance":"other"}', [], 'ENOENT', /no instance "other" on this socket/],
    ['unbind of an unbound index', '{"op":"unbind","index":1}', [], 'ENODEV', /loop1 does not exist/],
  ];
  for (const [what, line, fds, code, message] of cases) {
    c.conn.write(`${line}\n`, fds);
    const [reply] = await c.next(1);
    t.match(reply, { error: { code, message } }, `${what}: ${code}`);
  }

  c.conn.write(`{"op":"list","pad":"${'x'.repeat(200 * 1024)}"}\n{"op":"ping","id":"after"}\n`);
  const [huge, after] = await c.next(2);
  t.match(huge, { error: { code: 'EMSGSIZE', message: /longer than 65536 bytes/ } }, 'a huge line: EMSGSIZE');
  t.match(after, { ok: true, id: 'after' }, 'the next request on the same connection still works');
  const hugeWithFd = `{"op":"bind","pad":"${'y'.repeat(100 * 1024)}"}\n`;
  c.conn.write(hugeWithFd, [imgFd]);
  t.match(await c.next(1), [{ error: { code: 'EMSGSIZE' } }], 'a huge line with a descriptor: EMSGSIZE');

  // pieces of one request in separate writes still make one request
  c.conn.write('{"op":"li');
  await sleep(50);
  c.conn.write('st"}\n');
  t.match(await c.next(1), [{ ok: true, devices: [{ index: 0, state: 'bound' }] }], 'a request split across writes');

  await sleep(200);
  t.ok(d.alive(), 'the daemon is still running');
  t.equal(ublkCount(), ublkBefore, 'no ublk device was created by the bad requests');
  t.equal(d.fdCount(), fdsBefore, 'the daemon holds no more descriptors than before (passed fds were closed)');
  t.match(await d.admin().request({ op: 'ping' }), { ok: true }, 'the admin socket answers');
  t.same((await d.admin().request({ op: 'list', instance: 'bad' }))['devices'], [
    (await d.admin().request({ op: 'info', instance: 'bad', index: 0 }))['device'],
  ], 'the instance holds only the one good device');
});

t.test('a client that is not root is refused on the admin socket', async (t) => {
  const dir = workDir(t);
  const d = await startDaemon(t, dir);
  sh('chmod', ['0666', d.socket]);
  sh('chmod', ['0755', dir]);
  const r = d.cliAs(1001, 1001, ['instance', 'list']);
  t.not(r.status, 0);
  t.match(r.stderr, /the admin socket is for root only/, 'the peer credentials decide, not the socket mode');
  t.ok(d.alive());
});
