// Descriptors reach the request they were sent with, over a real unix socket: the
// native socket (one recvmsg per data callback) feeding a daemon Connection, and the
// client writing several requests in one tick.
import t, { type Test } from 'tap';
import { closeSync, mkdtempSync, openSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Connection } from '../../lib/daemon/connection.js';
import { DaemonClient } from '../../lib/daemon/client.js';
import { native } from '../../lib/native.js';

const dir = mkdtempSync(join(tmpdir(), 'ubloop-fds-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
const image = join(dir, 'img');
writeFileSync(image, 'x');

/** A server whose connections answer each request with its op and how many fds it got. */
function serve(path: string) {
  const byNative = new Map<unknown, Connection>();
  const server = native().listenUnix(
    path,
    0o600,
    (conn) => byNative.set(conn, new Connection(conn, { kind: 'admin' }, async (req, ctx) => ({ op: req.op, fds: ctx.fds.length }))),
    {
      data: (conn, data, fds) => byNative.get(conn)?.data(data, fds),
      close: (conn) => {
        byNative.get(conn)?.closedByPeer();
        byNative.delete(conn);
      },
    },
  );
  return server;
}

/** A server on `name` in the test directory and a client connected to it, both closed at teardown. */
function connected(t: Test, name: string): DaemonClient {
  const path = join(dir, name);
  const server = serve(path);
  const client = DaemonClient.connect(path);
  t.teardown(() => {
    client.close();
    server.close();
  });
  return client;
}

t.test('list then bind with an fd, written in one tick', async (t) => {
  const client = connected(t, 'a.sock');
  for (let round = 0; round < 20; round++) {
    const fd = openSync(image, 'r+');
    const replies = await Promise.all([client.request({ op: 'list', id: 1 }), client.request({ op: 'bind', id: 2 }, [fd])]);
    closeSync(fd);
    t.match(replies, [{ id: 1, op: 'list', fds: 0 }, { id: 2, op: 'bind', fds: 1 }], `round ${round}`);
  }
});

t.test('two binds back to back, one fd each', async (t) => {
  const client = connected(t, 'b.sock');
  for (let round = 0; round < 20; round++) {
    const a = openSync(image, 'r+');
    const b = openSync(image, 'r+');
    const replies = await Promise.all([
      client.request({ op: 'bind', id: 1 }, [a]),
      client.request({ op: 'ping', id: 2 }),
      client.request({ op: 'bind', id: 3 }, [b]),
    ]);
    closeSync(a);
    closeSync(b);
    t.match(replies, [{ id: 1, fds: 1 }, { id: 2, fds: 0 }, { id: 3, fds: 1 }], `round ${round}`);
  }
});
