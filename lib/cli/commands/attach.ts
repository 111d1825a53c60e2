// ubloop attach: bind an image to a free index of an instance, like `losetup -f --show`.
// The image is opened here, with the caller's own rights, and passed to the daemon as a
// descriptor; the daemon never opens a path for an unprivileged client.
import type { ArgumentsCamelCase, Argv, CommandModule } from 'yargs';
import { checkBindOptions, type BindOptions } from '../../device-options.js';
import { closeImage, openImage, type Image } from '../../image.js';
import { defaultInstance, withDaemonClientOptions, type DaemonClientArgs } from '../daemon-options.js';
import { deviceFlagValues, withDeviceFlags } from '../device-flags.js';

interface AttachArgs extends DaemonClientArgs {
  image: string;
  instance: string | undefined;
  index: number | undefined;
  autoclear: boolean;
  json: boolean;
  /** The device options (device-flags.ts), by flag. */
  [flag: string]: unknown;
}

function withAttachOptions(y: Argv): Argv<AttachArgs> {
  return withDaemonClientOptions(
    withDeviceFlags(
      y
        .positional('image', { type: 'string', describe: 'image file', demandOption: true })
        .option('instance', { alias: 'i', type: 'string', describe: 'instance (default: $UBLOOP_INSTANCE or "default")' })
        .option('index', { type: 'number', describe: 'bind this existing index instead of a free one' }),
      { scheduler: { default: 'none' } },
    )
      .option('autoclear', { type: 'boolean', default: false, describe: 'detach once this command has gone and nothing uses the device' })
      .option('json', { type: 'boolean', default: false, describe: 'print the device entry as JSON' })
      .example('$0 attach --instance ci disk.img', 'prints /run/ubloop/instances/ci/loopN'),
  ) as unknown as Argv<AttachArgs>;
}

/** Opens the image with the caller's own rights; read-only (with a word) if it may only read it. */
function open(path: string, options: BindOptions): { image: Image; readOnly: boolean } {
  if (!options.readOnly) {
    try {
      return { image: openImage(path, options), readOnly: false };
    } catch (err) {
      if ((err as { code?: string }).code !== 'EACCES') throw err;
      process.stderr.write(`ubloop: ${path} is write-protected, attaching read-only\n`);
    }
  }
  return { image: openImage(path, { ...options, readOnly: true }), readOnly: true };
}

async function handler(args: ArgumentsCamelCase<AttachArgs>): Promise<void> {
  const { dirname, join } = await import('node:path');
  const { DaemonClient } = await import('../../daemon/client.js');
  const { instanceSocket } = await import('../../daemon/paths.js');
  const { printJson } = await import('../output.js');
  // The bind request's own check, here too: a bad option is refused before the image is opened.
  const options = checkBindOptions({ ...deviceFlagValues(args), autoclear: args.autoclear });
  const { image, readOnly } = open(args.image, options);
  const instance = args.instance ?? defaultInstance();
  try {
    const socket = instanceSocket(args.root, instance);
    const client = DaemonClient.connect(socket);
    try {
      const reply = await client.request(
        { op: 'bind', ...(args.index === undefined ? {} : { index: args.index }), ...options, readOnly },
        [image.fd],
      );
      const device = reply['device'] as { index: number };
      // The node as this process sees it: inside a container the instance directory
      // may be mounted elsewhere than in the daemon's view.
      const path = join(dirname(socket), `loop${device.index}`);
      if (args.json) printJson({ ...device, path });
      else process.stdout.write(`${path}\n`);
    } finally {
      client.close();
    }
  } finally {
    closeImage(image);
  }
}

export const attachCommand: CommandModule<object, AttachArgs> = {
  command: 'attach <image>',
  describe: 'bind an image to a free device of an instance and print its path',
  builder: withAttachOptions,
  handler,
};
