// ubloop features: what the running kernel's ublk supports, and which paths ubloop takes.
import type { ArgumentsCamelCase, Argv, CommandModule } from 'yargs';

interface FeaturesArgs {
  json: boolean;
  exitCode?: number;
}

function withFeaturesOptions(y: Argv): Argv<FeaturesArgs> {
  return y.option('json', { type: 'boolean', default: false, describe: 'print JSON' });
}

async function handler(args: ArgumentsCamelCase<FeaturesArgs>): Promise<void> {
  const { kernelFeatures } = await import('../../kernel.js');
  const { printJson } = await import('../output.js');
  const f = kernelFeatures();
  if (args.json) {
    printJson(f);
  } else {
    const yes = (b: boolean) => (b ? 'yes' : 'no');
    const lines = [
      `kernel:             ${f.kernel}`,
      `ublk:               ${f.available ? 'available' : `unavailable: ${f.problem ?? ''}`}`,
    ];
    if (f.available) lines.push(
      `command encoding:   ${f.encoding}${f.encoding === 'legacy' ? ' (Linux 6.1 style)' : ''}`,
      `GET_FEATURES:       ${f.features === null ? 'not supported (Linux < 6.5)' : `${f.featureBits ?? ''} (${f.features.length} flags)`}`,
      ...(f.features ?? []).map((name) => `  ${name}`),
      `parameter types:    ${f.parameterTypes.join(' ')} (set by ubloop)`,
      `user recovery:      ${yes(f.paths.userRecovery)}`,
      `user copy:          ${yes(f.paths.userCopy)}`,
      `zero copy:          ${yes(f.paths.zeroCopy)}`,
      `unprivileged:       ${yes(f.paths.unprivileged)}`,
    );
    process.stdout.write(`${lines.join('\n')}\n`);
  }
  if (!f.available) args.exitCode = 1;
}

export const featuresCommand: CommandModule<object, FeaturesArgs> = {
  command: 'features',
  describe: "show what the running kernel's ublk supports",
  builder: withFeaturesOptions,
  handler,
};
