// Where things live by default.
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const DEFAULT_ROOT = '/run/ubloop';
export const DEFAULT_SOCKET = '/run/ubloop/control.sock';
export const DEFAULT_STATE = '/var/lib/ubloop/state.json';

export function instanceDir(root: string, name: string): string {
  return join(root, 'instances', name);
}

export function instanceSocket(root: string, name: string): string {
  return join(instanceDir(root, name), 'control.sock');
}

/** The control socket of the `ubloop serve` process serving /dev/ublkbN (resize). */
export function serveSocket(root: string, id: number): string {
  return join(root, 'serve', `ublkb${id}.sock`);
}

/**
 * Where a `ubloop serve` of this user keeps its control socket: root's under
 * DEFAULT_ROOT, an ordinary user's (unprivileged devices) in their runtime directory.
 */
export function serveRoot(uid = process.getuid?.() ?? 0, env = process.env): string {
  if (uid === 0) return DEFAULT_ROOT;
  const runtime = env['XDG_RUNTIME_DIR'] ?? `/run/user/${uid}`;
  return existsSync(runtime) ? join(runtime, 'ubloop') : join(tmpdir(), `ubloop-${uid}`);
}
