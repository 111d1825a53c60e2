// The root side of unprivileged devices (see lib/unprivileged.ts): udev runs
// `ubloop udev NAME` as each ublk node appears, and this gives the node of a device
// added with UBLK_F_UNPRIVILEGED_DEV to the user who added it, readable and writable
// by that user alone. The kernel itself lets only that uid and gid open the disk, and
// checks every control command against the char node's permissions, so the owner can
// serve, stop and delete their device, and nobody else can. Root's own devices are
// left as they are.
import { chmodSync, chownSync, statSync } from 'node:fs';
import { UbloopError, invalid } from './errors.js';
import { hasFlag } from './kernel.js';
import { native } from './native.js';

export interface Handover {
  node: string;
  id: number;
  /** The device's owner, or null when it is root's own device (left alone). */
  owner: { uid: number; gid: number } | null;
}

/** "ublkc3", "ublkb3", "ublkb3p1" or a /dev path of one: the node and its device id. */
export function parseNodeName(name: string, devDir = '/dev'): { node: string; id: number } {
  const base = name.startsWith('/') ? name.slice(name.lastIndexOf('/') + 1) : name;
  const m = /^ublk[bc](\d+)(p\d+)?$/.exec(base);
  if (!m) throw invalid(`"${name}" is not a ublk node (ublkcN, ublkbN or ublkbNpM)`);
  return { node: name.startsWith('/') ? name : `${devDir}/${base}`, id: Number(m[1]) };
}

/** Hands `name` to its device's owner if the device is unprivileged. Needs root. */
export async function handOverNode(name: string, devDir = '/dev'): Promise<Handover> {
  const { node, id } = parseNodeName(name, devDir);
  const info = await native().getDeviceInfo(id);
  if (!hasFlag(info.flags, 'UBLK_F_UNPRIVILEGED_DEV')) return { node, id, owner: null };
  const st = statSync(node);
  if (!st.isCharacterDevice() && !st.isBlockDevice()) throw new UbloopError('EINVAL', `${node} is not a device node`);
  chownSync(node, info.ownerUid, info.ownerGid);
  chmodSync(node, 0o600);
  return { node, id, owner: { uid: info.ownerUid, gid: info.ownerGid } };
}
