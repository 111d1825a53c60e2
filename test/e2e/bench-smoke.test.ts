// ubloop-e2e-kernels: >=7.0 -- runs once, on the kernel users run: it proves the bench harness (fio jobs, reports), whose device paths every other file runs on both kernels; 6.1 numbers come from npm run bench
// A short run of the benchmark (`npm run bench -- --smoke`: 1 repeat, 1 s jobs, every
// device; three of the six jobs — QD1 reads, a read/write mix and 1M writes — to keep
// it short on a loaded 2-core TCG guest) so that it cannot rot: it must finish, and
// what it writes must hold one sane measurement per device and job, the ratio table,
// the chart and the memory figures.
import t from 'tap';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { BenchResult } from '../../bench/model.js';
import { ROOT, run, waitGone, workDir } from '../helpers/e2e.js';

const JOB_NAMES = ['randread-qd1', 'randrw-qd32', 'seqwrite-1m-qd8'];
const JOB_TITLES = ['4k randread QD1', '4k randrw 70/30 QD32', '1M seq write QD8'];
const DEVICES = ['kernel-loop', 'ubloop-direct q1', 'ubloop-buffered q1', 'ubloop-null q1'];

t.test('bench --smoke measures every device and job and writes JSON, Markdown and SVG', async (t) => {
  const dir = workDir(t, true);
  const out = join(dir, 'results');
  const r = run(process.execPath, [
      join(ROOT, 'dist', 'bench', 'main.js'),
      '--smoke',
      '--jobs',
      JOB_NAMES.join(','),
      '--out',
      out,
      '--image-dir',
      dir,
    ], {
    cwd: ROOT,
    timeout: 380_000,
  });
  t.equal(r.status, 0, `bench exits 0 ${r.stderr.trim().split('\n').slice(-5).join(' | ')}`);
  t.match(r.stderr, /estimated \d+/, 'it prints its estimated duration');
  t.match(r.stderr, /\[1\/12\] repeat 1\/1/, 'it shows progress per fio run');
  t.match(r.stdout, /## IOPS relative to kernel loop/, 'the Markdown report is printed at the end');

  const resultFile = join(out, 'results.json');
  t.ok(existsSync(resultFile), 'results.json written');
  if (!existsSync(resultFile)) return;
  const result = JSON.parse(readFileSync(resultFile, 'utf8')) as BenchResult;
  t.match(result.meta.kernel, /^\d+\.\d+/, 'kernel version recorded');
  t.ok(result.meta.cpuModel.length > 0, 'CPU model recorded');
  t.same(
    result.devices.map((d) => d.label),
    DEVICES,
    'kernel loop and the three ubloop configurations were measured',
  );
  for (const d of result.devices) {
    t.match(d.scheduler, /^(none|mq-deadline|kyber|bfq)$/, `${d.label} ran with scheduler ${d.scheduler}`);
    if (d.config !== 'kernel-loop') t.equal(d.scheduler, 'none', `${d.label}: ubloop's default scheduler is none`);
  }
  t.equal(result.runs.length, JOB_NAMES.length * DEVICES.length, 'one run per job and device');
  for (const rec of result.runs) {
    const what = `${rec.job} on ${rec.device}`;
    t.ok(rec.fio.iops > 0 && rec.fio.bwBytes > 0, `${what}: ${rec.fio.iops.toFixed(0)} IOPS`);
    t.equal(rec.fio.errors, 0, `${what}: no fio error`);
    t.ok(rec.fio.clatP50Us > 0 && rec.fio.clatP99Us >= rec.fio.clatP50Us, `${what}: p50 <= p99 latency`);
    // The disk saw at least the I/Os fio counted after the ramp.
    t.ok(rec.ios >= rec.fio.totalIos * 0.99, `${what}: disk saw ${rec.ios} I/Os, fio counted ${rec.fio.totalIos}`);
    if (rec.config === 'kernel-loop') {
      t.equal(rec.server, null, `${what}: no server process`);
      continue;
    }
    const s = rec.server;
    t.ok(s && s.ops !== null && s.ops >= rec.fio.totalIos, `${what}: server counted ${s?.ops} requests`);
    t.ok(s && s.cpuSec > 0, `${what}: server CPU time measured`);
    // Busy-polling makes many enters per I/O at low depth, but no thread makes 10 million
    // system calls a second: more would be a counter in the wrong unit.
    const enters = rec.perIo.serverEnters;
    t.ok(enters !== null && enters > 0 && enters * rec.fio.iops < 1e7, `${what}: ${enters?.toFixed(2)} io_uring_enter per I/O`);
    t.ok(rec.perIo.serverCtx !== null && rec.perIo.serverCtx >= 0, `${what}: context switches per I/O measured`);
  }

  const md = readFileSync(join(out, 'report.md'), 'utf8');
  for (const title of JOB_TITLES) {
    t.match(md, new RegExp(`\\| ${title} \\| \\*\\*\\d+\\.\\d\\d\\*\\*`), `report.md has a ratio row for ${title}`);
  }
  const svg = readFileSync(join(out, 'chart.svg'), 'utf8');
  t.match(svg, /^<svg [^>]*xmlns="http:\/\/www.w3.org\/2000\/svg"/, 'chart.svg is an SVG document');
  t.equal((svg.match(/<rect [^>]*><title>/g) ?? []).length, JOB_NAMES.length * (DEVICES.length - 1), 'one bar per job and ubloop device');

  t.equal(result.memory.length, 9, 'memory: serve, daemon with 1 and with 4 attached, each idle, after I/O and after the idle release');
  for (const m of result.memory) t.ok(m.rssBytes > 1 << 20 && m.hwmBytes >= m.rssBytes * 0.99, `${m.what}: RSS ${(m.rssBytes / 2 ** 20).toFixed(1)} MiB`);
  // The daemon with 4 devices, on this kernel in the auto-buf data path: the image I/O
  // works on the request pages, so writes fault in none of the queues' buffers.
  const [idle, busy, released] = result.memory.slice(6).map((m) => m.rssBytes / 2 ** 20) as [number, number, number];
  t.ok(busy - idle < 8, `writes did not grow the daemon's RSS by a buffer's worth (${idle.toFixed(1)} -> ${busy.toFixed(1)} MiB)`);
  t.ok(released <= busy + 1, `and it stays there once idle (${busy.toFixed(1)} -> ${released.toFixed(1)} MiB)`);

  // Nothing is left behind: every device of the run is gone.
  for (const d of result.devices) {
    if (d.config === 'kernel-loop') {
      t.notMatch(run('losetup', ['--list', '--noheadings']).stdout, d.path, `${d.path} detached`);
    } else {
      t.same(await waitGone(Number(d.path.replace('/dev/ublkb', ''))), [], `${d.path} removed`);
    }
  }
});
