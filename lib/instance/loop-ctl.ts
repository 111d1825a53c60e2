// The loop-control ioctl numbers (include/uapi/linux/loop.h) and how an argument
// becomes an index: the kernel passes `unsigned long` to `int` parameters, so only the
// low 32 bits count, read as signed.

export const LOOP_CTL_ADD = 0x4c80;
export const LOOP_CTL_REMOVE = 0x4c81;
export const LOOP_CTL_GET_FREE = 0x4c82;

export const LOOP_CTL_NAMES: Readonly<Record<number, string>> = {
  [LOOP_CTL_ADD]: 'LOOP_CTL_ADD',
  [LOOP_CTL_REMOVE]: 'LOOP_CTL_REMOVE',
  [LOOP_CTL_GET_FREE]: 'LOOP_CTL_GET_FREE',
};

/** The ioctl argument as the kernel's `int idx` sees it. */
export function indexArg(arg: number): number {
  // ToInt32 is exact for every integer a JS number holds exactly (|arg| < 2^53).
  return Number.isFinite(arg) ? arg | 0 : 0;
}
