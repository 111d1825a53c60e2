// What the running kernel's ublk can do, in words a user can act on.
import { existsSync, readFileSync } from 'node:fs';
import { release } from 'node:os';
import { native, type NativeUblkFlagName } from './native.js';

export interface KernelFeatures {
  kernel: string;
  available: boolean;
  /** Why ublk is unusable, with what to do about it; null when available. */
  problem: string | null;
  encoding: 'legacy' | 'ioctl';
  /** GET_FEATURES answer as flag names ("bit N" for one ubloop does not know), or null when the kernel has no GET_FEATURES (Linux < 6.5). */
  features: string[] | null;
  /** The same answer as a hex number, or null. */
  featureBits: string | null;
  /** ublk parameter types ubloop sets on its devices (UBLK_PARAM_TYPE_*). */
  parameterTypes: string[];
  /** Whether the kernel offers each optional path ubloop can use. */
  paths: {
    ioctlEncoding: boolean;
    userCopy: boolean;
    zeroCopy: boolean;
    unprivileged: boolean;
    userRecovery: boolean;
  };
}

export type UblkFlagName = NativeUblkFlagName;

let flagTable: { nameOf: Map<number, UblkFlagName>; bitOf: Map<UblkFlagName, number> } | undefined;

/** The addon's UBLK_F_* table (native/ublk_flags.h) by bit and by name, read once. */
function flags(): NonNullable<typeof flagTable> {
  flagTable ??= {
    nameOf: new Map(native().ublkFlags.map(([name, bit]) => [bit, name])),
    bitOf: new Map(native().ublkFlags.map(([name, bit]) => [name, bit])),
  };
  return flagTable;
}

/**
 * Names of the UBLK_F_* bits set in flags, from the addon's flag table; a bit the
 * table does not know (a newer kernel's) is named "bit N".
 */
export function flagNames(bits: bigint): string[] {
  const { nameOf } = flags();
  const names: string[] = [];
  for (let bit = 0; bit < 64; bit++) {
    if ((bits >> BigInt(bit)) & 1n) names.push(nameOf.get(bit) ?? `bit ${bit}`);
  }
  return names;
}

/** Whether bits has the UBLK_F_* flag of that name set. */
export function hasFlag(bits: bigint, name: UblkFlagName): boolean {
  const bit = flags().bitOf.get(name);
  if (bit === undefined) throw new Error(`the addon's flag table has no ${name}`);
  return ((bits >> BigInt(bit)) & 1n) === 1n;
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
  const has = (name: UblkFlagName) => (k.features === null ? false : hasFlag(k.features, name));
  // Linux 6.1 has user recovery but no GET_FEATURES to say so.
  const recovery = features ? has('UBLK_F_USER_RECOVERY') : k.present && kernelAtLeast(6, 0);
  return {
    kernel: release(),
    available: k.present,
    problem: k.present ? null : ublkProblem(k.controlError),
    encoding: k.encoding,
    features,
    featureBits: k.features === null ? null : `0x${k.features.toString(16)}`,
    parameterTypes: ['basic', 'discard'],
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
