// ubloop attach: bind an image to a free index of an instance, like `losetup -f --show`.
// The image is opened here, with the caller's own rights, and passed to the daemon as a
// descriptor; the daemon never opens a path for an unprivileged client.
import type { ArgumentsCamelCase, Argv, CommandModule } from 'yargs';
import { defaultInstance, withDaemonClientOptions, type DaemonClientArgs } from '../daemon-options.js';

interface AttachArgs extends DaemonClientArgs {
  image: string;
  instance: string | undefined;
  index: number | undefined;
  offset: string;
  sizelimit: string;
  readOnly: boolean;
  directIo: boolean;
  blockSize: number;
  queues: number;
  depth: number;
  autoclear: boolean;
  json: boolean;
}

function withAttachOptions(y: Argv): Argv<AttachArgs> {
  return withDaemonClientOptions(
    y
      .positional('image', { type: 'string', describe: 'image file', demandOption: true })
      .option('instance', { alias: 'i', type: 'string', describe: 'instance (default: $UBLOOP_INSTANCE or "default")' })
      .option('index', { type: 'number', describe: 'bind this existing index instead of a free one' })
      .option('offset', { alias: 'o', type: 'string', default: '0', describe: 'start this many bytes into the image' })
      .option('sizelimit', { type: 'string', default: '0', describe: 'largest device size in bytes (0: to the end)' })
      .option('read-only', { alias: 'r', type: 'boolean', default: false, describe: 'read-only device' })
      .option('direct-io', { type: 'boolean', default: false, describe: 'open the image with O_DIRECT' })
      .option('block-size', { alias: 'b', type: 'number', default: 512, describe: 'logical block size' })
      .option('queues', { alias: 'q', type: 'number', default: 1, describe: 'hardware queues' })
      .option('depth', { alias: 'd', type: 'number', default: 128, describe: 'requests in flight per queue' })
      .option('autoclear', { type: 'boolean', default: false, describe: 'detach once this command has gone and nothing uses the device' })
      .option('json', { type: 'boolean', default: false, describe: 'print the device entry as JSON' })
      .example('$0 attach --instance ci disk.img', 'prints /run/ubloop/instances/ci/loopN'),
  ) as unknown as Argv<AttachArgs>;
}

function openImage(path: string, readOnly: boolean, directIo: boolean, constants: typeof import('node:fs').constants, open: typeof import('node:fs').openSync): { fd: number; readOnly: boolean } {
  const extra = directIo ? constants.O_DIRECT : 0;
  if (!readOnly) {
    try {
      return { fd: open(path, constants.O_RDWR | extra), readOnly: false };
    } catch (err) {
      const code = (err as { code?: string }).code;
      if (code !== 'EACCES' && code !== 'EROFS' && code !== 'EPERM') throw err;
      process.stderr.write(`ubloop: ${path} is write-protected, attaching read-only\n`);
    }
  }
  return { fd: open(path, constants.O_RDONLY | extra), readOnly: true };
}

async function handler(args: ArgumentsCamelCase<AttachArgs>): Promise<void> {
  const fs = await import('node:fs');
  const { dirname, join } = await import('node:path');
  const { parseSize } = await import('../../size.js');
  const { UbloopError } = await import('../../errors.js');
  const { DaemonClient } = await import('../../daemon/client.js');
  const { instanceSocket } = await import('../../daemon/paths.js');
  const { printJson } = await import('../output.js');
  const offset = parseSize(args.offset, 'offset');
  const sizeLimit = parseSize(args.sizelimit, 'size limit');
  let image: { fd: number; readOnly: boolean };
  try {
    image = openImage(args.image, args.readOnly, args.directIo, fs.constants, fs.openSync);
  } catch (err) {
    const code = (err as { code?: string }).code;
    if (code === 'ENOENT') throw new UbloopError('ENOENT', `image file ${args.image} does not exist`);
    if (code === 'EISDIR') throw new UbloopError('EISDIR', `${args.image} is a directory, not an image file`);
    if (code === 'EINVAL' && args.directIo) throw new UbloopError('EINVAL', `the filesystem of ${args.image} does not support direct I/O`);
    throw err;
  }
  const instance = args.instance ?? defaultInstance();
  try {
    const socket = instanceSocket(args.root, instance);
    const client = DaemonClient.connect(socket);
    try {
      const reply = await client.request(
        {
          op: 'bind',
          ...(args.index === undefined ? {} : { index: args.index }),
          offset,
          sizeLimit,
          readOnly: image.readOnly,
          directIo: args.directIo,
          blockSize: args.blockSize,
          queues: args.queues,
          depth: args.depth,
          autoclear: args.autoclear,
        },
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
    fs.closeSync(image.fd);
  }
}

export const attachCommand: CommandModule<object, AttachArgs> = {
  command: 'attach <image>',
  describe: 'bind an image to a free device of an instance and print its path',
  builder: withAttachOptions,
  handler,
};
