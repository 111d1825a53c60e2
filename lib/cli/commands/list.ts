// ubloop list: devices of the instances you can reach (root: all of them).
import type { ArgumentsCamelCase, Argv, CommandModule } from 'yargs';
import type { DeviceEntry } from '../../protocol/results.js';
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

async function collect(args: ListArgs): Promise<DeviceEntry[]> {
  const { readdirSync } = await import('node:fs');
  const { join } = await import('node:path');
  const { DaemonClient } = await import('../../daemon/client.js');
  const { instanceSocket } = await import('../../daemon/paths.js');
  const ask = async (path: string): Promise<DeviceEntry[]> => {
    const c = DaemonClient.connect(path);
    try {
      return (await c.request({ op: 'list' }))['devices'] as DeviceEntry[];
    } finally {
      c.close();
    }
  };
  if (args.instance !== undefined) return ask(instanceSocket(args.root, args.instance));
  if (process.getuid?.() === 0) return ask(args.socket);
  const out: DeviceEntry[] = [];
  let names: string[] = [];
  try {
    names = readdirSync(join(args.root, 'instances')).sort();
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

async function handler(args: ArgumentsCamelCase<ListArgs>): Promise<void> {
  const { printJson } = await import('../output.js');
  const { formatSize } = await import('../../size.js');
  const { table } = await import('../table.js');
  const entries = (await collect(args)).filter((e) => args.all || e.state !== 'unbound');
  if (args.json) {
    printJson(entries);
    return;
  }
  const rows = [['INSTANCE', 'INDEX', 'STATE', 'DEVICE', 'UBLK', 'SIZE', 'FLAGS', 'BACKING']];
  for (const e of entries) {
    const flags = [e.options?.readOnly ? 'ro' : '', e.options?.directIo ? 'dio' : '', e.options?.autoclear ? 'autoclear' : '', e.detachPending ? 'detach-pending' : '']
      .filter(Boolean).join(',');
    rows.push([e.instance, String(e.index), e.failure ? 'failed' : e.state, e.path ?? '-', e.ublkPath ?? '-', e.size === null ? '-' : formatSize(e.size), flags || '-', e.backing?.path ?? '-']);
  }
  process.stdout.write(table(rows));
}

export const listCommand: CommandModule<object, ListArgs> = {
  command: 'list',
  describe: 'list instance devices',
  builder: withListOptions,
  handler,
};
