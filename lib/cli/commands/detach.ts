// ubloop detach DEV | --instance NAME INDEX: unbind a device (the index stays, like
// losetup -d). A device still in use is detached as soon as it is released.
import type { ArgumentsCamelCase, Argv, CommandModule } from 'yargs';
import { withDaemonClientOptions, type DaemonClientArgs } from '../daemon-options.js';

interface DetachArgs extends DaemonClientArgs {
  device: string;
  instance: string | undefined;
}

function withDetachOptions(y: Argv): Argv<DetachArgs> {
  return withDaemonClientOptions(
    y
      .positional('device', { type: 'string', describe: 'device path (…/instances/NAME/loopN, or /dev/ublkbN as root), or INDEX with --instance', demandOption: true })
      .option('instance', { alias: 'i', type: 'string', describe: 'instance of INDEX' })
      .example('$0 detach /run/ubloop/instances/ci/loop0', '')
      .example('$0 detach --instance ci 0', ''),
  ) as unknown as Argv<DetachArgs>;
}

async function handler(args: ArgumentsCamelCase<DetachArgs>): Promise<void> {
  const { resolve } = await import('node:path');
  const { UbloopError, invalid } = await import('../../errors.js');
  const { DaemonClient } = await import('../../daemon/client.js');
  const { instanceSocket } = await import('../../daemon/paths.js');
  let instance: string;
  let index: number;
  if (args.instance !== undefined) {
    if (!/^\d+$/.test(args.device)) throw invalid(`with --instance, give the index as a number, got ${JSON.stringify(args.device)}`);
    instance = args.instance;
    index = Number(args.device);
  } else {
    const path = resolve(args.device);
    const inDir = /\/instances\/([^/]+)\/loop(\d+)$/.exec(path);
    const ublk = /^\/dev\/ublkb(\d+)$/.exec(path);
    if (inDir?.[1] && inDir[2]) {
      instance = inDir[1];
      index = Number(inDir[2]);
    } else if (ublk?.[1]) {
      const admin = DaemonClient.connect(args.socket);
      try {
        const reply = await admin.request({ op: 'list' });
        const id = Number(ublk[1]);
        const found = (reply['devices'] as { instance: string; index: number; ublkId: number | null }[]).find((d) => d.ublkId === id);
        if (!found) throw new UbloopError('ENODEV', `${path} is not a device of any instance`);
        instance = found.instance;
        index = found.index;
      } finally {
        admin.close();
      }
    } else {
      throw invalid(`${args.device} is not an instance device (…/instances/NAME/loopN) nor /dev/ublkbN`);
    }
  }
  const client = DaemonClient.connect(instanceSocket(args.root, instance));
  try {
    const reply = await client.request({ op: 'unbind', index });
    if (reply['deferred'] === true) {
      process.stderr.write(`ubloop: ${instance}/loop${index} is in use; it will be detached once released\n`);
    }
  } finally {
    client.close();
  }
}

export const detachCommand: CommandModule<object, DetachArgs> = {
  command: 'detach <device>',
  describe: 'unbind an instance device',
  builder: withDetachOptions,
  handler,
};
