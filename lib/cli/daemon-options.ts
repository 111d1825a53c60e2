// Options and helpers shared by the commands that talk to the daemon.
import type { Argv } from 'yargs';
import { DEFAULT_ROOT, DEFAULT_SOCKET } from '../daemon/paths.js';

export interface DaemonClientArgs {
  socket: string;
  root: string;
}

export function withDaemonClientOptions<T>(y: Argv<T>): Argv<T & DaemonClientArgs> {
  return y
    .option('socket', { type: 'string', default: DEFAULT_SOCKET, describe: 'admin socket of the daemon' })
    .option('root', { type: 'string', default: DEFAULT_ROOT, describe: 'directory holding instances/NAME/' }) as unknown as Argv<T & DaemonClientArgs>;
}

/** The instance a command addresses when none is named. */
export function defaultInstance(): string {
  return process.env['UBLOOP_INSTANCE'] ?? 'default';
}
