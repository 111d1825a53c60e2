// ubloop list: devices of the instances you can reach (root: all of them), then the
// other ublk devices the kernel has (`ubloop serve`, other servers) that you may query:
// root sees all of them, a user their own unprivileged devices.
import type { ArgumentsCamelCase, Argv, CommandModule } from 'yargs';
import type { DeviceEntry, IoErrorCounts } from '../../protocol/results.js';
import { withDaemonClientOptions, type DaemonClientArgs } from '../daemon-options.js';

interface ListArgs extends DaemonClientArgs {
  instance: string | undefined;
  all: boolean;
  json: boolean;
}

function withListOptions(y: Argv): Argv<ListArgs> {
  return withDaemonClientOptions(
    y
      .option('instance', { alias: 'i', type: 'string', describe: 'only this instance' })
      .option('all', { alias: 'a', type: 'boolean', default: false, describe: 'also list unbound indices' })
      .option('json', { type: 'boolean', default: false, describe: 'print JSON' }),
  ) as unknown as Argv<ListArgs>;
}

/** A ublk device no instance holds, as the kernel reports it. */
export interface KernelDeviceEntry {
  instance: null;
  index: null;
  state: 'live' | 'dead' | 'quiesced' | 'fail-io';
  path: string;
  ublkPath: string;
  ublkId: number;
  size: number | null;
  serverPid: number;
  owner: { uid: number; gid: number };
  unprivileged: boolean;
  flags: string[];
  /** A `ubloop serve` device's failed requests, from its control socket; null for other servers (or one you cannot reach). */
  ioErrors: IoErrorCounts | null;
}

type Entry = (DeviceEntry & { owner?: undefined }) | KernelDeviceEntry;

/** The failed requests of a `ubloop serve` device, through its control socket; null if none answers. */
async function servedErrors(root: string, id: number): Promise<IoErrorCounts | null> {
  const { existsSync } = await import('node:fs');
  const { DaemonClient } = await import('../../daemon/client.js');
  const { serveRoot, serveSocket } = await import('../../daemon/paths.js');
  for (const socket of [serveSocket(root, id), serveSocket(serveRoot(), id)]) {
    if (!existsSync(socket)) continue;
    try {
      const c = DaemonClient.connect(socket);
      try {
        return ((await c.request({ op: 'info', index: 0 }))['ioErrors'] as IoErrorCounts | undefined) ?? null;
      } finally {
        c.close();
      }
    } catch {
      // not yours, or the server is going away
    }
  }
  return null;
}

async function kernelDevices(skip: Set<number>, root: string): Promise<KernelDeviceEntry[]> {
  const { readFileSync } = await import('node:fs');
  const { ublkDeviceIds } = await import('../../stale.js');
  const { native } = await import('../../native.js');
  const { flagNames, hasFlag } = await import('../../kernel.js');
  const out: KernelDeviceEntry[] = [];
  for (const id of ublkDeviceIds()) {
    if (skip.has(id)) continue;
    let info;
    try {
      info = await native().getDeviceInfo(id);
    } catch {
      continue; // gone meanwhile, or not yours to see
    }
    let size: number | null = null;
    try {
      size = Number(readFileSync(`/sys/block/ublkb${id}/size`, 'utf8').trim()) * 512;
    } catch {
      // no disk (not started)
    }
    out.push({
      instance: null,
      index: null,
      state: info.state,
      path: `/dev/ublkb${id}`,
      ublkPath: `/dev/ublkb${id}`,
      ublkId: id,
      size,
      serverPid: info.serverPid,
      owner: { uid: info.ownerUid, gid: info.ownerGid },
      unprivileged: hasFlag(info.flags, 'UBLK_F_UNPRIVILEGED_DEV'),
      flags: flagNames(info.flags),
      ioErrors: await servedErrors(root, id),
    });
  }
  return out;
}

async function collect(args: ListArgs): Promise<Entry[]> {
  const daemon = await daemonDevices(args);
  if (args.instance !== undefined) return daemon;
  const held = new Set(daemon.map((e) => e.ublkId).filter((id): id is number => id !== null));
  return [...daemon, ...(await kernelDevices(held, args.root))];
}

async function daemonDevices(args: ListArgs): Promise<DeviceEntry[]> {
  const { readdirSync } = await import('node:fs');
  const { DaemonClient } = await import('../../daemon/client.js');
  const { instanceSocket, instancesDir } = await import('../../daemon/paths.js');
  const ask = async (path: string): Promise<DeviceEntry[]> => {
    const c = DaemonClient.connect(path);
    try {
      return (await c.request({ op: 'list' }))['devices'] as DeviceEntry[];
    } finally {
      c.close();
    }
  };
  if (args.instance !== undefined) return ask(instanceSocket(args.root, args.instance));
  if (process.getuid?.() === 0) {
    const { existsSync } = await import('node:fs');
    // No daemon: only the kernel's devices.
    return existsSync(args.socket) ? ask(args.socket) : [];
  }
  const out: DeviceEntry[] = [];
  let names: string[] = [];
  try {
    names = readdirSync(instancesDir(args.root)).sort();
  } catch {
    // no instances
  }
  for (const name of names) {
    try {
      out.push(...(await ask(instanceSocket(args.root, name))));
    } catch {
      // not ours: the daemon refuses, or the socket is not accessible
    }
  }
  return out;
}

/** Failed requests by op and the last errno, e.g. "read:3,write:1 last:EIO"; "0" for none. */
export function errorsCell(e: IoErrorCounts | null): string {
  if (e === null) return '-';
  const parts = (
    [
      ['read', e.readErrors],
      ['write', e.writeErrors],
      ['flush', e.flushErrors],
      ['discard', e.discardErrors],
    ] as const
  )
    .filter(([, n]) => n > 0)
    .map(([op, n]) => `${op}:${n}`);
  if (parts.length === 0) return '0';
  return `${parts.join(',')}${e.lastError ? ` last:${e.lastError.code}` : ''}`;
}

async function handler(args: ArgumentsCamelCase<ListArgs>): Promise<void> {
  const { printJson } = await import('../output.js');
  const { formatSize } = await import('../../size.js');
  const { table } = await import('../table.js');
  const entries = (await collect(args)).filter((e) => args.all || e.state !== 'unbound');
  if (args.json) {
    printJson(entries);
    return;
  }
  const rows = [['INSTANCE', 'INDEX', 'STATE', 'DEVICE', 'UBLK', 'SIZE', 'FLAGS', 'BACKING', 'ERRORS']];
  const served: KernelDeviceEntry[] = [];
  for (const e of entries) {
    if (e.instance === null) {
      served.push(e);
      continue;
    }
    const flags = [e.options?.readOnly ? 'ro' : '', e.options?.directIo ? 'dio' : '', e.options?.autoclear || e.options?.clearOnUnmount ? 'autoclear' : '', e.detachPending ? 'detach-pending' : '']
      .filter(Boolean).join(',');
    const backing = e.backing ? `${e.backing.path}${e.backing.deleted ? ' (deleted)' : ''}` : '-';
    rows.push([e.instance, String(e.index), e.failure ? 'failed' : e.state, e.path ?? '-', e.ublkPath ?? '-', e.size === null ? '-' : formatSize(e.size), flags || '-', backing, errorsCell(e.ioErrors)]);
  }
  if (rows.length > 1 || served.length === 0) process.stdout.write(table(rows));
  if (served.length > 0) {
    // Devices no instance holds: `ubloop serve` and other servers.
    const other = [['UBLK', 'STATE', 'SIZE', 'OWNER', 'SERVER', 'FLAGS', 'ERRORS']];
    for (const e of served) {
      other.push([e.ublkPath, e.state, e.size === null ? '-' : formatSize(e.size), `${e.owner.uid}:${e.owner.gid}`, e.serverPid > 0 ? `pid ${e.serverPid}` : '-', e.unprivileged ? 'unprivileged' : '-', errorsCell(e.ioErrors)]);
    }
    process.stdout.write(`${rows.length > 1 ? '\n' : ''}${table(other)}`);
  }
}

export const listCommand: CommandModule<object, ListArgs> = {
  command: 'list',
  describe: 'list instance devices and the other ublk devices (with their owner)',
  builder: withListOptions,
  handler,
};
