// Which device a command names: an instance device (…/instances/NAME/loopN, or INDEX
// with --instance), or /dev/ublkbN, found among the daemon's devices or, for resize,
// served by a `ubloop serve` process.
import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { UbloopError, invalid } from '../errors.js';
import { DaemonClient } from '../daemon/client.js';
import { serveRoot, serveSocket } from '../daemon/paths.js';
import type { DaemonClientArgs } from './daemon-options.js';

export type DeviceRef = { kind: 'instance'; instance: string; index: number } | { kind: 'serve'; id: number; socket: string };

export async function resolveDevice(device: string, instance: string | undefined, args: DaemonClientArgs, allowServe: boolean): Promise<DeviceRef> {
  if (instance !== undefined) {
    if (!/^\d+$/.test(device)) throw invalid(`with --instance, give the index as a number, got ${JSON.stringify(device)}`);
    return { kind: 'instance', instance, index: Number(device) };
  }
  const path = resolve(device);
  const inDir = /\/instances\/([^/]+)\/loop(\d+)$/.exec(path);
  if (inDir?.[1] && inDir[2]) return { kind: 'instance', instance: inDir[1], index: Number(inDir[2]) };
  const ublk = /^\/dev\/ublkb(\d+)$/.exec(path);
  if (!ublk?.[1]) throw invalid(`${device} is not an instance device (…/instances/NAME/loopN) nor /dev/ublkbN`);
  const id = Number(ublk[1]);
  // root's serve under --root; a user's own unprivileged serve in their runtime directory
  for (const socket of [serveSocket(args.root, id), serveSocket(serveRoot(), id)]) {
    if (allowServe && existsSync(socket)) return { kind: 'serve', id, socket };
  }
  const admin = DaemonClient.connect(args.socket);
  try {
    let reply: Record<string, unknown>;
    try {
      reply = await admin.request({ op: 'list' });
    } catch (err) {
      const code = (err as { code?: string }).code;
      if (code !== 'EACCES' && code !== 'EPERM' && code !== 'ENOENT' && code !== 'ECONNREFUSED') throw err;
      // Neither a serve of this user's nor a daemon this user may ask: say who can.
      const why = code === 'EACCES' || code === 'EPERM' ? 'is not open to you' : 'is not there (no daemon running)';
      throw new UbloopError(
        code,
        `${path} is not served by a ubloop serve of yours${allowServe ? ` (no socket at ${serveSocket(serveRoot(), id)})` : ''}, and the daemon's socket ${args.socket} ${why}: run this as the user who serves the device, or as root`,
      );
    }
    const found = (reply['devices'] as { instance: string; index: number; ublkId: number | null }[]).find((d) => d.ublkId === id);
    if (!found) throw new UbloopError('ENODEV', `${path} is not a device of any instance${allowServe ? ' nor served by ubloop serve' : ''}`);
    return { kind: 'instance', instance: found.instance, index: found.index };
  } finally {
    admin.close();
  }
}
