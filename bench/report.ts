// Turns the raw runs into the Markdown report and the SVG chart. Every ratio is the
// median over repeats of (device IOPS / kernel-loop IOPS) taken in the same repeat and
// job, so that drift of the emulated machine cancels pair by pair.
import { JOBS } from './fio.js';
import type { BenchResult, PerIo, RunRecord } from './model.js';
import { PEER_CONFIGS } from './servers.js';

export const BASELINE = 'kernel-loop';
/** The device the targets and the peer comparison are about: ubloop at its defaults. */
export const UBLOOP = 'ubloop-direct q1';

/** Targets from issue 10 for ubloop's O_DIRECT loop target at its defaults (and null), on Linux 7.x. */
export const TARGETS: Readonly<Record<string, { device: string; min: number }[]>> = {
  'randread-qd1': [{ device: UBLOOP, min: 1.05 }],
  'randread-qd32': [
    { device: UBLOOP, min: 1.05 },
    { device: 'ubloop-null q1', min: 2.0 },
  ],
  'randwrite-qd32': [{ device: UBLOOP, min: 1.05 }],
  'randrw-qd32': [{ device: UBLOOP, min: 1.05 }],
  'seqread-1m-qd8': [{ device: UBLOOP, min: 1.3 }],
  'seqwrite-1m-qd8': [{ device: UBLOOP, min: 1.1 }],
};

/** Issue 10 on 6.1: ubloop no more than 3 % below a same-run measurement of the engine it replaced (--engine). */
export const ENGINE_FLOOR = 0.97;

/** The targets are set for the kernels users run now (7.x); 6.1 is measured against ubloop's own past. */
export function targetsApply(kernel: string): boolean {
  return /^[7-9]\.|^\d{2,}\./.test(kernel);
}

/** The best peer (kublk, ublksrv) of a job by median paired ratio, or null when none ran. */
export function bestPeer(result: BenchResult, job: string): { label: string; median: number } | null {
  let best: { label: string; median: number } | null = null;
  for (const d of result.devices) {
    if (!PEER_CONFIGS.includes(d.config as (typeof PEER_CONFIGS)[number])) continue;
    const s = ratioSummary(result.runs, job, d.label);
    if (s && (best === null || s.median > best.median)) best = { label: d.label, median: s.median };
  }
  return best;
}

export function median(xs: readonly number[]): number {
  const s = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  const mid = s.length >> 1;
  return s.length % 2 ? (s[mid] as number) : ((s[mid - 1] as number) + (s[mid] as number)) / 2;
}

export interface RatioSummary {
  median: number;
  min: number;
  max: number;
  n: number;
}

/** Paired per-repeat IOPS ratios of device to the baseline for one job. */
export function pairedRatios(runs: readonly RunRecord[], job: string, device: string): number[] {
  return pairedRatiosTo(runs, job, device, BASELINE);
}

/** Paired per-repeat IOPS ratios of `device` to `base` for one job. */
export function pairedRatiosTo(runs: readonly RunRecord[], job: string, device: string, base: string): number[] {
  const ratios: number[] = [];
  for (const r of runs) {
    if (r.job !== job || r.device !== device) continue;
    const b = runs.find((x) => x.job === job && x.device === base && x.repeat === r.repeat);
    if (b && b.fio.iops > 0) ratios.push(r.fio.iops / b.fio.iops);
  }
  return ratios;
}

function summary(ratios: readonly number[]): RatioSummary | null {
  if (ratios.length === 0) return null;
  return { median: median(ratios), min: Math.min(...ratios), max: Math.max(...ratios), n: ratios.length };
}

export function ratioSummary(runs: readonly RunRecord[], job: string, device: string): RatioSummary | null {
  return summary(pairedRatios(runs, job, device));
}

function jobsIn(result: BenchResult): string[] {
  return JOBS.map((j) => j.name).filter((name) => result.runs.some((r) => r.job === name));
}

function titleOf(job: string): string {
  return JOBS.find((j) => j.name === job)?.title ?? job;
}

function fmt(x: number | null, digits = 2): string {
  if (x === null || !Number.isFinite(x)) return '–';
  return x.toFixed(digits);
}

function fmtCount(x: number): string {
  if (!Number.isFinite(x)) return '–';
  if (x >= 1e6) return `${(x / 1e6).toFixed(2)}M`;
  if (x >= 1e4) return `${(x / 1e3).toFixed(1)}k`;
  return x.toFixed(0);
}

function medianOf(runs: readonly RunRecord[], pick: (r: RunRecord) => number | null): number | null {
  const xs = runs.map(pick).filter((x): x is number => x !== null && Number.isFinite(x));
  return xs.length ? median(xs) : null;
}

function table(header: string[], rows: string[][]): string {
  const line = (cells: string[]) => `| ${cells.join(' | ')} |`;
  return [line(header), line(header.map(() => '---')), ...rows.map(line)].join('\n');
}

export function markdown(result: BenchResult): string {
  const { meta } = result;
  const jobs = jobsIn(result);
  const others = result.devices.map((d) => d.label).filter((l) => l !== BASELINE);
  const out: string[] = [];
  out.push(`# ubloop vs kernel loop — ${meta.startedAt}`);
  out.push('');
  out.push(`Command: \`${meta.command}\``);
  out.push('');
  out.push(
    `Kernel ${meta.kernel}, CPU ${meta.cpuModel} × ${meta.cpus}` +
      (meta.hostCpuModel ? ` (host: ${meta.hostCpuModel})` : '') +
      `, commit ${meta.commit ?? 'unknown'}${meta.dirty ? ' (+ uncommitted changes)' : ''}, fio ${meta.fio}, node ${meta.node}.`,
  );
  out.push(
    `Image ${meta.imageBytes / 2 ** 20} MiB pre-filled on ${meta.imageFs}; fio io_uring direct=1, ` +
      `${meta.runtimeSec} s per job after a ${meta.rampSec} s ramp, ${meta.repeats} interleaved repeat(s).` +
      (meta.ubloopArgs.length ? ` Extra serve arguments: \`${meta.ubloopArgs.join(' ')}\`.` : ''),
  );
  out.push(
    `Load average: host ${meta.loadavg.hostAtLaunch ?? '?'} at launch; guest ${meta.loadavg.guestStart} at start, ` +
      `${meta.loadavg.guestEnd ?? '?'} at end. ${meta.conditions}`,
  );
  out.push('');
  out.push(
    table(
      ['device', 'path', 'data path', 'scheduler', 'server pid', 'engine, extra serve arguments'],
      result.devices.map((d) => [
        d.label,
        d.path,
        d.dataPath ?? '?',
        d.scheduler,
        d.pid === null ? 'kernel' : String(d.pid),
        [d.engine === undefined ? '' : `engine \`${d.engine}\``, d.variantArgs.length ? `\`${d.variantArgs.join(' ')}\`` : '']
          .filter(Boolean)
          .join(', '),
      ]),
    ),
  );
  out.push('');
  out.push('## IOPS relative to kernel loop');
  out.push('');
  const apply = targetsApply(meta.kernel);
  out.push(
    `Median of the per-repeat paired ratios, [min–max] over repeats. Targets (issue 10, Linux 7.x${apply ? '' : '; not marked on this kernel'}) ` +
      'in the last columns, with ubloop at its defaults divided by the best peer (kublk, ublksrv) of the same run.',
  );
  out.push('');
  const ratioRows = jobs.map((job) => {
    const cells = others.map((dev) => {
      const s = ratioSummary(result.runs, job, dev);
      if (!s) return '–';
      const target = apply ? TARGETS[job]?.find((t) => t.device === dev) : undefined;
      const mark = target ? (s.median >= target.min ? ' ✓' : ' ✗') : '';
      return s.n > 1 ? `**${fmt(s.median)}**${mark} [${fmt(s.min)}–${fmt(s.max)}]` : `**${fmt(s.median)}**${mark}`;
    });
    const targets = (TARGETS[job] ?? []).map((t) => `${t.device.replace(/ q1$/, '')} ≥ ${t.min}`).join(', ');
    const peer = bestPeer(result, job);
    const own = ratioSummary(result.runs, job, UBLOOP);
    const vsPeer = peer && own ? `${fmt(own.median / peer.median)}${own.median >= peer.median ? ' ✓' : ' ✗'} (${peer.label})` : '–';
    return [titleOf(job), ...cells, targets, vsPeer];
  });
  out.push(table(['job', ...others, 'target', `${UBLOOP} ÷ best peer`], ratioRows));
  out.push('');
  const engines = result.devices.filter((d) => d.engine !== undefined).map((d) => d.label);
  if (engines.length) {
    out.push('## ubloop against other builds of itself');
    out.push('');
    out.push(
      `Median of the per-repeat paired ratios ${UBLOOP} ÷ the other build (--engine), [min–max]; ` +
        `✓ when no more than ${Math.round((1 - ENGINE_FLOOR) * 100)} % below it.`,
    );
    out.push('');
    const rows = jobs.map((job) => [
      titleOf(job),
      ...engines.map((e) => {
        const s = summary(pairedRatiosTo(result.runs, job, UBLOOP, e));
        if (!s) return '–';
        const mark = s.median >= ENGINE_FLOOR ? ' ✓' : ' ✗';
        return s.n > 1 ? `**${fmt(s.median)}**${mark} [${fmt(s.min)}–${fmt(s.max)}]` : `**${fmt(s.median)}**${mark}`;
      }),
    ]);
    out.push(table(['job', ...engines.map((e) => `${UBLOOP} ÷ ${e}`)], rows));
    out.push('');
  }
  out.push('## Absolute (medians over repeats)');
  out.push('');
  const absRows: string[][] = [];
  for (const job of jobs) {
    for (const d of result.devices) {
      const rs = result.runs.filter((r) => r.job === job && r.device === d.label);
      if (!rs.length) continue;
      absRows.push([
        titleOf(job),
        d.label,
        fmtCount(medianOf(rs, (r) => r.fio.iops) ?? NaN),
        fmt((medianOf(rs, (r) => r.fio.bwBytes) ?? NaN) / 1e6, 1),
        fmt(medianOf(rs, (r) => r.fio.clatP50Us), 0),
        fmt(medianOf(rs, (r) => r.fio.clatP99Us), 0),
      ]);
    }
  }
  out.push(table(['job', 'device', 'IOPS', 'MB/s', 'p50 clat µs', 'p99 clat µs'], absRows));
  out.push('');
  out.push('## Efficiency per I/O (medians over repeats)');
  out.push('');
  out.push(
    'Server: the serving process (utime+stime from /proc/PID/stat; context switches from /proc/PID/task/*/status; ' +
      'io_uring_enter calls from its own counters). System: the whole guest (/proc/stat), fio included — the only ' +
      'place kernel loop\'s cost shows. An I/O is one fio-sized I/O as the disk saw it, ramp included.',
  );
  out.push('');
  const effRows: string[][] = [];
  const pick = (k: keyof PerIo) => (r: RunRecord) => r.perIo[k];
  for (const job of jobs) {
    for (const d of result.devices) {
      const rs = result.runs.filter((r) => r.job === job && r.device === d.label);
      if (!rs.length) continue;
      effRows.push([
        titleOf(job),
        d.label,
        fmt(medianOf(rs, pick('serverCpuUs')), 1),
        fmt(medianOf(rs, pick('serverEnters')), 3),
        fmt(medianOf(rs, pick('serverCtx')), 3),
        fmt(medianOf(rs, pick('systemCpuUs')), 1),
        fmt(medianOf(rs, pick('systemCtx')), 2),
      ]);
    }
  }
  out.push(
    table(['job', 'device', 'server CPU µs/IO', 'enters/IO', 'server ctx/IO', 'system CPU µs/IO', 'system ctx/IO'], effRows),
  );
  if (result.memory.length) {
    out.push('');
    out.push('## Memory');
    out.push('');
    out.push(
      table(
        ['what', 'devices', 'RSS MiB', 'peak RSS MiB', 'threads', 'note'],
        result.memory.map((m) => [
          m.what,
          String(m.devices),
          fmt(m.rssBytes / 2 ** 20, 1),
          fmt(m.hwmBytes / 2 ** 20, 1),
          String(m.threads),
          m.note,
        ]),
      ),
    );
  }
  out.push('');
  return out.join('\n');
}

const PALETTE = ['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd', '#8c564b', '#e377c2', '#7f7f7f', '#17becf'];

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

/** A grouped bar chart of the ratio medians: one group per job, one bar per device. */
export function svgChart(result: BenchResult): string {
  const jobs = jobsIn(result);
  const devices = result.devices.map((d) => d.label).filter((l) => l !== BASELINE);
  const values = jobs.map((job) => devices.map((dev) => ratioSummary(result.runs, job, dev)));
  const top = Math.max(2, ...values.flat().map((s) => (s ? s.max : 0))) * 1.08;
  const W = 960;
  const H = 440;
  const left = 50;
  const right = 200;
  const plotTop = 40;
  const plotBottom = H - 70;
  const plotW = W - left - right;
  const y = (v: number) => plotBottom - (v / top) * (plotBottom - plotTop);
  const groupW = plotW / Math.max(1, jobs.length);
  const barW = Math.max(4, (groupW * 0.8) / Math.max(1, devices.length));
  const parts: string[] = [];
  parts.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="11">`,
  );
  parts.push(`<rect width="${W}" height="${H}" fill="white"/>`);
  parts.push(
    `<text x="${left}" y="20" font-size="14">IOPS relative to kernel loop (median of paired repeats; whiskers min–max) — ${esc(result.meta.startedAt)}</text>`,
  );
  for (let t = 0; t <= top; t += 0.5) {
    parts.push(`<line x1="${left}" x2="${left + plotW}" y1="${y(t)}" y2="${y(t)}" stroke="#ddd"/>`);
    parts.push(`<text x="${left - 6}" y="${y(t) + 4}" text-anchor="end">${t.toFixed(1)}</text>`);
  }
  parts.push(`<line x1="${left}" x2="${left + plotW}" y1="${y(1)}" y2="${y(1)}" stroke="#000" stroke-dasharray="4 3"/>`);
  jobs.forEach((job, gi) => {
    const gx = left + gi * groupW + groupW * 0.1;
    devices.forEach((dev, di) => {
      const s = values[gi]?.[di];
      if (!s) return;
      const x = gx + di * barW;
      parts.push(
        `<rect x="${x.toFixed(1)}" y="${y(s.median).toFixed(1)}" width="${(barW - 1).toFixed(1)}" height="${(plotBottom - y(s.median)).toFixed(1)}" fill="${PALETTE[di % PALETTE.length]}"><title>${esc(`${dev} ${job}: ${s.median.toFixed(2)}`)}</title></rect>`,
      );
      if (s.n > 1) {
        const cx = (x + barW / 2).toFixed(1);
        parts.push(`<line x1="${cx}" x2="${cx}" y1="${y(s.min).toFixed(1)}" y2="${y(s.max).toFixed(1)}" stroke="#333"/>`);
      }
    });
    for (const t of TARGETS[job] ?? []) {
      const di = devices.indexOf(t.device);
      if (di < 0) continue;
      const x = gx + di * barW;
      parts.push(
        `<line x1="${(x - 2).toFixed(1)}" x2="${(x + barW + 1).toFixed(1)}" y1="${y(t.min).toFixed(1)}" y2="${y(t.min).toFixed(1)}" stroke="#c00" stroke-width="2"><title>target ${t.min}</title></line>`,
      );
    }
    parts.push(
      `<text x="${(left + gi * groupW + groupW / 2).toFixed(1)}" y="${plotBottom + 16}" text-anchor="middle">${esc(titleOf(job))}</text>`,
    );
  });
  devices.forEach((dev, di) => {
    const ly = plotTop + di * 18;
    parts.push(`<rect x="${left + plotW + 16}" y="${ly}" width="12" height="12" fill="${PALETTE[di % PALETTE.length]}"/>`);
    parts.push(`<text x="${left + plotW + 34}" y="${ly + 10}">${esc(dev)}</text>`);
  });
  const ly = plotTop + devices.length * 18 + 10;
  parts.push(`<line x1="${left + plotW + 16}" x2="${left + plotW + 28}" y1="${ly + 6}" y2="${ly + 6}" stroke="#c00" stroke-width="2"/>`);
  parts.push(`<text x="${left + plotW + 34}" y="${ly + 10}">target</text>`);
  parts.push(`<text x="${left}" y="${H - 20}" fill="#555">${esc(`${result.meta.kernel}, ${result.meta.cpus} CPU ${result.meta.cpuModel}, ${result.meta.runtimeSec} s jobs, ${result.meta.repeats} repeats`)}</text>`);
  parts.push('</svg>');
  return parts.join('\n');
}

/** For one job, a row per device with a cell per kernel's run; devices no run measured are left out. */
function deviceRows(
  runs: readonly { result: BenchResult }[],
  job: string,
  labels: readonly string[],
  cell: (result: BenchResult, label: string) => string,
): string[][] {
  return labels
    .map((label) => [titleOf(job), label, ...runs.map(({ result }) => cell(result, label))])
    .filter((row) => row.slice(2).some((c) => c !== '–'));
}

/** One report over runs on several kernels: per job, a column per kernel. */
export function kernelsMarkdown(runs: readonly { kernel: string; result: BenchResult }[], command: string): string {
  const out: string[] = [];
  const kernels = runs.map((r) => r.result.meta.kernel);
  out.push(`# ubloop vs kernel loop on ${kernels.join(' and ')}`);
  out.push('');
  out.push(`Command: \`${command}\`. Each kernel ran in its own VM, one after the other; every ratio pairs devices of the same run.`);
  out.push('Per-kernel reports (absolute numbers, efficiency, devices) are in the subdirectories named by kernel.');
  out.push('');
  const labels: string[] = [];
  for (const { result } of runs) for (const d of result.devices) if (d.label !== BASELINE && !labels.includes(d.label)) labels.push(d.label);
  const jobs = JOBS.map((j) => j.name).filter((name) => runs.some((r) => r.result.runs.some((x) => x.job === name)));
  out.push('## IOPS relative to kernel loop (median [min–max] of paired repeats)');
  out.push('');
  const rows: string[][] = [];
  for (const job of jobs) {
    rows.push(
      ...deviceRows(runs, job, labels, (result, label) => {
        const s = ratioSummary(result.runs, job, label);
        if (!s) return '–';
        const target = targetsApply(result.meta.kernel) ? TARGETS[job]?.find((t) => t.device === label) : undefined;
        const mark = target ? (s.median >= target.min ? ' ✓' : ' ✗') : '';
        return s.n > 1 ? `**${fmt(s.median)}**${mark} [${fmt(s.min)}–${fmt(s.max)}]` : `**${fmt(s.median)}**${mark}`;
      }),
    );
    const vs = runs.map(({ result }) => {
      const peer = bestPeer(result, job);
      const own = ratioSummary(result.runs, job, UBLOOP);
      return peer && own ? `${fmt(own.median / peer.median)} (${peer.label})` : '–';
    });
    if (vs.some((c) => c !== '–')) rows.push([titleOf(job), `${UBLOOP} ÷ best peer`, ...vs]);
  }
  out.push(table(['job', 'device', ...kernels], rows));
  out.push('');
  out.push('## Server cost per I/O (medians): CPU µs / io_uring_enter calls');
  out.push('');
  const effRows = jobs.flatMap((job) =>
    deviceRows(runs, job, labels, (result, label) => {
      const rs = result.runs.filter((r) => r.job === job && r.device === label);
      if (!rs.length) return '–';
      return `${fmt(medianOf(rs, (r) => r.perIo.serverCpuUs), 1)} / ${fmt(medianOf(rs, (r) => r.perIo.serverEnters), 2)}`;
    }),
  );
  out.push(table(['job', 'device', ...kernels], effRows));
  out.push('');
  return out.join('\n');
}
