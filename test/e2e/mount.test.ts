// ubloop mount / umount, mount.ubloop (mount -t ubloop, an fstab line) and the mount's
// autoclear: the device goes when its filesystem does, however it is unmounted (plain
// umount, lazy umount once the last user closes, the mount namespace going away).
// Partitioned images: -P shows both partitions, each mounts with its content, detach
// removes them; without -P (kernels with UBLK_F_NO_AUTO_PART_SCAN) none appear.
import t from 'tap';
import { spawn } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT, MiB, run, sh, sleep, sparseImage, workDir } from '../helpers/e2e.js';
import { startDaemon, type DaemonHandle } from '../helpers/daemon.js';

const UBLOOP = join(ROOT, 'bin', 'ubloop.js');
const HELPER = join(ROOT, 'bin', 'mount.ubloop.js');

interface Listed {
  name: string;
  autoclear: boolean;
  'back-file': string;
  partscan: boolean;
  'maj:min': string;
}

function env(d: DaemonHandle): NodeJS.ProcessEnv {
  return { ...process.env, UBLOOP_SOCKET: d.socket, UBLOOP_ROOT: d.root, UBLOOP_STATE: d.state };
}

function ubloop(d: DaemonHandle, args: string[]) {
  return run(process.execPath, [UBLOOP, ...args], { env: env(d), timeout: 180_000 });
}

function okRun(what: string, r: { status: number | null; stderr: string; stdout: string }): string {
  if (r.status !== 0) throw new Error(`${what} failed (${r.status}): ${r.stderr.trim() || r.stdout.trim()}`);
  return r.stdout;
}

/** The default instance's devices as `ubloop losetup -l -J -O ...` shows them. */
function listed(d: DaemonHandle): Listed[] {
  const out = okRun('losetup -l', ubloop(d, ['losetup', '--socket', d.socket, '--root', d.root, '-l', '-J', '-O', 'NAME,AUTOCLEAR,BACK-FILE,PARTSCAN,MAJ:MIN']));
  if (out.trim() === '') return [];
  return (JSON.parse(out) as { loopdevices: Listed[] }).loopdevices;
}

/** The block device mounted on dir (findmnt's SOURCE), or null. */
function source(dir: string): string | null {
  const r = run('findmnt', ['-n', '-o', 'SOURCE', '--mountpoint', dir]);
  return r.status === 0 ? r.stdout.trim().split('\n').at(-1) ?? null : null;
}

/** ms until /sys/block/NAME is gone, or -1 after limitMs. */
async function goneWithin(name: string, limitMs: number): Promise<number> {
  const start = Date.now();
  while (Date.now() - start <= limitMs) {
    if (!existsSync(`/sys/block/${name}`)) return Date.now() - start;
    await sleep(25);
  }
  return -1;
}

const disk = (dev: string) => dev.replace(/^\/dev\//, '');

/** An ext4 image with /hello in it. */
function ext4Image(path: string, content: string): string {
  sparseImage(path, 40 * MiB);
  sh('mkfs.ext4', ['-q', '-F', path]);
  const src = `${path}.hello`;
  writeFileSync(src, content);
  // debugfs writes into the image without mounting anything (no loop device needed)
  sh('debugfs', ['-w', '-R', `write ${src} hello`, path]);
  return path;
}

t.test('ubloop mount: umount, lazy umount, a namespace going away release the device; reuse; mount -t ubloop; fstab', async (t) => {
  const dir = workDir(t);
  const d = await startDaemon(t, dir);
  const img = ext4Image(join(dir, 'disk.img'), 'plain\n');
  const mnt = join(dir, 'mnt');
  const mnt2 = join(dir, 'mnt2');
  mkdirSync(mnt);
  mkdirSync(mnt2);
  t.teardown(() => {
    for (const m of [mnt2, mnt]) if (run('mountpoint', ['-q', m]).status === 0) run('umount', ['-l', m]);
  });

  // plain umount
  okRun('ubloop mount', ubloop(d, ['mount', img, mnt]));
  const dev = source(mnt) as string;
  t.match(dev, /^\/dev\/ublkb\d+$/, `mounted from the ublk disk (${dev})`);
  t.equal(readFileSync(join(mnt, 'hello'), 'utf8'), 'plain\n', 'the image\'s content');
  const l = listed(d);
  t.match(l, [{ autoclear: true, 'back-file': img }], 'losetup -l shows AUTOCLEAR 1');
  // a second mount of the same image and offset reuses the device
  okRun('second ubloop mount', ubloop(d, ['mount', img, mnt2]));
  t.equal(source(mnt2), dev, 'the second mount reuses the device');
  t.equal(listed(d).length, 1, 'one device for both mounts');
  sh('umount', [mnt2]);
  await sleep(600);
  t.ok(existsSync(`/sys/block/${disk(dev)}`), 'still there while the other mount holds it');
  sh('umount', [mnt]);
  const plain = await goneWithin(disk(dev), 2000);
  t.ok(plain >= 0, `plain umount: the device is gone ${plain} ms later (limit 2000)`);
  t.same(listed(d), [], 'and unbound');

  // lazy umount: the device stays while a file in the filesystem is open, goes after the close
  okRun('ubloop mount', ubloop(d, ['mount', img, mnt]));
  const lazyDev = source(mnt) as string;
  const holder = spawn('sh', ['-c', `exec 3<${join(mnt, 'hello')}; echo opened; read line`], { stdio: ['pipe', 'pipe', 'inherit'] });
  await new Promise<void>((resolve) => holder.stdout?.once('data', () => resolve()));
  sh('umount', ['-l', mnt]);
  await sleep(1500);
  t.ok(existsSync(`/sys/block/${disk(lazyDev)}`), 'lazily unmounted, a file still open: the device stays');
  t.match(listed(d), [{ autoclear: true }], 'and is listed');
  const closed = new Promise<void>((r) => holder.on('exit', () => r()));
  holder.stdin?.end('\n');
  await closed;
  const lazy = await goneWithin(disk(lazyDev), 2000);
  t.ok(lazy >= 0, `after the last close: gone ${lazy} ms later (limit 2000)`);

  // a mount namespace going away
  const ns = run('unshare', ['-m', '--propagation', 'private', 'sh', '-c', `"$0" "$1" mount "$2" "$3" && cat "$3/hello" && findmnt -n -o SOURCE --mountpoint "$3"`, process.execPath, UBLOOP, img, mnt], { env: env(d), timeout: 180_000 });
  okRun('ubloop mount in a namespace', ns);
  const nsDev = ns.stdout.trim().split('\n').at(-1) as string;
  t.match(ns.stdout.trim(), /^plain\n\/dev\/ublkb\d+$/, 'mounted inside the namespace');
  t.equal(source(mnt), null, 'not visible outside it');
  const nsGone = await goneWithin(disk(nsDev), 2000);
  t.ok(nsGone >= 0, `namespace gone: the device is gone ${nsGone} ms later (limit 2000)`);

  // mount.ubloop where mount(8) looks for helpers (/sbin; the guest's root is an overlay we may write)
  const wrapper = join(dir, 'mount.ubloop');
  writeFileSync(wrapper, `#!/bin/sh\nexec ${process.execPath} ${HELPER} "$@"\n`);
  chmodSync(wrapper, 0o755);
  const installed = '/sbin/mount.ubloop';
  rmSync(installed, { force: true });
  symlinkSync(wrapper, installed);
  t.teardown(() => rmSync(installed, { force: true }));
  okRun('mount -t ubloop', run('mount', ['-t', 'ubloop', img, mnt], { env: env(d), timeout: 180_000 }));
  const helperDev = source(mnt) as string;
  t.match(helperDev, /^\/dev\/ublkb\d+$/, `mount -t ubloop: mounted from ${helperDev}`);
  t.equal(readFileSync(join(mnt, 'hello'), 'utf8'), 'plain\n');
  sh('umount', [mnt]);
  t.ok((await goneWithin(disk(helperDev), 2000)) >= 0, 'and released by umount');

  // an fstab line, with the filesystem 1 MiB into the image (ubloop.offset=: mount(8) keeps offset= from helpers)
  const off = join(dir, 'off.img');
  sparseImage(off, 41 * MiB);
  const fstab = join(dir, 'fstab');
  writeFileSync(fstab, `${off} ${mnt} ubloop defaults,ubloop.offset=1M 0 0\n`);
  // the filesystem is made through a device at that offset, and a file written into it
  const made = okRun('losetup', ubloop(d, ['losetup', '--socket', d.socket, '--root', d.root, '-f', '--show', '-o', '1M', off])).trim();
  sh('mkfs.ext4', ['-q', '-F', made]);
  sh('mount', [made, mnt]);
  writeFileSync(join(mnt, 'hello'), 'at 1M\n');
  sh('umount', [mnt]);
  okRun('losetup -d', ubloop(d, ['losetup', '--socket', d.socket, '--root', d.root, '-d', made]));
  okRun('mount DIR (fstab)', run('mount', ['--fstab', fstab, mnt], { env: env(d), timeout: 180_000 }));
  const fstabDev = source(mnt) as string;
  t.equal(readFileSync(join(mnt, 'hello'), 'utf8'), 'at 1M\n', `fstab: mounted the filesystem at offset 1M (${fstabDev})`);
  okRun('ubloop umount', ubloop(d, ['umount', mnt]));
  t.ok((await goneWithin(disk(fstabDev), 2000)) >= 0, 'ubloop umount: unmounted and released');
});

t.test('partitions: -P shows both, each mounts with its content, detach removes them; none without -P where the kernel lets us say so', async (t) => {
  const dir = workDir(t);
  const d = await startDaemon(t, dir);
  const img = sparseImage(join(dir, 'parts.img'), 48 * MiB);
  sh('sfdisk', ['-q', img], { input: 'label: dos\nstart=2048, size=40960, type=83\nstart=43008, type=c\n' });
  const losetup = (args: string[]) => okRun(`losetup ${args.join(' ')}`, ubloop(d, ['losetup', '--socket', d.socket, '--root', d.root, ...args]));
  const mnt = join(dir, 'mnt');
  mkdirSync(mnt);
  t.teardown(() => {
    if (run('mountpoint', ['-q', mnt]).status === 0) run('umount', ['-l', mnt]);
  });
  const diskName = (majMin: string) => readFileSync(`/sys/dev/block/${majMin.trim()}/uevent`, 'utf8').match(/DEVNAME=(\S+)/)?.[1] as string;

  // set up with -P: the partitions appear, filesystems are made on them and a file written into each
  const node = losetup(['-P', '-f', '--show', img]).trim();
  let l = listed(d);
  t.match(l, [{ partscan: true }], 'losetup -l shows PARTSCAN 1');
  let name = diskName(l[0]?.['maj:min'] as string);
  t.ok(existsSync(`/dev/${name}p1`) && existsSync(`/dev/${name}p2`), `both partitions appear (/dev/${name}p1, p2)`);
  t.ok(existsSync(`${node}p1`) && existsSync(`${node}p2`), `and beside the device's node, as a losetup script names them (${node}p1)`);
  sh('mkfs.ext4', ['-q', '-F', `${node}p1`]);
  sh('mkfs.vfat', [`${node}p2`]);
  for (const [p, text] of [['p1', 'ext4 part\n'], ['p2', 'vfat part\n']] as const) {
    sh('mount', [`${node}${p}`, mnt]);
    writeFileSync(join(mnt, 'hello'), text);
    sh('umount', [mnt]);
  }
  losetup(['-d', node]);
  t.ok((await goneWithin(name, 2000)) >= 0 && !existsSync(`/dev/${name}p1`) && !existsSync(`/dev/${name}p2`), 'detach removes the disk and its partitions');
  t.notOk(existsSync(`${node}p1`), 'and the partition nodes beside its node');

  // again with -P: each partition mounts with the right content and type
  losetup(['-P', '-f', img]);
  l = listed(d);
  name = diskName(l[0]?.['maj:min'] as string);
  for (const [p, type, text] of [['p1', 'ext4', 'ext4 part\n'], ['p2', 'vfat', 'vfat part\n']] as const) {
    sh('mount', [`/dev/${name}${p}`, mnt]);
    t.equal(run('findmnt', ['-n', '-o', 'FSTYPE', '--mountpoint', mnt]).stdout.trim(), type, `${p} is ${type}`);
    t.equal(readFileSync(join(mnt, 'hello'), 'utf8'), text, `${p} has its content`);
    sh('umount', [mnt]);
  }
  losetup(['-D']);
  t.ok((await goneWithin(name, 2000)) >= 0, 'detached');

  // without -P: with UBLK_F_NO_AUTO_PART_SCAN (Linux 7.0+) nothing is scanned; older kernels scan every ublk disk, and PARTSCAN says so
  const features = JSON.parse(okRun('features', ubloop(d, ['features', '--json']))) as { features: string[] | null };
  const canSuppress = features.features?.includes('UBLK_F_NO_AUTO_PART_SCAN') ?? false;
  losetup(['-f', img]);
  l = listed(d);
  name = diskName(l[0]?.['maj:min'] as string);
  await sleep(500); // a scan the kernel would do is asynchronous on 7.x
  if (canSuppress) {
    t.notOk(existsSync(`/dev/${name}p1`) || existsSync(`/sys/block/${name}/${name}p1`), 'no partition nodes without -P');
    t.match(l, [{ partscan: false }], 'PARTSCAN 0');
  } else {
    t.equal(existsSync(`/sys/block/${name}/${name}p1`), true, `this kernel (no NO_AUTO_PART_SCAN) scanned anyway`);
    t.match(l, [{ partscan: true }], 'and PARTSCAN says so');
  }
  losetup(['-D']);
  t.ok((await goneWithin(name, 2000)) >= 0, 'detached');
});
