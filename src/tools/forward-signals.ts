// What a command run by smc-run gets of the signals sent to smc-run. smc_run execs the program,
// so there it is the process that `kill`, systemd, docker stop, timeout or the terminal signal;
// here it is a child. So that each signal reaches it exactly once, the child runs in a session
// and process group of its own (spawn's detached: setsid), where nothing aimed at smc-run or
// at smc-run's process group reaches it directly (timeout, `kill -- -PGID` and a terminal's
// Ctrl-C signal the whole group), and smc-run passes on what it gets:
// - the terminal's signals (SIGINT, SIGQUIT, SIGHUP, SIGWINCH) to the child's process group,
//   as a terminal sends them to its foreground group;
// - SIGTERM and SIGUSR2 to the child itself, as `kill PID` of the exec'd program would;
// - Ctrl-Z: SIGTSTP to the child's group, then smc-run stops itself (SIGSTOP), so the shell
//   sees the job stopped; its SIGCONT (fg, bg) is passed on the same way.
// smc-run waits for the child's exit and exits with its status. Not passed on: SIGUSR1 (Node's
// own, for its inspector) and SIGKILL/SIGSTOP, which cannot be caught. The child has no
// controlling terminal (it reads and writes the terminal through the descriptors it inherits;
// opening /dev/tty fails).

import type { ChildProcess } from 'node:child_process';

const TO_GROUP: NodeJS.Signals[] = ['SIGINT', 'SIGQUIT', 'SIGHUP', 'SIGWINCH', 'SIGCONT'];
const TO_PROGRAM: NodeJS.Signals[] = ['SIGTERM', 'SIGUSR2'];

/** The spawn option that puts the child in a session of its own (what forwardSignals relies on). */
export const OWN_SESSION = { detached: true } as const;

/** Pass signals to `child` (spawned with OWN_SESSION) until `stop()`; smc-run does not die of them meanwhile. */
export function forwardSignals(child: ChildProcess): () => void {
  const pid = child.pid;
  const send = (target: number, sig: NodeJS.Signals) => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    try { process.kill(target, sig); } catch { /* gone meanwhile */ }
  };
  const handlers = new Map<NodeJS.Signals, () => void>();
  if (pid !== undefined) {
    for (const s of TO_GROUP) handlers.set(s, () => send(-pid, s));
    for (const s of TO_PROGRAM) handlers.set(s, () => send(pid, s));
    handlers.set('SIGTSTP', () => {
      send(-pid, 'SIGTSTP');
      process.kill(process.pid, 'SIGSTOP');
    });
  }
  for (const [s, h] of handlers) process.on(s, h);
  return () => { for (const [s, h] of handlers) process.off(s, h); };
}
