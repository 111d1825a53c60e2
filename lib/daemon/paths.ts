// Where things live: the one place that names the default directories, sockets and
// files, and how an instance's and a serve process's paths are made from them. The
// CLI, the daemon, its clients and `ubloop serve` all take their paths from here.
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** Runtime directory of the daemon (and of root's `ubloop serve` sockets). */
export const DEFAULT_ROOT = '/run/ubloop';
/** The daemon's admin socket (root only). */
export const DEFAULT_SOCKET = join(DEFAULT_ROOT, 'control.sock');
/** The daemon's state file (instances, limits, bindings). */
export const DEFAULT_STATE = '/var/lib/ubloop/state.json';

/** Names inside an instance's directory. */
export const INSTANCE_SOCKET_NAME = 'control.sock';
export const LOOP_CONTROL_NAME = 'loop-control';

/** The directory holding every instances/NAME/. */
export function instancesDir(root: string): string {
  return join(root, 'instances');
}

export function instanceDir(root: string, name: string): string {
  return join(instancesDir(root), name);
}

export function instanceSocket(root: string, name: string): string {
  return join(instanceDir(root, name), INSTANCE_SOCKET_NAME);
}

/** The loopN node of an instance, given its directory. */
export function loopNode(dir: string, index: number): string {
  return join(dir, `loop${index}`);
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
