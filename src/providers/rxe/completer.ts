// The completer (Linux rxe_comp.c): handles what comes back to a requester (ACK, NAK, RNR
// NAK, read responses, atomic acks), completes send WQEs in order, and drives retries:
// go-back-N on a sequence NAK or an implicit NAK, the retransmit timer (4.096 us x
// 2^timeout) and RNR waits.

import { QpState, WcStatus, WrOpcode } from '../../abi/enums.js';
import { aeth, atmack, type Packet } from './wire/headers.js';
import { AethSyndrome, NakCode } from './wire/headers.js';
import { Op, OpCode } from './wire/opcodes.js';
import { psnAdd, psnDiff } from './wire/psn.js';
import { WqeState, type RxeQp, type SendWqe } from './qp.js';
import { scatter, sgesLive } from './mem.js';
import { noteIdle, windowCut, windowOpen } from './window.js';
import { CompState } from './states.js';
import { traceComp } from './debug.js';

/** IBA 9.7.5.2.8: RNR NAK timer field to milliseconds. */
export const RNR_TIMER_MS = [
  655.36, 0.01, 0.02, 0.03, 0.04, 0.06, 0.08, 0.12, 0.16, 0.24, 0.32, 0.48, 0.64, 0.96, 1.28, 1.92,
  2.56, 3.84, 5.12, 7.68, 10.24, 15.36, 20.48, 30.72, 40.96, 61.44, 81.92, 122.88, 163.84, 245.76, 327.68, 491.52,
];

/** Local ACK timeout: 4.096 us x 2^timeout; 0 means no timeout (IBA). Timers here have 1 ms grain. */
export function rtoMs(timeout: number): number {
  return timeout === 0 ? Infinity : Math.max(1, 4.096e-3 * 2 ** timeout);
}

const INFINITE_RETRIES = 7;

export function stopTimers(qp: RxeQp): void {
  if (qp.comp.timer) clearTimeout(qp.comp.timer);
  if (qp.comp.timeoutCheck) clearImmediate(qp.comp.timeoutCheck);
  qp.comp.timeoutCheck = undefined;
  if (qp.comp.rnrTimer) clearTimeout(qp.comp.rnrTimer);
  qp.comp.timer = qp.comp.rnrTimer = undefined;
  qp.req.paused = false;
}

/**
 * Start the wait for an acknowledgement, when a request packet goes out with none in flight
 * before it (`first`: its PSN is the oldest unacknowledged one; a timer left running from
 * earlier work then starts over), or with the timer not running.
 */
export function armRetransmit(qp: RxeQp, first = false): void {
  // An expired timer's second look (timeoutCheck) is a running timer too: a packet sent
  // meanwhile must not start the wait over, or a loss would never time out while sends go on.
  if ((qp.comp.timer || qp.comp.timeoutCheck) && !first) return;
  const rto = rtoMs(qp.attr.timeout);
  if (!Number.isFinite(rto)) return;
  qp.comp.lastProgress = performance.now();
  qp.comp.timer ??= retransmitTimer(qp, rto);
  // The packet leaves in the link's flush microtask, after the code that posted it has run to
  // its end: the wait for its ACK starts then, not while the application still computes.
  if (!qp.comp.stampQueued) {
    qp.comp.stampQueued = true;
    queueMicrotask(() => {
      qp.comp.stampQueued = false;
      qp.comp.lastProgress = Math.max(qp.comp.lastProgress, performance.now());
    });
  }
}

/**
 * Timeouts without an acknowledgement after which the retransmit timer of an unref()'d device
 * stops keeping the process alive: the retries a finite retry_cnt allows. Work in flight keeps
 * a process alive (a program that posts and exits would lose it, where a kernel would go on
 * sending), but retry_cnt 7 never gives up (rxe's: `if (qp->comp.retry_cnt != 7)
 * qp->comp.retry_cnt--`), and SMC-R's links use 7: a peer whose process died would hold ours
 * until the link's keepalive failed (30 s). The retries go on; only the hold ends.
 */
const KEEPALIVE_TIMEOUTS = 7;

function retransmitTimer(qp: RxeQp, ms: number): NodeJS.Timeout {
  const t = setTimeout(() => onTimer(qp), ms);
  if (qp.comp.idleTimeouts >= KEEPALIVE_TIMEOUTS && !qp.device.link.keepAlive) t.unref();
  return t;
}

function onTimer(qp: RxeQp): void {
  qp.comp.timer = undefined;
  expire(qp, false);
}

/** Whatever is in flight and unacknowledged for the timeout: nothing to time out otherwise. */
function timing(qp: RxeQp): boolean {
  if (qp.destroyed || (qp.state !== QpState.RTS && qp.state !== QpState.SQD)) return false;
  const head = firstOutstanding(qp);
  if (!head || head.state !== WqeState.PENDING && head.nextPkt === 0) return false; // nothing in flight
  // Waiting out an RNR NAK: the RNR timer resends, which arms this timer again.
  return !qp.req.paused;
}

function expire(qp: RxeQp, deferred: boolean): void {
  if (!timing(qp)) return;
  const rto = rtoMs(qp.attr.timeout);
  let idle = performance.now() - qp.comp.lastProgress;
  if (idle >= rto) {
    // An ACK may be waiting in the socket (the event loop was held up past the timeout): read
    // it before counting a timeout; without a synchronous read, look again after the poll phase.
    if (!qp.device.link.readWaiting() && !deferred) {
      qp.comp.timeoutCheck = setImmediate(() => {
        qp.comp.timeoutCheck = undefined;
        if (!qp.comp.timer) expire(qp, true);
      });
      return;
    }
    // What was read may have settled it: everything acknowledged, or the timer armed afresh.
    if (qp.comp.timer || !timing(qp)) return;
    idle = performance.now() - qp.comp.lastProgress;
  }
  if (idle < rto) {
    qp.comp.timer = retransmitTimer(qp, Math.max(1, rto - idle));
    return;
  }
  qp.counters.timeouts++;
  qp.comp.idleTimeouts++;
  // A timeout retries even while a retry is under way (Linux: timeout_retry).
  if (retryLoss(qp, true)) armRetransmit(qp);
}

/**
 * Go back for a loss (Linux rxe_comp.c COMPST_ERROR_RETRY): spend a retry and resend from the
 * completer's PSN, or fail the oldest outstanding WQE with RETRY_EXC_ERR once retry_cnt is
 * spent. One loss, one retry: a sequence NAK or an implicit NAK that comes while a retry is
 * under way (nothing acknowledged since it started: a duplicated NAK, the late NAK of a loss
 * the timer retried, every ACK past a read whose responses are still missing) starts nothing
 * (started_retry && !timeout_retry); only the retransmit timer goes back again. Returns
 * whether it went back.
 */
function retryLoss(qp: RxeQp, byTimer: boolean): boolean {
  if (qp.comp.startedRetry && !byTimer) return false;
  if (!consumeRetry(qp, 'retry')) {
    traceComp(qp.qpn, CompState.ERROR, qp.comp.psn);
    qp.device.counters.retry_exceeded_err++;
    const head = firstOutstanding(qp);
    if (head) qp.failSend(head, WcStatus.RETRY_EXC_ERR);
    return false;
  }
  traceComp(qp.qpn, CompState.ERROR_RETRY, qp.comp.psn);
  qp.comp.startedRetry = true;
  qp.device.counters.completer_retry_err++;
  windowCut(qp, byTimer);
  goBackN(qp);
  return true;
}

function consumeRetry(qp: RxeQp, which: 'retry' | 'rnr'): boolean {
  const key = which === 'retry' ? 'retryCnt' : 'rnrRetry';
  if (qp.comp[key] === INFINITE_RETRIES) return true;
  if (qp.comp[key] === 0) return false;
  qp.comp[key]--;
  return true;
}

function firstOutstanding(qp: RxeQp): SendWqe | undefined {
  for (let i = 0; i < qp.sq.length; i++) {
    const w = qp.sq.at(i)!;
    if (w.state !== WqeState.DONE && !w.local) return w.state === WqeState.POSTED ? undefined : w;
  }
  return undefined;
}

/**
 * Resend everything not yet acknowledged, from qp.comp.psn on, as Linux's req_retry does:
 * WQEs keep their PSNs, so packets come out identical.
 */
export function goBackN(qp: RxeQp): void {
  const psn = qp.comp.psn;
  let first = -1;
  for (let i = 0; i < qp.sq.length; i++) {
    const w = qp.sq.at(i)!;
    if (w.state === WqeState.DONE || w.local) continue;
    if (w.state === WqeState.POSTED) break;
    if (first < 0) {
      first = i;
      const k = psnDiff(psn, w.firstPsn);
      w.nextPkt = Math.min(Math.max(0, k), w.npkts - 1);
    } else {
      w.nextPkt = 0;
    }
    w.state = WqeState.SENDING;
  }
  if (first < 0) return;
  qp.req.index = first;
  // What asked before may go again without asking (the count restarts); a short message sent
  // whole past the window is sent again under the window.
  qp.req.askPsn = qp.req.wholeTo = -1;
  qp.counters.retransmits++;
  qp.runRequester();
}

function progress(qp: RxeQp, nextPsn: number): void {
  if (psnDiff(nextPsn, qp.comp.psn) > 0) {
    windowOpen(qp, psnDiff(nextPsn, qp.comp.psn));
    qp.comp.psn = nextPsn;
    if (psnDiff(qp.req.psn, nextPsn) <= 0) noteIdle(qp);
    qp.comp.retryCnt = qp.attr.retryCnt;
    qp.comp.rnrRetry = qp.attr.rnrRetry;
    qp.comp.startedRetry = false;
    qp.comp.idleTimeouts = 0;
    qp.comp.lastProgress = performance.now();
  }
}

/**
 * A response with PSN `psn` came back: an ACK (`acks`: everything up to and including psn was
 * received), or a NAK, RNR NAK or read response / atomic ACK (everything before psn was).
 * Completes sends and writes before it (Linux rxe_comp.c check_psn: COMPST_COMP_WQE for a WQE
 * whose last_psn the response is past, COMPST_COMP_ACK for the one it acknowledges). A read or
 * atomic the response is past (psn beyond its last_psn) and still unanswered means its
 * responses were lost (an implicit NAK, check_psn's COMPST_ERROR_RETRY): go back. One the
 * response is not past stops the walk: everything before it is acknowledged, nothing of it.
 * Returns whether the response was such an implicit NAK (retried for, or not if a retry is
 * under way): the caller must not start another retry for the same loss.
 */
function acked(qp: RxeQp, psn: number, acks: boolean): boolean {
  const through = acks ? psn : psnAdd(psn, -1);
  for (let i = 0; i < qp.sq.length; i++) {
    const w = qp.sq.at(i)!;
    if (w.state === WqeState.DONE || w.local) continue;
    if (w.state === WqeState.POSTED) break;
    if (psnDiff(w.firstPsn, through) > 0) break;
    if (w.rdAtomic) {
      if (psnDiff(psn, w.lastPsn) <= 0) {
        // Not past it (Linux: COMPST_DONE, the response is dropped at this WQE).
        progress(qp, w.firstPsn);
        qp.retire();
        return false;
      }
      progress(qp, w.firstPsn); // everything before it is acknowledged
      qp.retire();
      retryLoss(qp, false);
      return true;
    }
    if (psnDiff(w.lastPsn, through) > 0) break; // partly acknowledged
    w.state = WqeState.DONE;
  }
  progress(qp, psnAdd(through, 1));
  qp.retire();
  return false;
}

function nakStatus(code: number): number {
  switch (code) {
    case NakCode.INVALID_REQUEST: return WcStatus.REM_INV_REQ_ERR;
    case NakCode.REMOTE_ACCESS_ERROR: return WcStatus.REM_ACCESS_ERR;
    // Any other code (invalid RD request, reserved ones) too: Linux rxe_comp.c check_ack's default.
    default: return WcStatus.REM_OP_ERR;
  }
}

function wqeAt(qp: RxeQp, psn: number): SendWqe | undefined {
  for (let i = 0; i < qp.sq.length; i++) {
    const w = qp.sq.at(i)!;
    if (w.state === WqeState.DONE || w.local || w.state === WqeState.POSTED) continue;
    if (psnDiff(psn, w.firstPsn) >= 0 && psnDiff(psn, w.lastPsn) <= 0) return w;
  }
  return undefined;
}

export function onResponse(qp: RxeQp, pkt: Packet): void {
  const state = qp.state;
  if (state !== QpState.RTS && state !== QpState.SQD && state !== QpState.SQE) {
    traceComp(qp.qpn, CompState.EXIT, pkt.psn);
    qp.device.counters.qp_state_drops++;
    return;
  }
  const psn = pkt.psn;
  // A response for a PSN never sent is bogus: beyond the highest PSN that left (a message the
  // window holds back has its PSNs reserved, not sent: an ACK for them must not complete it).
  // (Both bounds: half the PSN space beyond the last sent one reads as behind it.)
  if (psnDiff(psn, qp.req.psn) >= 0 || psnDiff(psn, qp.req.sentTo) > 0) {
    dropped(qp, psn);
    qp.device.counters.unexpected_response_drops++;
    return;
  }
  if (pkt.opcode === OpCode.RC_ACKNOWLEDGE) {
    const syn = aeth.syndrome(pkt);
    const type = syn & AethSyndrome.TYPE_MASK;
    qp.counters.acks_rcvd++;
    traceComp(qp.qpn, CompState.CHECK_ACK, psn);
    if (type === AethSyndrome.ACK) {
      if (psnDiff(psn, qp.comp.psn) >= 0) {
        traceComp(qp.qpn, CompState.COMP_ACK, psn);
        acked(qp, psn, true);
      } else dropped(qp, psn); // a stale or duplicate ACK
    } else if (type === AethSyndrome.RNR_NAK) {
      qp.counters.rnr_naks_rcvd++;
      qp.device.counters.rcvd_rnr_err++;
      if (psnDiff(psn, qp.comp.psn) < 0) return dropped(qp, psn); // stale
      // An unanswered read or atomic before the NAK's PSN makes this an implicit NAK: acked()
      // has gone back from it already, the RNR'd message included, and that one retry is all
      // (Linux rxe_comp.c check_psn retries before it looks at the RNR NAK). Only the messages
      // before the RNR'd one are acknowledged: the RNR retry resends that one from its start
      // (rnr_nak_timer → req_retry from comp.psn, which an RNR NAK leaves where it was).
      const w = wqeAt(qp, psn);
      if (acked(qp, w ? w.firstPsn : psn, false)) { qp.runRequester(); return; }
      if (!w) return;
      if (!consumeRetry(qp, 'rnr')) {
        traceComp(qp.qpn, CompState.ERROR, psn);
        qp.device.counters.retry_rnr_exceeded_err++;
        qp.failSend(w, WcStatus.RNR_RETRY_EXC_ERR);
        return;
      }
      traceComp(qp.qpn, CompState.RNR_RETRY, psn);
      qp.req.paused = true;
      if (qp.comp.rnrTimer) clearTimeout(qp.comp.rnrTimer);
      qp.comp.rnrTimer = setTimeout(() => {
        qp.comp.rnrTimer = undefined;
        qp.req.paused = false;
        qp.comp.lastProgress = performance.now();
        if (qp.state !== QpState.RTS && qp.state !== QpState.SQD) return;
        goBackN(qp); // SQD resends a started WQE too (rnr_nak_timer, req_retry)
        // Linux rnr_nak_timer always runs the requester: the RNR'd WQE may have completed
        // meanwhile (a reordered ACK), leaving goBackN nothing to resend, while WQEs posted
        // during the wait are still queued behind the pause.
        qp.runRequester();
      }, RNR_TIMER_MS[syn & 0x1f]!);
    } else if (type === AethSyndrome.NAK) {
      const code = syn & 0x1f;
      if (psnDiff(psn, qp.comp.psn) < 0) return dropped(qp, psn); // stale
      if (code === NakCode.PSN_SEQ_ERROR) {
        qp.counters.seq_naks_rcvd++;
        qp.device.counters.rcvd_seq_err++;
        // What came before the NAK's PSN is acknowledged. A read or atomic before it that is
        // still unanswered makes this an implicit NAK: acked() has dealt with that loss, from
        // the same PSN on. One loss, one retry.
        if (acked(qp, psn, false)) return;
        retryLoss(qp, false);
        return;
      }
      traceComp(qp.qpn, CompState.ERROR, psn);
      // What came before the NAK'd message is acknowledged; the NAK's PSN may lie inside it (a
      // responder NAKs a read that failed part way at the response it could not send), which
      // must not count as an unanswered read to go back for: it fails.
      const w = wqeAt(qp, psn);
      acked(qp, w ? w.firstPsn : psn, false);
      if (w) qp.failSend(w, nakStatus(code));
    } else {
      dropped(qp, psn);
      qp.device.counters.unexpected_response_drops++;
    }
    qp.runRequester();
    return;
  }

  // RDMA READ responses and atomic acknowledgements answer the oldest outstanding read/atomic.
  let implicitAck = false;
  if (psnDiff(psn, qp.comp.psn) > 0) {
    // A response past a SEND or WRITE still waiting for its ACK (with AckReq coalescing, one
    // posted with a READ or atomic left without asking) acknowledges it: Linux check_psn
    // completes such a WQE (COMPST_COMP_WQE) and goes on with the response. A read or atomic
    // before the response's that is still unanswered is an implicit NAK instead.
    const w = wqeAt(qp, psn);
    if (w && w.rdAtomic && psnDiff(w.firstPsn, qp.comp.psn) > 0) {
      if (acked(qp, w.firstPsn, false)) return dropped(qp, psn);
      implicitAck = true;
    }
  }
  if (psnDiff(psn, qp.comp.psn) !== 0) {
    // Duplicate (already placed) or beyond a gap: drop; the timer or an implicit NAK recovers.
    dropped(qp, psn);
    qp.counters.duplicates += psnDiff(psn, qp.comp.psn) < 0 ? 1 : 0;
    return;
  }
  const w = wqeAt(qp, psn);
  const isAtomicAck = pkt.opcode === OpCode.RC_ATOMIC_ACKNOWLEDGE;
  if (!w || !w.rdAtomic || (isAtomicAck !== (w.opcode !== WrOpcode.RDMA_READ))) {
    dropped(qp, psn);
    qp.device.counters.unexpected_response_drops++;
    return;
  }
  if (pkt.mask & Op.AETH) {
    const type = aeth.syndrome(pkt) & AethSyndrome.TYPE_MASK;
    if (type !== AethSyndrome.ACK) { dropped(qp, psn); qp.device.counters.unexpected_response_drops++; return; }
  }
  acked(qp, w.firstPsn, false);
  if (qp.state !== QpState.RTS && qp.state !== QpState.SQD) return;
  if (isAtomicAck) {
    traceComp(qp.qpn, CompState.ATOMIC, psn);
    if (!placeable(qp, w, 0, 8)) return;
    const b = Buffer.allocUnsafe(8);
    b.writeBigUInt64LE(atmack.orig(pkt)); // host (little-endian) order in local memory, as rxe on x86
    scatter(w.segs!, 0, b, 0, 8);
  } else {
    const k = psnDiff(psn, w.firstPsn);
    const first = k === 0, last = psn === w.lastPsn;
    const m = pkt.mask;
    const expectLen = last ? w.length - k * qp.mtu : qp.mtu;
    if (Boolean(m & Op.START) !== first || Boolean(m & Op.END) !== last || pkt.payloadLength !== expectLen) {
      dropped(qp, psn);
      qp.device.counters.unexpected_response_drops++;
      return;
    }
    traceComp(qp.qpn, CompState.READ, psn);
    if (!placeable(qp, w, k * qp.mtu, pkt.payloadLength)) return;
    scatter(w.segs!, k * qp.mtu, pkt.buf, pkt.payloadOffset, pkt.payloadLength);
    if (!last) {
      progress(qp, psnAdd(psn, 1));
      if (implicitAck) qp.runRequester();
      return;
    }
  }
  traceComp(qp.qpn, CompState.COMP_WQE, psn);
  w.state = WqeState.DONE;
  progress(qp, psnAdd(psn, 1));
  qp.retire();
  qp.runRequester();
}

const NO_SGES: readonly { length: number; lkey: number }[] = [];

/**
 * Whether a read response's bytes [off, off + len) or an atomic's result may be placed: the
 * local MRs of the SGEs they land in must still be valid (Linux do_read / do_atomic: copy_data
 * looks each lkey up again and fails the WQE with LOC_PROT_ERR, the QP to ERR). If not, the WQE
 * has failed so.
 */
function placeable(qp: RxeQp, w: SendWqe, off: number, len: number): boolean {
  if (sgesLive(qp, w.wr.sgList ?? NO_SGES, off, len)) return true;
  traceComp(qp.qpn, CompState.ERROR, psnAdd(w.firstPsn, Math.floor(off / qp.mtu)));
  qp.failSend(w, WcStatus.LOC_PROT_ERR);
  return false;
}

/** The packet is dropped (rxe_comp.c's COMPST_DONE without progress); the counters say why. */
function dropped(qp: RxeQp, psn: number): void {
  traceComp(qp.qpn, CompState.DONE, psn);
}
