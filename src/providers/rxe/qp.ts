// An rxe queue pair (Linux rxe_qp.c): its state, work queues and attributes. The transport
// work is done by requester.ts (builds and sends request packets), completer.ts (handles
// ACKs and responses, retries, completions) and responder.ts (executes incoming requests).

import { AsyncEventType, MigState, mtuBytes, QpAttr, QpState, QpType, qpStateName, qpTypeName, WR_OPCODE_NAMES, SendFlags, WcFlags, WcOpcode, WcStatus, WrOpcode, type MtuValue } from '../../abi/enums.js';
import type { AhAttr, MwBindInfo, QpAttrFull, QpAttrValues, QpCap, RecvWr, SendWr, Sge, WorkCompletion } from '../../abi/types.js';
import type { ProviderQp } from '../../uapi/provider.js';
import { fail } from '../../uapi/errors.js';
import { addressFromGid, gidFromAddress } from '../../abi/inet.js';
import { psnAdd } from './wire/psn.js';
import { packetOpcodesOf, wrOpcodeInfo, WrFlag, type PacketOpcodes } from './wire/wr-opcodes.js';
import { connectedSourcePort, initialSourcePort } from './wire/udp-sport.js';
import type { SourcePort } from './source-port.js';
import { newQpCounters } from './counters.js';
import { noteIdle } from './window.js';
import type { RxeCq } from './cq.js';
import type { RxePd } from './keys.js';
import { Ring } from './ring.js';
import type { RxeSrq } from './srq.js';
import type { RxeContext } from './context.js';
import type { Seg } from './mem.js';
import { MAX_CWND } from './window.js';
// The QP's tasks (Linux rxe_qp.c points qp->req.task and qp->comp.task at rxe_requester and
// rxe_completer): the requester and completer reach each other only through the QP's methods
// below, and import nothing but types from here, so these imports make no cycle.
import { runRequester } from './requester.js';
import { armRetransmit, stopTimers } from './completer.js';
import { flushDeferredAck } from './responder.js';

export const enum WqeState { POSTED, SENDING, PENDING, DONE }

export interface SendWqe {
  wr: SendWr;
  opcode: number;
  /** Its packets' BTH opcodes on this QP's transport (wire/wr-opcodes.ts). */
  ops: PacketOpcodes;
  signaled: boolean;
  length: number;
  inline: Buffer | undefined;
  segs: Seg[] | undefined;
  state: WqeState;
  status: number;
  firstPsn: number;
  lastPsn: number;
  npkts: number;
  nextPkt: number;
  /** RDMA READ or atomic: counts against max_rd_atomic while outstanding. */
  rdAtomic: boolean;
  local: boolean;
}

/** A receive WQE. Its SGEs are looked up only as a message's bytes reach them (mem.ts placeRecv). */
export interface RecvWqe {
  wrId: RecvWr['wrId'];
  sgList: NonNullable<RecvWr['sgList']>;
  total: number;
}

/** Responder resources for RDMA READ and atomics, kept for duplicate requests. */
export interface RespResource {
  kind: 'read' | 'atomic';
  firstPsn: number;
  lastPsn: number;
  va: number;
  rkey: number;
  length: number;
  atomicOrig: bigint;
  valid: boolean;
  /**
   * A read's reply cursor (Linux's res->cur_psn, res->read.va and res->read.resid): the PSN,
   * VA and bytes left of the next response, and whether that one goes on a reply (MIDDLE or
   * LAST) rather than starting it (FIRST or ONLY; Linux's rdatm_res_state_next / _new).
   */
  curPsn: number;
  curVa: number;
  resid: number;
  started: boolean;
}

export class RxeQp implements ProviderQp {
  state: number = QpState.RESET;
  readonly sq: Ring<SendWqe>;
  readonly rq: Ring<RecvWqe>;
  readonly counters = newQpCounters();
  attr: QpAttrFull;
  /** IP address of the connected peer (RC/UC), from the AV. */
  destAddr: string | undefined;
  /** That address as a GID (IPv4-mapped for IPv4): what a RoCEv2 packet's source must be. */
  private destGid: Buffer | undefined;
  mtu = 1024;
  /** The attribute as set; Linux rxe stores it and raises SQ_DRAINED whatever it says. */
  enSqdAsyncNotify = false;
  /** Entered SQD and SQ_DRAINED not raised yet (Linux's req.state QP_STATE_DRAIN). */
  draining = false;
  destroyed = false;
  /** The UDP source port this QP's packets leave from (rxe's rule, wire/udp-sport.ts), and its sockets. */
  sourcePort: number;
  source: SourcePort;

  /** cwnd/ssthresh: the packet window after losses (Reno-style AIMD; see requester.ts). */
  /** ackPass: the link's AckReq pass that last saw a packet of ours ask (link.ts, AckGroup). */
  /** sentTo: the highest PSN sent so far (a READ request's last response PSN): a response beyond it answers nothing sent (completer.ts). */
  readonly req = { psn: 0, index: 0, noackPkts: 0, running: false, scheduled: false, paused: false, lifWait: false, cwnd: MAX_CWND, ssthresh: MAX_CWND, ackPass: 0, askPsn: -1, wholeTo: -1, sentTo: 0xffffff };
  readonly comp = {
    psn: 0, retryCnt: 0, rnrRetry: 0, lastProgress: 0,
    /** A go-back-N retry is under way and nothing was acknowledged since (Linux comp.started_retry). */
    startedRetry: false,
    /** Retransmit timeouts since the last acknowledgement (completer.ts keepsAlive). */
    idleTimeouts: 0,
    timer: undefined as NodeJS.Timeout | undefined, rnrTimer: undefined as NodeJS.Timeout | undefined,
    /** An expired timer's second look, after the poll phase, where the link cannot read at once (completer.ts expire). */
    timeoutCheck: undefined as NodeJS.Immediate | undefined,
    /** A microtask will stamp lastProgress once the packets just built have left (completer.ts armRetransmit). */
    stampQueued: false,
  };
  readonly resp = {
    psn: 0, msn: 0, nakSent: false,
    /** Kind of the multi-packet message in progress: 0 none, 'send' or 'write'. */
    inMessage: 0 as 0 | 'send' | 'write',
    wqe: undefined as RecvWqe | undefined,
    offset: 0,
    /** The RDMA WRITE in progress: its rkey and VA (Linux qp->resp.rkey, .va), looked up for every packet. */
    writeRkey: 0,
    writeVa: 0,
    writeLen: 0,
    writeDone: 0,
    resources: [] as RespResource[],
    nextResource: 0,
    /**
     * The run of READs executed last: resp.psn before its first and after its last (-1: none),
     * for the PSN a duplicate SEND or WRITE is acknowledged with (responder.ts ackPsnOf).
     */
    readFrom: 0,
    readTo: -1,
    /**
     * The read being answered, a turn's worth of responses at a time (Linux's qp->resp.res),
     * the request packets that came meanwhile, copied, to be executed after it (Linux's
     * req_pkts), and whether its next turn is scheduled or it is being sent now.
     */
    reading: undefined as RespResource | undefined,
    held: [] as Buffer[],
    readTurn: false,
    replying: false,
    /** A deferred ACK (responder.ts deferAck): the PSN to acknowledge, -1 for none, and the MSN at it. */
    ackPsn: -1,
    ackMsn: 0,
    /**
     * The last packet of the last SEND or WRITE executed that no ACK, sent or deferred, covers
     * yet (-1 for none), and the MSN after it: acknowledged before the QP goes to ERR without a
     * NAK (responder.ts ackExecuted).
     */
    unackedPsn: -1,
    unackedMsn: 0,
  };

  constructor(
    readonly ctx: RxeContext,
    readonly qpn: number,
    readonly qpType: number,
    readonly pd: RxePd,
    readonly sendCq: RxeCq,
    readonly recvCq: RxeCq,
    readonly srq: RxeSrq | undefined,
    readonly cap: QpCap,
    readonly sqSigAll: boolean,
  ) {
    // UD has no path: as in rxe, its messages are bounded by the port's MTU.
    if (qpType === QpType.UD) this.mtu = mtuBytes(ctx.device.portMtu);
    this.sourcePort = initialSourcePort(qpn);
    // An RC or UC QP gives this port up when it is connected (useSourcePort); a UD QP keeps it.
    this.source = ctx.device.link.acquirePort(this.sourcePort, false, qpType === QpType.UD);
    this.sq = new Ring(cap.maxSendWr);
    this.rq = new Ring(cap.maxRecvWr);
    this.attr = {
      qpState: QpState.RESET, qpAccessFlags: 0, pkeyIndex: 0, portNum: 1, qkey: 0, ahAttr: undefined, pathMtu: 3,
      timeout: 0, retryCnt: 0, rnrRetry: 0, rqPsn: 0, maxRdAtomic: 0, minRnrTimer: 0, sqPsn: 0, maxDestRdAtomic: 0,
      pathMigState: MigState.MIGRATED, cap: { ...cap }, destQpNum: 0, sqDraining: false,
    };
  }

  get device() { return this.ctx.device; }

  /**
   * Whether a packet from IP address `from` may speak for this connected (RC/UC) QP: only
   * the path's address may, as Linux rxe's check_addr compares the packet's source with the
   * AV's destination GID (on RoCEv2 the GID is the IP address). Before RTR there is no path
   * (and the state check drops everything). The destination address needs no check: the
   * device's socket is bound to its one address, the GID the peer's AV names.
   * The UDP source port is not checked, as Linux does not: it is a flow-hash entropy field
   * (rxe derives it from the QPNs or the flow label, a NIC may pick its own, and it changes
   * with the path), so it says nothing about who sent the packet.
   */
  fromPath(from: string): boolean {
    const dest = this.destAddr;
    if (dest === undefined || from === dest) return true;
    // The same address spelled otherwise (an IPv6 zone suffix, another compression): compare
    // as GIDs. Only mismatching packets get here, so the common path allocates nothing.
    try {
      return gidFromAddress(from).equals(this.destGid!);
    } catch {
      return false;
    }
  }

  query(): QpAttrFull {
    return { ...this.attr, qpState: this.state, cap: { ...this.cap }, sqPsn: this.req.psn, rqPsn: this.resp.psn, sqDraining: this.state === QpState.SQD && this.hasStarted() };
  }

  /**
   * Whether a send WQE the requester has started (PSNs taken, packets sent or to send) is not
   * done yet. SQD drains exactly these; WQEs still only posted wait for RTS (rxe_req.c
   * req_next_wqe: in SQD only a WQE in processing goes on, and the queue counts as drained
   * when the requester has caught up with the completer and the head WQE is still posted).
   */
  hasStarted(): boolean {
    for (let i = 0; i < this.sq.length; i++) {
      const s = this.sq.at(i)!.state;
      if (s === WqeState.SENDING || s === WqeState.PENDING) return true;
    }
    return false;
  }

  modify(a: QpAttrValues, mask: number): void {
    const next = mask & QpAttr.STATE ? a.qpState! : this.state;
    if (mask & QpAttr.AV) {
      const addr = resolveAv(a.ahAttr!, this.device.family);
      this.destAddr = addr;
      this.destGid = gidFromAddress(addr);
      this.attr.ahAttr = a.ahAttr;
    }
    if (mask & QpAttr.PATH_MTU) {
      // Kept and reported as given (rxe_qp_from_attr; the port's max_mtu bounds it), but the
      // packets are cut at no more than the port's active MTU: Linux would send packets the
      // link drops (its IP header has DF set) and retry them until the QP fails.
      this.attr.pathMtu = a.pathMtu!;
      this.mtu = mtuBytes(Math.min(a.pathMtu!, this.device.portMtu) as MtuValue);
    }
    if (mask & QpAttr.ACCESS_FLAGS) this.attr.qpAccessFlags = a.qpAccessFlags!;
    if (mask & QpAttr.PKEY_INDEX) this.attr.pkeyIndex = a.pkeyIndex!;
    if (mask & QpAttr.PORT) this.attr.portNum = a.portNum!;
    if (mask & QpAttr.QKEY) this.attr.qkey = a.qkey! >>> 0;
    if (mask & QpAttr.TIMEOUT) this.attr.timeout = a.timeout!;
    if (mask & QpAttr.RETRY_CNT) { this.attr.retryCnt = a.retryCnt!; this.comp.retryCnt = a.retryCnt!; }
    if (mask & QpAttr.RNR_RETRY) { this.attr.rnrRetry = a.rnrRetry!; this.comp.rnrRetry = a.rnrRetry!; }
    if (mask & QpAttr.RQ_PSN) { this.attr.rqPsn = a.rqPsn!; this.resp.psn = a.rqPsn!; }
    if (mask & QpAttr.SQ_PSN) { this.attr.sqPsn = a.sqPsn!; this.req.psn = a.sqPsn!; this.comp.psn = a.sqPsn!; this.req.askPsn = this.req.wholeTo = -1; this.req.sentTo = psnAdd(a.sqPsn!, -1); }
    // rxe_qp_from_attr: both rounded up to a power of two (0 stays 0), and the responder's
    // READ/atomic resources made afresh for the new count (free_rd_atomic_resources).
    if (mask & QpAttr.MAX_QP_RD_ATOMIC) this.attr.maxRdAtomic = roundUpPow2(a.maxRdAtomic!);
    if (mask & QpAttr.MAX_DEST_RD_ATOMIC) {
      this.attr.maxDestRdAtomic = roundUpPow2(a.maxDestRdAtomic!);
      this.resp.resources = [];
      this.resp.nextResource = 0;
    }
    if (mask & QpAttr.MIN_RNR_TIMER) this.attr.minRnrTimer = a.minRnrTimer!;
    if (mask & QpAttr.DEST_QPN) this.attr.destQpNum = a.destQpNum!;
    if (mask & QpAttr.PATH_MIG_STATE) this.attr.pathMigState = a.pathMigState!;
    if (mask & QpAttr.EN_SQD_ASYNC_NOTIFY) this.enSqdAsyncNotify = Boolean(a.enSqdAsyncNotify);
    // As rxe: a path set on the QP picks the port from its flow label, or from both QPNs.
    if (mask & QpAttr.AV) this.useSourcePort(connectedSourcePort(a.ahAttr!.grh.flowLabel ?? 0, this.qpn, this.attr.destQpNum));
    // An RC QP moved to RTR answers whatever it receives with ACKs from its port: bind the
    // port's socket after this turn instead of at that first ACK. A server's QP reaches RTR as
    // it accepts (before the REP) and first sends after the client's first message, a round
    // trip later, so the bind leaves the client's wait for that ACK.
    if (next === QpState.RTR && this.qpType === QpType.RC && this.state === QpState.INIT) this.device.link.prepareSoon(this.source);

    if (next === this.state) return;
    this.draining = false;
    switch (next) {
      case QpState.RESET: this.reset(); break;
      case QpState.ERR: this.toError(); break;
      case QpState.RTS:
        this.state = next;
        this.attr.qpState = next;
        this.runRequester();
        break;
      case QpState.SQD:
        this.state = next;
        this.attr.qpState = next;
        this.draining = true;
        this.checkDrained();
        break;
      default:
        this.state = next;
        this.attr.qpState = next;
    }
  }

  /** Run the requester task: send what the window allows (rxe_run_task on qp->req.task). */
  runRequester(): void {
    runRequester(this);
  }

  /** Start the retransmit timer unless it runs (rxe_req.c's mod_timer on qp->retrans_timer). */
  armRetransmit(first = false): void {
    armRetransmit(this, first);
  }

  /**
   * Raise SQ_DRAINED once per entry into SQD, when no started WQE is left: at once if there is
   * none, else when the last one completes. Linux 6.1 does so whether or not
   * en_sqd_async_notify was set (req_next_wqe and complete_ack move req.state from DRAIN to
   * DRAINED and call the QP's event handler, which uverbs always installs).
   */
  checkDrained(): void {
    if (this.state === QpState.SQD && this.draining && !this.hasStarted()) {
      this.draining = false;
      this.ctx.event(AsyncEventType.SQ_DRAINED, this);
    }
  }

  private reset(): void {
    flushDeferredAck(this);
    stopTimers(this);
    // Out of the device's senders, or every other RC QP's window stays divided by one more.
    noteIdle(this);
    this.sq.clear();
    this.rq.clear();
    this.state = QpState.RESET;
    this.attr.qpState = QpState.RESET;
    Object.assign(this.req, { psn: 0, index: 0, noackPkts: 0, paused: false, lifWait: false, cwnd: MAX_CWND, ssthresh: MAX_CWND, askPsn: -1, wholeTo: -1, sentTo: 0xffffff });
    Object.assign(this.comp, { psn: 0, startedRetry: false, idleTimeouts: 0 });
    Object.assign(this.resp, { psn: 0, msn: 0, nakSent: false, inMessage: 0, wqe: undefined, offset: 0, resources: [], nextResource: 0, readTo: -1, reading: undefined, held: [], ackPsn: -1, unackedPsn: -1 });
  }

  /** Move to ERR: every outstanding work request completes, in order, with WR_FLUSH_ERR. */
  toError(): void {
    flushDeferredAck(this);
    stopTimers(this);
    noteIdle(this);
    this.state = QpState.ERR;
    this.attr.qpState = QpState.ERR;
    this.draining = false;
    // Everything behind the first WQE that did not complete well is flushed, a local operation
    // the requester has already carried out included: it completes in order, and Linux's
    // flush_send_queue flushes whatever is still queued.
    let behind = false;
    for (let i = 0; i < this.sq.length; i++) {
      const w = this.sq.at(i)!;
      if (w.state !== WqeState.DONE || (behind && w.status === WcStatus.SUCCESS)) {
        w.state = WqeState.DONE;
        w.status = WcStatus.WR_FLUSH_ERR;
      }
      behind ||= w.status !== WcStatus.SUCCESS;
    }
    this.retire();
    this.req.index = 0;
    if (this.resp.wqe) this.flushRecv(this.resp.wqe);
    this.resp.wqe = undefined;
    this.resp.inMessage = 0;
    this.resp.offset = 0;
    this.resp.reading = undefined;
    this.resp.held = [];
    for (const r of this.rq.clear()) this.flushRecv(r);
    if (this.srq) this.ctx.event(AsyncEventType.QP_LAST_WQE_REACHED, this);
  }

  private flushRecv(r: RecvWqe) {
    // Solicited, as Linux's responder posts a flush (do_complete without a packet: rxe_cq_post(..., 1)).
    this.recvCq.push(this.wc(r.wrId, WcStatus.WR_FLUSH_ERR, WcOpcode.RECV, 0), true);
  }

  /** Generate completions for finished send WQEs at the head of the SQ, in order. */
  retire(): void {
    while (this.sq.length) {
      const w = this.sq.at(0)!;
      if (w.state !== WqeState.DONE) break;
      this.sq.shift();
      if (this.req.index > 0) this.req.index--;
      if (w.signaled || w.status !== WcStatus.SUCCESS) {
        // Linux make_send_cqe: byte count and IB_WC_WITH_IMM (SEND_WITH_IMM, RDMA_WRITE_WITH_IMM)
        // only on success; never solicited (the completer posts with solicited 0).
        const ok = w.status === WcStatus.SUCCESS;
        const wc = this.wc(w.wr.wrId, w.status, wrOpcodeInfo(w.wr.opcode)?.wcOpcode ?? 0, ok ? w.length : 0);
        if (ok && (w.opcode === WrOpcode.SEND_WITH_IMM || w.opcode === WrOpcode.RDMA_WRITE_WITH_IMM)) wc.wcFlags = WcFlags.WITH_IMM;
        this.sendCq.push(wc, false);
      }
    }
    if (this.state === QpState.SQD) this.checkDrained();
  }

  wc(wrId: RecvWr['wrId'], status: number, opcode: number, byteLen: number): WorkCompletion {
    return { wrId, status, opcode, vendorErr: 0, byteLen, qpNum: this.qpn, srcQp: 0, wcFlags: 0, pkeyIndex: 0, slid: 0, sl: 0, dlidPathBits: 0 };
  }

  /** Complete a send WQE with an error and take the QP to ERR. */
  failSend(w: SendWqe, status: number): void {
    w.state = WqeState.DONE;
    w.status = status;
    this.toError();
  }

  // ---- posting ----

  postSend(posted: SendWr): void {
    if (this.destroyed) fail('EINVAL', 'QP is destroyed', POST_SEND);
    if (this.state === QpState.RESET || this.state === QpState.INIT || this.state === QpState.RTR) {
      fail('EINVAL', `QP ${this.qpn} is in ${qpStateName(this.state)}; post_send needs RTS`, POST_SEND);
    }
    // The provider's copy, each field read once: what is checked below is what the WQE keeps.
    const wr = copySendWr(posted, this.cap.maxSendSge);
    const ops = packetOpcodesOf(wr.opcode, this.qpType);
    if (!ops) fail('EINVAL', `${WR_OPCODE_NAMES[wr.opcode] ?? String(wr.opcode)} is not allowed on ${qpTypeName(this.qpType)} QPs`, { ...POST_SEND, attr: 'opcode' });
    if (this.sq.full) fail('ENOMEM', `send queue full (${this.sq.capacity} work requests)`, POST_SEND);
    const sgl = wr.sgList ?? [];
    if (!Array.isArray(sgl)) fail('EINVAL', 'must be an array', { ...POST_SEND, attr: 'sg_list' });
    if (sgl.length > this.cap.maxSendSge) fail('EINVAL', `${sgl.length} SGEs exceed max_send_sge ${this.cap.maxSendSge}`, { ...POST_SEND, attr: 'sg_list' });
    let length = 0;
    for (const s of sgl) {
      if (!s || !Number.isInteger(s.addr) || !Number.isInteger(s.length) || s.length < 0 || !Number.isInteger(s.lkey)) fail('EINVAL', 'malformed SGE', { ...POST_SEND, attr: 'sg_list' });
      length += s.length;
    }
    if (length > 0x80000000) fail('EINVAL', `message of ${length} bytes exceeds the 2 GiB limit`, { ...POST_SEND, attr: 'sg_list' });
    const flags = wr.sendFlags ?? 0;
    if (!isU32(flags)) fail('EINVAL', `must be a 32-bit flag word (got ${String(flags)})`, { ...POST_SEND, attr: 'send_flags' });
    const mask = wrOpcodeInfo(wr.opcode)!.mask;
    const isAtomic = (mask & WrFlag.ATOMIC) !== 0;
    const rdAtomic = (mask & (WrFlag.ATOMIC | WrFlag.READ)) !== 0;
    let inline: Buffer | undefined;
    if (flags & SendFlags.INLINE) {
      if (rdAtomic) fail('EINVAL', 'INLINE is only for sends and writes', { ...POST_SEND, attr: 'send_flags' });
      if (length > this.cap.maxInlineData) fail('EINVAL', `${length} bytes exceed max_inline_data ${this.cap.maxInlineData}`, { ...POST_SEND, attr: 'send_flags' });
      inline = Buffer.allocUnsafe(length);
      let off = 0;
      for (const s of sgl) {
        const r = this.device.keys.resolveLocal(s.lkey, this.pd, s.addr, s.length, false);
        if (typeof r === 'string') fail('EINVAL', `inline SGE lkey 0x${s.lkey.toString(16)}: ${r}`, { ...POST_SEND, attr: 'sg_list' });
        off += r.mem.copy(inline, off, r.offset, r.offset + s.length);
      }
    }
    // Every field the requester reads later is checked here: one it cannot use would throw
    // from the send loop, after the WQE took its PSNs, and jam the send queue.
    if (wr.immData !== undefined && !isU32(wr.immData)) fail('EINVAL', `must be a u32 (got ${String(wr.immData)})`, { ...POST_SEND, attr: 'imm_data' });
    if (isAtomic) {
      if (!wr.atomic) fail('EINVAL', 'atomic work requests need it', { ...POST_SEND, attr: 'atomic' });
      if (!isU32(wr.atomic.rkey)) fail('EINVAL', `atomic.rkey must be a u32 (got ${String(wr.atomic.rkey)})`, { ...POST_SEND, attr: 'atomic' });
      if (!isU64Bigint(wr.atomic.compareAdd)) fail('EINVAL', `atomic.compareAdd must be a bigint in [0, 2^64) (got ${String(wr.atomic.compareAdd)})`, { ...POST_SEND, attr: 'atomic' });
      if (wr.atomic.swap !== undefined && !isU64Bigint(wr.atomic.swap)) fail('EINVAL', `atomic.swap must be a bigint in [0, 2^64) (got ${String(wr.atomic.swap)})`, { ...POST_SEND, attr: 'atomic' });
      if (sgl.length !== 1 || length !== 8) fail('EINVAL', 'atomics take one 8-byte SGE', { ...POST_SEND, attr: 'sg_list' });
      checkRemoteAddr(wr.atomic.remoteAddr, 'atomic');
      if ((typeof wr.atomic.remoteAddr === 'bigint' ? Number(wr.atomic.remoteAddr & 7n) : wr.atomic.remoteAddr % 8) !== 0) {
        fail('EINVAL', 'atomic remote address must be 8-byte aligned', { ...POST_SEND, attr: 'atomic' });
      }
    }
    if (mask & (WrFlag.WRITE | WrFlag.READ)) {
      if (!wr.rdma) fail('EINVAL', 'RDMA work requests need it', { ...POST_SEND, attr: 'rdma' });
      checkRemoteAddr(wr.rdma.remoteAddr, 'rdma');
      if (!isU32(wr.rdma.rkey)) fail('EINVAL', `rdma.rkey must be a u32 (got ${String(wr.rdma.rkey)})`, { ...POST_SEND, attr: 'rdma' });
    }
    if (this.qpType === QpType.UD) {
      if (!wr.ud || !this.device.isAh(wr.ud.ah)) fail('EINVAL', 'UD sends need it, with an AH of this device', { ...POST_SEND, attr: 'ud' });
      if (!Number.isInteger(wr.ud.remoteQpn) || wr.ud.remoteQpn < 0 || wr.ud.remoteQpn > 0xffffff) fail('EINVAL', `ud.remoteQpn must be a 24-bit QPN (got ${String(wr.ud.remoteQpn)})`, { ...POST_SEND, attr: 'ud' });
      if (!isU32(wr.ud.remoteQkey)) fail('EINVAL', `ud.remoteQkey must be a u32 (got ${String(wr.ud.remoteQkey)})`, { ...POST_SEND, attr: 'ud' });
      if (length > this.mtu) fail('EINVAL', `UD message of ${length} bytes exceeds the port MTU ${this.mtu}`, { ...POST_SEND, attr: 'sg_list' });
    }
    if (wr.opcode === WrOpcode.BIND_MW) {
      const b = wr.bindMw;
      if (!b) fail('EINVAL', 'BIND_MW needs it', { ...POST_SEND, attr: 'bind_mw' });
      if (!isU32(b.rkey)) fail('EINVAL', `bindMw.rkey must be a u32 (got ${String(b.rkey)})`, { ...POST_SEND, attr: 'bind_mw' });
      const i = b.bindInfo;
      if (typeof i !== 'object' || i === null || !Number.isSafeInteger(i.addr) || i.addr < 0 || !Number.isSafeInteger(i.length) || i.length < 0 || !isU32(i.mwAccessFlags)) {
        fail('EINVAL', 'bindMw.bindInfo must be { mr, addr, length, mwAccessFlags } with non-negative integers (mwAccessFlags a 32-bit flag word)', { ...POST_SEND, attr: 'bind_mw' });
      }
      // rdma-core's rxe validate_send_wr: a bind carries no data and no immediate.
      if (sgl.length > 0) fail('EINVAL', 'BIND_MW takes no SGEs', { ...POST_SEND, attr: 'sg_list' });
      if (wr.immData) fail('EINVAL', 'BIND_MW takes no immediate data', { ...POST_SEND, attr: 'imm_data' });
    }
    if (wr.opcode === WrOpcode.LOCAL_INV || wr.opcode === WrOpcode.SEND_WITH_INV) {
      if (!isU32(wr.invalidateRkey)) fail('EINVAL', 'is required for LOCAL_INV and SEND_WITH_INV, a u32', { ...POST_SEND, attr: 'invalidate_rkey' });
    }
    const local = (mask & WrFlag.LOCAL_OP) !== 0;
    const wqe: SendWqe = {
      wr, opcode: wr.opcode, ops, signaled: this.sqSigAll || (flags & SendFlags.SIGNALED) !== 0, length, inline,
      segs: undefined, state: WqeState.POSTED, status: WcStatus.SUCCESS, firstPsn: 0, lastPsn: 0, npkts: 0, nextPkt: 0, rdAtomic, local,
    };
    this.sq.push(wqe);
    if (this.state === QpState.ERR) {
      wqe.state = WqeState.DONE;
      wqe.status = WcStatus.WR_FLUSH_ERR;
      this.retire();
      return;
    }
    this.runRequester();
  }

  postRecv(wr: RecvWr): void {
    if (this.destroyed) fail('EINVAL', 'QP is destroyed', POST_RECV);
    if (this.srq) fail('EINVAL', 'QP uses an SRQ; post receives to the SRQ', POST_RECV);
    if (this.state === QpState.RESET) fail('EINVAL', `QP ${this.qpn} is in RESET; post_recv needs INIT or later`, POST_RECV);
    const r = validateRecv(wr, this.cap.maxRecvSge);
    if (this.rq.full) fail('ENOMEM', `receive queue full (${this.rq.capacity} work requests)`, POST_RECV);
    if (this.state === QpState.ERR) {
      this.flushRecv(r);
      return;
    }
    this.rq.push(r);
  }

  /** The next receive WQE (own RQ or SRQ), consumed. */
  takeRecv(): RecvWqe | undefined {
    return this.srq ? this.srq.take() : this.rq.shift();
  }

  advanceSqPsn(n: number): void {
    this.req.psn = psnAdd(this.req.psn, n);
  }

  private useSourcePort(port: number): void {
    if (port === this.sourcePort || this.destroyed) return;
    const link = this.device.link;
    link.releasePort(this.source);
    this.sourcePort = port;
    this.source = link.acquirePort(port);
  }

  destroy(): void {
    if (!this.destroyed) {
      // What this QP still owes the peer leaves before its source port may close.
      flushDeferredAck(this);
      if (this.device.link.queued > 0) this.device.link.flush();
      this.device.link.releasePort(this.source);
    }
    this.destroyed = true;
    stopTimers(this);
    noteIdle(this);
    this.resp.reading = undefined;
    this.resp.held = [];
    this.state = QpState.ERR;
  }
}

/** Where post_send errors happen: QP.POST_SEND, attribute named as in ibv_send_wr. */
const POST_SEND = { object: 'QP', method: 'POST_SEND' } as const;
const POST_RECV = { object: 'QP', method: 'POST_RECV' } as const;

const U64_MAX = (1n << 64n) - 1n;

/** A key, immediate data or Q_Key: an integer in [0, 2^32). */
/** Linux roundup_pow_of_two, with 0 kept as 0 (as rxe_qp_from_attr keeps it). */
function roundUpPow2(n: number): number {
  return n <= 1 ? n : 2 ** Math.ceil(Math.log2(n));
}

const isU32 = (v: unknown): v is number => Number.isInteger(v) && (v as number) >= 0 && (v as number) <= 0xffff_ffff;
/** An atomic operand: a bigint in [0, 2^64). */
const isU64Bigint = (v: unknown): v is bigint => typeof v === 'bigint' && v >= 0n && v <= U64_MAX;

/** A remote address is a u64: a safe-integer number (larger ones have lost bits) or a bigint. */
function checkRemoteAddr(v: unknown, attr: 'rdma' | 'atomic'): void {
  if (typeof v === 'bigint' ? !isU64Bigint(v) : !Number.isSafeInteger(v) || (v as number) < 0) {
    fail('EINVAL', `${attr}.remoteAddr must be a u64: a bigint, or a number below 2^53 (got ${String(v)})`, { ...POST_SEND, attr });
  }
}

export function validateRecv(posted: RecvWr, maxSge: number, object: 'QP' | 'SRQ' = 'QP'): RecvWqe {
  const wr = copyRecvWr(posted, maxSge); // the provider's copy (see copySendWr): checked, and kept
  const site = { object, method: 'POST_RECV', attr: 'sg_list' };
  const sgl = wr.sgList ?? [];
  if (!Array.isArray(sgl)) fail('EINVAL', 'must be an array', site);
  if (sgl.length > maxSge) fail('EINVAL', `${sgl.length} SGEs exceed max_${object === 'QP' ? 'recv_' : ''}sge ${maxSge}`, site);
  let total = 0;
  for (const s of sgl) {
    if (!s || !Number.isInteger(s.addr) || !Number.isInteger(s.length) || s.length < 0 || !Number.isInteger(s.lkey)) fail('EINVAL', 'malformed SGE', site);
    total += s.length;
  }
  return { wrId: wr.wrId, sgList: sgl, total };
}

/*
 * A posted work request is the provider's copy, as ibv_post_send and ibv_post_recv copy the
 * caller's into the queue: the caller may reuse or change its WR and SGE objects as soon as
 * the call returns, and what was checked at the post is what runs (a field read again later
 * could have become something the send path cannot use). Each field is read once, into the
 * copy, and the checks run on the copy; a value of the wrong kind is kept as it is, for the
 * checks to refuse by name.
 */

const NO_SGES = Object.freeze([]) as unknown as Sge[];

const isObject = (x: unknown): x is Record<string, unknown> => typeof x === 'object' && x !== null;

/** A bind's info, its MR as its key (Linux keeps wr.mw.mr_lkey in the WQE): deregistered after the post, the bind fails on the key. */
function copyBindInfo(i: unknown): MwBindInfo {
  if (!isObject(i)) return i as MwBindInfo;
  const mr = i.mr;
  return { mr: isObject(mr) ? { lkey: mr.lkey as number } : mr as undefined, addr: i.addr as number, length: i.length as number, mwAccessFlags: i.mwAccessFlags as number };
}

/**
 * The SGEs, copied. An sg_list that is not an array, or longer than `max`, is kept as it is,
 * for the checks to refuse (a huge one is not walked first).
 */
function copySgList(sgl: unknown, max: number): Sge[] | undefined {
  if (!Array.isArray(sgl) || sgl.length > max) return sgl as Sge[] | undefined;
  if (sgl.length === 0) return NO_SGES;
  const out = new Array<Sge>(sgl.length);
  for (let i = 0; i < sgl.length; i++) {
    const s: unknown = sgl[i];
    out[i] = isObject(s) ? { addr: s.addr as number, length: s.length as number, lkey: s.lkey as number } : s as Sge;
  }
  return out;
}

/** A receive work request's copy (see above); validateRecv checks it. */
function copyRecvWr(wr: RecvWr, maxSge: number): RecvWr {
  return isObject(wr) ? { wrId: wr.wrId, sgList: copySgList(wr.sgList, maxSge) } : wr;
}

function copySendWr(wr: SendWr, maxSge: number): SendWr {
  const c: SendWr = { wrId: wr.wrId, opcode: wr.opcode, sendFlags: wr.sendFlags, sgList: copySgList(wr.sgList, maxSge) };
  const { immData, invalidateRkey, rdma, atomic, ud, bindMw } = wr;
  if (immData !== undefined) c.immData = immData;
  if (invalidateRkey !== undefined) c.invalidateRkey = invalidateRkey;
  if (rdma !== undefined) c.rdma = isObject(rdma) ? { remoteAddr: rdma.remoteAddr, rkey: rdma.rkey } : rdma;
  if (atomic !== undefined) {
    const swap = isObject(atomic) ? atomic.swap : undefined;
    c.atomic = isObject(atomic) ? { remoteAddr: atomic.remoteAddr, rkey: atomic.rkey, compareAdd: atomic.compareAdd, ...(swap === undefined ? {} : { swap }) } : atomic;
  }
  if (ud !== undefined) c.ud = isObject(ud) ? { ah: ud.ah, remoteQpn: ud.remoteQpn, remoteQkey: ud.remoteQkey } : ud;
  if (bindMw !== undefined) c.bindMw = isObject(bindMw) ? { mw: bindMw.mw, rkey: bindMw.rkey, bindInfo: copyBindInfo(bindMw.bindInfo) } : bindMw;
  return c;
}

export function resolveAv(ah: AhAttr, family: 4 | 6): string {
  const addr = addressFromGid(ah.grh.dgid);
  const isV4 = addr.includes('.');
  if (isV4 !== (family === 4)) fail('EINVAL', `dgid ${addr} is not reachable from an IPv${family} device`, { attr: 'ah_attr' });
  return addr;
}
