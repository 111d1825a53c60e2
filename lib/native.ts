// Loads the native addon (build/Release/ubloop.node) with its hand-written types.
import { createRequire } from 'node:module';
import type { NativeBinding } from '../native/index.js';

export type * from '../native/index.js';

const require = createRequire(import.meta.url);

function load(): NativeBinding {
  // dist/lib/native.js and lib/native.ts both sit two levels below the package root.
  const candidates = ['../build/Release/ubloop.node', '../../build/Release/ubloop.node'];
  let firstError: unknown;
  for (const c of candidates) {
    try {
      return require(c) as NativeBinding;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'MODULE_NOT_FOUND') throw err;
      firstError ??= err;
    }
  }
  throw new Error(
    `ubloop: the native addon is not built (run "npm run build:native"): ${(firstError as Error).message}`,
  );
}

let binding: NativeBinding | undefined;

/** The native module, loaded on first use. */
export function native(): NativeBinding {
  if (binding === undefined) {
    const loaded = load();
    // Environment cleanup hooks do not run on process.exit(); devices must not outlive us.
    process.once('exit', () => loaded.removeAllDevicesSync());
    binding = loaded;
  }
  return binding;
}
