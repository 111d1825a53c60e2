// Optional profiling of a fio run with `perf record` (software cpu-clock samples, the
// only event a TCG guest offers), system-wide so that fio, the server and the kernel's
// own workers all show; the report is sorted by command and symbol.
import { execFile, spawn } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import { promisify } from 'node:util';

const run = promisify(execFile);

export interface PerfSession {
  /** Stops recording and writes the text report; returns its path. */
  stop(): Promise<string>;
}

export function startPerf(dataFile: string, reportFile: string): PerfSession {
  const child = spawn('perf', ['record', '-q', '-a', '-g', '-F', '497', '-e', 'cpu-clock', '-o', dataFile], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const exited = new Promise<number | null>((resolve) => {
    child.on('exit', resolve);
    child.on('error', () => resolve(-1));
  });
  return {
    async stop() {
      child.kill('SIGINT');
      const code = await exited;
      // perf record may end with 255 on SIGINT after a harmless warning (e.g. no BPF
      // events to synthesize); the data file tells whether it recorded.
      if (code !== 0 && code !== null && !existsSync(dataFile)) throw new Error(`perf record failed (${code}): ${stderr.trim()}`);
      const flat = await run('perf', ['report', '-i', dataFile, '--stdio', '--no-children', '-g', 'none', '--sort', 'comm,dso,sym', '--percent-limit', '0.3'], {
        maxBuffer: 64 << 20,
      });
      const graph = await run('perf', ['report', '-i', dataFile, '--stdio', '--no-children', '-G', '--sort', 'comm,sym', '--percent-limit', '2'], {
        maxBuffer: 64 << 20,
      });
      writeFileSync(reportFile, `${flat.stdout}\n\n# call graphs (callers), entries above 2%\n\n${graph.stdout}`);
      return reportFile;
    },
  };
}
