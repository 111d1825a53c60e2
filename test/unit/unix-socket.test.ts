// The native unix stream sockets the daemon's control and instance sockets run on: a
// round trip, the peer's credentials, descriptors passed with SCM_RIGHTS, large and
// many writes, hang-ups and errors.
import t, { type Test } from 'tap';
import { closeSync, existsSync, openSync, readFileSync, readdirSync, statSync, writeSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { native } from '../../lib/native.js';
import type { NativeUnixConnection, NativeUnixHandlers } from '../../lib/native.js';

const dir = mkdtempSync(join(tmpdir(), 'ubloop-sock-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
let n = 0;
const sockPath = () => join(dir, `s${n++}.sock`);

/** Records what a connection receives; resolves `closed` when its close callback runs. */
class Recorder implements NativeUnixHandlers {
  chunks: Buffer[] = [];
  fds: number[] = [];
  closeCalls = 0;
  conn: NativeUnixConnection | undefined;
  closed: Promise<void>;
  private resolveClosed!: () => void;
  private waiters: { bytes: number; resolve: () => void }[] = [];
  onData?: (conn: NativeUnixConnection, data: Buffer, fds: number[]) => void;

  constructor() {
    this.closed = new Promise((r) => (this.resolveClosed = r));
  }
  get bytes(): number {
    return this.chunks.reduce((a, c) => a + c.length, 0);
  }
  text(): string {
    return Buffer.concat(this.chunks).toString();
  }
  data = (conn: NativeUnixConnection, data: Buffer, fds: number[]): void => {
    this.conn = conn;
    this.chunks.push(data);
    this.fds.push(...fds);
    this.onData?.(conn, data, fds);
    this.waiters = this.waiters.filter((w) => (this.bytes >= w.bytes ? (w.resolve(), false) : true));
  };
  close = (conn: NativeUnixConnection): void => {
    this.conn = conn;
    this.closeCalls++;
    this.resolveClosed();
  };
  /** Resolves once at least `bytes` bytes have arrived. */
  until(bytes: number): Promise<void> {
    if (this.bytes >= bytes) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push({ bytes, resolve }));
  }
}

/** A listening server whose accepted connections share one Recorder. */
function serve(path: string, mode = 0o600) {
  const rec = new Recorder();
  const accepted: NativeUnixConnection[] = [];
  let onAccept: (c: NativeUnixConnection) => void = () => {};
  const accept = new Promise<NativeUnixConnection>((r) => (onAccept = r));
  const server = native().listenUnix(
    path,
    mode,
    (c) => {
      accepted.push(c);
      onAccept(c);
    },
    rec,
  );
  return { server, rec, accepted, accept };
}

const tick = () => new Promise((r) => setTimeout(r, 20));

t.test('round trip: client and server exchange bytes; strings are UTF-8', async (t) => {
  const path = sockPath();
  const { server, rec, accept } = serve(path, 0o660);
  t.equal(server.path, path);
  t.equal(statSync(path).mode & 0o7777, 0o660, 'socket file has the requested mode');
  t.ok(statSync(path).isSocket(), 'path is a socket');

  const client = new Recorder();
  const conn = native().connectUnix(path, client);
  const served = await accept;
  conn.write('ping ✓');
  await rec.until(Buffer.byteLength('ping ✓'));
  t.equal(rec.text(), 'ping ✓', 'server received the client bytes');
  t.equal(rec.conn, served, 'data callback gets the accepted connection object');

  served.write(new Uint8Array([1, 2, 3, 250]));
  await client.until(4);
  t.same([...Buffer.concat(client.chunks)], [1, 2, 3, 250], 'client received the server bytes');
  t.equal(client.conn, conn, 'data callback gets the client connection object');

  conn.destroy();
  server.close();
  await rec.closed;
  await client.closed;
});

t.test('peer credentials are those of the process at the other end', async (t) => {
  const path = sockPath();
  const { server, rec, accept } = serve(path);
  const client = new Recorder();
  const conn = native().connectUnix(path, client);
  const served = await accept;
  const me = { pid: process.pid, uid: process.getuid?.() ?? -1, gid: process.getgid?.() ?? -1 };
  t.same(served.peer, me, 'server sees the client pid/uid/gid');
  t.same(conn.peer, me, 'client sees the server pid/uid/gid');
  conn.destroy();
  server.close();
  await rec.closed;
});

t.test('an fd passed from client to server refers to the same open file', async (t) => {
  const path = sockPath();
  const { server, rec, accept } = serve(path);
  const client = new Recorder();
  const conn = native().connectUnix(path, client);
  await accept;

  const file = join(dir, 'passed.txt');
  const fd = openSync(file, 'w+');
  conn.write('F', [fd]);
  closeSync(fd); // the connection sends its own duplicate: ours may go at once
  await rec.until(1);
  t.equal(rec.fds.length, 1, 'one fd arrived with the byte');
  const got = rec.fds[0] as number;
  writeSync(got, 'written through the passed fd');
  closeSync(got);
  t.equal(readFileSync(file, 'utf8'), 'written through the passed fd', 'same file, read back by path');

  // several at once, and a second message: each set arrives with its own bytes
  const a = openSync(file, 'r');
  const b = openSync(file, 'r');
  conn.write('AB', [a, b]);
  conn.write('C');
  closeSync(a);
  closeSync(b);
  await rec.until(4);
  t.equal(rec.fds.length, 3, 'two more fds');
  for (const f of rec.fds.slice(1)) closeSync(f);
  t.equal(rec.text(), 'FABC');

  t.throws(() => conn.write('', [1]), RangeError, 'fds without bytes are refused');
  t.throws(() => conn.write('x', [-1]), TypeError, 'a negative fd is refused');
  t.throws(() => conn.write('x', [987654]), { code: 'EBADF', syscall: 'dup' }, 'a closed fd is refused');
  conn.destroy();
  server.close();
  await rec.closed;
});

t.test('received fds are close-on-exec', async (t) => {
  const path = sockPath();
  const { server, rec, accept } = serve(path);
  const conn = native().connectUnix(path, new Recorder());
  await accept;
  const fd = openSync(join(dir, 'cloexec.txt'), 'w');
  conn.write('x', [fd]);
  closeSync(fd);
  await rec.until(1);
  const got = rec.fds[0] as number;
  const flags = readFileSync(`/proc/self/fdinfo/${got}`, 'utf8');
  const m = /^flags:\s+([0-7]+)/m.exec(flags);
  t.ok(m, 'fdinfo has flags');
  t.ok((parseInt(m?.[1] ?? '0', 8) & 0o2000000) !== 0, 'O_CLOEXEC is set');
  closeSync(got);
  conn.destroy();
  server.close();
  await rec.closed;
});

t.test('many messages and one large write arrive complete and in order', async (t) => {
  const path = sockPath();
  const { server, rec, accept } = serve(path);
  const conn = native().connectUnix(path, new Recorder());
  await accept;
  let expected = '';
  for (let i = 0; i < 2000; i++) {
    const line = `message ${i}\n`;
    conn.write(line);
    expected += line;
  }
  // 16 MiB: far beyond the socket buffer, so most of it waits in the queue for POLLOUT
  const big = Buffer.alloc(16 * 1024 * 1024);
  for (let i = 0; i < big.length; i += 4096) big.writeUInt32LE(i, i);
  conn.write(big);
  conn.write('tail');
  await rec.until(Buffer.byteLength(expected) + big.length + 4);
  const all = Buffer.concat(rec.chunks);
  t.equal(all.subarray(0, Buffer.byteLength(expected)).toString(), expected, '2000 lines in order');
  const hash = (b: Buffer) => createHash('sha256').update(b).digest('hex');
  t.equal(hash(all.subarray(Buffer.byteLength(expected), all.length - 4)), hash(big), '16 MiB intact');
  t.equal(all.subarray(all.length - 4).toString(), 'tail');
  t.ok(rec.chunks.length > 1, `arrived in ${rec.chunks.length} chunks`);
  conn.destroy();
  server.close();
  await rec.closed;
});

t.test('peer close calls close exactly once; end() flushes first', async (t) => {
  const path = sockPath();
  const { server, rec, accept } = serve(path);
  const client = new Recorder();
  const conn = native().connectUnix(path, client);
  const served = await accept;
  const big = Buffer.alloc(4 * 1024 * 1024, 7);
  served.write(big);
  served.end();
  served.write('dropped after end');
  await client.closed;
  t.equal(client.bytes, big.length, 'the client got every byte written before end()');
  await rec.closed;
  t.equal(rec.closeCalls, 1, 'server side closed once');
  // destroy after close, twice: nothing more happens
  conn.destroy();
  conn.destroy();
  served.destroy();
  await tick();
  t.equal(client.closeCalls, 1, 'client close callback ran exactly once');
  t.equal(rec.closeCalls, 1, 'server close callback still once');
  t.doesNotThrow(() => conn.write('after close'), 'write after close is ignored');
  server.close();
});

t.test('destroy from inside the data callback stops delivery', async (t) => {
  const path = sockPath();
  const { server, rec, accept } = serve(path);
  const conn = native().connectUnix(path, new Recorder());
  await accept;
  let calls = 0;
  rec.onData = (c) => {
    calls++;
    c.destroy();
  };
  for (let i = 0; i < 100; i++) conn.write('x'.repeat(1000));
  await rec.closed;
  await tick();
  t.equal(calls, 1, 'no data callback after destroy()');
  t.equal(rec.closeCalls, 1);
  conn.destroy();
  server.close();
});

t.test('server close unlinks the path and refuses new clients; idempotent', async (t) => {
  const path = sockPath();
  const { server } = serve(path);
  t.ok(existsSync(path));
  server.close();
  t.notOk(existsSync(path), 'socket path removed');
  t.doesNotThrow(() => server.close(), 'second close is harmless');
  t.throws(() => native().connectUnix(path, new Recorder()), { code: 'ENOENT', syscall: 'connect' });
});

t.test('stale socket is replaced; a live one is refused', async (t) => {
  const path = sockPath();
  const first = serve(path);
  t.throws(() => serve(path), { code: 'EADDRINUSE' }, 'a server is answering there');
  first.server.close();
  // leave a stale socket file behind: bind one and close it without unlinking
  const { execFileSync } = await import('node:child_process');
  execFileSync(process.execPath, ['-e', `require('net').createServer().listen(${JSON.stringify(path)}, () => process.exit(0))`]);
  t.ok(existsSync(path), 'stale socket file exists');
  const second = serve(path);
  const conn = native().connectUnix(path, new Recorder());
  await second.accept;
  conn.destroy();
  second.server.close();
  await second.rec.closed;
});

t.test('errors are Error objects with code, errno and syscall', async (t) => {
  const missing = join(dir, 'nope.sock');
  const err = (() => {
    try {
      native().connectUnix(missing, new Recorder());
    } catch (e) {
      return e;
    }
    return undefined;
  })();
  t.type(err, Error);
  t.match(err, { code: 'ENOENT', errno: -2, syscall: 'connect' });
  t.match((err as Error).message, /nope\.sock/, 'message names the path');
  t.throws(() => native().listenUnix(join(dir, 'x'.repeat(200)), 0o600, () => {}, new Recorder()), {
    code: 'ENAMETOOLONG',
  });
  t.throws(() => native().listenUnix(join(dir, 'no-such-dir', 's.sock'), 0o600, () => {}, new Recorder()), {
    code: 'ENOENT',
    syscall: 'bind',
  });
  t.throws(() => native().connectUnix(missing, {} as NativeUnixHandlers), TypeError, 'handlers are checked');
});

t.test('a server out of descriptors hangs up on the waiting client instead of spinning', async (t) => {
  const path = sockPath();
  const addon = fileURLToPath(new URL('../../build/Release/ubloop.node', import.meta.url));
  const script = `
    const b = require(process.argv[1]);
    const fs = require('fs');
    b.listenUnix(process.argv[2], 0o600, () => console.log('accepted'), { data() {}, close() {} });
    const held = [];
    try { for (;;) held.push(fs.openSync('/dev/null', 'r')); } catch (e) { console.log('full ' + e.code); }`;
  const child = spawn(process.execPath, ['-e', script, addon, path], { env: { PATH: process.env['PATH'] ?? '' } });
  t.teardown(() => void child.kill('SIGKILL'));
  let out = '';
  await new Promise<void>((resolve) =>
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('full')) resolve();
    }),
  );
  t.match(out, /full EMFILE/, 'the server process ran out of descriptors');
  const rec = new Recorder();
  const conn = native().connectUnix(path, rec);
  const hungUp = await Promise.race([rec.closed.then(() => true), new Promise((r) => setTimeout(() => r(false), 5000))]);
  t.ok(hungUp, 'the client was hung up on while the server is still running');
  t.equal(child.exitCode, null, 'the server process is still alive');
  t.notMatch(out, /accepted/, 'no connection object was made for it');
  conn.destroy();
});

const openFds = () => readdirSync('/proc/self/fd').length;

/** The open-descriptor count once earlier tests' sockets (closed on later loop turns) are gone. */
async function settledFds(): Promise<number> {
  let last = openFds();
  for (let i = 0; i < 50; i++) {
    await tick();
    const now = openFds();
    if (now === last) return now;
    last = now;
  }
  return last;
}

/** Fails when the count grew (by how much, in the message). */
function noGrowth(t: Test, before: number, what: string): void {
  const grown = openFds() - before;
  t.ok(grown <= 0, `${what}: ${grown > 0 ? `${grown} descriptors leaked` : 'none left behind'}`);
}

/** Handlers that pass the first check (in connectUnix/listenUnix) and fail the next one (in the constructor). */
function handlersThatTurnBad(): NativeUnixHandlers {
  let reads = 0;
  const rec = new Recorder();
  return {
    get data() {
      return reads++ === 0 ? rec.data : (undefined as unknown as NativeUnixHandlers['data']);
    },
    close: rec.close,
  };
}

t.test('a connection whose handlers fail validation closes its descriptor', async (t) => {
  const path = sockPath();
  const { server, accepted } = serve(path);
  const before = await settledFds();
  for (let i = 0; i < 50; i++) {
    t.throws(() => native().connectUnix(path, handlersThatTurnBad()), TypeError);
  }
  // the server side is ours too: let it accept every client, then close those
  for (let i = 0; i < 250 && accepted.length < 50; i++) await tick();
  t.equal(accepted.length, 50, 'the server accepted each client');
  for (const c of accepted.splice(0)) c.destroy();
  noGrowth(t, before, 'descriptors');
  server.close();
});

t.test('a server whose handlers fail validation closes its socket', async (t) => {
  const before = await settledFds();
  for (let i = 0; i < 50; i++) {
    const path = sockPath();
    t.throws(() => native().listenUnix(path, 0o600, () => {}, handlersThatTurnBad()), TypeError);
    t.notOk(existsSync(path), 'its path is removed');
  }
  noGrowth(t, before, 'descriptors');
});

t.test('a connection accepted with handlers that went bad is closed, not leaked', async (t) => {
  const path = sockPath();
  const handlers: { data?: NativeUnixHandlers['data']; close: NativeUnixHandlers['close'] } = { ...new Recorder() };
  let accepts = 0;
  const server = native().listenUnix(path, 0o600, () => accepts++, handlers as NativeUnixHandlers);
  delete handlers.data; // checked again for each accepted connection
  const before = await settledFds();
  const clients: Recorder[] = [];
  const conns: NativeUnixConnection[] = [];
  for (let i = 0; i < 50; i++) {
    const rec = new Recorder();
    clients.push(rec);
    conns.push(native().connectUnix(path, rec));
  }
  await Promise.race([Promise.all(clients.map((c) => c.closed)), new Promise((r) => setTimeout(r, 5000))]);
  await tick();
  t.equal(accepts, 0, 'no connection object was made');
  t.equal(clients.filter((c) => c.closeCalls === 1).length, 50, 'every client was hung up on');
  noGrowth(t, before, 'descriptors on either side');
  for (const c of conns) c.destroy();
  server.close();
});
