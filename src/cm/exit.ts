// A process that exits takes its connections down, as on Linux: the kernel closes the dying
// process's rdma_cm file, and ucma_close destroys every id on it (rdma_destroy_id →
// ib_destroy_cm_id → cm_destroy_id), so each peer hears a REJ, DREQ or DREP at once instead of
// finding out through its QP's retries. Here that runs from process 'exit' (the end of the
// program, process.exit(), an uncaught exception): every rdma_cm id still alive is destroyed as
// destroyId does it, then every connection an agent still has that nobody destroyed (the CM's
// users below the rdma_cm), and QP1's MADs are handed to the socket there and then (the link
// sends at the end of the tick, which never comes). All of it synchronous: no timer or promise
// runs after 'exit'. A signal that kills the process without running JS (SIGKILL; SIGTERM or
// SIGINT with no handler) cannot be covered; no signal handler is installed here, so signals
// keep their default behaviour. Registered once, with the first id or agent; it never throws
// (a failure is counted) and keeps nothing alive.

/** What the exit sweep did (for tests and diagnostics). */
export const cmExitCounters = {
  /** Times the sweep ran (once, at exit). */
  runs: 0,
  /** rdma_cm ids destroyed by it. */
  ids: 0,
  /** Comm ids an agent still had undestroyed after the ids (listens, SIDR, the CM's own users). */
  connections: 0,
  /** Failures swallowed (an exit must not crash). */
  errors: 0,
};

let idSweep: (() => void) | undefined;
let agentSweep: (() => void) | undefined;
let armed = false;

/**
 * @internal Register the rdma_cm ids' sweep or the agents' (each once; the ids go first, as
 * ucma's release comes before ib_cm's users would notice) and, the first time, the 'exit' hook.
 */
export function armCmExit(kind: 'ids' | 'agents', sweep: () => void): void {
  if (kind === 'ids') idSweep ??= sweep;
  else agentSweep ??= sweep;
  if (armed) return;
  armed = true;
  process.once('exit', runAtExit);
}

/** @internal Run `f`, counting instead of throwing what it throws. */
export function exitGuard(f: () => void): void {
  try {
    f();
  } catch {
    cmExitCounters.errors++;
  }
}

function runAtExit(): void {
  cmExitCounters.runs++;
  if (idSweep) exitGuard(idSweep);
  if (agentSweep) exitGuard(agentSweep);
}
