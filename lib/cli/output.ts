// How the CLI talks to people: results on stdout, problems as one line on stderr.
import { isSystemError } from '../errors.js';

export function fail(err: unknown): number {
  const message = err instanceof Error ? err.message : String(err);
  process.stderr.write(`ubloop: ${message}\n`);
  if (process.env['DEBUG'] && err instanceof Error && err.stack) process.stderr.write(`${err.stack}\n`);
  // 2 for usage errors (bad values), 1 for everything else.
  return isSystemError(err) && err.code === 'EINVAL' ? 2 : 1;
}

export function printJson(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v))}\n`);
}
