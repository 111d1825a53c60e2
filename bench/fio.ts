// The fio jobs of the benchmark and what is kept of fio's JSON output.
import { spawn } from 'node:child_process';

export interface JobSpec {
  /** Short stable name, used in tables and on the command line. */
  name: string;
  title: string;
  rw: 'randread' | 'randwrite' | 'randrw' | 'read' | 'write';
  bs: string;
  /** Bytes per I/O, to turn sector counts into I/O counts. */
  bytes: number;
  iodepth: number;
  rwmixread?: number;
}

export const JOBS: readonly JobSpec[] = [
  { name: 'randread-qd1', title: '4k randread QD1', rw: 'randread', bs: '4k', bytes: 4096, iodepth: 1 },
  { name: 'randread-qd32', title: '4k randread QD32', rw: 'randread', bs: '4k', bytes: 4096, iodepth: 32 },
  { name: 'randwrite-qd32', title: '4k randwrite QD32', rw: 'randwrite', bs: '4k', bytes: 4096, iodepth: 32 },
  { name: 'randrw-qd32', title: '4k randrw 70/30 QD32', rw: 'randrw', bs: '4k', bytes: 4096, iodepth: 32, rwmixread: 70 },
  { name: 'seqread-1m-qd8', title: '1M seq read QD8', rw: 'read', bs: '1M', bytes: 1 << 20, iodepth: 8 },
  { name: 'seqwrite-1m-qd8', title: '1M seq write QD8', rw: 'write', bs: '1M', bytes: 1 << 20, iodepth: 8 },
];

export interface FioResult {
  iops: number;
  readIops: number;
  writeIops: number;
  /** Bytes per second, reads plus writes. */
  bwBytes: number;
  /** Completion latency percentiles in microseconds, of reads (of writes for write-only jobs). */
  clatP50Us: number;
  clatP99Us: number;
  clatMeanUs: number;
  /** fio's own count of I/Os in the measured window (after the ramp). */
  totalIos: number;
  errors: number;
}

export function fioArgs(job: JobSpec, device: string, runtimeSec: number, rampSec: number): string[] {
  const args = [
    `--name=${job.name}`,
    `--filename=${device}`,
    '--ioengine=io_uring',
    '--direct=1',
    `--rw=${job.rw}`,
    `--bs=${job.bs}`,
    `--iodepth=${job.iodepth}`,
    '--time_based',
    `--runtime=${runtimeSec}`,
    `--ramp_time=${rampSec}`,
    '--norandommap',
    '--randrepeat=0',
    '--output-format=json',
  ];
  if (job.rwmixread !== undefined) args.push(`--rwmixread=${job.rwmixread}`);
  return args;
}

interface FioDir {
  iops: number;
  bw_bytes: number;
  total_ios: number;
  clat_ns: { mean: number; percentile?: Record<string, number> };
}

function isDir(v: unknown): v is FioDir {
  return typeof v === 'object' && v !== null && typeof (v as FioDir).iops === 'number' && 'clat_ns' in v;
}

export function parseFio(job: JobSpec, stdout: string): FioResult {
  // fio may print warnings before the JSON document.
  const start = stdout.indexOf('{');
  const doc = JSON.parse(stdout.slice(start)) as { jobs?: Record<string, unknown>[] };
  const j = doc.jobs?.[0];
  if (!j || !isDir(j.read) || !isDir(j.write)) throw new Error(`fio ${job.name}: no job results in its JSON output`);
  const main = job.rw === 'randwrite' || job.rw === 'write' ? j.write : j.read;
  const pct = (p: string) => (main.clat_ns.percentile?.[p] ?? NaN) / 1000;
  return {
    iops: j.read.iops + j.write.iops,
    readIops: j.read.iops,
    writeIops: j.write.iops,
    bwBytes: j.read.bw_bytes + j.write.bw_bytes,
    clatP50Us: pct('50.000000'),
    clatP99Us: pct('99.000000'),
    clatMeanUs: main.clat_ns.mean / 1000,
    totalIos: j.read.total_ios + j.write.total_ios,
    errors: typeof j.error === 'number' ? j.error : 0,
  };
}

/** Runs fio to completion; rejects with fio's stderr when it fails. */
export function runFio(args: readonly string[], timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn('fio', args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      if (code === 0) resolve(out);
      else reject(new Error(`fio ${args.join(' ')} failed (${signal ?? `exit ${code}`}): ${err.trim().split('\n').slice(-3).join(' | ')}`));
    });
  });
}
