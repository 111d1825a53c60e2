// One process serving N null devices through the library API, for the memory figures
// of the benchmark (until a daemon exists, this is how one process serves many devices).
// Prints one JSON line {"paths": [...]} once every device is live; stops them on SIGTERM.
import { parseArgs } from 'node:util';
import { createDevice, type Device } from '../lib/index.js';

const { values } = parseArgs({
  options: { devices: { type: 'string', default: '64' }, size: { type: 'string', default: String(64 << 20) } },
});
const count = Number(values.devices);
const size = Number(values.size);
const devices: Device[] = [];

async function stopAll(): Promise<void> {
  await Promise.all(devices.map((d) => d.stop()));
}

process.on('SIGTERM', () => {
  void stopAll().then(() => process.exit(0));
});

try {
  for (let i = 0; i < count; i++) devices.push(await createDevice({ target: 'null', size }));
  process.stdout.write(`${JSON.stringify({ paths: devices.map((d) => d.path) })}\n`);
} catch (err) {
  process.stderr.write(`memory-server: ${err instanceof Error ? err.message : String(err)}\n`);
  await stopAll();
  process.exit(1);
}
// Keep the event loop alive until SIGTERM.
setInterval(() => undefined, 1 << 30);
