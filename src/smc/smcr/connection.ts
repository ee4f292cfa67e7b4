// One SMC-R connection's data path (Linux: smc_tx.c, smc_rx.c and the SMC-R half of smc_cdc.c).
// The peer RDMA-WRITEs into our RMB (a ring) and tells us with a CDC message; we copy what we
// send into our send buffer and RDMA-WRITE it into the peer's RMB at our producer cursor (two
// WRITEs when the ring wraps, smc_tx.c smcr_tx_rdma_writes), then SEND a CDC with the new
// cursor. RC delivers the WRITEs before the SEND that follows them, so a CDC never announces
// bytes that are not there. Cursors are byte totals here and {wrap, count} on the wire, as in
// SMC-D (smcd-connection.ts); everything the peer sends is checked: a cursor that moves back
// or past the ring is a protocol error, never an out-of-bounds access.
//
// The consumer cursor goes back to the peer as Linux's smc_tx_consumer_update decides
// (smc_tx.c 699-733): at once when the peer asked (cons_curs_upd_req) or on a forced update;
// otherwise when what we consumed since the last update exceeds the update limit
// (smc_rmb_wnd_update_limit, smc_core.c 2119-2122: max(rmbe_size / 10, SOCK_MIN_SNDBUF / 2))
// and either the writer sees half the ring or less free, or it said write_blocked. Every CDC
// we send carries the cursor anyway. write_blocked is set as smc_tx.c 501 does: what we have
// to send is at least the room in the peer's RMB. A Linux sender's urgent byte (send(MSG_OOB):
// urg_data_present) is not delivered, as a TCP socket without SO_OOBINLINE (node:net's) drops it
// from the stream, and the consumer cursor goes back as soon as the reader passed it
// (smc_cdc_handle_urg_data_arrival, smc_rx_update_consumer); urg_data_pending is answered with
// a CDC at once (smc_cdc_msg_recv_action).

import {
  CONN_ABORT, CONN_CLOSED, CONN_DONE_WRITING, PROD_CONS_UPD_REQ, PROD_WRITE_BLOCKED,
} from '../cdc.js';
import type { SmcTransport, SmcTransportMode, TransportDiag, TransportEvents } from '../transport.js';
import { cdcSeqBefore, encodeSmcrCdc, type SmcrCdc } from '../wire/cdc-r.js';
import type { Rmb, SmcrLinkGroup } from './lgr.js';
import type { SmcrLink } from './link.js';
import { remoteAddrPlus, type RemoteAddr } from '../../abi/remote-addr.js';
import { smcrActivity, writeWaitEnded, writeWaits } from '../poller.js';
import { noteSmcrOrderlyClose } from './discovery.js';
import { PeerEnd } from '../peer-end.js';
import { freshSlice } from '../slice-memory.js';

function toWire(total: number, ring: number): { wrap: number; count: number } {
  return { wrap: Math.floor(total / ring) & 0xffff, count: total % ring };
}

function cursorDelta(total: number, ring: number, wrap: number, count: number): number {
  const last = toWire(total, ring);
  return ((wrap - last.wrap) & 0xffff) * ring + count - last.count;
}

/** The peer's RMB element as its Accept or Confirm described it (wireAddr: the address's 64 bits as sent; addr: as the writes take it). */
export interface PeerRmb { token: number; rkey: number; addr: RemoteAddr; wireAddr: bigint; size: number }
/** The peer's RMB on one link: its rkey there (each device has its own) and its address there. */
export interface PeerKey { rkey: number; addr: RemoteAddr }

/** SOCK_MIN_SNDBUF / 2 on x86-64 Linux: TCP_SKB_MIN_TRUESIZE, 2048 + the cache-aligned sk_buff (256). */
const UPDATE_LIMIT_MIN = 2304;
/** The most one delivery copies out of the ring. */
const SLICE = 64 * 1024;
/**
 * A WRITE (and the CDC that makes it readable) carries at most a quarter of the peer's RMB,
 * and no less than this. Measured on SMC-R bulk between two namespaces (64 KiB writes, 1 MiB
 * RMBs, alternating runs): the whole send buffer in one WRITE, as Linux (whose default buffers
 * are 64 KiB), 303 MiB/s median; quarters 344 MiB/s; eighths alike, 64 KiB pieces worse.
 */
const WRITE_CHUNK_MIN = 64 * 1024;
/**
 * How long the end of the peer's TCP connection waits for the peer's closing CDC (peerTcpEnded)
 * before it takes the peer's process as gone: the link's RTO is 134 ms (timeout 15), so a live
 * peer's CDC gets through several losses in this time (300 ms, until 2026-12-06, was two or
 * three). Inside the 2 s in which a dead peer must be noticed.
 */
const CLOSE_GRACE_MS = 1000;
/** The longest a closing CDC is waited for from a peer whose link keeps delivering (peerTcpEnded). */
const CLOSE_WAIT_MAX_MS = 60_000;

// A write waiting for room in the peer's RMB holds the event loop (poller.ts writeWaits): the
// rxe device is unref()'d and SMC-R's awake loop stops 300 us after the last traffic. A peer that
// died meanwhile is found by TEST_LINK (lgr.ts): the link goes down, the write fails
// (ECONNABORTED) and the hold goes.
/** Connections whose write waits for the peer's consumer cursor. */
let holders = 0;

/** How many SMC-R connections have a write waiting for the peer to consume (each holds the event loop), for tests and diagnostics. */
export function smcrWaitingWriters(): number {
  return holders;
}

export class SmcrConnection implements SmcTransport {
  readonly rxRing: number;
  readonly txRing: number;
  private peerProduced = 0;
  private consumed = 0;
  private produced = 0;
  private peerConsumed = 0;
  /** Our consumer cursor as last sent to the peer. */
  private consSent = 0;
  private prodFlags = 0;
  private connFlags = 0;
  private peerProdFlags = 0;
  private peerConnFlags = 0;
  /**
   * The peer's closing CDC (peer_conn_closed or peer_conn_abort) arrived: nothing more will be
   * written into our RMB. peerConnFlags may also hold a close only inferred (peerTcpEnded).
   */
  private closedOnWire = false;
  /**
   * Where the peer's urgent byte is (its position in the peer's byte stream, a total like
   * consumed), until the reader gets to it; -1: none. See onCdc.
   */
  private urgAt = -1;
  private seqno = 0;
  private lastSeq: number | undefined;
  private paused = false;
  private readonly end = new PeerEnd();
  private failed = false;
  /** Events go to the socket only once the handshake settled (start()). */
  private started = false;
  /**
   * A failure between joining the link group and the handshake's settling (the link went
   * down, a hostile early CDC): the socket gets it once it is SMC's (settled()).
   */
  private earlyError: { message: string; code: string } | undefined;
  /** A CDC is owed to the peer but the send queue was full: the link group sends it when it can. */
  cdcPending = false;
  /** Bytes RDMA-written into the peer's RMB and announced (produced counts those still only in the send buffer). */
  private written = 0;
  /** A flush of this tick's writes is queued (a microtask). */
  private flushQueued = false;
  private graceTimer: NodeJS.Timeout | undefined;
  private readonly updateLimit: number;
  /** The most one RDMA WRITE (with its CDC) carries: see flush. */
  private readonly writeChunk: number;
  released = false;
  /**
   * Released with WRITEs or a CDC still unconfirmed (the link group keeps it in its closing
   * set): it still sends a CDC it owes (the send queue was full); a failover ends it.
   */
  closing = false;
  bytesReceived = 0;
  bytesSent = 0;
  /** Writes that wrapped the peer's ring (two RDMA WRITEs), for tests and diagnostics. */
  wrapWrites = 0;
  /** Times the connection moved to another link (a failover), for tests and diagnostics. */
  switches = 0;
  /** The peer's RMB on each link the connection may use (Linux: lgr->rtokens[idx][link_idx]). */
  private readonly peerKeys = new Map<SmcrLink, PeerKey>();
  /**
   * CDCs sent and not yet completed: [work request, written, seqno]. Their completion makes
   * written and seqno the confirmed ones (Linux's tx_curs_fin / local_tx_ctrl_fin and
   * tx_cdc_seq_fin, set in smc_cdc_tx_handler, smc_cdc.c 24-64), from which a failover resends.
   */
  private cdcLog: Array<[number, number, number]> = [];
  private writtenFin = 0;
  private seqFin = 0;
  /** The most bytes ever announced to the peer (written goes back in a failover; the peer may have consumed up to this). */
  private sentHigh = 0;
  /** CDCs dropped for a sequence number before the last one seen (a duplicate or late message), for diagnostics. */
  staleCdcs = 0;
  /** Calls of write() that found the peer's RMB full (the writer waits for a consumer cursor update), for diagnostics. */
  writeStalls = 0;
  /**
   * The last write() took less than it was given: the socket's write waits for the peer's
   * consumer cursor, and holds the event loop (poller.ts writeWaits) until a write() takes all, the
   * peer closes, or the connection fails or is released.
   */
  private writerWaits = false;

  constructor(
    readonly lgr: SmcrLinkGroup, readonly rmb: Rmb, readonly sndbuf: Rmb, readonly token: number, readonly peer: PeerRmb,
    private readonly h: TransportEvents,
    /** The link the connection's data and CDCs go on (Linux: conn->lnk); the one its CLC Accept/Confirm named. */
    public link: SmcrLink = lgr.link,
  ) {
    this.peerKeys.set(link, { rkey: peer.rkey, addr: peer.addr });
    this.rxRing = rmb.size;
    this.txRing = peer.size;
    if (sndbuf.size < peer.size) throw new RangeError('send buffer smaller than the peer RMB');
    this.updateLimit = Math.max(Math.floor(this.rxRing / 10), UPDATE_LIMIT_MIN);
    this.writeChunk = Math.max(WRITE_CHUNK_MIN, this.txRing / 4);
  }

  get mode(): SmcTransportMode { return 'SMCR'; }
  get bufferSize(): number { return this.rxRing; }
  get peerBufferSize(): number { return this.txRing; }
  get writeSpace(): number { return this.txRing - (this.produced - this.peerConsumed); }
  get readable(): number { return this.peerProduced - this.consumed; }
  get unconsumed(): number { return this.produced - this.peerConsumed; }
  get peerFinished(): boolean { return (this.peerConnFlags & (CONN_DONE_WRITING | CONN_CLOSED | CONN_ABORT)) !== 0; }
  /**
   * Never taken as a sign here: SMC-R's writer also sets write_blocked when a write that
   * completed filled the ring, so it does not say more is coming (the writer fails with
   * ECONNRESET on its own when our close finds its write under way: data.ts pump).
   */
  get peerWriteWaits(): boolean { return false; }
  get peerClosed(): boolean { return (this.peerConnFlags & (CONN_CLOSED | CONN_ABORT)) !== 0; }
  get peerAborted(): boolean { return (this.peerConnFlags & CONN_ABORT) !== 0; }

  /** A client's: the TCP peer it connected to (address:port, as discovery keys it); undefined on a server. */
  service: string | undefined;
  /** A client's last RDMA WRITE of data: when, and the byte count it wrote up to (onCdc's sign of life). */
  private lastWriteAt = -Infinity;
  private lastWriteEnd = 0;
  /** Proof that the peer's process lives: on SMC-R, its TCP connection not ended or reset, nothing broken (discovery's trust in a yes). */
  get peerLive(): boolean { return !this.released && !this.failed && this.graceTimer === undefined && !this.peerAborted; }
  /**
   * The peer sent its last CDC (closed or aborted): nothing more will be written into our RMB.
   * Not a close inferred when its TCP connection ended without one (peerTcpEnded): its late
   * WRITEs may still come (the link group quarantines the RMB then).
   */
  get peerGone(): boolean { return this.closedOnWire; }

  /** The handshake settled: from now on events go to the socket. */
  start(): void {
    this.started = true;
  }

  /**
   * The socket now runs over this connection: a failure that came before (the link lost as
   * the first link was confirmed, say: its CONFIRM_LINK response and the QP's error can be
   * handled in one batch) aborts it now rather than leaving a socket on a dead link.
   */
  settled(): void {
    const e = this.earlyError;
    this.earlyError = undefined;
    if (e !== undefined && !this.released) this.h.protocolError(e.message, e.code);
  }

  diag(): TransportDiag {
    return {
      cursors: {
        tx: toWire(this.written, this.txRing), peerCons: toWire(this.peerConsumed, this.txRing),
        rx: toWire(this.peerProduced, this.rxRing), cons: toWire(this.consumed, this.rxRing),
      },
      sndbufSize: this.txRing, rmbeSize: this.rxRing, peerRmbeSize: this.txRing,
      prodFlags: this.prodFlags, connFlags: this.connFlags, peerProdFlags: this.peerProdFlags, peerConnFlags: this.peerConnFlags,
    };
  }

  /** Completions come by the link's completion channel: nothing to poll. */
  kick(): void {}

  /**
   * Copy what fits into the send buffer. The RDMA WRITEs and their CDCs go once this tick's
   * writes are in (a microtask): everything written in one tick leaves together, as Linux's
   * smc_tx_sndbuf_nonempty sends all the send buffer holds at once (smc_tx_rdma_writes),
   * instead of a WRITE and a CDC per write(); in pieces of at most writeChunk (flush).
   */
  write(data: Uint8Array): number {
    if (this.released || this.failed || (this.connFlags & (CONN_DONE_WRITING | CONN_ABORT))) return 0;
    const space = this.writeSpace;
    if (space === 0) {
      this.writeStalls++;
      if (!this.writerWaits && data.length > 0) this.waits(true);
      if (!(this.prodFlags & PROD_WRITE_BLOCKED)) {
        this.prodFlags |= PROD_WRITE_BLOCKED;
        this.sendCdc();
      }
      return 0;
    }
    const n = Math.min(space, data.length);
    const pos = this.produced % this.txRing;
    const first = Math.min(n, this.txRing - pos);
    const buf = this.sndbuf.buf;
    buf.set(first === data.length ? data : data.subarray(0, first), pos);
    if (n > first) buf.set(data.subarray(first, n), 0);
    this.produced += n;
    this.bytesSent += n;
    if (data.length >= space) this.prodFlags |= PROD_WRITE_BLOCKED;
    else this.prodFlags &= ~PROD_WRITE_BLOCKED;
    if (this.writerWaits !== n < data.length) this.waits(n < data.length);
    if (!this.flushQueued) {
      this.flushQueued = true;
      queueMicrotask(this.flushTask);
    }
    return n;
  }

  /** A write waits for the peer (or no longer does): hold the event loop while it does. */
  private waits(on: boolean): void {
    if (on === this.writerWaits) return;
    this.writerWaits = on;
    holders += on ? 1 : -1;
    if (on) writeWaits();
    else writeWaitEnded();
  }

  private readonly flushTask = (): void => {
    this.flushQueued = false;
    if (!this.released) this.flush(false);
  };

  /**
   * RDMA-WRITE what the send buffer holds beyond what the peer was told of (two WRITEs when it
   * wraps the peer's ring, smc_tx.c smcr_tx_rdma_writes), then the CDC announcing it; with
   * nothing to write, the CDC alone when force. Unlike Linux, in pieces of at most writeChunk,
   * each with its CDC. A full send queue: the link group calls sendable() when it has room.
   */
  private flush(force: boolean): void {
    if (this.produced === this.written && !force) return;
    const link = this.link;
    if (link.isDown) return;
    const key = this.peerKeys.get(link)!;
    // The peer can read nothing of a WRITE until the CDC after it arrives: what the send buffer
    // holds goes in pieces of at most writeChunk, each with its CDC, so that the peer reads (and
    // gives room back) while the rest is still on the wire. A failover's resend goes in one piece
    // up to the highest producer cursor sent before at least: the peer may have seen that CDC,
    // and a cursor that moves back is a protocol error to it.
    do {
      const pending = Math.min(this.produced - this.written, Math.max(this.writeChunk, this.sentHigh - this.written));
      const pos = this.written % this.txRing;
      const first = Math.min(pending, this.txRing - pos);
      if (!link.canPost(pending === 0 ? 1 : pending > first ? 3 : 2)) {
        this.cdcPending = true;
        this.lgr.wantsQueue(this);
        return;
      }
      if (pending > 0) {
        // link.write takes a failed post as the link going down; the MR (gone with its device)
        // is looked at here, so its failure is taken the same way, not thrown at this call.
        try {
          const mr = this.lgr.mrOn(this.sndbuf, link.dev);
          link.write(mr.sge(pos, first), remoteAddrPlus(key.addr, pos), key.rkey);
          if (pending > first) {
            link.write(mr.sge(0, pending - first), key.addr, key.rkey);
            this.wrapWrites++;
          }
        } catch (e) {
          return link.postFailed(e);
        }
        this.written += pending;
        if (this.written > this.sentHigh) {
          this.sentHigh = this.written;
          // Only bytes never written before date the sign of life: a failover's resend of bytes
          // the peer may have read (and answered) long ago would make its old CDC look fresh.
          if (this.service !== undefined) {
            this.lastWriteAt = performance.now();
            this.lastWriteEnd = this.written;
          }
        }
      }
      link.send(this.cdc());
      this.cdcLog.push([link.postedSeq, this.written, this.seqno]);
      // Data went out: the answer (or the consumer update) is likely to come soon.
      if (pending > 0) smcrActivity();
    } while (this.produced > this.written && !link.isDown);
  }

  /** The link's send work requests up to okSeq completed successfully: the CDCs among them are confirmed. */
  completed(okSeq: number): void {
    let i = 0;
    while (i < this.cdcLog.length && this.cdcLog[i]![0] <= okSeq) i++;
    if (i === 0) return;
    const [, written, seq] = this.cdcLog[i - 1]!;
    this.writtenFin = written;
    this.seqFin = seq;
    this.cdcLog.splice(0, i);
    if (!this.unconfirmed) this.wakeSent(true);
  }

  /** CDCs (and the WRITEs before them) posted and not confirmed complete, or a CDC owed. */
  get unconfirmed(): boolean { return this.cdcLog.length > 0 || this.cdcPending; }

  private sentWaiters: Array<(confirmed: boolean) => void> = [];
  /** The peer was taken as gone (peerTcpEnded): nothing of ours will be confirmed now. */
  private inferredGone = false;
  /** peerTcpEnded's wait for its TEST_LINK's answer. */
  private probing: (() => void) | undefined;

  /**
   * done(true) once every CDC posted so far (and the WRITEs before it) has completed, i.e. the
   * peer's QP has it; done(false) once it never will (the link or the connection failed, a
   * failover left the closing connection behind, the group ended). The socket sends its TCP
   * FIN after the closing CDC (a FIN that overtook it, as it could under loss, looked to the
   * peer like this process gone: peerTcpEnded), and a RST when it did not arrive, so that the
   * peer reports the loss rather than a clean end.
   */
  whenSent(done: (confirmed: boolean) => void): void {
    if (!this.unconfirmed) return done(true);
    // A peer taken as gone confirms nothing: its close as inferred says how ours goes.
    if (this.inferredGone) return done(this.inferredOrderly);
    if (this.failed || this.link.isDown) return done(false);
    this.sentWaiters.push(done);
  }

  /** The peer taken as gone closed orderly (nothing of ours unconsumed), not with an abort. */
  private get inferredOrderly(): boolean { return (this.peerConnFlags & CONN_ABORT) === 0; }

  /** @internal The posts are confirmed, or will not be (lgr.ts: a closing connection leaves). */
  wakeSent(confirmed: boolean): void {
    if (this.sentWaiters.length === 0) return;
    const w = this.sentWaiters;
    this.sentWaiters = [];
    for (const f of w) f(confirmed);
  }

  peerKeyOn(link: SmcrLink): PeerKey | undefined { return this.peerKeys.get(link); }
  setPeerKey(link: SmcrLink, key: PeerKey): void { this.peerKeys.set(link, key); }
  forgetLink(link: SmcrLink): void { if (link !== this.link) this.peerKeys.delete(link); }

  /**
   * Move to another link of the group (smc_switch_conns -> smc_switch_cursor, smc_core.c
   * 1014-1074): what was written but not confirmed by a completed CDC is written again (the
   * cursor goes back to the last confirmed one, or to the peer's consumer cursor where that is
   * further on), after a CDC with the failover-validation flag and the seqno of the last
   * confirmed CDC, which the peer compares and never applies (smcr_cdc_msg_send_validation,
   * smc_cdc.c 137-165). Bytes go again to the same places in the peer's RMB, so nothing is
   * lost, duplicated or reordered; the next CDC's cursors cover them. false: the peer's RMB
   * has no rkey on that link (the connection cannot move). A closing connection is not moved
   * (SmcrLinkGroup.switchConns).
   */
  switchLink(to: SmcrLink): boolean {
    if (this.released || this.failed) return true;
    if (!this.peerKeys.has(to)) return false;
    const from = this.link;
    this.link = to;
    this.peerKeys.delete(from);
    this.switches++;
    this.cdcLog = [];
    this.written = Math.max(this.writtenFin, this.peerConsumed);
    if (this.written > this.produced) this.written = this.produced;
    if (to.canPost(1)) {
      to.send(encodeSmcrCdc({
        seqno: this.seqFin, token: this.peer.token, prod: { wrap: 0, count: 0 }, cons: { wrap: 0, count: 0 },
        writeBlocked: false, urgDataPending: false, urgDataPresent: false, consCursUpdReq: false, failoverValidation: true,
        peerDoneWriting: false, peerConnClosed: false, peerConnAbort: false,
      }));
    }
    // The writes again and a CDC with the current cursors and flags (a lost consumer update or close included).
    this.flush(true);
    return true;
  }

  /** Build the CDC message for our current state (and count it as sent). */
  private cdc(): Buffer {
    this.seqno = (this.seqno + 1) & 0xffff;
    this.consSent = this.consumed;
    this.cdcPending = false;
    // A close or an abort goes on the CDC that covers every byte: not on the first pieces of a
    // flush. The peer would end the stream at their cursor, or (an abort) free its RMB, which the
    // pieces' WRITEs after it would then land in (a review's repro: 600-780 KiB in a freed RMB).
    const whole = this.written === this.produced;
    const m: SmcrCdc = {
      seqno: this.seqno, token: this.peer.token,
      prod: toWire(this.written, this.txRing), cons: toWire(this.consumed, this.rxRing),
      writeBlocked: (this.prodFlags & PROD_WRITE_BLOCKED) !== 0, urgDataPending: false, urgDataPresent: false,
      consCursUpdReq: (this.prodFlags & PROD_CONS_UPD_REQ) !== 0, failoverValidation: false,
      peerDoneWriting: whole && (this.connFlags & CONN_DONE_WRITING) !== 0, peerConnClosed: whole && (this.connFlags & CONN_CLOSED) !== 0,
      peerConnAbort: whole && (this.connFlags & CONN_ABORT) !== 0,
    };
    return encodeSmcrCdc(m);
  }

  /** Send a CDC with the current cursors and flags now (after the WRITEs of what the send buffer holds), or as soon as the send queue has room. */
  sendCdc(): void {
    this.flush(true);
  }

  /** The link's send queue has room again (from the link group). */
  sendable(): void {
    if (this.released && !this.closing) return;
    if (this.cdcPending) this.sendCdc();
  }

  closeWrite(): void {
    if (this.released || (this.connFlags & CONN_DONE_WRITING)) return;
    this.connFlags |= CONN_DONE_WRITING;
    this.sendCdc();
  }

  abort(): void {
    if (this.released || (this.connFlags & CONN_ABORT)) return;
    this.connFlags |= CONN_ABORT;
    // Nothing goes on a link that is down (its QP may be gone with its device).
    if (!this.link.isDown) this.sendCdc();
  }

  closeOrderly(): void {
    if (this.released || (this.connFlags & (CONN_CLOSED | CONN_ABORT))) return;
    this.connFlags |= CONN_CLOSED | CONN_DONE_WRITING;
    if (!this.link.isDown) this.sendCdc();
  }

  /** Bytes the peer wrote that we have not consumed: every CDC is handled as it arrives, so this is current. */
  unreadNow(): number {
    // An urgent byte not reached yet is no data of the application's (Linux's bytes_to_rcv leaves it out).
    return this.urgAt >= this.consumed ? this.readable - 1 : this.readable;
  }

  consumeArrived(): void {
    if (this.released || this.failed) return;
    this.bytesReceived += this.unreadNow();
    this.urgAt = -1;
    this.consumed = this.peerProduced;
    this.updateConsumer(true);
  }

  /**
   * The peer's TCP connection ended with no closing CDC seen. Linux acts on the CDCs alone (its
   * clcsock's FIN closes nothing), but a peer whose process died sends none, and must be noticed.
   * The CDC goes by RoCE and the FIN by TCP, so it may still be on its way (a softrdma peer
   * sends its FIN once its CDC has arrived, but Linux's smc_close_active shuts its clcsock down
   * right after posting the CDC, and under loss the CDC is resent behind a window of WRITEs).
   * So a TEST_LINK asks the peer at once: it answers on the same RC QP after the CDC it posted
   * before (RC delivers in order), so its answer with no CDC before it means it has no such
   * connection (a Decline after we settled, say), and no answer and nothing else received on
   * the link within CLOSE_GRACE_MS means it is gone. A link that keeps delivering without the
   * answer yet (a lossy path) is waited for, a grace at a time with a fresh TEST_LINK, up to
   * CLOSE_WAIT_MAX_MS (its keepalive ends a link that stops delivering). Then: with bytes of ours
   * unconsumed an abort (the RST TCP would have sent), else an orderly end after what it wrote
   * is delivered.
   */
  peerTcpEnded(): void {
    if (this.released || this.failed || this.peerFinished || this.graceTimer || this.probing) return;
    const since = performance.now();
    let link = this.link;
    let probedAt = this.lgr.probe(link);
    const settled = () => this.released || this.failed || this.peerFinished;
    const infer = (): void => {
      this.probing = undefined;
      clearTimeout(this.graceTimer);
      this.graceTimer = undefined;
      if (settled()) return;
      this.inferredGone = true;
      this.lgr.peerGone();
      if (this.unconsumed > 0) this.peerConnFlags |= CONN_ABORT;
      else this.peerConnFlags |= CONN_CLOSED | CONN_DONE_WRITING;
      this.wakeSent(this.inferredOrderly);
      this.deliver();
      this.reportState();
    };
    // The answer: whatever the link delivered before it has been handled (the CDC among it).
    this.probing = () => { if (link.testAnsweredAt > probedAt) infer(); };
    const grace = (): void => {
      this.graceTimer = undefined;
      if (settled()) { this.probing = undefined; return; }
      const waited = performance.now() - since;
      // A failover moved the connection meanwhile: the CDC comes on its new link; ask there.
      const moved = this.link !== link && !this.link.isDown;
      if (waited < CLOSE_WAIT_MAX_MS && (moved || (probedAt > 0 && link.lastRx > probedAt && !link.isDown))) {
        link = this.link;
        probedAt = this.lgr.probe(link);
        this.graceTimer = setTimeout(grace, CLOSE_GRACE_MS);
        return;
      }
      infer();
    };
    if (probedAt === 0) return infer(); // no link to ask on: the group has ended
    this.graceTimer = setTimeout(grace, CLOSE_GRACE_MS);
  }

  /** @internal A TEST_LINK answer came on this connection's link (lgr.ts). */
  testAnswered(): void {
    this.probing?.();
  }

  /**
   * The peer's TCP connection was reset and no closing CDC came (data.ts onTcpResetWhileSmc,
   * after the grace peerTcpEnded gives a CDC on its way): taken as its abort, reported as one.
   */
  peerReset(cause: string): void {
    if (this.released || this.failed || this.peerAborted) return;
    this.lgr.peerGone();
    this.peerConnFlags |= CONN_ABORT;
    this.end.cause = cause;
    this.deliver();
    this.reportState();
  }

  peerExited(): void {
    if (this.released || this.failed) return;
    this.peerConnFlags |= CONN_CLOSED | CONN_DONE_WRITING;
    this.deliver();
    this.reportState();
  }

  pause(): void { this.paused = true; }

  resume(): boolean {
    this.paused = false;
    if (!this.started) return false;
    const any = this.deliver();
    this.reportState();
    return any;
  }

  process(): boolean {
    if (this.released || this.failed || !this.started) return false;
    const any = this.deliver();
    this.reportState();
    return any;
  }

  /** A CDC message for this connection arrived (from the link group). */
  onCdc(m: SmcrCdc): void {
    if (this.released || this.failed) return;
    smcrActivity(); // traffic, as a send is
    if (m.failoverValidation) {
      // smc_cdc_msg_validate (smc_cdc.c 308-328): a replay after a failover is only compared,
      // never applied; one whose seqno is beyond any seen means messages were lost: abort.
      if (cdcSeqBefore(this.lastSeq ?? 0, m.seqno)) this.fail(`failover validation: seqno ${m.seqno} beyond ${this.lastSeq ?? 'none'}`);
      return;
    }
    if (this.lastSeq !== undefined && cdcSeqBefore(m.seqno, this.lastSeq)) { this.staleCdcs++; return; } // stale (smc_cdc.c 498-501)
    this.lastSeq = m.seqno;
    if (m.prod.count >= this.rxRing || m.cons.count >= this.txRing) {
      this.fail(`cursor count beyond the ring (prod ${m.prod.count}, cons ${m.cons.count})`);
      return;
    }
    const prodDelta = cursorDelta(this.peerProduced, this.rxRing, m.prod.wrap, m.prod.count);
    const consDelta = cursorDelta(this.peerConsumed, this.txRing, m.cons.wrap, m.cons.count);
    if (prodDelta < 0 || this.peerProduced + prodDelta - this.consumed > this.rxRing) {
      this.fail(`producer cursor moved by ${prodDelta} with ${this.rxRing - this.readable} bytes free`);
      return;
    }
    if (consDelta < 0 || this.peerConsumed + consDelta > this.sentHigh) {
      this.fail(`consumer cursor moved by ${consDelta} past the ${this.sentHigh - this.peerConsumed} bytes in flight`);
      return;
    }
    this.peerProduced += prodDelta;
    // smc_cdc_handle_urg_data_arrival (smc_cdc.c): a Linux sender's send(MSG_OOB) makes the
    // last byte of this CDC's data urgent. Without SO_OOBINLINE (node:net never sets it, so a
    // TCP socket's kernel takes that byte out of the stream) it is not the application's: the
    // reader skips it and then tells the sender at once (deliver, skipUrgent), which waits for
    // exactly that (urg_tx_pend until its peer_rmbe_space is whole again).
    if (m.urgDataPresent && prodDelta > 0) this.urgAt = this.peerProduced - 1;
    this.peerProdFlags = (m.writeBlocked ? PROD_WRITE_BLOCKED : 0) | (m.consCursUpdReq ? PROD_CONS_UPD_REQ : 0);
    this.peerConnFlags |= (m.peerDoneWriting ? CONN_DONE_WRITING : 0) | (m.peerConnClosed ? CONN_CLOSED | CONN_DONE_WRITING : 0) | (m.peerConnAbort ? CONN_ABORT : 0);
    if (m.peerConnClosed || m.peerConnAbort) this.closedOnWire = true;
    if (consDelta > 0) {
      this.peerConsumed += consDelta;
      // After a failover the peer may have consumed what is to be written again: skip that.
      if (this.written < this.peerConsumed) this.written = this.peerConsumed;
      if (this.prodFlags & PROD_WRITE_BLOCKED && this.writeSpace > 0) this.prodFlags &= ~PROD_WRITE_BLOCKED;
    }
    // Discovery's sign of life for the port (yesHolds): the peer closed in order with a message
    // it sent after reading what we last wrote, so it lived at some time since that write. The
    // write's time is the sign's, not this message's arrival: a stalled event loop reads an old
    // message late.
    if (this.service !== undefined && (m.peerConnClosed || m.peerDoneWriting) && !m.peerConnAbort
      && this.lastWriteEnd > 0 && this.peerConsumed >= this.lastWriteEnd) noteSmcrOrderlyClose(this.service, this.lastWriteAt);
    if (!this.started) return; // the socket takes it from here once the handshake settled
    if (consDelta > 0) this.h.writable();
    if (this.released) return;
    const seq = this.seqno;
    this.deliver();
    this.updateConsumer(false);
    // smc_cdc_msg_recv_action: urg_data_pending is answered at once (smc_tx_sndbuf_nonempty:
    // a CDC, with data if there is any to send), unless one just went.
    if (m.urgDataPending && this.seqno === seq && !this.released) this.sendCdc();
    this.reportState();
  }

  private deliver(): boolean {
    let any = false;
    const ring = this.rmb.buf;
    while (!this.paused && !this.released && this.readable > 0) {
      if (this.consumed === this.urgAt) {
        this.skipUrgent();
        continue;
      }
      const into = this.h.userBuffer?.();
      if (this.released) break;
      let n = Math.min(this.readable, into ? into.length : SLICE);
      if (this.urgAt > this.consumed && this.urgAt - this.consumed < n) n = this.urgAt - this.consumed; // up to the urgent byte
      const pos = this.consumed % this.rxRing;
      const first = Math.min(n, this.rxRing - pos);
      const out = into ?? freshSlice(n);
      out.set(ring.subarray(pos, pos + first), 0);
      if (n > first) out.set(ring.subarray(0, n - first), first);
      this.consumed += n;
      this.bytesReceived += n;
      any = true;
      // Read up to the urgent byte: past it at once (smc_rx_update_consumer), as a paused reader too.
      if (this.consumed === this.urgAt) this.skipUrgent();
      else this.updateConsumer(false);
      if (!(into ? this.h.userData!(n, into) : this.h.data(out as Buffer))) this.paused = true;
    }
    return any;
  }

  /**
   * The reader got to the peer's urgent byte: step over it and send the consumer cursor now
   * (smc_rx_update_consumer without SOCK_URGINLINE: diff 1, the byte skipped, force).
   */
  private skipUrgent(): void {
    this.urgAt = -1;
    this.consumed++;
    this.updateConsumer(true);
  }

  /** smc_tx_consumer_update (smc_tx.c 699-733): tell the peer our consumer cursor when it needs it. */
  private updateConsumer(force: boolean): void {
    if (this.released || this.consumed === this.consSent) return;
    const toConfirm = this.consumed - this.consSent;
    const senderFree = this.rxRing - (this.peerProduced - this.consSent);
    if (force || (this.peerProdFlags & PROD_CONS_UPD_REQ)
      || (toConfirm > this.updateLimit && (senderFree <= this.rxRing / 2 || (this.peerProdFlags & PROD_WRITE_BLOCKED)))) this.sendCdc();
  }

  private reportState(): void {
    if (this.released || !this.started) return;
    // A peer that closed (or aborted) makes no more room: the socket fails the write waiting
    // for it (ECONNRESET, as smc_tx_wait does on any close), also when the closing CDC moved no
    // cursor (the peer had read everything and said so before it closed) and so woke nothing.
    if (this.writerWaits && this.peerClosed) {
      this.waits(false);
      this.h.writable();
      if (this.released) return;
    }
    const news = this.end.next(this.peerConnFlags, this.readable, this.paused, this.writerWaits || (this.prodFlags & PROD_WRITE_BLOCKED) !== 0);
    if (news === 'abort') this.h.peerAbort(this.end.cause);
    else if (news === 'done') this.h.peerDone();
  }

  /** The link failed under the connection and no other link took it: ECONNABORTED, as Linux's smc_conn_kill sets sk_err. */
  linkDown(reason: string): void {
    this.wakeSent(false);
    if (this.released || this.failed) return;
    this.failed = true;
    this.waits(false);
    // The link group's reason may name the link's fall already ("link down: no TEST_LINK ...").
    const message = reason.startsWith('link down') ? reason : `link down: ${reason}`;
    if (this.started) this.h.protocolError(message, 'ECONNABORTED');
    else this.earlyError = { message, code: 'ECONNABORTED' };
  }

  /**
   * The peer broke the protocol (a cursor out of range, a failover replay that does not
   * match): stop taking its CDCs and abort, as Linux's smc_cdc_msg_validate sets
   * peer_conn_abort and queues abort_work; the socket gets EPROTO. Only this connection: the
   * link group and its other connections go on (their CDCs carry their own tokens).
   */
  private fail(message: string): void {
    this.failed = true;
    this.waits(false);
    this.lgr.rx.connAborts++;
    this.abort();
    this.wakeSent(false);
    if (this.started) this.h.protocolError(message);
    else this.earlyError = { message, code: 'EPROTO' };
  }

  release(): void {
    if (this.released) return;
    clearTimeout(this.graceTimer);
    this.probing = undefined;
    this.waits(false);
    this.released = true;
    this.lgr.detach(this);
  }
}
