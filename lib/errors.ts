// Errors ubloop raises itself carry an errno-style code like the ones that come from
// the native addon and from node:fs, so callers handle them all the same way.
import { constants } from 'node:os';

export class UbloopError extends Error {
  readonly code: string;
  readonly errno: number;

  constructor(code: keyof typeof constants.errno, message: string) {
    super(message);
    this.name = 'UbloopError';
    this.code = code;
    this.errno = -constants.errno[code];
  }
}

/** An error as thrown by node:fs or the addon: has a string `code`. */
export interface SystemError extends Error {
  code: string;
  errno?: number;
  syscall?: string;
}

export function isSystemError(err: unknown): err is SystemError {
  return err instanceof Error && typeof (err as Partial<SystemError>).code === 'string';
}

export function invalid(message: string): UbloopError {
  return new UbloopError('EINVAL', message);
}
