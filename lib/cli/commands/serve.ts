// ubloop serve: serve one image (or the null target) as /dev/ublkbN in the foreground
// until SIGINT/SIGTERM, then stop and delete the device.
import type { ArgumentsCamelCase, Argv, CommandModule } from 'yargs';
import type { Device } from '../../device.js';
import type { DeviceOptions } from '../../device-options.js';
import { deviceFlagValues, withDeviceFlags } from '../device-flags.js';

interface ServeArgs {
  image: string | undefined;
  target: string;
  size: string | undefined;
  id: number | undefined;
  recover: number | undefined;
  recovery: string | undefined;
  json: boolean;
  /** The device options (device-flags.ts), by flag. */
  [flag: string]: unknown;
  /** Set by the handler: the process's exit code (main() reads it). */
  exitCode?: number;
}

function withServeOptions(y: Argv): Argv<ServeArgs> {
  return withDeviceFlags(
    y
      .positional('image', { type: 'string', describe: 'image file to serve (loop target)' })
      .option('target', { type: 'string', choices: ['loop', 'null'], default: 'loop', describe: 'what serves the I/O' })
      .option('size', { type: 'string', describe: 'device size for the null target (e.g. 1G)' })
      .option('id', { type: 'number', describe: 'ublk device id to ask for (default: any free one)' })
      .option('recovery', {
        type: 'string',
        describe:
          'what the device does if this process dies (SIGKILL, crash): none (the kernel deletes it), reissue (it holds its I/O until `serve --recover ID` takes it over, which redoes what the dead one had taken), fail-io (fails I/O meanwhile; Linux 6.13+)',
        defaultDescription: 'none',
      })
      .option('recover', {
        type: 'number',
        describe: 'take over ublk device ID, left waiting by a killed `serve --recovery reissue|fail-io` of the same image and options',
      })
      .option('json', { type: 'boolean', default: false, describe: 'print the device info as one JSON line' }),
    {
      readOnly: { describe: 'serve read-only' },
      scheduler: { default: 'none as root, the kernel\'s otherwise, since only root may set it' },
    },
  )
    .example('$0 serve disk.img', 'serve disk.img as /dev/ublkbN until Ctrl-C')
    .example('$0 serve --target null --size 1G', 'a 1 GiB device that reads zeros and drops writes')
    .example('$0 serve disk.img --recover 0', 'take over /dev/ublkb0 from a killed `serve disk.img --recovery reissue`') as unknown as Argv<ServeArgs>;
}

/** The command line as createDevice's options; createDevice checks them. */
async function toOptions(args: ServeArgs): Promise<DeviceOptions> {
  const { parseSize } = await import('../../size.js');
  const { invalid } = await import('../../errors.js');
  const { hasCapSysAdmin } = await import('../../unprivileged.js');
  const typed = deviceFlagValues(args);
  // Unchecked values, checked by createDevice (checkOptions): the one check of each.
  const common = {
    ...typed,
    scheduler: typed.scheduler ?? (hasCapSysAdmin() ? 'none' : 'kernel'),
    ...(args.id === undefined ? {} : { id: args.id }),
    ...(args.recovery === undefined ? {} : { recovery: args.recovery }),
  } as DeviceOptions;
  if (args.recover !== undefined && args.id !== undefined) throw invalid('--recover names the device already; leave out --id');
  if (args.target === 'null') {
    if (args.image !== undefined) throw invalid('the null target takes no image file');
    if (args.size === undefined) throw invalid('the null target needs --size (e.g. --size 1G)');
    return { ...common, target: 'null', size: parseSize(args.size, 'size') };
  }
  if (args.image === undefined) throw invalid('name the image file to serve (or use --target null --size N)');
  if (args.size !== undefined) throw invalid('--size is for the null target; use --sizelimit with an image');
  return { ...common, target: 'loop', file: args.image };
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
  const { createDevice, recoverDevice } = await import('../../device.js');
  const { checkOptions } = await import('../../device-options.js');
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
    if (args.recover === undefined) device = await createDevice(options);
    else {
      const { invalid } = await import('../../errors.js');
      if (!Number.isInteger(args.recover) || args.recover < 0) throw invalid(`--recover takes a ublk device id, got ${String(args.recover)}`);
      device = await recoverDevice(checkOptions(options), args.recover);
    }
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
