#!/usr/bin/env node
// `npm test`: build, run the unit tests on this machine, then the end-to-end suite on
// kernels that really have ublk: this one if it has /dev/ublk-control (and we are
// root), once; otherwise QEMU guests booted from the two test kernels, Linux 7.3 (the
// current one) and Linux 6.1 (the floor), each running every e2e file. Ends with one
// line "N passed, N failed" (unit + every kernel) that CI reads, and exits non-zero on
// any failure.
//
//   node scripts/test.mjs [--unit-only | --e2e-only] [--vm] [--kernel 6.1|7.3|all]
//                         [--vm-jobs 1|2] [FILE...]
//
//   --unit-only   run only the host unit tests (the only way to skip e2e on purpose)
//   --e2e-only    run only the e2e suite
//   --vm          run e2e in the VM even when this kernel has ublk
//   --kernel K    which test kernels the VM boots: 6.1, 7.3, all (default; also
//                 6.1,7.3) — or $UBLK_TEST_KERNELS. Ignored on a ublk host (no VM).
//   --vm-jobs N   guests at once: 1 = one kernel after the other (default: two TCG
//                 guests on 2 host cores each ran past the 2700 s guest limit on the
//                 full suite), 2 = both at once (each prints its lines prefixed with
//                 its kernel and keeps its console log under .tap/ubloop-runs/)
//   FILE...       e2e test files to run instead of the whole of test/e2e
//
// A kernel-specific e2e file says so with one comment line, read by the harness on the
// kernel the suite runs on (the real release, so it works for any kernel):
//   // ubloop-e2e-kernels: >=6.5 -- needs GET_FEATURES, which Linux 6.5 added
// Terms before " -- " are ANDed: >=X.Y, >X.Y, <=X.Y, <X.Y, =X.Y or X.Y (that series);
// the reason after it is required. On a kernel outside the range the file is not run
// and shows as skipped (never as passed), with the reason, in the summary.
//
// Environment: UBLK_TEST_KERNELS (like --kernel), UBLK_VM_KERNEL (one custom bzImage
// instead of the test kernels), UBLK_VM_DIR (where bzImage and bzImage-7.3 are; default
// ../shared/vm), UBLK_VM_RUNNER (default ../shared/vm/run-in-vm), UBLK_VM_JOBS (like
// --vm-jobs), UBLK_VM_CPUS (vCPUs per guest; the runner's default, 2, when unset),
// UBLK_E2E_FILE_TIMEOUT (seconds for one e2e file; default 420, 600 with two guests),
// UBLK_VM_TIMEOUT (seconds for one guest run, default 2700), UBLK_E2E_BUDGET (seconds
// for all guest runs together, default 4500: a later guest gets what is left, so CI's
// 90 minutes hold), UBLK_VM_SCRATCH_SIZE (default 4G), CI=true (missing kernel = failure).
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
// One stream and one result file per kernel (tag: 7.3, 6.1, custom or host), so two
// guests running at once never write the same file.
const streamFile = (kind) => join(runDir, `${runId}-${kind}.tap`);
const e2eInfoFile = (tag) => join(runDir, `${runId}-e2e-${tag}.json`);
const vmLogFile = (tag) => join(runDir, `${runId}-vm-${tag}.log`);
// tap's limit for one e2e file; longer while two guests share the CPUs (the harness
// passes it into the guest as UBLK_E2E_FILE_TIMEOUT).
const E2E_FILE_TIMEOUT_S = Number(process.env.UBLK_E2E_FILE_TIMEOUT ?? 420);
// The test kernels beside the VM runner: label -> bzImage file name. Newest first.
const TEST_KERNELS = { '7.3': 'bzImage-7.3', '6.1': 'bzImage' };
const usage =
  'usage: node scripts/test.mjs [--unit-only | --e2e-only] [--vm] [--kernel 6.1|7.3|all] [--vm-jobs 1|2] [E2E_FILE...]';

const argv = process.argv.slice(2);
const flag = (name) => {
  const i = argv.indexOf(name);
  if (i === -1) return false;
  argv.splice(i, 1);
  return true;
};
/** `--name VALUE` or `--name=VALUE`; undefined when absent. */
const option = (name) => {
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === name) {
      const value = argv[i + 1];
      if (value === undefined || value.startsWith('-')) {
        console.error(`test.mjs: ${name} needs a value\n${usage}`);
        process.exit(2);
      }
      argv.splice(i, 2);
      return value;
    }
    if (argv[i].startsWith(`${name}=`)) {
      const value = argv[i].slice(name.length + 1);
      argv.splice(i, 1);
      return value;
    }
  }
  return undefined;
};
const inner = flag('--e2e-inner'); // internal: we are the e2e run on the ublk kernel
const unitOnly = flag('--unit-only');
const e2eOnly = flag('--e2e-only');
const forceVm = flag('--vm');
const kernelOption = option('--kernel');
const vmJobsOption = option('--vm-jobs');
const unknown = argv.filter((a) => a.startsWith('-'));
if (unknown.length > 0 || (unitOnly && e2eOnly)) {
  console.error(`test.mjs: ${unknown.length ? `unknown option ${unknown[0]}` : '--unit-only and --e2e-only exclude each other'}`);
  console.error(usage);
  process.exit(2);
}
const kernelChoice = kernelOption ?? process.env.UBLK_TEST_KERNELS ?? 'all';
const kernelLabels = [];
for (const k of kernelChoice.split(/[\s,]+/).filter(Boolean)) {
  if (k === 'all') kernelLabels.push(...Object.keys(TEST_KERNELS));
  else if (k in TEST_KERNELS) kernelLabels.push(k);
  else {
    console.error(`test.mjs: unknown test kernel "${k}" (from ${kernelOption !== undefined ? '--kernel' : 'UBLK_TEST_KERNELS'}; known: ${Object.keys(TEST_KERNELS).join(', ')}, all)`);
    process.exit(2);
  }
}
const selectedKernels = Object.keys(TEST_KERNELS).filter((k) => kernelLabels.includes(k));
if (selectedKernels.length === 0) {
  console.error(`test.mjs: no test kernel selected (--kernel / UBLK_TEST_KERNELS is "${kernelChoice}")\n${usage}`);
  process.exit(2);
}
// Two guests at once is the default: one TCG guest keeps only ~1.3 of this machine's
// 2 cores busy on average (9p round trips, sleeps, timers), so the second fills the
// gaps; measured in README "Testing".
const vmJobs = Number(vmJobsOption ?? process.env.UBLK_VM_JOBS ?? 1);
if (!Number.isInteger(vmJobs) || vmJobs < 1) {
  console.error(`test.mjs: --vm-jobs / UBLK_VM_JOBS must be a whole number >= 1 (got "${vmJobsOption ?? process.env.UBLK_VM_JOBS}")`);
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

/**
 * The compiled form of an e2e file (tsc -p tsconfig.e2e.json, run on the host before
 * the guests boot), or null when it is missing or older than its source.
 */
function compiledTest(file) {
  const js = join(root, 'dist', file.replace(/\.ts$/, '.js'));
  try {
    return statSync(js).mtimeMs >= statSync(join(root, file)).mtimeMs ? js : null;
  } catch {
    return null;
  }
}

/**
 * Runs compiled e2e files one at a time, each as plain `node FILE.js`, and writes one
 * TAP stream shaped as tap's runner writes it (a subtest per file, its output indented,
 * then `ok N - FILE`). Under emulation tap's runner costs ~25 s per file before the
 * file's first line runs (its TypeScript, mock and process-info loaders, ~1.2 s on the
 * host); the files use only tap's API, which a plain node process runs as well.
 */
function runCompiledTests(files, file) {
  mkdirSync(dirname(file), { recursive: true });
  const out = createWriteStream(file);
  const write = (text) => {
    process.stdout.write(text);
    out.write(text);
  };
  return new Promise((done) => {
    let n = 0;
    let failed = false;
    let current = null;
    const forward = (sig) => current?.kill(sig);
    process.on('SIGINT', forward);
    process.on('SIGTERM', forward);
    write('TAP version 14\n');
    const next = () => {
      if (n === files.length) {
        write(`1..${n}\n`);
        process.off('SIGINT', forward);
        process.off('SIGTERM', forward);
        out.end(() => done(failed ? 1 : 0));
        return;
      }
      const name = files[n++];
      const started = Date.now();
      write(`# Subtest: ${name}\n`);
      const child = spawn(process.execPath, ['--enable-source-maps', compiledTest(name)], {
        cwd: root,
        stdio: ['ignore', 'pipe', 'inherit'],
        env: { ...process.env, TAP_TIMEOUT: String(E2E_FILE_TIMEOUT_S) },
      });
      current = child;
      // tap's own timeout ends a stuck file; this is the backstop if even that hangs.
      let killed = false;
      const backstop = setTimeout(() => {
        killed = true;
        child.kill('SIGKILL');
      }, (E2E_FILE_TIMEOUT_S + 60) * 1000);
      let rest = '';
      child.stdout.setEncoding('utf8');
      child.stdout.on('data', (d) => {
        const lines = (rest + d).split('\n');
        rest = lines.pop() ?? '';
        for (const l of lines) if (!/^TAP version \d+$/.test(l)) write(l === '' ? '\n' : `    ${l}\n`);
      });
      child.on('close', (code, signal) => {
        clearTimeout(backstop);
        if (rest) write(`    ${rest}\n`);
        const ms = Date.now() - started;
        const ok = code === 0;
        if (!ok) failed = true;
        write(`${ok ? 'ok' : 'not ok'} ${n} - ${name} # time=${ms}ms\n`);
        if (!ok) write(`  ---\n  exitCode: ${code}\n  signal: ${signal}\n${killed ? `  timeout: ${E2E_FILE_TIMEOUT_S + 60}\n` : ''}  ...\n`);
        next();
      });
    };
    next();
  });
}

/**
 * Runs a command; resolves with its exit code (or 128+signal). Without opts.prefix its
 * stdio is inherited. With it, stdout and stderr are piped, every line printed with the
 * prefix (so two guests running at once stay readable; the guest console's terminal
 * control sequences are dropped) and saved, unprefixed, to opts.logFile.
 */
function run(cmd, args, { prefix, logFile, startedFile, startLimitMs, tail, ...opts } = {}) {
  return new Promise((done) => {
    // Output is passed through line by line when it is prefixed (guests side by side) or
    // when the caller keeps its last lines (`tail`, to quote a guest that died).
    const piped = prefix !== undefined || tail !== undefined;
    const lead = prefix ?? '';
    const watched = startedFile !== undefined && startLimitMs !== undefined;
    const child = spawn(cmd, args, { stdio: piped ? ['ignore', 'pipe', 'pipe'] : 'inherit', ...(watched ? { detached: true } : {}), ...opts });
    // A guest that never gets as far as starting its tests (a boot that hangs, seen
    // once under TCG with the host loaded) is ended, with everything it started,
    // rather than left to use up the whole VM timeout.
    const watchdog = watched
      ? setTimeout(() => {
          if (existsSync(startedFile)) return;
          console.error(`${prefix ?? ''}test.mjs: the guest started no tests within ${startLimitMs / 1000} s; ending it`);
          try {
            process.kill(-child.pid, 'SIGKILL');
          } catch {
            child.kill('SIGKILL');
          }
        }, startLimitMs)
      : undefined;
    const forward = (sig) => child.kill(sig);
    process.on('SIGINT', forward);
    process.on('SIGTERM', forward);
    const logOut = piped && logFile ? createWriteStream(logFile, { flags: 'a' }) : null;
    const pending = [];
    const emit = (sink, raw) => {
      const line = clean(raw);
      sink.write(`${lead}${line}\n`);
      if (tail) {
        tail.push(line);
        if (tail.length > 25) tail.shift();
      }
    };
    const lines = (stream, sink) => {
      let rest = '';
      stream.setEncoding('utf8');
      stream.on('data', (d) => {
        logOut?.write(d);
        const parts = (rest + d).split('\n');
        rest = parts.pop() ?? '';
        for (const p of parts) emit(sink, p);
      });
      pending.push(new Promise((end) => stream.on('end', () => {
        if (rest) emit(sink, rest);
        end();
      })));
    };
    if (piped) {
      lines(child.stdout, process.stdout);
      lines(child.stderr, process.stderr);
    }
    let finished = false;
    const finish = async (code) => {
      if (finished) return;
      finished = true;
      clearTimeout(watchdog);
      process.off('SIGINT', forward);
      process.off('SIGTERM', forward);
      await Promise.all(pending);
      if (logOut) await new Promise((end) => logOut.end(end));
      done(code);
    };
    child.on('error', (err) => {
      console.error(`${prefix ?? ''}test.mjs: cannot run ${cmd}: ${err.message}`);
      finish(127);
    });
    child.on('close', (code, signal) => finish(code ?? 128 + (signal ? (osConstants.signals[signal] ?? 1) : 1)));
  });
}

/** A console line without terminal control sequences (the guest firmware clears the screen). */
function clean(line) {
  // eslint-disable-next-line no-control-regex
  return line.replace(/\x1b(?:\[[0-?]*[ -/]*[@-~]|[^[])/g, '').replace(/\r/g, '');
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
  if (!inVmMount()) return;
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

/** True in the test VM: the project directory is the runner's 9p mount and we are root. */
function inVmMount() {
  let fsType = '';
  try {
    for (const line of readFileSync('/proc/mounts', 'utf8').split('\n')) {
      const [, where, type] = line.split(' ');
      if (where === root) fsType = type ?? '';
    }
  } catch {
    return false;
  }
  return fsType === '9p' && process.getuid?.() === 0;
}

/**
 * tap keeps state in the project's .tap/ (it deletes .tap/processinfo when it starts,
 * and writes .tap/test-results), which two guests running at once would share. In the
 * VM, give this run its own .tap on a tmpfs, with only .tap/ubloop-runs (where our
 * results go) still the host's. Best effort: if the shuffle fails, keep the shared one.
 */
function privateTapState() {
  if (!inVmMount()) return;
  const tapDir = join(root, '.tap');
  const keep = '/run/ubloop-runs-host';
  mkdirSync(runDir, { recursive: true });
  mkdirSync(keep, { recursive: true });
  if (spawnSync('mount', ['--bind', runDir, keep]).status !== 0) return;
  if (spawnSync('mount', ['-t', 'tmpfs', 'tmpfs', tapDir]).status !== 0) {
    spawnSync('umount', [keep]);
    return;
  }
  mkdirSync(runDir, { recursive: true });
  if (spawnSync('mount', ['--bind', keep, runDir]).status !== 0) {
    spawnSync('umount', [tapDir]);
    spawnSync('umount', [keep]);
  }
}

/**
 * The kernel marker of an e2e file, or null when it has none (it runs on every kernel):
 *   // ubloop-e2e-kernels: >=6.5 <7.0 -- why the file needs those kernels
 * Returns { spec, reason, matches(release) } or { error }.
 */
function kernelMarker(file) {
  const m = /^[ \t]*\/\/[ \t]*ubloop-e2e-kernels:(.*)$/m.exec(readFileSync(file, 'utf8'));
  if (!m) return null;
  const cut = m[1].indexOf(' -- ');
  const spec = (cut === -1 ? m[1] : m[1].slice(0, cut)).trim();
  const reason = cut === -1 ? '' : m[1].slice(cut + 4).trim();
  if (!reason) return { error: `its ubloop-e2e-kernels marker gives no reason (write "SPEC -- reason")` };
  const terms = [];
  for (const term of spec.split(/[\s,]+/).filter(Boolean)) {
    const t = /^(>=|<=|>|<|=)?(\d+)\.(\d+)$/.exec(term);
    if (!t) return { error: `its ubloop-e2e-kernels marker has a bad term "${term}" (use >=X.Y, >X.Y, <=X.Y, <X.Y, =X.Y or X.Y)` };
    terms.push({ op: t[1] ?? '=', v: Number(t[2]) * 1000 + Number(t[3]) });
  }
  if (terms.length === 0) return { error: 'its ubloop-e2e-kernels marker names no kernel' };
  const matches = (rel) => {
    const r = /^(\d+)\.(\d+)/.exec(rel);
    if (!r) return true; // an unparseable release: run it rather than hide it
    const v = Number(r[1]) * 1000 + Number(r[2]);
    return terms.every(({ op, v: w }) =>
      op === '>=' ? v >= w : op === '>' ? v > w : op === '<=' ? v <= w : op === '<' ? v < w : v === w,
    );
  };
  return { spec, reason, matches };
}

// Runs on the ublk kernel itself (inside the VM, or directly on a capable host).
if (inner) {
  const kernel = release();
  const tag = process.env.UBLK_TEST_KERNEL_TAG ?? 'host';
  privateTapState();
  cachedBuildTrees();
  log(`e2e: running on kernel ${kernel} (${process.env.UBLK_VM_SCRATCH ? `scratch ext4 at ${process.env.UBLK_VM_SCRATCH}` : 'no scratch disk'})`);
  const started = Date.now();
  const chosen = [];
  const skipped = []; // { file, reason }: not for this kernel, by the file's own marker
  const invalid = []; // { file, error }: a marker the harness cannot read (a failure)
  for (const file of listTestFiles(e2eFiles)) {
    const marker = kernelMarker(file);
    if (marker?.error) invalid.push({ file, error: marker.error });
    else if (marker && !marker.matches(kernel)) skipped.push({ file, reason: `only for kernels ${marker.spec}: ${marker.reason}` });
    else chosen.push(file);
  }
  for (const s of skipped) log(`e2e: skipping ${s.file} on ${kernel}, ${s.reason}`);
  for (const s of invalid) console.error(`e2e: not running ${s.file}: ${s.error}`);
  let status = 1;
  mkdirSync(runDir, { recursive: true });
  if (chosen.length === 0) {
    writeFileSync(streamFile(`e2e-${tag}`), ''); // tap with no files would run everything
    status = invalid.length ? 1 : 0;
  } else if (!existsSync('/dev/ublk-control')) {
    console.error(`e2e: kernel ${kernel} has no /dev/ublk-control; cannot run the e2e suite`);
  } else if (chosen.every((f) => compiledTest(f) !== null)) {
    log(`e2e: running the files compiled to dist/test, each with plain node`);
    status = await runCompiledTests(chosen, streamFile(`e2e-${tag}`));
  } else {
    status = await runTap(
      ['--jobs=1', `--timeout=${E2E_FILE_TIMEOUT_S}`, '--disable-coverage', '--allow-empty-coverage', ...chosen],
      streamFile(`e2e-${tag}`),
    );
  }
  writeFileSync(e2eInfoFile(tag), JSON.stringify({ kernel, status, ms: Date.now() - started, skipped, invalid }) + '\n');
  process.exit(status || (invalid.length ? 1 : 0));
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
if (!unitOnly) {
  // The e2e files and their helpers as JavaScript, so that the guests run them with plain
  // node (see runCompiledTests); if this fails they run through tap's TypeScript loader.
  const tsc = spawnSync(join(root, 'node_modules', '.bin', 'tsc'), ['-p', 'tsconfig.e2e.json'], { stdio: 'inherit' });
  if (tsc.status !== 0) console.error('test.mjs: compiling the e2e tests failed; tap will run them from TypeScript');
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
    'To build the test kernels with ublk (Debian linux-source-6.1 ~20-40 min, linux-source-7.3 ~45 min on 2 cores):',
    '    sudo scripts/build-test-kernel.sh ../shared/vm 6.1   # writes ../shared/vm/bzImage',
    '    sudo scripts/build-test-kernel.sh ../shared/vm 7.3   # writes ../shared/vm/bzImage-7.3',
    'or pick the kernels that exist with --kernel 6.1|7.3, or point UBLK_VM_KERNEL at one bzImage;',
    'the runner needs qemu-system-x86 and busybox-static.',
    'To run only the host unit tests on purpose: node scripts/test.mjs --unit-only',
  ].join('\n');
}

const skippedNotes = [];

/** Counts one kernel's e2e run (or its absence, loudly) into the summary. */
async function addE2e(r, files) {
  const name = r.info?.kernel ?? r.plan.label;
  const tapFile = streamFile(`e2e-${r.plan.tag}`);
  const skipped = r.info?.skipped ?? [];
  const invalid = r.info?.invalid ?? [];
  const ran = files.filter((f) => !skipped.some((s) => s.file === f) && !invalid.some((s) => s.file === f));
  const counts = await countFile(tapFile, ran); // whatever did finish still counts
  counts.files = files.length;
  counts.skipped += skipped.length;
  for (const s of skipped) skippedNotes.push(`${name}: ${s.file} (${s.reason})`);
  for (const s of invalid) {
    counts.failed++;
    counts.failures.push(`${s.file}: ${s.error}`);
  }
  if (r.failure) {
    if (counts.failed === 0) counts.failed = 1;
    // The first line (the rest is how-to text, printed in the banner), and the console's
    // last lines for a guest that died: the summary is what a truncated CI log still shows.
    counts.failures.unshift(`e2e suite: ${r.failure.split('\n')[0]}${r.consoleTail ?? ''}`);
  }
  counts.failures = counts.failures.map((f) => `[${name}] ${f}`);
  add(`e2e ${name}`, counts, r.ms, `${r.failure ? `${r.where}, DID NOT RUN` : r.where}${ci ? ', CI' : ''}`);
}

/** The loud banner for a kernel whose suite did not run. */
function shout(r) {
  const loud = `E2E SUITE DID NOT RUN ON ${r.plan.label}: ${r.failure}${r.consoleTail ?? ''}`;
  console.error(`\n${'!'.repeat(78)}\n${loud}\n${'!'.repeat(78)}`);
}

if (!unitOnly) {
  const files = listTestFiles(e2eFiles);
  const direct = !forceVm && existsSync('/dev/ublk-control') && process.getuid?.() === 0;
  const vmDir = resolve(process.env.UBLK_VM_DIR ?? join(root, '..', 'shared', 'vm'));
  const runner = resolve(process.env.UBLK_VM_RUNNER ?? join(root, '..', 'shared', 'vm', 'run-in-vm'));
  const scratch = process.env.UBLK_VM_SCRATCH_SIZE ?? '4G';
  // One guest's hard stop: generous for a loaded 2-core machine under TCG (one kernel's
  // suite takes ~17 min there). All guests together must fit UBLK_E2E_BUDGET, so that
  // with the setup, build and unit tests `npm test` stays inside CI's 90 minutes: a
  // guest started later gets only what is left of it.
  const vmTimeout = Number(process.env.UBLK_VM_TIMEOUT ?? 2700);
  const budget = Number(process.env.UBLK_E2E_BUDGET ?? 4500);
  const deadline = Date.now() + budget * 1000;
  const cpus = process.env.UBLK_VM_CPUS;

  /** What to run: the host's own kernel, one custom bzImage, or the selected test kernels. */
  let plans;
  if (direct) {
    plans = [{ tag: 'host', label: release(), kernel: null }];
    if (kernelOption !== undefined || process.env.UBLK_TEST_KERNELS) {
      log(`e2e: this kernel (${release()}) has ublk, so the suite runs here once; --kernel / UBLK_TEST_KERNELS pick VM kernels (add --vm)`);
    }
  } else if (process.env.UBLK_VM_KERNEL) {
    const kernel = resolve(process.env.UBLK_VM_KERNEL);
    plans = [{ tag: 'custom', label: relative(root, kernel) || kernel, kernel }];
    if (kernelOption !== undefined || process.env.UBLK_TEST_KERNELS) log(`e2e: UBLK_VM_KERNEL is set, so only ${kernel} boots (--kernel / UBLK_TEST_KERNELS ignored)`);
  } else {
    plans = selectedKernels.map((k) => ({ tag: k, label: k, kernel: join(vmDir, TEST_KERNELS[k]) }));
  }
  mkdirSync(runDir, { recursive: true });
  for (const { tag } of plans) {
    for (const f of [e2eInfoFile(tag), streamFile(`e2e-${tag}`), vmLogFile(tag)]) rmSync(f, { force: true });
  }
  const together = Math.min(vmJobs, plans.length) > 1;

  /** Runs the suite on one kernel; resolves with { plan, where, failure, info, ms }. */
  async function runOn(plan) {
    const started = Date.now();
    const r = { plan, where: plan.kernel ? 'VM' : 'host', failure: null, info: null, ms: 0 };
    const env = { ...process.env, UBLK_TEST_RUN_ID: runId, UBLK_TEST_KERNEL_TAG: plan.tag };
    if (together && !process.env.UBLK_E2E_FILE_TIMEOUT) env.UBLK_E2E_FILE_TIMEOUT = '600';
    const infoFile = e2eInfoFile(plan.tag);
    if (!plan.kernel) {
      banner(`e2e tests (this kernel, ${release()})`);
      await run(process.execPath, [fileURLToPath(import.meta.url), '--e2e-inner', ...argv], { env });
    } else {
      let executable = true;
      try {
        accessSync(runner, constants.X_OK);
      } catch {
        executable = false;
      }
      const left = Math.floor((deadline - Date.now()) / 1000);
      const timeout = Math.min(vmTimeout, left);
      const prefix = together ? `[${plan.label}] ` : undefined;
      if (!existsSync(plan.kernel)) {
        r.failure = `no ublk kernel: ${plan.kernel} does not exist (${plan.tag === 'custom' ? 'UBLK_VM_KERNEL' : 'build it, or pick another with --kernel'})\n${howToGetKernel()}`;
      } else if (!executable) {
        r.failure = `no VM runner: ${runner} is missing or not executable (set UBLK_VM_RUNNER)\n${howToGetKernel()}`;
      } else if (timeout < 120) {
        r.failure = `no time left: the guests together may take UBLK_E2E_BUDGET=${budget} s, and ${budget - left} s are gone`;
      } else {
        const opts = ['--scratch', scratch, ...(cpus ? ['--cpus', cpus] : [])];
        const started0 = Date.now();
        banner(`e2e tests on ${plan.label} (VM: ${relative(root, plan.kernel) || plan.kernel})`);
        log(`${prefix ?? ''}runner: ${runner} ${opts.join(' ')} --timeout ${timeout}${prefix ? ` (console log: ${relative(root, vmLogFile(plan.tag))})` : ''}`);
        // Exit 2 without results means the runner refused before booting the guest. The
        // shared runner's own busybox check (`busybox --list | grep -q` under pipefail) can
        // fail now and then with SIGPIPE, so that is tried again twice before it counts.
        // A guest that started no tests within UBLK_VM_START_LIMIT s (default 600) is
        // ended and booted once more. So is a guest that ended before its first test
        // (exit 98 with nothing started: once seen in CI, 5 s after the start, with no
        // trace of why); its last console lines go into the failure if it does so again.
        let rc = 2;
        const started = streamFile(`e2e-${plan.tag}`);
        const refused = () => rc === 2 && !existsSync(infoFile) && !existsSync(started);
        const diedEarly = () => rc === 98 && !existsSync(started);
        const startLimitMs = Number(process.env.UBLK_VM_START_LIMIT ?? 600) * 1000;
        let stalls = 0;
        let tail = [];
        const again = () => refused() || (stalls === 1 && !existsSync(started)) || diedEarly();
        for (let attempt = 1; attempt <= 3 && (attempt === 1 || again()); attempt++) {
          if (attempt > 1) {
            const why = stalls ? 'the guest stalled before its tests' : diedEarly() ? 'the guest ended before its first test (exit 98)' : 'runner refused to start (exit 2)';
            log(`${prefix ?? ''}${why}; trying again (${attempt}/3)`);
          }
          const t1 = Date.now();
          tail = [];
          rc = await run(runner, [...opts, '--timeout', String(Math.max(120, timeout - Math.floor((t1 - started0) / 1000))), '--', 'node', 'scripts/test.mjs', '--e2e-inner', ...argv], {
            env: { ...env, UBLK_VM_KERNEL: plan.kernel },
            prefix,
            tail,
            logFile: vmLogFile(plan.tag),
            startedFile: started,
            startLimitMs,
          });
          if (!existsSync(started) && Date.now() - t1 >= startLimitMs) stalls++;
          if (stalls > 1) break;
        }
        const quoted = tail.length ? `\n    its last console lines:\n${tail.map((l) => `      | ${l}`).join('\n')}` : '';
        if (stalls > 0 && !existsSync(started)) {
          r.failure = `the guest started no tests within ${startLimitMs / 1000} s, ${stalls} time(s) (a boot or start that hangs; UBLK_VM_START_LIMIT sets the limit)`;
          r.consoleTail = quoted;
        } else if (rc === 98 || rc === 97) {
          r.failure = `the VM did not run the tests (runner exit ${rc}: ${rc === 98 ? `boot failure, panic or the ${timeout} s timeout` : 'could not enter the project directory'})`;
          r.consoleTail = quoted;
        } else if (rc === 2 && !existsSync(infoFile)) {
          r.failure = `the VM runner refused to start (exit 2; see its message above)\n${howToGetKernel()}`;
        }
      }
    }
    try {
      r.info = JSON.parse(readFileSync(infoFile, 'utf8'));
    } catch {
      r.failure ??= 'the e2e run produced no results (the guest or the test runner died before finishing)';
    }
    r.ms = Date.now() - started;
    if (r.failure) shout(r);
    else if (together) log(`[${plan.label}] finished on ${r.info.kernel} in ${secs(r.ms)}`);
    return r;
  }

  // vmJobs guests at a time, in the order of the plans (newest kernel first).
  const results = new Array(plans.length);
  let next = 0;
  const worker = async () => {
    while (next < plans.length) {
      const i = next++;
      results[i] = await runOn(plans[i]);
    }
  };
  await Promise.all(Array.from({ length: Math.min(vmJobs, plans.length) }, worker));
  for (const r of results) await addE2e(r, files);
  if (together) summary.push(`e2e: ${plans.length} guests ran at once, ${secs(Date.now() - (deadline - budget * 1000))} for all`);
}

banner('summary');
for (const line of summary) log(line);
if (skippedNotes.length > 0) {
  log('skipped (not for that kernel):');
  for (const n of skippedNotes) log(`  - ${n}`);
}
if (problems.length > 0) {
  log('failures:');
  for (const p of problems.slice(0, 50)) log(`  - ${p}`);
}
if (unitOnly) log('e2e: not run (--unit-only)');
log(`total time ${secs(Date.now() - t0)}`);
log(`${passed} passed, ${failed} failed`);
process.exit(failed > 0 ? 1 : 0);
