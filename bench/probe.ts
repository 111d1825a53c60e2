// Readers of /proc and /sys: what a process and a disk did between two snapshots.
import { readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { cpus, release } from 'node:os';

/** Clock ticks per second of /proc/PID/stat utime and stime (USER_HZ; 100 on Linux). */
const CLK_TCK = 100;

export interface ProcSnapshot {
  /** utime + stime of all threads, in seconds (tick resolution). */
  cpuSec: number;
  /** Sum of the threads' run time from /proc/PID/task/T/schedstat, in seconds (ns resolution). */
  runSec: number;
  voluntaryCtx: number;
  nonvoluntaryCtx: number;
}

export interface SystemSnapshot {
  /** Busy CPU time of the whole machine (all but idle and iowait), in seconds. */
  busySec: number;
  /** Context switches of the whole machine. */
  ctxt: number;
}

export interface DiskSnapshot {
  readIos: number;
  readSectors: number;
  writeIos: number;
  writeSectors: number;
}

function fieldsAfterComm(stat: string): string[] {
  // The command name may hold spaces and parentheses; fields restart after the last ')'.
  return stat.slice(stat.lastIndexOf(')') + 2).split(' ');
}

function numberField(text: string, key: string): number {
  const m = new RegExp(`^${key}:\\s+(\\d+)`, 'm').exec(text);
  return m ? Number(m[1]) : 0;
}

export function procSnapshot(pid: number): ProcSnapshot {
  const f = fieldsAfterComm(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  // Field 14 utime and 15 stime; the slice starts at field 3 (state).
  const cpuSec = (Number(f[11]) + Number(f[12])) / CLK_TCK;
  let runNs = 0;
  let voluntaryCtx = 0;
  let nonvoluntaryCtx = 0;
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      const status = readFileSync(`/proc/${pid}/task/${tid}/status`, 'utf8');
      voluntaryCtx += numberField(status, 'voluntary_ctxt_switches');
      nonvoluntaryCtx += numberField(status, 'nonvoluntary_ctxt_switches');
      runNs += Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'utf8').split(' ')[0]);
    } catch {
      // The thread ended between readdir and read.
    }
  }
  return { cpuSec, runSec: runNs / 1e9, voluntaryCtx, nonvoluntaryCtx };
}

export function systemSnapshot(): SystemSnapshot {
  const stat = readFileSync('/proc/stat', 'utf8');
  const cpu = /^cpu\s+(.*)$/m.exec(stat)?.[1]?.trim().split(/\s+/).map(Number) ?? [];
  // user nice system idle iowait irq softirq steal ...
  const busyTicks = cpu.reduce((a, v, i) => (i === 3 || i === 4 ? a : a + v), 0);
  return { busySec: busyTicks / CLK_TCK, ctxt: numberField(stat.replace(/^ctxt /m, 'ctxt: '), 'ctxt') };
}

/** The /sys/block/NAME/stat counters of a disk (NAME without /dev/). */
export function diskSnapshot(disk: string): DiskSnapshot {
  const f = readFileSync(`/sys/block/${disk}/stat`, 'utf8').trim().split(/\s+/).map(Number);
  return { readIos: f[0] ?? 0, readSectors: f[2] ?? 0, writeIos: f[4] ?? 0, writeSectors: f[6] ?? 0 };
}

/** The scheduler in brackets in /sys/block/NAME/queue/scheduler. */
export function activeScheduler(disk: string): string {
  const text = readFileSync(`/sys/block/${disk}/queue/scheduler`, 'utf8');
  return /\[([^\]]+)\]/.exec(text)?.[1] ?? text.trim();
}

export function setScheduler(disk: string, scheduler: string): void {
  writeFileSync(`/sys/block/${disk}/queue/scheduler`, scheduler);
}

/** Resident and peak resident set size of a process, in bytes. */
export function memorySnapshot(pid: number): { rssBytes: number; hwmBytes: number; threads: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  return {
    rssBytes: numberField(status, 'VmRSS') * 1024,
    hwmBytes: numberField(status, 'VmHWM') * 1024,
    threads: numberField(status, 'Threads'),
  };
}

export function machineFacts(): { kernel: string; cpuModel: string; cpus: number; memTotalBytes: number } {
  const meminfo = readFileSync('/proc/meminfo', 'utf8');
  return {
    kernel: release(),
    cpuModel: cpus()[0]?.model ?? 'unknown',
    cpus: cpus().length,
    memTotalBytes: numberField(meminfo, 'MemTotal') * 1024,
  };
}

export function loadAverage(): string {
  return readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');
}
