// Client side of the daemon protocol: one request line at a time, replies in order.
import { closeSync } from 'node:fs';
import { UbloopError, isSystemError } from '../errors.js';
import { LineReader, encodeLine } from '../protocol/line-reader.js';
import { isErrorReply, isOkReply, replyError, type OkReply } from '../protocol/reply.js';
import { isRecord } from '../protocol/fields.js';
import { ipc, type UnixConnection } from './native-ipc.js';

interface Pending {
  resolve(reply: OkReply & Record<string, unknown>): void;
  reject(err: Error): void;
}

export class DaemonClient {
  readonly path: string;
  readonly #conn: UnixConnection;
  readonly #pending: Pending[] = [];
  #closed = false;

  private constructor(path: string, conn: (client: DaemonClient) => UnixConnection) {
    this.path = path;
    this.#conn = conn(this);
  }

  /** Connects to a daemon socket; errors say what to check. */
  static connect(path: string): DaemonClient {
    try {
      return new DaemonClient(path, (client) => {
        const reader = new LineReader({
          line: (l) => client.#onLine(l.text),
          overlong: () => client.#failAll(new UbloopError('EMSGSIZE', 'reply line too long')),
          drop: () => undefined,
        }, 64 * 1024 * 1024);
        return ipc().connectUnix(path, {
          data: (_c, data, fds) => {
            for (const fd of fds) closeSync(fd); // the daemon never sends any
            reader.push(data);
          },
          close: () => {
            client.#closed = true;
            client.#failAll(new UbloopError('ECONNRESET', `the daemon closed the connection (${path})`));
          },
        });
      });
    } catch (err) {
      if (!isSystemError(err)) throw err;
      if (err.code === 'ENOENT' || err.code === 'ECONNREFUSED') {
        throw new UbloopError(err.code, `no daemon answers at ${path} (is "ubloop daemon" running, and does the instance exist?)`);
      }
      if (err.code === 'EACCES') throw new UbloopError('EACCES', `permission denied: ${path}`);
      throw err;
    }
  }

  /** Sends one request (with descriptors, which are duplicated at once) and waits for its reply. */
  request(message: Record<string, unknown>, fds: number[] = []): Promise<OkReply & Record<string, unknown>> {
    if (this.#closed) return Promise.reject(new UbloopError('ECONNRESET', `connection to ${this.path} is closed`));
    return new Promise((resolve, reject) => {
      this.#pending.push({ resolve, reject });
      this.#conn.write(encodeLine(message), fds);
    });
  }

  close(): void {
    this.#closed = true;
    this.#conn.destroy();
  }

  #onLine(text: string): void {
    const p = this.#pending.shift();
    if (!p) return;
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch {
      p.reject(new UbloopError('EPROTO', `the daemon sent a malformed reply: ${text.slice(0, 80)}`));
      return;
    }
    if (isErrorReply(value)) p.reject(replyError(value));
    else if (isOkReply(value) && isRecord(value)) p.resolve(value as OkReply & Record<string, unknown>);
    else p.reject(new UbloopError('EPROTO', `the daemon sent an unexpected reply: ${text.slice(0, 80)}`));
  }

  #failAll(err: Error): void {
    for (const p of this.#pending.splice(0)) p.reject(err);
  }
}
