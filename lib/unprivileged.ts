// Devices an ordinary user adds and owns (UBLK_F_UNPRIVILEGED_DEV, Linux 6.3+). The
// kernel lets a caller without CAP_SYS_ADMIN add one if it can open /dev/ublk-control,
// and checks every later command against the caller's permission on /dev/ublkcN. The
// nodes appear root's, so something root runs must hand them to the device's owner:
// the udev rule in contrib/udev, which runs `ubloop udev` (lib/udev-handover.ts).
// Without that handover the user could add a device and then neither serve nor
// delete it, so a user is refused before ADD_DEV unless one is installed.
import { accessSync, constants, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { UbloopError } from './errors.js';
import { kernelFeatures } from './kernel.js';

const CAP_SYS_ADMIN = 21n;

/** Whether this process has CAP_SYS_ADMIN (its effective set, /proc/self/status). */
export function hasCapSysAdmin(status = readFileSync('/proc/self/status', 'utf8')): boolean {
  const m = /^CapEff:\s*([0-9a-f]+)$/m.exec(status);
  return m !== null && ((BigInt(`0x${m[1]}`) >> CAP_SYS_ADMIN) & 1n) === 1n;
}

/** Where udev reads rules, in its own order of precedence. */
export const UDEV_RULE_DIRS = ['/etc/udev/rules.d', '/run/udev/rules.d', '/usr/local/lib/udev/rules.d', '/usr/lib/udev/rules.d', '/lib/udev/rules.d'];

/**
 * What hands /dev/ublkcN and /dev/ublkbN to their owner here: a udev rule that runs
 * `ubloop udev` (or any rule naming ublkc nodes), or a kernel uevent helper
 * (/proc/sys/kernel/hotplug, where there is no udev); null when nothing does.
 */
export function findHandover(ruleDirs = UDEV_RULE_DIRS, hotplug = '/proc/sys/kernel/hotplug'): string | null {
  for (const dir of ruleDirs) {
    let names: string[];
    try {
      names = readdirSync(dir).filter((n) => n.endsWith('.rules')).sort();
    } catch {
      continue;
    }
    for (const name of names) {
      try {
        if (/ubloop udev|ublkc/.test(readFileSync(join(dir, name), 'utf8'))) return join(dir, name);
      } catch {
        // unreadable rule: not evidence either way
      }
    }
  }
  try {
    const helper = readFileSync(hotplug, 'utf8').trim();
    if (helper !== '') return `uevent helper ${helper}`;
  } catch {
    // no uevent helper support
  }
  return null;
}

const RULE_HINT = 'install contrib/udev/99-ubloop.rules (see README, "Devices without root")';

/**
 * Refuses, with what is missing, a caller without CAP_SYS_ADMIN that could not get a
 * working device: no access to /dev/ublk-control, a kernel without unprivileged
 * devices, or no handover of the nodes. Returns quietly for root and when all is there.
 */
export function checkCanAddDevice(): void {
  if (hasCapSysAdmin()) return;
  const k = kernelFeatures();
  if (!k.available) {
    if (k.problem !== null && /EACCES|EPERM/.test(k.problem)) {
      throw new UbloopError(
        'EACCES',
        `cannot open /dev/ublk-control: Permission denied. Adding a ublk device needs root, or a kernel with unprivileged ublk devices (Linux 6.3+) and the ubloop udev rule, which opens /dev/ublk-control to group "ublk": ${RULE_HINT}, then join that group`,
      );
    }
    throw new UbloopError('ENODEV', k.problem ?? 'ublk is not available');
  }
  if (!k.paths.unprivileged) {
    throw new UbloopError(
      'EPERM',
      `this kernel (${k.kernel}) lets only root add ublk devices: its ublk lacks UBLK_F_UNPRIVILEGED_DEV (Linux 6.3+${k.features === null ? '; it has no GET_FEATURES either' : ''}); run ubloop as root`,
    );
  }
  if (findHandover() === null) {
    throw new UbloopError(
      'EPERM',
      `nothing here hands /dev/ublkcN and /dev/ublkbN to the user who adds a device, so it could be neither served nor deleted: ${RULE_HINT}`,
    );
  }
}

/** The kernel's cap on unprivileged devices, or null where it cannot be read. */
export function ublksMax(path = '/sys/module/ublk_drv/parameters/ublks_max'): number | null {
  try {
    const n = Number(readFileSync(path, 'utf8').trim());
    return Number.isInteger(n) ? n : null;
  } catch {
    return null;
  }
}

/** ADD_DEV's EACCES for a user: the kernel's ublks_max cap, said so. */
export function explainAddError(err: unknown): unknown {
  const e = err as { code?: string; syscall?: string };
  if (e?.code !== 'EACCES' || e.syscall !== 'ADD_DEV' || hasCapSysAdmin()) return err;
  const max = ublksMax();
  return new UbloopError(
    'EACCES',
    `the kernel refused another unprivileged ublk device (ADD_DEV: EACCES): its limit, ublks_max${max === null ? '' : ` = ${max}`}, is reached; root can raise it in /sys/module/ublk_drv/parameters/ublks_max`,
  );
}

/**
 * Waits until this process may open a node udev is handing over (an unprivileged
 * device's /dev/ublkbN appears at START_DEV, root's), so that the path a user is
 * given opens at once. Rejects after `ms` with what is missing.
 */
export async function waitForOwnNode(path: string, ms = 30_000): Promise<void> {
  const end = Date.now() + ms;
  for (;;) {
    try {
      accessSync(path, constants.R_OK | constants.W_OK);
      return;
    } catch (err) {
      if (Date.now() >= end) {
        throw new UbloopError('EACCES', `${path} is still not yours after ${ms / 1000} s (${(err as { code?: string }).code ?? 'error'}): nothing handed it to its owner; ${RULE_HINT}`);
      }
    }
    await new Promise((r) => setTimeout(r, 20));
  }
}
