// rxe work that waits for the next turn of the event loop (setImmediate): a requester's
// continuation after its packet budget (requester.ts). A poller spinning in place would hold
// it back for as long as it spins, so the link says a spin is not worth it while any is waiting
// (RxeLink.canSpin): the poller yields, the requester goes on, and the poller spins again.
// (Deferred ACKs are not counted: a busy poll sends them, responder.ts sendDeferredAcksNow.)

/** Callbacks scheduled through deferToTurn that have not run yet. */
export const turnWork = { pending: 0 };

/** setImmediate(fn), counted in turnWork while it waits. */
export function deferToTurn(fn: () => void): void {
  turnWork.pending++;
  setImmediate(() => {
    turnWork.pending--;
    fn();
  });
}
