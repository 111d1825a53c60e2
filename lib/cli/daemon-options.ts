// Options and helpers shared by the commands that talk to the daemon.
import type { Argv } from 'yargs';

export interface DaemonClientArgs {
  socket: string;
  root: string;
}

export function withDaemonClientOptions<T>(y: Argv<T>): Argv<T & DaemonClientArgs> {
  return y
    .option('socket', { type: 'string', default: '/run/ubloop/control.sock', describe: 'admin socket of the daemon' })
    .option('root', { type: 'string', default: '/run/ubloop', describe: 'directory holding instances/NAME/' }) as unknown as Argv<T & DaemonClientArgs>;
}

/** The instance a command addresses when none is named. */
export function defaultInstance(): string {
  return process.env['UBLOOP_INSTANCE'] ?? 'default';
}
