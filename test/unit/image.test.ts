// The image module: createDevice, the daemon's bind and the state restore open and check
// images in one place, so a descriptor or file refused by one is refused by the others
// with the same words, before any device is made.
import t from 'tap';
import { closeSync, constants, mkdirSync, mkdtempSync, openSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { closeImage, imagePath, inspectImage, mayOpen, openImage } from '../../lib/image.js';
import { createDevice } from '../../lib/device.js';
import { openBacking } from '../../lib/state/open-backing.js';

const dir = mkdtempSync(join(tmpdir(), 'ubloop-image-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
const image = join(dir, 'img');
writeFileSync(image, Buffer.alloc(8192));
const rw = { readOnly: false, directIo: false };
const ro = { readOnly: true, directIo: false };

for (const [name, flag] of [['O_APPEND', constants.O_APPEND], ['O_NONBLOCK', constants.O_NONBLOCK]] as const) {
  t.test(`a descriptor opened with ${name} is refused, naming the flag`, async (t) => {
    const fd = openSync(image, constants.O_RDWR | flag);
    t.teardown(() => closeSync(fd));
    const refusal = { code: 'EINVAL', message: new RegExp(`open with ${name}.*without ${name}`) };
    t.throws(() => inspectImage(fd, rw), refusal, 'the daemon bind path');
    await t.rejects(createDevice({ fd }), refusal, 'createDevice({fd}), before the kernel is touched');
  });
}

t.test('a plain O_RDWR descriptor is accepted, with its size, file identity and path', async (t) => {
  const fd = openSync(image, constants.O_RDWR);
  t.teardown(() => closeSync(fd));
  const img = inspectImage(fd, rw);
  t.match(img, { fd, size: 8192, owned: false });
  t.equal(img.flags & 3, constants.O_RDWR, 'its flags (O_ACCMODE is 3)');
  t.equal(imagePath(img), image, 'the path the daemon stores');
  closeImage(img);
  t.doesNotThrow(() => inspectImage(fd, rw), 'a passed descriptor stays open after closeImage');
});

t.test('a descriptor must allow what the device does', async (t) => {
  const rdonly = openSync(image, constants.O_RDONLY);
  const wronly = openSync(image, constants.O_WRONLY);
  t.teardown(() => {
    closeSync(rdonly);
    closeSync(wronly);
  });
  t.throws(() => inspectImage(rdonly, rw), { code: 'EBADF', message: /open read-only; make the device read-only/ });
  t.ok(inspectImage(rdonly, ro), 'read-only for a read-only device');
  t.throws(() => inspectImage(wronly, ro), { code: 'EBADF', message: /write-only; it must be readable/ });
  t.throws(() => inspectImage(rdonly, { readOnly: true, directIo: true }), { code: 'EINVAL', message: /direct I\/O needs .* O_DIRECT/ });
  await t.rejects(createDevice({ fd: rdonly }), { code: 'EBADF' }, 'createDevice({fd}) checks the same');
});

t.test('only regular files are images: each refused by what it is', async (t) => {
  const folder = join(dir, 'folder');
  mkdirSync(folder);
  const dirFd = openSync(folder, constants.O_RDONLY);
  const nullFd = openSync('/dev/null', constants.O_RDWR);
  t.teardown(() => {
    closeSync(dirFd);
    closeSync(nullFd);
  });
  t.throws(() => inspectImage(dirFd, ro), { code: 'EISDIR', message: 'the descriptor passed as the image is a directory, not an image file' });
  t.throws(() => inspectImage(nullFd, rw), { code: 'EINVAL', message: /is a character device, not an image file/ });
  t.throws(() => openImage(folder, ro), { code: 'EISDIR', message: `${folder} is a directory, not an image file` });
  t.throws(() => openImage(folder, rw), { code: 'EISDIR', message: `${folder} is a directory, not an image file` });
  t.throws(() => openImage('/dev/null', rw), { code: 'EINVAL', message: '/dev/null is a character device, not an image file' });
  t.throws(() => openImage(join(dir, 'missing'), rw), { code: 'ENOENT', message: /image file .*missing does not exist/ });
  await t.rejects(createDevice({ file: folder }), { code: 'EISDIR' }, 'createDevice by path says the same');
});

t.test('openImage opens with the access asked for and closes what it opened', async (t) => {
  const img = openImage(image, ro);
  t.match(img, { path: image, name: image, size: 8192, owned: true });
  t.equal(img.flags & 3, constants.O_RDONLY);
  closeImage(img);
  t.throws(() => inspectImage(img.fd, ro), 'closed');
  const link = join(dir, 'link');
  symlinkSync(image, link);
  t.throws(() => openImage(link, rw, { noFollow: true }), { code: 'ELOOP', message: /symbolic link/ });
});

t.test('whose rights: by the mode bits, root always', async (t) => {
  const img = openImage(image, ro);
  t.teardown(() => closeImage(img));
  const other = { ...img, uid: 1000, gid: 1000, mode: constants.S_IFREG | 0o640 };
  t.ok(mayOpen(other, { uid: 0, gid: 0 }, true), 'root');
  t.ok(mayOpen(other, { uid: 1000, gid: 5 }, true), 'the owner may write');
  t.ok(mayOpen(other, { uid: 5, gid: 1000 }, false), 'the group may read');
  t.notOk(mayOpen(other, { uid: 5, gid: 1000 }, true), 'but not write');
  t.notOk(mayOpen(other, { uid: 5, gid: 5 }, false), 'others may not read');
});

t.test('restore reopens through the image module, by path, for whoever bound it', async (t) => {
  const options = { offset: 0, sizeLimit: 0, readOnly: false, directIo: false, blockSize: 512 as const, queues: 1, depth: 128, autoclear: false };
  const opened = openBacking({ index: 0, backing: { path: image, dev: 0, ino: 0 }, options }, { uid: 0, gid: 0 });
  t.teardown(() => closeSync(opened.fd));
  const again = inspectImage(opened.fd, rw);
  t.same({ dev: opened.dev, ino: opened.ino }, { dev: again.dev, ino: again.ino }, 'the file identity restore compares');
  t.throws(() => openBacking({ index: 0, backing: { path: join(dir, 'gone'), dev: 0, ino: 0 }, options }, { uid: 0, gid: 0 }), {
    code: 'ENOENT',
    message: /cannot reopen .*gone: image file .*gone does not exist/,
  });
});
