// Command-line options of `npm run bench` (after `--`), with the smoke and full presets.
import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { COPY_MODES } from '../lib/device-options.js';
import { JOBS } from './fio.js';
import { CONFIG_NAMES, type ConfigName } from './servers.js';

/** The test kernels the bench can boot (../shared/vm): label -> bzImage. */
export const BENCH_KERNELS: Readonly<Record<string, string>> = { '7.3': 'bzImage-7.3', '6.1': 'bzImage' };
/** The UBLK_F_* flag each data path and kublk mode needs from the kernel. */
const NEEDS: Readonly<Record<string, string>> = {
  user: 'UBLK_F_USER_COPY',
  zero: 'UBLK_F_SUPPORT_ZERO_COPY',
  'auto-buf': 'UBLK_F_AUTO_BUF_REG',
  'kublk-auto-zc': 'UBLK_F_AUTO_BUF_REG',
  'kublk-auto-zc-batch': 'UBLK_F_BATCH_IO',
};

export interface Variant {
  name: string;
  args: string[];
  /** Another ubloop checkout (built) that serves this device instead of this one (--engine), or absent. */
  root?: string;
}

export interface BenchOptions {
  smoke: boolean;
  repeats: number;
  runtimeSec: number;
  rampSec: number;
  queues: number[];
  configs: ConfigName[];
  jobs: string[];
  imageBytes: number;
  imageDir: string | null;
  out: string | null;
  /** Run the memory measurement (after the fio runs, or alone with memoryOnly). */
  memory: boolean;
  memoryOnly: boolean;
  memoryDevices: number;
  ubloopArgs: string[];
  /** Extra ubloop O_DIRECT devices, each with its own serve arguments, measured in the same run. */
  variants: Variant[];
  /** Other ubloop builds (e.g. an older commit) measured at their defaults as ubloop-direct+NAME. */
  engines: Variant[];
  ublksrv: string | null;
  ublksrvScheduler: string;
  /** kublk built from linux-source-7.3 (bench/build-kublk.sh), or null: built at bench time when needed. */
  kublk: string | null;
  /** Test kernels to run on, one VM each, one after the other (a ublk host runs its own kernel once). */
  kernels: string[];
  /** ubloop data paths measured on ubloop-direct (those the kernel offers). */
  copyModes: string[];
  vmMemMiB: number;
  /** Extra seconds per fio run for setup, snapshots and fio's own start (for the estimate). */
  overheadSec: number;
  conditions: string;
  /** Record a system-wide perf profile (cpu-clock) of every fio run into <out>/perf/. */
  perf: boolean;
}

export const USAGE = `usage: npm run bench -- [options]
  --smoke                 short run: 1 repeat, 1 s jobs after a 1 s ramp, 1 queue, 64 MiB image,
                          4 devices for memory (what the e2e smoke test runs)
  --repeats N             interleaved repeats (default 5)
  --runtime S             seconds per fio job after the ramp (default 10)
  --ramp S                fio ramp_time (default 2)
  --queues LIST           ubloop queue counts, e.g. 1,2 (default 1,2)
  --configs LIST          of ${CONFIG_NAMES.join(', ')}
                          (default: all but ublksrv; ublksrv too when a binary is given)
  --jobs LIST             of ${JOBS.map((j) => j.name).join(', ')} (default all)
  --image-size MiB        image size (default 1024)
  --image-dir DIR         where the image goes (default $UBLK_VM_SCRATCH; must support O_DIRECT)
  --out DIR               result directory (default bench/results/<timestamp>)
  --memory                measure memory only (serve, daemon with 1 and 64 attached), no fio runs
  --no-memory             skip the memory measurement after the fio runs
  --memory-devices N      images attached to the daemon for the memory figure (default 64)
  --ubloop-args "ARGS"    extra arguments for every \`ubloop serve\` (e.g. "--depth 64")
  --variant NAME=ARGS     also measure ubloop-direct with these serve arguments, labelled
                          ubloop-direct+NAME (repeatable), e.g. --variant "maxio512k=--max-io 512K"
  --engine NAME=DIR       also measure ubloop-direct as served by another built ubloop checkout
                          (e.g. a git worktree of an older commit), labelled ubloop-direct+NAME
  --ublksrv PATH          also measure ublksrv's \`ublk\` binary (or env UBLK_BENCH_UBLKSRV)
  --ublksrv-scheduler S   scheduler set on ublksrv's and kublk's disks (default none)
  --kublk PATH            the kernel's reference server (or env UBLK_BENCH_KUBLK); default: built
                          by bench/build-kublk.sh into bench/results/kublk when a kernel offers it
  --kernel LIST           test kernels: 7.3, 6.1, all (default all: one VM each, one report column
                          per kernel); ignored on a host whose own kernel has ublk
  --copy LIST             ubloop data paths measured on ubloop-direct, of ${COPY_MODES.join(', ')}
                          (default all, --smoke: auto; each only where the kernel offers it)
  --vm-mem MiB            guest memory when relaunched in the VM (default 3072)
  --conditions TEXT       free text describing the conditions, copied into the report
  --perf                  record a system-wide perf profile of every fio run (out/perf/*.txt);
                          profiling slows the runs: use it with --jobs/--configs, not for ratios`;

function list(text: string): string[] {
  return text
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
}

function positive(name: string, text: string, allowZero = false): number {
  const n = Number(text);
  if (!Number.isFinite(n) || n < 0 || (!allowZero && n === 0)) throw new Error(`--${name} must be a positive number, got "${text}"`);
  return n;
}

export function parseOptions(argv: readonly string[]): BenchOptions {
  const { values } = parseArgs({
    args: [...argv],
    options: {
      smoke: { type: 'boolean', default: false },
      repeats: { type: 'string' },
      runtime: { type: 'string' },
      ramp: { type: 'string' },
      queues: { type: 'string' },
      configs: { type: 'string' },
      jobs: { type: 'string' },
      'image-size': { type: 'string' },
      'image-dir': { type: 'string' },
      out: { type: 'string' },
      memory: { type: 'boolean', default: false },
      'no-memory': { type: 'boolean', default: false },
      'memory-devices': { type: 'string' },
      'ubloop-args': { type: 'string' },
      variant: { type: 'string', multiple: true },
      engine: { type: 'string', multiple: true },
      ublksrv: { type: 'string' },
      'ublksrv-scheduler': { type: 'string', default: 'none' },
      kublk: { type: 'string' },
      kernel: { type: 'string' },
      copy: { type: 'string' },
      'vm-mem': { type: 'string', default: '3072' },
      perf: { type: 'boolean', default: false },
      conditions: { type: 'string', default: '' },
      help: { type: 'boolean', default: false },
    },
    strict: true,
  });
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    process.exit(0);
  }
  const smoke = values.smoke ?? false;
  const ublksrv = values.ublksrv ?? process.env.UBLK_BENCH_UBLKSRV ?? null;
  // kublk's configurations are in the default set; each runs only where the kernel
  // offers its flags (see deviceMatrix).
  const configs = values.configs
    ? list(values.configs)
    : CONFIG_NAMES.filter((c) => c !== 'ublksrv' || ublksrv !== null);
  const kernelsText = values.kernel ?? process.env.UBLK_BENCH_KERNELS ?? 'all';
  const kernels = list(kernelsText).flatMap((k) => (k === 'all' ? Object.keys(BENCH_KERNELS) : [k]));
  for (const k of kernels) {
    if (!(k in BENCH_KERNELS)) throw new Error(`--kernel: unknown test kernel "${k}" (known: ${Object.keys(BENCH_KERNELS).join(', ')}, all)`);
  }
  const copyModes = list(values.copy ?? (smoke ? 'auto' : COPY_MODES.join(',')));
  for (const m of copyModes) {
    if (!(COPY_MODES as readonly string[]).includes(m)) throw new Error(`--copy: unknown data path "${m}" (known: ${COPY_MODES.join(', ')})`);
  }
  for (const c of configs) {
    if (!CONFIG_NAMES.includes(c as ConfigName)) throw new Error(`--configs: unknown configuration "${c}"`);
  }
  if (!configs.includes('kernel-loop')) throw new Error('--configs must include kernel-loop: every ratio is to it');
  const jobs = values.jobs ? list(values.jobs) : JOBS.map((j) => j.name);
  for (const j of jobs) {
    if (!JOBS.some((k) => k.name === j)) throw new Error(`--jobs: unknown job "${j}"`);
  }
  const queues = list(values.queues ?? (smoke ? '1' : '1,2')).map((q) => positive('queues', q));
  return {
    smoke,
    repeats: positive('repeats', values.repeats ?? (smoke ? '1' : '5')),
    runtimeSec: positive('runtime', values.runtime ?? (smoke ? '1' : '10')),
    rampSec: positive('ramp', values.ramp ?? (smoke ? '1' : '2'), true),
    queues,
    configs: configs as ConfigName[],
    jobs,
    imageBytes: positive('image-size', values['image-size'] ?? (smoke ? '64' : '1024')) * 2 ** 20,
    imageDir: values['image-dir'] ?? process.env.UBLK_VM_SCRATCH ?? null,
    out: values.out ?? null,
    memory: !(values['no-memory'] ?? false),
    memoryOnly: values.memory ?? false,
    memoryDevices: positive('memory-devices', values['memory-devices'] ?? (smoke ? '4' : '64')),
    ubloopArgs: values['ubloop-args'] ? values['ubloop-args'].split(/\s+/).filter(Boolean) : [],
    variants: (values.variant ?? []).map(parseVariant),
    engines: (values.engine ?? []).map(parseEngine),
    ublksrv,
    ublksrvScheduler: values['ublksrv-scheduler'] ?? 'none',
    kublk: values.kublk ?? process.env.UBLK_BENCH_KUBLK ?? null,
    kernels: [...new Set(kernels)],
    copyModes,
    vmMemMiB: positive('vm-mem', values['vm-mem'] ?? '3072'),
    overheadSec: 3,
    conditions: values.conditions ?? '',
    perf: values.perf ?? false,
  };
}

function parseVariant(text: string): Variant {
  const eq = text.indexOf('=');
  const name = eq < 0 ? '' : text.slice(0, eq);
  if (!/^[\w.-]+$/.test(name)) throw new Error(`--variant must be NAME=ARGS with a short name, got "${text}"`);
  return { name, args: text.slice(eq + 1).split(/\s+/).filter(Boolean) };
}

function parseEngine(text: string): Variant {
  const eq = text.indexOf('=');
  const name = eq < 0 ? '' : text.slice(0, eq);
  const root = resolve(text.slice(eq + 1));
  if (!/^[\w.-]+$/.test(name) || eq === text.length - 1) throw new Error(`--engine must be NAME=DIR with a short name, got "${text}"`);
  if (!existsSync(`${root}/bin/ubloop.js`)) throw new Error(`--engine ${name}: ${root} is not a ubloop checkout (no bin/ubloop.js)`);
  return { name, args: [], root };
}

export interface DeviceSpec {
  config: ConfigName;
  queues: number;
  variant: Variant | null;
}

/**
 * The devices of a run on a kernel offering `features` (UBLK_F_* names; [] for a kernel
 * without GET_FEATURES), each a (configuration, queue count, variant); kernel loop once.
 * ubloop-direct runs in each requested data path the kernel offers (auto as itself,
 * the others, but the one auto resolves to, as variants "copy-MODE"); kublk's modes run where their flags are offered
 * and a kublk binary is there; ublksrv when a binary is given.
 */
export function deviceMatrix(o: BenchOptions, features: readonly string[]): DeviceSpec[] {
  const offered = (what: string) => NEEDS[what] === undefined || features.includes(NEEDS[what] as string);
  const out: DeviceSpec[] = [];
  for (const config of o.configs) {
    if (config === 'kernel-loop') out.push({ config, queues: 1, variant: null });
  }
  // The path `auto` takes (as root) is measured once, as ubloop-direct itself.
  const viaAuto = o.copyModes.includes('auto') ? (['auto-buf', 'zero'].find(offered) ?? 'kernel') : null;
  const copyVariants: Variant[] = o.copyModes
    .filter((m) => m !== 'auto' && m !== viaAuto && offered(m))
    .map((m) => ({ name: `copy-${m}`, args: ['--copy', m] }));
  for (const queues of o.queues) {
    for (const config of o.configs) {
      if (config === 'kernel-loop') continue;
      if (config.startsWith('kublk') && (o.kublk === null || !offered(config))) continue;
      if (config === 'ublksrv' && o.ublksrv === null) continue;
      if (config !== 'ubloop-direct' || o.copyModes.includes('auto')) out.push({ config, queues, variant: null });
      if (config === 'ubloop-direct') {
        for (const variant of [...copyVariants, ...o.variants, ...o.engines]) out.push({ config, queues, variant });
      }
    }
  }
  return out;
}

/** What Linux 7.3 offers of the flags the matrix asks about, for estimates made before the guest boots. */
export const LINUX_7_3_FEATURES: readonly string[] = [...new Set(Object.values(NEEDS))];

/** Seconds the fio part should take on a kernel offering `features`, from the option values. */
export function estimateSec(o: BenchOptions, features: readonly string[]): number {
  if (o.memoryOnly) return 120;
  const runs = o.repeats * o.jobs.length * deviceMatrix(o, features).length;
  return runs * (o.runtimeSec + o.rampSec + o.overheadSec) + 60 + o.imageBytes / 2 ** 20 / 20 + (o.memory ? 120 : 0);
}
