// --autoclear: the device goes once the client that asked for it has gone and nothing
// holds it open or mounted; a plain unbind of a busy device waits for its release.
import t from 'tap';
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync } from 'node:fs';
import { join } from 'node:path';
import { DaemonClient } from '../../lib/daemon/client.js';
import { MiB, mount, sh, sleep, sparseImage, workDir } from '../helpers/e2e.js';
import { startDaemon } from '../helpers/daemon.js';

const GRACE_MS = 3000;

/** A process holding dev open; resolves once it has opened it. */
async function holder(dev: string, seconds: number): Promise<{ proc: ChildProcess; exited: Promise<void> }> {
  const proc = spawn('sh', ['-c', `exec 3<${dev}; echo opened; sleep ${seconds}`], { stdio: ['ignore', 'pipe', 'pipe'] });
  const exited = new Promise<void>((r) => proc.on('exit', () => r()));
  await new Promise<void>((resolve, reject) => {
    proc.stdout?.on('data', () => resolve());
    proc.on('exit', (code) => reject(new Error(`the holder of ${dev} exited (${code}) before opening it`)));
  });
  return { proc, exited };
}

t.test('autoclear waits for the client to go and the device to be released', async (t) => {
  const dir = workDir(t);
  const img = sparseImage(join(dir, 'ac.img'), 32 * MiB);
  const d = await startDaemon(t, dir, ['--autoclear-grace', String(GRACE_MS)]);
  await d.admin().request({ op: 'instance.create', name: 'ac' });
  const sock = join(d.root, 'instances', 'ac', 'control.sock');
  const watcher = d.instance('ac');
  const state = async (index: number): Promise<string> => {
    try {
      return ((await watcher.request({ op: 'info', index }))['device'] as { state: string }).state;
    } catch (err) {
      return (err as { code: string }).code;
    }
  };
  const until = async (want: string, ms: number): Promise<boolean> => {
    const end = Date.now() + ms;
    while (Date.now() < end) {
      if ((await state(0)) === want) return true;
      await sleep(200);
    }
    return (await state(0)) === want;
  };
  const fd = openSync(img, 'r+');
  t.teardown(() => closeSync(fd));
  const attach = async (autoclear: boolean) => {
    const c = DaemonClient.connect(sock);
    const r = await c.request({ op: 'bind', autoclear }, [fd]);
    return { client: c, path: (r['device'] as { path: string }).path };
  };

  // held open by another process after the client has gone
  const a = await attach(true);
  const h = await holder(a.path, 6);
  a.client.close();
  await sleep(GRACE_MS + 1500);
  t.equal(await state(0), 'bound', 'still bound while a process holds it open, past the grace time');
  await h.exited;
  t.ok(await until('unbound', GRACE_MS + 5000), 'unbound once released (after the grace time)');
  t.notOk(existsSync(a.path), 'its node is gone');

  // mounted
  const b = await attach(true);
  sh('mkfs.ext4', ['-q', '-F', b.path]);
  const mnt = join(dir, 'mnt');
  mkdirSync(mnt);
  mount(t, b.path, mnt);
  b.client.close();
  await sleep(GRACE_MS + 1500);
  t.equal(await state(0), 'bound', 'kept while mounted');
  sh('umount', [mnt]);
  t.ok(await until('unbound', GRACE_MS + 5000), 'unbound after umount');

  // a plain unbind of a busy device is deferred until release
  const c = await attach(false);
  const h2 = await holder(c.path, 3);
  const r = await c.client.request({ op: 'unbind', index: 0 });
  t.match(r, { ok: true, deferred: true }, 'unbind of a busy device is deferred');
  t.equal(await state(0), 'bound');
  await h2.exited;
  t.ok(await until('unbound', 5000), 'and done once released');
  c.client.close();

  // without autoclear nothing goes away by itself
  const e = await attach(false);
  e.client.close();
  await sleep(GRACE_MS + 1500);
  t.equal(await state(0), 'bound', 'a normal binding stays after its client left');
});
