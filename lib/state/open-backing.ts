// Reopens a saved binding's backing file at restore: by its path, with the flags the
// binding needs, and only if whoever first bound it could still open it themselves.
import { UbloopError } from '../errors.js';
import { closeImage, mayOpen, openImage, type Image } from '../image.js';
import type { SavedBinding } from './state-data.js';
import type { OpenedBacking } from './restore.js';

/** principal: whose rights the image was first opened with; they must still suffice. */
export function openBacking(b: SavedBinding, principal: { uid: number; gid: number }): OpenedBacking {
  const path = b.backing.path;
  let image: Image;
  try {
    image = openImage(path, b.options, { noFollow: true });
  } catch (err) {
    const code = (err as { code?: string }).code === 'EISDIR' || (err as { code?: string }).code === 'EINVAL' ? 'EINVAL' : 'ENOENT';
    throw new UbloopError(code, `cannot reopen ${path}: ${(err as Error).message}`);
  }
  const write = !b.options.readOnly;
  if (!mayOpen(image, principal, write)) {
    closeImage(image);
    throw new UbloopError('EACCES', `uid ${principal.uid} may no longer ${write ? 'write' : 'read'} ${path}`);
  }
  return { fd: image.fd, dev: image.dev, ino: image.ino, image };
}
