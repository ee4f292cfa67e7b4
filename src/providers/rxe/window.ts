// The requester's window of unacknowledged PSNs. Linux rxe_req.c stops sending when the next
// PSN is more than RXE_MAX_UNACKED_PSNS (128) past the completer's, and asks for an ACK at
// least every RXE_MAX_PKT_PER_ACK packets. softrdma sizes the window from the UDP receive
// buffer and shrinks it on loss (Reno-style AIMD): a user-space peer can be descheduled
// for milliseconds, and go-back-N resends the whole window, so on a lossy path a fixed
// large window never drains.

import type { RxeQp } from './qp.js';

/** The largest packet window (IBTA allows 2^23 outstanding PSNs; rxe uses 128). */
export const MAX_CWND = 1024;
/** Ask for an ACK at least this often (rxe's RXE_MAX_PKT_PER_ACK). */
export const MAX_PKTS_PER_ACK = 64;
/** The smallest window, also the one a timeout restarts from. */
export const MIN_WINDOW = 8;

/**
 * The window in packets. A window that covers bandwidth x stall keeps the pipe full (rxe's
 * fixed 128 PSNs would not). It is bounded by what the peer's UDP receive buffer holds
 * (RxeLink.windowBytes, sized from our own on the assumption that the peer is configured
 * alike), and after a loss by cwnd.
 */
export const windowPkts = (qp: RxeQp): number =>
  Math.max(MIN_WINDOW, Math.min(Math.floor(qp.req.cwnd), Math.floor(qp.device.link.windowBytes / Math.max(1, sendersOf(qp).size) / qp.mtu)));

/**
 * The RC QPs of each device with packets in flight. They share the receive buffer the window
 * is sized from: sixteen QPs each sending a full buffer's worth overflowed the peer's socket,
 * and go-back-N then resent whole windows (write_bw -q 16 ran at ~0.6x one QP). The device's
 * QPs may talk to different peers; sharing is then conservative, never too much.
 */
const senders = new WeakMap<object, Set<RxeQp>>();

function sendersOf(qp: RxeQp): Set<RxeQp> {
  let s = senders.get(qp.device);
  if (!s) senders.set(qp.device, (s = new Set()));
  return s;
}

/** The requester is sending a packet of qp's. */
export function noteSending(qp: RxeQp): void {
  sendersOf(qp).add(qp);
}

/** Everything qp sent is acknowledged, or the QP stopped (error, destroy). */
export function noteIdle(qp: RxeQp): void {
  senders.get(qp.device)?.delete(qp);
}

/** Reno-style: slow start below ssthresh, then one packet per window of ACKed packets. */
export function windowOpen(qp: RxeQp, ackedPkts: number): void {
  const r = qp.req;
  r.cwnd = Math.min(MAX_CWND, r.cwnd < r.ssthresh ? r.cwnd + ackedPkts : r.cwnd + ackedPkts / r.cwnd);
}

/** A loss (sequence NAK, timeout or implicit NAK): halve the window. */
export function windowCut(qp: RxeQp, timeout: boolean): void {
  const r = qp.req;
  r.ssthresh = Math.max(MIN_WINDOW, Math.min(r.cwnd, windowPkts(qp)) / 2);
  r.cwnd = timeout ? MIN_WINDOW : r.ssthresh;
}

/**
 * Ask for an ACK twice per window so the window never drains while an ACK is on its way, also
 * where several QPs share the window (16 QPs: every 16 of their 32 packets). Asking less often
 * there was tried: once per share made the ask the last packet before the window filled, with
 * nothing behind it to show the responder a gap when it was lost, so the QP waited for its
 * retransmit timer (test/rxe/ack-loss-many-qps.test.ts); at three quarters of the share it kept
 * the recovery but measured no faster with -q 16 (bench/RESULTS.md, 2026-12-07).
 */
export const ackEvery = (qp: RxeQp): number => Math.min(MAX_PKTS_PER_ACK, Math.max(4, windowPkts(qp) >> 1));
