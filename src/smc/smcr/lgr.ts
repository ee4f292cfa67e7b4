// SMC-R link groups (Linux: struct smc_link_group, smc_core.c; the first link's confirmation,
// smc_llc.c and af_smc.c's smcr_clnt_conf_first_link / smcr_serv_conf_first_link). One link
// group per peer (its system ID and GID) and local device; the first connection to a peer
// creates it ("first contact") and confirms its first link with CONFIRM_LINK over the new QP,
// later connections reuse it with one CLC exchange and nothing on the link from us. Linux also
// announces each later RMB with CONFIRM_RKEY before its CLC message (af_smc.c 1351, 2297) and
// waits for the answer, so those are answered (confirmRkey).
//
// A second link (issue 20 §4; SMC-Rv2 as Linux 6.12 does it, smc_llc.c): where both ends
// offered max_links 2 in the CLC first contact (each offers it when its process has a second
// rxe device), the server sends ADD_LINK on the first link once it is confirmed, naming a QP on
// its other device and, in the v2 extension, each RMB's rkey on the new device; the client
// makes a QP on its device that reaches the server's new GID, answers with its own QP and
// rkeys, and the server confirms the new link with CONFIRM_LINK over it. Data goes on one link
// per connection (conn.link: the server assigns them alternately over the active links, as
// Linux's smcr_lgr_conn_assign_link; the client follows its Accept). When a link fails (a
// work request completes in error, TEST_LINK goes unanswered), its connections move to the
// other link and resend from their last confirmed cursor (connection.ts switchLink), and the
// peer gets DELETE_LINK for the lost link; the server adds a link again on a timer. A
// connection made while the group has two links announces its RMB's rkey on the other link
// with CONFIRM_RKEY before its CLC message (announceRmbHeld). The group runs one LLC flow at a
// time (llcFlow, Linux's smc_llc_flow_initiate): an ADD_LINK and the handshakes' CONFIRM_RKEY
// flows take turns, so a handshake decides about CONFIRM_RKEY with the links active when it
// holds the flow, and an ADD_LINK names the RMBs of handshakes that decided before it (their
// Accept sent, their Confirm not yet read) as well as the connections'. A device that closes
// takes down only its links, the first link's device too (smcr_port_err). A client's
// REQ_ADD_LINK gets an ADD_LINK, or, where no link is added, the response Linux sends
// (reqAddLink). Not done: asymmetric links (a second link on the same device).
//
// RMBs (the buffers a peer writes into) are registered with REMOTE_WRITE (and the LOCAL_WRITE
// verbs require with it), each its own MR and so its own rkey, one per device the group's links
// use; they are reused within the link group after the connection that had one ended and the
// peer's last CDC for it arrived (so a late WRITE of the old connection cannot land in a new
// one; an RMB offered in an Accept whose handshake then failed waits the same way, as does one
// whose peer's close was only inferred from its TCP connection's end, each at most 60 s), and
// deregistered with the link group. A group holding such an RMB does not linger out: its peer
// has not closed. Send buffers are local-only MRs, reused the same
// way.

import { randomBytes, randomInt } from 'node:crypto';
import { isIPv4 } from 'node:net';
import { Access } from '../../abi/enums.js';
import { addressFromGid } from '../../abi/inet.js';
import { getDeviceList, type MR, type PD } from '../../verbs/api.js';
import { CDC_TYPE } from '../cdc.js';
import { DECLINE } from '../clc.js';
import { cdcSeqBefore, decodeSmcrCdc, type SmcrCdc } from '../wire/cdc-r.js';
import { SmcrWireError } from '../wire/error.js';
import {
  LLC_DEL, LLC_TESTLINK_DEFAULT_MS, LLC_WAIT_FIRST_MS, LLC_WAIT_MS, decodeLlc, encodeLlc,
  type LlcAddLink, type LlcConfirmRkey, type LlcDeleteLink, type LlcDeleteRkey, type LlcMessage, type LlcRkeyPair,
} from '../wire/llc.js';
import type { SmcrConnection } from './connection.js';
import { smcrDeviceOf, type SmcrDevice } from './device.js';
import { forgetSmcrPeer, inLocalSubnet, setSmcrLivePeerCheck } from './discovery.js';
import { SmcrLink } from './link.js';
import { RtokenTable, type Rtoken } from './rtokens.js';
import { remoteAddr } from '../../abi/remote-addr.js';
import { SoftrdmaError } from '../../abi/errors.js';

/** A link group's step failed the way Linux declines a handshake for: the Decline's reason (SMC_CLC_DECL_*). */
export class SmcrDeclineError extends Error {
  constructor(readonly reason: number, message: string) {
    super(message);
  }
}

/** Linux's SMC_RMBS_PER_LGR_MAX: connections per link group (and rtokens, smc_core.h 26). */
export const MAX_CONNS = 255;
/** SMC_CONN_PER_LGR_MIN (smc_core.h): the fewest connections per link group a v2.1 peer may name (else MAXCONNERR). */
export const MIN_CONNS = 16;
/** SMC_LLC_RKEYS_PER_MSG (smc_llc.c 150): a CONFIRM_RKEY naming more rtokens is refused. */
const RKEYS_PER_MSG = 3;
/** How long an RMB offered in a failed handshake waits for a CDC for its token (see offeredDeadlines). */
let offeredQuarantineMs = 60_000;

/** @internal Set how long an offered RMB waits in quarantine (tests); returns the previous value. */
export function setSmcrOfferedQuarantineMs(ms: number): number {
  const was = offeredQuarantineMs;
  offeredQuarantineMs = ms;
  return was;
}
/**
 * How long a local LLC flow waits for the one under way to end before it gives up
 * (smc_llc_flow_initiate waits SMC_LLC_WAIT_TIME * 10). Every flow ends within its own
 * timeouts (an answer awaited LLC_WAIT_MS, a new link's CONFIRM_LINK LLC_WAIT_FIRST_MS), so
 * this bounds only a queue of them.
 */
const FLOW_WAIT_MS = 10 * LLC_WAIT_MS;
/**
 * How long ADD_LINK rkeys for peer RMBs that the rtoken table does not hold yet (a handshake
 * between the peer's CLC message and ours) are kept for that connection's attach. The peer
 * keeps such an RMB registered, with those keys, at least the offered quarantine's 60 s.
 */
const LATE_KEYS_MS = 30_000;
/** LLC messages a link holds while every send queue slot, the reserved ones too, is taken; beyond this they are dropped (counted). */
const LLC_BACKLOG = 16;
/**
 * How long an unused link group stays for the next connection. Linux keeps one 600 s (server)
 * or 610 s (client; SMC_LGR_FREE_DELAY_SERV/CLNT, smc_core.c 40-41); softrdma keeps them 10 s:
 * a process's link groups to peers that have gone do not pile up, and freeing one early costs
 * only a new first contact. A client's stays CLIENT_LINGER_EXTRA_MS longer, as Linux's: the
 * server decides whether a connection reuses a group, and a client group lingering out while
 * the server reuses it (its Accept delayed behind an LLC flow) would end that handshake.
 */
let lingerMs = 10_000;
const CLIENT_LINGER_EXTRA_MS = 10_000;

/** @internal Set how long an unused link group stays (tests); returns the previous value. */
export function setSmcrLingerMs(ms: number): number {
  const was = lingerMs;
  lingerMs = ms;
  return was;
}

/**
 * The buffer memory SMC-R may hold in this process (RMBs and send buffers, in use or pooled):
 * SOFTRDMA_SMCR_MAX_MEM bytes, 1 GiB unless set. A send buffer is as large as the peer's RMB,
 * whose size the peer names in its CLC message (up to 512 MiB); without a bound, a peer's
 * Proposals or Accepts alone could make this process allocate until it died. Linux sizes its
 * send buffers locally and does not need this. Over the bound a handshake declines as Linux
 * does when it cannot make its buffers (SMC_CLC_DECL_MEM) and the connection stays TCP.
 */
const memory = { held: 0, max: positiveEnv('SOFTRDMA_SMCR_MAX_MEM') ?? 2 ** 30, refused: 0 };

function positiveEnv(name: string): number | undefined {
  const v = Number(process.env[name]);
  return Number.isSafeInteger(v) && v > 0 ? v : undefined;
}

/** Deregister a buffer on every device it was registered on, and count its memory free. */
function dereg(b: Rmb): void {
  memory.held -= b.size;
  for (const mr of b.mrs.values()) try { mr.dereg(); } catch { /* context gone */ }
}

/** Throw ENOMEM, counted, unless `need` more bytes fit in the memory bound. */
function checkMemory(need: number): void {
  if (memory.held + need <= memory.max) return;
  memory.refused++;
  throw new SoftrdmaError('ENOMEM', `SMC-R buffers would exceed ${memory.max} bytes (SOFTRDMA_SMCR_MAX_MEM): ${memory.held} held, ${need} more needed`);
}

/** SMC-R's buffer memory: bytes held, the bound, and allocations refused for it. */
export function smcrMemory(): { held: number; max: number; refused: number } {
  return { ...memory };
}

/** @internal Set the bound (tests); returns the previous one. */
export function setSmcrMemoryLimit(bytes: number): number {
  const was = memory.max;
  memory.max = bytes;
  return was;
}

/**
 * A registered buffer: an RMB (REMOTE_WRITE) or a send buffer (local only). Each RoCE device
 * has its own protection domain, so a buffer used on links of two devices has an MR (and an
 * rkey) on each (Linux: smc_buf_desc.mr[link_idx]); mr is the one on the device it was made on.
 */
export interface Rmb { buf: Buffer; mr: MR; size: number; access: number; mrs: Map<SmcrDevice, MR> }

/**
 * TEST_LINK keepalive (Linux: net.smc.smcr_testlink_time, 30 s; smc_llc_testlink_work,
 * smc_llc.c 2109-2139): a link that received nothing for this long sends TEST_LINK, and one
 * whose response does not come within SMC_LLC_WAIT_TIME (2 s) goes down. The link's QP retries
 * forever (retry_cnt 7), so this is how a peer that went silent on RoCE is noticed.
 * SOFTRDMA_SMCR_TESTLINK_MS sets it (0: off), as the sysctl does.
 */
const TESTLINK_MS = process.env.SOFTRDMA_SMCR_TESTLINK_MS !== undefined && Number(process.env.SOFTRDMA_SMCR_TESTLINK_MS) >= 0
  ? Number(process.env.SOFTRDMA_SMCR_TESTLINK_MS) : LLC_TESTLINK_DEFAULT_MS;

/**
 * How long a server whose link group has one link (and a second device to offer) waits before
 * it tries ADD_LINK again, after a failed attempt or a lost link. Linux adds a link right after
 * the first contact (af_smc.c 1919-1923), right after a DELETE_LINK (smc_llc.c 1727-1730) and
 * on a port event (smcr_port_add, smc_core.c); softrdma's devices have no port events, so the
 * server retries on this timer instead. SOFTRDMA_SMCR_ADDLINK_MS sets it.
 */
const ADDLINK_RETRY_MS = process.env.SOFTRDMA_SMCR_ADDLINK_MS !== undefined && Number(process.env.SOFTRDMA_SMCR_ADDLINK_MS) > 0
  ? Number(process.env.SOFTRDMA_SMCR_ADDLINK_MS) : 10_000;
/** SMC_LINKS_ADD_LNK_MAX (smc_core.h 179): the most links a link group gets here. */
export const MAX_LINKS = 2;

/** The first IPv4 address in a device's GID table, or undefined. */
function ipv4Of(d: ReturnType<typeof getDeviceList>[number]): string | undefined {
  try {
    for (const g of d.provider.gidTable(1)) {
      const a = addressFromGid(g.gid);
      if (isIPv4(a)) return a;
    }
  } catch { /* a device going away */ }
  return undefined;
}

/**
 * What makes an ADD_LINK's QP impossible, or undefined: a QPN no RC QP has (0 and 1 are the
 * special QPs, 0xffffff the multicast QPN), an MTU (when given) outside IB's 256..4096 (1..5).
 */
function impossibleQp(qpn: number, mtu: number | undefined): string | undefined {
  if (qpn < 2 || qpn >= 0xffffff) return `QPN ${qpn}`;
  if (mtu !== undefined && (mtu < 1 || mtu > 5)) return `QP MTU ${mtu}`;
  return undefined;
}

export type LgrRole = 'client' | 'server';

/**
 * An ADD_LINK flow under way (smc_llc_srv_add_link / smc_llc_cli_add_link): the new link, the
 * link the flow's LLC messages go on, what is awaited, and what ends it (releases the group's
 * LLC flow).
 */
interface AddFlow { link: SmcrLink; via: SmcrLink; stage: 'add' | 'confirm'; timer: NodeJS.Timeout; end(): void }

/** A local LLC flow waiting for the group's flow lock (llcFlow). */
interface FlowWaiter { kind: string; grant(release: () => void): void; fail(e: Error): void; timer: NodeJS.Timeout }

/** Our CONFIRM_RKEY or DELETE_RKEY request awaiting its response, on `link`, for `rkey` (the RMB's rkey on that link). */
interface RkeyWait { kind: 'CONFIRM_RKEY' | 'DELETE_RKEY'; link: SmcrLink; rkey: number; resolve(): void; reject(e: Error): void; timer: NodeJS.Timeout }

/**
 * A handshake whose Accept offered `rmb` on `link` and whose connection has not joined yet: the
 * CDCs that came for its token meanwhile (holdEarly), for attach().
 */
interface Expected {
  link: SmcrLink;
  rmb: Rmb;
  /** The CDC with the highest seqno so far (it says all the earlier ones said: cursors are totals, close flags stay set). */
  cdc: SmcrCdc | undefined;
  /** A failover-validation CDC beyond any seen (CDCs were lost): the connection aborts as it joins, and takes nothing after it. */
  outOfSync: SmcrCdc | undefined;
}

/** A peer RMB's rtoken on a new link, from ADD_LINK, for an RMB the rtoken table did not hold yet. */
interface LateKey { link: SmcrLink; rkey: number; addr: bigint }

export class SmcrLinkGroup {
  /** Every live link group, by lgrKey(). */
  private static readonly all = new Map<string, Set<SmcrLinkGroup>>();

  /** The link made with the group (first contact); links[0] until a failover removes it. */
  readonly first: SmcrLink;
  /** The group's links: the first, and those ADD_LINK added and CONFIRM_LINK made active (at most MAX_LINKS). */
  links: SmcrLink[] = [];
  readonly conns = new Map<number, SmcrConnection>();
  private readonly freeRmbs = new Map<number, Rmb[]>();
  private readonly freeSndbufs = new Map<number, Rmb[]>();
  /** RMBs of ended connections whose peer has not sent its last CDC yet, by token. */
  private readonly quarantined = new Map<number, Rmb>();
  /**
   * Deadlines of quarantined RMBs only an Accept offered (their handshake failed): the peer may
   * never have settled, so no CDC may ever come for the token; after OFFERED_QUARANTINE_MS the
   * RMB is deregistered (a write that late finds no key) rather than held until the group ends.
   */
  private readonly offeredDeadlines = new Map<number, NodeJS.Timeout>();
  private readonly owing = new Set<SmcrConnection>();
  /**
   * Send buffers of ended connections whose last RDMA WRITE has not completed: rxe reads the
   * source memory when it builds the packets, after the post, so a new connection must not
   * write into one before then.
   */
  private readonly draining: Array<{ link: SmcrLink; seq: number; buf: Rmb }> = [];
  /**
   * Tokens of RMBs offered in an Accept whose connection does not exist yet: the client may
   * write (and send its CDC) as soon as it sent its Confirm, before the server has read it.
   * The CDC with the highest seqno for each is kept (cursors are totals, close flags stay set)
   * for attach(); see holdEarly.
   */
  private readonly expected = new Map<number, Expected>();
  /**
   * Connections the application closed whose last WRITEs and CDC were posted but have not
   * completed (Linux keeps a closing connection in the group until smc_conn_free). They leave
   * once everything they posted completed, or at a failover of their link, which does not
   * resend them (switchConns); their send buffer is reused only then.
   */
  private readonly closing = new Set<SmcrConnection>();
  /**
   * The peer's rtokens on links removed while an Accept naming them awaited its Confirm (by
   * entry index), so onConfirm can still find that RMB's entry and its key on another link.
   */
  private readonly retired = new Map<SmcrLink, Array<{ idx: number; rkey: number; addr: bigint; entry: ReadonlyMap<SmcrLink, unknown> }>>();
  /** The first link's UID (smc_link.link_uid); the group's ID for smcss. */
  readonly linkUid = randomBytes(4);
  /** Links the peer and we agreed on (the CLC first contact: min of both sides' max_links); 1: no ADD_LINK. */
  maxLinks = 1;
  /**
   * Connections the group takes (lgr->max_conns): the CLC first contact's max_conns, at most
   * MAX_CONNS (the server takes the smaller of the client's and its own, smc_clc.c
   * smc_clc_srv_v2x_features_validate; the client the server's).
   */
  maxConns = MAX_CONNS;
  /**
   * Server: handshakes that chose this group at their Proposal and have not joined (or given
   * up) yet. They count against maxConns as Linux's conns_num does from smc_conn_create at the
   * Proposal: connections opened together all choose before any joins.
   */
  private reservedConns = 0;
  confirmed = false;
  dead = false;
  private lingerTimer: NodeJS.Timeout | undefined;
  private confirmWait: { resolve(): void; reject(e: Error): void; timer: NodeJS.Timeout } | undefined;
  private addFlow: AddFlow | undefined;
  private addTimer: NodeJS.Timeout | undefined;
  /** endUnlessPeerAnswers: the wait for any answer on the group's links. */
  private syncCheck: NodeJS.Timeout | undefined;
  /** Server: an ADD_LINK flow waits for the flow lock. */
  private addStarting = false;
  /** Server: the ADD_LINK flow started when the first link was confirmed; settles when it ended (or did not start). */
  private firstAdd: Promise<void> | undefined;
  /** Client: the peer's ADD_LINK request waits for a flow of ours to end. */
  private rmtAddQueued = false;
  /**
   * The link group's LLC flow (Linux: lgr->llc_flow_lcl and llc_flow_rmt, smc_llc_flow_initiate):
   * what holds it, and the local flows waiting for it. One flow at a time: an ADD_LINK (ours,
   * or the peer's request at the client) and our CONFIRM_RKEY / DELETE_RKEY flows (a handshake
   * choosing its link and announcing its RMB) take turns, so a handshake decides about
   * CONFIRM_RKEY with the links that are active when it holds the flow, and an ADD_LINK names
   * every RMB those decisions left out. The peer's CONFIRM_RKEY, DELETE_RKEY, TEST_LINK and
   * DELETE_LINK are answered at once, without it (Linux runs them as the remote flow beside a
   * local one), so two groups waiting on each other's answers cannot deadlock.
   */
  private flowBusy: string | undefined;
  private readonly flowQueue: FlowWaiter[] = [];
  /** LLC messages waiting for a send queue slot, per link (sendLlc), sent as completions free slots. */
  private readonly llcBacklog = new Map<SmcrLink, Buffer[]>();
  /** LLC messages that waited for a send queue slot, and those dropped because the backlog was full. */
  readonly llcSq = { waited: 0, dropped: 0 };
  /**
   * ADD_LINK rtokens for peer RMBs the table did not hold when they came, by the link the pair
   * names the RMB on and its rkey there: a handshake between the peer's CLC message and ours
   * (the server's ADD_LINK names RMBs its Accepts offered; the client's response names RMBs of
   * Accepts whose Confirm the server has not read). attach() takes them; kept LATE_KEYS_MS.
   */
  private readonly lateKeys = new Map<SmcrLink, { keys: Map<number, LateKey>; timer: NodeJS.Timeout }>();
  /** DELETE_LINK requests of ours whose response may come (each waited for SMC_LLC_WAIT_TIME). */
  private delWaits = 0;
  private readonly delTimers = new Set<NodeJS.Timeout>();
  private lastLinkId = 1;
  /** LLC messages dropped as Linux drops them (unknown type, short, bad length), and CDCs for no connection. */
  readonly dropped = { llc: 0, cdc: 0 };
  /**
   * What the link refused, one count per message, by reason (tests, diagnostics; dropped has
   * the totals): malformed CDC/LLC messages, CDCs whose token names no connection, LLC types
   * Linux has no handler for, responses nobody asked for and requests out of flow,
   * CONFIRM_RKEY/DELETE_RKEY requests answered negatively, and connections aborted for a CDC
   * that broke the protocol (connection.ts fail()).
   */
  readonly rx = { cdcMalformed: 0, cdcNoConn: 0, llcMalformed: 0, llcUnknownType: 0, llcUnexpected: 0, rkeyNegative: 0, connAborts: 0 };
  /** LLC messages sent and received, by type ('ADD_LINK', 'ADD_LINK resp', ...), for tests and diagnostics. */
  readonly llcTx: Record<string, number> = {};
  readonly llcRx: Record<string, number> = {};
  /**
   * Link changes (tests, diagnostics): links added (ADD_LINK + CONFIRM_LINK done) and deleted,
   * ADD_LINK requests rejected (by the peer, or by us) and flows that failed otherwise,
   * connections moved to another link and connections that could not be.
   */
  readonly linkEvents = { added: 0, deleted: 0, addRejected: 0, addFailed: 0, connsMoved: 0, connsLost: 0, lastFailure: '' };
  /**
   * The peer's RMBs, as Linux's lgr->rtokens (rtokens.ts): from each connection's CLC
   * Accept/Confirm (attach, as smc_rmb_rtoken_handling) and the peer's CONFIRM_RKEY requests,
   * kept after the connection ends until a DELETE_RKEY names them or the group ends; at most 255.
   * For answering CONFIRM_RKEY and DELETE_RKEY as Linux does, and for a joining connection's
   * rkeys on the other links; nothing is ever written through it: a connection's data goes where
   * its CLC Accept/Confirm pointed (and, on another link, where the keys it took when it joined
   * or from ADD_LINK point).
   */
  private readonly rtokens = new RtokenTable();
  /** Client: entries attach added for connections whose Confirm has not gone out (dropProvisional). */
  private readonly provisional = new Map<SmcrConnection, { idx: number; entry: ReadonlyMap<SmcrLink, Rtoken> }>();
  /** Our CONFIRM_RKEY or DELETE_RKEY request awaiting its answer (one at a time: they hold the flow). */
  private rkeyWait: RkeyWait | undefined;
  peerKey = '';

  /** What each device the group's links use does when it closes (onDeviceGone). */
  private readonly devClose = new Map<SmcrDevice, () => void>();

  /**
   * The group's own PD on each device its links use (Linux: one per link, smcr_link_init). An
   * rkey is honoured only on a QP of its MR's PD, so a peer holding one of its own RMBs' keys
   * cannot reach another group's RMBs by guessing a key byte: their MRs are in other PDs.
   */
  private readonly pds = new Map<SmcrDevice, PD>();

  constructor(readonly dev: SmcrDevice, readonly role: LgrRole) {
    this.first = this.linkIn(dev);
    this.first.id = 1;
    this.first.uid = this.linkUid;
    this.links.push(this.first);
    this.watchDevice(dev);
    this.bind(this.first);
  }

  /** Hear of `dev` closing (once per device). */
  private watchDevice(dev: SmcrDevice): void {
    if (this.devClose.has(dev)) return;
    const f = () => this.onDeviceGone(dev);
    this.devClose.set(dev, f);
    dev.onClose.add(f);
  }

  /**
   * A device of the group closed: its links are lost, the first link's device as any other
   * (Linux: smcr_port_err / smc_smcr_terminate_all(smcibdev) take down only that device's
   * links). Each goes down as a failed link does: its connections move to a link on another
   * device and the peer hears DELETE_LINK; the group ends when no active link is left.
   */
  private onDeviceGone(dev: SmcrDevice): void {
    for (const l of [...this.links, ...(this.addFlow ? [this.addFlow.link] : [])]) if (l.dev === dev) this.onLinkDown(l, 'the RoCE device was closed');
  }

  /** The link new connections and the connections' data go on: the first active one (the first link before it is confirmed). */
  get link(): SmcrLink {
    return this.links.find((l) => l.active && !l.isDown) ?? this.links[0] ?? this.first;
  }

  /**
   * The link a new connection goes on, as the server assigns it (smcr_lgr_conn_assign_link,
   * smc_core.c 123-160): the first active link, or the next active one after it when the group
   * has an odd number of connections, so connections alternate over two links. The client
   * takes the link whose QP the server's Accept names.
   */
  linkForNewConn(): SmcrLink {
    const active = this.activeLinks();
    if (active.length === 0) return this.link;
    // Handshakes whose Accept chose a link count as connections: the Proposals of connections
    // opened together come before any of them joins the group.
    return (this.conns.size + this.expected.size) % 2 === 1 && active.length > 1 ? active[1]! : active[0]!;
  }

  /** The link number (smc_link.link_id) of that link. */
  get linkNum(): number { return this.link.id; }

  /** Active links (CONFIRM_LINK done, not down). */
  activeLinks(): SmcrLink[] {
    return this.links.filter((l) => l.active && !l.isDown);
  }

  private bind(link: SmcrLink): void {
    link.handlers = {
      message: (m) => this.onMessage(link, m),
      sendable: () => this.onSendable(link),
      down: (reason) => this.onLinkDown(link, reason),
    };
  }

  /** A group's key: our address, the peer's system ID and GID, and the TCP peer's address (the client's for a server group, the server's for a client group). */
  static key(dev: SmcrDevice, peerId: Buffer, peerGid: Buffer, tcpPeer?: string): string {
    const k = `${dev.address}|${peerId.toString('hex')}|${peerGid.toString('hex')}`;
    return tcpPeer === undefined ? k : `${k}|${tcpPeer}`;
  }

  /**
   * Link groups to this peer, in this role, that new connections may join. The role matters
   * when the peer is this very process (a connection to itself over one device: its client
   * and server groups have the same key), as in Linux's smcr_lgr_match. A server does not add
   * a connection to a group that has maxConns connections and handshakes holding a place
   * (reserveConn), or whose rtoken table is full (smc_conn_create, smc_core.c 1992-1996: it
   * makes a new group, first contact, instead), nor to one whose peer is being asked whether it
   * still has it (endUnlessPeerAnswers: the peer said it lost it); a client joins the group the server's Accept
   * names however many connections it has (smc_conn_create counts none for SMC_CLNT), and
   * declines ERR_RTOK if its table is full (attach).
   */
  static find(key: string, role: 'client' | 'server'): SmcrLinkGroup[] {
    return [...(SmcrLinkGroup.all.get(key) ?? [])].filter((g) => g.role === role && g.confirmed && !g.dead && g.activeLinks().length > 0
      && (role === 'client' || (g.conns.size + g.reservedConns < g.maxConns && !g.rtokens.full && !g.syncCheck)));
  }

  /**
   * Server: a handshake takes a place in the group at its Proposal (smc_conn_create counts
   * conns_num there), given back by unreserveConn when it joined (attach) or gave up. A group
   * whose places are all taken is not found (find): the next Proposal makes a new group.
   */
  reserveConn(): void {
    this.reservedConns++;
    clearTimeout(this.lingerTimer);
    this.lingerTimer = undefined;
  }

  unreserveConn(): void {
    if (this.reservedConns > 0) this.reservedConns--;
    this.maybeLinger();
  }

  /** Places taken by handshakes not joined yet (tests, diagnostics). */
  get reservedCount(): number { return this.reservedConns; }

  /**
   * Client, a group the server reused: ours to that peer (its system ID) on `dev` with an active
   * link to the server's QP the Accept names, by QPN and GID over every link, as smcr_lgr_match
   * (smc_core.c) looks: the server may put the connection on either link, and each device
   * numbers its QPs alike. And, unlike Linux, one made over a TCP connection to this same
   * server address (a client group's key ends with it, as a server group's ends with the
   * client's): 'elsewhere' when only a group of another server address matches. Without that,
   * any server could name another server's group in its Accept (the system id, GID and QPN
   * are in every Accept that server sends) and have this client's bytes for it written on the
   * other server's link, where they break that group's connections.
   */
  static findByServerLink(dev: SmcrDevice, peerId: Buffer, qpn: number, gid: Buffer, tcpPeer: string): { lgr: SmcrLinkGroup; link: SmcrLink } | 'elsewhere' | undefined {
    const prefix = SmcrLinkGroup.key(dev, peerId, Buffer.alloc(0)); // the keys of every peer GID
    let elsewhere = false;
    for (const key of SmcrLinkGroup.all.keys()) {
      if (!key.startsWith(prefix)) continue;
      for (const lgr of SmcrLinkGroup.find(key, 'client')) {
        const link = lgr.activeLinks().find((l) => l.remote?.qpn === qpn && l.remote.gid.equals(gid));
        if (!link) continue;
        if (key.endsWith(`|${tcpPeer}`)) return { lgr, link };
        elsewhere = true;
      }
    }
    return elsewhere ? 'elsewhere' : undefined;
  }

  /**
   * Does a client group made over TCP with `dst` (its key ends with it, as findByServerLink
   * reads it) have a connection to `service` (dst:port, discovery's serviceKey) whose peer is shown alive (SmcrConnection.peerLive)?
   * Discovery trusts a cached yes for dst:port without asking only then (or on a fresh answer):
   * a connection to another port shows the peer's process alive, not that port's listener.
   * Asked per connection: no copies of the tables.
   */
  static liveClientTo(dst: string, service: string): boolean {
    const suffix = `|${dst}`;
    for (const [key, groups] of SmcrLinkGroup.all) {
      if (!key.endsWith(suffix)) continue;
      for (const g of groups) {
        if (g.role !== 'client' || g.dead) continue;
        for (const c of g.conns.values()) if (c.service === service && c.peerLive) return true;
      }
    }
    return false;
  }

  /** Entries in the peer's rtoken table (tests, diagnostics). */
  get rtokenCount(): number { return this.rtokens.size; }

  /** Every link group of the process (smcss, tests). */
  static list(): SmcrLinkGroup[] {
    return [...SmcrLinkGroup.all.values()].flatMap((s) => [...s]);
  }

  /**
   * Could a link group on `dev` get a second link from this process: is there another rxe
   * device with an IPv4 address (not on dev's subnet, where a second path would not be
   * one)? The CLC Proposal and Accept offer max_links 2 only then.
   */
  static hasAltDevice(dev: SmcrDevice): boolean {
    return SmcrLinkGroup.altDevices([dev.device], undefined, dev.address).length > 0;
  }

  /**
   * The process's rxe devices for another link (Linux: smc_pnet_find_alt_roce and, in v2,
   * smc_ib_find_route to the peer's new GID): not one of `used`, with an IPv4 address, on the
   * subnet of peerAddr when given (the peer's GID for the new link), else not on avoid's.
   */
  private static altDevices(used: unknown[], peerAddr: string | undefined, avoid: string | undefined): Array<ReturnType<typeof getDeviceList>[number]> {
    return getDeviceList().filter((d) => {
      if (used.includes(d) || d.driver !== 'rxe') return false;
      const a = ipv4Of(d);
      if (!a) return false;
      if (peerAddr !== undefined) return inLocalSubnet(a, peerAddr);
      return avoid === undefined || !inLocalSubnet(a, avoid);
    });
  }

  private altDevice(peerAddr: string | undefined): SmcrDevice | undefined {
    const used = this.links.filter((l) => !l.isDown).map((l) => l.dev.device);
    for (const d of SmcrLinkGroup.altDevices(used, peerAddr, peerAddr === undefined ? this.link.dev.address : undefined)) {
      try {
        const s = smcrDeviceOf(d);
        if (!s.isClosed) return s;
      } catch { /* closing */ }
    }
    return undefined;
  }

  /** The TCP address of the peer this group was made with (the last part of its key). */
  get tcpPeer(): string | undefined {
    const k = this.peerKey.split('|');
    return k.length > 3 ? k[3] : undefined;
  }

  /**
   * The peer's process is taken for gone (a connection learnt it, or the group failed): a
   * client forgets the discovery answers that said it had an SMC-R listener (forgetSmcrPeer).
   */
  peerGone(): void {
    const p = this.tcpPeer;
    if (this.role === 'client' && p !== undefined) forgetSmcrPeer(p);
  }

  /** Make the group findable for its peer, once the link is confirmed. */
  register(key: string): void {
    this.peerKey = key;
    let set = SmcrLinkGroup.all.get(key);
    if (!set) SmcrLinkGroup.all.set(key, set = new Set());
    set.add(this);
  }

  // --- buffers -------------------------------------------------------------------------

  /** A new buffer of `size` bytes registered on the first link's device, within the memory bound. */
  private alloc(size: number, access: number): Rmb {
    checkMemory(size);
    const buf = Buffer.alloc(size);
    const dev = this.link.dev;
    const mr = this.pdOn(dev).regMr(buf, access);
    memory.held += size;
    return { buf, mr, size, access, mrs: new Map([[dev, mr]]) };
  }

  /** The buffer's MR on a device, registered there on first use (a link on another device). */
  mrOn(b: Rmb, dev: SmcrDevice): MR {
    let mr = b.mrs.get(dev);
    if (!mr) b.mrs.set(dev, mr = this.pdOn(dev).regMr(b.buf, b.access));
    return mr;
  }

  /** The group's PD on a device, allocated on first use; none for a group that ended. */
  private pdOn(dev: SmcrDevice): PD {
    if (this.dead) throw new SoftrdmaError('EINVAL', 'smc-r: the link group has ended');
    let pd = this.pds.get(dev);
    if (!pd) this.pds.set(dev, pd = dev.ctx.allocPd());
    return pd;
  }

  /** A new link on `dev` in the group's PD there; a PD made for it alone goes if the link cannot be made. */
  private linkIn(dev: SmcrDevice): SmcrLink {
    const had = this.pds.has(dev);
    const pd = this.pdOn(dev);
    try {
      return new SmcrLink(dev, pd);
    } catch (e) {
      if (!had) {
        this.pds.delete(dev);
        try { pd.dealloc(); } catch { /* its context is gone */ }
      }
      throw e;
    }
  }

  /** Deallocate the group's PDs that nothing uses any more (an ended group; late buffers keep theirs until they go). */
  private releasePds(): void {
    for (const [dev, pd] of this.pds) {
      try {
        pd.dealloc();
        this.pds.delete(dev);
      } catch (e) {
        // EBUSY: a buffer a handshake still holds (deregistered when given back); EBADF or
        // ENOENT: the device's context closed, which took the PD with it.
        if ((e as { code?: string }).code !== 'EBUSY') this.pds.delete(dev);
      }
    }
  }

  takeRmb(size: number): Rmb {
    const pooled = this.freeRmbs.get(size)?.pop();
    if (pooled) return pooled;
    return this.alloc(size, Access.LOCAL_WRITE | Access.REMOTE_WRITE);
  }

  /**
   * Would an RMB and a send buffer of these sizes (from the pools where they hold one) fit in
   * the memory bound? Throws ENOMEM, counted, when not.
   */
  reserve(rmb: number, sndbuf: number): void {
    checkMemory((this.freeRmbs.get(rmb)?.length ? 0 : rmb) + (this.freeSndbufs.get(sndbuf)?.length ? 0 : sndbuf));
  }

  takeSndbuf(size: number): Rmb {
    const pooled = this.freeSndbufs.get(size)?.pop();
    if (pooled) return pooled;
    return this.alloc(size, 0);
  }

  private put(pool: Map<number, Rmb[]>, b: Rmb): void {
    let l = pool.get(b.size);
    if (!l) pool.set(b.size, l = []);
    l.push(b);
  }

  /**
   * A connection's buffers when its handshake failed before the connection joined the group.
   * offered: our Accept gave the peer the RMB's rkey (token); the peer may have settled and may
   * write into it, so it waits in quarantine for the peer's last CDC for the token as a closed
   * connection's RMB does (or goes with the group). Buffers of a group that ended are
   * deregistered now: its pools are gone.
   */
  giveBack(rmb: Rmb | undefined, sndbuf: Rmb | undefined, token?: number, offered = false): void {
    const early = token !== undefined ? this.expected.get(token)?.cdc : undefined;
    if (token !== undefined) this.unexpect(token);
    if (this.dead) {
      if (rmb) dereg(rmb);
      if (sndbuf) dereg(sndbuf);
      this.releasePds();
      return;
    }
    if (rmb) {
      const peerDone = early !== undefined && (early.peerConnClosed || early.peerConnAbort);
      if (offered && token !== undefined && !peerDone && this.activeLinks().length > 0) this.quarantineBounded(token, rmb);
      else this.put(this.freeRmbs, rmb);
    }
    if (sndbuf) this.put(this.freeSndbufs, sndbuf);
    this.maybeLinger();
  }

  /**
   * Quarantine an RMB the peer may write into, though it may never send a CDC for the token
   * again (an offered RMB whose handshake failed, a connection whose peer's close was only
   * inferred): it waits for the peer's closing CDC as any, but at most the offered quarantine
   * (60 s), and is then deregistered (expireOffered).
   */
  private quarantineBounded(token: number, rmb: Rmb): void {
    this.quarantined.set(token, rmb);
    const t = setTimeout(() => {
      this.offeredDeadlines.delete(token);
      if (this.quarantined.get(token) !== rmb || this.dead) return;
      this.expireOffered(token, rmb);
    }, offeredQuarantineMs);
    t.unref();
    this.offeredDeadlines.set(token, t);
  }

  /**
   * An offered RMB's quarantine ran out: it is deregistered, without a DELETE_RKEY. A client
   * that settled on it may still refer to it in its rtoken table: Linux's smc_rtoken_delete
   * would free that slot for reuse under the connection that still uses it, whose writes could
   * then land in another connection's RMB; a write with the deregistered key is NAKed instead
   * (Linux sends DELETE_RKEY only for buffers whose registration failed). If a closing CDC for
   * its token took it back to the pool, or the group ended and deregistered it, it is left alone.
   */
  private expireOffered(token: number, rmb: Rmb): void {
    if (this.quarantined.get(token) !== rmb || this.dead) return;
    this.quarantined.delete(token);
    dereg(rmb);
    this.maybeLinger();
  }

  /** RMBs offered in an Accept or held by an ended connection that the peer may still write into (tests, diagnostics). */
  get quarantinedCount(): number { return this.quarantined.size; }

  /**
   * A connection token (our alert token) for this group: random, non-zero, and named by no
   * connection, offer or quarantined RMB of the group. Linux counts them up for the host
   * (smc_lgr_register_conn); counted, one Accept told any server the tokens of the
   * connections made just before it, to name in a forged CLC message.
   */
  newToken(): number {
    for (;;) {
      // randomInt draws from node:crypto's cache of random bytes; randomBytes(4) was a call into
      // OpenSSL per connection.
      const t = randomInt(0x1_0000_0000);
      if (t !== 0 && !this.conns.has(t) && !this.expected.has(t) && !this.quarantined.has(t)) return t;
    }
  }

  // --- connections ---------------------------------------------------------------------

  /**
   * A token is about to be offered (server's Accept) on `link` with `rmb`: hold its CDCs until
   * attach(); an ADD_LINK meanwhile names the RMB's rkeys (rkeyPairs). The group does not
   * linger out while a handshake is pending: its Confirm would find it gone.
   */
  expect(token: number, link: SmcrLink, rmb: Rmb): void {
    this.expected.set(token, { link, rmb, cdc: undefined, outOfSync: undefined });
    clearTimeout(this.lingerTimer);
    this.lingerTimer = undefined;
  }

  private unexpect(token: number): void {
    const e = this.expected.get(token);
    this.expected.delete(token);
    if (e && !this.expecting(e.link)) this.retired.delete(e.link);
  }

  /** Whether a pending handshake's Accept named `link`. */
  private expecting(link: SmcrLink): boolean {
    for (const e of this.expected.values()) if (e.link === link) return true;
    return false;
  }

  /**
   * Server, a Confirm whose Accept named a link that is no longer active: another active link
   * on which the peer's RMB (its rkey and address on the named link) has a key (the peer
   * announced it with CONFIRM_RKEY), with that key; undefined: none.
   */
  peerKeyElsewhere(from: SmcrLink, rkey: number, addr: bigint): { link: SmcrLink; rkey: number; addr: bigint } | undefined {
    const hit = this.retired.get(from)?.find((t) => t.rkey === rkey && t.addr === addr);
    const e = hit && this.rtokens.entry(hit.idx);
    // The same entry, not a slot DELETE_RKEY freed and CONFIRM_RKEY filled again since.
    if (!e || e !== hit.entry) return undefined;
    for (const l of this.activeLinks()) {
      const t = e.get(l);
      if (l !== from && t) return { link: l, rkey: t.rkey, addr: t.addr };
    }
    return undefined;
  }

  /**
   * A connection joins the group with the peer RMB its CLC Accept (client) or Confirm (server)
   * named: that rtoken goes into the table, or is found there (smc_rmb_rtoken_handling ->
   * smc_rtoken_add: the same rkey and address on the same link is the same entry, as when the
   * peer reuses an RMB or announced it with CONFIRM_RKEY first), and the connection takes the
   * entry's rkeys on the other links (a link still being added included: its ADD_LINK put
   * them there, and a failed flow takes them back, clearLink; an ADD_LINK that came before the
   * RMB was in the table left them in lateKeys). false: the table is full; the
   * connection does not join, and its handshake declines SMC_CLC_DECL_ERR_RTOK as Linux's does
   * (af_smc.c 1331-1334, 2439-2440).
   */
  attach(conn: SmcrConnection, provisional = false): boolean {
    if (this.dead) return false;
    const before = this.rtokens.size;
    const idx = this.rtokens.add(conn.link, { rkey: conn.peer.rkey, addr: conn.peer.wireAddr });
    if (idx === undefined) return false;
    if (provisional && this.rtokens.size > before) this.provisional.set(conn, { idx, entry: this.rtokens.entry(idx)! });
    clearTimeout(this.lingerTimer);
    this.lingerTimer = undefined;
    this.conns.set(conn.token, conn);
    const lk = this.lateKeys.get(conn.link)?.keys;
    const late = lk?.get(conn.peer.rkey);
    if (late) {
      // An ADD_LINK's rtoken for this RMB came before the RMB was in the table.
      lk!.delete(conn.peer.rkey);
      if (!this.rtokens.entry(idx)!.has(late.link)) this.rtokens.set(idx, late.link, { rkey: late.rkey, addr: late.addr });
    }
    for (const [l, t] of this.rtokens.entry(idx)!) {
      if (l !== conn.link && (this.links.includes(l) || this.addFlow?.link === l)) conn.setPeerKey(l, { rkey: t.rkey, addr: remoteAddr(t.addr) });
    }
    const pending = this.expected.get(conn.token);
    this.unexpect(conn.token);
    // Not started: these reach no application callback (the socket takes over at settle).
    if (pending?.cdc) conn.onCdc(pending.cdc);
    if (pending?.outOfSync) conn.onCdc(pending.outOfSync); // compared as it came: beyond the held seqno, so it aborts
    return true;
  }

  /**
   * The connection was released (closed, or its handshake failed after it joined). Its RMB
   * waits in quarantine for the peer's last CDC (Linux frees it only after the peer's closing
   * CDC, at SMC_CLOSED): it goes back to the pool at once only when that CDC came (or no link
   * is left to write through). A close the connection only inferred (the peer's TCP ended with
   * no closing CDC, peerTcpEnded) is no such CDC: the peer's late WRITEs (retransmitted, or
   * behind its CDC) could land in the next connection's ring, so that RMB waits too, bounded
   * as an offered one (quarantineBounded). If WRITEs or a CDC of its are still unconfirmed
   * (the close's own, typically), it stays in `closing` until they complete (a failover
   * meanwhile does not resend them: switchConns); else its send buffer is reused once the link
   * read it.
   */
  detach(conn: SmcrConnection): void {
    if (this.conns.get(conn.token) !== conn) return;
    this.conns.delete(conn.token);
    this.dropProvisional(conn);
    const link = conn.link;
    conn.completed(link.okSeq);
    if (!link.isDown && conn.unconfirmed) {
      conn.closing = true;
      this.closing.add(conn);
    } else {
      this.owing.delete(conn);
      if (link.isDown || link.completedSeq >= link.postedSeq) this.put(this.freeSndbufs, conn.sndbuf);
      else this.draining.push({ link, seq: link.postedSeq, buf: conn.sndbuf });
    }
    if (conn.peerGone || this.activeLinks().length === 0) this.put(this.freeRmbs, conn.rmb);
    else if (conn.peerClosed) this.quarantineBounded(conn.token, conn.rmb); // inferred, not on the wire
    else this.quarantined.set(conn.token, conn.rmb);
    this.maybeLinger();
  }

  /** Client: the CLC Confirm for conn went out; its rtoken entry is the server's to delete from now on. */
  confirmSent(conn: SmcrConnection): void {
    this.provisional.delete(conn);
  }

  /**
   * Client: conn leaves before its Confirm went out. An rtoken entry its attach added, which no
   * other connection of the group names, is freed (rtokens.ts): the server never counted on it.
   */
  private dropProvisional(conn: SmcrConnection): void {
    const p = this.provisional.get(conn);
    if (!p) return;
    this.provisional.delete(conn);
    for (const c of this.conns.values()) {
      if (c.link === conn.link && c.peer.rkey === conn.peer.rkey && c.peer.wireAddr === conn.peer.wireAddr) return;
    }
    this.rtokens.deleteEntry(p.idx, p.entry);
  }

  /** A closing connection's posts all completed (or cannot be resent): it leaves, and its send buffer is free. */
  private closed(conn: SmcrConnection): void {
    // Confirmed, or left behind (a failover does not move a closing connection): the socket's
    // TCP close says which (afterCdcSent: a FIN, or a RST).
    conn.wakeSent(!conn.unconfirmed);
    if (!this.closing.delete(conn)) return;
    conn.closing = false;
    this.owing.delete(conn);
    this.put(this.freeSndbufs, conn.sndbuf);
    this.maybeLinger();
  }

  /** Connections closed with posts still unconfirmed (tests, diagnostics). */
  get closingCount(): number { return this.closing.size; }

  /** The connection waits for room in the send queue (a CDC it owes, or a write). */
  wantsQueue(conn: SmcrConnection): void {
    this.owing.add(conn);
  }

  /**
   * Start the linger timer of a group nothing uses. A quarantined RMB is a use: its peer has not
   * sent its closing CDC (Linux frees a connection only at SMC_CLOSED, and its link group only
   * after its last connection), and may still write, read or keep its end open half-closed, as
   * a node:net socket with allowHalfOpen may; ending the group under it would abort that end
   * (ECONNABORTED) where TCP would have sat idle. Such a group stays until the peer closes, its
   * bounded quarantines run out (offered or inferred, 60 s), or TEST_LINK finds the peer dead.
   */
  private maybeLinger(): void {
    if (this.conns.size > 0 || this.expected.size > 0 || this.closing.size > 0 || this.quarantined.size > 0 || this.reservedConns > 0 || this.flowUsers > 0 || this.lingerTimer || this.dead) return;
    this.lingerTimer = setTimeout(() => this.free(true), this.role === 'client' ? lingerMs + CLIENT_LINGER_EXTRA_MS : lingerMs);
    this.lingerTimer.unref();
  }

  // --- the links -----------------------------------------------------------------------

  private onMessage(link: SmcrLink, m: Buffer): void {
    if (m[0] === CDC_TYPE) {
      let cdc;
      try { cdc = decodeSmcrCdc(m); } catch (e) { if (e instanceof SmcrWireError) { this.dropped.cdc++; this.rx.cdcMalformed++; return; } throw e; }
      const conn = this.conns.get(cdc.token);
      // The connection's handling runs application callbacks ('data', 'drain', write
      // callbacks); one that throws is thrown again on its own tick by the link, which goes on
      // with the rest of its batch (link.ts handle).
      if (conn) { conn.onCdc(cdc); return; }
      const pending = this.expected.get(cdc.token);
      if (pending) return this.holdEarly(pending, cdc);
      // The last CDC of a connection that ended here: its RMB may be reused now.
      const q = this.quarantined.get(cdc.token);
      if (q && (cdc.peerConnClosed || cdc.peerConnAbort)) {
        this.quarantined.delete(cdc.token);
        clearTimeout(this.offeredDeadlines.get(cdc.token));
        this.offeredDeadlines.delete(cdc.token);
        this.put(this.freeRmbs, q);
        this.maybeLinger(); // the peer's last close this group waited for, maybe
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
    const k = llc.response ? `${llc.kind} resp` : llc.kind;
    this.llcRx[k] = (this.llcRx[k] ?? 0) + 1;
    if (this.dead) return;
    this.onLlc(link, llc);
  }

  /**
   * A CDC for a handshake whose connection has not joined yet (expect): Linux has the
   * connection from the Proposal on (smc_conn_create registers its token) and handles such a
   * CDC as any (smc_cdc_rx_handler), so it is kept for attach() as that would have taken it.
   * A failover-validation CDC is never kept: it is compared with the seqno of the CDC held
   * (smc_cdc_msg_validate, smc_cdc.c 308-328, against local_rx_ctrl.seqno, 0 before any), and
   * one beyond it means CDCs were lost: the connection aborts as it joins, and nothing after it
   * is taken (conn->out_of_sync, smc_cdc.c 487). Of the others the one with the highest seqno
   * is kept, not the last to arrive (a stale one is dropped, smc_cdc_before, 498-501).
   */
  private holdEarly(p: Expected, cdc: SmcrCdc): void {
    if (p.outOfSync) return;
    const held = p.cdc;
    if (cdc.failoverValidation) {
      if (cdcSeqBefore(held?.seqno ?? 0, cdc.seqno)) p.outOfSync = cdc;
      return;
    }
    if (held === undefined || !cdcSeqBefore(cdc.seqno, held.seqno)) p.cdc = cdc;
  }

  /** An LLC message Linux would drop here (an out-of-flow response, smc_llc.c 2018-2046, or a request out of flow). */
  private unexpected(): void {
    this.dropped.llc++;
    this.rx.llcUnexpected++;
  }

  private onLlc(link: SmcrLink, m: LlcMessage): void {
    switch (m.kind) {
      case 'CONFIRM_LINK':
        if ((!this.confirmed && link === this.first) || this.addFlow?.link === link) {
          // smc_llc_save_peer_uid (smc_llc.c): the peer's UID for the link, from its CONFIRM_LINK.
          if (m.linkUid.length === 4) link.peerUid = Buffer.from(m.linkUid);
        }
        if (!this.confirmed && link === this.first) {
          if (this.role === 'client' && !m.response) {
            // smcr_clnt_conf_first_link (af_smc.c): smc_llc_eval_conf_link refuses a peer that
            // did not set NO_RMBE_EYEC (it would expect an eyecatcher in each RMB element):
            // Decline RMBE_EC, no response. Else answer, and the link is up.
            if (!m.noRmbeEyec) return this.firstLinkRefused('the CONFIRM_LINK request lacks the NO_RMBE_EYEC flag');
            this.sendLlc({ ...this.confirmLinkMsg(link), response: true }, link);
            this.confirmDone();
          } else if (this.role === 'server' && m.response) {
            // smcr_serv_conf_first_link: the same check on the response.
            if (!m.noRmbeEyec) return this.firstLinkRefused('the CONFIRM_LINK response lacks the NO_RMBE_EYEC flag');
            this.confirmDone();
          } else this.unexpected();
        } else if (this.addFlow?.link === link && this.addFlow.stage === 'confirm' && m.response === (this.role === 'server')) {
          // The new link's CONFIRM_LINK (smc_llc_srv_conf_link / smc_llc_cli_conf_link).
          if (this.role === 'client') this.sendLlc({ ...this.confirmLinkMsg(link), response: true }, link);
          this.activate(link);
        } else this.unexpected();
        return;
      case 'ADD_LINK':
        if (this.role === 'client' && !m.response) this.rmtAddLink(link, m);
        else if (this.role === 'server' && m.response && this.addFlow?.stage === 'add' && link === this.addFlow.via) this.srvAddLinkResponse(m);
        else this.unexpected();
        return;
      case 'TEST_LINK':
        if (!m.response) {
          this.sendLlc({ ...m, response: true }, link);
          return;
        }
        link.testAnsweredAt = performance.now();
        // A connection that asked on this link (its peer's TCP ended with no closing CDC).
        for (const c of this.conns.values()) if (c.link === link) c.testAnswered();
        if (link.testWait) {
          clearTimeout(link.testWait);
          link.testWait = undefined;
          this.scheduleTestLink(link, TESTLINK_MS);
        }
        return;
      case 'DELETE_LINK':
        if (m.response) {
          if (this.delWaits > 0) this.delWaits--;
          else this.unexpected();
        } else if (m.all || !this.confirmed) {
          // The peer takes the group down (smc_llc.c smc_llc_process_cli/srv_delete_link, DEL_LINK_ALL).
          this.free(false, 'peer deleted the link');
        } else this.onDeleteLink(link, m);
        return;
      case 'CONFIRM_RKEY':
        // The answer to our request (announceRmbHeld); any other is out of flow.
        if (m.response) this.rkeyResponse(link, 'CONFIRM_RKEY', m.rmbKey, m.negative);
        else this.confirmRkey(link, m);
        return;
      case 'DELETE_RKEY':
        // Linux answers with the rkeys zeroed: the link and the flow say which request it answers.
        if (m.response) this.rkeyResponse(link, 'DELETE_RKEY', undefined, m.negative);
        else this.deleteRkey(link, m);
        return;
      case 'REQ_ADD_LINK':
        // A client's request (smc_llc_event_handler: a server starts its ADD_LINK flow); a
        // client drops requests, and responses outside a REQ_ADD_LINK flow (softrdma's client
        // never asks).
        if (this.role === 'server' && !m.response) this.reqAddLink(link);
        else this.unexpected();
        return;
      default:
        // ADD_LINK_CONT (v2 link groups carry the rkeys in ADD_LINK's extension, smc_llc.c
        // 1110-1111, 1501-1502), CONFIRM_RKEY_CONT (Linux ignores it too, smc_llc.c 1950-1954).
        this.unexpected();
    }
  }

  /**
   * A Linux peer announces each new RMB of a connection after the first with CONFIRM_RKEY
   * before its CLC message names it (af_smc.c 1351, 2297), and waits 2 s for the answer:
   * answered as smc_llc_rmt_conf_rkey (smc_llc.c 1756-1793) does: the request echoed with the
   * response flag; negative (NEG | RETRY) when it names more than 3 rtokens or the rtoken table
   * is full (smc_rtoken_add -> smc_rmb_reserve_rtoken_idx: -ENOSPC). The first rtoken is for the
   * link the request came on (an rtoken already there, same rkey and address, is the same
   * entry); the others (at most 2) are the entry's rtokens on the links they name, where the
   * group has such a link (smc_rtoken_set2). Linux accepts any rtoken (it cannot know the
   * memory yet either); nothing here writes through it.
   */
  private confirmRkey(link: SmcrLink, m: LlcConfirmRkey): void {
    const idx = m.numRkeys <= RKEYS_PER_MSG ? this.rtokens.add(link, { rkey: m.rmbKey, addr: m.rmbVaddr }) : undefined;
    if (idx === undefined) this.rx.rkeyNegative++;
    else {
      for (const t of m.others) {
        const l = this.links.find((x) => x.id === t.linkId);
        if (l) this.rtokens.set(idx, l, { rkey: t.rmbKey, addr: t.rmbVaddr });
      }
    }
    const ok = idx !== undefined;
    this.sendLlc({ ...m, version: 2, response: true, negative: m.negative || !ok, retry: m.retry || !ok }, link);
  }

  /**
   * Server: the client asks for another link (REQ_ADD_LINK; a Linux client sends it when it
   * lost a link or a port came back, smc_llc_send_request_add_link, and holds its LLC flow
   * until the answer: without one, each of its new connections' smcr_lgr_reg_rmbs waits 20 s
   * for that flow and fails). Linux's server runs its ADD_LINK flow for it
   * (smc_llc_srv_add_link with the request): the ADD_LINK it sends is the answer, and when it
   * adds no link it answers with the request echoed, the response flag set and the data zeroed
   * (smc_llc_send_req_add_link_response: a 44-byte v2 REQ_ADD_LINK, no GIDs). softrdma does
   * the same: an ADD_LINK now where the group may have another link and a device for it,
   * else (no room, no device, or one that fails before its ADD_LINK goes) the response. With
   * an ADD_LINK flow of ours under way the response goes at once: Linux queues the request
   * behind that flow and then, no link being left to add, sends the same response.
   */
  private reqAddLink(via: SmcrLink): void {
    const answer = () => {
      if (!this.dead && !via.isDown) this.sendLlc({ kind: 'REQ_ADD_LINK', version: 2, response: true, gids: [] }, via);
    };
    if (this.addFlow || this.addStarting || !this.wantsLink() || !this.altDevice(undefined)) return answer();
    clearTimeout(this.addTimer);
    this.addTimer = undefined;
    void this.srvAddLink(answer);
  }

  // --- the LLC flow lock ------------------------------------------------------------------

  /**
   * Take the group's LLC flow (see flowBusy): resolves with the function that releases it, at
   * once when no flow is under way or waiting, else when the flows before it ended; rejects
   * when the group ends or after `ms`. `front`: ahead of the waiting local flows (the peer's
   * ADD_LINK request, whose sender waits for its answer).
   */
  llcFlow(kind: string, opts: { front?: boolean; ms?: number } = {}): Promise<() => void> {
    if (this.dead) return Promise.reject(new SoftrdmaError('ENOLINK', 'smc-r: the link group has ended'));
    const now = this.tryFlow(kind);
    if (now) return Promise.resolve(now);
    const ms = opts.ms ?? FLOW_WAIT_MS;
    return new Promise((resolve, reject) => {
      const w: FlowWaiter = {
        kind, grant: resolve, fail: reject, timer: setTimeout(() => {
          const i = this.flowQueue.indexOf(w);
          if (i >= 0) this.flowQueue.splice(i, 1);
          reject(new SoftrdmaError('ETIMEDOUT', `smc-r: the link group's ${this.flowBusy ?? 'LLC'} flow did not end within ${ms} ms`));
        }, ms),
      };
      w.timer.unref();
      if (opts.front) this.flowQueue.unshift(w);
      else this.flowQueue.push(w);
    });
  }

  /** The flow, now, if nothing holds it or waits for it; else undefined. */
  private tryFlow(kind: string): (() => void) | undefined {
    if (this.dead || this.flowBusy !== undefined || this.flowQueue.length > 0) return undefined;
    return this.takeFlow(kind);
  }

  private takeFlow(kind: string): () => void {
    this.flowBusy = kind;
    let held = true;
    return () => {
      if (!held) return;
      held = false;
      this.flowBusy = undefined;
      const w = this.flowQueue.shift();
      if (w) {
        clearTimeout(w.timer);
        w.grant(this.takeFlow(w.kind));
      }
    };
  }

  /** Run fn holding the group's LLC flow; it is released when fn's result settles. */
  async withFlow<T>(kind: string, fn: () => T | Promise<T>): Promise<T> {
    // A handshake waiting for its turn (and taking it) keeps an idle group from lingering out
    // under it: the linger timer is off until it has joined (expect, attach) or given up.
    this.flowUsers++;
    clearTimeout(this.lingerTimer);
    this.lingerTimer = undefined;
    try {
      const release = await this.llcFlow(kind);
      try {
        return await fn();
      } finally {
        release();
      }
    } finally {
      this.flowUsers--;
      this.maybeLinger();
    }
  }

  /** withFlow callers waiting for or holding the flow (see maybeLinger). */
  private flowUsers = 0;

  /** The LLC flow under way, if any (tests, diagnostics). */
  get flowUnderWay(): string | undefined { return this.flowBusy; }

  /**
   * smcr_lgr_reg_rmbs (smc_core.c): take the flow, announce the RMB (announceRmbHeld), release.
   * The handshakes use withFlow and announceRmbHeld, as they choose a link or join the group
   * under the same flow.
   */
  announceRmb(rmb: Rmb, link: SmcrLink): Promise<void> {
    return this.withFlow('CONFIRM_RKEY', () => this.announceRmbHeld(rmb, link));
  }

  /**
   * A connection made while the group has more than one active link: announce its RMB's rkey
   * on each other link with CONFIRM_RKEY on `link` (the one its CLC message names) and wait
   * SMC_LLC_WAIT_TIME for the answer (smc_llc_do_confirm_rkey / smc_llc_send_confirm_rkey,
   * smc_llc.c 2212-2232, 488-535), before the CLC message, as af_smc.c 1351 and 2297 do. With
   * one link nothing is sent (Linux sends one with no other rtokens; softrdma saves the round
   * trip). The caller holds the group's LLC flow, so the links looked at are the ones an
   * ADD_LINK flow left (an ADD_LINK after it names the RMB itself).
   */
  announceRmbHeld(rmb: Rmb, link: SmcrLink): Promise<void> {
    const others = this.activeLinks().filter((l) => l !== link);
    if (others.length === 0) return Promise.resolve();
    const mr = this.mrOn(rmb, link.dev);
    const rt = others.map((l) => {
      const m = this.mrOn(rmb, l.dev);
      return { linkId: l.id, rmbKey: m.rkey, rmbVaddr: BigInt(m.addr) };
    });
    return this.rkeyRequest({ kind: 'CONFIRM_RKEY', version: 2, response: false, negative: false, retry: false, numRkeys: rt.length, rmbKey: mr.rkey, rmbVaddr: BigInt(mr.addr), others: rt }, link, mr.rkey);
  }

  /**
   * Send our CONFIRM_RKEY or DELETE_RKEY request on `link` and wait SMC_LLC_WAIT_TIME for the
   * answer on that link (the caller holds the flow, so it is the only one awaited: a late
   * answer to an earlier one names another rkey or comes when nothing waits).
   */
  private rkeyRequest(m: LlcConfirmRkey | LlcDeleteRkey, link: SmcrLink, rkey: number): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const w: RkeyWait = {
        kind: m.kind, link, rkey, resolve, reject, timer: setTimeout(() => {
          if (this.rkeyWait === w) this.rkeyWait = undefined;
          reject(new Error(`no ${m.kind} response within ${LLC_WAIT_MS} ms`));
        }, LLC_WAIT_MS),
      };
      w.timer.unref();
      this.rkeyWait = w;
      this.sendLlc(m, link);
    });
  }

  /** A CONFIRM_RKEY (rkey: the one it names) or DELETE_RKEY response: the answer to our request on that link, else out of flow. */
  private rkeyResponse(link: SmcrLink, kind: RkeyWait['kind'], rkey: number | undefined, negative: boolean): void {
    const w = this.rkeyWait;
    if (!w || w.kind !== kind || w.link !== link || (rkey !== undefined && rkey !== w.rkey)) return this.unexpected();
    this.rkeyWait = undefined;
    clearTimeout(w.timer);
    if (negative) w.reject(new Error(`the peer refused the ${kind}`));
    else w.resolve();
  }

  /**
   * smc_llc_rmt_delete_rkey (smc_llc.c 1796-1842), the v2 branch (our link groups are v2):
   * each rkey named frees the table entry with that rkey on the link the request came on
   * (smc_rtoken_delete, smc_core.c 2676-2694: the entry's rtokens on every link go); any not
   * there makes the response negative, with their number in err_mask (num_inval_rkeys). The
   * entries are the peer's RMBs from CONFIRM_RKEY and from the CLC messages of connections,
   * ended ones included, as in Linux. A connection still open keeps its own copy of its keys:
   * deleting its entry changes nothing it writes to.
   */
  private deleteRkey(link: SmcrLink, m: LlcDeleteRkey): void {
    let invalid = 0;
    for (const k of m.rkeys) if (!this.rtokens.delete(link, k)) invalid++;
    if (invalid > 0) this.rx.rkeyNegative++;
    // Linux answers with the 44-byte message, the rkeys zeroed: 9 fit.
    const n = Math.min(m.numRkeys, 9);
    this.sendLlc({
      kind: 'DELETE_RKEY', version: 2, response: true, negative: m.negative || invalid > 0, numRkeys: n,
      errMask: invalid, rkeys: new Array<number>(n).fill(0),
    }, link);
  }

  private confirmLinkMsg(link: SmcrLink): LlcMessage {
    return {
      kind: 'CONFIRM_LINK', version: 2, response: false, noRmbeEyec: true, senderMac: link.dev.mac, senderGid: link.dev.gid,
      senderQpn: link.qp.qpn, linkNum: link.id, linkUid: link.uid, maxLinks: this.maxLinks, maxConns: this.maxConns,
    };
  }

  /**
   * Send an LLC message on a link (the group's data link when none is named). It may take the
   * send queue slots kept for LLC (link.ts LLC_RESERVE); with every slot taken it waits, in
   * order, in the link's backlog (LLC_BACKLOG, the rest dropped and counted) and goes as
   * completions free slots (onSendable), as Linux's smc_wr_tx_get_free_slot waits for one.
   */
  sendLlc(m: LlcMessage, link: SmcrLink = this.link): void {
    if (link.isDown) return;
    const msg = encodeLlc(m);
    const q = this.llcBacklog.get(link);
    if (!q && link.canPostLlc()) link.send(msg);
    else if ((q?.length ?? 0) >= LLC_BACKLOG) {
      this.llcSq.dropped++;
      return;
    } else {
      this.llcSq.waited++;
      if (q) q.push(msg);
      else this.llcBacklog.set(link, [msg]);
    }
    const k = m.response ? `${m.kind} resp` : m.kind;
    this.llcTx[k] = (this.llcTx[k] ?? 0) + 1;
  }

  /**
   * First contact: bring the link up. The server sends CONFIRM_LINK and waits
   * SMC_LLC_WAIT_TIME (2 s) for the response (smcr_serv_conf_first_link, af_smc.c 1894-1899);
   * the client waits twice that for the request and answers it (smcr_clnt_conf_first_link,
   * af_smc.c 625-631). No answer: Decline TIMEOUT_CL and TCP, as Linux.
   */
  confirmFirstLink(): Promise<void> {
    if (this.confirmed) return Promise.resolve();
    if (this.confirmRefused) return Promise.reject(this.confirmRefused);
    return new Promise<void>((resolve, reject) => {
      const ms = this.role === 'server' ? LLC_WAIT_MS : 2 * LLC_WAIT_MS;
      const timer = setTimeout(() => { this.confirmWait = undefined; reject(new Error(`no CONFIRM_LINK ${this.role === 'server' ? 'response' : 'request'} within ${ms} ms`)); }, ms);
      this.confirmWait = { resolve, reject, timer };
      if (this.role === 'server') this.sendLlc(this.confirmLinkMsg(this.first), this.first);
    });
  }

  private scheduleTestLink(link: SmcrLink, ms: number): void {
    if (TESTLINK_MS === 0 || this.dead || !link.active) return;
    clearTimeout(link.testTimer);
    link.testTimer = setTimeout(() => this.testLink(link), ms);
    link.testTimer.unref();
  }

  /**
   * A TEST_LINK request on `link`; returns when it went (anything the link receives after that
   * time, its answer or not, shows the peer alive: lastRx).
   */
  private sendTestLink(link: SmcrLink): number {
    this.sendLlc({ kind: 'TEST_LINK', version: 2, response: false, userData: Buffer.alloc(16) }, link);
    return performance.now();
  }

  /**
   * Ask the peer whether it still runs its end of `link` (a TEST_LINK); returns when it went
   * (anything received on the link after that shows it alive: lastRx), or 0 where it cannot go
   * (the group ended, the link is down).
   */
  probe(link: SmcrLink): number {
    if (this.dead || link.isDown || !this.links.includes(link)) return 0;
    return this.sendTestLink(link);
  }

  private testLink(link: SmcrLink): void {
    link.testTimer = undefined;
    if (this.dead || link.isDown || !this.links.includes(link)) return;
    const quiet = performance.now() - link.lastRx;
    if (quiet < TESTLINK_MS) return this.scheduleTestLink(link, TESTLINK_MS - quiet);
    const sentAt = this.sendTestLink(link);
    link.testWait = setTimeout(() => {
      link.testWait = undefined;
      // Unlike Linux (smc_llc.c 2128-2134), anything received on the link meanwhile counts as
      // an answer: softrdma's links are slow enough under load for the response to wait behind
      // a send queue full of RDMA WRITEs at the peer, and a link that delivers is not lost.
      if (link.lastRx > sentAt) return this.scheduleTestLink(link, TESTLINK_MS);
      this.onLinkDown(link, `no TEST_LINK response within ${LLC_WAIT_MS} ms`);
    }, LLC_WAIT_MS);
    link.testWait.unref();
  }

  /**
   * The first link's CONFIRM_LINK came without SMC_LLC_FLAG_NO_RMBE_EYEC: Linux's
   * smc_llc_eval_conf_link returns -ENOTSUPP and the handshake declines SMC_CLC_DECL_RMBE_EC
   * (af_smc.c smcr_clnt_conf_first_link, smcr_serv_conf_first_link). The wait for the first
   * link fails with that reason (one that had not begun yet fails as it begins).
   */
  private firstLinkRefused(why: string): void {
    const e = new SmcrDeclineError(DECLINE.RMBE_EC, why);
    this.confirmRefused = e;
    const w = this.confirmWait;
    this.confirmWait = undefined;
    if (w) { clearTimeout(w.timer); w.reject(e); }
  }

  private confirmRefused: SmcrDeclineError | undefined;

  private confirmDone(): void {
    this.confirmed = true;
    this.first.active = true;
    this.first.lastRx = performance.now();
    this.scheduleTestLink(this.first, TESTLINK_MS);
    const w = this.confirmWait;
    this.confirmWait = undefined;
    if (w) { clearTimeout(w.timer); w.resolve(); }
    // af_smc.c 1919-1923: the server adds a second link right after the first contact, while
    // it still holds smc_server_lgr_pending; the first-contact gate of clc-flow.ts stays closed
    // until this flow ended (firstAddDone).
    if (this.role === 'server') this.firstAdd = this.srvAddLink().catch(() => undefined);
  }

  /** Server: settles when the ADD_LINK flow that followed the first link's confirmation ended (or at once when there was none). */
  firstAddDone(): Promise<void> {
    return this.firstAdd ?? Promise.resolve();
  }

  private onSendable(link: SmcrLink): void {
    // LLC messages that waited for a slot go first, in order.
    const q = this.llcBacklog.get(link);
    if (q) {
      while (q.length > 0 && link.canPostLlc()) link.send(q.shift()!);
      if (q.length === 0) this.llcBacklog.delete(link);
    }
    for (let i = 0; i < this.draining.length;) {
      const d = this.draining[i]!;
      if (d.link.isDown || (d.link === link && d.seq <= link.completedSeq)) {
        this.put(this.freeSndbufs, d.buf);
        this.draining.splice(i, 1);
      } else i++;
    }
    for (const c of this.conns.values()) if (c.link === link) c.completed(link.okSeq);
    for (const c of [...this.closing]) {
      if (c.link !== link) continue;
      c.completed(link.okSeq);
      if (!c.unconfirmed) this.closed(c);
    }
    if (this.owing.size === 0) return;
    for (const c of [...this.owing]) {
      if (!c.link.canPost(1)) continue;
      this.owing.delete(c);
      c.sendable();
    }
  }

  // --- ADD_LINK --------------------------------------------------------------------------

  /** Server: try ADD_LINK in ms (none scheduled or under way, the group has room for a link). */
  private scheduleAddLink(ms: number): void {
    if (this.role !== 'server' || this.dead || this.addTimer || this.addFlow || this.addStarting) return;
    this.addTimer = setTimeout(() => { this.addTimer = undefined; this.srvAddLink().catch(() => undefined); }, ms);
    this.addTimer.unref();
  }

  private nextLinkId(): number {
    // smcr_next_link_id (smc_core.c 759-777): the next number, never 0, not one in use.
    for (;;) {
      this.lastLinkId = (this.lastLinkId + 1) & 0xff;
      if (this.lastLinkId !== 0 && !this.links.some((l) => l.id === this.lastLinkId)) return this.lastLinkId;
    }
  }

  /** Link UIDs as smc_llc_link_set_uid: the group's ID with the link number in the low byte. */
  private uidFor(id: number): Buffer {
    const u = Buffer.from(this.linkUid);
    u[3] = id;
    return u;
  }

  /**
   * Our RMBs' rkeys on `via` and on the new link, with their addresses there
   * (smc_llc_fill_ext_v2, smc_llc.c 604-642: every RMB in use): the connections' and those of
   * handshakes whose Accept offered one and whose Confirm has not come (the peer may be about
   * to join with it; no CONFIRM_RKEY will name it, as the group had one link when it chose).
   */
  private rkeyPairs(via: SmcrLink, link: SmcrLink): LlcRkeyPair[] {
    const rmbs = new Set<Rmb>();
    for (const c of this.conns.values()) rmbs.add(c.rmb);
    for (const e of this.expected.values()) rmbs.add(e.rmb);
    return [...rmbs].slice(0, 255).map((b) => {
      const mr = this.mrOn(b, link.dev);
      return { rmbKey: this.mrOn(b, via.dev).rkey, rmbKeyNew: mr.rkey, rmbVaddrNew: BigInt(mr.addr) };
    });
  }

  /**
   * The peer's rkeys on the new link, by their rkeys on `via` (smc_llc_save_add_link_rkeys ->
   * smc_rtoken_set): into the rtoken table's entries, and the connections' own keys. A pair
   * for an RMB the table does not hold yet (its connection's handshake is between the peer's
   * CLC message and ours) waits in lateKeys for that connection's attach.
   */
  private saveRkeys(via: SmcrLink, link: SmcrLink, pairs: LlcRkeyPair[]): void {
    for (const p of pairs) {
      const t = { rkey: p.rmbKeyNew, addr: p.rmbVaddrNew };
      if (this.rtokens.setByKnown(via, p.rmbKey, link, t)) continue;
      let late = this.lateKeys.get(via);
      if (!late) {
        const keys = new Map<number, LateKey>();
        const timer = setTimeout(() => { if (this.lateKeys.get(via)?.keys === keys) this.lateKeys.delete(via); }, LATE_KEYS_MS);
        timer.unref();
        this.lateKeys.set(via, late = { keys, timer });
      } else {
        late.timer.refresh(); // kept LATE_KEYS_MS from the last keys saved, not the first
      }
      late.keys.set(p.rmbKey, { link, ...t });
    }
    for (const c of this.conns.values()) {
      const k = c.peerKeyOn(via);
      const p = k && pairs.find((x) => x.rmbKey === k.rkey);
      if (p) c.setPeerKey(link, { rkey: p.rmbKeyNew, addr: remoteAddr(p.rmbVaddrNew) });
    }
  }

  private addLinkMsg(link: SmcrLink, response: boolean, qpMtu: number, via: SmcrLink): LlcAddLink {
    return {
      kind: 'ADD_LINK', version: 2, response, rejected: false, rejReason: 0, senderMac: link.dev.mac, senderGid: link.dev.gid,
      senderQpn: link.qp.qpn, linkNum: link.id, qpMtu, initialPsn: link.local.psn,
      v2ext: { v2Direct: true, clientTargetGid: link.dev.gid, rkeys: this.rkeyPairs(via, link) },
    };
  }

  private newLink(dev: SmcrDevice, id: number): SmcrLink {
    const link = this.linkIn(dev);
    link.id = id;
    link.uid = this.uidFor(id);
    this.bind(link);
    this.watchDevice(dev);
    return link;
  }

  /** Server: may the group get another link now (the first confirmed, room for one, no flow adding one)? */
  private wantsLink(): boolean {
    return !this.dead && this.confirmed && this.maxLinks >= 2 && !this.addFlow && this.activeLinks().length === 1;
  }

  /**
   * Server: ADD_LINK (smc_llc_srv_add_link, smc_llc.c 1404-1523, the v2 branch), holding the
   * group's LLC flow (smc_llc_flow_initiate(SMC_LLC_FLOW_ADD_LINK): a handshake's CONFIRM_RKEY
   * flow under way ends first): a QP on another device, our RMBs registered there, ADD_LINK
   * request on the active link with the new QP and the rkey pairs; then wait 2 s for the
   * response, connect the QP, CONFIRM_LINK on the new link and wait 5 s
   * (SMC_LLC_WAIT_FIRST_TIME) for its response. Settles when the flow ended (or did not start).
   * noLink: called when no ADD_LINK goes out after all (the peer's REQ_ADD_LINK that started
   * it is then answered, reqAddLink).
   */
  private async srvAddLink(noLink?: () => void): Promise<void> {
    if (!this.wantsLink() || this.addStarting) return noLink?.();
    this.addStarting = true;
    let release: () => void;
    try {
      release = await this.llcFlow('ADD_LINK');
    } catch {
      this.addStarting = false;
      noLink?.();
      return this.scheduleAddLink(ADDLINK_RETRY_MS);
    }
    this.addStarting = false;
    if (!this.wantsLink()) {
      release();
      return noLink?.();
    }
    const failed = (e: unknown, link?: SmcrLink) => {
      link?.destroy();
      release();
      this.linkEvents.addFailed++;
      this.linkEvents.lastFailure = (e as Error).message;
      noLink?.();
      this.scheduleAddLink(this.addRetryMs());
    };
    const via = this.link;
    let dev: SmcrDevice | undefined;
    let link: SmcrLink;
    let msg: LlcAddLink;
    try {
      dev = this.altDevice(undefined);
      if (!dev) {
        release();
        noLink?.();
        return this.scheduleAddLink(ADDLINK_RETRY_MS);
      }
      link = this.newLink(dev, this.nextLinkId());
    } catch (e) {
      return failed(e);
    }
    try {
      msg = this.addLinkMsg(link, false, link.local.mtu, via);
    } catch (e) {
      return failed(e, link); // an RMB could not be registered on the new device
    }
    await new Promise<void>((resolve) => {
      this.addFlow = { link, via, stage: 'add', timer: this.flowTimer('no ADD_LINK response', LLC_WAIT_MS, false), end: () => { release(); resolve(); } };
      this.sendLlc(msg, via);
    });
  }

  /** End the ADD_LINK flow under way (its timer, the flow lock); the flow, if there was one. */
  private endAddFlow(): AddFlow | undefined {
    const f = this.addFlow;
    if (!f) return undefined;
    this.addFlow = undefined;
    clearTimeout(f.timer);
    f.end();
    return f;
  }

  private flowTimer(what: string, ms: number, tellPeer: boolean): NodeJS.Timeout {
    const t = setTimeout(() => this.addFailed(`${what} within ${ms} ms`, tellPeer), ms);
    t.unref();
    return t;
  }

  private srvAddLinkResponse(m: LlcAddLink): void {
    const f = this.addFlow!;
    clearTimeout(f.timer);
    if (m.rejected) {
      this.linkEvents.addRejected++;
      return this.addFailed('the peer rejected ADD_LINK', false);
    }
    const bad = impossibleQp(m.senderQpn, undefined);
    if (bad) return this.addFailed(`the ADD_LINK response names ${bad}`, true);
    try {
      f.link.connect({ qpn: m.senderQpn, psn: m.initialPsn, gid: m.senderGid, mtu: m.qpMtu || f.link.local.mtu });
    } catch (e) {
      return this.addFailed(`connecting the new link: ${(e as Error).message}`, true);
    }
    this.saveRkeys(f.via, f.link, m.v2ext?.rkeys ?? []);
    f.stage = 'confirm';
    f.timer = this.flowTimer('no CONFIRM_LINK response on the new link', LLC_WAIT_FIRST_MS, true);
    this.sendLlc(this.confirmLinkMsg(f.link), f.link);
  }

  /** Client: refuse the peer's ADD_LINK request (smc_llc_cli_add_link_reject: the request echoed with RESP | ADD_LNK_REJ). */
  private rejectAddLink(via: SmcrLink, m: LlcAddLink, why: string): void {
    this.linkEvents.addRejected++;
    this.linkEvents.lastFailure = why;
    this.sendLlc({ ...m, version: 2, response: true, rejected: true, rejReason: 0, v2ext: null }, via);
  }

  /**
   * Client: the peer's ADD_LINK request, a remote flow. A flow of ours under way (a
   * handshake's CONFIRM_RKEY awaiting its answer) ends first, as smc_llc_process_cli_add_link
   * waits for llc_conf_mutex; the request goes ahead of our waiting flows, within the 2 s the
   * server waits for the answer. A second request while one waits or runs is refused.
   */
  private rmtAddLink(via: SmcrLink, m: LlcAddLink): void {
    if (this.addFlow || this.rmtAddQueued) return this.rejectAddLink(via, m, 'an ADD_LINK flow is under way');
    // Whatever happens, the flow is not left held (release is idempotent; a flow that started ends it too).
    const run = (release: () => void) => {
      try {
        this.cliAddLink(via, m, release);
      } catch (e) {
        release();
        throw e;
      }
    };
    const now = this.tryFlow('ADD_LINK');
    if (now) return run(now);
    this.rmtAddQueued = true;
    this.llcFlow('ADD_LINK', { front: true, ms: LLC_WAIT_MS }).then((release) => {
      this.rmtAddQueued = false;
      run(release);
    }, () => {
      this.rmtAddQueued = false;
      if (!this.dead) this.rejectAddLink(via, m, 'a flow of ours did not end in time');
    });
  }

  /**
   * Client: an ADD_LINK request (smc_llc_cli_add_link, smc_llc.c 1031-1122, the v2 branch),
   * holding the group's flow (release). Rejected when the group may not have another link, the
   * request is impossible (a QPN or MTU no RC QP has, a link number in use) or no device of
   * ours reaches the server's new GID (Linux would then make an asymmetric link on the same
   * device; softrdma does not); else a QP on that device, connected to the server's, our rkeys
   * for it in the response, and the CONFIRM_LINK request awaited 5 s on the new link. A QP
   * that cannot be connected is destroyed (out_clear_lnk: smcr_link_clear).
   */
  private cliAddLink(via: SmcrLink, m: LlcAddLink, release: () => void): void {
    const reject = (why: string) => {
      release();
      this.rejectAddLink(via, m, why);
    };
    if (this.dead || via.isDown) return release();
    if (!this.confirmed || this.maxLinks < 2 || this.activeLinks().length >= this.maxLinks) return reject('no room for another link');
    if (this.addFlow) return reject('an ADD_LINK flow is under way');
    const bad = impossibleQp(m.senderQpn, m.qpMtu);
    if (bad) return reject(`the request names ${bad}`);
    if (m.linkNum === 0 || this.links.some((l) => l.id === m.linkNum)) return reject(`link number ${m.linkNum} is in use`);
    const dev = this.altDevice(addressFromGid(m.senderGid));
    if (!dev) return reject('no device reaches the new GID');
    let link: SmcrLink;
    try {
      link = this.newLink(dev, m.linkNum);
    } catch (e) {
      return reject((e as Error).message);
    }
    let resp: LlcAddLink;
    try {
      link.connect({ qpn: m.senderQpn, psn: m.initialPsn, gid: m.senderGid, mtu: m.qpMtu });
      resp = this.addLinkMsg(link, true, Math.min(link.local.mtu, m.qpMtu), via);
    } catch (e) {
      link.destroy();
      return reject((e as Error).message);
    }
    this.saveRkeys(via, link, m.v2ext?.rkeys ?? []);
    this.addFlow = { link, via, stage: 'confirm', timer: this.flowTimer('no CONFIRM_LINK request on the new link', LLC_WAIT_FIRST_MS, true), end: release };
    this.sendLlc(resp, via);
  }

  private activate(link: SmcrLink): void {
    link.active = true;
    link.lastRx = performance.now();
    this.links.push(link);
    this.linkEvents.added++;
    this.addFailuresInARow = 0;
    this.scheduleTestLink(link, TESTLINK_MS);
    this.endAddFlow(); // the flows waiting see two links
  }

  /**
   * An ADD_LINK flow failed: the new link goes; the peer is told with DELETE_LINK for it
   * (not orderly, LOST_PATH) where Linux does (no CONFIRM_LINK: smc_llc_srv_conf_link,
   * smc_llc_cli_conf_link). The server tries again later.
   */
  private addFailed(reason: string, tellPeer: boolean): void {
    const f = this.addFlow;
    if (!f) return;
    this.linkEvents.addFailed++;
    this.linkEvents.lastFailure = reason;
    if (tellPeer && !this.dead) {
      this.sendLlc({ kind: 'DELETE_LINK', version: 2, response: false, all: false, orderly: false, linkNum: f.link.id, reason: LLC_DEL.LOST_PATH }, this.link);
      this.awaitDeleteResponse();
    }
    this.clearLink(f.link);
    this.endAddFlow();
    this.scheduleAddLink(this.addRetryMs());
  }

  /**
   * The wait before the next ADD_LINK after one failed: doubling from SOFTRDMA_SMCR_ADDLINK_MS
   * (10 s) with each failure in a row, up to 32 times that. A failing ADD_LINK holds the
   * group's LLC flow for up to 7 s (its two answers' waits), and handshakes wait for the flow:
   * retried every 10 s on a broken second path, it made 13 of 50 connections miss their 2 s
   * handshake timeout and go TCP.
   */
  private addRetryMs(): number {
    return ADDLINK_RETRY_MS * 2 ** Math.min(5, this.addFailuresInARow++);
  }

  private addFailuresInARow = 0;

  // --- DELETE_LINK and the failover -------------------------------------------------------

  private awaitDeleteResponse(): void {
    this.delWaits++;
    const t = setTimeout(() => { this.delTimers.delete(t); if (this.delWaits > 0) this.delWaits--; }, LLC_WAIT_MS);
    t.unref();
    this.delTimers.add(t);
  }

  /**
   * A CONFIRM_RKEY or DELETE_RKEY of ours awaiting its answer on `link` fails now, not when its
   * 2 s run out: the link went down or was removed (Linux's smc_llc_wait returns as soon as the
   * link it waits on is no longer usable).
   */
  private failRkeyWait(link: SmcrLink, why: string): void {
    const w = this.rkeyWait;
    if (w?.link !== link) return;
    this.rkeyWait = undefined;
    clearTimeout(w.timer);
    w.reject(new Error(why));
  }

  /** Destroy a link that is no longer the group's (once this tick's completions are handled). */
  private clearLink(link: SmcrLink): void {
    // Removed without going down first (the peer deleted it, an ADD_LINK flow failed): no answer will come on it.
    this.failRkeyWait(link, 'the link was removed');
    this.links = this.links.filter((l) => l !== link);
    link.active = false;
    for (const c of this.conns.values()) c.forgetLink(link);
    if (this.expecting(link)) {
      const keys: Array<{ idx: number; rkey: number; addr: bigint; entry: ReadonlyMap<SmcrLink, unknown> }> = [];
      for (let idx = 0; idx < MAX_CONNS; idx++) {
        const entry = this.rtokens.entry(idx);
        const t = entry?.get(link);
        if (entry && t) keys.push({ idx, rkey: t.rkey, addr: t.addr, entry });
      }
      this.retired.set(link, keys);
    }
    this.rtokens.clearLink(link); // smcr_link_clear -> smcr_rtoken_clear_link (smc_core.c 1320-1329)
    const late = this.lateKeys.get(link);
    if (late) { clearTimeout(late.timer); this.lateKeys.delete(link); }
    for (const { keys } of this.lateKeys.values()) for (const [k, v] of keys) if (v.link === link) keys.delete(k);
    this.llcBacklog.delete(link);
    setImmediate(() => {
      link.destroy();
      if (this.dead) this.releasePds(); // the group ended meanwhile: this QP kept its PD busy
    });
  }

  /**
   * Move the connections on `from` to `to` (smc_switch_conns, smc_core.c 1076-1150), each
   * resending from its last confirmed cursor with a failover-validation CDC first
   * (smc_switch_cursor, smc_core.c 1014-1074); one without the peer's rkey on `to` fails
   * as a lost link did. A closed connection whose last posts were unconfirmed leaves (see
   * below). Then the link goes.
   */
  private switchConns(from: SmcrLink, to: SmcrLink, reason: string): void {
    this.links = this.links.filter((l) => l !== from);
    this.linkEvents.deleted++;
    for (const c of [...this.conns.values()]) {
      if (c.link !== from) continue;
      if (c.switchLink(to)) this.linkEvents.connsMoved++;
      else { this.linkEvents.connsLost++; c.linkDown(reason); }
    }
    // A released connection (destroyed, or closed both ways) whose last posts were not
    // confirmed is not resent: the peer may have received them, and its close, and handed that
    // RMB to a new connection, whose bytes a rewrite would overwrite. Linux resends in no
    // closing state: smc_switch_conns moves such a connection (PEERCLOSEWAIT1 and the rest) to
    // the new link without smc_switch_cursor, and its close then waits for the peer's. Here it
    // leaves the group, and the socket, not knowing whether the peer has its closing CDC, resets
    // the TCP connection instead of sending a FIN (close.ts): the peer then reports ECONNRESET,
    // never a clean end of a stream that may not have arrived whole. A half-closed connection
    // (end(), still reading) is not released: it moved above and resends as an open one does
    // (its peer still holds the RMB for it), where Linux, in PEERCLOSEWAIT1, resends nothing.
    for (const c of [...this.closing]) if (c.link === from) this.closed(c);
    this.clearLink(from);
  }

  /**
   * A link failed (a work request completed in error, TEST_LINK unanswered, its device closed).
   * The only one: the group ends, as before. Another is active: smcr_link_down (smc_core.c
   * 1768-1807): the connections move to it, and the peer gets DELETE_LINK (orderly, LOST_PATH)
   * for the lost link on it; the server waits for the response (smc_llc_process_srv_delete_link)
   * and later adds a link again.
   */
  private onLinkDown(link: SmcrLink, reason: string): void {
    if (this.dead) return;
    // Down now, before any connection hears of it: a closed device's QP is gone already, and
    // a connection's abort must not post on it.
    link.markDown(reason);
    this.failRkeyWait(link, `link down: ${reason}`);
    if (this.addFlow?.link === link) return this.addFailed(`the new link went down: ${reason}`, true);
    if (!this.links.includes(link)) return;
    const to = this.confirmed ? this.activeLinks().find((l) => l !== link) : undefined;
    if (!to) return this.free(false, `link down: ${reason}`);
    this.linkEvents.lastFailure = reason;
    this.switchConns(link, to, `link down: ${reason}`);
    this.sendLlc({ kind: 'DELETE_LINK', version: 2, response: false, all: false, orderly: true, linkNum: link.id, reason: LLC_DEL.LOST_PATH }, to);
    if (this.role === 'server') {
      this.awaitDeleteResponse();
      this.scheduleAddLink(ADDLINK_RETRY_MS);
    }
  }

  /**
   * The peer deletes one link (smc_llc_process_cli_delete_link, smc_llc.c 1590-1646, and
   * smc_llc_process_srv_delete_link, 1668-1734). Client: answer (reason 0, or NOLNK for a link
   * it does not have), move the connections off it, clear it. Server: an unknown link is
   * ignored; else the connections move, and the request goes back to the client, whose answer
   * is waited for, and a link is added again later.
   */
  private onDeleteLink(via: SmcrLink, m: LlcDeleteLink): void {
    const flow = this.addFlow?.link.id === m.linkNum ? this.addFlow : undefined;
    const target = this.links.find((l) => l.id === m.linkNum) ?? flow?.link;
    if (this.role === 'client') {
      const on = via.isDown || via === target ? this.activeLinks().find((l) => l !== target) ?? via : via;
      this.sendLlc({ kind: 'DELETE_LINK', version: 2, response: true, all: false, orderly: m.orderly, linkNum: m.linkNum, reason: target ? 0 : LLC_DEL.NOLNK }, on);
    }
    if (!target) return;
    if (flow) {
      this.linkEvents.addFailed++;
      this.linkEvents.lastFailure = 'the peer deleted the new link';
      this.clearLink(flow.link);
      this.endAddFlow();
    } else {
      const to = this.activeLinks().find((l) => l !== target);
      if (!to) return this.free(false, 'peer deleted the link');
      this.switchConns(target, to, 'peer deleted the link');
    }
    if (this.role === 'server') {
      const on = this.link;
      if (on.active && !on.isDown) {
        this.sendLlc({ ...m, version: 2, response: false }, on);
        this.awaitDeleteResponse();
      }
      this.scheduleAddLink(ADDLINK_RETRY_MS);
    }
  }

  /**
   * The peer said (an out-of-sync Decline) that it no longer has this group. Linux ends the
   * group at once (smc_clc_wait_msg: smc_lgr_terminate_sched); here its peer is asked first,
   * with a TEST_LINK on each active link, and the group ends (telling the peer, as
   * smc_lgr_cleanup) only when nothing comes back on any of them within LLC_WAIT_MS: a peer
   * that answers still runs the group, and the Decline, which any process that can open a
   * TCP connection from the peer's address can send, was not its word.
   */
  endUnlessPeerAnswers(reason: string): void {
    if (this.dead || this.syncCheck) return;
    const links = this.activeLinks();
    if (links.length === 0) return this.free(false, reason, true);
    let sentAt = 0;
    for (const l of links) sentAt = this.sendTestLink(l);
    this.syncCheck = setTimeout(() => {
      this.syncCheck = undefined;
      if (this.dead || this.links.some((l) => l.lastRx > sentAt)) return;
      this.free(false, `${reason}, and no answer to TEST_LINK within ${LLC_WAIT_MS} ms`, true);
    }, LLC_WAIT_MS);
    this.syncCheck.unref();
  }

  /**
   * End the link group: tell the peer (DELETE_LINK, orderly, when the link still works),
   * fail the connections still on it, destroy the QPs and deregister the buffers.
   */
  free(orderly: boolean, reason = 'link group freed', tellPeer = orderly): void {
    if (this.dead) return;
    this.dead = true;
    if (!orderly) this.peerGone();
    clearTimeout(this.syncCheck);
    this.syncCheck = undefined;
    for (const [d, f] of this.devClose) d.onClose.delete(f);
    this.devClose.clear();
    clearTimeout(this.lingerTimer);
    clearTimeout(this.addTimer);
    for (const t of this.delTimers) clearTimeout(t);
    this.delTimers.clear();
    // The flows waiting for the lock fail; the one under way ends (its waits fail below).
    for (const q of this.flowQueue.splice(0)) { clearTimeout(q.timer); q.fail(new SoftrdmaError('ENOLINK', `smc-r: ${reason}`)); }
    const links = [...this.links];
    if (this.addFlow) links.push(this.addFlow.link);
    this.endAddFlow();
    for (const l of links) { clearTimeout(l.testTimer); clearTimeout(l.testWait); }
    const w = this.confirmWait;
    this.confirmWait = undefined;
    if (w) { clearTimeout(w.timer); w.reject(new Error(reason)); }
    const r = this.rkeyWait;
    this.rkeyWait = undefined;
    if (r) { clearTimeout(r.timer); r.reject(new Error(reason)); }
    for (const { timer } of this.lateKeys.values()) clearTimeout(timer);
    this.lateKeys.clear();
    this.llcBacklog.clear();
    this.rtokens.clear();
    SmcrLinkGroup.all.get(this.peerKey)?.delete(this);
    if (SmcrLinkGroup.all.get(this.peerKey)?.size === 0) SmcrLinkGroup.all.delete(this.peerKey);
    const up = this.activeLinks()[0];
    // tellPeer without orderly: Linux's smc_lgr_cleanup after a termination
    // (smc_llc_send_link_delete_all(lgr, false, rsn)), so the peer's connections end too.
    if (tellPeer && up) {
      this.sendLlc({ kind: 'DELETE_LINK', version: 2, response: false, all: true, orderly, linkNum: up.id, reason: LLC_DEL.PROG_INIT_TERM }, up);
    }
    // The links are down before the connections hear of it (their aborts must not post on a
    // QP a closed device destroyed already); the QPs go once the DELETE_LINK has left.
    for (const l of links) l.markDown(reason);
    this.expected.clear();
    this.retired.clear();
    for (const c of [...this.conns.values()]) c.linkDown(reason);
    setImmediate(() => {
      for (const l of links) l.destroy();
      for (const pool of [this.freeRmbs, this.freeSndbufs]) for (const l of pool.values()) for (const b of l) dereg(b);
      for (const b of this.quarantined.values()) dereg(b);
      for (const t of this.offeredDeadlines.values()) clearTimeout(t);
      this.offeredDeadlines.clear();
      for (const d of this.draining) dereg(d.buf);
      this.draining.length = 0;
      for (const c of this.conns.values()) { dereg(c.rmb); dereg(c.sndbuf); }
      for (const c of this.closing) { c.closing = false; c.wakeSent(!c.unconfirmed); dereg(c.sndbuf); } // their RMBs are in quarantine
      this.closing.clear();
      this.freeRmbs.clear();
      this.freeSndbufs.clear();
      this.quarantined.clear();
      this.releasePds();
    });
  }
}

// Discovery trusts a cached yes for address:port without asking while a client connection to it is live.
setSmcrLivePeerCheck((dst, service) => SmcrLinkGroup.liveClientTo(dst, service));
