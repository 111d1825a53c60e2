// ubloop instance create|set|list|remove: administration over the root-only admin socket.
import type { ArgumentsCamelCase, Argv, CommandModule } from 'yargs';
import { withDaemonClientOptions, type DaemonClientArgs } from '../daemon-options.js';

interface InstanceArgs extends DaemonClientArgs {
  action: string;
  name: string | undefined;
  max: number | undefined;
  owner: string | undefined;
  mode: string | undefined;
  ownerMax: number | undefined;
  maxDepth: string | undefined;
  maxMemory: string | undefined;
  force: boolean;
  json: boolean;
}

const ACTIONS = ['create', 'set', 'list', 'remove'] as const;

function withInstanceOptions(y: Argv): Argv<InstanceArgs> {
  return withDaemonClientOptions(
    y
      .positional('action', { type: 'string', choices: ACTIONS, describe: 'what to do' })
      .positional('name', { type: 'string', describe: 'instance name' })
      .option('max', { type: 'number', describe: 'most devices the instance may hold (live with "set")' })
      .option('owner', { type: 'string', describe: 'UID[:GID] (numbers or names) owning the instance' })
      .option('mode', { type: 'string', describe: 'octal mode of its nodes and socket (default 0660)' })
      .option('owner-max', { type: 'number', describe: 'most devices of the owner across all instances' })
      .option('max-depth', { type: 'string', describe: 'largest queue depth of a device bound here ("none": no limit of its own; live with "set")' })
      .option('max-memory', { type: 'string', describe: 'most memory its devices may commit together, e.g. 2G ("none": no limit of its own; live with "set")' })
      .option('force', { type: 'boolean', default: false, describe: 'remove: detach its devices first' })
      .option('json', { type: 'boolean', default: false, describe: 'list: print JSON' })
      .example('$0 instance create ci --max 8 --owner 1001:1001', 'an instance for uid 1001 with at most 8 devices')
      .example('$0 instance set ci --max 16', 'raise the limit live')
      .example('$0 instance set ci --max-depth 64 --max-memory 1G', 'cap the queue depth and memory of its devices'),
  ) as unknown as Argv<InstanceArgs>;
}

async function handler(args: ArgumentsCamelCase<InstanceArgs>): Promise<void> {
  const { invalid } = await import('../../errors.js');
  const { DaemonClient } = await import('../../daemon/client.js');
  const { printJson } = await import('../output.js');
  const { parseOwner, parseMode } = await import('../ids.js');
  const need = (): string => {
    if (!args.name) throw invalid(`"instance ${args.action}" needs an instance name`);
    return args.name;
  };
  const { parseSize } = await import('../../size.js');
  // --max-depth / --max-memory: a value, or "none" (only for set) to clear it
  const cap = (text: string | undefined, flag: string, parse: (t: string) => number): Record<string, number | null> => {
    if (text === undefined) return {};
    const key = flag === 'max-depth' ? 'maxDepth' : 'maxMemory';
    if (text === 'none') {
      if (args.action !== 'set') throw invalid(`--${flag} none is for "instance set" (a new instance has no limit unless given one)`);
      return { [key]: null };
    }
    return { [key]: parse(text) };
  };
  const caps = {
    ...cap(args.maxDepth, 'max-depth', (t) => {
      if (!/^\d+$/.test(t)) throw invalid(`--max-depth must be a whole number or "none", got ${JSON.stringify(t)}`);
      return Number(t);
    }),
    ...cap(args.maxMemory, 'max-memory', (t) => parseSize(t, '--max-memory')),
  };
  let message: Record<string, unknown>;
  switch (args.action) {
    case 'create': {
      const owner = args.owner === undefined ? undefined : parseOwner(args.owner);
      message = {
        op: 'instance.create',
        name: need(),
        ...(args.max === undefined ? {} : { max: args.max }),
        ...(owner ? { uid: owner.uid, gid: owner.gid } : {}),
        ...(args.mode === undefined ? {} : { mode: parseMode(args.mode) }),
        ...(args.ownerMax === undefined ? {} : { ownerMax: args.ownerMax }),
        ...caps,
      };
      break;
    }
    case 'set':
      message = {
        op: 'instance.set',
        name: need(),
        ...(args.max === undefined ? {} : { max: args.max }),
        ...(args.ownerMax === undefined ? {} : { ownerMax: args.ownerMax }),
        ...caps,
      };
      break;
    case 'list':
      message = { op: 'instance.list' };
      break;
    case 'remove':
      message = { op: 'instance.remove', name: need(), force: args.force };
      break;
    default:
      throw invalid(`unknown instance action ${args.action}`);
  }
  const client = DaemonClient.connect(args.socket);
  try {
    const reply = await client.request(message);
    if (args.action === 'list') {
      const instances = reply['instances'] as {
        name: string; max: number; count: number; bound: number; uid: number; gid: number; mode: number; ownerMax: number | null; dir: string; loopControl: string | null;
      }[];
      if (args.json) {
        printJson(instances);
        return;
      }
      const rows = [['NAME', 'MAX', 'DEVICES', 'BOUND', 'OWNER', 'MODE', 'OWNER-MAX', 'DIR', 'LOOP-CONTROL']];
      for (const i of instances) {
        rows.push([i.name, String(i.max), String(i.count), String(i.bound), `${i.uid}:${i.gid}`, `0${i.mode.toString(8)}`,
          i.ownerMax === null ? '-' : String(i.ownerMax), i.dir, i.loopControl ?? '(socket only)']);
      }
      const { table } = await import('../table.js');
      process.stdout.write(table(rows));
    } else if (args.action !== 'remove' && args.json) {
      printJson(reply['instance']);
    } else if (args.action === 'create') {
      process.stdout.write(`${(reply['instance'] as { dir: string }).dir}\n`);
    }
  } finally {
    client.close();
  }
}

export const instanceCommand: CommandModule<object, InstanceArgs> = {
  command: 'instance <action> [name]',
  describe: 'create, change (live), list or remove instances (root)',
  builder: withInstanceOptions,
  handler,
};
