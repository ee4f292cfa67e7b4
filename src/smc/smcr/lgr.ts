// SMC-R link groups (Linux: struct smc_link_group, smc_core.c; the first link's confirmation,
// smc_llc.c and af_smc.c's smcr_clnt_conf_first_link / smcr_serv_conf_first_link). One link
// group per peer (its system ID and GID) and local device, with one link (one RC QP) here;
// the first connection to a peer creates it ("first contact") and confirms the link with
// CONFIRM_LINK over the new QP, later connections reuse it with one CLC exchange and nothing
// on the link from us (with a single link the RMB's rkey in the CLC message is all the peer
// needs). Linux also announces each later RMB with CONFIRM_RKEY before its CLC message
// (af_smc.c 1351, 2297) and waits for the answer, so those are answered (confirmRkey).
//
// RMBs (the buffers a peer writes into) are registered with REMOTE_WRITE (and the LOCAL_WRITE
// verbs require with it), each its own MR and so its own rkey; they are reused within the link
// group after the connection that had one ended and the peer's last CDC for it arrived (so a
// late WRITE of the old connection cannot land in a new one), and deregistered with the link
// group. Send buffers are local-only MRs, reused the same way.

import { randomBytes } from 'node:crypto';
import { Access } from '../../abi/enums.js';
import type { MR } from '../../verbs/api.js';
import { CDC_TYPE } from '../cdc.js';
import { decodeSmcrCdc, type SmcrCdc } from '../wire/cdc-r.js';
import { SmcrWireError } from '../wire/error.js';
import { LLC_DEL, LLC_TESTLINK_DEFAULT_MS, LLC_WAIT_MS, decodeLlc, encodeLlc, type LlcConfirmRkey, type LlcDeleteRkey, type LlcMessage } from '../wire/llc.js';
import type { SmcrConnection } from './connection.js';
import type { SmcrDevice } from './device.js';
import { SmcrLink } from './link.js';

/** Linux's SMC_RMBS_PER_LGR_MAX: connections per link group (and rtokens, smc_core.h 26). */
export const MAX_CONNS = 255;
/** SMC_LLC_RKEYS_PER_MSG (smc_llc.c 150): a CONFIRM_RKEY naming more rtokens is refused. */
const RKEYS_PER_MSG = 3;
/**
 * How long an unused link group stays for the next connection. Linux keeps one 600 s (server)
 * or 610 s (client; SMC_LGR_FREE_DELAY_SERV/CLNT, smc_core.c 40-41); softrdma keeps them 10 s:
 * a process's link groups to peers that have gone do not pile up, and freeing one early costs
 * only a new first contact.
 */
const LINGER_MS = 10_000;

/** A registered buffer: an RMB (REMOTE_WRITE) or a send buffer (local only). */
export interface Rmb { buf: Buffer; mr: MR; size: number }

/**
 * TEST_LINK keepalive (Linux: net.smc.smcr_testlink_time, 30 s; smc_llc_testlink_work,
 * smc_llc.c 2109-2139): a link that received nothing for this long sends TEST_LINK, and one
 * whose response does not come within SMC_LLC_WAIT_TIME (2 s) goes down. The link's QP retries
 * forever (retry_cnt 7), so this is how a peer that went silent on RoCE is noticed.
 * SOFTRDMA_SMCR_TESTLINK_MS sets it (0: off), as the sysctl does.
 */
const TESTLINK_MS = process.env.SOFTRDMA_SMCR_TESTLINK_MS !== undefined && Number(process.env.SOFTRDMA_SMCR_TESTLINK_MS) >= 0
  ? Number(process.env.SOFTRDMA_SMCR_TESTLINK_MS) : LLC_TESTLINK_DEFAULT_MS;

let nextToken = 1;

export type LgrRole = 'client' | 'server';

export class SmcrLinkGroup {
  /** Every live link group, by lgrKey(). */
  private static readonly all = new Map<string, Set<SmcrLinkGroup>>();

  readonly link: SmcrLink;
  readonly conns = new Map<number, SmcrConnection>();
  private readonly freeRmbs = new Map<number, Rmb[]>();
  private readonly freeSndbufs = new Map<number, Rmb[]>();
  /** RMBs of ended connections whose peer has not sent its last CDC yet, by token. */
  private readonly quarantined = new Map<number, Rmb>();
  private readonly owing = new Set<SmcrConnection>();
  /**
   * Send buffers of ended connections whose last RDMA WRITE has not completed: rxe reads the
   * source memory when it builds the packets, after the post, so a new connection must not
   * write into one before then.
   */
  private readonly draining: Array<{ seq: number; buf: Rmb }> = [];
  /**
   * Tokens of RMBs offered in an Accept whose connection does not exist yet: the client may
   * write (and send its CDC) as soon as it sent its Confirm, before the server has read it.
   * The latest CDC for each is kept (cursors are totals, close flags stay set) for attach().
   */
  private readonly expected = new Map<number, SmcrCdc | undefined>();
  /** Link UID (smc_link.link_uid) and link number; the group's ID for smcss. */
  readonly linkUid = randomBytes(4);
  readonly linkNum = 1;
  confirmed = false;
  dead = false;
  private lingerTimer: NodeJS.Timeout | undefined;
  private confirmWait: { resolve(): void; reject(e: Error): void; timer: NodeJS.Timeout } | undefined;
  /** When the link last received anything (performance.now()), for TEST_LINK. */
  private lastRx = performance.now();
  private testTimer: NodeJS.Timeout | undefined;
  private testWait: NodeJS.Timeout | undefined;
  /** LLC messages dropped as Linux drops them (unknown type, short, bad length), and CDCs for no connection. */
  readonly dropped = { llc: 0, cdc: 0 };
  /**
   * What the link refused, one count per message, by reason (tests, diagnostics; dropped has
   * the totals): malformed CDC/LLC messages, CDCs whose token names no connection, LLC types
   * Linux has no handler for, responses nobody asked for and requests for what one link does
   * not do (ADD_LINK...), CONFIRM_RKEY/DELETE_RKEY requests answered negatively, and
   * connections aborted for a CDC that broke the protocol (connection.ts fail()).
   */
  readonly rx = { cdcMalformed: 0, cdcNoConn: 0, llcMalformed: 0, llcUnknownType: 0, llcUnexpected: 0, rkeyNegative: 0, connAborts: 0 };
  /**
   * rtokens the peer announced with CONFIRM_RKEY (rkey -> address), as Linux's lgr->rtokens
   * (smc_rtoken_add, smc_core.c 2652-2673). Only for answering CONFIRM_RKEY and DELETE_RKEY as
   * Linux does: nothing is ever written through them; data goes only where a connection's CLC
   * Accept/Confirm pointed.
   */
  private readonly rtokens = new Map<number, bigint>();
  peerKey = '';

  private readonly onDeviceClose = () => this.free(false, 'the RoCE device was closed');

  constructor(readonly dev: SmcrDevice, readonly role: LgrRole) {
    this.link = new SmcrLink(dev);
    dev.onClose.add(this.onDeviceClose);
    this.link.handlers = {
      message: (m) => this.onMessage(m),
      sendable: () => this.onSendable(),
      down: (reason) => this.onDown(reason),
    };
  }

  static key(dev: SmcrDevice, peerId: Buffer, peerGid: Buffer): string {
    return `${dev.address}|${peerId.toString('hex')}|${peerGid.toString('hex')}`;
  }

  /** Link groups to this peer that new connections may join. */
  static find(key: string): SmcrLinkGroup[] {
    return [...(SmcrLinkGroup.all.get(key) ?? [])].filter((g) => g.confirmed && !g.dead && !g.link.isDown && g.conns.size < MAX_CONNS);
  }

  /** Every link group of the process (smcss, tests). */
  static list(): SmcrLinkGroup[] {
    return [...SmcrLinkGroup.all.values()].flatMap((s) => [...s]);
  }

  /** Make the group findable for its peer, once the link is confirmed. */
  register(key: string): void {
    this.peerKey = key;
    let set = SmcrLinkGroup.all.get(key);
    if (!set) SmcrLinkGroup.all.set(key, set = new Set());
    set.add(this);
  }

  // --- buffers -------------------------------------------------------------------------

  takeRmb(size: number): Rmb {
    const pooled = this.freeRmbs.get(size)?.pop();
    if (pooled) return pooled;
    const buf = Buffer.alloc(size);
    return { buf, mr: this.dev.pd.regMr(buf, Access.LOCAL_WRITE | Access.REMOTE_WRITE), size };
  }

  takeSndbuf(size: number): Rmb {
    const pooled = this.freeSndbufs.get(size)?.pop();
    if (pooled) return pooled;
    const buf = Buffer.alloc(size);
    return { buf, mr: this.dev.pd.regMr(buf, 0), size };
  }

  private put(pool: Map<number, Rmb[]>, b: Rmb): void {
    let l = pool.get(b.size);
    if (!l) pool.set(b.size, l = []);
    l.push(b);
  }

  /** A connection's buffers when its handshake failed before the peer learnt of them. */
  giveBack(rmb: Rmb | undefined, sndbuf: Rmb | undefined, token?: number): void {
    if (token !== undefined) this.expected.delete(token);
    if (rmb) this.put(this.freeRmbs, rmb);
    if (sndbuf) this.put(this.freeSndbufs, sndbuf);
    this.maybeLinger();
  }

  static newToken(): number {
    const t = nextToken;
    nextToken = nextToken >= 0xffffffff ? 1 : nextToken + 1;
    return t;
  }

  // --- connections ---------------------------------------------------------------------

  /** A token was offered (server's Accept): hold its CDCs until attach(). */
  expect(token: number): void {
    this.expected.set(token, undefined);
  }

  attach(conn: SmcrConnection): void {
    clearTimeout(this.lingerTimer);
    this.lingerTimer = undefined;
    this.conns.set(conn.token, conn);
    const early = this.expected.get(conn.token);
    this.expected.delete(conn.token);
    if (early) conn.onCdc(early);
  }

  detach(conn: SmcrConnection): void {
    if (this.conns.get(conn.token) !== conn) return;
    this.conns.delete(conn.token);
    this.owing.delete(conn);
    if (this.link.isDown || this.link.completedSeq >= this.link.postedSeq) this.put(this.freeSndbufs, conn.sndbuf);
    else this.draining.push({ seq: this.link.postedSeq, buf: conn.sndbuf });
    if (conn.peerGone || this.link.isDown) this.put(this.freeRmbs, conn.rmb);
    else this.quarantined.set(conn.token, conn.rmb);
    this.maybeLinger();
  }

  /** The connection waits for room in the send queue (a CDC it owes, or a write). */
  wantsQueue(conn: SmcrConnection): void {
    this.owing.add(conn);
  }

  private maybeLinger(): void {
    if (this.conns.size > 0 || this.lingerTimer || this.dead) return;
    this.lingerTimer = setTimeout(() => this.free(true), LINGER_MS);
    this.lingerTimer.unref();
  }

  // --- the link ------------------------------------------------------------------------

  private onMessage(m: Buffer): void {
    this.lastRx = performance.now();
    if (m[0] === CDC_TYPE) {
      let cdc;
      try { cdc = decodeSmcrCdc(m); } catch (e) { if (e instanceof SmcrWireError) { this.dropped.cdc++; this.rx.cdcMalformed++; return; } throw e; }
      const conn = this.conns.get(cdc.token);
      if (conn) { conn.onCdc(cdc); return; }
      if (this.expected.has(cdc.token)) { this.expected.set(cdc.token, cdc); return; }
      // The last CDC of a connection that ended here: its RMB may be reused now.
      const q = this.quarantined.get(cdc.token);
      if (q && (cdc.peerConnClosed || cdc.peerConnAbort)) {
        this.quarantined.delete(cdc.token);
        this.put(this.freeRmbs, q);
      } else if (!q) { this.dropped.cdc++; this.rx.cdcNoConn++; } // smc_cdc.c 485-489: no connection with this token
      return;
    }
    let llc: LlcMessage;
    try {
      llc = decodeLlc(Buffer.from(m));
    } catch (e) {
      if (!(e instanceof SmcrWireError)) throw e;
      // smc_wr.c 443-446 (no handler for the type) and smc_llc.c 2094-2101 (short, bad length): dropped unanswered.
      this.dropped.llc++;
      if (e.field === 'type') this.rx.llcUnknownType++;
      else this.rx.llcMalformed++;
      return;
    }
    this.onLlc(llc);
  }

  /** An LLC message Linux would drop here (an out-of-flow response, smc_llc.c 2018-2046, or a request one link cannot serve). */
  private unexpected(): void {
    this.dropped.llc++;
    this.rx.llcUnexpected++;
  }

  private onLlc(m: LlcMessage): void {
    switch (m.kind) {
      case 'CONFIRM_LINK':
        if (this.role === 'client' && !m.response) {
          // smc_llc.c smc_llc_rx_response / af_smc.c smcr_clnt_conf_first_link: answer, and the link is up.
          this.sendLlc({ ...this.confirmLinkMsg(), response: true });
          this.confirmDone();
        } else if (this.role === 'server' && m.response) {
          this.confirmDone();
        } else this.unexpected();
        return;
      case 'TEST_LINK':
        if (!m.response) this.sendLlc({ ...m, response: true });
        else if (this.testWait) {
          clearTimeout(this.testWait);
          this.testWait = undefined;
          this.scheduleTestLink(TESTLINK_MS);
        }
        return;
      case 'DELETE_LINK':
        // The peer takes the link (and with one link, the group) down (smc_llc.c smc_llc_rmt_delete_link).
        if (!m.response) this.free(false, 'peer deleted the link');
        else this.unexpected();
        return;
      case 'CONFIRM_RKEY':
        // We never ask (one link: the rkey goes in the CLC message), so a response is out of flow.
        if (m.response) this.unexpected();
        else this.confirmRkey(m);
        return;
      case 'DELETE_RKEY':
        if (m.response) this.unexpected();
        else this.deleteRkey(m);
        return;
      default:
        // ADD_LINK, ADD_LINK_CONT, REQ_ADD_LINK, CONFIRM_RKEY_CONT (Linux ignores it too,
        // smc_llc.c 1950-1954): one link per group here.
        this.unexpected();
    }
  }

  /**
   * A Linux peer announces each new RMB of a connection after the first with CONFIRM_RKEY
   * before its CLC message names it (af_smc.c 1351, 2297), and waits 2 s for the answer:
   * answered as smc_llc_rmt_conf_rkey (smc_llc.c 1756-1793) does: the request echoed with the
   * response flag; negative (NEG | RETRY) when it names more than 3 rtokens or the rtoken table
   * is full (smc_rmb_reserve_rtoken_idx: -ENOSPC). Linux accepts any other rtoken (it cannot
   * know the memory yet either); nothing here writes through it.
   */
  private confirmRkey(m: LlcConfirmRkey): void {
    let ok = m.numRkeys <= RKEYS_PER_MSG;
    if (ok && this.rtokens.get(m.rmbKey) !== m.rmbVaddr) {
      if (this.rtokens.size >= MAX_CONNS) ok = false;
      else this.rtokens.set(m.rmbKey, m.rmbVaddr);
    }
    if (!ok) this.rx.rkeyNegative++;
    this.sendLlc({ ...m, version: 2, response: true, negative: m.negative || !ok, retry: m.retry || !ok });
  }

  /**
   * smc_llc_rmt_delete_rkey (smc_llc.c 1796-1842), the v2 branch (our link groups are v2):
   * forget each rkey named; any not known makes the response negative, with their number in
   * err_mask (num_inval_rkeys). Known: announced by CONFIRM_RKEY, or the rkey of a
   * connection's peer RMB (Linux's table holds those too, smc_rmb_rtoken_handling).
   */
  private deleteRkey(m: LlcDeleteRkey): void {
    let invalid = 0;
    for (const k of m.rkeys) {
      if (!this.rtokens.delete(k) && ![...this.conns.values()].some((c) => c.peer.rkey === k)) invalid++;
    }
    if (invalid > 0) this.rx.rkeyNegative++;
    // Linux answers with the 44-byte message, the rkeys zeroed: 9 fit.
    const n = Math.min(m.numRkeys, 9);
    this.sendLlc({
      kind: 'DELETE_RKEY', version: 2, response: true, negative: m.negative || invalid > 0, numRkeys: n,
      errMask: invalid, rkeys: new Array<number>(n).fill(0),
    });
  }

  private confirmLinkMsg(): LlcMessage {
    return {
      kind: 'CONFIRM_LINK', version: 2, response: false, noRmbeEyec: true, senderMac: this.dev.mac, senderGid: this.dev.gid,
      senderQpn: this.link.qp.qpn, linkNum: this.linkNum, linkUid: this.linkUid, maxLinks: 1, maxConns: MAX_CONNS,
    };
  }

  sendLlc(m: LlcMessage): void {
    if (!this.link.canPost(1)) return; // LLC traffic is rare: a full queue means the link is in trouble anyway
    this.link.post([{ kind: 'send', msg: encodeLlc(m) }]);
  }

  /**
   * First contact: bring the link up. The server sends CONFIRM_LINK and waits
   * SMC_LLC_WAIT_TIME (2 s) for the response (smcr_serv_conf_first_link, af_smc.c 1894-1899);
   * the client waits twice that for the request and answers it (smcr_clnt_conf_first_link,
   * af_smc.c 625-631). No answer: Decline TIMEOUT_CL and TCP, as Linux.
   */
  confirmFirstLink(): Promise<void> {
    if (this.confirmed) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      const ms = this.role === 'server' ? LLC_WAIT_MS : 2 * LLC_WAIT_MS;
      const timer = setTimeout(() => { this.confirmWait = undefined; reject(new Error(`no CONFIRM_LINK ${this.role === 'server' ? 'response' : 'request'} within ${ms} ms`)); }, ms);
      this.confirmWait = { resolve, reject, timer };
      if (this.role === 'server') this.sendLlc(this.confirmLinkMsg());
    });
  }

  private scheduleTestLink(ms: number): void {
    if (TESTLINK_MS === 0 || this.dead) return;
    clearTimeout(this.testTimer);
    this.testTimer = setTimeout(() => this.testLink(), ms);
    this.testTimer.unref();
  }

  private testLink(): void {
    this.testTimer = undefined;
    if (this.dead || this.link.isDown) return;
    const quiet = performance.now() - this.lastRx;
    if (quiet < TESTLINK_MS) return this.scheduleTestLink(TESTLINK_MS - quiet);
    this.sendLlc({ kind: 'TEST_LINK', version: 2, response: false, userData: Buffer.alloc(16) });
    this.testWait = setTimeout(() => {
      this.testWait = undefined;
      this.onDown(`no TEST_LINK response within ${LLC_WAIT_MS} ms`);
    }, LLC_WAIT_MS);
    this.testWait.unref();
  }

  private confirmDone(): void {
    this.confirmed = true;
    this.lastRx = performance.now();
    this.scheduleTestLink(TESTLINK_MS);
    const w = this.confirmWait;
    this.confirmWait = undefined;
    if (w) { clearTimeout(w.timer); w.resolve(); }
  }

  private onSendable(): void {
    while (this.draining.length > 0 && this.draining[0]!.seq <= this.link.completedSeq) this.put(this.freeSndbufs, this.draining.shift()!.buf);
    if (this.owing.size === 0) return;
    for (const c of [...this.owing]) {
      if (!this.link.canPost(1)) return;
      this.owing.delete(c);
      c.sendable();
    }
  }

  private onDown(reason: string): void {
    this.free(false, `link down: ${reason}`);
  }

  /**
   * End the link group: tell the peer (DELETE_LINK, orderly, when the link still works),
   * fail the connections still on it, destroy the QP and deregister the buffers.
   */
  free(orderly: boolean, reason = 'link group freed'): void {
    if (this.dead) return;
    this.dead = true;
    this.dev.onClose.delete(this.onDeviceClose);
    clearTimeout(this.lingerTimer);
    clearTimeout(this.testTimer);
    clearTimeout(this.testWait);
    const w = this.confirmWait;
    this.confirmWait = undefined;
    if (w) { clearTimeout(w.timer); w.reject(new Error(reason)); }
    SmcrLinkGroup.all.get(this.peerKey)?.delete(this);
    if (SmcrLinkGroup.all.get(this.peerKey)?.size === 0) SmcrLinkGroup.all.delete(this.peerKey);
    if (orderly && !this.link.isDown) {
      this.sendLlc({ kind: 'DELETE_LINK', version: 2, response: false, all: true, orderly: true, linkNum: this.linkNum, reason: LLC_DEL.PROG_INIT_TERM });
    }
    for (const c of [...this.conns.values()]) c.linkDown(reason);
    // Let the DELETE_LINK leave before the QP goes.
    setImmediate(() => {
      this.link.destroy();
      for (const pool of [this.freeRmbs, this.freeSndbufs]) for (const l of pool.values()) for (const b of l) try { b.mr.dereg(); } catch { /* context gone */ }
      for (const b of this.quarantined.values()) try { b.mr.dereg(); } catch { /* context gone */ }
      for (const d of this.draining) try { d.buf.mr.dereg(); } catch { /* context gone */ }
      this.draining.length = 0;
      for (const c of this.conns.values()) {
        for (const b of [c.rmb, c.sndbuf]) try { b.mr.dereg(); } catch { /* context gone */ }
      }
      this.freeRmbs.clear();
      this.freeSndbufs.clear();
      this.quarantined.clear();
      this.rtokens.clear();
    });
  }
}
