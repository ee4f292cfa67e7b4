// tshark as a capture process for tests: start it, wait until it really captures, and wait
// for it to stop by itself (-c N): dumpcap drops what it has not read yet when interrupted,
// so a test that needs every packet stops the capture by count, not by signal.

import { execFileSync, spawn, type ChildProcess } from 'node:child_process';

/** Why a capture test cannot run here, or undefined when it can. */
export function captureUnavailable(): string | undefined {
  try { execFileSync('tshark', ['-v'], { stdio: 'ignore' }); } catch { return 'tshark is not installed'; }
  if (process.getuid?.() !== 0) return 'capturing on lo needs root';
  return undefined;
}

export interface Capture {
  /** Resolves once tshark has seen its -c count of packets and exited. */
  finished(ms?: number): Promise<void>;
  kill(): void;
}

/** tshark -i lo -f filter -c count -w file [...extra], resolved once it is capturing. */
export async function startCapture(filter: string, count: number, file: string, extra: string[] = []): Promise<Capture> {
  const cap: ChildProcess = spawn('tshark', ['-i', 'lo', '-f', filter, '-c', String(count), ...extra, '-w', file], { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  const closed = new Promise<void>((resolve) => cap.once('close', () => resolve()));
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`tshark did not start: ${err}`)), 30_000);
    let grace: NodeJS.Timeout | undefined;
    const ready = () => { clearTimeout(timer); clearTimeout(grace); resolve(); };
    cap.stderr!.setEncoding('utf8').on('data', (d: string) => {
      err += d;
      // "Capturing on" comes before dumpcap really captures; tshark 4 reports that later as
      // "Capture started". Older ones do not: give them a moment.
      if (/Capture started/.test(err)) ready();
      else if (/Capturing on/.test(err)) grace ??= setTimeout(ready, 2000);
    });
    cap.once('exit', () => { clearTimeout(timer); clearTimeout(grace); reject(new Error(`tshark exited: ${err}`)); });
  });
  return {
    finished: (ms = 30_000) => new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => { cap.kill('SIGKILL'); reject(new Error(`tshark saw fewer than ${count} packets: ${err}`)); }, ms);
      void closed.then(() => { clearTimeout(timer); resolve(); });
    }),
    kill: () => { if (cap.exitCode === null) cap.kill('SIGKILL'); },
  };
}

/** tshark -r file -Y filter -T fields -e ...: one array of field values per matching frame. */
export function readFields(file: string, filter: string, fields: string[], extra: string[] = []): string[][] {
  const out = execFileSync('tshark', ['-r', file, ...extra, '-Y', filter, '-T', 'fields', ...fields.flatMap((f) => ['-e', f])], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
  return out.split('\n').filter((l) => l.length > 0).map((l) => l.split('\t'));
}
