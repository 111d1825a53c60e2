// The ubloop command line: one module per command under ./commands, each exporting a
// yargs CommandModule whose handler imports its real work lazily.
import yargs, { type Argv } from 'yargs';
import { attachCommand } from './commands/attach.js';
import { cleanupCommand } from './commands/cleanup.js';
import { daemonCommand } from './commands/daemon.js';
import { detachCommand } from './commands/detach.js';
import { featuresCommand } from './commands/features.js';
import { instanceCommand } from './commands/instance.js';
import { listCommand } from './commands/list.js';
import { resizeCommand } from './commands/resize.js';
import { serveCommand } from './commands/serve.js';
import { udevCommand } from './commands/udev.js';
import { fail } from './output.js';

function commands(cli: Argv): Argv {
  return cli.command(serveCommand).command(featuresCommand).command(cleanupCommand)
    .command(daemonCommand).command(instanceCommand).command(attachCommand).command(detachCommand).command(listCommand)
    .command(resizeCommand).command(udevCommand)
    // Listed for --help only: main() hands `losetup` its own getopt-style command line first.
    .command({ command: 'losetup', describe: "util-linux losetup's options and output on ubloop devices (see ubloop losetup --help)", handler: () => undefined })
    .command({ command: 'mount', describe: 'attach an image and mount it, like mount -o loop; released when unmounted (see ubloop mount --help)', handler: () => undefined })
    .command({ command: 'umount', describe: 'unmount a directory and detach its device (umount -d)', handler: () => undefined });
}

/** Runs the CLI; resolves to the process exit code. */
export async function main(argv: string[]): Promise<number> {
  // losetup reads its command line as util-linux does (getopt), not through yargs.
  if (argv[0] === 'losetup') {
    const { losetupMain } = await import('./commands/losetup.js');
    return losetupMain(argv.slice(1));
  }
  // mount and umount read their command lines as mount(8) and umount(8) do.
  if (argv[0] === 'mount' || argv[0] === 'umount') {
    const { mountMain, umountMain } = await import('./commands/mount.js');
    return argv[0] === 'mount' ? mountMain(argv.slice(1)) : umountMain(argv.slice(1));
  }
  let exitCode = 0;
  const cli = commands(yargs(argv).scriptName('ubloop'))
    .demandCommand(1, 'name a command (see --help)')
    .strict()
    .help()
    .version()
    .wrap(Math.min(100, process.stdout.columns ?? 100))
    .fail((msg: string | undefined, err: Error | undefined) => {
      if (err) throw err;
      process.stderr.write(`ubloop: ${msg ?? 'bad arguments'} (see "ubloop --help")\n`);
      exitCode = 2;
    });
  try {
    const result = await cli.parseAsync();
    const code = (result as { exitCode?: unknown }).exitCode;
    if (typeof code === 'number') exitCode = code;
  } catch (err) {
    exitCode = fail(err);
  }
  return exitCode;
}
