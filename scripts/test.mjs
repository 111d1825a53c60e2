#!/usr/bin/env node
// `npm test`: build, run the unit tests on this machine, then the end-to-end suite on
// a kernel that really has ublk — this one if it has /dev/ublk-control (and we are
// root), otherwise a QEMU guest booted from a test kernel. Ends with one line
// "N passed, N failed" (unit + e2e) that CI reads, and exits non-zero on any failure.
//
//   node scripts/test.mjs [--unit-only | --e2e-only] [--vm] [FILE...]
//
//   --unit-only   run only the host unit tests (the only way to skip e2e on purpose)
//   --e2e-only    run only the e2e suite
//   --vm          run e2e in the VM even when this kernel has ublk
//   FILE...       e2e test files to run instead of the whole of test/e2e
//
// Environment: UBLK_VM_KERNEL (bzImage; default ../shared/vm/bzImage), UBLK_VM_RUNNER
// (default ../shared/vm/run-in-vm), UBLK_VM_TIMEOUT (seconds for the whole guest run,
// default 2700), UBLK_VM_SCRATCH_SIZE (default 4G), CI=true (missing kernel = failure).
import { spawn, spawnSync } from 'node:child_process';
import { createWriteStream, existsSync, mkdirSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync, accessSync, constants } from 'node:fs';
import { constants as osConstants, release } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
process.chdir(root);
const tapBin = join(root, 'node_modules', '.bin', 'tap');
// Each run keeps its own copy of the TAP stream (tap's .tap/test-results is shared by
// every tap run in this tree, so a concurrent run could overwrite it).
const runId = process.env.UBLK_TEST_RUN_ID ?? `${Date.now()}-${process.pid}`;
const runDir = join(root, '.tap', 'ubloop-runs');
const streamFile = (kind) => join(runDir, `${runId}-${kind}.tap`);
const e2eInfoFile = join(runDir, `${runId}-e2e.json`);
const E2E_FILE_TIMEOUT_S = 420;

const argv = process.argv.slice(2);
const flag = (name) => {
  const i = argv.indexOf(name);
  if (i === -1) return false;
  argv.splice(i, 1);
  return true;
};
const inner = flag('--e2e-inner'); // internal: we are the e2e run on the ublk kernel
const unitOnly = flag('--unit-only');
const e2eOnly = flag('--e2e-only');
const forceVm = flag('--vm');
const unknown = argv.filter((a) => a.startsWith('-'));
if (unknown.length > 0 || (unitOnly && e2eOnly)) {
  console.error(`test.mjs: ${unknown.length ? `unknown option ${unknown[0]}` : '--unit-only and --e2e-only exclude each other'}`);
  console.error('usage: node scripts/test.mjs [--unit-only | --e2e-only] [--vm] [E2E_FILE...]');
  process.exit(2);
}
const e2eFiles = argv.length > 0 ? argv : ['test/e2e'];
const ci = process.env.CI === 'true' || process.env.CI === '1';

const log = (line = '') => process.stdout.write(`${line}\n`);
const banner = (text) => log(`\n=== ${text} ${'='.repeat(Math.max(3, 74 - text.length))}`);
const secs = (ms) => `${(ms / 1000).toFixed(1)} s`;

// ------------------------------------------------------------------ results
/**
 * Counts tests in a tap run's TAP stream: every top-level `t.test(...)` of a test file
 * is one test. Skipped and todo tests are counted apart, never as passed. A file that
 * ends not ok without a failing test (timeout, crash, bail out) counts as one failure,
 * and so does a selected file that never reported at all.
 */
async function countStream(tapText, files) {
  const { Parser } = await import('tap-parser');
  const total = { passed: 0, failed: 0, skipped: 0, todo: 0, files: files.length, failures: [] };
  const seen = new Map(); // file -> { points: [], ok: bool|null }
  await new Promise((done) => {
    const p = new Parser(done);
    p.on('child', (c) => {
      const entry = { points: [], ok: null };
      seen.set(c.name, entry);
      c.on('assert', (a) => entry.points.push(a));
    });
    p.on('assert', (a) => {
      const name = String(a.name ?? '').replace(/\s+#.*$/, '');
      const entry = seen.get(name) ?? { points: [], ok: null };
      entry.ok = Boolean(a.ok);
      if (a.skip || a.todo) entry.skippedFile = true;
      seen.set(name, entry);
    });
    p.end(tapText);
  });
  for (const file of files) {
    const entry = seen.get(file);
    if (!entry || entry.ok === null) {
      total.failed++;
      total.failures.push(`${file}: ${entry ? 'did not finish (the run was cut short)' : 'never reported (not run, or the run died first)'}`);
      continue;
    }
    let failedHere = 0;
    for (const a of entry.points) {
      if (a.todo) total.todo++;
      else if (a.skip) total.skipped++;
      else if (a.ok) total.passed++;
      else {
        total.failed++;
        failedHere++;
        total.failures.push(`${file}: ${a.name || `test ${a.id}`}`);
      }
    }
    if (entry.skippedFile) {
      total.skipped++;
    } else if (failedHere === 0 && (!entry.ok || entry.points.length === 0)) {
      total.failed++;
      total.failures.push(`${file}: ${entry.points.length === 0 ? 'ran no tests' : 'did not complete (timeout, crash or bail out)'}`);
    }
  }
  return total;
}

async function countFile(path, files) {
  let text = '';
  try {
    text = readFileSync(path, 'utf8');
  } catch {
    text = '';
  }
  return countStream(text, files);
}

/** The test files tap would run for these arguments (relative to the project root). */
function listTestFiles(args) {
  const out = [];
  const walk = (p) => {
    const st = statSync(p);
    if (st.isDirectory()) {
      for (const e of readdirSync(p).sort()) walk(join(p, e));
    } else if (/\.test\.[cm]?[jt]s$/.test(p)) {
      out.push(relative(root, resolve(p)));
    }
  };
  for (const a of args) {
    if (!existsSync(a)) throw new Error(`no such test file or directory: ${a}`);
    walk(a);
  }
  return out;
}

/** Runs tap with a plain TAP stream, echoed to stdout and saved to file. */
function runTap(args, file) {
  mkdirSync(dirname(file), { recursive: true });
  const out = createWriteStream(file);
  return new Promise((done) => {
    const child = spawn(tapBin, ['--reporter=tap', ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
    const forward = (sig) => child.kill(sig);
    process.on('SIGINT', forward);
    process.on('SIGTERM', forward);
    child.stdout.on('data', (d) => {
      process.stdout.write(d);
      out.write(d);
    });
    child.on('error', (err) => {
      console.error(`test.mjs: cannot run tap: ${err.message}`);
      out.end(() => done(127));
    });
    child.on('close', (code, signal) => {
      process.off('SIGINT', forward);
      process.off('SIGTERM', forward);
      out.end(() => done(code ?? 128 + (osConstants.signals[signal] ?? 1)));
    });
  });
}

/** Runs a command with inherited stdio; resolves with its exit code (or 128+signal). */
function run(cmd, args, opts = {}) {
  return new Promise((done) => {
    const child = spawn(cmd, args, { stdio: 'inherit', ...opts });
    const forward = (sig) => child.kill(sig);
    process.on('SIGINT', forward);
    process.on('SIGTERM', forward);
    child.on('error', (err) => {
      console.error(`test.mjs: cannot run ${cmd}: ${err.message}`);
      done(127);
    });
    child.on('exit', (code, signal) => {
      process.off('SIGINT', forward);
      process.off('SIGTERM', forward);
      done(code ?? 128 + (signal ? (osConstants.signals[signal] ?? 1) : 1));
    });
  });
}

// ------------------------------------------------------------------ inner e2e run
/**
 * In the test VM the project directory is a 9p mount without caching (so results
 * come back), which makes every module load of node_modules a round trip to the
 * host: ~30 s per CLI start under TCG. The same files are visible, cached, through
 * the guest's root filesystem underneath; node_modules, dist and build are only read
 * during the e2e run, so serve them from there (2-5x faster starts). Best effort.
 */
function cachedBuildTrees() {
  let fsType = '';
  try {
    for (const line of readFileSync('/proc/mounts', 'utf8').split('\n')) {
      const [, where, type] = line.split(' ');
      if (where === root) fsType = type ?? '';
    }
  } catch {
    return;
  }
  if (fsType !== '9p' || process.getuid?.() !== 0) return;
  const view = '/run/ubloop-rootview';
  mkdirSync(view, { recursive: true });
  if (spawnSync('mount', ['--bind', '/', view]).status !== 0) return;
  const bound = [];
  for (const d of ['node_modules', 'dist', 'build']) {
    const here = join(root, d);
    const cached = join(view, root, d);
    try {
      const probe = d === 'build' ? 'build/Release/ubloop.node' : d === 'dist' ? 'dist/lib/index.js' : 'node_modules/.package-lock.json';
      const [a, b] = [statSync(join(root, probe)), statSync(join(view, root, probe))];
      if (a.size !== b.size || a.mtimeMs !== b.mtimeMs) continue; // not the same files: keep the live view
    } catch {
      continue;
    }
    if (spawnSync('mount', ['--bind', cached, here]).status === 0) bound.push(d);
  }
  if (bound.length) log(`e2e: reading ${bound.join(', ')} through the guest's cached root view`);
}

// Runs on the ublk kernel itself (inside the VM, or directly on a capable host).
if (inner) {
  const kernel = release();
  cachedBuildTrees();
  log(`e2e: running on kernel ${kernel} (${process.env.UBLK_VM_SCRATCH ? `scratch ext4 at ${process.env.UBLK_VM_SCRATCH}` : 'no scratch disk'})`);
  const started = Date.now();
  let status = 1;
  if (!existsSync('/dev/ublk-control')) {
    console.error(`e2e: kernel ${kernel} has no /dev/ublk-control; cannot run the e2e suite`);
  } else {
    status = await runTap(
      ['--jobs=1', `--timeout=${E2E_FILE_TIMEOUT_S}`, '--disable-coverage', '--allow-empty-coverage', ...e2eFiles],
      streamFile('e2e'),
    );
  }
  mkdirSync(dirname(e2eInfoFile), { recursive: true });
  writeFileSync(e2eInfoFile, JSON.stringify({ kernel, status, ms: Date.now() - started }) + '\n');
  process.exit(status);
}

// ------------------------------------------------------------------ main
const t0 = Date.now();
const summary = [];
let passed = 0;
let failed = 0;
const problems = [];

function add(kind, counts, ms, where) {
  passed += counts.passed;
  failed += counts.failed;
  problems.push(...counts.failures);
  const extra = [counts.skipped ? `${counts.skipped} skipped` : '', counts.todo ? `${counts.todo} todo` : '']
    .filter(Boolean)
    .join(', ');
  summary.push(
    `${kind}: ${counts.passed} passed, ${counts.failed} failed${extra ? `, ${extra}` : ''} ` +
      `(${counts.files} files, ${secs(ms)}${where ? `, ${where}` : ''})`,
  );
}

banner('build (npm run build)');
const build = spawnSync('npm', ['run', '--silent', 'build'], { stdio: 'inherit' });
if (build.status !== 0) {
  console.error('test.mjs: "npm run build" failed; not running tests against a stale dist/');
  log('0 passed, 1 failed');
  process.exit(1);
}
if (!existsSync(join(root, 'build', 'Release', 'ubloop.node'))) {
  console.error('test.mjs: build/Release/ubloop.node is missing; run "npm run build:native" (npm ci does it)');
  log('0 passed, 1 failed');
  process.exit(1);
}

if (!e2eOnly) {
  banner('unit tests (host)');
  const files = listTestFiles(['test/unit']);
  const started = Date.now();
  await runTap(['test/unit'], streamFile('unit'));
  add('unit', await countFile(streamFile('unit'), files), Date.now() - started, `kernel ${release()} (host)`);
}

/** Where to get a kernel with ublk when there is none. */
function howToGetKernel() {
  return [
    'To build a test kernel with ublk (Debian linux-source-6.1, ~20-40 min on 2 cores):',
    '    sudo scripts/build-test-kernel.sh ../shared/vm      # writes ../shared/vm/bzImage',
    'or point UBLK_VM_KERNEL at an existing bzImage; the runner needs qemu-system-x86 and busybox-static.',
    'To run only the host unit tests on purpose: node scripts/test.mjs --unit-only',
  ].join('\n');
}

if (!unitOnly) {
  const files = listTestFiles(e2eFiles);
  const direct = !forceVm && existsSync('/dev/ublk-control') && process.getuid?.() === 0;
  rmSync(e2eInfoFile, { force: true });
  rmSync(streamFile('e2e'), { force: true });
  const started = Date.now();
  let where = '';
  let failure = null; // why the e2e suite could not run at all

  if (direct) {
    banner(`e2e tests (this kernel, ${release()})`);
    await run(process.execPath, [fileURLToPath(import.meta.url), '--e2e-inner', ...argv], {
      env: { ...process.env, UBLK_TEST_RUN_ID: runId },
    });
    where = 'directly on this kernel';
  } else {
    const kernel = resolve(process.env.UBLK_VM_KERNEL ?? join(root, '..', 'shared', 'vm', 'bzImage'));
    const runner = resolve(process.env.UBLK_VM_RUNNER ?? join(root, '..', 'shared', 'vm', 'run-in-vm'));
    const scratch = process.env.UBLK_VM_SCRATCH_SIZE ?? '4G';
    // The guest's hard stop: generous enough for a loaded 2-core machine under TCG
    // (CI's own budget is 90 minutes); the summary prints how long the run really took.
    const vmTimeout = process.env.UBLK_VM_TIMEOUT ?? '2700';
    let executable = true;
    try {
      accessSync(runner, constants.X_OK);
    } catch {
      executable = false;
    }
    if (!existsSync(kernel)) {
      failure = `no ublk kernel: ${kernel} does not exist (set UBLK_VM_KERNEL)\n${howToGetKernel()}`;
    } else if (!executable) {
      failure = `no VM runner: ${runner} is missing or not executable (set UBLK_VM_RUNNER)\n${howToGetKernel()}`;
    } else {
      banner(`e2e tests (VM: ${relative(root, kernel) || kernel})`);
      log(`runner: ${runner} --scratch ${scratch} --timeout ${vmTimeout}`);
      // Exit 2 without results means the runner refused before booting the guest. The
      // shared runner's own busybox check (`busybox --list | grep -q` under pipefail) can
      // fail now and then with SIGPIPE, so that is tried again twice before it counts.
      let rc = 2;
      const refused = () => rc === 2 && !existsSync(e2eInfoFile) && !existsSync(streamFile('e2e'));
      for (let attempt = 1; attempt <= 3 && refused(); attempt++) {
        if (attempt > 1) log(`runner refused to start (exit 2); trying again (${attempt}/3)`);
        rc = await run(
          runner,
          ['--scratch', scratch, '--timeout', vmTimeout, '--', 'node', 'scripts/test.mjs', '--e2e-inner', ...argv],
          { env: { ...process.env, UBLK_VM_KERNEL: kernel, UBLK_TEST_RUN_ID: runId } },
        );
      }
      where = 'in the VM';
      if (rc === 98 || rc === 97) {
        failure = `the VM did not run the tests (runner exit ${rc}: ${rc === 98 ? 'boot failure, panic or timeout' : 'could not enter the project directory'})`;
      } else if (rc === 2 && !existsSync(e2eInfoFile)) {
        failure = `the VM runner refused to start (exit 2; see its message above)\n${howToGetKernel()}`;
      }
    }
  }

  let info = null;
  try {
    info = JSON.parse(readFileSync(e2eInfoFile, 'utf8'));
  } catch {
    failure ??= 'the e2e run produced no results (the guest or the test runner died before finishing)';
  }
  const ms = Date.now() - started;
  if (failure) {
    const loud = `E2E SUITE DID NOT RUN: ${failure}`;
    console.error(`\n${'!'.repeat(78)}\n${loud}\n${'!'.repeat(78)}`);
    const counts = await countFile(streamFile('e2e'), files); // whatever did finish still counts
    if (counts.failed === 0) counts.failed = 1;
    counts.failures.unshift(`e2e suite: ${failure.split('\n')[0]}`);
    add('e2e', counts, ms, `${where || 'not run'}${ci ? ', CI' : ''}`);
  } else {
    const counts = await countFile(streamFile('e2e'), files);
    add('e2e', counts, ms, `kernel ${info.kernel} ${where}`);
  }
}

banner('summary');
for (const line of summary) log(line);
if (problems.length > 0) {
  log('failures:');
  for (const p of problems.slice(0, 50)) log(`  - ${p}`);
}
if (unitOnly) log('e2e: not run (--unit-only)');
log(`total time ${secs(Date.now() - t0)}`);
log(`${passed} passed, ${failed} failed`);
process.exit(failed > 0 ? 1 : 0);
