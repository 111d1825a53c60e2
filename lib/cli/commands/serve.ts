// ubloop serve: serve one image (or the null target) as /dev/ublkbN in the foreground
// until SIGINT/SIGTERM, then stop and delete the device.
import type { ArgumentsCamelCase, Argv, CommandModule } from 'yargs';
import type { Device } from '../../device.js';
import { COPY_MODES, DEFAULTS, type CopyMode, type DeviceOptions, type Scheduler } from '../../device-options.js';

interface ServeArgs {
  image: string | undefined;
  target: string;
  size: string | undefined;
  readOnly: boolean;
  directIo: boolean;
  offset: string;
  sizelimit: string;
  blockSize: number;
  queues: number;
  depth: number;
  maxIo: string;
  scheduler: string | undefined;
  id: number | undefined;
  discard: boolean;
  pollUs: number;
  copy: string;
  json: boolean;
  /** Set by the handler: the process's exit code (main() reads it). */
  exitCode?: number;
}

const SCHEDULERS = ['none', 'mq-deadline', 'kyber', 'bfq', 'kernel'] as const;

function withServeOptions(y: Argv): Argv<ServeArgs> {
  return y
    .positional('image', { type: 'string', describe: 'image file to serve (loop target)' })
    .option('target', { type: 'string', choices: ['loop', 'null'], default: 'loop', describe: 'what serves the I/O' })
    .option('size', { type: 'string', describe: 'device size for the null target (e.g. 1G)' })
    .option('read-only', { alias: 'r', type: 'boolean', default: false, describe: 'serve read-only' })
    .option('direct-io', { type: 'boolean', default: false, describe: 'open the image with O_DIRECT' })
    .option('offset', { alias: 'o', type: 'string', default: '0', describe: 'start this many bytes into the image' })
    .option('sizelimit', { type: 'string', default: '0', describe: 'largest device size in bytes (0: to the end)' })
    .option('block-size', { alias: 'b', type: 'number', default: 512, describe: 'logical block size: 512, 1024, 2048, 4096' })
    .option('queues', { alias: 'q', type: 'number', default: 1, describe: 'hardware queues (one thread each)' })
    .option('depth', { alias: 'd', type: 'number', default: 128, describe: 'requests in flight per queue' })
    .option('max-io', { type: 'string', default: '1M', describe: 'largest single request' })
    .option('scheduler', {
      type: 'string',
      choices: SCHEDULERS,
      describe: 'I/O scheduler ("kernel": leave the default; default: none as root, the kernel\'s otherwise, since only root may set it)',
    })
    .option('id', { type: 'number', describe: 'ublk device id to ask for (default: any free one)' })
    .option('discard', { type: 'boolean', default: true, describe: 'support discard and write-zeroes (--no-discard to turn off)' })
    .option('poll-us', {
      type: 'number',
      default: DEFAULTS.pollUs,
      describe: 'a queue thread busy-polls up to this many µs for its next event before sleeping, while recent waits were shorter (0: never poll)',
    })
    .option('copy', {
      type: 'string',
      choices: COPY_MODES,
      default: 'auto',
      describe:
        'how request data moves: kernel (the kernel copies it), user (ubloop copies it through /dev/ublkcN), zero (ubloop registers the request pages), auto-buf (the kernel registers them); auto: the fastest the kernel offers (kernel copy for users without CAP_SYS_ADMIN)',
    })
    .option('json', { type: 'boolean', default: false, describe: 'print the device info as one JSON line' })
    .example('$0 serve disk.img', 'serve disk.img as /dev/ublkbN until Ctrl-C')
    .example('$0 serve --target null --size 1G', 'a 1 GiB device that reads zeros and drops writes') as unknown as Argv<ServeArgs>;
}

async function toOptions(args: ServeArgs): Promise<DeviceOptions> {
  const { parseSize } = await import('../../size.js');
  const { invalid } = await import('../../errors.js');
  const { hasCapSysAdmin } = await import('../../unprivileged.js');
  const chosen = args.scheduler ?? (hasCapSysAdmin() ? 'none' : 'kernel');
  const scheduler: Scheduler | null = chosen === 'kernel' ? null : (chosen as Scheduler);
  const common = {
    readOnly: args.readOnly,
    blockSize: args.blockSize,
    queues: args.queues,
    depth: args.depth,
    maxIoBytes: parseSize(args.maxIo, 'max I/O size'),
    scheduler,
    discard: args.discard,
    pollUs: args.pollUs,
    copy: args.copy as CopyMode,
    ...(args.id === undefined ? {} : { id: args.id }),
  };
  if (args.target === 'null') {
    if (args.image !== undefined) throw invalid('the null target takes no image file');
    if (args.size === undefined) throw invalid('the null target needs --size (e.g. --size 1G)');
    return { ...common, target: 'null', size: parseSize(args.size, 'size') };
  }
  if (args.image === undefined) throw invalid('name the image file to serve (or use --target null --size N)');
  if (args.size !== undefined) throw invalid('--size is for the null target; use --sizelimit with an image');
  return {
    ...common,
    target: 'loop',
    file: args.image,
    directIo: args.directIo,
    offset: parseSize(args.offset, 'offset'),
    sizeLimit: parseSize(args.sizelimit, 'size limit'),
  };
}

/** Waits for SIGINT/SIGTERM/SIGHUP; SIGUSR1 prints stats; `tick` runs every second. Installed before the device exists. */
function signals(onStats: () => void, tick: () => void): { stopped: Promise<NodeJS.Signals>; dispose: () => void } {
  let resolve: (s: NodeJS.Signals) => void = () => {};
  const stopped = new Promise<NodeJS.Signals>((r) => (resolve = r));
  const stop = (s: NodeJS.Signals) => resolve(s);
  const ticker = setInterval(tick, 1000);
  for (const s of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(s, stop);
  process.on('SIGUSR1', onStats);
  return {
    stopped,
    dispose: () => {
      clearInterval(ticker);
      process.off('SIGUSR1', onStats);
      // Later signals are ignored while the device stops; the process exits after.
      for (const s of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.off(s, stop).on(s, () => {});
    },
  };
}

async function handler(args: ArgumentsCamelCase<ServeArgs>): Promise<void> {
  const { createDevice } = await import('../../device.js');
  const { printJson } = await import('../output.js');
  const { listenServeControl } = await import('../../serve-control.js');
  const { serveRoot } = await import('../../daemon/paths.js');
  let device: Device | undefined;
  let closeControl: (() => void) | undefined;
  let failure: string | null = null;
  // A queue thread that failed leaves a device whose I/O fails: say so once, on
  // stderr and (with --json) as a JSON line, and exit non-zero when stopped.
  const checkHealth = () => {
    if (!device || failure !== null) return;
    failure = device.failure();
    if (failure === null) return;
    process.stderr.write(`ubloop: ${device.path} failed: ${failure}; its I/O fails with EIO until it is stopped\n`);
    if (args.json) printJson({ failed: { id: device.id, path: device.path, failure } });
  };
  const sig = signals(() => {
    if (device) printJson({ stats: device.stats() });
  }, checkHealth);
  try {
    const options = await toOptions(args);
    device = await createDevice(options);
    try {
      closeControl = listenServeControl(device, serveRoot());
    } catch (err) {
      process.stderr.write(`ubloop: no control socket (ubloop resize will not reach ${device.path}): ${(err as Error).message}\n`);
    }
    if (args.json) printJson(device.info());
    else process.stdout.write(`${device.path}\n`);
    const signal = await sig.stopped;
    checkHealth();
    process.stderr.write(`ubloop: ${signal}: stopping ${device.path}\n`);
  } finally {
    sig.dispose();
    closeControl?.();
    await device?.stop();
  }
  if (failure !== null) args.exitCode = 1;
}

export const serveCommand: CommandModule<object, ServeArgs> = {
  command: 'serve [image]',
  describe: 'serve an image file (or the null target) as /dev/ublkbN until interrupted',
  builder: withServeOptions,
  handler,
};
