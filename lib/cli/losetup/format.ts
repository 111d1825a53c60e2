// losetup's output from device records, as util-linux prints it: the plain `-a` lines,
// and the libsmartcols table (aligned columns, --raw, -n) and JSON. Pure.
import { splitDev, type DevNum } from '../../devnum.js';
import { columnInfo, type ColumnName } from './columns.js';
import type { OutputOptions } from './parse.js';

/** A major:minor pair. */
export type DevNumber = DevNum;

/** One bound device as losetup shows it. */
export interface LoopRecord {
  name: string;
  autoclear: boolean;
  /** The backing file's path, or null when unknown. */
  backFile: string | null;
  /** st_ino of the backing file (0 or null: unknown). */
  backIno: number | null;
  /** st_dev of the backing file, encoded as the kernel's dev_t (null: unknown). */
  backDev: number | null;
  /** The device's own major:minor, or null. */
  dev: DevNumber | null;
  offset: number;
  sizeLimit: number;
  partscan: boolean;
  readOnly: boolean;
  directIo: boolean;
  logicalSectorSize: number;
  ref: string | null;
}

/**
 * One cell's text, '' for empty. MAJ:MIN and BACK-MAJ:MIN are padded inside the cell
 * ("%3u:%-3u", "%8u:%-3u") in every format, raw and JSON too, as util-linux 2.38 does.
 */
export function cellText(r: LoopRecord, col: ColumnName): string {
  const flag = (b: boolean) => (b ? '1' : '0');
  switch (col) {
    case 'NAME': return r.name;
    case 'AUTOCLEAR': return flag(r.autoclear);
    case 'BACK-FILE': return r.backFile ?? '';
    case 'BACK-INO': return r.backIno ? String(r.backIno) : '';
    case 'BACK-MAJ:MIN': {
      if (!r.backDev) return '';
      const { major, minor } = splitDev(r.backDev);
      return `${String(major).padStart(8)}:${String(minor).padEnd(3)}`;
    }
    case 'MAJ:MIN':
      return r.dev ? `${String(r.dev.major).padStart(3)}:${String(r.dev.minor).padEnd(3)}` : '';
    case 'OFFSET': return String(r.offset);
    case 'PARTSCAN': return flag(r.partscan);
    case 'REF': return r.ref ?? '';
    case 'RO': return flag(r.readOnly);
    case 'SIZELIMIT': return String(r.sizeLimit);
    case 'DIO': return flag(r.directIo);
    case 'LOG-SEC': return String(r.logicalSectorSize);
  }
}

/** The plain line of `losetup -a` / `losetup DEV`. */
export function plainLine(r: LoopRecord): string {
  let line = r.backDev || r.backIno
    ? `${r.name}: [${String(r.backDev ?? 0).padStart(4, '0')}]:${r.backIno ?? 0} (${r.backFile ?? ''})`
    : `${r.name}: []: (${r.backFile ?? ''})`;
  if (r.offset) line += `, offset ${r.offset}`;
  if (r.sizeLimit) line += `, sizelimit ${r.sizeLimit}`;
  return `${line}\n`;
}

// libsmartcols' raw escaping: what is not printable, and the separator, as \xHH.
function rawEscape(s: string): string {
  return s.replace(/[\x00-\x20\\\x7f"]/g, (ch) => `\\x${ch.charCodeAt(0).toString(16).padStart(2, '0')}`);
}

function jsonString(s: string): string {
  return JSON.stringify(s).replace(/\//g, '/');
}

function jsonValue(col: ColumnName, text: string): string {
  const type = columnInfo(col).json;
  if (type === 'boolean') return text !== '' && text !== '0' && !/^[Nn]/.test(text) ? 'true' : 'false';
  if (text === '') return 'null';
  return type === 'number' ? text : jsonString(text);
}

/** The table of `losetup -l` (and -J, --raw, -n, -O) for the given records. */
export function formatTable(records: readonly LoopRecord[], out: Pick<OutputOptions, 'json' | 'raw' | 'noHeadings' | 'columns'>): string {
  const cols = out.columns;
  const rows = records.map((r) => cols.map((c) => cellText(r, c)));
  if (out.json) {
    const I = '   ';
    let s = `{\n${I}"loopdevices": [\n`;
    rows.forEach((row, i) => {
      s += i === 0 ? `${I}${I}{\n` : `${I}${I}},{\n`;
      s += row.map((text, j) => `${I}${I}${I}${jsonString((cols[j] as string).toLowerCase())}: ${jsonValue(cols[j] as ColumnName, text)}`).join(',\n');
      s += '\n';
    });
    // libsmartcols 2.38 leaves an empty line in an empty array.
    s += rows.length > 0 ? `${I}${I}}\n` : '\n';
    return `${s}${I}]\n}\n`;
  }
  if (records.length === 0) return '';
  const header = out.noHeadings ? [] : [cols.map((c) => c as string)];
  const all = [...header, ...rows];
  if (out.raw) return all.map((row) => `${row.map(rawEscape).join(' ')}\n`).join('');
  // The header's width counts even with -n (libsmartcols sizes columns by it).
  const widths = cols.map((c, j) => Math.max(c.length, ...rows.map((row) => (row[j] as string).length)));
  return all
    .map((row) => {
      const cells = row.map((text, j) => {
        const w = widths[j] as number;
        if (columnInfo(cols[j] as ColumnName).right) return text.padStart(w);
        return j === row.length - 1 ? text : text.padEnd(w);
      });
      return `${cells.join(' ')}\n`;
    })
    .join('');
}
