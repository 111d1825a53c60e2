// Field readers for incoming messages: each returns the typed value or throws an EINVAL
// UbloopError naming the field and what was wrong with it, so a bad request gets an
// error reply that says exactly what to fix.
import { invalid } from '../errors.js';
import { show } from '../device-options.js';

export type Fields = Readonly<Record<string, unknown>>;

export function isRecord(value: unknown): value is Fields {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

export function int(f: Fields, key: string, min: number, max: number): number {
  const v = f[key];
  if (typeof v !== 'number' || !Number.isInteger(v)) throw invalid(`"${key}" must be an integer, got ${show(v)}`);
  if (v < min || v > max) throw invalid(`"${key}" must be from ${min} to ${max}, got ${v}`);
  return v;
}

export function optInt(f: Fields, key: string, min: number, max: number): number | undefined {
  return f[key] === undefined ? undefined : int(f, key, min, max);
}

export function str(f: Fields, key: string, maxLength = 4096): string {
  const v = f[key];
  if (typeof v !== 'string') throw invalid(`"${key}" must be a string, got ${show(v)}`);
  if (v.length === 0 || v.length > maxLength) throw invalid(`"${key}" must be 1 to ${maxLength} characters long`);
  return v;
}

export function optStr(f: Fields, key: string, maxLength = 4096): string | undefined {
  return f[key] === undefined ? undefined : str(f, key, maxLength);
}

export function optBool(f: Fields, key: string): boolean | undefined {
  const v = f[key];
  if (v === undefined) return undefined;
  if (typeof v !== 'boolean') throw invalid(`"${key}" must be true or false, got ${show(v)}`);
  return v;
}

/** Rejects fields the message does not have, so a misspelt option is not silently ignored. */
export function onlyKeys(f: Fields, op: string, allowed: readonly string[]): void {
  for (const k of Object.keys(f)) {
    if (k !== 'op' && k !== 'id' && !allowed.includes(k)) throw invalid(`"${op}" has no field "${k}"`);
  }
}

/** Turns a throwing checker into a type guard. */
export function guard<T>(check: (f: Fields) => T): (value: unknown) => value is T {
  return (value: unknown): value is T => {
    if (!isRecord(value)) return false;
    try {
      check(value);
      return true;
    } catch {
      return false;
    }
  };
}
