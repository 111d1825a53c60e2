// A container's view: a new mount namespace where /run is empty except the instance
// directory bind-mounted in; GET_FREE through its loop-control, attach through its
// control.sock, then mkfs and mount through loopN.
import t from 'tap';
import { chmodSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CLI, MiB, run, sparseImage, workDir } from '../helpers/e2e.js';
import { jsonOut, startDaemon } from '../helpers/daemon.js';

t.test('only the instance directory is visible, and mkfs + mount through loopN work', async (t) => {
  const dir = workDir(t);
  chmodSync(dir, 0o755);
  const img = sparseImage(join(dir, 'ctr.img'), 64 * MiB);
  const d = await startDaemon(t, dir);
  t.equal(d.cli(['instance', 'create', 'ctr', '--max', '4']).status, 0);
  await d.admin().request({ op: 'instance.create', name: 'other' });
  const inst = join(d.root, 'instances', 'ctr');
  const script = join(dir, 'inside.sh');
  writeFileSync(
    script,
    [
      'set -e',
      // show only this instance, then hide everything else the daemon serves
      'mount -t tmpfs tmpfs /run',
      'mkdir -p /run/ctr/instances/ctr /run/ctr/mnt',
      `mount --bind ${inst} /run/ctr/instances/ctr`,
      `mount -t tmpfs tmpfs ${d.root}`,
      'echo "visible: $(ls /run/ctr/instances)"',
      `test ! -e ${join(d.root, 'instances', 'other')} && echo "other: hidden"`,
      `DEV=$(${process.execPath} ${CLI} attach --root /run/ctr --instance ctr ${img})`,
      'echo "dev: $DEV"',
      'mkfs.ext4 -q -F "$DEV"',
      'mount "$DEV" /run/ctr/mnt',
      'echo container-data > /run/ctr/mnt/file',
      'sync',
      'cat /run/ctr/mnt/file',
      'umount /run/ctr/mnt',
      `${process.execPath} ${CLI} detach --root /run/ctr "$DEV"`,
      'echo done',
    ].join('\n'),
  );
  const r = run('unshare', ['-m', '--propagation', 'private', 'sh', script], { timeout: 240_000 });
  t.equal(r.status, 0, `the container script ran: ${r.stderr.trim()}`);
  t.match(r.stdout, /^visible: ctr$/m, 'only the instance directory is in its view');
  t.match(r.stdout, /^other: hidden$/m, 'the other instance is not');
  t.match(r.stdout, /^dev: \/run\/ctr\/instances\/ctr\/loop0$/m, 'attach printed the node as the container sees it');
  t.match(r.stdout, /^container-data$/m, 'mkfs, mount, write, read through loopN');
  t.match(r.stdout, /^done$/m);
  const after = jsonOut<{ instance: string; state: string }[]>(d.cli(['list', '--all', '--json']));
  t.same(after.map((e) => `${e.instance}:${e.state}`), ['ctr:unbound'], 'detached from inside; the index stays');
  const check = run('dumpe2fs', ['-h', img]);
  t.match(check.stdout, /Filesystem magic number:\s+0xEF53/, 'the image holds the ext4 made in the container');
});
