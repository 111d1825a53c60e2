// ubloop daemon: the long-lived process that owns every instance device. Foreground,
// logs to stderr; SIGTERM/SIGINT stop every device and exit 0.
import type { ArgumentsCamelCase, Argv, CommandModule } from 'yargs';
import { DEFAULT_ROOT, DEFAULT_SOCKET, DEFAULT_STATE } from '../../daemon/paths.js';

interface DaemonArgs {
  socket: string;
  state: string;
  root: string;
  autoclearGrace: number;
  sweepInterval?: number;
  recovery: string;
  exitCode?: number;
}

function withDaemonOptions(y: Argv): Argv<DaemonArgs> {
  return y
    .option('socket', { type: 'string', default: DEFAULT_SOCKET, describe: 'admin socket (root only)' })
    .option('state', { type: 'string', default: DEFAULT_STATE, describe: 'state file (instances, limits, bindings)' })
    .option('root', { type: 'string', default: DEFAULT_ROOT, describe: 'directory holding instances/NAME/' })
    .option('autoclear-grace', { type: 'number', default: 5000, describe: 'ms an autoclear device must sit unused after its client left' })
    .option('sweep-interval', {
      type: 'number',
      describe: 'ms between autoclear / lazy-detach checks (default: the grace time, within 100..1000)',
    })
    .option('recovery', {
      type: 'string',
      default: 'reissue',
      describe:
        'what a device does if the daemon dies: reissue (hold its I/O until the restarted daemon takes it over, then redo what the dead one had taken), fail-io (fail I/O meanwhile; Linux 6.13+), none (deleted with the daemon)',
    })
    .example('$0 daemon', 'run in the foreground (see contrib/ubloop.service)') as unknown as Argv<DaemonArgs>;
}

async function handler(args: ArgumentsCamelCase<DaemonArgs>): Promise<void> {
  const { Daemon } = await import('../../daemon/daemon.js');
  const { ublkFactoryWith } = await import('../../daemon/ublk-factory.js');
  const { abandonOrphan, checkRecoveryMode, recoveryFlags } = await import('../../recovery.js');
  const { invalid } = await import('../../errors.js');
  if (!Number.isInteger(args.autoclearGrace) || args.autoclearGrace < 0) {
    throw invalid(`--autoclear-grace must be a whole number of milliseconds, got ${args.autoclearGrace}`);
  }
  if (args.sweepInterval !== undefined && (!Number.isInteger(args.sweepInterval) || args.sweepInterval < 10)) {
    throw invalid(`--sweep-interval must be a whole number of milliseconds, at least 10, got ${args.sweepInterval}`);
  }
  const recovery = checkRecoveryMode(args.recovery, '--recovery');
  recoveryFlags(recovery); // refuses fail-io where the kernel lacks it, before anything starts
  const daemon = new Daemon({
    socket: args.socket,
    state: args.state,
    root: args.root,
    autoclearGraceMs: args.autoclearGrace,
    sweepMs: args.sweepInterval ?? Math.max(100, Math.min(1000, args.autoclearGrace)),
    factory: ublkFactoryWith(recovery),
    abandon: (id) => abandonOrphan(id),
  });
  await daemon.start();
  await new Promise<void>((resolve) => {
    const stop = (signal: string) => {
      process.stderr.write(`ubloop daemon: ${signal}: stopping\n`);
      daemon.stop().then(resolve, (err: unknown) => {
        process.stderr.write(`ubloop daemon: stop failed: ${(err as Error).message}\n`);
        args.exitCode = 1;
        resolve();
      });
    };
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
  });
  // Open CUSE devices or sockets of clients must not keep the process up after a stop.
  setTimeout(() => process.exit(args.exitCode ?? 0), 200).unref();
}

export const daemonCommand: CommandModule<object, DaemonArgs> = {
  command: 'daemon',
  describe: 'run the instance daemon in the foreground (owns every instance device)',
  builder: withDaemonOptions,
  handler,
};
