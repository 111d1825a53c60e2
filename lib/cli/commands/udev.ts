// ubloop udev [NAME]: run by udev (contrib/udev/99-ubloop.rules) as root when a ublk
// node appears; gives an unprivileged device's node to its owner.
import type { ArgumentsCamelCase, Argv, CommandModule } from 'yargs';

interface UdevArgs {
  name: string | undefined;
  exitCode?: number;
}

function withUdevOptions(y: Argv): Argv<UdevArgs> {
  return y.positional('name', {
    type: 'string',
    describe: 'the node: ublkcN, ublkbN[pM] or its /dev path (default: $DEVNAME, as udev and the kernel uevent helper set it)',
  }) as unknown as Argv<UdevArgs>;
}

async function handler(args: ArgumentsCamelCase<UdevArgs>): Promise<void> {
  const action = process.env['ACTION'];
  // Only a node that appears (or is re-announced) needs its owner set.
  if (action !== undefined && action !== 'add' && action !== 'change') return;
  const name = args.name ?? process.env['DEVNAME'];
  if (name === undefined || name === '') throw new Error('name the node (ublkcN or ublkbN), or set DEVNAME');
  const { handOverNode } = await import('../../udev-handover.js');
  const h = await handOverNode(name);
  if (h.owner !== null) process.stdout.write(`${h.node}: owner ${h.owner.uid}:${h.owner.gid}, mode 0600\n`);
}

export const udevCommand: CommandModule<object, UdevArgs> = {
  command: 'udev [name]',
  describe: "(for udev, as root) give an unprivileged ublk device's node to the user who added it",
  builder: withUdevOptions,
  handler,
};
