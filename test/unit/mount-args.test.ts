import t from 'tap';
import { MountUsageError, mountedOn, parseHelperArgs, parseMountArgs, splitOptions } from '../../lib/cli/commands/mount.js';

t.test('ubloop mount: loop options go to the device, the rest to mount(8)', async (t) => {
  const m = parseMountArgs(['-o', 'offset=1M,sizelimit=0x100000,noatime,loop=/dev/loop7', '-t', 'ext4', 'disk.img', '/mnt']);
  t.match(m, { image: 'disk.img', dir: '/mnt', fsType: 'ext4', offset: 1 << 20, sizeLimit: 1 << 20, readOnly: false, mountOptions: ['noatime'], fake: false });
  const ro = parseMountArgs(['-r', '-o', 'ubloop.offset=4096,data=ordered', 'a.img', 'd']);
  t.match(ro, { offset: 4096, readOnly: true, mountOptions: ['ro', 'data=ordered'] }, 'ro is both the device\'s and the mount\'s');
  t.equal(parseMountArgs(['a', 'b']).fsType, null, 'no -t: mount detects the type');
  t.throws(() => parseMountArgs(['-o', 'offset=x', 'a', 'b']), /invalid offset value: "x"/, 'a bad size is refused by name');
  t.ok((() => { try { parseMountArgs(['a']); } catch (e) { return e instanceof MountUsageError; } return false; })(), 'a usage error');
  t.throws(() => parseMountArgs(['a']), /an image file and a directory/);
  t.throws(() => parseMountArgs(['--bogus', 'a', 'b']), /unknown option --bogus/);
});

t.test('mount.ubloop takes mount(8)\'s helper convention', async (t) => {
  // what mount(8) 2.38 runs for `mount -t ubloop.ext4 -o ro,ubloop.offset=1M img /mnt` (options after the paths)
  const m = parseHelperArgs(['/img', '/mnt', '-sv', '-o', 'ro,ubloop.offset=1M,context="a,b"', '-t', 'ubloop.ext4', '-N', '/proc/1/fd/5']);
  t.match(m, { image: '/img', dir: '/mnt', fsType: 'ext4', offset: 1 << 20, readOnly: true, mountOptions: ['ro', 'context="a,b"'] });
  t.same(m.flags, ['-s', '-v', '-N', '/proc/1/fd/5'], 'sloppy, verbose and the namespace are passed on to mount(8)');
  t.equal(parseHelperArgs(['/img', '/mnt', '-t', 'ubloop']).fsType, null, 'plain ubloop: detect the type');
  t.equal(parseHelperArgs(['/img', '/mnt', '-f']).fake, true, '-f: fake, nothing attached');
});

t.test('option strings split at commas outside quotes; mountinfo finds the topmost mount', async (t) => {
  t.same(splitOptions('a,b="x,y",,c'), ['a', 'b="x,y"', 'c']);
  const info = [
    '22 1 0:21 / /mnt rw - tmpfs tmpfs rw',
    '40 22 259:0 / /mnt rw,relatime - ext4 /dev/ublkb0 rw',
    '41 22 259:1 / /my\\040dir rw - ext4 /dev/ublkb1 rw',
  ].join('\n');
  t.equal(mountedOn(info, '/mnt'), '259:0');
  t.equal(mountedOn(info, '/my dir'), '259:1', 'octal escapes');
  t.equal(mountedOn(info, '/nowhere'), null);
});
