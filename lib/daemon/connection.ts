// One client connection: newline-delimited JSON requests handled one after another,
// each answered with one reply line; descriptors that came with a request are closed
// once it has been handled, whatever the outcome.
import { closeSync } from 'node:fs';
import { UbloopError } from '../errors.js';
import type { Caller } from '../instance/caller.js';
import { LineReader, encodeLine, type Line } from '../protocol/line-reader.js';
import { MAX_LINE_BYTES } from '../protocol/limits.js';
import { errorBody, type Reply } from '../protocol/reply.js';
import { parseRequest, type Request } from '../protocol/request.js';
import type { UnixConnection } from './native-ipc.js';

export type Scope = { kind: 'admin' } | { kind: 'instance'; name: string };

export interface RequestContext {
  caller: Caller;
  scope: Scope;
  /** Descriptors received with the request; closed by the connection afterwards. */
  fds: readonly number[];
}

export type RequestHandler = (request: Request, ctx: RequestContext) => Promise<object>;

let nextConnection = 1;

function closeAll(fds: readonly number[]): void {
  for (const fd of fds) {
    try {
      closeSync(fd);
    } catch {
      // already closed
    }
  }
}

export class Connection {
  readonly caller: Caller;
  readonly #conn: UnixConnection;
  readonly #scope: Scope;
  readonly #handle: RequestHandler;
  readonly #reader: LineReader;
  #queue: Promise<void> = Promise.resolve();
  #closed = false;
  #refusal: UbloopError | null = null;

  constructor(conn: UnixConnection, scope: Scope, handle: RequestHandler) {
    this.#conn = conn;
    this.#scope = scope;
    this.#handle = handle;
    const { pid, uid, gid } = conn.peer;
    this.caller = { pid, uid, gid, key: `conn:${nextConnection++}` };
    this.#reader = new LineReader({
      line: (line) => this.#enqueue(line),
      overlong: (fds) => {
        closeAll(fds);
        if (this.#refusal) {
          this.#enqueue({ text: '', fds: [] });
          return;
        }
        this.#enqueueReply({
          error: errorBody(new UbloopError('EMSGSIZE', `request line longer than ${MAX_LINE_BYTES} bytes; it is skipped up to its newline`)),
        });
      },
      drop: closeAll,
    });
  }

  get closed(): boolean {
    return this.#closed;
  }

  data(chunk: Buffer, fds: number[]): void {
    if (this.#closed) {
      closeAll(fds);
      return;
    }
    this.#reader.push(chunk, fds);
  }

  /** The peer went away: drop what was still arriving. */
  closedByPeer(): void {
    this.#closed = true;
    closeAll(this.#reader.takePendingFds());
  }

  /**
   * Refuses the connection: its first request is answered with this error, then it is
   * closed. (Answering before the client has written could lose the reply: a client
   * writing to a socket closed under it may see the reset before the reply.)
   */
  refuse(err: UbloopError): void {
    this.#refusal = err;
  }

  #enqueueReply(reply: Reply): void {
    this.#queue = this.#queue.then(() => this.#send(reply));
  }

  #enqueue(line: Line): void {
    this.#queue = this.#queue.then(() => this.#run(line));
  }

  async #run(line: Line): Promise<void> {
    if (this.#refusal) {
      closeAll(line.fds);
      this.#send({ error: errorBody(this.#refusal) });
      this.#conn.end();
      this.#closed = true;
      return;
    }
    const parsed = parseRequest(line.text);
    const id = parsed.id === undefined ? {} : { id: parsed.id };
    let reply: Reply;
    try {
      if (parsed.error || !parsed.request) throw parsed.error ?? new UbloopError('EINVAL', 'bad request');
      const result = await this.#handle(parsed.request, { caller: this.caller, scope: this.#scope, fds: line.fds });
      reply = { ok: true, ...id, ...result };
    } catch (err) {
      reply = { ...id, error: errorBody(err) };
    } finally {
      closeAll(line.fds);
    }
    this.#send(reply);
  }

  #send(reply: Reply): void {
    if (this.#closed) return;
    try {
      this.#conn.write(encodeLine(reply));
    } catch {
      this.#closed = true;
    }
  }
}
