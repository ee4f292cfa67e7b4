// Run the softrdma command as separate processes and wait on what they print, with bounds:
// a test fails with the process output instead of hanging.

import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';

export const CLI = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));

export interface Proc {
  child: ChildProcess;
  stdout: string;
  stderr: string;
  /** Resolves with the first match of `re` in stdout+stderr, or rejects after `ms` or on exit. */
  waitFor(re: RegExp, ms?: number): Promise<RegExpMatchArray>;
  /**
   * Resolves with the first value `test` returns other than undefined, tried on everything
   * printed so far and again after each chunk; rejects after `ms` or on exit.
   */
  waitUntil<T>(test: (stdout: string, stderr: string) => T | undefined, what: string, ms?: number): Promise<T>;
  /** Resolves with the exit code; kills the process and rejects after `ms`. */
  exit(ms?: number): Promise<number>;
}

export function run(args: string[], opts: { env?: NodeJS.ProcessEnv; netns?: string } = {}): Proc {
  return runNode(CLI, args, opts);
}

/**
 * Any script of ours as a process; execArgv e.g. ['--import', url]; stdin 'pipe' to keep it
 * open; netns runs it inside that network namespace (ip netns exec, needs root).
 */
export function runNode(script: string, args: string[], opts: { env?: NodeJS.ProcessEnv; execArgv?: string[]; stdin?: 'pipe' | 'ignore'; netns?: string } = {}): Proc {
  const argv = [...(opts.execArgv ?? []), script, ...args];
  const [cmd, cmdArgs] = opts.netns ? ['ip', ['netns', 'exec', opts.netns, process.execPath, ...argv]] : [process.execPath, argv];
  const child = spawn(cmd, cmdArgs, { stdio: [opts.stdin ?? 'ignore', 'pipe', 'pipe'], env: { ...process.env, ...opts.env } });
  const closed = new Promise<number>((resolve) => child.once('close', (code, sig) => resolve(code ?? (sig ? 128 : 1))));
  const p: Proc = {
    child, stdout: '', stderr: '',
    waitFor(re, ms = 20_000) {
      return p.waitUntil((out, err) => (out + err).match(re) ?? undefined, String(re), ms);
    },
    waitUntil(test, what, ms = 20_000) {
      return new Promise((resolve, reject) => {
        const check = () => {
          const v = test(p.stdout, p.stderr);
          if (v !== undefined) { done(); resolve(v); }
        };
        const onExit = () => { check(); done(); reject(new Error(`process exited before printing ${what}\n${p.stdout}${p.stderr}`)); };
        const timer = setTimeout(() => { done(); reject(new Error(`no ${what} within ${ms} ms\n${p.stdout}${p.stderr}`)); }, ms);
        const done = () => { clearTimeout(timer); child.stdout!.off('data', check); child.stderr!.off('data', check); child.off('exit', onExit); };
        child.stdout!.on('data', check);
        child.stderr!.on('data', check);
        child.once('exit', onExit);
        check();
      });
    },
    exit(ms = 60_000) {
      // 'close' (not 'exit'): by then everything the process printed has been read.
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<number>((_, reject) => {
        timer = setTimeout(() => { child.kill('SIGKILL'); reject(new Error(`process still running after ${ms} ms\n${p.stdout}${p.stderr}`)); }, ms);
      });
      return Promise.race([closed, timeout]).finally(() => clearTimeout(timer));
    },
  };
  child.stdout!.setEncoding('utf8').on('data', (d: string) => { p.stdout += d; });
  child.stderr!.setEncoding('utf8').on('data', (d: string) => { p.stderr += d; });
  return p;
}

export function jsonLines(text: string): Record<string, unknown>[] {
  return text.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>);
}
