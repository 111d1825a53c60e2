// The daemon logs one line per event to stderr (journald adds the time under systemd).
export function log(message: string): void {
  process.stderr.write(`ubloop daemon: ${message}\n`);
}
