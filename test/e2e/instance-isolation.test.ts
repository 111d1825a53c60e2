// Isolation between two instances owned by uids 1001 and 1002: each uid, through its own
// instance only, can bind and read/write its devices, and can neither list, bind,
// unbind nor open the other's. Peer credentials decide even where file modes would not.
import t from 'tap';
import { chmodSync, chownSync } from 'node:fs';
import { join } from 'node:path';
import { MiB, sparseImage, workDir } from '../helpers/e2e.js';
import { jsonOut, shAs, startDaemon } from '../helpers/daemon.js';

t.test('uid 1001 and uid 1002 each reach only their own instance', async (t) => {
  const dir = workDir(t);
  chmodSync(dir, 0o755);
  const d = await startDaemon(t, dir);
  const users = [
    { uid: 1001, name: 'a', img: join(dir, 'a.img') },
    { uid: 1002, name: 'b', img: join(dir, 'b.img') },
  ];
  for (const u of users) {
    await d.admin().request({ op: 'instance.create', name: u.name, uid: u.uid, gid: u.uid, mode: 0o660 });
    sparseImage(u.img, 4 * MiB);
    chownSync(u.img, u.uid, u.uid);
    chmodSync(u.img, 0o600);
  }
  const as = (uid: number, args: string[]) => d.cliAs(uid, uid, args);
  const paths: Record<string, string> = {};
  for (const u of users) {
    const r = as(u.uid, ['attach', '--instance', u.name, u.img]);
    t.equal(r.status, 0, `uid ${u.uid} attaches its own image to its instance: ${r.stderr}`);
    paths[u.name] = r.stdout.trim();
    t.equal(paths[u.name], join(d.root, 'instances', u.name, 'loop0'));
    const w = shAs(u.uid, u.uid, `printf 'hello from ${u.uid}' | dd of=${paths[u.name]} bs=512 conv=sync,fsync status=none && dd if=${paths[u.name]} bs=512 count=1 status=none iflag=direct`);
    t.equal(w.status, 0, `uid ${u.uid} writes and reads its device: ${w.stderr}`);
    t.match(w.stdout, new RegExp(`^hello from ${u.uid}`));
    const l = as(u.uid, ['list', '--json']);
    const seen = jsonOut<{ instance: string }[]>(l);
    t.same([...new Set(seen.map((e) => e.instance))], [u.name], `uid ${u.uid}'s list shows only its own instance`);
  }
  const [a, b] = users as [typeof users[0], typeof users[0]];
  for (const [me, other] of [[a, b], [b, a]] as const) {
    const tag = `uid ${me.uid} vs ${other.name}`;
    const list = as(me.uid, ['list', '--instance', other.name]);
    t.not(list.status, 0, `${tag}: list refused`);
    t.match(list.stderr, /permission denied|may not use instance/, `${tag}: EACCES`);
    const bind = as(me.uid, ['attach', '--instance', other.name, me.img]);
    t.not(bind.status, 0, `${tag}: bind refused`);
    t.match(bind.stderr, /permission denied|may not use instance/);
    const unbind = as(me.uid, ['detach', paths[other.name] as string]);
    t.not(unbind.status, 0, `${tag}: unbind refused`);
    const open = shAs(me.uid, me.uid, `dd if=${paths[other.name]} bs=512 count=1 status=none`);
    t.not(open.status, 0, `${tag}: opening the other's device node fails`);
    t.match(open.stderr, /Permission denied/);
    const img = shAs(me.uid, me.uid, `dd if=${other.img} bs=512 count=1 status=none`);
    t.not(img.status, 0, `${tag}: and the other's image file too`);
    const admin = as(me.uid, ['instance', 'create', 'mine']);
    t.not(admin.status, 0, `${tag}: cannot create instances`);
  }
  // A too-permissive socket mode does not open the instance to others: SO_PEERCRED decides.
  chmodSync(join(d.root, 'instances', 'b', 'control.sock'), 0o666);
  const sneaky = as(1001, ['list', '--instance', 'b']);
  t.not(sneaky.status, 0);
  t.match(sneaky.stderr, /uid 1001 may not use instance b/, 'the daemon refuses uid 1001 on b\'s socket by its credentials');
  const bound = jsonOut<{ instance: string; state: string }[]>(d.cli(['list', '--json']));
  t.same(bound.map((e) => `${e.instance}:${e.state}`), ['a:bound', 'b:bound'], 'both devices are still bound');
  const unreadable = as(1001, ['attach', '--instance', 'a', b.img]);
  t.not(unreadable.status, 0, 'uid 1001 cannot attach an image it cannot open itself');
  t.match(unreadable.stderr, /EACCES|permission denied/i);
});
