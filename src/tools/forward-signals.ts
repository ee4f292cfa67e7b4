// What a command run by smc-run gets of the signals sent to smc-run. smc_run execs the program,
// so there it is the process that `kill`, systemd, docker stop or timeout signal; here it is a
// child, so smc-run passes the signals on and stays until the child has exited (its status is
// the child's). A terminal's Ctrl-C, Ctrl-\ and hangup already reach the child, which is in
// the terminal's foreground process group with smc-run: with a terminal on stdin those are not
// passed on a second time.

import type { ChildProcess } from 'node:child_process';
import tty from 'node:tty';

const ALWAYS: NodeJS.Signals[] = ['SIGTERM', 'SIGUSR2'];
const FROM_TERMINAL: NodeJS.Signals[] = ['SIGINT', 'SIGQUIT', 'SIGHUP'];

/** Pass signals to `child` until `stop()`; smc-run does not die of them meanwhile. */
export function forwardSignals(child: ChildProcess): () => void {
  const terminal = tty.isatty(0);
  const forward = (sig: NodeJS.Signals) => { if (child.exitCode === null && child.signalCode === null) child.kill(sig); };
  const swallow = () => {};
  const handlers = new Map<NodeJS.Signals, (sig: NodeJS.Signals) => void>();
  for (const s of ALWAYS) handlers.set(s, forward);
  for (const s of FROM_TERMINAL) handlers.set(s, terminal ? swallow : forward);
  for (const [s, h] of handlers) process.on(s, h);
  return () => { for (const [s, h] of handlers) process.off(s, h); };
}
