// A seeded mutation fuzzer for the daemon's sockets (admin and instance control.sock):
// valid requests of every op, mutated (wrong types, huge and negative numbers, unknown
// fields, long strings, deep nesting), framed badly (truncated, split over writes, many
// in one write, invalid UTF-8, a line past the limit), with confusing descriptors
// (none, several, a socket, a directory, an O_PATH fd, a pipe, a char device, a ublk
// char device). Every case is followed by a `ping` with a sync id: the fuzzer then
// expects exactly one well-formed reply per line it completed, and the sync reply, within
// a bound, or a closed connection. Everything follows from the seed.
import { closeSync, existsSync, mkdirSync, openSync, readdirSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { ipc, type UnixConnection } from '../../lib/daemon/native-ipc.js';
import { MAX_LINE_BYTES } from '../../lib/protocol/limits.js';
import { Rng } from './random.js';

const INTERESTING_NUMBERS = [
  0, 1, -1, 2, 7, 255, 256, 4095, 4096, 65535, 65536, 2 ** 20 - 1, 2 ** 20, 2 ** 31 - 1, 2 ** 31, -(2 ** 31), 2 ** 32 - 1, 2 ** 32,
  2 ** 53 - 1, 2 ** 53, -(2 ** 53), 2 ** 64, 1e308, -1e308, 0.5, -0.5, 1e-300, 5e-324,
];

const OPS = [
  'ping', 'list', 'info', 'loop.add', 'loop.remove', 'loop.get_free', 'loop.ioctl', 'bind', 'unbind', 'resize',
  'instance.create', 'instance.set', 'instance.list', 'instance.remove',
] as const;

/** Names the fuzzer's instances take: it never touches the instance it fuzzes through. */
export const FUZZ_NAMES = ['fz-a', 'fz-b', 'fz-c'];

export interface FuzzTarget {
  /** The socket path. */
  path: string;
  /** Its instance's name, for instance sockets. */
  instance?: string;
}

export interface FuzzOptions {
  seed: number;
  /** Socket inputs (fuzz cases) in all. */
  inputs: number;
  targets: FuzzTarget[];
  /** A writable directory for the image, the FIFO, the socket. */
  dir: string;
  /** How long a reply may take (ms) before it counts as a hang. */
  replyBoundMs?: number;
  /** Chance that a bind carries the real image (creates a ublk device). */
  bindImageChance?: number;
}

export interface FuzzReport {
  inputs: number;
  lines: number;
  replies: number;
  errors: Record<string, number>;
  ok: number;
  closedByDaemon: number;
  /** Broken invariants (empty when all held). */
  failures: string[];
  ms: number;
}

/** Descriptors of every kind the fuzzer passes, opened once. */
interface Fds {
  image: number;
  all: { name: string; fd: number }[];
  /** Adds a /dev/ublkcN (O_PATH) once one exists: the daemon's own, passing it must do no harm. */
  findUblkChar(): void;
  close(): void;
}

const O_PATH = 0o10000000;

async function openFds(dir: string): Promise<{ fds: Fds; server: Server }> {
  const image = join(dir, 'fuzz.img');
  writeFileSync(image, Buffer.alloc(1 << 20));
  const fifo = join(dir, 'fuzz.fifo');
  const sub = join(dir, 'fuzz.dir');
  mkdirSync(sub, { recursive: true });
  if (!existsSync(fifo)) {
    const { spawnSync } = await import('node:child_process');
    spawnSync('mkfifo', [fifo]);
  }
  const server = createServer();
  const sockPath = join(dir, 'fuzz.sock');
  await new Promise<void>((r) => server.listen(sockPath, r));
  const serverFd = (server as unknown as { _handle: { fd: number } })._handle.fd;
  const all: { name: string; fd: number }[] = [
    { name: 'image', fd: openSync(image, 'r+') },
    { name: 'image-ro', fd: openSync(image, 'r') },
    { name: 'directory', fd: openSync(sub, 'r') },
    { name: 'O_PATH', fd: openSync(image, O_PATH) },
    { name: 'O_PATH-dir', fd: openSync(sub, O_PATH) },
    { name: 'pipe', fd: openSync(fifo, 'r+') },
    { name: 'char-device', fd: openSync('/dev/null', 'r+') },
    { name: 'socket', fd: serverFd },
  ];
  const imageFd = all[0]?.fd as number;
  return {
    server,
    fds: {
      image: imageFd,
      all,
      findUblkChar: () => {
        if (all.some((f) => f.name.startsWith('ublkc'))) return;
        try {
          const c = readdirSync('/dev').find((n) => /^ublkc\d+$/.test(n));
          if (c) all.push({ name: c, fd: openSync(join('/dev', c), O_PATH) });
        } catch {
          // gone meanwhile
        }
      },
      close: () => {
        for (const { fd, name } of all) if (name !== 'socket') closeSync(fd);
      },
    },
  };
}

function randomString(rng: Rng, max: number): string {
  const len = rng.chance(0.1) ? rng.int(max) : rng.int(12);
  const alphabets = ['abcdefghijklmnopqrstuvwxyz0123456789', '-._/', '\u0000\u0001\u001f"\\\n\r\t', 'é€😀\u2028\u2029\ufeff\ud800'];
  let s = '';
  for (let i = 0; i < len; i++) {
    const a = rng.pick(alphabets);
    s += a[rng.int(a.length)];
  }
  return s;
}

function randomValue(rng: Rng, depth = 0): unknown {
  switch (rng.int(depth > 3 ? 5 : 8)) {
    case 0: return rng.pick(INTERESTING_NUMBERS);
    case 1: return rng.int(2 ** 31) * (rng.chance(0.5) ? -1 : 1);
    case 2: return randomString(rng, 300);
    case 3: return rng.chance(0.5);
    case 4: return null;
    case 5: return Array.from({ length: rng.int(4) }, () => randomValue(rng, depth + 1));
    case 6: return Object.fromEntries(Array.from({ length: rng.int(4) }, () => [randomString(rng, 20), randomValue(rng, depth + 1)]));
    default: return rng.pick(OPS);
  }
}

/** A valid request of one op (names from the fuzzer's own pool). */
function validRequest(rng: Rng, op: (typeof OPS)[number], target: FuzzTarget): Record<string, unknown> {
  const index = rng.chance(0.7) ? rng.int(8) : rng.pick(INTERESTING_NUMBERS);
  const inst = target.instance === undefined ? { instance: rng.chance(0.8) ? 'fz-base' : rng.pick(FUZZ_NAMES) } : rng.chance(0.2) ? { instance: target.instance } : {};
  switch (op) {
    case 'ping': case 'instance.list': return { op };
    case 'list': return rng.chance(0.5) ? { op } : { op, ...inst };
    case 'info': case 'loop.add': case 'loop.remove': case 'unbind': return { op, ...inst, index };
    case 'loop.get_free': return { op, ...inst };
    case 'loop.ioctl': return { op, ...inst, cmd: rng.chance(0.7) ? 0x4c80 + rng.int(4) : rng.int(2 ** 32), arg: rng.pick(INTERESTING_NUMBERS) };
    case 'bind': {
      const opts: Record<string, unknown> = {};
      if (rng.chance(0.3)) opts['depth'] = rng.pick([1, 2, 16, 64, 128, 4096]);
      if (rng.chance(0.2)) opts['queues'] = rng.pick([1, 2, 64]);
      if (rng.chance(0.2)) opts['readOnly'] = rng.chance(0.5);
      if (rng.chance(0.2)) opts['autoclear'] = rng.chance(0.5);
      if (rng.chance(0.1)) opts['path'] = rng.pick(['/dev/null', '/nonexistent', '/', '/proc/self/mem']);
      return { op, ...inst, ...(rng.chance(0.5) ? { index } : {}), ...opts };
    }
    case 'resize': return { op, ...inst, index, ...(rng.chance(0.5) ? { size: rng.pick([512, 4096, 1 << 20, 2 ** 53 - 1]) } : {}) };
    case 'instance.create': return { op, name: rng.pick(FUZZ_NAMES), ...(rng.chance(0.5) ? { max: rng.int(8) } : {}), ...(rng.chance(0.3) ? { maxDepth: rng.pick([1, 64, 4096]) } : {}) };
    case 'instance.set': return { op, name: rng.pick(FUZZ_NAMES), max: rng.int(8), ...(rng.chance(0.3) ? { maxMemory: rng.pick([0, 1 << 30, null]) } : {}) };
    case 'instance.remove': return { op, name: rng.pick(FUZZ_NAMES), force: rng.chance(0.5) };
  }
}

function mutate(rng: Rng, req: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = { ...req };
  const keys = Object.keys(out);
  const n = 1 + rng.int(3);
  for (let i = 0; i < n; i++) {
    switch (rng.int(7)) {
      case 0: if (keys.length) out[rng.pick(keys)] = randomValue(rng); break;
      case 1: out[randomString(rng, 30) || 'x'] = randomValue(rng); break; // unknown field
      case 2: if (keys.length) delete out[rng.pick(keys)]; break;
      case 3: if (keys.length) out[rng.pick(keys)] = rng.pick(INTERESTING_NUMBERS); break;
      case 4: out['op'] = rng.chance(0.5) ? rng.pick(OPS) : randomString(rng, 40); break;
      case 5: out['id'] = randomValue(rng); break;
      default: if (keys.length) out[rng.pick(keys)] = 'x'.repeat(rng.pick([100, 5000, 60_000])); break;
    }
  }
  return out;
}

function deepNesting(rng: Rng): string {
  const d = rng.pick([100, 1000, 10_000, 30_000]);
  const open = rng.chance(0.5) ? '[' : '{"a":';
  const close = open === '[' ? ']' : '}';
  return `{"op":"ping","x":${open.repeat(d)}1${close.repeat(d)}}`;
}

/** One case: the bytes to write (in pieces) and the descriptors to send with the first piece. */
interface Case {
  kind: string;
  /** Names of the descriptors sent. */
  fdNames?: string[];
  pieces: Buffer[];
  fds: number[];
}

function makeCase(rng: Rng, target: FuzzTarget, fds: Fds, bindImageChance: number): Case {
  const op = rng.pick(OPS);
  let req = validRequest(rng, op, target);
  const kind = rng.int(100);
  let text: string;
  let label: string;
  if (kind < 25) {
    label = 'valid';
    text = JSON.stringify(req);
  } else if (kind < 70) {
    label = 'mutated';
    req = mutate(rng, req);
    text = JSON.stringify(req);
  } else if (kind < 75) {
    label = 'deep';
    text = deepNesting(rng);
  } else if (kind < 80) {
    label = 'random-bytes';
    text = '';
    const bytes = Buffer.from(Array.from({ length: rng.int(200) }, () => rng.int(256)).filter((b) => b !== 0x0a));
    return { kind: label, pieces: [bytes, Buffer.from('\n')], fds: [] };
  } else if (kind < 85) {
    label = 'invalid-utf8';
    const s = JSON.stringify(req);
    const at = rng.int(s.length);
    return {
      kind: label,
      pieces: [Buffer.concat([Buffer.from(s.slice(0, at)), Buffer.from(rng.pick([[0xff], [0xc3], [0xed, 0xa0, 0x80], [0xf4, 0x90, 0x80, 0x80], [0x00]])), Buffer.from(`${s.slice(at)}\n`)])],
      fds: [],
    };
  } else if (kind < 88) {
    label = 'overlong';
    text = `{"op":"ping","x":"${'y'.repeat(64 * 1024 + rng.int(100_000))}"}`;
  } else if (kind < 93) {
    label = 'many-frames';
    const n = 2 + rng.int(30);
    text = Array.from({ length: n }, () => JSON.stringify(rng.chance(0.5) ? validRequest(rng, rng.pick(OPS), target) : mutate(rng, validRequest(rng, rng.pick(OPS), target)))).join('\n');
  } else {
    label = 'truncated';
    const s = JSON.stringify(req);
    text = s.slice(0, 1 + rng.int(s.length - 1)); // the sync's leading newline ends it
  }
  let data = Buffer.from(`${text}\n`);
  if (label === 'truncated') data = Buffer.from(text);
  // split across writes
  const pieces: Buffer[] = [];
  if (rng.chance(0.15) && data.length > 1) {
    let at = 0;
    while (at < data.length) {
      const n = 1 + rng.int(Math.min(64, data.length - at));
      pieces.push(data.subarray(at, at + n));
      at += n;
    }
  } else pieces.push(data);
  // descriptors: mostly none; binds mostly the image; otherwise anything
  let sent: number[] = [];
  const r = rng.next();
  if (op === 'bind' && r < bindImageChance) sent = [fds.image];
  else if (r < 0.2) sent = [rng.pick(fds.all).fd];
  else if (r < 0.25) sent = Array.from({ length: 2 + rng.int(6) }, () => rng.pick(fds.all).fd);
  if (sent.length > 0 && op === 'bind' && label === 'valid' && sent[0] === fds.image && sent.length === 1) label = 'bind-image';
  const fdNames = sent.map((fd) => fds.all.find((f) => f.fd === fd)?.name ?? String(fd));
  return { kind: label, pieces, fds: sent, fdNames };
}

/** One connection to a socket: bytes in, lines counted and checked. */
class Probe {
  readonly target: FuzzTarget;
  conn: UnixConnection | null = null;
  closed = false;
  #buf = '';
  lines: string[] = [];
  #wake: (() => void) | null = null;
  constructor(target: FuzzTarget) {
    this.target = target;
  }
  #generation = 0;
  open(): void {
    this.closed = false;
    this.#buf = '';
    this.lines = [];
    const generation = ++this.#generation;
    this.conn = ipc().connectUnix(this.target.path, {
      data: (_c, data, fds) => {
        for (const fd of fds) closeSync(fd);
        if (generation !== this.#generation) return;
        this.#buf += data.toString('utf8');
        let nl: number;
        while ((nl = this.#buf.indexOf('\n')) !== -1) {
          this.lines.push(this.#buf.slice(0, nl));
          this.#buf = this.#buf.slice(nl + 1);
        }
        this.#wake?.();
      },
      close: () => {
        if (generation !== this.#generation) return;
        this.closed = true;
        this.#wake?.();
      },
    });
  }
  /** Waits until `until` holds, the connection closes, or the bound passes. */
  async wait(until: () => boolean, ms: number): Promise<'ok' | 'closed' | 'timeout'> {
    const end = Date.now() + ms;
    while (!until()) {
      if (this.closed) return 'closed';
      const left = end - Date.now();
      if (left <= 0) return 'timeout';
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.#wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.#wake = null;
    }
    return 'ok';
  }
  close(): void {
    this.conn?.destroy();
    this.conn = null;
  }
}

/**
 * Replies the daemon owes for a stream of whole lines: one per line, except blank ones
 * (whitespace only, skipped without a reply); a line past the limit gets one EMSGSIZE.
 */
export function expectedReplies(stream: Buffer): number {
  let n = 0;
  let start = 0;
  for (let nl = stream.indexOf(0x0a); nl !== -1; nl = stream.indexOf(0x0a, start)) {
    const line = stream.subarray(start, nl);
    if (line.length > MAX_LINE_BYTES || line.toString('utf8').trim() !== '') n++;
    start = nl + 1;
  }
  return n;
}

/** Checks one reply line: well-formed JSON with ok:true, or an error with code, errno, message. */
function replyProblem(line: string): string | null {
  let v: unknown;
  try {
    v = JSON.parse(line);
  } catch {
    return `a reply is not JSON: ${line.slice(0, 120)}`;
  }
  if (typeof v !== 'object' || v === null) return `a reply is not an object: ${line.slice(0, 120)}`;
  const r = v as Record<string, unknown>;
  if (r['ok'] === true) return null;
  const e = r['error'] as Record<string, unknown> | undefined;
  if (!e || typeof e['code'] !== 'string' || typeof e['errno'] !== 'number' || typeof e['message'] !== 'string') {
    return `a reply is neither ok nor a well-formed error: ${line.slice(0, 120)}`;
  }
  if (!/^E[A-Z0-9]+$/.test(e['code']) || e['errno'] <= 0) return `an error code that is no errno: ${line.slice(0, 200)}`;
  if (e['code'] === 'EIO' && String(e['message']).startsWith('internal error')) return `an internal error: ${line.slice(0, 200)}`;
  return null;
}

/** Runs the socket fuzzer; throws only on harness trouble, reports broken invariants. */
export async function fuzzSockets(o: FuzzOptions): Promise<FuzzReport> {
  const started = Date.now();
  const rng = new Rng(o.seed);
  const bound = o.replyBoundMs ?? 10_000;
  const { fds, server } = await openFds(o.dir);
  const report: FuzzReport = { inputs: 0, lines: 0, replies: 0, errors: {}, ok: 0, closedByDaemon: 0, failures: [], ms: 0 };
  const probes = o.targets.map((t) => new Probe(t));
  for (const p of probes) p.open();
  let sync = 0;
  try {
    while (report.inputs < o.inputs && report.failures.length < 10) {
      const probe = rng.pick(probes);
      if (sync % 50 === 0) fds.findUblkChar();
      if (rng.chance(0.03)) {
        // a client that goes away in the middle of a line, descriptors pending
        const c = makeCase(rng, probe.target, fds, 0);
        const bytes = Buffer.concat(c.pieces);
        const gone = new Probe(probe.target);
        gone.open();
        gone.conn?.write(bytes.subarray(0, Math.max(1, rng.int(bytes.length))), rng.chance(0.7) ? [rng.pick(fds.all).fd] : []);
        if (rng.chance(0.5)) await new Promise((r) => setImmediate(r));
        gone.close();
        report.inputs++;
        continue;
      }
      // a batch of cases, then one sync ping
      const batch = 1 + rng.int(20);
      const stream: Buffer[] = [];
      const kinds: string[] = [];
      const texts: string[] = [];
      for (let i = 0; i < batch && report.inputs < o.inputs; i++) {
        const c = makeCase(rng, probe.target, fds, o.bindImageChance ?? 0.05);
        kinds.push(c.kind);
        texts.push(`${Buffer.concat(c.pieces).toString('utf8').slice(0, 200)}${c.fdNames?.length ? ` + fds ${c.fdNames.join(',')}` : ''}`);
        report.inputs++;
        c.pieces.forEach((piece, k) => {
          probe.conn?.write(piece, k === 0 && c.fds.length > 0 ? c.fds : []);
          stream.push(piece);
        });
      }
      const id = `sync-${++sync}`;
      const ping = Buffer.from(`\n${JSON.stringify({ op: 'ping', id })}\n`);
      probe.conn?.write(ping);
      stream.push(ping);
      const expected = expectedReplies(Buffer.concat(stream));
      const got = await probe.wait(() => probe.lines.length >= expected, bound);
      const lines = probe.lines.splice(0);
      report.lines += expected;
      report.replies += lines.length;
      for (const l of lines) {
        const problem = replyProblem(l);
        if (problem) report.failures.push(`seed ${o.seed}, sync ${sync} (${kinds.join(',')}): ${problem}`);
        else {
          const v = JSON.parse(l) as { ok?: boolean; error?: { code: string } };
          if (v.ok) report.ok++;
          else if (v.error) report.errors[v.error.code] = (report.errors[v.error.code] ?? 0) + 1;
        }
      }
      if (got === 'timeout') {
        report.failures.push(`seed ${o.seed}, sync ${sync} (${kinds.join(',')}): ${lines.length} of ${expected} replies within ${bound} ms on ${probe.target.path}; the inputs: ${texts.join(' | ')}`);
        probe.close();
        probe.open();
      } else if (got === 'closed') {
        report.closedByDaemon++;
        probe.open();
      } else {
        const last = lines[lines.length - 1] ?? '';
        if (!last.includes(`"id":"${id}"`) || !last.includes('"pid"')) {
          report.failures.push(`seed ${o.seed}, sync ${sync} (${kinds.join(',')}): the sync ping's reply is not last: ${last.slice(0, 200)} (${lines.length} lines, ${expected} expected)`);
        }
        if (lines.length !== expected) report.failures.push(`seed ${o.seed}, sync ${sync}: ${lines.length} replies for ${expected} lines`);
      }
    }
  } finally {
    for (const p of probes) p.close();
    fds.close();
    server.close();
  }
  report.ms = Date.now() - started;
  return report;
}

/** A child process storming a loop-control char device with ioctls; prints a JSON summary. */
export const IOCTL_CHILD = `
const [addonPath, node, seedText, countText] = process.argv.slice(1);
const addon = require(addonPath);
const fs = require('fs');
let s = Number(seedText) >>> 0;
const next = () => { let t = (s = (s + 0x6d2b79f5) >>> 0); t = Math.imul(t ^ (t >>> 15), t | 1); t ^= t + Math.imul(t ^ (t >>> 7), t | 61); return ((t ^ (t >>> 14)) >>> 0) / 4294967296; };
const int = (n) => Math.floor(next() * n);
// generic VFS ioctls the kernel answers itself (some act on the filesystem holding the node: FIFREEZE!)
const DENY_TYPES = new Set([0x58, 0x66, 0x94, 0x54, 0x12]);
const NUMS = [0, 1, -1, 7, 255, 256, 1048575, 1048576, 2147483647, 2147483648, -2147483648, 4294967295, 4294967296, 2 ** 52, -(2 ** 52)];
const fd = fs.openSync(node, 'r+');
const out = { n: 0, results: {} };
const count = Number(countText);
for (let i = 0; i < count; i++) {
  let cmd;
  const k = int(10);
  if (k < 6) cmd = 0x4c80 + int(3);
  else if (k < 8) cmd = 0x4c00 + int(256);
  else cmd = int(2 ** 32);
  if (DENY_TYPES.has((cmd >>> 8) & 0xff)) cmd = 0x4c82;
  const arg = next() < 0.5 ? NUMS[int(NUMS.length)] : int(2 ** 20) - 1000;
  let r;
  try { r = addon.ioctlInt(fd, cmd, arg); r = r >= 0 ? 'ok' : String(r); } catch (e) { r = e.code || String(e); }
  out.results[r] = (out.results[r] || 0) + 1;
  out.n++;
}
fs.closeSync(fd);
process.stdout.write(JSON.stringify(out));
`;
