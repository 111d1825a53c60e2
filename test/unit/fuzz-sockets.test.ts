// The socket fuzzer (test/helpers/fuzz.ts) on the host, against a daemon in this process
// with a fake device factory: a short run of fixed seeds (others: UBLOOP_FUZZ_SEEDS=1,2,3).
// The bugs the fuzzer found have their own regression tests (protocol.test.ts); the full
// runs, with real ublk devices and the CUSE ioctls, are test/e2e/fuzz.test.ts.
import t from 'tap';
import { mkdtempSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Daemon } from '../../lib/daemon/daemon.js';
import type { BoundDevice } from '../../lib/instance/index.js';
import { fuzzSockets } from '../helpers/fuzz.js';

const fdCount = () => readdirSync('/proc/self/fd').length;

for (const seed of (process.env['UBLOOP_FUZZ_SEEDS'] ?? '13,1').split(',').map(Number)) {
  t.test(`seed ${seed}: every input answered, nothing left behind`, { skip: process.getuid?.() !== 0 ? 'the daemon runs as root only' : false }, async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'ubloop-fuzz-'));
    let live = 0;
    const daemon = new Daemon({
      socket: join(dir, 'admin.sock'),
      state: join(dir, 'state.json'),
      root: join(dir, 'run'),
      autoclearGraceMs: 100,
      sweepMs: 50,
      caps: { maxDevices: 32 },
      factory: async (): Promise<BoundDevice> => {
        const id = live++;
        return {
          ublkId: id, path: `/dev/ublkb${id}`, major: 259, minor: id, size: 1 << 20, isBusy: () => false,
          failure: () => null, stop: async () => {}, canStopIfUnused: false, resize: async () => 1 << 20,
        };
      },
    });
    const quiet = process.stderr.write.bind(process.stderr);
    process.stderr.write = (() => true) as typeof process.stderr.write;
    t.teardown(() => {
      process.stderr.write = quiet;
    });
    await daemon.start();
    const before = fdCount();
    await daemon.manager.create({ name: 'fz-base' });
    const report = await fuzzSockets({
      seed,
      inputs: 2000,
      dir,
      replyBoundMs: 5000,
      bindImageChance: 0,
      targets: [{ path: join(dir, 'admin.sock') }, { path: join(dir, 'run', 'instances', 'fz-base', 'control.sock'), instance: 'fz-base' }],
    });
    t.same(report.failures, [], 'one well-formed reply per line, in time');
    t.equal(report.replies, report.lines);
    for (const inst of daemon.manager.instances()) await daemon.manager.remove(inst.name, true);
    let fds = fdCount();
    for (let i = 0; i < 50 && fds !== before; i++) {
      await new Promise((r) => setTimeout(r, 20));
      fds = fdCount();
    }
    t.equal(fds, before, 'no descriptor left open (received ones closed, connections gone)');
    await daemon.stop();
  });
}
