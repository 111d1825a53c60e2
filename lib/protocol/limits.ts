// Numeric limits shared by the protocol checks and the instance manager.

/** Largest loop index: the block layer refuses a first minor above MINORMASK (2^20 - 1). */
export const MAX_INDEX = (1 << 20) - 1;
/** Largest per-instance `max` (every index 0..MAX_INDEX). */
export const MAX_DEVICES = MAX_INDEX + 1;
/** Default `max` of a new instance. */
export const DEFAULT_MAX = 256;
/** Longest request line the daemon reads; a longer one is answered with EMSGSIZE and skipped. */
export const MAX_LINE_BYTES = 64 * 1024;
/** Instance names: safe as one path component. */
export const INSTANCE_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;
