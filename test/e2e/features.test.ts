// `ubloop features` and `serve --json` on the kernel they run on: Linux 6.1 (legacy
// encoding, no GET_FEATURES) or 7.3 (ioctl encoding, 21 feature flags), each named.
import t from 'tap';
import { release } from 'node:os';
import { cliAsync, serve } from '../helpers/e2e.js';

const linux61 = /^6\.[0-4]\./.test(release());
const linux73 = /^7\.3\./.test(release());

// Both forms start at once: node starts are slow under TCG.
const [json, text] = await Promise.all([cliAsync(['features', '--json']), cliAsync(['features'])]);

interface Features {
  kernel: string;
  available: boolean;
  problem: string | null;
  encoding: string;
  features: string[] | null;
  featureBits: string | null;
  parameterTypes: string[];
}

t.test('features --json reports ublk, the encoding and every flag the kernel reports', async (t) => {
  if (!json) throw new Error('no result');
  t.equal(json.status, 0, `exit 0 (stderr: ${json.stderr.trim()})`);
  const f = JSON.parse(json.stdout) as Features;
  t.equal(f.kernel, release(), 'names the running kernel');
  t.equal(f.available, true, 'ublk is available');
  t.equal(f.problem, null, 'no problem reported');
  t.same(f.parameterTypes, ['basic', 'discard'], 'the parameter types ubloop sets');
  if (linux61) {
    t.equal(f.encoding, 'legacy', 'Linux 6.1 takes legacy-encoded commands only');
    t.equal(f.features, null, 'no GET_FEATURES before Linux 6.5');
  } else {
    t.equal(f.encoding, 'ioctl', 'a kernel with GET_FEATURES takes ioctl-encoded commands');
    const bits = BigInt(f.featureBits ?? '0');
    let count = 0;
    for (let b = 0n; b < 64n; b++) if ((bits >> b) & 1n) count++;
    t.equal(f.features?.length, count, `one name per reported bit (${f.featureBits})`);
    t.notOk(f.features?.some((n) => n.startsWith('bit ')), 'every bit has a name');
  }
  if (linux73) {
    t.equal(f.features?.length, 21, 'Linux 7.3 reports 21 flags');
    for (const name of ['UBLK_F_PER_IO_DAEMON', 'UBLK_F_BATCH_IO', 'UBLK_F_SAFE_STOP_DEV', 'UBLK_F_SHMEM_ZC', 'UBLK_F_IO_DESC_SIZE', 'UBLK_F_UNPRIVILEGED_DEV', 'UBLK_F_UPDATE_SIZE']) {
      t.ok(f.features?.includes(name), `names ${name}`);
    }
  }
});

t.test('features prints a readable summary', async (t) => {
  if (!text) throw new Error('no result');
  t.equal(text.status, 0);
  t.match(text.stdout, /ublk:\s+available/);
  t.match(text.stdout, new RegExp(`kernel:\\s+${release().replace(/[.+]/g, '\\$&')}`));
  t.match(text.stdout, linux61 ? /command encoding:\s+legacy/ : /command encoding:\s+ioctl/);
  t.match(text.stdout, /parameter types:\s+basic discard/);
  if (linux73) t.match(text.stdout, /^ {2}UBLK_F_IO_DESC_SIZE$/m, 'one flag name per line');
  t.equal(text.stderr, '', 'nothing on stderr');
});

t.test('serve --json names the encoding and every flag the device was granted', async (t) => {
  const s = await serve(t, ['--target', 'null', '--size', '64M']);
  t.equal(s.info.encoding, linux61 ? 'legacy' : 'ioctl', `encoding ${s.info.encoding}`);
  t.equal(s.info['dataPath'], linux61 ? 'kernel' : 'auto-buf', 'the data path: the kernel copy on 6.1, automatic registration where offered');
  t.ok(s.info.flags.includes('UBLK_F_URING_CMD_COMP_IN_TASK'), 'requests are delivered as io_uring task work');
  t.notOk(s.info.flags.some((n) => n.startsWith('bit ')), `every granted flag has a name: ${s.info.flags.join(' ')}`);
  if (linux73) {
    // Linux 7.3 adds these to every device it creates.
    for (const name of ['UBLK_F_CMD_IOCTL_ENCODE', 'UBLK_F_PER_IO_DAEMON', 'UBLK_F_BUF_REG_OFF_DAEMON', 'UBLK_F_SAFE_STOP_DEV']) {
      t.ok(s.info.flags.includes(name), `granted ${name}`);
    }
  }
  t.equal((await s.stop()).code, 0);
});
