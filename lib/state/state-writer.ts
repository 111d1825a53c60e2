// Keeps the state file in step with the daemon without writing it more than needed and
// without blocking the JS thread: every change marks the state dirty; the write (off
// the JS thread, see writeState) takes the state as it is when it starts, so changes
// that come while a write is in flight are merged into the next one.
//
// Changes made inside a request (`during`) are not written as they happen but once,
// when the request's work is done, and the request's reply waits for that write: a
// client that got a successful reply to instance.create/set/remove, loop.add/remove,
// get_free, bind or unbind knows the change survives a crash of the daemon. Changes
// made outside a request (the autoclear sweep, loop-control ioctls on the CUSE char
// device, which answer synchronously) are written as soon as possible, with nobody
// waiting for them.
import { AsyncLocalStorage } from 'node:async_hooks';
import type { StateData } from './state-data.js';
import { writeState } from './state-file.js';

export interface StateWriterOptions {
  path: string;
  /** The state as it is now (taken when a write starts). */
  take(): StateData;
  /** A write failed (the next change tries again). */
  failed(err: Error): void;
  /** How a write is done (default: writeState). */
  write?: (path: string, state: StateData) => Promise<void>;
}

export class StateWriter {
  readonly #o: StateWriterOptions;
  readonly #write: (path: string, state: StateData) => Promise<void>;
  readonly #requests = new AsyncLocalStorage<{ dirty: boolean; open: boolean }>();
  /** Count of changes so far, and how many of them are on disk. */
  #changes = 0;
  #written = 0;
  #running: Promise<void> | null = null;
  #closed = false;
  /** Writes done so far (for tests and measurements). */
  writes = 0;

  constructor(options: StateWriterOptions) {
    this.#o = options;
    this.#write = options.write ?? writeState;
  }

  /** Something persistent changed. */
  changed(): void {
    if (this.#closed) return;
    this.#changes++;
    // A callback set up during a request (a CUSE device, a socket server made by
    // instance.create) may run in that request's context long after it has ended.
    const request = this.#requests.getStore();
    if (request?.open) request.dirty = true;
    else this.#kick();
  }

  /** Runs a request's work; its changes are written once, before this resolves or rejects. */
  async during<T>(work: () => Promise<T>): Promise<T> {
    const request = { dirty: false, open: true };
    try {
      return await this.#requests.run(request, work);
    } finally {
      request.open = false;
      if (request.dirty) await this.flush();
    }
  }

  /** Resolves once every change made before the call is on disk (or its write failed). */
  async flush(): Promise<void> {
    const wanted = this.#changes;
    while (this.#written < wanted) {
      this.#kick();
      await this.#running;
    }
  }

  /** Writes what is pending, then ignores further changes (daemon shutdown). */
  async close(): Promise<void> {
    await this.flush();
    this.#closed = true;
  }

  #kick(): void {
    this.#running ??= this.#loop().finally(() => {
      this.#running = null;
    });
  }

  async #loop(): Promise<void> {
    // let the changes of the current turn of the event loop come together first
    await new Promise<void>((resolve) => setImmediate(resolve));
    while (this.#written < this.#changes) {
      const upTo = this.#changes;
      try {
        await this.#write(this.#o.path, this.#o.take());
      } catch (err) {
        this.#o.failed(err as Error);
      }
      this.writes++;
      this.#written = upTo;
    }
  }
}
