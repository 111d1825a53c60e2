// Whether some process holds a device node open, found by scanning /proc/*/fd.
import { readdirSync, statSync } from 'node:fs';

/**
 * True when a process other than exceptPid has a descriptor on a block or char device
 * whose st_rdev is rdev (or one of the set, e.g. a disk and its partitions).
 */
export function someProcessHasOpen(kind: 'block' | 'char', rdev: bigint | ReadonlySet<bigint>, exceptPid = -1): boolean {
  const wanted: ReadonlySet<bigint> = typeof rdev === 'bigint' ? new Set([rdev]) : rdev;
  if (wanted.size === 0) return false;
  let pids: string[];
  try {
    pids = readdirSync('/proc').filter((p) => /^\d+$/.test(p) && Number(p) !== exceptPid);
  } catch {
    return false;
  }
  for (const pid of pids) {
    let fds: string[];
    try {
      fds = readdirSync(`/proc/${pid}/fd`);
    } catch {
      continue;
    }
    for (const fd of fds) {
      try {
        const st = statSync(`/proc/${pid}/fd/${fd}`, { bigint: true });
        const isKind = kind === 'block' ? st.isBlockDevice() : st.isCharacterDevice();
        if (isKind && wanted.has(st.rdev)) return true;
      } catch {
        // closed meanwhile
      }
    }
  }
  return false;
}
