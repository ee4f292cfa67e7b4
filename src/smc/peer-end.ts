// How the peer's end reaches the socket, the same for SMC-D and SMC-R: the orderly end once
// the ring is read, or the abort once, held for a reader stopped by backpressure.

import { CONN_ABORT, CONN_CLOSED, CONN_DONE_WRITING } from './cdc.js';

export type PeerEndNews = 'abort' | 'done' | undefined;

export class PeerEnd {
  private doneReported = false;
  private abortReported = false;
  /** The abort came while the reader was stopped: what it has yet to read comes first, then the end. */
  private abortHeld = false;
  /** Why the peer aborted, where it did not say so itself (its process died, its TCP was reset). */
  cause: string | undefined;

  /** The socket was told of an abort another way (the peer died with data of ours unread). */
  abortTold(): void { this.abortReported = true; }

  /** An abort the socket has not heard of yet (held for a stopped reader, or not yet looked at). */
  abortUntold(connFlags: number): boolean {
    return (connFlags & CONN_ABORT) !== 0 && !this.abortReported;
  }

  /**
   * What to tell the socket now, given the peer's connection flags, what is unread, whether the
   * reader is stopped and whether a write of ours waits for room.
   *
   * A reader stopped by backpressure (or by its onread callback) hears of an abort only when it
   * reads again, as node:net's, whose stopped handle reads the RST only then: what it has not
   * read comes first, and then the end ('done', not ECONNRESET), as Linux's smc_rx_recvmsg copies
   * what the RMB holds and returns 0 once a close or abort was received, before it looks at
   * sk_err (docs/smc.md, Closing). A reader that is reading gets the abort at once, after what
   * the ring held, as node:net's does. A write waiting for room is told at once, reading or
   * not: the peer will never make room (Linux: smc_tx_wait sees the abort).
   */
  next(connFlags: number, readable: number, paused: boolean, writerWaits: boolean): PeerEndNews {
    if (this.abortUntold(connFlags)) {
      if (this.hold(paused, writerWaits)) return undefined;
      this.abortReported = true;
      if (!this.abortHeld) return 'abort';
      this.doneReported = true;
      return 'done';
    }
    if ((connFlags & (CONN_DONE_WRITING | CONN_CLOSED)) && readable === 0 && !this.doneReported) {
      this.doneReported = true;
      return 'done';
    }
    return undefined;
  }

  private hold(paused: boolean, writerWaits: boolean): boolean {
    if (this.abortHeld) return paused;
    if (!paused || writerWaits) return false;
    this.abortHeld = true;
    return true;
  }
}
