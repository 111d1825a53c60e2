#!/usr/bin/env node
// ubloop-losetup: util-linux losetup's command line on ubloop devices (`ubloop losetup`).
// Install it (or a symlink to it named losetup) on PATH to use it as a drop-in.
import { losetupMain } from '../dist/lib/cli/commands/losetup.js';

process.exitCode = await losetupMain(process.argv.slice(2));
