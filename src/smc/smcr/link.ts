// One SMC-R link: an RC QP between two RoCE devices, with the receive buffers for the 44-byte
// LLC and CDC messages (Linux: struct smc_link, smc_ib.c's QP setup and smc_wr.c's work
// request handling). The QP is created and its receives posted before the peer learns its QPN
// (the CLC Accept or Confirm), then moved to RTS against the peer's QPN, PSN and GID with the
// attributes Linux 6.12 gives an SMC-R link QP (net/smc/smc_ib.c):
//   INIT: qp_access_flags LOCAL_WRITE | REMOTE_WRITE (smc_ib_modify_qp_init, 47-60)
//   RTR:  path_mtu = the smaller of the two QP MTUs, hop limit 1 (no gateway), max_dest_rd_atomic
//         1, min_rnr_timer 5 (smc_ib_modify_qp_rtr, 62-93)
//   RTS:  timeout 15, retry_cnt 7, rnr_retry 7, max_rd_atomic 1 (smc_ib_modify_qp_rts, 95-112;
//         the SMC_QP_* values at 35-38)
// and a random 24-bit initial PSN (smc_core.c 822-824).
//
// Sends are signalled 44-byte inline SENDs (CDC, LLC) and RDMA WRITEs from registered send
// buffers; the send queue has a fixed depth, and what does not fit waits for completions
// (Linux waits for a free smc_wr_tx slot the same way, smc_wr.c smc_wr_tx_get_free_slot). A few
// slots are kept for LLC messages (LLC_RESERVE), so connections cannot crowd them out.
// Completions come through a completion channel, so an idle link costs no CPU.

import { randomBytes } from 'node:crypto';
import { Access, QpType, SendFlags, WcOpcode, WcStatus, WrOpcode, wcStatusStr, type MtuValue } from '../../abi/enums.js';
import type { Sge, WorkCompletion } from '../../abi/types.js';
import { connectQp, initQp } from '../../verbs/connect.js';
import type { CompChannel, CQ, MR, PD, QP } from '../../verbs/api.js';
import type { SmcrDevice } from './device.js';
import type { RemoteAddr } from '../../abi/remote-addr.js';
import { rethrowLater } from '../poller.js';

/** Linux's SMC_WR_TX_SIZE: every LLC (v1) and CDC message is 44 bytes. */
export const WR_MSG_LEN = 44;
/** Receive slot size (Linux: SMC_WR_BUF_SIZE 48); its first 44 bytes take a message's start. */
const RX_SLOT = 48;
/**
 * SMC-Rv2 LLC messages may be longer than 44 bytes (ADD_LINK with its v2 extension): as Linux
 * (smc_wr.c 613-626), each receive has a second SGE, the rest of an 8 KiB buffer the link's
 * receives share, and such a message is sent without INLINE from an 8 KiB buffer
 * (SMC_WR_BUF_V2_SIZE, smc_wr_tx_v2_send).
 */
const V2_BUF = 8192;
/** Queue depths. Linux: SMC_WR_BUF_CNT 16 send slots and 3 × that receives (smc_wr.h 21); here more, as RDMA WRITEs share the queue. */
const SQ_DEPTH = 256;
const RQ_DEPTH = 256;
/**
 * Send queue slots only LLC messages may take: connections' WRITEs and CDCs stop at
 * SQ_DEPTH - LLC_RESERVE, so a DELETE_LINK, CONFIRM_LINK or an answer still goes when a link
 * carries many busy connections (Linux waits up to SMC_WR_TX_WAIT_FREE_SLOT_TIME, 10 s, for a
 * free slot, smc_wr_tx_get_free_slot; here nothing may block, so the slots are set aside).
 */
export const LLC_RESERVE = 8;

/** Our end of a link as the CLC Accept/Confirm carry it. */
export interface LinkLocal { qpn: number; psn: number; gid: Buffer; mac: Buffer; mtu: number }
/** The peer's end. */
export interface LinkRemote { qpn: number; psn: number; gid: Buffer; mtu: number }

export interface LinkHandlers {
  /** A 44-byte (or longer) message arrived: CDC (first byte 0xFE) or LLC. The buffer is valid only during the call. */
  message(msg: Buffer): void;
  /** The send queue has room again. */
  sendable(): void;
  /** The link failed: a work request completed in error (retries exhausted, the peer's NAK, a flush). */
  down(reason: string): void;
}

export type Op = { kind: 'send'; msg: Buffer } | { kind: 'write'; sge: Sge; remoteAddr: RemoteAddr; rkey: number };

export class SmcrLink {
  readonly qp: QP;
  private readonly cq: CQ;
  private readonly channel: CompChannel;
  private readonly rxMr: MR;
  private readonly rxBuf: Buffer;
  /** Where a message is staged for an INLINE SEND (the provider copies it at post time). */
  private readonly txBuf = Buffer.alloc(64);
  private readonly txMr: MR;
  private readonly rxV2 = Buffer.alloc(V2_BUF - WR_MSG_LEN);
  private readonly rxV2Mr: MR;
  private readonly txV2 = Buffer.alloc(V2_BUF);
  private readonly txV2Mr: MR;
  private readonly stopEvents: () => void;
  readonly local: LinkLocal;
  remote: LinkRemote | undefined;
  /** Work requests posted and not yet completed. */
  private inFlight = 0;
  private wrSeq = 0;
  /** The last send work request completed (they complete in order on an RC QP). */
  completedSeq = 0;
  /** The last send work request that completed successfully (CDCs confirmed sent, for a failover). */
  okSeq = 0;
  /** smc_link.link_id (the server assigns it) and link_uid; 0 and empty until the link group sets them. */
  id = 0;
  uid: Buffer = Buffer.alloc(4);
  /** The peer's link UID (smc_link.peer_link_uid), from its CONFIRM_LINK; zeros until then. */
  peerUid: Buffer = Buffer.alloc(4);
  /** CONFIRM_LINK done on this link (Linux: SMC_LNK_ACTIVE). */
  active = false;
  /** When the link last received anything (performance.now()), for TEST_LINK. */
  lastRx = performance.now();
  /** When a TEST_LINK answer last came (performance.now()); 0 before any. */
  testAnsweredAt = 0;
  testTimer: NodeJS.Timeout | undefined;
  testWait: NodeJS.Timeout | undefined;
  isDown = false;
  downReason = '';
  /** Counters (smcss, tests): messages sent and received, RDMA WRITEs posted. */
  readonly stats = { sends: 0, writes: 0, writeBytes: 0, recvs: 0 };
  handlers: LinkHandlers | undefined;

  /** pd: the link group's PD on this device (lgr.ts pdOn): its QP and MRs are reachable only with the group's keys. */
  constructor(readonly dev: SmcrDevice, pd: PD) {
    this.channel = dev.ctx.createCompChannel();
    this.cq = dev.ctx.createCq(SQ_DEPTH + RQ_DEPTH, { channel: this.channel });
    this.qp = pd.createQp({
      qpType: QpType.RC, sendCq: this.cq, recvCq: this.cq,
      cap: { maxSendWr: SQ_DEPTH, maxRecvWr: RQ_DEPTH, maxSendSge: 1, maxRecvSge: 2, maxInlineData: WR_MSG_LEN },
    });
    initQp(this.qp, { access: Access.REMOTE_WRITE | Access.LOCAL_WRITE });
    this.rxBuf = Buffer.alloc(RQ_DEPTH * RX_SLOT);
    this.rxMr = pd.regMr(this.rxBuf, Access.LOCAL_WRITE);
    this.txMr = pd.regMr(this.txBuf, 0);
    this.rxV2Mr = pd.regMr(this.rxV2, Access.LOCAL_WRITE);
    this.txV2Mr = pd.regMr(this.txV2, 0);
    for (let i = 0; i < RQ_DEPTH; i++) this.postRecv(i);
    this.local = { qpn: this.qp.qpn, psn: randomBytes(3).readUIntBE(0, 3), gid: dev.gid, mac: dev.mac, mtu: dev.mtu };
    this.stopEvents = this.channel.onCqEvent(() => this.drain());
    this.cq.reqNotify();
  }

  /** INIT -> RTR -> RTS against the peer, with Linux's SMC-R QP attributes (see above). */
  connect(remote: LinkRemote): void {
    this.remote = remote;
    connectQp(this.qp, { qpn: remote.qpn, psn: remote.psn, gid: remote.gid }, {
      psn: this.local.psn, mtu: Math.min(this.local.mtu, remote.mtu) as MtuValue, access: Access.REMOTE_WRITE | Access.LOCAL_WRITE,
      timeout: 15, retryCnt: 7, rnrRetry: 7, minRnrTimer: 5, maxRdAtomic: 1, maxDestRdAtomic: 1, hopLimit: 1,
    });
  }

  /** The last send work request posted: buffers it reads are free once completedSeq reaches it. */
  get postedSeq(): number { return this.wrSeq; }

  /** Room for n more work requests of a connection (WRITEs, CDCs) in the send queue: all but the LLC_RESERVE slots. */
  canPost(n: number): boolean {
    return !this.isDown && this.inFlight + n <= SQ_DEPTH - LLC_RESERVE;
  }

  /** Room for one LLC message: any free slot, the reserved ones included. */
  canPostLlc(): boolean {
    return !this.isDown && this.inFlight < SQ_DEPTH;
  }

  /**
   * Post work requests in order (RC keeps their order on the wire and at the peer). The caller
   * checks canPost() first; a post on a link that went down is dropped.
   */
  post(ops: Op[]): void {
    for (const op of ops) {
      if (op.kind === 'send') this.send(op.msg);
      else this.write(op.sge, op.remoteAddr, op.rkey);
    }
  }

  /** Post one signalled INLINE SEND of a 44-byte message (CDC, LLC); the caller checked canPost(). */
  send(msg: Buffer): void {
    if (this.isDown) return;
    if (msg.length > V2_BUF) throw new RangeError(`an LLC message of ${msg.length} bytes`);
    try {
      if (msg.length > WR_MSG_LEN) {
        // A long v2 LLC message (rare: one LLC flow at a time uses the buffer, as Linux's wr_tx_buf_v2).
        msg.copy(this.txV2, 0);
        this.qp.postSend({ wrId: this.wrSeq + 1, opcode: WrOpcode.SEND, sendFlags: SendFlags.SIGNALED, sgList: [this.txV2Mr.sge(0, msg.length)] });
      } else {
        msg.copy(this.txBuf, 0);
        this.qp.postSend({ wrId: this.wrSeq + 1, opcode: WrOpcode.SEND, sendFlags: SendFlags.SIGNALED | SendFlags.INLINE, sgList: [this.txMr.sge(0, msg.length)] });
      }
    } catch (e) {
      return this.postFailed(e);
    }
    this.wrSeq++;
    this.inFlight++;
    this.stats.sends++;
  }

  /** Post one signalled RDMA WRITE; the caller checked canPost(). */
  write(sge: Sge, remoteAddr: RemoteAddr, rkey: number): void {
    if (this.isDown) return;
    try {
      this.qp.postSend({ wrId: this.wrSeq + 1, opcode: WrOpcode.RDMA_WRITE, sendFlags: SendFlags.SIGNALED, sgList: [sge], rdma: { remoteAddr, rkey } });
    } catch (e) {
      return this.postFailed(e);
    }
    this.wrSeq++;
    this.inFlight++;
    this.stats.writes++;
    this.stats.writeBytes += sge.length;
  }

  /**
   * Mark the link down now without telling the handlers: the link group is taking it down
   * itself, and nothing may post on it meanwhile (its QP and MRs may be gone already: a closed
   * device's context destroys them before its link groups hear of it).
   */
  markDown(reason: string): void {
    if (this.isDown) return;
    this.isDown = true;
    this.downReason = reason;
  }

  /**
   * A post failed (the QP or an MR is gone: the device was closed): the link is down. The
   * handlers hear of it after the caller's stack unwound, not inside a write or a close.
   */
  postFailed(e: unknown): void {
    if (this.isDown) return;
    const reason = `posting failed: ${(e as Error).message}`;
    this.markDown(reason);
    queueMicrotask(() => this.handlers?.down(reason));
  }

  private postRecv(slot: number): void {
    this.qp.postRecv({ wrId: slot, sgList: [this.rxMr.sge(slot * RX_SLOT, WR_MSG_LEN), this.rxV2Mr.sge(0, this.rxV2.length)] });
  }

  /**
   * Handle the completions, in batches, until the CQ is empty and armed again. Handling runs
   * application callbacks ('data', 'drain', write callbacks, through the link group and the
   * connections); one that throws must not end the batch (its other completions would be lost:
   * receive slots not reposted, send slots not counted free, CDCs not confirmed) nor leave the
   * CQ unarmed (no event would come again, and every connection on the link would stall until
   * TEST_LINK took it down). Each message's handling is wrapped (handle), and the exception
   * thrown again on its own tick, as the SMC-D poller does (poller.ts rethrowLater); anything
   * else that throws here is thrown again the same way, and the CQ is drained (and armed) again
   * on the next turn.
   */
  private drain(): void {
    let freed = false;
    try {
      for (;;) {
        const wcs = this.cq.poll(32);
        if (wcs.length === 0) {
          if (this.isDown) return;
          this.cq.reqNotify();
          const more = this.cq.poll(32);
          if (more.length === 0) break;
          freed = this.handle(more) || freed;
          continue;
        }
        freed = this.handle(wcs) || freed;
      }
    } catch (err) {
      // The CQ is gone (its device closed under the link): the link is down, nothing to rethrow.
      if (err instanceof Error && (err as NodeJS.ErrnoException).code === 'EBADF') {
        this.postFailed(err);
        return;
      }
      rethrowLater(err);
      if (!this.isDown) setImmediate(() => { if (!this.isDown) this.drain(); });
      return;
    }
    if (freed && !this.isDown) {
      try {
        this.handlers?.sendable();
      } catch (err) {
        rethrowLater(err);
      }
    }
  }

  private handle(wcs: WorkCompletion[]): boolean {
    let freed = false;
    for (const wc of wcs) {
      if (wc.opcode & WcOpcode.RECV) {
        if (wc.status !== WcStatus.SUCCESS) { this.fail(`receive completed with ${wcStatusStr(wc.status)}`); continue; }
        const slot = Number(wc.wrId);
        this.stats.recvs++;
        const off = slot * RX_SLOT;
        this.lastRx = performance.now();
        const head = this.rxBuf.subarray(off, off + Math.min(wc.byteLen, WR_MSG_LEN));
        try {
          this.handlers?.message(wc.byteLen <= WR_MSG_LEN ? head : Buffer.concat([head, this.rxV2.subarray(0, wc.byteLen - WR_MSG_LEN)]));
        } catch (err) {
          rethrowLater(err); // the batch goes on (see drain)
        } finally {
          if (!this.isDown) {
            try {
              this.postRecv(slot);
            } catch (e) {
              this.postFailed(e); // the QP is gone (its device closed)
            }
          }
        }
      } else {
        this.inFlight--;
        this.completedSeq = Number(wc.wrId);
        freed = true;
        if (wc.status === WcStatus.SUCCESS && !this.isDown) this.okSeq = this.completedSeq;
        if (wc.status !== WcStatus.SUCCESS) this.fail(`${wc.opcode === WcOpcode.RDMA_WRITE ? 'RDMA WRITE' : 'SEND'} completed with ${wcStatusStr(wc.status)}`);
      }
    }
    return freed;
  }

  private fail(reason: string): void {
    if (this.isDown) return;
    this.isDown = true;
    this.downReason = reason;
    try {
      this.handlers?.down(reason);
    } catch (err) {
      rethrowLater(err); // an application callback of a connection that failed with the link
    }
  }

  /** Destroy the QP and its CQ (the peer's next packet is answered by nothing: its retries run out). */
  destroy(): void {
    this.isDown = true;
    this.active = false;
    clearTimeout(this.testTimer);
    clearTimeout(this.testWait);
    this.stopEvents();
    for (const f of [() => this.qp.destroy(), () => this.rxMr.dereg(), () => this.txMr.dereg(), () => this.rxV2Mr.dereg(), () => this.txV2Mr.dereg(), () => this.cq.destroy(), () => this.channel.destroy()]) {
      try { f(); } catch { /* the context is gone already */ }
    }
  }
}
