// Issue 9: a user who cannot get a working unprivileged device is told which piece is
// missing (access to /dev/ublk-control, the kernel feature, or the udev handover),
// before any device is added: nothing is left behind that they could not delete.
import t, { type Test } from 'tap';
import { chownSync, existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { kernelFeatures } from '../../lib/kernel.js';
import { sparseImage, run, setControlAccess, workDir, MiB, type RunResult } from '../helpers/e2e.js';
import { ublkCount, userCli } from '../helpers/daemon.js';

const USER = 1001;

function serveAs(img: string): RunResult {
  return run('setpriv', [`--reuid=${USER}`, `--regid=${USER}`, '--clear-groups', '--', 'env', '-i', 'PATH=/usr/bin:/bin', 'HOME=/tmp', process.execPath, userCli(), 'serve', img], { timeout: 180_000 });
}

/** Sets /dev/ublk-control's mode for the test; restored at teardown. */
function userImage(t: Test): string {
  const img = sparseImage(join(workDir(t), 'u.img'), 16 * MiB);
  chownSync(img, USER, USER);
  run('chmod', ['a+x', join(img, '..')]);
  return img;
}

t.test('without access to /dev/ublk-control the error names root or the udev rule and its group', async (t) => {
  setControlAccess(t, '0600');
  const before = ublkCount();
  const r = serveAs(userImage(t));
  t.not(r.status, 0, 'serve fails');
  t.match(r.stderr, /cannot open \/dev\/ublk-control: Permission denied\. Adding a ublk device needs root, or .* udev rule, which opens \/dev\/ublk-control to group "ublk"/, r.stderr.trim());
  t.equal(ublkCount(), before, 'no device added');
});

t.test('with access, the error names what this kernel or this machine lacks', async (t) => {
  setControlAccess(t, '0666');
  // No uevent helper (6.1's config has none at all), and the guest has no udev rules.
  if (existsSync('/proc/sys/kernel/hotplug')) writeFileSync('/proc/sys/kernel/hotplug', '\n');
  const before = ublkCount();
  const r = serveAs(userImage(t));
  t.not(r.status, 0, 'serve fails');
  if (kernelFeatures().paths.unprivileged) {
    t.match(r.stderr, /nothing here hands \/dev\/ublkcN and \/dev\/ublkbN to the user .* contrib\/udev\/99-ubloop\.rules/, `no handover: ${r.stderr.trim()}`);
  } else {
    t.match(r.stderr, /lets only root add ublk devices: its ublk lacks UBLK_F_UNPRIVILEGED_DEV \(Linux 6\.3\+/, `no kernel support: ${r.stderr.trim()}`);
  }
  t.equal(ublkCount(), before, 'no device added');
});
