// `losetup` arguments as util-linux reads them (getopt_long with GNU permutation, short
// option bundling, unique long-option prefixes, the same mutually exclusive groups and
// the same rules for which action the options and operands make), into a typed
// command. Pure: no I/O; errors are LosetupError with util-linux's words.
import { COLUMNS, DEFAULT_LIST_COLUMNS, columnByName, type ColumnName } from './columns.js';
import { parseLosetupSize } from './size.js';

export interface SetupOptions {
  offset: bigint | null;
  sizeLimit: bigint | null;
  sectorSize: bigint | null;
  readOnly: boolean;
  partscan: boolean;
  /** --direct-io given: its value; null: not given. */
  directIo: boolean | null;
  noOverlap: boolean;
}

export interface OutputOptions {
  /** -l (table) rather than the plain `-a` lines. */
  list: boolean;
  json: boolean;
  raw: boolean;
  noHeadings: boolean;
  columns: ColumnName[];
}

/** ubloop's own options (long only; util-linux has none of them). */
export interface UbloopOptions {
  instance: string | null;
  socket: string | null;
  root: string | null;
  /** State file for a daemon this command starts. */
  state: string | null;
}

export type LosetupAction =
  | { action: 'help' }
  | { action: 'version' }
  | { action: 'create'; device: string | null; file: string; show: boolean; setup: SetupOptions }
  | { action: 'detach'; devices: string[] }
  | { action: 'detach-all' }
  | { action: 'find-free' }
  | { action: 'show'; file: string | null; offset: bigint | null; output: OutputOptions }
  | { action: 'show-one'; device: string; output: OutputOptions }
  | { action: 'set-capacity'; device: string }
  | { action: 'set-dio'; device: string; on: boolean }
  | { action: 'set-blocksize'; device: string; size: bigint }
  | { action: 'remove'; devices: string[] };

export type LosetupCommand = LosetupAction & { ubloop: UbloopOptions };

/** A refusal of the command line: the lines to print (after "PROG: ") and whether to add "Try 'PROG --help'". Exit status 1. */
export class LosetupError extends Error {
  readonly lines: string[];
  readonly tryHelp: boolean;
  constructor(lines: string[], tryHelp = false) {
    super(lines.join('\n'));
    this.lines = lines;
    this.tryHelp = tryHelp;
  }
}

// Option codes: the short letter, or util-linux's numbers for the long-only ones (above
// CHAR_MAX, in its enum order: the exclusive-group checks compare them).
const OPT_SIZELIMIT = 128;
const OPT_SHOW = 129;
const OPT_RAW = 130;
const OPT_DIO = 132;
const OPT_OUTPUT_ALL = 133;
const OPT_REMOVE = 134;
const OPT_INSTANCE = 200;
const OPT_SOCKET = 201;
const OPT_ROOT = 202;
const OPT_STATE = 203;
const c = (ch: string): number => ch.charCodeAt(0);

type HasArg = 'no' | 'required' | 'optional';
interface LongOpt {
  name: string;
  has: HasArg;
  code: number;
}

const LONG: readonly LongOpt[] = [
  { name: 'all', has: 'no', code: c('a') },
  { name: 'set-capacity', has: 'required', code: c('c') },
  { name: 'detach', has: 'required', code: c('d') },
  { name: 'detach-all', has: 'no', code: c('D') },
  { name: 'find', has: 'no', code: c('f') },
  { name: 'nooverlap', has: 'no', code: c('L') },
  { name: 'help', has: 'no', code: c('h') },
  { name: 'associated', has: 'required', code: c('j') },
  { name: 'json', has: 'no', code: c('J') },
  { name: 'list', has: 'no', code: c('l') },
  { name: 'sector-size', has: 'required', code: c('b') },
  { name: 'noheadings', has: 'no', code: c('n') },
  { name: 'offset', has: 'required', code: c('o') },
  { name: 'output', has: 'required', code: c('O') },
  { name: 'output-all', has: 'no', code: OPT_OUTPUT_ALL },
  { name: 'sizelimit', has: 'required', code: OPT_SIZELIMIT },
  { name: 'partscan', has: 'no', code: c('P') },
  { name: 'read-only', has: 'no', code: c('r') },
  { name: 'direct-io', has: 'optional', code: OPT_DIO },
  { name: 'raw', has: 'no', code: OPT_RAW },
  { name: 'show', has: 'no', code: OPT_SHOW },
  { name: 'verbose', has: 'no', code: c('v') },
  { name: 'version', has: 'no', code: c('V') },
  { name: 'remove', has: 'no', code: OPT_REMOVE },
  { name: 'instance', has: 'required', code: OPT_INSTANCE },
  { name: 'socket', has: 'required', code: OPT_SOCKET },
  { name: 'root', has: 'required', code: OPT_ROOT },
  { name: 'state', has: 'required', code: OPT_STATE },
];
const UBLOOP_ONLY = new Set([OPT_INSTANCE, OPT_SOCKET, OPT_ROOT, OPT_STATE]);

/** Short options: letter → takes an argument (util-linux 2.38's "ab:c:d:Dfhj:JlLno:O:PrvV"). */
const SHORT: ReadonlyMap<string, boolean> = new Map(
  [...'ab:c:d:Dfhj:JlLno:O:PrvV'.matchAll(/([A-Za-z])(:?)/g)].map((m) => [m[1] as string, m[2] === ':']),
);

/** util-linux 2.38's mutually exclusive groups, in its order (plus --remove, which 2.39 added). */
const EXCLUSIVE: readonly (readonly number[])[] = [
  [c('D'), c('a'), c('c'), c('d'), c('f'), c('j'), OPT_REMOVE],
  [c('D'), c('c'), c('d'), c('f'), c('l'), OPT_REMOVE],
  [c('D'), c('c'), c('d'), c('f'), c('O'), OPT_REMOVE],
  [c('J'), OPT_RAW],
];

function optName(code: number): string {
  const long = LONG.find((l) => l.code === code);
  return long ? `--${long.name}` : `-${String.fromCharCode(code)}`;
}

/** util-linux 2.38's refusal: the whole group (--remove only when it is one of the two). */
function exclusiveMessage(group: readonly number[], a: number, b: number): string {
  const shown = group.filter((o) => o !== OPT_REMOVE || a === OPT_REMOVE || b === OPT_REMOVE);
  return `mutually exclusive arguments:${shown.map((o) => ` ${optName(o)}`).join('')}`;
}

interface Parsed {
  code: number;
  arg: string | undefined;
}

/** getopt_long over argv (GNU: options and operands may mix; "--" ends options). */
function getopt(argv: readonly string[]): { opts: Parsed[]; operands: string[]; ubloopWords: number } {
  let ubloopWords = 0;
  const opts: Parsed[] = [];
  const operands: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i] as string;
    if (a === '--') {
      operands.push(...argv.slice(i + 1));
      break;
    }
    if (a.startsWith('--')) {
      const eq = a.indexOf('=');
      const name = eq < 0 ? a.slice(2) : a.slice(2, eq);
      const exact = LONG.find((l) => l.name === name);
      const matches = exact ? [exact] : LONG.filter((l) => l.name.startsWith(name));
      const shown = eq < 0 ? a : a.slice(0, eq);
      if (matches.length === 0) throw new LosetupError([`unrecognized option '${shown}'`], true);
      if (matches.length > 1 && new Set(matches.map((m) => m.code)).size > 1) {
        throw new LosetupError([`option '${shown}' is ambiguous; possibilities:${matches.map((m) => ` '--${m.name}'`).join('')}`], true);
      }
      const opt = matches[0] as LongOpt;
      let arg: string | undefined;
      const start = i;
      if (eq >= 0) {
        if (opt.has === 'no') throw new LosetupError([`option '--${opt.name}' doesn't allow an argument`], true);
        arg = a.slice(eq + 1);
      } else if (opt.has === 'required') {
        if (i + 1 >= argv.length) throw new LosetupError([`option '--${opt.name}' requires an argument`], true);
        arg = argv[++i];
      }
      if (UBLOOP_ONLY.has(opt.code)) ubloopWords += i - start + 1;
      opts.push({ code: opt.code, arg });
      continue;
    }
    if (a.startsWith('-') && a.length > 1) {
      for (let j = 1; j < a.length; j++) {
        const ch = a[j] as string;
        const needs = SHORT.get(ch);
        if (needs === undefined) throw new LosetupError([`invalid option -- '${ch}'`], true);
        if (!needs) {
          opts.push({ code: c(ch), arg: undefined });
          continue;
        }
        let arg = a.slice(j + 1);
        if (arg === '') {
          if (i + 1 >= argv.length) throw new LosetupError([`option requires an argument -- '${ch}'`], true);
          arg = argv[++i] as string;
        }
        opts.push({ code: c(ch), arg });
        break;
      }
      continue;
    }
    operands.push(a);
  }
  return { opts, operands, ubloopWords };
}

function size(text: string, what: string): bigint {
  const v = parseLosetupSize(text);
  if (v === null) throw new LosetupError([`${what}: '${text}': Invalid argument`]);
  return v;
}

/** Parses losetup's command line (without the program name). */
export function parseLosetupArgs(argv: readonly string[]): LosetupCommand {
  const { opts, operands, ubloopWords } = getopt(argv);
  const given = argv.length - ubloopWords; // util-linux's argc - 1
  const ubloop: UbloopOptions = { instance: null, socket: null, root: null, state: null };
  let act: LosetupAction['action'] | null = null;
  let file: string | null = null;
  let offset: bigint | null = null;
  let sizeLimit: bigint | null = null;
  let sectorSize: bigint | null = null;
  let readOnly = false;
  let partscan = false;
  let directIo: boolean | null = null;
  let noOverlap = false;
  let show = false;
  let list = false;
  let json = false;
  let raw = false;
  let noHeadings = false;
  let columns: ColumnName[] = [];
  let outarg: string | null = null;
  const exclusive: number[] = EXCLUSIVE.map(() => 0);
  let device: string | null = null;

  for (const { code, arg } of opts) {
    if (UBLOOP_ONLY.has(code)) {
      if (code === OPT_INSTANCE) ubloop.instance = arg ?? null;
      else if (code === OPT_SOCKET) ubloop.socket = arg ?? null;
      else if (code === OPT_ROOT) ubloop.root = arg ?? null;
      else ubloop.state = arg ?? null;
      continue;
    }
    // err_exclusive_options() exactly, with its early stops: the groups are meant to be in
    // ASCII order, and where 2.38's are not (-O after -c), the option is not checked.
    for (let e = 0; e < EXCLUSIVE.length && (EXCLUSIVE[e]?.[0] ?? Infinity) <= code; e++) {
      const group = EXCLUSIVE[e] as readonly number[];
      for (const op of group) {
        if (op > code) break;
        if (op !== code) continue;
        const first = exclusive[e] as number;
        if (first === 0) exclusive[e] = code;
        else if (first !== code) throw new LosetupError([exclusiveMessage(group, first, code)]);
        break;
      }
    }
    switch (code) {
      case c('a'): act = 'show'; break;
      case c('b'): sectorSize = size(arg as string, 'failed to parse logical block size'); break;
      case c('c'): act = 'set-capacity'; device = arg as string; break;
      case c('r'): readOnly = true; break;
      case c('d'): act = 'detach'; device = arg as string; break;
      case c('D'): act = 'detach-all'; break;
      case c('f'): act = 'find-free'; break;
      case c('J'): json = true; break;
      case c('j'): act = 'show'; file = arg as string; break;
      case c('l'): list = true; break;
      case c('L'): noOverlap = true; break;
      case c('n'): noHeadings = true; break;
      case OPT_RAW: raw = true; break;
      case c('o'): offset = size(arg as string, 'failed to parse offset'); break;
      case c('O'): outarg = arg as string; list = true; break;
      // util-linux 2.39+ (2.38 needs -l with it)
      case OPT_OUTPUT_ALL: list = true; columns = COLUMNS.map((col) => col.name); break;
      case c('v'): break; // --verbose: accepted, as 2.38 does (it says nothing more)
      case c('P'): partscan = true; break;
      case OPT_SHOW: show = true; break;
      case OPT_DIO:
        if (arg === undefined || arg === 'on') directIo = true;
        else if (arg === 'off') directIo = false;
        else throw new LosetupError([`argument error: '${arg}'`]);
        break;
      case OPT_SIZELIMIT: sizeLimit = size(arg as string, 'failed to parse size'); break;
      case c('h'): return { action: 'help', ubloop };
      case c('V'): return { action: 'version', ubloop };
      case OPT_REMOVE: act = 'remove'; break;
    }
  }
  const rest = [...operands];

  if (given === 0) {
    act = 'show';
    list = true;
  }
  if (act === null && given === 1 && (raw || json)) {
    act = 'show';
    list = true;
  }
  if (list && columns.length === 0 && outarg === null) columns = [...DEFAULT_LIST_COLUMNS];

  if (act === 'find-free' && rest.length > 0) {
    act = 'create';
    file = rest.shift() as string;
    if (rest.length > 0) throw new LosetupError(['unexpected arguments']);
  }
  if (list && act === null && rest.length === 0) act = 'show';
  if (act === 'remove') {
    if (rest.length === 0) throw new LosetupError(['no loop device specified']);
    device = rest.shift() as string;
  }
  let lone: 'set-dio' | 'set-blocksize' | 'show-one' | null = null;
  if (act === null && rest.length === 1) {
    lone = directIo !== null ? 'set-dio' : sectorSize !== null ? 'set-blocksize' : 'show-one';
    act = lone;
    device = rest.shift() as string;
  }
  if (act === null) {
    act = 'create';
    if (rest.length === 0) throw new LosetupError(['no loop device specified']);
    device = rest.shift() as string;
    if (rest.length === 0) throw new LosetupError(['no file specified']);
    file = rest.shift() as string;
  }
  // Setting dio on a device is not "setup": util-linux clears the flag before this check.
  const setupFlags = readOnly || partscan || (directIo === true && lone !== 'set-dio');
  if (act !== 'create' && ((sizeLimit !== null && sizeLimit !== 0n) || setupFlags || show)) {
    throw new LosetupError(['the options --{sizelimit,partscan,read-only,show} are allowed during loop device setup only']);
  }
  if (offset !== null && act !== 'create' && (act !== 'show' || file === null)) {
    throw new LosetupError(['the option --offset is not allowed in this context']);
  }
  if (outarg !== null) {
    for (const name of outarg.split(',')) {
      const col = columnByName(name);
      if (!col) throw new LosetupError([`unknown column: ${name}`]);
      columns.push(col.name as ColumnName);
    }
  }
  const output: OutputOptions = { list, json, raw, noHeadings, columns };
  switch (act) {
    case 'create':
      return { action: 'create', device, file: file as string, show, setup: { offset, sizeLimit, sectorSize, readOnly, partscan, directIo, noOverlap }, ubloop };
    case 'detach':
    case 'remove':
      return { action: act, devices: [device as string, ...rest], ubloop };
    case 'detach-all':
      return { action: 'detach-all', ubloop };
    case 'find-free':
      return { action: 'find-free', ubloop };
    case 'show':
      return { action: 'show', file, offset, output, ubloop };
    case 'show-one':
      return { action: 'show-one', device: device as string, output, ubloop };
    case 'set-capacity':
      return { action: 'set-capacity', device: device as string, ubloop };
    case 'set-dio':
      return { action: 'set-dio', device: device as string, on: directIo === true, ubloop };
    case 'set-blocksize':
      return { action: 'set-blocksize', device: device as string, size: sectorSize as bigint, ubloop };
    default:
      throw new LosetupError(['bad usage'], true);
  }
}
