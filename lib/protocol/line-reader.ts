// Newline-delimited framing for a stream that also carries descriptors (SCM_RIGHTS).
// Each complete line is handed on with the descriptors that arrived with its bytes;
// a line longer than the limit is reported as soon as it passes the limit and then
// skipped up to its newline, so the connection stays usable and memory stays bounded.
import { MAX_LINE_BYTES } from './limits.js';

export interface Line {
  text: string;
  /** Descriptors received with this line's bytes; the consumer owns (and must close) them. */
  fds: number[];
}

export interface LineEvents {
  line(line: Line): void;
  /** A line passed the limit (reported once per line); `fds` came with it and are the consumer's to close. */
  overlong(fds: number[]): void;
  /** Descriptors that arrived with the rest of a skipped line; the consumer closes them. */
  drop(fds: number[]): void;
}

const NEWLINE = 0x0a;

export class LineReader {
  readonly #max: number;
  readonly #events: LineEvents;
  #parts: Buffer[] = [];
  #partBytes = 0;
  #fds: number[] = [];
  /** Skipping the rest of an overlong line. */
  #skipping = false;

  constructor(events: LineEvents, maxLineBytes = MAX_LINE_BYTES) {
    this.#events = events;
    this.#max = maxLineBytes;
  }

  /** Feeds a chunk and the descriptors received with it. */
  push(chunk: Buffer, fds: readonly number[] = []): void {
    if (this.#skipping) {
      if (fds.length > 0) this.#events.drop([...fds]);
    } else {
      this.#fds.push(...fds);
    }
    let start = 0;
    while (start < chunk.length) {
      const nl = chunk.indexOf(NEWLINE, start);
      const end = nl === -1 ? chunk.length : nl;
      const piece = chunk.subarray(start, end);
      if (this.#skipping) {
        // still inside the overlong line
      } else if (this.#partBytes + piece.length > this.#max) {
        this.#skipping = true;
        this.#parts = [];
        this.#partBytes = 0;
        const taken = this.#fds;
        this.#fds = [];
        this.#events.overlong(taken);
      } else if (piece.length > 0) {
        this.#parts.push(Buffer.from(piece));
        this.#partBytes += piece.length;
      }
      if (nl === -1) break;
      this.#finishLine();
      start = nl + 1;
    }
  }

  #finishLine(): void {
    if (this.#skipping) {
      this.#skipping = false;
      return;
    }
    const fds = this.#fds;
    this.#fds = [];
    const text = Buffer.concat(this.#parts, this.#partBytes).toString('utf8');
    this.#parts = [];
    this.#partBytes = 0;
    if (text.trim() === '' && fds.length === 0) return;
    this.#events.line({ text, fds });
  }

  /** Descriptors still waiting for the end of their line (to close when the peer goes away). */
  takePendingFds(): number[] {
    const fds = this.#fds;
    this.#fds = [];
    return fds;
  }
}

/** Encodes one message as a line. */
export function encodeLine(message: object): string {
  return `${JSON.stringify(message)}\n`;
}
