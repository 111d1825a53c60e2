// What the running kernel's ublk can do, in words a user can act on.
import { existsSync, readFileSync } from 'node:fs';
import { release } from 'node:os';
import { native, type NativeConstants } from './native.js';

export interface KernelFeatures {
  kernel: string;
  available: boolean;
  /** Why ublk is unusable, with what to do about it; null when available. */
  problem: string | null;
  encoding: 'legacy' | 'ioctl';
  /** GET_FEATURES answer as flag names, or null when the kernel has no GET_FEATURES (Linux < 6.5). */
  features: string[] | null;
  /** Whether the kernel offers each optional path ubloop can use. */
  paths: {
    ioctlEncoding: boolean;
    userCopy: boolean;
    zeroCopy: boolean;
    unprivileged: boolean;
    userRecovery: boolean;
  };
}

const FLAG_NAMES = [
  'UBLK_F_SUPPORT_ZERO_COPY',
  'UBLK_F_URING_CMD_COMP_IN_TASK',
  'UBLK_F_NEED_GET_DATA',
  'UBLK_F_USER_RECOVERY',
  'UBLK_F_USER_RECOVERY_REISSUE',
  'UBLK_F_UNPRIVILEGED_DEV',
  'UBLK_F_CMD_IOCTL_ENCODE',
  'UBLK_F_USER_COPY',
  'UBLK_F_ZONED',
  'UBLK_F_USER_RECOVERY_FAIL_IO',
  'UBLK_F_UPDATE_SIZE',
  'UBLK_F_AUTO_BUF_REG',
  'UBLK_F_QUIESCE',
] as const satisfies readonly (keyof NativeConstants)[];

/** Names of the UBLK_F_* bits set in flags. */
export function flagNames(flags: bigint): string[] {
  const c = native().constants;
  return FLAG_NAMES.filter((name) => (flags & c[name]) !== 0n);
}

export function ublkProblem(controlError: string | null): string {
  if (controlError === 'ENOENT' && !existsSync('/sys/class/misc/ublk-control')) {
    return 'ublk is not available: /dev/ublk-control is missing; load the driver with "modprobe ublk_drv" (Linux 6.0+)';
  }
  if (controlError === 'EACCES' || controlError === 'EPERM') {
    return `cannot open /dev/ublk-control (${controlError}): ublk control needs root (CAP_SYS_ADMIN)`;
  }
  return `cannot open /dev/ublk-control (${controlError ?? 'unknown error'})`;
}

export function kernelFeatures(): KernelFeatures {
  const k = native().probeKernel();
  const features = k.features === null ? null : flagNames(k.features);
  const has = (name: string) => features?.includes(name) ?? false;
  // Linux 6.1 has user recovery but no GET_FEATURES to say so.
  const recovery = features ? has('UBLK_F_USER_RECOVERY') : k.present && kernelAtLeast(6, 0);
  return {
    kernel: release(),
    available: k.present,
    problem: k.present ? null : ublkProblem(k.controlError),
    encoding: k.encoding,
    features,
    paths: {
      ioctlEncoding: k.encoding === 'ioctl',
      userCopy: has('UBLK_F_USER_COPY'),
      zeroCopy: has('UBLK_F_SUPPORT_ZERO_COPY'),
      unprivileged: has('UBLK_F_UNPRIVILEGED_DEV'),
      userRecovery: recovery,
    },
  };
}

export function kernelAtLeast(major: number, minor: number): boolean {
  const m = /^(\d+)\.(\d+)/.exec(release());
  if (!m) return false;
  const [maj, min] = [Number(m[1]), Number(m[2])];
  return maj > major || (maj === major && min >= minor);
}

/** The I/O schedulers a disk offers, and which one is active: "[none] mq-deadline". */
export function readScheduler(disk: string): { active: string | null; available: string[] } {
  const text = readFileSync(`/sys/block/${disk}/queue/scheduler`, 'utf8').trim();
  const available = text.split(/\s+/).map((s) => s.replace(/^\[|\]$/g, ''));
  const active = /\[([^\]]+)\]/.exec(text)?.[1] ?? null;
  return { active, available };
}
