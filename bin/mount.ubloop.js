#!/usr/bin/env node
// mount.ubloop: the helper mount(8) runs for `mount -t ubloop IMAGE DIR` and for fstab
// lines of type ubloop (see README, "mount"). Install it as /sbin/mount.ubloop.
import { mountHelperMain } from '../dist/lib/cli/commands/mount.js';

process.exitCode = await mountHelperMain(process.argv.slice(2));
