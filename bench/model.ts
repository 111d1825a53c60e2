// What one benchmark run records; the JSON result file is a BenchResult.
import type { FioResult } from './fio.js';
import type { ConfigName } from './servers.js';

/** Counters of the serving process over one fio run (ramp included). */
export interface ServerDelta {
  /** utime + stime from /proc/PID/stat, seconds. */
  cpuSec: number;
  /** Sum of per-thread schedstat run time, seconds. */
  runSec: number;
  voluntaryCtx: number;
  nonvoluntaryCtx: number;
  /** io_uring_enter calls of the queue loops (ubloop's SIGUSR1 stats), or null. */
  ringEnters: number | null;
  /** Requests the server completed (its own count), or null. */
  ops: number | null;
}

export interface PerIo {
  serverCpuUs: number | null;
  serverRunUs: number | null;
  serverCtx: number | null;
  serverEnters: number | null;
  /** Whole machine: fio + server + kernel workers + everything else running. */
  systemCpuUs: number;
  systemCtx: number;
}

export interface RunRecord {
  repeat: number;
  job: string;
  device: string;
  config: ConfigName;
  queues: number;
  fio: FioResult;
  /** I/Os of fio's size seen by the disk over the whole run (ramp included), from /sys/block/X/stat. */
  ios: number;
  /** Requests the disk completed (after splitting), from /sys/block/X/stat. */
  diskRequests: number;
  elapsedSec: number;
  server: ServerDelta | null;
  system: { busySec: number; ctxt: number };
  perIo: PerIo;
  /** Text report of `perf record` over this run (with --perf), relative to the result directory. */
  perfReport: string | null;
}

export interface DeviceRecord {
  label: string;
  config: ConfigName;
  queues: number;
  path: string;
  scheduler: string;
  pid: number | null;
  /** Extra `ubloop serve` arguments of a --variant device. */
  variantArgs: string[];
  /** The other ubloop checkout that served this device (--engine), absent for this one. */
  engine?: string;
  /** ubloop's data path as the device reported it, or the peer's mode (absent in older results). */
  dataPath?: string;
  info: unknown;
}

export interface MemoryRecord {
  what: string;
  devices: number;
  rssBytes: number;
  hwmBytes: number;
  threads: number;
  note: string;
}

export interface BenchMeta {
  startedAt: string;
  finishedAt: string | null;
  command: string;
  kernel: string;
  cpuModel: string;
  hostCpuModel: string | null;
  cpus: number;
  memTotalBytes: number;
  commit: string | null;
  dirty: boolean | null;
  node: string;
  fio: string;
  imageBytes: number;
  imageFs: string;
  runtimeSec: number;
  rampSec: number;
  repeats: number;
  jobs: string[];
  devices: string[];
  ubloopArgs: string[];
  loadavg: { hostAtLaunch: string | null; guestStart: string; guestEnd: string | null };
  conditions: string;
}

export interface BenchResult {
  meta: BenchMeta;
  devices: DeviceRecord[];
  runs: RunRecord[];
  memory: MemoryRecord[];
}
