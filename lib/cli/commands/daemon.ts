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
  maxDevices?: number;
  maxQueueDepth?: number;
  maxMemory?: string;
  recovery: string;
  upgrade: boolean;
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
    .option('max-devices', { type: 'number', describe: 'most loop devices across every instance (default: no limit)' })
    .option('max-queue-depth', { type: 'number', describe: 'largest queue depth of any device (default: no limit beyond the option\'s own)' })
    .option('max-memory', {
      type: 'string',
      describe: 'most memory every device together may commit: queues × depth × max I/O size of buffers, plus rings (e.g. 4G; default: no limit)',
    })
    .option('recovery', {
      type: 'string',
      default: 'reissue',
      describe:
        'what a device does if the daemon dies: reissue (hold its I/O until the restarted daemon takes it over, then redo what the dead one had taken), fail-io (fail I/O meanwhile; Linux 6.13+), none (deleted with the daemon)',
    })
    .option('upgrade', {
      type: 'boolean',
      default: false,
      describe:
        'live upgrade: have the daemon running on --socket hand its devices over (SIGUSR2: quiesce, save, exit), then take them over; filesystems on them see a pause (needs UBLK_F_QUIESCE, Linux 6.16+)',
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
  const whole = (v: number | undefined, flag: string, min: number): number | null => {
    if (v === undefined) return null;
    if (!Number.isSafeInteger(v) || v < min) throw invalid(`--${flag} must be a whole number of at least ${min}, got ${v}`);
    return v;
  };
  const { parseSize } = await import('../../size.js');
  const caps = {
    maxDevices: whole(args.maxDevices, 'max-devices', 0),
    maxDepth: whole(args.maxQueueDepth, 'max-queue-depth', 1),
    maxMemory: args.maxMemory === undefined ? null : parseSize(args.maxMemory, '--max-memory'),
  };
  const recovery = checkRecoveryMode(args.recovery, '--recovery');
  recoveryFlags(recovery); // refuses fail-io where the kernel lacks it, before anything starts
  const daemon = new Daemon({
    caps,
    socket: args.socket,
    state: args.state,
    root: args.root,
    autoclearGraceMs: args.autoclearGrace,
    sweepMs: args.sweepInterval ?? Math.max(100, Math.min(1000, args.autoclearGrace)),
    factory: ublkFactoryWith(recovery),
    abandon: (id) => abandonOrphan(id),
  });
  if (args.upgrade) await takeOverFrom(args.socket);
  await daemon.start();
  await new Promise<void>((resolve) => {
    // Live upgrade, asked for by the next daemon (`ubloop daemon --upgrade`).
    process.on('SIGUSR2', () => {
      process.stderr.write('ubloop daemon: SIGUSR2: handing every device over to the next daemon\n');
      daemon.handOver().then(resolve, (err: unknown) => {
        const code = (err as { code?: string }).code;
        process.stderr.write(`ubloop daemon: hand-over ${code === 'EOPNOTSUPP' || code === 'ECANCELED' ? 'refused, still serving' : 'failed'}: ${(err as Error).message}\n`);
        if (code === 'EOPNOTSUPP' || code === 'ECANCELED') return;
        args.exitCode = 1;
        resolve();
      });
    });
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

/**
 * `--upgrade`: asks the daemon listening on socket (its pid from the connection's peer
 * credentials) to hand its devices over, and waits for it to exit; start() then takes
 * the devices over from the state file. Refused where the kernel lacks QUIESCE.
 */
async function takeOverFrom(socket: string): Promise<void> {
  const { UbloopError } = await import('../../errors.js');
  const { native } = await import('../../native.js');
  const { ipc } = await import('../../daemon/native-ipc.js');
  const { serverAlive } = await import('../../stale.js');
  const features = native().probeKernel().features;
  if (features === null || (features & (1n << 12n)) === 0n) {
    throw new UbloopError('EOPNOTSUPP', 'a live upgrade needs UBLK_F_QUIESCE (Linux 6.16+), which this kernel does not offer: stop the daemon (SIGTERM) and start the new one instead');
  }
  let pid: number;
  try {
    const conn = ipc().connectUnix(socket, { data: () => {}, close: () => {} });
    pid = conn.peer.pid;
    conn.destroy();
  } catch (err) {
    throw new UbloopError('ESRCH', `--upgrade: no daemon answers on ${socket} (${(err as { code?: string }).code ?? (err as Error).message})`);
  }
  process.stderr.write(`ubloop daemon: asking the running daemon (pid ${pid}) to hand its devices over\n`);
  process.kill(pid, 'SIGUSR2');
  const end = Date.now() + 120_000;
  while (serverAlive(pid)) {
    if (Date.now() > end) throw new UbloopError('ETIMEDOUT', `--upgrade: the running daemon (pid ${pid}) did not hand over within 120 s; its log says why`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export const daemonCommand: CommandModule<object, DaemonArgs> = {
  command: 'daemon',
  describe: 'run the instance daemon in the foreground (owns every instance device)',
  builder: withDaemonOptions,
  handler,
};
