// ubloop resize DEV [--size N]: like `losetup -c`, the device takes the size its image
// has now (or N bytes), for a `ubloop serve` device or an instance device. Needs a
// kernel with UPDATE_SIZE (Linux 6.16+).
import type { ArgumentsCamelCase, Argv, CommandModule } from 'yargs';
import { withDaemonClientOptions, type DaemonClientArgs } from '../daemon-options.js';

interface ResizeArgs extends DaemonClientArgs {
  device: string;
  instance: string | undefined;
  size: string | undefined;
}

function withResizeOptions(y: Argv): Argv<ResizeArgs> {
  return withDaemonClientOptions(
    y
      .positional('device', { type: 'string', describe: '/dev/ublkbN, …/instances/NAME/loopN, or INDEX with --instance', demandOption: true })
      .option('instance', { alias: 'i', type: 'string', describe: 'instance of INDEX' })
      .option('size', { type: 'string', describe: 'new size (e.g. 2G) instead of the image\'s size' })
      .example('$0 resize /dev/ublkb0', 'after the image grew (truncate -s +1G disk.img)'),
  ) as unknown as Argv<ResizeArgs>;
}

async function handler(args: ArgumentsCamelCase<ResizeArgs>): Promise<void> {
  const { DaemonClient } = await import('../../daemon/client.js');
  const { instanceSocket } = await import('../../daemon/paths.js');
  const { parseSize, formatSize } = await import('../../size.js');
  const { resolveDevice } = await import('../device-ref.js');
  const size = args.size === undefined ? undefined : parseSize(args.size, 'size');
  const ref = await resolveDevice(args.device, args.instance, args, true);
  const client = DaemonClient.connect(ref.kind === 'serve' ? ref.socket : instanceSocket(args.root, ref.instance));
  try {
    const request = ref.kind === 'serve' ? { op: 'resize', index: 0 } : { op: 'resize', index: ref.index };
    const reply = await client.request({ ...request, ...(size === undefined ? {} : { size }) });
    process.stdout.write(`${args.device}: ${formatSize(Number(reply['size']))} (${String(reply['size'])} bytes)\n`);
  } finally {
    client.close();
  }
}

export const resizeCommand: CommandModule<object, ResizeArgs> = {
  command: 'resize <device>',
  describe: "take the image's new size (or --size) on a running device, like losetup -c",
  builder: withResizeOptions,
  handler,
};
