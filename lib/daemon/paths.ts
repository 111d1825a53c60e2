// Where things live by default.
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
