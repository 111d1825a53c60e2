// Newline-delimited framing for a stream that also carries descriptors (SCM_RIGHTS).
// Each complete line is handed on with the descriptors that were sent with it; a line
// longer than the limit is reported as soon as it passes the limit and then skipped up
// to its newline, so the connection stays usable and memory stays bounded.
//
// Which line do a chunk's descriptors belong to? The sender writes one request line per
// sendmsg, its descriptors attached (by the kernel) to the first skb of that write. On a
// unix stream socket one recvmsg (net/unix/af_unix.c, unix_stream_read_generic) may
// glue bytes of earlier descriptor-less writes in front of a write that carries
// descriptors, but it stops right after consuming the skb that carries them, or in the
// middle of it when the buffer is full, in which case the descriptors come with the
// first part of that write. So the descriptors of a chunk belong to the line holding the
// chunk's LAST byte: the line ended by the chunk's final newline when the chunk ends
// with one, otherwise the line still open at the end of the chunk (they then wait for
// its newline in a later chunk). Giving them to the first line completed after them
// instead hands them to an earlier pipelined request.
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
    // Start of the line holding the chunk's last byte: just after the last newline
    // before that byte (0 when that line began in an earlier chunk, or here at 0).
    const owner = chunk.length < 2 ? 0 : chunk.lastIndexOf(NEWLINE, chunk.length - 2) + 1;
    if (chunk.length === 0) this.#attach(fds);
    let start = 0;
    while (start < chunk.length) {
      if (start === owner) this.#attach(fds);
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

  /** Gives descriptors to the line being read now, or drops them if it is being skipped. */
  #attach(fds: readonly number[]): void {
    if (fds.length === 0) return;
    if (this.#skipping) this.#events.drop([...fds]);
    else this.#fds.push(...fds);
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
