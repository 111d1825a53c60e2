// The test-only addon (test/native/test_addon.cc, built by binding.gyp as
// build/Release/ubloop_test.node): client-side helpers the production addon does not ship.
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { ROOT } from './e2e.js';

export interface TestAddon {
  /**
   * ioctl(fd, cmd, arg) with an integer argument, synchronously: returns the result,
   * throws Error{code, errno, syscall: 'ioctl'}. Never call it on a CUSE device served
   * by this same thread: the handler could not run, and the call would never return.
   */
  ioctlInt(fd: number, cmd: number, arg: number): number;
}

/** Path of the built test addon, for child processes that require() it. */
export const TEST_ADDON = join(ROOT, 'build', 'Release', 'ubloop_test.node');

let addon: TestAddon | undefined;

export function testAddon(): TestAddon {
  addon ??= createRequire(import.meta.url)(TEST_ADDON) as TestAddon;
  return addon;
}
