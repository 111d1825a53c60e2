// Hostile input: the seeded fuzzer (test/helpers/fuzz.ts) drives a daemon's admin socket
// and an instance's control.sock while child processes storm the instance's CUSE
// loop-control with ioctls (random commands and arguments, LOOP_CTL_ADD/REMOVE/GET_FREE
// with out-of-range values), concurrently. Afterwards: the daemon is alive and answers,
// the state file is valid and says what `list` says, and once the fuzzer's instances are
// removed no ublk device is left and the daemon holds exactly the descriptors it held
// before.
//
// Counts: UBLK_FUZZ_INPUTS socket inputs (CI default 10,000: ~170 a second under the
// VM's emulation, so ~1 min) and UBLK_FUZZ_IOCTLS ioctls
// (default 10,000), from UBLK_FUZZ_SEED (default: random, printed). The 100,000
// inputs take longer than the e2e budget allows under emulation; run them by hand:
//   UBLK_FUZZ_INPUTS=100000 UBLK_FUZZ_SEED=N node scripts/test.mjs --e2e-only test/e2e/fuzz.test.ts
// (UBLOOP_FUZZ_* work too outside the VM; only UBLK_* variables pass into the guest.)
import t from 'tap';
import { execFile } from 'node:child_process';
import { closeSync, existsSync, openSync, readFileSync, readdirSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { upgradeState } from '../../lib/state/migrate.js';
import { fromRecord } from '../../lib/state/state-data.js';
import { IOCTL_CHILD, fuzzSockets } from '../helpers/fuzz.js';
import { startDaemon } from '../helpers/daemon.js';
import { sleep, sparseImage, ublkCharEntries, workDir } from '../helpers/e2e.js';
import { TEST_ADDON } from '../helpers/test-addon.js';

const env = (name: string): string | undefined => process.env[`UBLK_FUZZ_${name}`] ?? process.env[`UBLOOP_FUZZ_${name}`];
const SEED = Number(env('SEED') ?? Math.floor(Math.random() * 2 ** 32)) >>> 0;
const INPUTS = Number(env('INPUTS') ?? 10_000);
const IOCTLS = Number(env('IOCTLS') ?? 10_000);
const IOCTL_PROCS = 3;

t.comment(`fuzz seed ${SEED} (replay: UBLK_FUZZ_SEED=${SEED} UBLK_FUZZ_INPUTS=${INPUTS} UBLK_FUZZ_IOCTLS=${IOCTLS})`);

/** What a process's descriptors point at, sorted (anon inodes and sockets by kind only). */
function fdTargets(pid: number): string[] {
  const out: string[] = [];
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      out.push(readlinkSync(`/proc/${pid}/fd/${fd}`).replace(/^(socket|pipe|anon_inode:[^[]*).*$/, '$1'));
    } catch {
      // closed meanwhile
    }
  }
  return out.sort();
}

interface ListedDevice { instance: string; index: number; state: string }

// ~170 inputs a second under emulation: 10 ms each leaves room, so that a full run by
// hand is not cut short by the e2e file's default 420 s (it was, at 70,221 of 100,000)
const TIMEOUT_MS = Math.max(420_000, 120_000 + INPUTS * 10);
t.setTimeout(TIMEOUT_MS + 60_000);

t.test(`fuzzing the sockets (${INPUTS} inputs) and loop-control (${IOCTLS} ioctls), seed ${SEED}`, { timeout: TIMEOUT_MS }, async (t) => {
  const dir = workDir(t);
  const d = await startDaemon(t, dir, ['--max-devices', '64', '--max-memory', '1G']);
  // the socket file appears at bind(), a moment before listen()
  let admin: ReturnType<typeof d.admin> | undefined;
  for (let i = 0; !admin; i++) {
    try {
      admin = d.admin();
    } catch (err) {
      if (i > 100) throw err;
      await sleep(50);
    }
  }
  await admin.request({ op: 'ping' });
  // What the daemon opens once and keeps (/dev/ublk-control and its ring, CUSE's) is
  // opened before the count: one instance with one device, made and removed.
  await admin.request({ op: 'instance.create', name: 'warm-up' });
  const image = openSync(sparseImage(join(dir, 'warm.img'), 1 << 20), 'r+');
  await admin.request({ op: 'bind', instance: 'warm-up' }, [image]);
  closeSync(image);
  await admin.request({ op: 'instance.remove', name: 'warm-up', force: true });
  const ublkBefore = ublkCharEntries();
  await sleep(200);
  const fdsBefore = fdTargets(d.proc.pid as number);

  await admin.request({ op: 'instance.create', name: 'fz-base', max: 64 });
  const base = join(d.root, 'instances', 'fz-base');
  const loopControl = join(base, 'loop-control');
  const haveCuse = existsSync(loopControl);

  // the ioctl storm, in child processes (an ioctl blocks its thread until the daemon answers)
  const run = promisify(execFile);
  const per = Math.ceil(IOCTLS / IOCTL_PROCS);
  const storm = haveCuse
    ? Promise.all(Array.from({ length: IOCTL_PROCS }, (_, k) =>
      run(process.execPath, ['-e', IOCTL_CHILD, TEST_ADDON, loopControl, String(SEED + k + 1), String(per)], { timeout: 600_000 })
        .then((r) => JSON.parse(r.stdout) as { n: number; results: Record<string, number> })))
    : Promise.resolve([]);

  const report = await fuzzSockets({
    seed: SEED,
    inputs: INPUTS,
    dir,
    targets: [{ path: d.socket }, { path: join(base, 'control.sock'), instance: 'fz-base' }],
  });
  const ioctl = await storm;
  const ioctls = ioctl.reduce((n, r) => n + r.n, 0);
  const ioctlResults: Record<string, number> = {};
  for (const r of ioctl) for (const [k, v] of Object.entries(r.results)) ioctlResults[k] = (ioctlResults[k] ?? 0) + v;
  t.comment(`socket: ${report.inputs} inputs, ${report.lines} lines, ${report.replies} replies (${report.ok} ok), ${report.closedByDaemon} closed, ${report.ms} ms (${Math.round(report.inputs / (report.ms / 1000))}/s)`);
  t.comment(`socket errors: ${JSON.stringify(report.errors)}`);
  t.comment(`ioctls: ${ioctls} ${JSON.stringify(ioctlResults)}`);

  t.same(report.failures, [], `every input answered in shape and in time (seed ${SEED})`);
  t.ok(report.inputs >= INPUTS, `${report.inputs} socket inputs`);
  if (haveCuse) t.ok(ioctls >= IOCTLS, `${ioctls} ioctls`);
  else t.fail('no CUSE loop-control node: the ioctls were not fuzzed');
  t.ok(d.alive(), `the daemon is alive (seed ${SEED})`);
  t.match(await admin.request({ op: 'ping' }), { ok: true, pid: d.proc.pid }, 'and answers');

  // the state file says what list says
  const listState = async () => {
    const devices = (await admin.request({ op: 'list' }))['devices'] as ListedDevice[];
    const instances = ((await admin.request({ op: 'instance.list' }))['instances'] as { name: string }[]).map((i) => i.name);
    return instances.map((name) => ({
      name,
      indices: devices.filter((x) => x.instance === name).map((x) => x.index),
      bound: devices.filter((x) => x.instance === name && x.state === 'bound').map((x) => x.index),
    }));
  };
  const fileState = () => {
    const saved = fromRecord(upgradeState(JSON.parse(readFileSync(d.state, 'utf8')), d.state).state);
    return saved.instances.map((i) => ({ name: i.name, indices: i.indices, bound: i.bindings.map((b) => b.index).sort((a, b) => a - b) }));
  };
  const listed = await listState();
  t.same(fileState(), listed, `the state file is valid and holds what list says (seed ${SEED})`);
  t.comment(`after fuzzing: ${JSON.stringify(listed.map((i) => [i.name, i.indices.length, i.bound.length]))}`);

  // remove what the fuzzer legitimately made (every instance of this daemon: mutated
  // creates pick names of their own): nothing of it may remain
  for (const { name } of listed) await admin.request({ op: 'instance.remove', name, force: true });
  t.same(await listState(), [], 'no instance left');
  t.same(fileState(), [], 'nor in the state file');
  t.same(ublkCharEntries(), ublkBefore, `no ublk device leaked (seed ${SEED})`);
  let fds = fdTargets(d.proc.pid as number);
  for (let i = 0; i < 50 && fds.length !== fdsBefore.length; i++) {
    await sleep(100);
    fds = fdTargets(d.proc.pid as number);
  }
  t.same(fds, fdsBefore, `the daemon holds the descriptors it held before (seed ${SEED})`);
});
