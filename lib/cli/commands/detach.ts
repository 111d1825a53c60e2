// ubloop detach DEV | --instance NAME INDEX: unbind a device (the index stays, like
// losetup -d). A device still in use is refused with EBUSY, or with --lazy detached
// as soon as it is released.
import type { ArgumentsCamelCase, Argv, CommandModule } from 'yargs';
import { withDaemonClientOptions, type DaemonClientArgs } from '../daemon-options.js';

interface DetachArgs extends DaemonClientArgs {
  device: string;
  instance: string | undefined;
  lazy: boolean;
}

function withDetachOptions(y: Argv): Argv<DetachArgs> {
  return withDaemonClientOptions(
    y
      .positional('device', { type: 'string', describe: 'device path (…/instances/NAME/loopN, or /dev/ublkbN as root), or INDEX with --instance', demandOption: true })
      .option('instance', { alias: 'i', type: 'string', describe: 'instance of INDEX' })
      .option('lazy', { alias: 'l', type: 'boolean', default: false, describe: 'a device in use is detached once released, instead of refused (like losetup -d)' })
      .example('$0 detach /run/ubloop/instances/ci/loop0', '')
      .example('$0 detach --instance ci 0', ''),
  ) as unknown as Argv<DetachArgs>;
}

async function handler(args: ArgumentsCamelCase<DetachArgs>): Promise<void> {
  const { DaemonClient } = await import('../../daemon/client.js');
  const { instanceSocket } = await import('../../daemon/paths.js');
  const { resolveDevice } = await import('../device-ref.js');
  const ref = await resolveDevice(args.device, args.instance, args, false);
  if (ref.kind !== 'instance') throw new Error('unreachable: detach resolves instance devices only');
  const { instance, index } = ref;
  const client = DaemonClient.connect(instanceSocket(args.root, instance));
  try {
    // Without --lazy a device in use is refused with EBUSY: by the kernel itself where
    // it can (TRY_STOP_DEV, Linux 6.19+), else by the daemon's checks.
    const reply = await client.request({ op: 'unbind', index, busy: args.lazy ? 'defer' : 'refuse' });
    if (reply['deferred'] === true) {
      process.stderr.write(`ubloop: ${instance}/loop${index} is in use; it will be detached once released\n`);
    }
  } finally {
    client.close();
  }
}

export const detachCommand: CommandModule<object, DetachArgs> = {
  command: 'detach <device>',
  describe: 'unbind an instance device (EBUSY while it is in use, unless --lazy)',
  builder: withDetachOptions,
  handler,
};
