// losetup's output columns, as util-linux defines them: name, alignment, JSON type,
// and the default set of `losetup -l`. The order of COLUMNS is the order of
// --output-all (util-linux 2.39+, whose REF column 2.38 does not have).

export type JsonType = 'string' | 'number' | 'boolean';

export interface ColumnInfo {
  name: string;
  /** Right-aligned in the table (SCOLS_FL_RIGHT). */
  right: boolean;
  json: JsonType;
  help: string;
}

export const COLUMNS = [
  { name: 'NAME', right: false, json: 'string', help: 'loop device name' },
  { name: 'AUTOCLEAR', right: true, json: 'boolean', help: 'autoclear flag set' },
  { name: 'BACK-FILE', right: false, json: 'string', help: 'device backing file' },
  { name: 'BACK-INO', right: true, json: 'number', help: 'backing file inode number' },
  { name: 'BACK-MAJ:MIN', right: false, json: 'string', help: 'backing file major:minor device number' },
  { name: 'MAJ:MIN', right: false, json: 'string', help: 'loop device major:minor number' },
  { name: 'OFFSET', right: true, json: 'number', help: 'offset from the beginning' },
  { name: 'PARTSCAN', right: true, json: 'boolean', help: 'partscan flag set' },
  { name: 'REF', right: false, json: 'string', help: 'loop device reference string' },
  { name: 'RO', right: true, json: 'boolean', help: 'read-only device' },
  { name: 'SIZELIMIT', right: true, json: 'number', help: 'size limit of the file in bytes' },
  { name: 'DIO', right: true, json: 'boolean', help: 'access backing file with direct-io' },
  { name: 'LOG-SEC', right: true, json: 'number', help: 'logical sector size in bytes' },
] as const satisfies readonly ColumnInfo[];

export type ColumnName = (typeof COLUMNS)[number]['name'];

export const DEFAULT_LIST_COLUMNS: readonly ColumnName[] = ['NAME', 'SIZELIMIT', 'OFFSET', 'AUTOCLEAR', 'RO', 'BACK-FILE', 'DIO', 'LOG-SEC'];

/** The column of a name typed in -O (case-insensitive, as util-linux), or undefined. */
export function columnByName(name: string): ColumnInfo | undefined {
  return (COLUMNS as readonly ColumnInfo[]).find((c) => c.name.toLowerCase() === name.toLowerCase());
}

export function columnInfo(name: ColumnName): ColumnInfo {
  return columnByName(name) as ColumnInfo;
}
