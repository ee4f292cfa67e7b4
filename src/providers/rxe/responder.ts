// The responder (Linux rxe_resp.c): executes incoming requests against local memory and
// receive WQEs, and answers (ACK, NAK, RNR NAK, read responses, atomic acks). RC enforces PSN
// order and keeps responder resources so duplicate READs are re-executed and duplicate
// atomics replayed.

import { Access, AsyncEventType, QpState, QpType, WcFlags, WcOpcode, WcStatus, MwType } from '../../abi/enums.js';
import { ACK_SYNDROME_NO_CREDIT_LIMIT, AethSyndrome, NakCode, aeth, atmack, atmeth, deth, ieth, immdt, parsePacket, reth, writeBth, type Packet } from './wire/headers.js';
import { ICRC_BYTES, OPCODES, Op, OpCode } from './wire/opcodes.js';
import { psnAdd, psnDiff } from './wire/psn.js';
import { ipv4Bytes, ipv6Bytes } from '../../abi/inet.js';
import type { RecvWqe, RespResource, RxeQp } from './qp.js';
import { Placed, placeRecv } from './mem.js';
import { NO_MEM, RxeMw, type Resolved } from './keys.js';
import { RespState, type RespStateValue } from './states.js';
import { traceResp } from './debug.js';
import { deferToTurn } from './turn-work.js';
import { MAX_CWND } from './window.js';
import { tracer } from '../../sys/trace.js';

export function onRequest(qp: RxeQp, pkt: Packet, from: string): void {
  const s = qp.state;
  if (s !== QpState.RTR && s !== QpState.RTS && s !== QpState.SQD && s !== QpState.SQE) {
    qp.device.counters.qp_state_drops++;
    return;
  }
  qp.counters.rcvd_pkts++;
  qp.counters.rcvd_bytes += pkt.buf.length;
  if (qp.qpType === QpType.UD) return onUd(qp, pkt, from);
  if (qp.qpType === QpType.UC) return onUc(qp, pkt);
  return onRc(qp, pkt);
}

// ---- packets we send back ----

/**
 * Whether a plain ACK (the answer to a SEND or WRITE packet that asked for one) is deferred to
 * the end of the event loop's poll phase (setImmediate) instead of leaving at the end of the
 * received datagram. Measured between two processes in two network namespaces (SMC-R
 * ping-pong, bench/smcr-vs-tcp.ts): each ACK sent at once was a send system call on the
 * critical path before the consumer could answer (7-30 us each, two per SMC-R message: the
 * WRITE's and the CDC SEND's), and it woke the idle peer for nothing just before the answer
 * came. Deferred, the consumer's answer leaves first and the ACKs of all the datagrams that
 * one poll phase read go as one cumulative ACK per QP (IBTA 9.7.5.1.1: the responder may
 * coalesce ACKs). The delay is one turn of the loop, far inside the retransmit timeout (1 ms
 * grain). NAKs, RNR NAKs, read responses, atomic ACKs and duplicate ACKs still leave at once,
 * after a deferred ACK of their QP (the order on the wire stays the PSN order).
 * On unless SOFTRDMA_RXE_ACK_DEFER=0 (then the ACK leaves at the end of the received datagram).
 * It was opt-in while `perftest write_bw -D 1` stalled with it on (1 run in 12); the stall was
 * perftest's sender waiting for a completion with nothing in flight, fixed in
 * tools/perftest/bw.ts (bench/RESULTS.md 2026-12-04).
 */
export const ackDeferral = { on: process.env.SOFTRDMA_RXE_ACK_DEFER !== '0' };

/**
 * QPs holding a deferred ACK, in the order they deferred it; the ACK itself (the PSN to
 * acknowledge, cumulative, and the MSN at that PSN) is kept in the QP (resp.ackPsn, -1 for
 * none). No object or map entry per ACK: with many QPs a map of per-ACK objects churned
 * enough to keep V8 in back-to-back mark-compacts (see NOTES, write_bw -q 16).
 */
let ackQueue: RxeQp[] = [];
let ackSpare: RxeQp[] = [];
let acksScheduled = false;

let exitHook = false;

function deferAck(qp: RxeQp, psn: number): void {
  const r = qp.resp;
  if (r.ackPsn < 0) ackQueue.push(qp);
  r.ackPsn = psn;
  r.ackMsn = r.msn;
  acknowledged(qp, psn);
  if (!acksScheduled) {
    acksScheduled = true;
    setImmediate(sendPendingAcks);
    if (!exitHook) {
      // A process that exits on its last completion without closing anything would take the
      // held ACKs along, and the peer's last message would be retried for ever. node:dgram
      // hands a datagram to the kernel synchronously when its socket has nothing queued, so
      // sending them from 'exit' works.
      exitHook = true;
      process.once('exit', sendAcksAtExit);
    }
  }
}

function sendAcksAtExit(): void {
  for (const qp of ackQueue.slice()) {
    flushDeferredAck(qp);
    if (qp.device.link.queued > 0) qp.device.link.flush();
  }
}

/**
 * The ACKs deferred to the end of the poll phase, sent now: a poller is about to read the
 * socket in place (RxeLink.busyPoll), so the batch whose ACKs were held has been delivered, and
 * a spin would otherwise hold them until it yields (the peer's window and latency wait on them).
 */
export function sendDeferredAcksNow(): void {
  if (ackQueue.length > 0) sendPendingAcks();
}

function sendPendingAcks(): void {
  acksScheduled = false;
  const q = ackQueue;
  ackQueue = ackSpare;
  try {
    for (let i = 0; i < q.length; i++) flushDeferredAck(q[i]!);
  } finally {
    q.length = 0;
    ackSpare = q;
  }
}

/**
 * Send qp's deferred ACK now, if it has one: before anything else it answers, and before the
 * QP leaves the states that answer (qp.ts calls it on destroy and on the moves to ERR and
 * RESET). A consumer that sees its last completion and closes at once (pingpong, perftest)
 * would otherwise take the ACK with it, and the peer's last send would wait out its retries
 * (Linux's rxe acknowledged before the completion was visible).
 */
export function flushDeferredAck(qp: RxeQp): void {
  const r = qp.resp;
  const psn = r.ackPsn;
  if (psn < 0) return;
  r.ackPsn = -1;
  const s = qp.state;
  if (qp.destroyed || (s !== QpState.RTR && s !== QpState.RTS && s !== QpState.SQD && s !== QpState.SQE)) return;
  sendAeth(qp, OpCode.RC_ACKNOWLEDGE, psn, AethSyndrome.ACK | ACK_SYNDROME_NO_CREDIT_LIMIT, undefined, r.ackMsn);
}

function sendAeth(qp: RxeQp, opcode: number, psn: number, syndrome: number, orig?: bigint, msn = qp.resp.msn): void {
  flushDeferredAck(qp);
  acknowledged(qp, psn);
  const info = OPCODES[opcode]!;
  const buf = Buffer.allocUnsafe(info.length + ICRC_BYTES);
  writeBth(buf, { opcode, padCount: 0, destQp: qp.attr.destQpNum, ackReq: false, psn });
  aeth.write(buf, info.aeth, syndrome, msn);
  if (orig !== undefined) atmack.write(buf, info.atmack, orig);
  qp.counters.acks_sent++;
  qp.counters.sent_pkts++;
  qp.device.link.send(buf, qp.destAddr!, qp.source);
}

const ack = (qp: RxeQp, psn: number) => sendAeth(qp, OpCode.RC_ACKNOWLEDGE, psn, AethSyndrome.ACK | ACK_SYNDROME_NO_CREDIT_LIMIT);

/** An answer for `psn` goes out (or is deferred): it covers the messages executed up to it. */
function acknowledged(qp: RxeQp, psn: number): void {
  const r = qp.resp;
  if (r.unackedPsn >= 0 && psnDiff(psn, r.unackedPsn) >= 0) r.unackedPsn = -1;
}

/**
 * Acknowledge the SENDs and WRITEs executed that no ACK covers yet, before the QP goes to ERR
 * on an error that sends no NAK (CQ overflow, class J). With ACK coalescing a message's last
 * packet asks for an ACK only if it ends its send batch, so messages delivered before the
 * failing one may not have been acknowledged; the requester would retry them into a QP in
 * ERR and fail them (RETRY_EXC_ERR) although they were delivered. Linux's requester asks on
 * every message end, so they were acknowledged already there; this ACK is the one it had.
 */
function ackExecuted(qp: RxeQp): void {
  const r = qp.resp;
  if (qp.qpType !== QpType.RC || r.unackedPsn < 0) return;
  sendAeth(qp, OpCode.RC_ACKNOWLEDGE, r.unackedPsn, AethSyndrome.ACK | ACK_SYNDROME_NO_CREDIT_LIMIT, undefined, r.unackedMsn);
}

/**
 * Read responses a QP sends in one turn of the event loop; the rest of a longer read follows
 * on the next turns. Linux rxe's responder sends one response per run of its task
 * (read_reply) and never holds a whole read; here a read was once built whole in one
 * synchronous loop: a 128 MiB READ queued 128 Ki packets (+128 MiB of copies) and blocked the
 * loop for seconds, and the requester's socket overflowed under responses nobody paced. One
 * turn's worth is what the requester sends in one run (requester.ts BUDGET): a read of up to
 * 64 packets still leaves at once, in the flush of the datagram that asked.
 */
export const READ_BUDGET = 64;

/**
 * Request packets held behind a read being answered (copied: a received packet is a view of
 * the receive area). A requester that keeps to its window sends no more than MAX_CWND
 * packets past what it has seen answered; beyond that they are dropped as lost (RC recovers).
 */
const MAX_HELD = MAX_CWND;

/**
 * Answer qp's read (resp.reading): up to READ_BUDGET responses now, the rest on later turns.
 * Once it is answered, the requests that came meanwhile are executed in order, as Linux's
 * responder takes its queued request packets only after read_reply has finished; one of
 * them may start the next read.
 */
function replyRead(qp: RxeQp): void {
  const r = qp.resp;
  if (r.replying) return; // a held request started a read from inside the loop below: it goes on there
  r.replying = true;
  try {
    let budget = READ_BUDGET;
    for (;;) {
      if (qp.destroyed || !answering(qp.state)) {
        r.reading = undefined;
        r.held = [];
        return;
      }
      const res = r.reading;
      if (res) {
        if (budget === 0) {
          if (!r.readTurn) {
            r.readTurn = true;
            deferToTurn(() => nextReadTurn(qp));
          }
          return;
        }
        budget -= sendReadResponses(qp, res, budget);
        continue;
      }
      if (r.held.length === 0) return;
      const held = r.held;
      r.held = [];
      let i = 0;
      while (i < held.length && !r.reading && !qp.destroyed && answering(qp.state)) {
        const p = parsePacket(held[i++]!);
        if (typeof p !== 'string') onRc(qp, p);
      }
      // A request started another read: the rest wait for it, ahead of anything it held.
      if (i < held.length) r.held = held.slice(i).concat(r.held);
    }
  } catch (err) {
    // A bug (the receive path counts and reports it): the read and what waits behind it are
    // given up, as lost packets the requester resends, rather than held for ever.
    r.reading = undefined;
    r.held = [];
    throw err;
  } finally {
    r.replying = false;
  }
}

function nextReadTurn(qp: RxeQp): void {
  qp.resp.readTurn = false;
  try {
    replyRead(qp);
  } catch (err) {
    // As the receive path does with a packet that breaks it: counted, reported, and the device carries on.
    qp.device.counters.malformed_drops++;
    if (traceReceiveError.active) traceReceiveError({ error: err, from: qp.destAddr });
  }
}

const traceReceiveError = tracer('rxe', 'receive-error');

const answering = (s: number) => s === QpState.RTR || s === QpState.RTS || s === QpState.SQD || s === QpState.SQE;

/**
 * Send up to `budget` responses of `res` from its cursor (Linux read_reply, once per
 * response); returns how many were sent. The memory is looked up again for each turn's
 * responses (Linux rechecks the MR for each): an MR deregistered or a window invalidated
 * meanwhile ends the read with a remote access error NAK, the QP in ERR.
 */
function sendReadResponses(qp: RxeQp, res: RespResource, budget: number): number {
  flushDeferredAck(qp);
  let mem: Buffer | undefined;
  let memOff = 0;
  if (res.resid > 0) {
    const m = qp.device.keys.resolveRemote(res.rkey, qp.pd, qp.qpn, res.curVa, res.resid, Access.REMOTE_READ);
    if (typeof m === 'string') {
      qp.resp.reading = undefined;
      traceResp(qp.qpn, RespState.ERR_RKEY_VIOLATION, res.curPsn);
      nakErrorAt(qp, res.curPsn, false, NakCode.REMOTE_ACCESS_ERROR, WcStatus.REM_ACCESS_ERR);
      return budget;
    }
    mem = m.mem;
    memOff = m.offset;
  }
  const mtu = qp.mtu;
  let n = 0;
  while (n < budget) {
    const end = res.resid <= mtu;
    const opcode = res.started
      ? (end ? OpCode.RC_RDMA_READ_RESPONSE_LAST : OpCode.RC_RDMA_READ_RESPONSE_MIDDLE)
      : (end ? OpCode.RC_RDMA_READ_RESPONSE_ONLY : OpCode.RC_RDMA_READ_RESPONSE_FIRST);
    const info = OPCODES[opcode]!;
    const len = end ? res.resid : mtu;
    const pad = (4 - (len & 3)) & 3;
    const buf = Buffer.allocUnsafe(info.length + len + pad + ICRC_BYTES);
    writeBth(buf, { opcode, padCount: pad, destQp: qp.attr.destQpNum, ackReq: false, psn: res.curPsn });
    if (info.aeth >= 0) aeth.write(buf, info.aeth, AethSyndrome.ACK | ACK_SYNDROME_NO_CREDIT_LIMIT, qp.resp.msn);
    if (len > 0) mem!.copy(buf, info.length, memOff, memOff + len);
    for (let i = 0; i < pad; i++) buf[info.length + len + i] = 0;
    qp.counters.sent_pkts++;
    qp.device.link.send(buf, qp.destAddr!, qp.source);
    acknowledged(qp, res.curPsn); // a read response implicitly acknowledges what came before
    n++;
    memOff += len;
    res.started = true;
    res.curVa += len;
    res.resid -= len;
    res.curPsn = psnAdd(res.curPsn, 1);
    if (end) {
      qp.resp.reading = undefined;
      break;
    }
  }
  return n;
}

// ---- completion helpers ----

/**
 * Post a receive completion. False if the CQ could not take it (full: the completion is lost).
 * As Linux do_complete fills a user CQE: the byte count, flags, immediate data, invalidated
 * rkey and source QP only on success; IB_WC_GRH on every successful receive, of any transport
 * (rxe always has the packet's network header); the source QP only from a DETH (UD), 0 on
 * RC and UC. An error completion carries its status and work request ID (and here still its
 * opcode: see docs/rxe.md).
 */
function completeRecv(qp: RxeQp, w: RecvWqe, status: number, opcode: number, byteLen: number, pkt: Packet | boolean | undefined, extra: { flags?: number; imm?: number; inv?: number; srcQp?: number } = {}): boolean {
  const ok = status === WcStatus.SUCCESS;
  const wc = qp.wc(w.wrId, status, opcode, ok ? byteLen : 0);
  if (ok) {
    wc.wcFlags = WcFlags.GRH | (extra.flags ?? 0);
    if (extra.srcQp !== undefined) wc.srcQp = extra.srcQp;
    if (extra.imm !== undefined) wc.immData = extra.imm;
    if (extra.inv !== undefined) wc.invalidatedRkey = extra.inv;
    qp.device.counters.rdma_recvs++;
  }
  return qp.recvCq.push(wc, typeof pkt === 'boolean' ? pkt : pkt?.se ?? false);
}

/**
 * A successful message's completion found the receive CQ full (Linux do_complete:
 * RESPST_ERR_CQ_OVERFLOW, then RESPST_ERROR): the QP goes to ERR, and this message is not
 * acknowledged; the ones executed before it are (ackExecuted).
 */
function cqOverflow(qp: RxeQp, psn: number): void {
  traceResp(qp.qpn, RespState.ERR_CQ_OVERFLOW, psn);
  ackExecuted(qp);
  qp.toError();
}

/** Class B/C error at an RC responder: NAK, fail the receive in progress, QP to ERR. */
function nakError(qp: RxeQp, pkt: Packet, code: number, recvStatus: number): void {
  nakErrorAt(qp, pkt.psn, pkt.se, code, recvStatus);
}

function nakErrorAt(qp: RxeQp, psn: number, se: boolean, code: number, recvStatus: number): void {
  sendAeth(qp, OpCode.RC_ACKNOWLEDGE, psn, AethSyndrome.NAK | code);
  const w = qp.resp.wqe;
  qp.resp.wqe = undefined;
  if (w) completeRecv(qp, w, recvStatus, WcOpcode.RECV, 0, se);
  qp.ctx.event(code === NakCode.REMOTE_ACCESS_ERROR ? AsyncEventType.QP_ACCESS_ERR : AsyncEventType.QP_REQ_ERR, qp);
  qp.toError();
}

function sequenceOk(qp: RxeQp, m: number): boolean {
  const kind = qp.resp.inMessage;
  if (!kind) return (m & Op.START) !== 0;
  if (m & Op.START) return false;
  return kind === 'write' ? (m & Op.WRITE) !== 0 : (m & Op.SEND) !== 0 && !(m & Op.WRITE);
}

function qpAllows(qp: RxeQp, m: number): boolean {
  const a = qp.attr.qpAccessFlags;
  if (m & Op.WRITE && !(a & Access.REMOTE_WRITE)) return false;
  if (m & Op.READ && !(a & Access.REMOTE_READ)) return false;
  if (m & Op.ATOMIC && !(a & Access.REMOTE_ATOMIC)) return false;
  return true;
}

// ---- RC ----

function onRc(qp: RxeQp, pkt: Packet): void {
  const r = qp.resp;
  const m = pkt.mask;
  if (r.reading) {
    // A read is being answered: what came after it waits (its ACK must not pass the read's
    // responses, a WRITE behind it must not change what it reads), except a repeat of that
    // READ, which moves its cursor back to what the requester asks for again.
    if (m & Op.READ && inResource(pkt.psn, r.reading)) return duplicate(qp, pkt);
    if (r.held.length < MAX_HELD) r.held.push(Buffer.from(pkt.buf));
    else qp.device.counters.resp_held_drops++;
    return;
  }
  const diff = psnDiff(pkt.psn, r.psn);
  if (diff > 0) {
    traceResp(qp.qpn, RespState.ERR_PSN_OUT_OF_SEQ, pkt.psn);
    qp.device.counters.out_of_seq_request++;
    if (!r.nakSent) {
      r.nakSent = true;
      qp.counters.seq_naks_sent++;
      sendAeth(qp, OpCode.RC_ACKNOWLEDGE, r.psn, AethSyndrome.NAK | NakCode.PSN_SEQ_ERROR);
    }
    return;
  }
  if (diff < 0) return duplicate(qp, pkt);
  r.nakSent = false;

  const invalid = !sequenceOk(qp, m) ? missingOpcode(qp) : !qpAllows(qp, m) ? RespState.ERR_UNSUPPORTED_OPCODE
    : m & (Op.READ | Op.ATOMIC) && qp.attr.maxDestRdAtomic === 0 ? RespState.ERR_TOO_MANY_RDMA_ATM_REQ : undefined;
  if (invalid !== undefined) {
    traceResp(qp.qpn, invalid, pkt.psn);
    return nakError(qp, pkt, NakCode.INVALID_REQUEST, WcStatus.REM_INV_REQ_ERR);
  }
  if (m & Op.READ) return rcRead(qp, pkt);
  if (m & Op.ATOMIC) return rcAtomic(qp, pkt);

  if (m & Op.SEND && !r.wqe && !takeRecv(qp)) {
    traceResp(qp.qpn, RespState.ERR_RNR, pkt.psn);
    qp.counters.rnr_naks_sent++;
    qp.device.counters.send_rnr_err++;
    sendAeth(qp, OpCode.RC_ACKNOWLEDGE, pkt.psn, AethSyndrome.RNR_NAK | qp.attr.minRnrTimer);
    return;
  }
  if (!lengthOk(m, pkt.payloadLength, qp.mtu)) {
    traceResp(qp.qpn, RespState.ERR_LENGTH, pkt.psn);
    return nakError(qp, pkt, NakCode.INVALID_REQUEST, WcStatus.REM_INV_REQ_ERR);
  }

  if (m & Op.WRITE) {
    const err = placeWrite(qp, pkt);
    if (err !== undefined) {
      // Linux: RESPST_ERR_RKEY_VIOLATION is class C with IB_WC_REM_ACCESS_ERR for the receive
      // a WRITE_WITH_IMM took; a length error is REM_INV_REQ_ERR.
      const access = err === NakCode.REMOTE_ACCESS_ERROR;
      traceResp(qp.qpn, access ? RespState.ERR_RKEY_VIOLATION : RespState.ERR_LENGTH, pkt.psn);
      return nakError(qp, pkt, err, access ? WcStatus.REM_ACCESS_ERR : WcStatus.REM_INV_REQ_ERR);
    }
  } else {
    const w = r.wqe!;
    // Linux copy_data looks up the lkey of each SGE it copies into, on every packet, and only
    // those: an SGE the bytes reach that names no valid memory (never did, or its MR was
    // deregistered or re-registered under the receive) is RESPST_ERR_MALFORMED_WQE (class A:
    // NAK remote operational error, the receive completes with LOC_QP_OP_ERR).
    const placed = placeRecv(qp, w.sgList, w.total, r.offset, pkt.buf, pkt.payloadOffset, pkt.payloadLength);
    if (placed === Placed.LENGTH) {
      traceResp(qp.qpn, RespState.ERR_LENGTH, pkt.psn);
      return nakError(qp, pkt, NakCode.INVALID_REQUEST, WcStatus.LOC_LEN_ERR);
    }
    if (placed === Placed.WQE) {
      traceResp(qp.qpn, RespState.ERR_MALFORMED_WQE, pkt.psn);
      return nakError(qp, pkt, NakCode.REMOTE_OPERATIONAL_ERROR, WcStatus.LOC_QP_OP_ERR);
    }
    r.offset += pkt.payloadLength;
  }
  // SEND with Invalidate: an rkey that cannot be invalidated is Linux's
  // RESPST_ERR_INVALIDATE_RKEY (class J), before the PSN and MSN move on.
  if (m & Op.IETH && !invalidateRkey(qp, ieth.rkey(pkt))) return invalidateFailed(qp, pkt);
  traceResp(qp.qpn, RespState.EXECUTE, pkt.psn);
  r.psn = psnAdd(pkt.psn, 1);
  r.inMessage = m & Op.END ? 0 : m & Op.WRITE ? 'write' : 'send';
  if (m & Op.END) {
    r.msn = (r.msn + 1) & 0xffffff;
    if (m & Op.COMP && !finishRecv(qp, pkt)) return;
    r.unackedPsn = pkt.psn;
    r.unackedMsn = r.msn;
  }
  if (pkt.ackReq) {
    traceResp(qp.qpn, RespState.ACKNOWLEDGE, pkt.psn);
    if (ackDeferral.on) deferAck(qp, pkt.psn);
    else ack(qp, pkt.psn);
  }
}

/**
 * Linux rxe_resp_check_length (RC and UC): an ONLY packet carries at most the path MTU, a FIRST
 * or MIDDLE exactly the MTU, a LAST from 1 byte to the MTU; anything else is RESPST_ERR_LENGTH.
 */
function lengthOk(m: number, n: number, mtu: number): boolean {
  if (m & Op.START) return m & Op.END ? n <= mtu : n === mtu;
  if (m & Op.END) return n > 0 && n <= mtu;
  return n === mtu;
}

/**
 * Invalidate the rkey a SEND with Invalidate names (Linux invalidate_rkey). Only a bound type 2
 * window of the QP's PD can be (softrdma has no fast-registration MRs). False if it cannot.
 */
function invalidateRkey(qp: RxeQp, key: number): boolean {
  const o = qp.device.keys.lookup(key);
  if (!(o instanceof RxeMw) || o.type !== MwType.TYPE_2 || !o.bound || o.pd !== qp.pd) return false;
  o.unbind();
  return true;
}

/**
 * Class J (Linux RESPST_ERR_INVALIDATE_RKEY): the data was placed, the receive completes with
 * REM_INV_REQ_ERR and the QP goes to ERR, but the syndrome stays ACK: a packet that asked is
 * acknowledged as usual (its PSN and the MSN not yet moved on), no NAK.
 */
function invalidateFailed(qp: RxeQp, pkt: Packet): void {
  traceResp(qp.qpn, RespState.ERR_INVALIDATE_RKEY, pkt.psn);
  const r = qp.resp;
  const w = r.wqe;
  r.wqe = undefined;
  if (w) completeRecv(qp, w, WcStatus.REM_INV_REQ_ERR, WcOpcode.RECV, 0, pkt);
  // A packet that did not ask (ACK coalescing) still has the messages before it acknowledged.
  if (pkt.ackReq) ack(qp, pkt.psn);
  else ackExecuted(qp);
  qp.ctx.event(AsyncEventType.QP_REQ_ERR, qp);
  qp.toError();
}

/** Which ordering rule a packet broke (check_op_seq): no message open, or one left unfinished. */
function missingOpcode(qp: RxeQp): RespStateValue {
  return qp.resp.inMessage ? RespState.ERR_MISSING_OPCODE_LAST_C : RespState.ERR_MISSING_OPCODE_FIRST;
}

function takeRecv(qp: RxeQp): boolean {
  const w = qp.takeRecv();
  if (!w) return false;
  qp.resp.wqe = w;
  qp.resp.offset = 0;
  return true;
}

/** Linux check_length: an RDMA length above 2^31 is invalid (and a read that long would span half the PSN space). */
const MAX_RDMA_LENGTH = 0x80000000;

/**
 * Linux's qp->resp.ack_psn: resp.psn after the last SEND, WRITE or atomic executed, which a READ
 * does not move (it advances resp.psn only). Before any, the PSN the QP started from.
 */
function ackPsnOf(qp: RxeQp): number {
  const r = qp.resp;
  return r.readTo === r.psn ? r.readFrom : r.psn;
}

/** Where a WRITE packet's bytes go (reused: no allocation per packet). */
const writeMem: Resolved = { mem: NO_MEM, offset: 0 };

/**
 * Place a WRITE packet. Returns a NAK code on error. The rkey is looked up for every packet,
 * over what is left of the message (Linux check_rkey with qp->resp.rkey and qp->resp.va for a
 * MIDDLE or LAST): an MR deregistered or re-registered, or a window invalidated, after the
 * FIRST packet is a remote access error for the next, and nothing more is written.
 */
function placeWrite(qp: RxeQp, pkt: Packet): number | undefined {
  const r = qp.resp;
  const m = pkt.mask;
  if (m & Op.START) {
    const len = reth.len(pkt);
    if (len > MAX_RDMA_LENGTH) return NakCode.INVALID_REQUEST;
    r.writeLen = len;
    r.writeDone = 0;
    r.writeRkey = reth.rkey(pkt);
    r.writeVa = reth.va(pkt);
  }
  const n = pkt.payloadLength;
  const resid = r.writeLen - r.writeDone;
  // A zero-length WRITE names no memory (C9-88): its rkey is not checked.
  if (resid > 0 && qp.device.keys.resolveRemoteInto(writeMem, r.writeRkey, qp.pd, qp.qpn, r.writeVa + r.writeDone, resid, Access.REMOTE_WRITE) !== undefined) {
    return NakCode.REMOTE_ACCESS_ERROR;
  }
  // Linux check_rkey, before anything is written: a packet carries the MTU while more than
  // that is left, else exactly what is left, padded to 4 bytes (a WRITE_ONLY or LAST shorter
  // than its RETH said, or a FIRST/MIDDLE short of the MTU, writes nothing and is NAKed); a
  // zero-length WRITE carries nothing.
  const bad = resid > 0 ? (resid > qp.mtu ? n !== qp.mtu : n !== resid || pkt.padCount !== (-resid & 3)) : n > 0;
  if (!bad && n > 0) pkt.buf.copy(writeMem.mem, writeMem.offset, pkt.payloadOffset, pkt.payloadOffset + n);
  writeMem.mem = NO_MEM; // hold no MR's memory between packets
  if (bad) return NakCode.INVALID_REQUEST;
  r.writeDone += n;
  if (m & Op.END && r.writeDone !== r.writeLen) return NakCode.INVALID_REQUEST;
  return undefined;
}

/** Complete the receive WQE of a SEND or WRITE_WITH_IMM message. False if it failed (QP in ERR). */
function finishRecv(qp: RxeQp, pkt: Packet): boolean {
  const r = qp.resp;
  const w = r.wqe;
  if (!w) return true;
  const m = pkt.mask;
  const extra: { flags: number; imm?: number; inv?: number } = { flags: 0 };
  if (m & Op.IMMDT) { extra.flags |= WcFlags.WITH_IMM; extra.imm = immdt.get(pkt); }
  if (m & Op.IETH) {
    // Invalidated already (onRc, before the PSN moved on).
    extra.flags |= WcFlags.WITH_INV;
    extra.inv = ieth.rkey(pkt);
  }
  const isWrite = (m & Op.WRITE) !== 0;
  traceResp(qp.qpn, RespState.COMPLETE, pkt.psn);
  r.wqe = undefined;
  if (completeRecv(qp, w, WcStatus.SUCCESS, isWrite ? WcOpcode.RECV_RDMA_WITH_IMM : WcOpcode.RECV, isWrite ? r.writeLen : r.offset, pkt, extra)) return true;
  cqOverflow(qp, pkt.psn);
  return false;
}

function newResource(qp: RxeQp, res: RespResource): void {
  const r = qp.resp;
  const max = Math.max(1, qp.attr.maxDestRdAtomic);
  if (r.resources.length < max) r.resources.push(res);
  else r.resources[r.nextResource % max] = res;
  r.nextResource = (r.nextResource + 1) % max;
}

function rcRead(qp: RxeQp, pkt: Packet): void {
  const len = reth.len(pkt), va = reth.va(pkt), rkey = reth.rkey(pkt);
  if (len > MAX_RDMA_LENGTH) {
    traceResp(qp.qpn, RespState.ERR_LENGTH, pkt.psn);
    return nakError(qp, pkt, NakCode.INVALID_REQUEST, WcStatus.REM_INV_REQ_ERR);
  }
  if (len > 0) {
    const res = qp.device.keys.resolveRemote(rkey, qp.pd, qp.qpn, va, len, Access.REMOTE_READ);
    if (typeof res === 'string') {
      traceResp(qp.qpn, RespState.ERR_RKEY_VIOLATION, pkt.psn);
      return nakError(qp, pkt, NakCode.REMOTE_ACCESS_ERROR, WcStatus.REM_ACCESS_ERR);
    }
  }
  traceResp(qp.qpn, RespState.READ_REPLY, pkt.psn);
  // A READ does not move the PSN a duplicate SEND or WRITE is acknowledged with (ackPsnOf).
  if (qp.resp.readTo !== qp.resp.psn) qp.resp.readFrom = qp.resp.psn;
  const npkts = Math.max(1, Math.ceil(len / qp.mtu));
  const res: RespResource = {
    kind: 'read', firstPsn: pkt.psn, lastPsn: psnAdd(pkt.psn, npkts - 1), va, rkey, length: len, atomicOrig: 0n, valid: true,
    curPsn: pkt.psn, curVa: va, resid: len, started: false,
  };
  newResource(qp, res);
  qp.resp.psn = psnAdd(pkt.psn, npkts);
  qp.resp.readTo = qp.resp.psn;
  qp.resp.msn = (qp.resp.msn + 1) & 0xffffff;
  qp.resp.reading = res;
  replyRead(qp);
}

const inResource = (psn: number, res: RespResource) => psnDiff(psn, res.firstPsn) >= 0 && psnDiff(psn, res.lastPsn) <= 0;

function rcAtomic(qp: RxeQp, pkt: Packet): void {
  const va = atmeth.va(pkt), rkey = atmeth.rkey(pkt);
  // Linux checks the rkey and range first (check_rkey: a bad key, or a VA no MR has, such as
  // one at or above 2^53, which reads as NaN here, is a remote access error) and the alignment
  // only then (rxe_mr_do_atomic_op: RESPST_ERR_MISALIGNED_ATOMIC, invalid request).
  const res = qp.device.keys.resolveRemote(rkey, qp.pd, qp.qpn, va, 8, Access.REMOTE_ATOMIC);
  if (typeof res === 'string') {
    traceResp(qp.qpn, RespState.ERR_RKEY_VIOLATION, pkt.psn);
    return nakError(qp, pkt, NakCode.REMOTE_ACCESS_ERROR, WcStatus.REM_ACCESS_ERR);
  }
  // The low three bits from the packet itself: exact for any u64 VA.
  if ((pkt.buf[pkt.info.atmeth + 7]! & 7) !== 0) {
    traceResp(qp.qpn, RespState.ERR_MISALIGNED_ATOMIC, pkt.psn);
    return nakError(qp, pkt, NakCode.INVALID_REQUEST, WcStatus.REM_INV_REQ_ERR);
  }
  traceResp(qp.qpn, RespState.ATOMIC_REPLY, pkt.psn);
  // 64-bit operands in host (little-endian) order in memory, as Linux rxe does on x86.
  const orig = res.mem.readBigUInt64LE(res.offset);
  const value = pkt.opcode === OpCode.RC_COMPARE_SWAP
    ? (orig === atmeth.compare(pkt) ? atmeth.swapAdd(pkt) : orig)
    : BigInt.asUintN(64, orig + atmeth.swapAdd(pkt));
  res.mem.writeBigUInt64LE(value, res.offset);
  newResource(qp, { kind: 'atomic', firstPsn: pkt.psn, lastPsn: pkt.psn, va, rkey, length: 8, atomicOrig: orig, valid: true, curPsn: pkt.psn, curVa: va, resid: 0, started: false });
  qp.resp.psn = psnAdd(pkt.psn, 1);
  qp.resp.msn = (qp.resp.msn + 1) & 0xffffff;
  sendAeth(qp, OpCode.RC_ATOMIC_ACKNOWLEDGE, pkt.psn, AethSyndrome.ACK | ACK_SYNDROME_NO_CREDIT_LIMIT, orig);
}

function duplicate(qp: RxeQp, pkt: Packet): void {
  traceResp(qp.qpn, RespState.DUPLICATE_REQUEST, pkt.psn);
  qp.counters.duplicates++;
  qp.device.counters.duplicate_request++;
  const m = pkt.mask;
  if (m & (Op.SEND | Op.WRITE)) {
    // C9-105: acknowledge again; nothing is executed twice. Linux duplicate_request sends
    // ack_psn - 1: the last SEND, WRITE or atomic PSN, not a READ's that may have come after.
    ack(qp, psnAdd(ackPsnOf(qp), -1));
    return;
  }
  const res = qp.resp.resources.find((x) => x.valid && inResource(pkt.psn, x));
  if (!res) return;
  if (m & Op.READ && res.kind === 'read') {
    // Linux duplicate_request: the request must ask for the resource's memory again, or a
    // part of it, with its rkey; the reply restarts from it (one cursor per resource, so a
    // repeat never adds a second copy of the read) and must end within the resource's PSNs.
    const va = reth.va(pkt), len = reth.len(pkt);
    const within = res.length === 0 ? len === 0 : va >= res.va && len <= res.length && va + len <= res.va + res.length;
    const npkts = Math.max(1, Math.ceil(len / qp.mtu));
    if (!within || reth.rkey(pkt) !== res.rkey || psnDiff(psnAdd(pkt.psn, npkts - 1), res.lastPsn) > 0) return;
    res.curPsn = pkt.psn;
    res.curVa = va;
    res.resid = len;
    res.started = pkt.psn !== res.firstPsn;
    const r = qp.resp;
    const going = r.reading === res && r.readTurn;
    r.reading = res;
    // A read already answered turn by turn goes on from here on its next turn.
    if (!going) replyRead(qp);
  } else if (m & Op.ATOMIC && res.kind === 'atomic' && res.firstPsn === pkt.psn) {
    sendAeth(qp, OpCode.RC_ATOMIC_ACKNOWLEDGE, pkt.psn, AethSyndrome.ACK | ACK_SYNDROME_NO_CREDIT_LIMIT, res.atomicOrig);
  }
}

// ---- UC: no acknowledgements; a gap drops the message in progress ----

function onUc(qp: RxeQp, pkt: Packet): void {
  const r = qp.resp;
  const m = pkt.mask;
  if (pkt.psn !== r.psn || !sequenceOk(qp, m)) {
    ucAbandon(qp, WcStatus.REM_INV_REQ_ERR, pkt);
    if (!(m & Op.START)) {
      traceResp(qp.qpn, RespState.ERR_PSN_OUT_OF_SEQ, pkt.psn);
      qp.device.counters.out_of_seq_request++; r.psn = psnAdd(pkt.psn, 1); return;
    }
  }
  r.psn = psnAdd(pkt.psn, 1);
  if (!qpAllows(qp, m)) { ucDrop(qp, pkt, RespState.ERR_UNSUPPORTED_OPCODE); return; }
  if (m & Op.SEND && !r.wqe && !takeRecv(qp)) {
    traceResp(qp.qpn, RespState.ERR_RNR, pkt.psn);
    qp.device.counters.no_recv_wqe_drops++; return;
  }
  if (!lengthOk(m, pkt.payloadLength, qp.mtu)) { ucAbandon(qp, WcStatus.REM_INV_REQ_ERR, pkt); ucDrop(qp, pkt, RespState.ERR_LENGTH); return; }
  if (m & Op.WRITE) {
    const err = placeWrite(qp, pkt);
    if (err !== undefined) {
      const access = err === NakCode.REMOTE_ACCESS_ERROR;
      // A write with immediate data has taken its receive by now in Linux (check_resource):
      // with an SRQ, that receive completes in error below.
      if (qp.srq && m & Op.IMMDT && !r.wqe) takeRecv(qp);
      ucAbandon(qp, access ? WcStatus.REM_ACCESS_ERR : WcStatus.REM_INV_REQ_ERR, pkt);
      ucDrop(qp, pkt, access ? RespState.ERR_RKEY_VIOLATION : RespState.ERR_LENGTH);
      return;
    }
  } else {
    const w = r.wqe!;
    // The lkeys of the SGEs reached are looked up for every packet, as on RC (Linux copy_data).
    const placed = placeRecv(qp, w.sgList, w.total, r.offset, pkt.buf, pkt.payloadOffset, pkt.payloadLength);
    if (placed !== Placed.OK) {
      r.wqe = undefined;
      badRecvWqe(qp, w, pkt, placed);
      return;
    }
    r.offset += pkt.payloadLength;
  }
  traceResp(qp.qpn, RespState.EXECUTE, pkt.psn);
  r.inMessage = m & Op.END ? 0 : m & Op.WRITE ? 'write' : 'send';
  if (m & Op.END && m & Op.COMP) finishRecv(qp, pkt);
}

/**
 * Abandon the UC message in progress: the next one starts afresh. Without an SRQ its receive
 * WQE, if any, is kept for it and filled again from its start (class D: Linux
 * do_class_d1e_error resets the WQE). With an SRQ the receive it took from the SRQ completes
 * with `status` (class E: REM_INV_REQ_ERR for a broken sequence or a bad length, REM_ACCESS_ERR
 * for an rkey violation), the QP staying as it is; unlike Linux, whose UC SRQ QP then drops
 * every later message (its resp.opcode is never reset), the next message is taken.
 */
function ucAbandon(qp: RxeQp, status: number, pkt: Packet): void {
  const r = qp.resp;
  r.inMessage = 0;
  r.offset = 0;
  r.writeLen = r.writeDone = 0;
  const w = r.wqe;
  if (qp.srq && w) {
    r.wqe = undefined;
    if (!completeRecv(qp, w, status, WcOpcode.RECV, 0, pkt)) cqOverflow(qp, pkt.psn);
  }
}

/**
 * A UD or UC receive WQE the message cannot be placed in (Linux send_data_in's copy_data
 * failing): RESPST_ERR_MALFORMED_WQE, class A for every transport. The receive completes with
 * LOC_QP_OP_ERR for an SGE naming no valid memory (LOC_LEN_ERR for a message longer than the
 * WQE: Linux 6.1 reports that as LOC_QP_OP_ERR too; see docs/rxe.md), no NAK (UD and UC have
 * none), and the QP goes to ERR (rxe_qp_error): the WQEs behind it are flushed.
 */
function badRecvWqe(qp: RxeQp, w: RecvWqe, pkt: Packet, placed: Placed): void {
  const length = placed === Placed.LENGTH;
  traceResp(qp.qpn, length ? RespState.ERR_LENGTH : RespState.ERR_MALFORMED_WQE, pkt.psn);
  completeRecv(qp, w, length ? WcStatus.LOC_LEN_ERR : WcStatus.LOC_QP_OP_ERR, WcOpcode.RECV, 0, pkt);
  qp.toError();
}

/** UC has no NAK: a bad packet is dropped and counted. */
function ucDrop(qp: RxeQp, pkt: Packet, state: RespStateValue): void {
  traceResp(qp.qpn, state, pkt.psn);
  qp.device.counters.malformed_drops++;
}

// ---- UD: one packet, one message; the GRH goes into the first 40 bytes of the buffer ----

const GRH_BYTES = 40;
const UDP_BYTES = 8;

function onUd(qp: RxeQp, pkt: Packet, from: string): void {
  if (deth.qkey(pkt) !== qp.attr.qkey) { qp.device.counters.qkey_drops++; return; }
  const w = qp.takeRecv();
  if (!w) {
    traceResp(qp.qpn, RespState.ERR_RNR, pkt.psn);
    qp.device.counters.no_recv_wqe_drops++; return;
  }
  const len = pkt.payloadLength;
  // Linux execute: the network header, then the payload, each copied by copy_data (only the
  // SGEs they reach are looked up).
  let placed = placeRecv(qp, w.sgList, w.total, 0, buildGrh(qp, from, pkt.buf.length), 0, GRH_BYTES);
  if (placed === Placed.OK) placed = placeRecv(qp, w.sgList, w.total, GRH_BYTES, pkt.buf, pkt.payloadOffset, len);
  if (placed !== Placed.OK) return badRecvWqe(qp, w, pkt, placed);
  const m = pkt.mask;
  const extra: { flags: number; imm?: number; srcQp: number } = { flags: 0, srcQp: deth.srcQp(pkt) };
  if (m & Op.IMMDT) { extra.flags |= WcFlags.WITH_IMM; extra.imm = immdt.get(pkt); }
  traceResp(qp.qpn, RespState.COMPLETE, pkt.psn);
  if (!completeRecv(qp, w, WcStatus.SUCCESS, WcOpcode.RECV, GRH_BYTES + len, pkt, extra)) cqOverflow(qp, pkt.psn);
}

/** The 40-byte GRH area: an IPv6 header, or for IPv4 20 zero bytes then the IPv4 header (as rxe). */
function buildGrh(qp: RxeQp, from: string, packetLen: number): Buffer {
  const g = Buffer.alloc(GRH_BYTES);
  // The datagram's own length, as the IP header Linux copies (ip_hdr / ipv6_hdr) carries it:
  // the whole RoCE packet, ImmDt and pad bytes included.
  const udpLen = UDP_BYTES + packetLen;
  if (qp.device.family === 4) {
    const ip = 20;
    g[ip] = 0x45;
    g.writeUInt16BE(20 + udpLen, ip + 2);
    g.writeUInt16BE(0x4000, ip + 6);
    g[ip + 8] = 64;
    g[ip + 9] = 17;
    ipv4Bytes(from).copy(g, ip + 12);
    ipv4Bytes(qp.device.address).copy(g, ip + 16);
  } else {
    g.writeUInt32BE(0x60000000, 0);
    g.writeUInt16BE(udpLen, 4);
    g[6] = 17;
    g[7] = 64;
    ipv6Bytes(from).copy(g, 8);
    ipv6Bytes(qp.device.address).copy(g, 24);
  }
  return g;
}
