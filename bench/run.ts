// The benchmark proper, on a machine with ublk: one pre-filled image, every device over
// it, fio jobs interleaved across devices, repeat after repeat.
import { execFileSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { existsSync, mkdirSync, statSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { JOBS, fioArgs, parseFio, runFio, type JobSpec } from './fio.js';
import { measureMemory } from './memory.js';
import { startPerf } from './perf.js';
import type { BenchMeta, BenchResult, DeviceRecord, RunRecord } from './model.js';
import { deviceMatrix, estimateSec, type BenchOptions } from './options.js';
import { diskSnapshot, loadAverage, machineFacts, procSnapshot, systemSnapshot } from './probe.js';
import { markdown, svgChart } from './report.js';
import { startServer, type Server, type ServerOptions } from './servers.js';
import { kernelFeatures } from '../lib/kernel.js';

export function log(line: string): void {
  process.stderr.write(`${line}\n`);
}

function duration(sec: number): string {
  const m = Math.floor(sec / 60);
  return m > 0 ? `${m} min ${Math.round(sec % 60)} s` : `${Math.round(sec)} s`;
}

function tryRun(cmd: string, args: string[]): string | null {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  } catch {
    return null;
  }
}

/** Writes IMAGE of `bytes` with fio's random data (so nothing is sparse or compressible). */
function createImage(path: string, bytes: number): void {
  if (existsSync(path) && statSync(path).size === bytes) return;
  execFileSync('fio', [
    '--name=fill',
    `--filename=${path}`,
    '--rw=write',
    '--bs=1M',
    `--size=${bytes}`,
    '--ioengine=psync',
    '--direct=1',
    '--end_fsync=1',
    '--output-format=terse',
  ]);
}

/**
 * Writes back and drops the page cache before every fio run, so that each device starts
 * with the image out of the cache: otherwise the buffered device's reads leave pages
 * that the next device finds (O_DIRECT writes on a cached range cannot be issued
 * without blocking, so io_uring hands them to its workers, while kernel loop's worker
 * simply waits), and every run would depend on which device ran before it.
 */
function dropPageCache(): void {
  try {
    execFileSync('sync');
    writeFileSync('/proc/sys/vm/drop_caches', '1\n');
  } catch (err) {
    log(`bench: could not drop the page cache: ${err instanceof Error ? err.message : String(err)}`);
  }
}

async function measure(server: Server, job: JobSpec, repeat: number, o: BenchOptions, dir: string): Promise<RunRecord> {
  dropPageCache();
  const perfName = `${job.name}-${server.label.replace(/\s+/g, '-')}-r${repeat}`;
  const perf = o.perf ? startPerf(join(dir, 'perf', `${perfName}.data`), join(dir, 'perf', `${perfName}.txt`)) : null;
  const statsBefore = await server.stats();
  const procBefore = server.pid === null ? null : procSnapshot(server.pid);
  const sysBefore = systemSnapshot();
  const diskBefore = diskSnapshot(server.disk);
  const t0 = process.hrtime.bigint();
  const out = await runFio(fioArgs(job, server.path, o.runtimeSec, o.rampSec), (o.runtimeSec + o.rampSec + 120) * 1000);
  const elapsedSec = Number(process.hrtime.bigint() - t0) / 1e9;
  const diskAfter = diskSnapshot(server.disk);
  const sysAfter = systemSnapshot();
  const procAfter = server.pid === null ? null : procSnapshot(server.pid);
  const statsAfter = await server.stats();
  let perfReport: string | null = null;
  if (perf) {
    try {
      perfReport = relative(dir, await perf.stop());
    } catch (err) {
      log(`bench: perf: ${err instanceof Error ? err.message : String(err)}`);
    }
  }

  const fio = parseFio(job, out);
  const sectors = diskAfter.readSectors - diskBefore.readSectors + (diskAfter.writeSectors - diskBefore.writeSectors);
  const ios = (sectors * 512) / job.bytes;
  const diskRequests = diskAfter.readIos - diskBefore.readIos + (diskAfter.writeIos - diskBefore.writeIos);
  const server_ =
    procBefore && procAfter
      ? {
          cpuSec: procAfter.cpuSec - procBefore.cpuSec,
          runSec: procAfter.runSec - procBefore.runSec,
          voluntaryCtx: procAfter.voluntaryCtx - procBefore.voluntaryCtx,
          nonvoluntaryCtx: procAfter.nonvoluntaryCtx - procBefore.nonvoluntaryCtx,
          ringEnters: statsBefore && statsAfter ? statsAfter.ringEnters - statsBefore.ringEnters : null,
          ops: statsBefore && statsAfter ? statsAfter.ops - statsBefore.ops : null,
        }
      : null;
  const system = { busySec: sysAfter.busySec - sysBefore.busySec, ctxt: sysAfter.ctxt - sysBefore.ctxt };
  const per = (x: number | null | undefined) => (x === null || x === undefined || ios <= 0 ? null : x / ios);
  return {
    repeat,
    job: job.name,
    device: server.label,
    config: server.config,
    queues: server.queues,
    fio,
    ios,
    diskRequests,
    elapsedSec,
    server: server_,
    system,
    perIo: {
      serverCpuUs: per(server_ ? server_.cpuSec * 1e6 : null),
      serverRunUs: per(server_ ? server_.runSec * 1e6 : null),
      serverCtx: per(server_ ? server_.voluntaryCtx + server_.nonvoluntaryCtx : null),
      serverEnters: per(server_?.ringEnters),
      systemCpuUs: per(system.busySec * 1e6) ?? NaN,
      systemCtx: per(system.ctxt) ?? NaN,
    },
    perfReport,
  };
}

function writeOutputs(dir: string, result: BenchResult): string {
  writeFileSync(join(dir, 'results.json'), `${JSON.stringify(result, null, 2)}\n`);
  const md = markdown(result);
  writeFileSync(join(dir, 'report.md'), md);
  writeFileSync(join(dir, 'chart.svg'), `${svgChart(result)}\n`);
  return md;
}

export async function runBench(o: BenchOptions, repoRoot: string, command: string): Promise<string> {
  const startedAt = new Date().toISOString();
  const dir = o.out ?? join(repoRoot, 'bench', 'results', startedAt.replace(/[:.]/g, '-'));
  mkdirSync(o.perf ? join(dir, 'perf') : dir, { recursive: true });
  if (!o.imageDir) throw new Error('no image directory: pass --image-dir (a filesystem with O_DIRECT) or run in the VM');
  const image = join(o.imageDir, 'ubloop-bench.img');
  const facts = machineFacts();
  const features = kernelFeatures().features ?? [];
  const meta: BenchMeta = {
    startedAt,
    finishedAt: null,
    command,
    ...facts,
    hostCpuModel: process.env.UBLK_BENCH_HOST_CPU ?? null,
    commit: process.env.UBLK_BENCH_COMMIT ?? tryRun('git', ['-C', repoRoot, 'rev-parse', 'HEAD']),
    dirty: process.env.UBLK_BENCH_DIRTY === undefined ? null : process.env.UBLK_BENCH_DIRTY === '1',
    node: process.version,
    fio: tryRun('fio', ['--version']) ?? 'unknown',
    imageBytes: o.imageBytes,
    imageFs: tryRun('findmnt', ['-n', '-o', 'FSTYPE,SOURCE', '--target', o.imageDir])?.replace(/\s+/g, ' on ') ?? 'unknown',
    runtimeSec: o.runtimeSec,
    rampSec: o.rampSec,
    repeats: o.memoryOnly ? 0 : o.repeats,
    jobs: o.memoryOnly ? [] : o.jobs,
    devices: [],
    ubloopArgs: o.ubloopArgs,
    loadavg: { hostAtLaunch: process.env.UBLK_BENCH_HOST_LOADAVG ?? null, guestStart: loadAverage(), guestEnd: null },
    conditions: o.conditions,
  };
  const result: BenchResult = { meta, devices: [], runs: [], memory: [] };
  log(`bench: results in ${dir}; estimated ${duration(estimateSec(o, features))}`);

  if (!o.memoryOnly) {
    log(`bench: writing a ${o.imageBytes / 2 ** 20} MiB image at ${image}`);
    createImage(image, o.imageBytes);
    const serverOptions: ServerOptions = {
      image,
      imageBytes: o.imageBytes,
      repoRoot,
      ubloopArgs: o.ubloopArgs,
      ublksrv: o.ublksrv,
      ublksrvScheduler: o.ublksrvScheduler,
      ublksrvZeroCopy: features.includes('UBLK_F_SUPPORT_ZERO_COPY'),
      kublk: o.kublk,
    };
    const servers: Server[] = [];
    const onSignal = () => {
      void Promise.allSettled(servers.map((s) => s.stop())).then(() => process.exit(130));
    };
    process.once('SIGINT', onSignal);
    process.once('SIGTERM', onSignal);
    try {
      for (const { config, queues, variant } of deviceMatrix(o, features)) {
        const s = await startServer(config, queues, serverOptions, variant);
        servers.push(s);
        const rec: DeviceRecord = {
          label: s.label,
          config: s.config,
          queues: s.queues,
          path: s.path,
          scheduler: s.scheduler,
          pid: s.pid,
          variantArgs: variant?.args ?? [],
          ...(variant?.root === undefined ? {} : { engine: variant.root }),
          dataPath: s.dataPath,
          info: s.info,
        };
        result.devices.push(rec);
        log(`bench: ${s.label} is ${s.path} (${s.dataPath}, scheduler ${s.scheduler}${s.pid === null ? '' : `, pid ${s.pid}`})`);
      }
      meta.devices = servers.map((s) => s.label);
      const jobs = o.jobs.map((name) => JOBS.find((j) => j.name === name) as JobSpec);
      const total = o.repeats * jobs.length * servers.length;
      const t0 = Date.now();
      let done = 0;
      for (let repeat = 1; repeat <= o.repeats; repeat++) {
        // Alternate the order (A B C, C B A, ...) so no device always runs first.
        const order = repeat % 2 === 1 ? servers : [...servers].reverse();
        for (const job of jobs) {
          for (const s of order) {
            const rec = await measure(s, job, repeat, o, dir);
            result.runs.push(rec);
            done++;
            const left = ((Date.now() - t0) / done) * (total - done);
            log(
              `[${done}/${total}] repeat ${repeat}/${o.repeats} ${job.name.padEnd(15)} ${s.label.padEnd(20)} ` +
                `${(rec.fio.iops / 1000).toFixed(1).padStart(7)}k IOPS  p99 ${rec.fio.clatP99Us.toFixed(0)} µs  ` +
                `cpu/IO ${rec.perIo.serverCpuUs?.toFixed(1) ?? '–'} µs  enters/IO ${rec.perIo.serverEnters?.toFixed(2) ?? '–'}  ` +
                `(${duration(left / 1000)} left)`,
            );
          }
          writeFileSync(join(dir, 'results.json'), `${JSON.stringify(result, null, 2)}\n`);
        }
        writeOutputs(dir, result);
      }
    } finally {
      process.removeListener('SIGINT', onSignal);
      process.removeListener('SIGTERM', onSignal);
      for (const s of servers.reverse()) {
        try {
          await s.stop();
        } catch (err) {
          log(`bench: stopping ${s.label}: ${err instanceof Error ? err.message : String(err)}`);
        }
      }
    }
  }
  if (o.memory || o.memoryOnly) {
    log(`bench: memory (1 and ${o.memoryDevices} devices)`);
    result.memory = await measureMemory(repoRoot, o.imageDir ?? tmpdir(), o.memoryDevices);
  }
  meta.finishedAt = new Date().toISOString();
  meta.loadavg.guestEnd = loadAverage();
  const md = writeOutputs(dir, result);
  log(`bench: wrote ${join(dir, 'results.json')}, report.md, chart.svg`);
  return md;
}
