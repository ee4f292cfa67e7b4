// The requester (Linux rxe_req.c): turns send WQEs into request packets, in order, within
// the window of unacknowledged PSNs. Each WQE's PSNs are fixed when it is first reached, so
// a retry (go-back-N from any PSN) rebuilds exactly the packets it sent before.

import { Access, MR_ACCESS_SUPPORTED, MwType, QpState, QpType, SendFlags, WcStatus, WrOpcode } from '../../abi/enums.js';
import { OPCODES, Op, OpCode, ICRC_BYTES } from './wire/opcodes.js';
import { atmeth, deth, ieth, immdt, reth, writeBth } from './wire/headers.js';
import { psnAdd, psnDiff } from './wire/psn.js';
import { WqeState, type RxeQp, type SendWqe } from './qp.js';
import { packetOpcode } from './wire/wr-opcodes.js';
import { resolveSegs, sgesLive, views } from './mem.js';
import { ackEvery, noteSending, windowPkts } from './window.js';
import { deferToTurn } from './turn-work.js';
import { RxeMr, RxeMw } from './keys.js';
import type { RxeAh } from './context.js';
import { ACK_ASKS, ACK_DEFERRABLE, ACK_NONE } from './link.js';
import { remoteAddrPlus } from '../../abi/remote-addr.js';
import { tracer } from '../../sys/trace.js';

const traceRequesterError = tracer('rxe', 'requester-error');

/**
 * Whether the last packet of a SEND or WRITE may leave without AckReq when a later packet of
 * its QP in the same send batch asks (see sendPacket). On unless SOFTRDMA_RXE_ACK_COALESCE=0
 * (then every message's last packet asks, as Linux rxe). It was off for a while because
 * `softrdma perftest write_bw -D 1` stalled with it on; that was perftest's sender waiting for
 * a completion when nothing was in flight (fixed in tools/perftest/bw.ts), not RC.
 */
export const ackCoalescing = { on: process.env.SOFTRDMA_RXE_ACK_COALESCE !== '0' };

/** Packets one run may send before yielding to the event loop. */
const BUDGET = 64;

export function runRequester(qp: RxeQp): void {
  if (qp.req.running) return;
  qp.req.running = true;
  let budget = BUDGET;
  let w: SendWqe | undefined;
  try {
    while ((qp.state === QpState.RTS || qp.state === QpState.SQD) && !qp.destroyed && !qp.req.paused) {
      w = qp.sq.at(qp.req.index);
      if (!w) break;
      if (w.state === WqeState.DONE || w.state === WqeState.PENDING) { qp.req.index++; continue; }
      // SQD: a message already started is finished (and resent if need be); nothing new starts.
      if (w.state === WqeState.POSTED && qp.state === QpState.SQD) break;
      // The budget ends a run at a message's boundary unless the message alone is larger: a
      // message cut in two leaves in two GSO sends where one would do.
      if (budget <= 0 && (w.nextPkt === 0 || w.npkts > BUDGET)) {
        if (!qp.req.scheduled) {
          qp.req.scheduled = true;
          deferToTurn(() => { qp.req.scheduled = false; runRequester(qp); });
        }
        break;
      }
      if (w.local) {
        // Local invalidate fence (IBA 10.6.5.1; rxe_wqe_is_fenced makes it mandatory): a
        // LOCAL_INV waits until every WQE before it has completed, so a window or MR the peer
        // may still be using for earlier work stays valid until then.
        if (w.opcode === WrOpcode.LOCAL_INV && qp.req.index > 0) { qp.req.lifWait = true; break; }
        if (w.wr.sendFlags! & SendFlags.FENCE && outstandingRdAtomic(qp) > 0) break;
        executeLocal(qp, w);
        if (qp.state !== QpState.RTS) break; // the op failed and took the QP to ERR
        qp.req.index++;
        qp.retire();
        continue;
      }
      if (w.state === WqeState.POSTED && !start(qp, w)) break;
      if (w.nextPkt === 0 && w.wr.sendFlags! & SendFlags.FENCE && outstandingRdAtomic(qp) > 0) break;
      if (w.nextPkt === 0 && w.rdAtomic && outstandingRdAtomic(qp) >= qp.attr.maxRdAtomic) break;
      let mustAsk = false;
      if (qp.qpType === QpType.RC) {
        const psn = psnAdd(w.firstPsn, w.nextPkt);
        const r = qp.req;
        if (r.wholeTo < 0 || psnDiff(psn, r.wholeTo) > 0) {
          r.wholeTo = -1;
          const window = windowPkts(qp);
          const inFlight = psnDiff(psn, qp.comp.psn);
          // Two reasons to stop here: the window is full, or a short message (half the window
          // or less) would not fit whole. A short message goes whole or waits, as one cut by the
          // window leaves in two GSO sends where one would do (the window varies with the QPs
          // sending: 512 / 13 is no multiple of a 64 KiB message's 16 packets; with -q 16 a
          // quarter of the window was too little to call 16 packets short).
          const full = inFlight >= window;
          const short = w.nextPkt === 0 && w.npkts > 1 && w.npkts <= window >> 1;
          if (full || (short && inFlight + w.npkts > window)) {
            // An ACK is on its way if a packet in flight asked; it brings this QP back. If none
            // did (the window shrank under packets sent while it was larger: another QP began
            // sending, or a loss cut it), nothing would until the retransmit timer, which then
            // resends the window for nothing: one more packet goes, asking, or the short message
            // goes whole (its last packet asks).
            if (askInFlight(qp, psn)) break;
            qp.device.counters.window_forced_asks++;
            if (full) mustAsk = true;
            else r.wholeTo = w.lastPsn;
          } else if (short) {
            // A short message that fits as it starts goes whole even if the window shrinks
            // under it (another QP begins sending): past it by half the window at most.
            r.wholeTo = w.lastPsn;
          }
        }
        noteSending(qp);
      }
      if (!payloadLive(qp, w)) { qp.failSend(w, WcStatus.LOC_PROT_ERR); break; }
      sendPacket(qp, w, mustAsk);
      budget--;
    }
  } catch (e) {
    // post_send checks every field the send path reads, so this is a bug; it must not jam the
    // send queue for good or escape from a timer: the WQE fails as Linux fails one it cannot
    // build (LOC_QP_OP_ERR, the QP to ERR), and the error is counted (requester_errors) and
    // reported on softrdma:rxe:requester-error.
    qp.device.counters.requester_errors++;
    if (traceRequesterError.active) traceRequesterError({ error: e, qpn: qp.qpn });
    if (w && w.state !== WqeState.DONE) qp.failSend(w, WcStatus.LOC_QP_OP_ERR);
    else qp.toError();
  } finally {
    qp.req.running = false;
  }
}

/**
 * Whether the local memory the next packet of a SEND or WRITE carries is still registered:
 * Linux's requester copies each packet's payload through copy_data, which looks the lkeys up
 * every time (an MR deregistered or re-registered under a posted WQE: LOC_PROT_ERR), also for
 * a resent packet. Reads and atomics carry none (the completer checks where their results go).
 */
function payloadLive(qp: RxeQp, w: SendWqe): boolean {
  if (w.inline || w.rdAtomic || !w.segs) return true;
  const off = w.nextPkt * qp.mtu;
  const len = Math.min(qp.mtu, w.length - off);
  return len <= 0 || sgesLive(qp, w.wr.sgList ?? [], off, len);
}

/** First touch: resolve SGEs, fix PSNs. False if the WQE failed (the QP is then in ERR). */
function start(qp: RxeQp, w: SendWqe): boolean {
  if (!w.inline) {
    // Reads and atomics write their result into local memory: LOCAL_WRITE is required.
    const segs = resolveSegs(qp, w.wr.sgList ?? [], w.rdAtomic);
    if (!segs) { qp.failSend(w, WcStatus.LOC_PROT_ERR); return false; }
    w.segs = segs;
  }
  if (w.rdAtomic && qp.attr.maxRdAtomic === 0) { qp.failSend(w, WcStatus.LOC_QP_OP_ERR); return false; }
  // Linux rxe_get_av: an AH of another PD ("PDs don't match for AH and QP"), or one destroyed
  // since the post (its ah_num finds no AH).
  if (qp.qpType === QpType.UD && ((w.wr.ud!.ah as RxeAh).pd !== qp.pd || (w.wr.ud!.ah as RxeAh).destroyed)) { qp.failSend(w, WcStatus.LOC_QP_OP_ERR); return false; }
  const mtu = qp.mtu;
  w.npkts = w.opcode === WrOpcode.ATOMIC_CMP_AND_SWP || w.opcode === WrOpcode.ATOMIC_FETCH_AND_ADD ? 1 : Math.max(1, Math.ceil(w.length / mtu));
  w.firstPsn = qp.req.psn;
  w.lastPsn = psnAdd(w.firstPsn, w.npkts - 1);
  qp.advanceSqPsn(w.npkts);
  w.nextPkt = 0;
  w.state = WqeState.SENDING;
  return true;
}

/**
 * Whether a packet sent before `psn` and not yet acknowledged asks for an ACK (a deferrable
 * last packet counts: the link sets AckReq on it unless a later one of the QP asks).
 */
function askInFlight(qp: RxeQp, psn: number): boolean {
  const a = qp.req.askPsn;
  return a >= 0 && psnDiff(a, qp.comp.psn) >= 0 && psnDiff(a, psn) < 0;
}

/** Build and send packet number w.nextPkt of a WQE; `mustAsk` sets AckReq whatever the count. */
export function sendPacket(qp: RxeQp, w: SendWqe, mustAsk = false): void {
  const k = w.nextPkt;
  const psn = psnAdd(w.firstPsn, k);
  const opcode = packetOpcode(w.ops, k, w.npkts);
  const info = OPCODES[opcode]!;
  const mtu = qp.mtu;
  const isRead = opcode === OpCode.RC_RDMA_READ_REQUEST;
  const payloadOff = k * mtu;
  const payloadLen = info.mask & Op.PAYLOAD ? Math.min(mtu, w.length - payloadOff) : 0;
  const pad = (4 - (payloadLen & 3)) & 3;
  // Headers and the pad/ICRC tail are small buffers; the payload goes out as views of the
  // source memory (RDMA semantics forbid touching it until the WR completes).
  const buf = Buffer.allocUnsafe(info.length);
  const tail = Buffer.allocUnsafe(pad + ICRC_BYTES);
  for (let i = 0; i < pad; i++) tail[i] = 0; // the ICRC goes in when the packet is sent
  const end = (info.mask & Op.END) !== 0;
  // RC asks for an ACK at least every ackEvery packets, and on the last packet of a READ or
  // atomic request. The last packet of a SEND or WRITE is deferrable: the link sets AckReq on
  // it unless a later packet of this QP in the same send batch asks (RxeLink.markAckReqs), so
  // a burst of messages draws one ACK. ackCoalescing is on by default; with
  // SOFTRDMA_RXE_ACK_COALESCE=0 every message's last packet asks, as Linux rxe's do.
  let ackReq = false;
  let ack = ACK_NONE;
  if (qp.qpType === QpType.RC) {
    ackReq = (end && (w.rdAtomic || !ackCoalescing.on)) || ++qp.req.noackPkts >= ackEvery(qp) || mustAsk;
    if (ackReq) {
      qp.req.noackPkts = 0;
      // A read or atomic is answered by its responses: the last one is what wakes the QP.
      qp.req.askPsn = w.rdAtomic ? w.lastPsn : psn;
      ack = ACK_ASKS;
    } else if (end) {
      ack = ACK_DEFERRABLE;
      qp.req.askPsn = psn;
    }
  }
  let destQp = qp.attr.destQpNum;
  let to = qp.destAddr!;
  if (qp.qpType === QpType.UD) {
    const ud = w.wr.ud!;
    destQp = ud.remoteQpn;
    to = (ud.ah as RxeAh).address;
  }
  // SE only on a message that consumes a receive (SEND, WRITE with immediate): Linux rxe_req.c
  // init_req_packet; a solicited WRITE, READ or atomic carries none.
  writeBth(buf, { opcode, se: end && (info.mask & Op.SEND) !== 0 && (w.wr.sendFlags! & SendFlags.SOLICITED) !== 0, padCount: pad, pkey: 0xffff, destQp, ackReq, psn });
  if (info.reth >= 0) {
    const r = w.wr.rdma!;
    if (isRead) {
      // A (re)sent read asks only for what has not yet arrived.
      const done = k * mtu;
      reth.write(buf, info.reth, remoteAddrPlus(r.remoteAddr, done), r.rkey, w.length - done);
    } else {
      reth.write(buf, info.reth, r.remoteAddr, r.rkey, w.length);
    }
  }
  if (info.atmeth >= 0) {
    const a = w.wr.atomic!;
    atmeth.write(buf, info.atmeth, a.remoteAddr, a.rkey, opcode === OpCode.RC_COMPARE_SWAP ? a.swap ?? 0n : a.compareAdd, opcode === OpCode.RC_COMPARE_SWAP ? a.compareAdd : 0n);
  }
  if (info.immdt >= 0) immdt.write(buf, info.immdt, w.wr.immData ?? 0);
  if (info.ieth >= 0) ieth.write(buf, info.ieth, w.wr.invalidateRkey!);
  if (info.deth >= 0) {
    // The work request's Q_Key as it is, as Linux's init_req_packet sends it: the IBTA's rule
    // that one with bit 31 set means the QP's own (10.2.5) is not Linux rxe's (a peer QP whose
    // Q_Key has bit 31 set is reached by naming that Q_Key).
    deth.write(buf, info.deth, w.wr.ud!.remoteQkey, qp.qpn);
  }
  const parts: Buffer[] = [buf];
  if (payloadLen > 0) {
    if (w.inline) parts.push(w.inline.subarray(payloadOff, payloadOff + payloadLen));
    else views(w.segs!, payloadOff, payloadLen, parts);
  }
  parts.push(tail);

  qp.counters.sent_pkts++;
  qp.counters.sent_bytes += info.length + payloadLen + tail.length;
  // One read request covers all its response PSNs.
  w.nextPkt = isRead ? w.npkts : w.nextPkt + 1;
  const hi = isRead ? w.lastPsn : psnAdd(w.firstPsn, w.nextPkt - 1);
  if (psnDiff(hi, qp.req.sentTo) > 0) qp.req.sentTo = hi;
  const lastPkt = w.nextPkt >= w.npkts;
  // UC and UD complete when sent, as there is no acknowledgement: when the kernel has the
  // last packet (it copies the payload), so the application may then reuse the buffer.
  const unacked = lastPkt && qp.qpType !== QpType.RC;
  qp.device.link.sendv(parts, to, unacked ? () => sentUnacked(qp, w) : undefined, qp.source, ack, qp.req);
  if (lastPkt) {
    qp.req.index++;
    w.state = WqeState.PENDING;
  }
  // This packet's PSN (a read request's: its first response's) being the completer's, nothing
  // was in flight before it: the wait for an ACK starts now, whatever timer still runs.
  if (qp.qpType === QpType.RC) qp.armRetransmit(psnDiff(isRead ? w.firstPsn : hi, qp.comp.psn) === 0);
}

function sentUnacked(qp: RxeQp, w: SendWqe): void {
  // A QP flushed or destroyed meanwhile has completed the WQE already.
  if (w.state !== WqeState.PENDING || qp.destroyed) return;
  w.state = WqeState.DONE;
  qp.retire();
  // A LOCAL_INV waiting for this one (UC: nothing else runs the requester again).
  if (qp.req.lifWait) {
    qp.req.lifWait = false;
    runRequester(qp);
  }
}

/** Reads and atomics sent and not yet answered (they count against max_rd_atomic). */
function outstandingRdAtomic(qp: RxeQp): number {
  let n = 0;
  for (let i = 0; i < qp.req.index && i < qp.sq.length; i++) {
    const w = qp.sq.at(i)!;
    if (w.rdAtomic && w.state === WqeState.PENDING) n++;
  }
  return n;
}

function executeLocal(qp: RxeQp, w: SendWqe): void {
  const keys = qp.device.keys;
  if (w.opcode === WrOpcode.LOCAL_INV) {
    const o = keys.lookup(w.wr.invalidateRkey!);
    // Only type 2 windows can be invalidated; ordinary MRs cannot (as in rxe).
    if (!(o instanceof RxeMw) || o.type !== MwType.TYPE_2 || o.pd !== qp.pd || !o.bound) {
      qp.failSend(w, WcStatus.LOC_QP_OP_ERR);
      return;
    }
    o.unbind();
  } else {
    const b = w.wr.bindMw!;
    const mw = b.mw;
    const info = b.bindInfo;
    const mr = info.mr ? keys.lookup(info.mr.lkey) : undefined;
    const bad =
      // rxe_bind_mw looks the window up by its key when the bind runs: one deallocated since
      // the post is gone (and binding it would pin its MR for good: nothing could unbind it).
      !(mw instanceof RxeMw) || !keys.holds(mw) || mw.pd !== qp.pd || (b.rkey >>> 8) !== mw.index ||
      (mw.type === MwType.TYPE_2 && (mw.bound || info.length === 0)) ||
      // o10-36.2.2: no zero-based type 1 window; and no window on a zero-based MR (rxe_check_bind_mw).
      (mw.type === MwType.TYPE_1 && (info.mwAccessFlags & Access.ZERO_BASED) !== 0) ||
      (info.length > 0 && (!(mr instanceof RxeMr) || !mr.valid || mr.pd !== qp.pd || !(mr.access & Access.MW_BIND) || (mr.access & Access.ZERO_BASED) !== 0 ||
        info.addr < mr.iova || info.addr + info.length > mr.iova + mr.length)) ||
      // Any bit an MR may have (6.2's RXE_ACCESS_SUPPORTED_MW; 6.1 checked none): a window keeps
      // only its remote rights, so LOCAL_WRITE or MW_BIND copied from an MR's flags do no harm.
      (info.mwAccessFlags & ~MR_ACCESS_SUPPORTED) !== 0 ||
      // C10-74, only for a window over memory (a zero-length bind has no MR to check).
      (info.length > 0 && info.mwAccessFlags & (Access.REMOTE_WRITE | Access.REMOTE_ATOMIC) && !(mr instanceof RxeMr && mr.access & Access.LOCAL_WRITE));
    if (bad) {
      qp.failSend(w, WcStatus.MW_BIND_ERR);
      return;
    }
    const m = mw as RxeMw;
    m.unbind();
    m.keyByte = b.rkey & 0xff;
    if (info.length > 0) {
      const r = mr as RxeMr;
      m.mr = r;
      r.boundMwCount++;
      // A zero-based window maps VA 0 to info.addr inside the MR.
      m.iova = info.mwAccessFlags & Access.ZERO_BASED ? 0 : info.addr;
      m.base = info.addr;
      m.length = info.length;
      m.access = info.mwAccessFlags & (Access.REMOTE_READ | Access.REMOTE_WRITE | Access.REMOTE_ATOMIC);
      m.qpn = m.type === MwType.TYPE_2 ? qp.qpn : undefined;
    }
  }
  w.state = WqeState.DONE;
}
