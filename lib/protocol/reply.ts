// Replies: `{ok: true, ...result}` or `{error: {code, errno, message}}`, echoing the
// request's `id` when it had one.
import { constants } from 'node:os';
import { UbloopError, isSystemError } from '../errors.js';
import { isRecord } from './fields.js';

export interface ErrorBody {
  /** errno name, e.g. "ENOSPC". */
  code: string;
  /** positive errno number. */
  errno: number;
  message: string;
}

export type OkReply<T extends object = object> = { ok: true; id?: number | string } & T;
export interface ErrorReply {
  id?: number | string;
  error: ErrorBody;
}
export type Reply<T extends object = object> = OkReply<T> | ErrorReply;

export function errnoOf(code: string): number {
  const n = (constants.errno as Record<string, number | undefined>)[code];
  return n ?? 0;
}

/**
 * The error of a reply. Only errno names go out as codes: anything else (a bug, or a
 * node error such as ERR_INVALID_ARG_VALUE that a check should have caught first) is
 * an internal error, EIO, with its code in the message.
 */
export function errorBody(err: unknown): ErrorBody {
  if (isSystemError(err) && errnoOf(err.code) > 0) return { code: err.code, errno: errnoOf(err.code), message: err.message };
  const message = err instanceof Error ? err.message : String(err);
  const code = isSystemError(err) ? ` (${err.code})` : '';
  return { code: 'EIO', errno: errnoOf('EIO'), message: `internal error${code}: ${message}` };
}

export function isErrorReply(value: unknown): value is ErrorReply {
  if (!isRecord(value) || !isRecord(value['error'])) return false;
  const e = value['error'];
  return typeof e['code'] === 'string' && typeof e['message'] === 'string' && typeof e['errno'] === 'number';
}

export function isOkReply(value: unknown): value is OkReply {
  return isRecord(value) && value['ok'] === true && !('error' in value);
}

/** The error an error reply stands for, as a UbloopError-like Error with code and errno. */
export function replyError(reply: ErrorReply): Error & { code: string; errno: number } {
  const e = new Error(reply.error.message) as Error & { code: string; errno: number };
  e.code = reply.error.code;
  e.errno = -reply.error.errno;
  return e;
}

export { UbloopError };
