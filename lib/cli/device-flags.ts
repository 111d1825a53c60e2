// The device options as command-line flags, made from the one table in device-options.ts:
// `serve` and `attach` offer the same flags with the same help, and hand what was typed
// to the one check (createDevice's, or the bind request's) rather than checking it here.
import type { Argv } from 'yargs';
import { TUNABLES, TUNABLE_NAMES, type OptionSpec, type TunableName } from '../device-options.js';
import { formatSize, parseSize } from '../size.js';

function spec(name: TunableName): OptionSpec {
  return TUNABLES[name] as OptionSpec;
}

/**
 * Adds a flag for each device option. No flag has a yargs default or choices: an option
 * not typed is left out (the table's default applies where it is checked), and a bad
 * value is refused by the one check, in its words.
 */
export function withDeviceFlags<T>(y: Argv<T>, overrides: Partial<Record<TunableName, { describe?: string; default?: string }>> = {}): Argv<T> {
  let out = y;
  for (const name of TUNABLE_NAMES) {
    const s = spec(name);
    const choices = s.kind === 'choice' ? ` (${s.values.join(', ')})` : '';
    const type = s.kind === 'bool' ? 'boolean' : s.kind === 'int' && s.bytes ? 'string' : s.kind === 'choice' && typeof s.default === 'string' ? 'string' : 'number';
    out = out.option(s.flag, {
      type,
      ...(s.alias === undefined ? {} : { alias: s.alias }),
      describe: `${overrides[name]?.describe ?? s.describe}${choices}`,
      defaultDescription: overrides[name]?.default ?? (s.kind === 'int' && s.bytes ? formatSize(s.default) : String(s.default)),
    });
  }
  return out;
}

/**
 * The device options as typed on the command line, by option name, sizes with units
 * (512K, 1M) turned into bytes; options not typed are absent. Not checked yet.
 */
export function deviceFlagValues(args: Readonly<Record<string, unknown>>): Partial<Record<TunableName, unknown>> {
  const out: Partial<Record<TunableName, unknown>> = {};
  for (const name of TUNABLE_NAMES) {
    const s = spec(name);
    const v = args[s.flag];
    if (v === undefined) continue;
    out[name] = s.kind === 'int' && s.bytes && typeof v === 'string' ? parseSize(v, s.label) : v;
  }
  return out;
}
