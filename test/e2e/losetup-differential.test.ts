// `ubloop losetup` against util-linux losetup: the same invocations, in the same order,
// run with the system's losetup on kernel loop devices and with ubloop-losetup on the
// ublk devices of an instance. Each case must give the same exit status and the same
// stderr (program name and device names replaced), and its output the same shape: the
// same JSON apart from device names and ublk-specific values (MAJ:MIN), the same
// columns in the same order with the same alignment, the same rows.
//
// The VM's util-linux is 2.38.1: it has no REF column and no --remove, and its
// --output-all needs -l. Those are compared against util-linux's documentation only
// (losetup(8) of 2.39+): ubloop's REF is an empty (null) column after PARTSCAN, and
// --remove removes a detached device; the cases below say where.
import t from 'tap';
import { existsSync, mkdirSync, readFileSync, writeFileSync, chmodSync } from 'node:fs';
import { release } from 'node:os';
import { join } from 'node:path';
import { DaemonClient } from '../../lib/daemon/client.js';
import { ROOT, MiB, run, sh, sleep, sparseImage, workDir, type RunResult } from '../helpers/e2e.js';
import { startDaemon } from '../helpers/daemon.js';

const ULOSETUP = join(ROOT, 'bin', 'ubloop-losetup.js');

interface Side {
  kind: 'kernel' | 'ubloop';
  run(args: string[]): RunResult;
  /** Devices the cases attached, in order ($DEV0, $DEV1, ...). */
  devs: string[];
  /** A device name that does not exist. */
  nodev: string;
  /** A free device to name in `losetup DEV FILE`. */
  named: string;
}

interface Case {
  args: string;
  /** How stdout is compared. */
  out: 'exact' | 'lines' | 'json' | 'table' | 'raw' | 'none';
  /** The case attaches a device (its --show output, or `named`): remember it as the next $DEVn. */
  attaches?: 'show' | 'named';
  /** ubloop says more on stderr here (a word on what it cannot do); both must still agree on the status. */
  ubloopNote?: RegExp;
  /** Columns / keys whose values are ublk-specific. */
  ublk?: string[];
  /** Not in util-linux 2.38.1: dropped from ubloop's output before comparing (documented columns). */
  newer?: string[];
  before?: (s: Side) => void;
  after?: (s: Side) => void | Promise<void>;
}

const sortLines = (s: string) => s.split('\n').filter(Boolean).sort().join('\n');

function normalize(text: string, s: Side): string {
  let out = text.replace(/^ubloop-losetup:/gm, 'losetup:').replace(/Try 'ubloop-losetup --help'/g, "Try 'losetup --help'");
  const names = s.devs.map((d, i) => [d, `$DEV${i}`] as const).sort((a, b) => b[0].length - a[0].length);
  const swap = (from: string, to: string) => (out = out.replace(new RegExp(`${from.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}(?!\\d)`, 'g'), to));
  for (const [d, tag] of names) swap(d, tag);
  swap(s.nodev, '$NODEV');
  swap(s.named, '$NAMED');
  return out.replace(/\/dev\/loop\d+|\/\S*\/instances\/default\/loop\d+/g, '$DEVX');
}

function jsonRows(text: string, drop: string[]): Record<string, unknown>[] {
  const rows = (JSON.parse(text) as { loopdevices: Record<string, unknown>[] }).loopdevices;
  return rows.map((r) => Object.fromEntries(Object.entries(r).filter(([k]) => !drop.includes(k))));
}

/**
 * A table's columns and rows. Cells are the blank-separated words of each line (no
 * cell here holds a blank; MAJ:MIN's padding falls away), names in `absent` are
 * columns whose cells are all empty (so they have no words: REF), names in `drop` are
 * not compared. The alignment of each column is read from the text itself: L when
 * every cell starts where its header starts, R when it ends where its header ends.
 */
function columnsOf(text: string, raw: boolean, drop: string[], absent: string[], norm: (cell: string) => string): { header: string[]; rows: string[][]; align: string[] } {
  const lines = text.split('\n').filter(Boolean);
  const headerLine = lines[0] ?? '';
  const words = (l: string) => (raw ? l.split(' ') : l.trim().split(/\s+/));
  const header = words(headerLine).filter((h) => !absent.includes(h));
  const keep = header.map((h) => !drop.includes(h));
  const rows = lines.slice(1).map((l) => words(l).filter((w) => raw || w !== '').filter((_w, i) => keep[i]).map(norm));
  const align: string[] = [];
  if (!raw) {
    for (const m of headerLine.matchAll(/\S+/g)) {
      if (absent.includes(m[0]) || drop.includes(m[0])) continue;
      const start = m.index ?? 0;
      const end = start + m[0].length;
      const body = lines.slice(1);
      const left = body.every((l) => l[start] !== ' ' && (start === 0 || l[start - 1] === ' '));
      const right = body.every((l) => l[end - 1] !== ' ' && (l[end] ?? ' ') === ' ');
      align.push(left && right ? 'LR' : left ? 'L' : right ? 'R' : '?');
    }
  }
  return { header: header.filter((_h, i) => keep[i]), rows, align };
}

t.test('ubloop losetup answers like util-linux losetup (table of cases)', async (t) => {
  const dir = workDir(t, true);
  const img = sparseImage(join(dir, 'a.img'), 4 * MiB);
  const img2 = sparseImage(join(dir, 'b.img'), 4 * MiB);
  const img3 = sparseImage(join(dir, 'c.img'), 2 * MiB);
  const odd = sparseImage(join(dir, 'odd.img'), 4 * MiB + 100);
  mkdirSync(join(dir, 'adir'));
  const mnt = join(dir, 'mnt');
  mkdirSync(mnt);
  const d = await startDaemon(t, dir);
  const common = ['--socket', d.socket, '--root', d.root];
  const inst = join(d.root, 'instances', 'default');

  run('losetup', ['-D']);
  const kernel: Side = { kind: 'kernel', run: (a) => run('losetup', a, { cwd: dir }), devs: [], nodev: '/dev/loop250', named: '/dev/loop20' };
  const ublk: Side = {
    kind: 'ubloop',
    run: (a) => run(process.execPath, [ULOSETUP, ...common, ...a], { cwd: dir, timeout: 180_000 }),
    devs: [],
    nodev: join(inst, 'loop250'),
    named: join(inst, 'loop20'),
  };
  t.teardown(() => {
    run('umount', [mnt]);
    run('losetup', ['-D']);
  });
  const hasResize = (() => {
    const [maj = 0, min = 0] = release().split('.').map(Number);
    return maj > 6 || (maj === 6 && min >= 16);
  })();

  const mountIt = (s: Side) => {
    const dev = s.devs[6] as string;
    sh('mkfs.ext4', ['-q', '-F', dev]);
    sh('mount', [dev, mnt]);
  };
  const unmountIt = async (s: Side) => {
    sh('umount', [mnt]);
    // the kernel clears a lazily detached loop device at the last close; ubloop's sweep within its grace time
    const end = Date.now() + 15_000;
    while (Date.now() < end && s.run(['-a']).stdout.includes(s.devs[6] as string)) await sleep(200);
  };

  const CASES: Case[] = [
    // empty
    { args: '-l', out: 'exact' },
    { args: '-J', out: 'exact' },
    { args: '-a', out: 'exact' },
    { args: '', out: 'exact' },
    // attach with each option
    { args: '-f --show $IMG', out: 'exact', attaches: 'show' },
    { args: '-f --show -o 1M --sizelimit 2MiB -r $IMG', out: 'exact', attaches: 'show' },
    // PARTSCAN stays ublk-specific: Linux 6.1 scans every ublk disk, so ubloop shows 1 there without -P too
    { args: '-fP --show $IMG2', out: 'exact', attaches: 'show', ublk: ['partscan', 'PARTSCAN'] },
    { args: '-f --show -b 4096 --direct-io=on $IMG', out: 'exact', attaches: 'show' },
    { args: '--show -f -o 0x100000 $IMG2', out: 'exact', attaches: 'show' },
    { args: '-rf --show --sizelimit=1MiB $IMG2', out: 'exact', attaches: 'show' },
    { args: '$NAMED $IMG', out: 'exact', attaches: 'named' },
    { args: '-f -L --show $IMG3', out: 'exact', attaches: 'show' },
    { args: '-f -L --show $IMG3', out: 'exact' }, // the same file and offset: reused
    { args: '-f -L --show -o 512 --sizelimit 1K $IMG3', out: 'exact' }, // overlapping: refused
    { args: '-f --direct-io=off --show $IMG3', out: 'exact', attaches: 'show' },
    // list in each format and column set
    { args: '-l', out: 'table', ublk: ['PARTSCAN'] },
    { args: '', out: 'table' },
    { args: '-a', out: 'lines' },
    { args: '-l -J', out: 'json' },
    { args: '-J', out: 'json' },
    { args: '--raw', out: 'raw' },
    { args: '-l -n', out: 'table' },
    { args: '-l --raw -n', out: 'raw' },
    { args: '-l -O NAME,RO,OFFSET', out: 'table' },
    { args: '-O name,back-ino,back-maj:min,maj:min', out: 'table', ublk: ['MAJ:MIN'] },
    { args: '-J -O name,back-file,partscan,log-sec', out: 'json', ublk: ['partscan'] },
    { args: '-l --output-all', out: 'table', ublk: ['MAJ:MIN', 'PARTSCAN'], newer: ['REF'] },
    { args: '-J -l --output-all', out: 'json', ublk: ['maj:min', 'partscan'], newer: ['ref'] },
    { args: '--raw -l --output-all', out: 'raw', ublk: ['MAJ:MIN', 'PARTSCAN'], newer: ['REF'] },
    { args: '-l -O NAME -n', out: 'table' },
    { args: '-O NAME,FOO', out: 'none' },
    // -j
    { args: '-j $IMG', out: 'lines' },
    { args: '-j $IMG -o 1048576', out: 'lines' },
    { args: '-l -j $IMG2', out: 'table', ublk: ['PARTSCAN'] },
    { args: '-J -j $IMG3', out: 'lines' }, // -J without -l: still the plain lines
    { args: '-J -l -j $IMG3', out: 'json' },
    // one device
    { args: '$DEV0', out: 'exact' },
    { args: '-l $DEV1', out: 'table' },
    { args: '-J -l $DEV3', out: 'json' },
    { args: '-f', out: 'exact' },
    // errors
    { args: '-f $MISSING', out: 'none' },
    { args: '-f $DIR', out: 'none' },
    { args: '-f -o abc $IMG', out: 'none' },
    { args: '-f -o -1 $IMG', out: 'none' },
    { args: '-f --sizelimit 1x $IMG', out: 'none' },
    { args: '-f --show -b 1000 $IMG', out: 'none' },
    { args: '-f --show -b 3k $IMG', out: 'none' },
    { args: '$DEV0 $IMG', out: 'none' }, // a busy (bound) device
    { args: '-d $NODEV', out: 'none' },
    { args: '-c $NODEV', out: 'none' },
    { args: '$NODEV', out: 'none' },
    { args: '-x', out: 'none' },
    { args: '--bogus', out: 'none' },
    { args: '--o', out: 'none' },
    { args: '-o', out: 'none' },
    { args: '--offset', out: 'none' },
    { args: '-d', out: 'none' },
    { args: '-a -d $DEV0', out: 'none' },
    { args: '-J --raw', out: 'none' },
    { args: '-r $DEV0', out: 'none' },
    { args: '--show $DEV0', out: 'none' },
    { args: '-o 1 $DEV0', out: 'none' },
    { args: '--direct-io=maybe -f $IMG', out: 'none' },
    { args: '-f $IMG extra', out: 'none' },
    // resize: where the kernel has ublk's UPDATE_SIZE (6.16+); else ubloop says why (checked below)
    ...(hasResize ? [{ args: '-c $DEV0', out: 'exact' } as Case] : []),
    // detach: two at once, a mounted one (deferred, shown as autoclear), all
    { args: '-d $DEV0 $DEV1', out: 'exact' },
    { args: '-d $DEV6', out: 'exact', before: mountIt },
    { args: '-l -O NAME,AUTOCLEAR -j $IMG', out: 'table', after: unmountIt },
    { args: '-j $IMG', out: 'lines' },
    { args: '-d $DEV0', out: 'none' }, // detached already: No such device or address
    { args: '-D', out: 'exact' },
    { args: '-a', out: 'exact' },
    { args: '-J', out: 'exact' },
  ];
  t.ok(CASES.length >= 40, `${CASES.length} cases`);

  const expand = (s: Side, args: string): string[] =>
    args.split(' ').filter(Boolean).map((a) =>
      a
        .replace('$IMG3', img3).replace('$IMG2', img2).replace('$IMG', img)
        .replace('$MISSING', join(dir, 'missing.img')).replace('$DIR', join(dir, 'adir'))
        .replace('$NODEV', s.nodev).replace('$NAMED', s.named)
        .replace(/\$DEV(\d+)/, (_m, n: string) => s.devs[Number(n)] ?? `(no DEV${n})`),
    );

  const results = new Map<Side, RunResult[]>();
  for (const side of [kernel, ublk]) {
    const out: RunResult[] = [];
    for (const c of CASES) {
      c.before?.(side);
      const r = side.run(expand(side, c.args));
      out.push(r);
      if (c.attaches === 'show' && r.status === 0) side.devs.push(r.stdout.trim());
      if (c.attaches === 'named' && r.status === 0) side.devs.push(side.named);
      await c.after?.(side);
    }
    results.set(side, out);
  }

  CASES.forEach((c, i) => {
    const k = (results.get(kernel) as RunResult[])[i] as RunResult;
    const u = (results.get(ublk) as RunResult[])[i] as RunResult;
    t.test(`losetup ${c.args}`, async (t) => {
      t.equal(u.status, k.status, `exit status (util-linux: ${k.status})`);
      let uErr = normalize(u.stderr, ublk);
      if (c.ubloopNote) {
        t.match(uErr, c.ubloopNote, 'ubloop says what it does not do');
        uErr = uErr.split('\n').filter((l) => !c.ubloopNote?.test(l)).join('\n');
      }
      t.equal(uErr, normalize(k.stderr, kernel), 'stderr (program and device names replaced)');
      const ko = normalize(k.stdout, kernel);
      const uo = normalize(u.stdout, ublk);
      const drop = [...(c.ublk ?? [])];
      switch (c.out) {
        case 'none':
          t.equal(uo, ko, 'no output');
          break;
        case 'exact':
          t.equal(uo, ko, 'stdout');
          break;
        case 'lines':
          t.equal(sortLines(uo), sortLines(ko), 'the same lines');
          break;
        case 'json': {
          const kr = jsonRows(ko, drop);
          const ur = jsonRows(uo, [...drop, ...(c.newer ?? [])]);
          const byName = (a: Record<string, unknown>, b: Record<string, unknown>) => String(a['name']).localeCompare(String(b['name']));
          t.same(ur.map((r) => Object.keys(r)), kr.map((r) => Object.keys(r)), 'the same keys in the same order');
          t.strictSame(ur.sort(byName), kr.sort(byName), 'the same values, typed alike');
          // The JSON text itself: the same indentation and separators, values aside.
          const shape = (s: string, skip: string[]) =>
            s.split('\n').filter((l) => !skip.some((k) => l.includes(`"${k}": `))).map((l) => l.replace(/: .*$/, ': V')).join('\n');
          t.equal(shape(uo, [...drop, ...(c.newer ?? [])]), shape(ko, drop), 'the same layout');
          break;
        }
        case 'table':
        case 'raw': {
          // Cut into cells by the header's columns first, then replace the names in each cell.
          const kc = columnsOf(k.stdout, c.out === 'raw', drop, [], (x) => normalize(x, kernel));
          const uc = columnsOf(u.stdout, c.out === 'raw', drop, c.out === 'raw' ? [] : (c.newer ?? []), (x) => normalize(x, ublk));
          if (c.out === 'raw' && c.newer) {
            // raw keeps empty cells: drop the newer column by its place in the header
            const at = u.stdout.split('\n')[0]?.split(' ').indexOf(c.newer[0] as string) ?? -1;
            const kept = u.stdout.split('\n')[0]?.split(' ').filter((h) => !drop.includes(h)) ?? [];
            const idx = kept.indexOf(c.newer[0] as string);
            t.ok(at >= 0, `ubloop has the ${c.newer[0]} column`);
            if (idx >= 0) {
              uc.header.splice(idx, 1);
              for (const r of uc.rows) r.splice(idx, 1);
            }
          }
          if (c.args.includes('-n')) {
            t.same(uc.rows.length, kc.rows.length, 'the same number of rows');
            t.same(sortLines(uo.replace(/\$DEV\d+|\$DEVX/g, 'D').replace(/ +/g, ' ')), sortLines(ko.replace(/\$DEV\d+|\$DEVX/g, 'D').replace(/ +/g, ' ')), 'the same rows');
            break;
          }
          t.same(uc.header, kc.header, 'the same columns in the same order');
          t.same(uc.align, kc.align, 'each column aligned the same way');
          const rows = (x: string[][]) => x.map((r) => r.join('|')).sort();
          t.same(rows(uc.rows), rows(kc.rows), 'the same rows');
          break;
        }
      }
      t.end();
    });
  });

  // Documented differences, checked on ubloop alone.
  t.test('ubloop refuses what the kernel silently truncates or makes empty', async (t) => {
    const oddR = ublk.run(['-f', '--show', odd]);
    t.equal(oddR.status, 1, 'an image not a whole number of 512-byte sectors (the kernel ignores the end and warns)');
    t.match(oddR.stderr, /^ubloop-losetup: .*odd\.img: failed to set up loop device: Invalid argument$/m);
    const past = ublk.run(['-f', '--show', '-o', '8M', img]);
    t.equal(past.status, 1, 'an offset past the end (the kernel makes an empty device)');
    t.match(past.stderr, /failed to set up loop device: Invalid argument/);
  });
  t.test('--remove (util-linux 2.39+, not in 2.38.1): removes an unbound device node', async (t) => {
    const r = ublk.run(['--show', '-f', img3]);
    t.equal(r.status, 0);
    const dev = r.stdout.trim();
    t.equal(ublk.run(['--remove', dev]).status, 1, 'a bound device is not removed');
    t.equal(ublk.run(['-d', dev]).status, 0);
    const rm = ublk.run(['--remove', dev]);
    t.equal(rm.status, 0, rm.stderr);
    t.notOk(existsSync(dev), 'its node is gone');
  });
  if (!hasResize) {
    t.test('-c without ublk UPDATE_SIZE (Linux < 6.16) fails and says why', async (t) => {
      const r = ublk.run(['--show', '-f', img3]);
      const dev = r.stdout.trim();
      const c = ublk.run(['-c', dev]);
      t.equal(c.status, 1);
      t.match(c.stderr, /set capacity failed: /);
      t.match(c.stderr, /UPDATE_SIZE|6\.16|resize/i, 'names the missing kernel feature');
      ublk.run(['-d', dev]);
    });
  }
});

t.test('a script written for losetup runs unchanged with losetup shimmed to ubloop losetup', async (t) => {
  const dir = workDir(t);
  const img = sparseImage(join(dir, 'disk.img'), 16 * MiB);
  const d = await startDaemon(t, dir);
  const bin = join(dir, 'bin');
  mkdirSync(bin);
  // losetup on PATH runs `ubloop losetup` (the main CLI's command, not the ubloop-losetup bin the table uses)
  writeFileSync(join(bin, 'losetup'), `#!/bin/sh\nexec ${process.execPath} ${join(ROOT, 'bin', 'ubloop.js')} losetup --socket ${d.socket} --root ${d.root} "$@"\n`);
  chmodSync(join(bin, 'losetup'), 0o755);
  const script = [
    'set -e',
    'dev=$(losetup -f --show "$1")',
    'test -b "$dev"',
    'mkfs.ext4 -q "$dev"',
    'mkdir -p "$2"',
    'mount "$dev" "$2"',
    'echo hello > "$2/greeting"',
    'umount "$2"',
    'losetup -j "$1" | grep -q "^$dev: "',
    'losetup -l -n -O NAME,BACK-FILE | grep -q "^$dev "',
    'losetup -d "$dev"',
    'echo "left: $(losetup -j "$1" | wc -l)"',
  ].join('\n');
  const r = run('bash', ['-c', script, 'script', img, join(dir, 'mnt')], { env: { ...process.env, PATH: `${bin}:${process.env['PATH'] ?? ''}` }, timeout: 300_000 });
  t.equal(r.status, 0, r.stderr);
  t.match(r.stdout, /^left: 0$/m, 'the device is gone after losetup -d');
  // The file system landed in the image: read it back through a kernel loop mount.
  const check = join(dir, 'check');
  mkdirSync(check);
  sh('mount', ['-o', 'loop,ro', img, check]);
  try {
    t.equal(readFileSync(join(check, 'greeting'), 'utf8'), 'hello\n');
  } finally {
    sh('umount', [check]);
  }
});

t.test('with no daemon running, losetup starts one in the background and says so once', async (t) => {
  const dir = workDir(t);
  const img = sparseImage(join(dir, 'disk.img'), 4 * MiB);
  const socket = join(dir, 'admin.sock');
  const paths = ['--socket', socket, '--root', join(dir, 'run'), '--state', join(dir, 'state.json')];
  const first = run(process.execPath, [ULOSETUP, ...paths, '-f', '--show', img], { timeout: 180_000 });
  let pid = 0;
  t.teardown(async () => {
    if (pid > 0) {
      try {
        process.kill(pid, 'SIGTERM');
      } catch {
        // gone
      }
      const end = Date.now() + 30_000;
      while (Date.now() < end && existsSync(`/proc/${pid}`)) await sleep(100);
    }
  });
  t.equal(first.status, 0, first.stderr);
  t.match(first.stderr, /no ubloop daemon was running: started one \(pid \d+/);
  t.equal(first.stderr.split('\n').filter(Boolean).length, 1, 'one line');
  t.match(first.stdout, /\/run\/instances\/default\/loop0\n$/, 'the default instance was created and holds the device');
  const c = DaemonClient.connect(socket);
  try {
    pid = Number((await c.request({ op: 'ping' }))['pid']);
  } finally {
    c.close();
  }
  const second = run(process.execPath, [ULOSETUP, ...paths, '-l', '-n', '-O', 'NAME'], { timeout: 180_000 });
  t.equal(second.stderr, '', 'the running daemon is used: nothing said');
  t.equal(second.stdout, first.stdout);
  t.equal(run(process.execPath, [ULOSETUP, ...paths, '-D'], { timeout: 180_000 }).status, 0);
});
