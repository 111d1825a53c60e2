// Issue 8: the daemon's busy check must not get in the way of a user's mount. The old
// check opened /dev/ublkbN with O_EXCL on every sweep; a `mount` claiming the device at
// that moment failed with EBUSY. Now every sweep looks only (holders, mountinfo of every
// mount namespace, swaps, open descriptors) and the exclusive open is left to the moment
// right before a device is torn down.
import t, { type Test } from 'tap';
import { spawn } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { DaemonClient } from '../../lib/daemon/client.js';
import { MiB, run, sh, sleep, sparseImage, waitGone, workDir } from '../helpers/e2e.js';
import { startDaemon, type DaemonHandle } from '../helpers/daemon.js';

/** Sweep often, so that a sweep meets the mount loop as many times as possible. */
const SWEEP_MS = 20;
const LOOPS = 100;
const LOOP_MS = 40_000;

interface Attached {
  client: DaemonClient;
  path: string;
  ublkId: number;
}

function helpers(d: DaemonHandle, name: string) {
  const sock = join(d.root, 'instances', name, 'control.sock');
  const watcher = d.instance(name);
  const state = async (index: number): Promise<string> => {
    try {
      return ((await watcher.request({ op: 'info', index }))['device'] as { state: string }).state;
    } catch (err) {
      return (err as { code: string }).code;
    }
  };
  const until = async (index: number, want: string, ms: number): Promise<boolean> => {
    const end = Date.now() + ms;
    while (Date.now() < end) {
      if ((await state(index)) === want) return true;
      await sleep(200);
    }
    return (await state(index)) === want;
  };
  const attach = async (fd: number): Promise<Attached> => {
    const client = DaemonClient.connect(sock);
    const r = await client.request({ op: 'bind', autoclear: true }, [fd]);
    const dev = r['device'] as { path: string; ublkId: number };
    return { client, path: dev.path, ublkId: dev.ublkId };
  };
  return { state, until, attach };
}

/** A daemon sweeping every SWEEP_MS, and an autoclear ext4 device of instance `name`. */
async function ext4Device(t: Test, name: string, graceMs: number) {
  const dir = workDir(t);
  const img = sparseImage(join(dir, `${name}.img`), 64 * MiB);
  const d = await startDaemon(t, dir, ['--autoclear-grace', String(graceMs), '--sweep-interval', String(SWEEP_MS)]);
  await d.admin().request({ op: 'instance.create', name });
  const { state, until, attach } = helpers(d, name);
  const fd = openSync(img, 'r+');
  t.teardown(() => closeSync(fd));
  const a = await attach(fd);
  sh('mkfs.ext4', ['-q', '-F', a.path]);
  const mnt = join(dir, 'mnt');
  mkdirSync(mnt);
  return { state, until, a, mnt };
}

t.test('a mount/umount loop never meets EBUSY from the sweep; the device still goes once idle', async (t) => {
  const GRACE_MS = 8000;
  const { state, until, a, mnt } = await ext4Device(t, 'bp', GRACE_MS);
  t.teardown(() => {
    if (run('mountpoint', ['-q', mnt]).status === 0) run('umount', ['-l', mnt]);
  });
  // autoclear with its client gone: from now on every sweep checks this device
  a.client.close();
  await sleep(500);

  // One shell runs the whole loop (a node spawn per command is slow under emulation);
  // `-t ext4` spares mount its own probing of the device.
  const loop = [
    'i=0; end=$(( $(date +%s) + $4 ))',
    'while [ $i -lt $3 ] && [ $(date +%s) -lt $end ]; do',
    '  i=$((i+1))',
    '  if out=$(mount -t ext4 "$1" "$2" 2>&1); then',
    '    echo "mounted $i"',
    '    out=$(umount "$2" 2>&1) || echo "umount-failed $i $out"',
    '  else',
    '    echo "mount-failed $i $out"',
    '  fi',
    'done',
  ].join('\n');
  const start = Date.now();
  const r = run('sh', ['-c', loop, 'sh', a.path, mnt, String(LOOPS), String(LOOP_MS / 1000)], { timeout: LOOP_MS + 120_000 });
  t.equal(r.status, 0, `the loop ran: ${r.stderr.trim()}`);
  const lines = r.stdout.split('\n').filter((l) => l.length > 0);
  const i = lines.filter((l) => !l.startsWith('umount-failed')).length;
  const mounts = lines.filter((l) => l.startsWith('mounted')).length;
  const failures = lines.filter((l) => !l.startsWith('mounted'));
  const ebusy = failures.filter((l) => /busy/i.test(l)).length;
  const secs = ((Date.now() - start) / 1000).toFixed(1);
  t.comment(`${i} mount attempts in ${secs} s (sweep every ${SWEEP_MS} ms): ${mounts} mounted, ${ebusy} EBUSY, ${failures.length} failures`);
  for (const f of failures.slice(0, 10)) t.comment(f);
  t.equal(ebusy, 0, 'no mount failed with EBUSY');
  t.same(failures, [], 'every mount and umount succeeded');
  t.equal(mounts, i, 'every attempt mounted');
  t.equal(await state(0), 'bound', 'the device was not torn down during the loop');

  // the check still works: idle now, the device goes after the grace time
  t.ok(await until(0, 'unbound', GRACE_MS + 10_000), 'unbound once idle for the grace time');
  t.same(await waitGone(a.ublkId, 5000), [], 'the ublk device is gone');
  t.notOk(existsSync(a.path), 'its node is gone');
});

t.test('a device mounted only in another mount namespace is busy', async (t) => {
  const GRACE_MS = 3000;
  const { state, until, a, mnt } = await ext4Device(t, 'ns', GRACE_MS);
  // exec: the mount namespace lives exactly as long as this pid
  const proc = spawn('unshare', ['-m', '--propagation', 'private', 'sh', '-c', `mount "$0" "$1" && echo mounted && exec sleep 120`, a.path, mnt], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  proc.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s));
  const exited = new Promise<void>((r) => proc.on('exit', () => r()));
  t.teardown(async () => {
    if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
    await exited;
  });
  await new Promise<void>((resolve, reject) => {
    proc.stdout.on('data', () => resolve());
    proc.on('exit', (code) => reject(new Error(`the mount in a new namespace failed (${code}): ${stderr.trim()}`)));
  });
  const here = readFileSync('/proc/self/mountinfo', 'utf8');
  t.notOk(here.includes(` ${mnt} `), 'the mount is not visible in the test\'s own namespace');

  a.client.close();
  await sleep(GRACE_MS + 2000);
  t.equal(await state(0), 'bound', 'kept past the grace time while mounted in another namespace');

  proc.kill('SIGTERM');
  await exited;
  t.ok(await until(0, 'unbound', GRACE_MS + 10_000), 'unbound once that namespace (and its mount) is gone');
  t.same(await waitGone(a.ublkId, 5000), [], 'the ublk device is gone');
});
