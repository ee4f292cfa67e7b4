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
 * Ask for an ACK twice per window so the window never drains while an ACK is on its way; once
 * per window while other QPs of the device send too, whose packets keep the link busy while
 * this one waits. Their shares of the window are small: with 16 QPs, 32 packets each, and twice
 * per share gave one ACK per 15 packets (4.6x one QP's), whose sends took the responder 3.5x
 * its system-call time; once per share took `perftest write_bw -q 16` from 0.86 and 0.78 of one
 * QP's bandwidth to 0.92 and 1.02 (bench/rxe-vs-udp.ts, alternating, 2026-12-07).
 */
export const ackEvery = (qp: RxeQp): number => {
  const w = windowPkts(qp);
  return Math.min(MAX_PKTS_PER_ACK, Math.max(4, sendersOf(qp).size > 1 ? w : w >> 1));
};
