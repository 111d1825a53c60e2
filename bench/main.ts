// `npm run bench [-- options]`: ubloop against the kernel loop driver with fio.
// On a machine without ublk it re-launches itself in the test VM (../shared/vm/run-in-vm),
// once per test kernel (--kernel), with a scratch ext4 disk for the image; results land
// in bench/results/<timestamp>/<kernel>/, and one report with a column per kernel in
// bench/results/<timestamp>/report.md.
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { BenchResult } from './model.js';
import { BENCH_KERNELS, LINUX_7_3_FEATURES, estimateSec, parseOptions, USAGE, type BenchOptions } from './options.js';
import { kernelsMarkdown } from './report.js';
import { log, runBench } from './run.js';

// dist/bench/main.js -> the repository root.
const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

/** The command line as a user would type it again (arguments with spaces quoted). */
function commandLine(argv: readonly string[]): string {
  const quoted = argv.map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`));
  return `npm run bench${quoted.length ? ` -- ${quoted.join(' ')}` : ''}`;
}

function git(args: string[]): string | null {
  try {
    return execFileSync('git', ['-C', repoRoot, ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  } catch {
    return null;
  }
}

/**
 * The kublk binary for the peer columns: the one given, or one built now (once, then
 * reused) by bench/build-kublk.sh from Debian's linux-source-7.3 into
 * bench/results/kublk/. Null, with the reason logged, if it cannot be had.
 */
function kublkBinary(o: BenchOptions): string | null {
  if (o.kublk !== null) return o.kublk;
  if (!o.configs.some((c) => c.startsWith('kublk')) || !o.kernels.includes('7.3')) return null;
  const out = join(repoRoot, 'bench', 'results', 'kublk');
  const bin = join(out, 'kublk');
  if (existsSync(bin)) return bin;
  log(`bench: building kublk (the kernel's reference ublk server) into ${out}`);
  const r = spawnSync('bash', [join(repoRoot, 'bench', 'build-kublk.sh'), out], { stdio: ['ignore', 'inherit', 'inherit'] });
  if (r.status === 0 && existsSync(bin)) return bin;
  log(`bench: kublk could not be built (exit ${r.status}); its columns are left out`);
  return null;
}

/** Runs this script again inside the VM booted from `kernel` and returns its exit status. */
function relaunchInVm(o: BenchOptions, argv: readonly string[], kernel: string): number {
  const runInVm = process.env.UBLK_VM_RUN ?? resolve(repoRoot, '..', 'shared', 'vm', 'run-in-vm');
  if (!existsSync(runInVm)) {
    log(`bench: this kernel has no ublk (/dev/ublk-control) and there is no VM runner at ${runInVm}`);
    return 2;
  }
  const est = estimateSec(o, kernel === '6.1' ? [] : LINUX_7_3_FEATURES);
  const scratchGiB = Math.ceil((o.imageBytes * 1.5) / 2 ** 30) + 1;
  const timeoutSec = Math.ceil(est * 2 + 600);
  const env = {
    ...process.env,
    UBLK_BENCH_COMMIT: git(['rev-parse', 'HEAD']) ?? '',
    UBLK_BENCH_DIRTY: git(['status', '--porcelain', '--', 'native', 'lib', 'bench', 'binding.gyp']) ? '1' : '0',
    UBLK_BENCH_HOST_CPU: `${cpus()[0]?.model ?? 'unknown'} x ${cpus().length}`,
    UBLK_BENCH_HOST_LOADAVG: readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' '),
    UBLK_BENCH_COMMAND: process.env.UBLK_BENCH_COMMAND ?? commandLine(argv),
    UBLK_VM_KERNEL: process.env.UBLK_VM_KERNEL ?? resolve(dirname(runInVm), BENCH_KERNELS[kernel] ?? 'bzImage'),
  };
  log(
    `bench: no ublk here; running in the Linux ${kernel} VM (${o.vmMemMiB} MiB, ${scratchGiB} GiB scratch, ` +
      `estimated ${Math.round(est / 60)} min, timeout ${Math.round(timeoutSec / 60)} min)`,
  );
  const script = relative(repoRoot, fileURLToPath(import.meta.url));
  const args = ['--scratch', `${scratchGiB}G`, '--mem', String(o.vmMemMiB), '--timeout', String(timeoutSec), '--', process.execPath, script, ...argv];
  let r = spawnSync(runInVm, args, { cwd: repoRoot, stdio: 'inherit', env });
  // Exit 2 is the runner refusing before the guest boots; the shared runner's busybox
  // check can fail spuriously (SIGPIPE under pipefail), so it gets two more tries.
  for (let attempt = 2; attempt <= 3 && r.status === 2; attempt++) {
    log(`bench: the VM runner refused to start (exit 2); trying again (${attempt}/3)`);
    r = spawnSync(runInVm, args, { cwd: repoRoot, stdio: 'inherit', env });
  }
  return r.status ?? 1;
}

async function main(argv: readonly string[]): Promise<number> {
  let o: BenchOptions;
  try {
    o = parseOptions(argv);
  } catch (err) {
    log(`bench: ${err instanceof Error ? err.message : String(err)}\n${USAGE}`);
    return 2;
  }
  if (existsSync('/dev/ublk-control')) {
    const command = process.env.UBLK_BENCH_COMMAND ?? commandLine(argv);
    const md = await runBench(o, repoRoot, command);
    process.stdout.write(`\n${md}`);
    return 0;
  }
  // No ublk here: each test kernel in its own VM, one after the other, then one
  // report with a column per kernel.
  const top = o.out ?? join(repoRoot, 'bench', 'results', new Date().toISOString().replace(/[:.]/g, '-'));
  mkdirSync(top, { recursive: true });
  const kublk = kublkBinary(o);
  process.env.UBLK_BENCH_COMMAND ??= commandLine(argv);
  const results: { kernel: string; result: BenchResult }[] = [];
  let status = 0;
  for (const kernel of o.kernels) {
    const out = join(top, kernel);
    const extra = ['--out', out, ...(kublk === null ? [] : ['--kublk', kublk])];
    const s = relaunchInVm(o, [...argv, ...extra], kernel);
    if (s !== 0) {
      log(`bench: the Linux ${kernel} run failed (exit ${s})`);
      status = s;
      continue;
    }
    results.push({ kernel, result: JSON.parse(readFileSync(join(out, 'results.json'), 'utf8')) as BenchResult });
  }
  if (results.length > 1) {
    const md = kernelsMarkdown(results, commandLine(argv));
    writeFileSync(join(top, 'report.md'), md);
    process.stdout.write(`\n${md}`);
    log(`bench: wrote ${join(top, 'report.md')} (per kernel: ${results.map((r) => join(top, r.kernel, 'report.md')).join(', ')})`);
  }
  return status;
}

process.exitCode = await main(process.argv.slice(2)).catch((err: unknown) => {
  log(`bench: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
  return 1;
});
