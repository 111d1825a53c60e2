// ubloop-e2e-kernels: >=7.0 -- unprivileged ublk devices need UBLK_F_UNPRIVILEGED_DEV and GET_DEV_INFO2 (Linux 6.3+); 6.1's refusal is in unprivileged-refused.test.ts
// Issue 9: an ordinary user serves their own image as a device that they own and
// nobody else may open or control. The kernel's uevent helper stands in for udev and
// runs the same `ubloop udev` the contrib rule runs.
import t, { type Test } from 'tap';
import { chownSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CLI, MiB, ioEngine, run, serve, setControlAccess, sparseImage, waitGone, workDir, type RunResult } from '../helpers/e2e.js';
import { ublkCount, userCli } from '../helpers/daemon.js';

const UBLK_GROUP = 1500; // stands for the rule's group "ublk"
const OWNER = 1001;
const OTHER = 1002;
const HOTPLUG = '/proc/sys/kernel/hotplug';
const UBLKS_MAX = '/sys/module/ublk_drv/parameters/ublks_max';

/** argv prefix that runs a command as uid:uid with the ublk group, in a clean environment. */
function as(uid: number): string[] {
  return ['setpriv', `--reuid=${uid}`, `--regid=${uid}`, `--groups=${UBLK_GROUP}`, '--', 'env', '-i', 'PATH=/usr/bin:/bin:/usr/sbin:/sbin', 'HOME=/tmp', 'LANG=C'];
}
function runAs(uid: number, cmd: string, args: string[]): RunResult {
  return run(as(uid)[0] as string, [...as(uid).slice(1), cmd, ...args], { timeout: 180_000, cwd: '/tmp' });
}
const ubloopAs = (uid: number, args: string[]) => runAs(uid, process.execPath, [userCli(), ...args]);

/** /dev/ublk-control opened to the ublk group, as the contrib rule does; undone at teardown. */
function openControlToGroup(t: Test): void {
  setControlAccess(t, '0660', UBLK_GROUP);
}

/** The kernel's uevent helper runs `ubloop udev` for ublk nodes, as udev would; undone at teardown. */
function installHandover(t: Test, dir: string): string {
  const log = join(dir, 'hotplug.log');
  const helper = join(dir, 'hotplug.sh');
  writeFileSync(
    helper,
    `#!/bin/sh\ncase "$DEVNAME" in\n  ublkc[0-9]*|ublkb[0-9]*) exec ${process.execPath} ${CLI} udev >>${log} 2>&1 ;;\nesac\n`,
    { mode: 0o755 },
  );
  writeFileSync(HOTPLUG, helper);
  t.teardown(() => writeFileSync(HOTPLUG, '\n'));
  return log;
}

/** A 64 MiB image in a directory of the user's own. */
function userImage(dir: string, uid: number, name: string): string {
  run('chmod', ['a+x', dir]);
  const home = join(dir, `home-${uid}`);
  mkdirSync(home, { recursive: true });
  chownSync(home, uid, uid);
  const img = sparseImage(join(home, name), 64 * MiB);
  chownSync(img, uid, uid);
  return img;
}

t.test('a user serves their own image as a device only they can open and control', async (t) => {
  const dir = workDir(t);
  openControlToGroup(t);
  const log = installHandover(t, dir);
  const maxBefore = readFileSync(UBLKS_MAX, 'utf8').trim();
  t.teardown(() => writeFileSync(UBLKS_MAX, maxBefore));
  const countBefore = ublkCount();

  const img = userImage(dir, OWNER, 'own.img');
  const s = await serve(t, [img], 180_000, {}, [...as(OWNER), process.execPath, userCli()]);
  const info = s.info as typeof s.info & { owner: { uid: number; gid: number }; unprivileged: boolean };
  t.equal(info.unprivileged, true, `the device is unprivileged (uevent helper said: ${readFileSync(log, 'utf8').trim()})`);
  t.ok(info.flags.includes('UBLK_F_UNPRIVILEGED_DEV'), 'serve --json lists UBLK_F_UNPRIVILEGED_DEV among the granted flags');
  t.same(info.owner, { uid: OWNER, gid: OWNER }, 'owned by the user who served it');
  t.equal(info['dataPath'], 'kernel', 'auto gives an unprivileged device the kernel copy, the one path the kernel allows it');
  for (const node of [info.path, info.charPath]) {
    const st = statSync(node);
    t.same([st.uid, st.gid, (st.mode & 0o777).toString(8)], [OWNER, OWNER, '600'], `${node} is the owner's alone (by ubloop udev)`);
  }

  const fio = runAs(OWNER, 'fio', [
    '--name=own', `--filename=${info.path}`, `--ioengine=${ioEngine()}`, '--direct=1', '--rw=randwrite', '--bs=4k',
    '--size=32M', '--iodepth=16', '--verify=crc32c', '--do_verify=1', '--verify_fatal=1', '--verify_state_save=0', '--output-format=terse',
  ]);
  t.equal(fio.status, 0, `the owner writes and verifies 32 MiB with fio: ${fio.stderr.trim()}`);

  const peek = runAs(OTHER, 'dd', [`if=${info.path}`, 'of=/dev/null', 'bs=4k', 'count=1', 'status=none']);
  t.not(peek.status, 0, 'another user cannot read the device');
  t.match(peek.stderr, /Permission denied/, `with EACCES: ${peek.stderr.trim()}`);
  // Even a node opened to everyone does not help: the kernel lets only the owner in.
  run('chmod', ['0666', info.path]);
  const opened = runAs(OTHER, 'dd', [`if=${info.path}`, 'of=/dev/null', 'bs=4k', 'count=1', 'status=none']);
  run('chmod', ['0600', info.path]);
  t.match(opened.stderr, /Operation not permitted/, `the kernel refuses the other user even with mode 0666: ${opened.stderr.trim()}`);
  const lib = join(userCli(), '..', '..', 'dist', 'lib', 'native.js');
  for (const op of ['deleteDevice', 'getDeviceInfo']) {
    const r = runAs(OTHER, process.execPath, [
      '--input-type=module', '-e',
      `const { native } = await import(${JSON.stringify(lib)}); try { await native().${op}(${info.id}); console.log('done'); } catch (e) { console.log(e.code); }`,
    ]);
    t.equal(r.stdout.trim(), 'EACCES', `another user's ${op} is refused by the kernel`);
  }
  const cleanup = ubloopAs(OTHER, ['cleanup']);
  t.equal(cleanup.stdout, '', 'another user\'s `ubloop cleanup` touches nothing');

  const list = run(process.execPath, [CLI, 'list', '--json', '--socket', join(dir, 'none.sock')]);
  const entry = (JSON.parse(list.stdout) as { ublkId: number; owner?: { uid: number }; unprivileged?: boolean }[]).find((e) => e.ublkId === info.id);
  t.same([entry?.owner?.uid, entry?.unprivileged], [OWNER, true], 'root sees the owner in ubloop list --json');
  const table = run(process.execPath, [CLI, 'list', '--socket', join(dir, 'none.sock')]);
  t.match(table.stdout, new RegExp(`${info.path}\\s+live\\s+64M\\s+${OWNER}:${OWNER}\\s+pid \\d+\\s+unprivileged`), 'and in the table');

  // The owner resizes their device (UPDATE_SIZE, checked against their /dev/ublkcN).
  run('truncate', ['-s', String(96 * MiB), img]);
  const grow = ubloopAs(OWNER, ['resize', info.path]);
  t.equal(grow.status, 0, `the owner's ubloop resize succeeds: ${grow.stderr.trim()}`);
  t.equal(Number(readFileSync(`/sys/block/ublkb${info.id}/size`, 'utf8')) * 512, 96 * MiB, 'the disk has the image\'s new size');
  const theirs = ubloopAs(OTHER, ['resize', info.path, '--size', String(128 * MiB)]);
  t.not(theirs.status, 0, `another user cannot resize it: ${theirs.stderr.trim()}`);

  // A copy-less path asked for by name is refused before anything is added.
  const zc = ubloopAs(OWNER, ['serve', userImage(dir, OWNER, 'zc.img'), '--copy', 'auto-buf']);
  t.not(zc.status, 0, '--copy auto-buf is refused to a user without CAP_SYS_ADMIN');
  t.match(zc.stderr, /copy mode 'auto-buf' needs CAP_SYS_ADMIN/, `with a message saying why: ${zc.stderr.trim()}`);
  t.equal(ublkCount(), countBefore + 1, 'and no device is left behind');

  // The kernel's cap on unprivileged devices: EACCES past it, said clearly.
  writeFileSync(UBLKS_MAX, '1');
  const img2 = userImage(dir, OWNER, 'second.img');
  const refused = ubloopAs(OWNER, ['serve', img2]);
  t.not(refused.status, 0, 'a second device past ublks_max = 1 is refused');
  t.match(refused.stderr, /ublks_max = 1, is reached; root can raise it/, `with a message naming the cap: ${refused.stderr.trim()}`);
  t.equal(ublkCount(), countBefore + 1, 'and no device is left behind');
  writeFileSync(UBLKS_MAX, '2');
  const second = await serve(t, [img2], 180_000, {}, [...as(OWNER), process.execPath, userCli()]);
  t.equal(second.info.state, 'live', 'raised to 2, the second device comes up');
  t.equal((await second.stop()).code, 0, 'and stops cleanly');
  t.same(await waitGone(second.info.id), [], 'deleted by its owner\'s server');

  // A server killed outright leaves its device; its owner can clean it up.
  await s.stop('SIGKILL');
  t.equal(ublkCount(), countBefore + 1, 'SIGKILL left the device behind');
  const c = ubloopAs(OWNER, ['cleanup']);
  t.equal(c.status, 0, `the owner's ubloop cleanup succeeds: ${c.stderr.trim()}`);
  t.match(c.stdout, new RegExp(`deleted ublk device ${info.id} `), 'and deletes it');
  t.same(await waitGone(info.id), [], 'the device is gone');
});
