// ubloop cleanup: delete ublk devices left behind by servers that died (SIGKILL, crash).
import type { ArgumentsCamelCase, Argv, CommandModule } from 'yargs';

interface CleanupArgs {
  dryRun: boolean;
  includeQuiesced: boolean;
  exitCode?: number;
}

function withCleanupOptions(y: Argv): Argv<CleanupArgs> {
  return y
    .option('dry-run', { type: 'boolean', default: false, describe: 'only list what would be deleted' })
    .option('include-quiesced', {
      type: 'boolean',
      default: false,
      describe: 'also delete quiesced devices (they wait for their server to recover them)',
    }) as unknown as Argv<CleanupArgs>;
}

async function handler(args: ArgumentsCamelCase<CleanupArgs>): Promise<void> {
  const { findStaleDevices, deleteStaleDevice } = await import('../../stale.js');
  const stale = await findStaleDevices(args.includeQuiesced);
  for (const d of stale) {
    const what = `ublk device ${d.id} (server pid ${d.serverPid} gone, state ${d.state})`;
    if (args.dryRun) {
      process.stdout.write(`would delete ${what}\n`);
      continue;
    }
    try {
      await deleteStaleDevice(d.id);
      process.stdout.write(`deleted ${what}\n`);
    } catch (err) {
      process.stderr.write(`ubloop: could not delete ${what}: ${(err as Error).message}\n`);
      args.exitCode = 1;
    }
  }
}

export const cleanupCommand: CommandModule<object, CleanupArgs> = {
  command: 'cleanup',
  describe: 'delete ublk devices whose server process has died',
  builder: withCleanupOptions,
  handler,
};
