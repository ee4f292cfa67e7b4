// The CLC handshake of SMC-R (Linux: af_smc.c smc_connect_rdma on the client, smc_listen_rdma_*
// on the server; smc_clc.c's messages), as SMC-Rv2 release 1 over RoCEv2 (docs/smc.md, "Which
// SMC-R version"):
//   client                                          server
//   ── Proposal v2 (typev2 R: RoCEv2 GID, UEIDs) ──►  finds or creates the link group,
//                                                     takes an RMB
//   ◄── Accept v2 (QPN, rkey, token, RMB address, PSN, MTU; first contact + FCE) ─
//   creates the link group on first contact, connects its QP, takes an RMB
//   ── Confirm v2 (the same fields; first contact: FCE, GID list) ─►  connects its QP
//   first contact only:    ◄── CONFIRM_LINK request (over the QP) ──
//                          ── CONFIRM_LINK response ──►
//   data: RDMA WRITE + CDC (connection.ts). A Decline at any step means TCP.
// handshake.ts drives it: it frames the CLC bytes and calls in here with the decoded messages;
// what this module needs of the socket comes in SmcrOps (no import back, so no cycle).

import { hostname } from 'node:os';
import { isIPv4 } from 'node:net';
import {
  CLC_ACCEPT, CLC_CONFIRM, CLC_DECLINE, CLC_OS_LINUX, CLC_PROPOSAL, DECLINE, SMC_CLC_V2, SMC_RELEASE, SMC_TYPE_D, SMC_TYPE_N, SMC_TYPE_R,
  compressBufSize, declineName, encodeSmcDecline, encodeSmcProposal, encodeSmcrAcceptConfirm, localSystemId, smcrIndicated,
  uncompressBufSize, type ClcPrefix, type FirstContactExt, type SmcClcMessage, type SmcProposal, type SmcrAcceptConfirm,
} from '../clc.js';
import { smcrOf, type ResolvedSmcOptions } from '../options.js';
import type { TransportEvents } from '../transport.js';
import { SmcrConnection, type PeerRmb } from './connection.js';
import { pickSmcrDevice, type SmcrDevice } from './device.js';
import { SmcrQuery, discoverSmcr, serviceKey, inLocalSubnet, localAddressFor, prefetchSmcr, prefetchWanted, waitBudget, type SmcrAsker, type SmcrDiscovery } from './discovery.js';
import { CmDevice } from '../../cm/rdma-cm/cm-device.js';
import { getDeviceList } from '../../verbs/api.js';
import { autoDevice, autoDeviceAllowed, autoDeviceError } from './auto-device.js';
import { MAX_CONNS, MAX_LINKS, MIN_CONNS, SmcrDeclineError, SmcrLinkGroup, type Rmb } from './lgr.js';
import type { SmcrLink } from './link.js';
import { remoteAddr } from '../../abi/remote-addr.js';

/** The user EID softrdma offers and accepts (blank-padded to 32 on the wire; a Linux peer needs `smcr ueid add SOFTRDMA-SMCR`). */
export const SOFTRDMA_UEID = 'SOFTRDMA-SMCR'.padEnd(32, ' ');
/** SMC-R RMBs go up to 16 KiB << 15 = 512 MiB in Linux 6.12 (SMCR_RMBE_SIZES, smc_core.c 2059). */
export const SMCR_MAX_RMB = 16384 * 2 ** 15;

/** What the SMC-R flow needs from the socket's handshake (handshake.ts). */
export interface SmcrOps {
  opts: ResolvedSmcOptions;
  role: 'client' | 'server';
  localAddress(): string;
  /** The TCP connection's peer address (IPv4-mapped IPv6 unmapped). */
  remoteAddress(): string;
  /** The TCP connection's peer port. */
  remotePort(): number;
  write(buf: Buffer): void;
  /** Send our Decline; the peer's own, crossing it, is then stripped from the stream. */
  decline(reason: number): void;
  restartTimer(): void;
  /** Is the handshake still waiting for this step (no timeout or Decline since)? */
  stillPending(): boolean;
  events(): TransportEvents;
  settleTcp(reason: number | undefined, cause: string): void;
  settleSmc(conn: SmcrConnection): void;
  /** The peer declined (its reason); settle on TCP. */
  peerDeclined(reason: number): void;
  /** Fail the connection (a reset): the handshake cannot go back to TCP any more. */
  destroy(message: string): void;
  /** Server: the Decline reason when this socket must not use SMC (smc: false, a policy veto, pauseOnConnect), else 0. */
  serverDecline(): number;
  /** Server: our Accept goes out; the Confirm is awaited (the server's writes are held from here on). */
  acceptSent(): void;
}

interface Hs {
  dev: SmcrDevice;
  lgr: SmcrLinkGroup | undefined;
  /** The link the connection starts on (the Accept names its QP). */
  link: SmcrLink | undefined;
  firstContact: boolean;
  rmb: Rmb | undefined;
  /** Server: our Accept gave the peer the RMB's rkey (it may write into it from then on). */
  offered?: boolean;
  sndbuf: Rmb | undefined;
  token: number;
  conn: SmcrConnection | undefined;
  key: string;
  proposal: SmcProposal | undefined;
  /** Server, first contact: the gate later Proposals from the same peer wait at. */
  gate?: FirstContactGate;
  /** Server: the handshake holds a place in lgr (reserveConn) until it joins or gives up. */
  slot?: boolean;
  /** Client: the server's Accept was taken (its RMB offered to us), and our Confirm has not gone out. */
  owesConfirm?: boolean;
}

const handshakes = new WeakMap<object, Hs>();

/**
 * Server: first contacts under way, by link group key. A Proposal from a peer that has one
 * under way waits for it to end, then joins the group it made (or, if it failed, makes the next
 * first contact), as Linux serializes them with smc_server_lgr_pending (af_smc.c, held from
 * the Proposal to the first link's confirmation and the ADD_LINK after it,
 * smcr_serv_conf_first_link): 200 connections opened at once make one link group, not 200,
 * and join it once its second link is there (or failed), each then announcing its RMB on both
 * links. The handshake timer bounds the wait.
 */
interface FirstContactGate { done: Promise<void>; open(): void }
const firstContacts = new Map<string, FirstContactGate>();

/** Let the Proposals waiting at the handshake's gate go on. */
function openGate(hs: Hs): void {
  const g = hs.gate;
  if (!g) return;
  hs.gate = undefined;
  releaseGate(hs.key, g);
}

function releaseGate(key: string, g: FirstContactGate): void {
  if (firstContacts.get(key) === g) firstContacts.delete(key);
  g.open();
}

/** The RMB size for a connection: the socket's buffer size (smcBufferSize), within SMC-R's sizes. */
function rmbSize(opts: ResolvedSmcOptions): number {
  return Math.min(opts.bufferSize, SMCR_MAX_RMB);
}

/** The Decline for buffers that could not be made: SMC_CLC_DECL_MEM for memory, as Linux's smc_buf_create failing (af_smc.c); else `otherwise`. */
function bufferFailure(e: unknown, otherwise: number): number {
  return (e as { code?: unknown }).code === 'ENOMEM' ? DECLINE.MEM : otherwise;
}

/** The Decline for a first link not confirmed: the reason the link group gave (RMBE_EC), else TIMEOUT_CL. */
function firstLinkFailure(e: unknown): number {
  return e instanceof SmcrDeclineError ? e.reason : DECLINE.TIMEOUT_CL;
}

/** A v2 Decline as Linux sends one (smc_clc_send_decline): the SMC-R handshake's. */
export function smcrDecline(reason: number): Buffer {
  return encodeSmcDecline({ version: SMC_CLC_V2, outOfSync: reason === DECLINE.SYNCERR, peerId: localSystemId(), diagnosis: reason, osType: CLC_OS_LINUX, diagnosisV2: [0, 0, 0, 0] });
}

function fce(lgr: SmcrLinkGroup): FirstContactExt {
  return { v2Direct: true, osType: CLC_OS_LINUX, release: SMC_RELEASE, hostname: hostname().slice(0, 32), v2x: { maxConns: lgr.maxConns, maxLinks: lgr.maxLinks, featureMask: 0, vendorExpOptions: 0 } };
}

/**
 * The max_links this end offers: 2 (Linux's default, SMC_LINKS_PER_LGR_MAX_PREFER) when the
 * process has a second rxe device for another link, else 1 (softrdma makes no asymmetric links
 * on one device, so a peer that offers 2 would only have its ADD_LINK rejected).
 */
function localMaxLinks(dev: SmcrDevice): number {
  return SmcrLinkGroup.hasAltDevice(dev) ? MAX_LINKS : 1;
}

/** Is this socket's handshake an SMC-R one (its CLC messages are framed as any version)? */
export function inSmcrHandshake(key: object): boolean {
  return handshakes.has(key);
}

/** SMC-D offered beside SMC-R in one Proposal (typev1 = D): the client's ISM GID, CHID, proof and prefix area. */
export interface SmcdOffer { gid: bigint; chid: number; proof: Buffer; prefix: ClcPrefix }

/**
 * Client: the SMC-R Proposal for an opted-in socket (with `smcd`, the combined Proposal that
 * also offers SMC-D v1, as Linux sends both in one), or a reason to stay on TCP (a number):
 * no device on the local address (NOSMCRDEV), or an IPv6 connection (Linux offers SMC-Rv2 on
 * AF_INET only, af_smc.c 1149-1157).
 */
export function smcrProposal(key: object, ops: SmcrOps, smcd?: SmcdOffer): Buffer | number {
  const local = ops.localAddress();
  if (!isIPv4(local)) return DECLINE.NOSMCRDEV;
  let dev: SmcrDevice | undefined;
  try { dev = pickSmcrDevice(smcrOf(ops.opts), local); } catch { dev = undefined; }
  if (!dev) return DECLINE.NOSMCRDEV;
  handshakes.set(key, { dev, lgr: undefined, link: undefined, firstContact: false, rmb: undefined, sndbuf: undefined, token: 0, conn: undefined, key: '', proposal: undefined });
  return encodeSmcProposal({
    version: SMC_CLC_V2, typeV1: smcd ? SMC_TYPE_D : SMC_TYPE_N, typeV2: SMC_TYPE_R, peerId: localSystemId(), gid: dev.gid, mac: dev.mac,
    ismGid: smcd?.gid ?? 0n, ismChid: smcd?.chid ?? 0, proof: smcd?.proof ?? null, prefix: smcd?.prefix ?? null,
    v2: { release: SMC_RELEASE, seid: false, roceGid: dev.gid, maxConns: MAX_CONNS, maxLinks: localMaxLinks(dev), featureMask: 0, userEids: [SOFTRDMA_UEID], smcd: null },
  });
}

/**
 * Client, before anything SMC-R: can this end try it from `local` (asked only when needed: a
 * getsockname)? A socket that asked for SMC-R (its own `smcr`) always goes on, to decline for
 * itself (NOSMCRDEV) where it cannot; one on the process default only where a device is or may
 * be brought up (IPv4, not loopback), so a connection SMC-R could never take keeps its plain
 * reason (PEERNOSMC). `loopbackPeer`: the connection is between loopback addresses, where no
 * device is brought up; unless the process has an rxe device on one, the answer is no without
 * the local address (a fallback connection to a local plain server pays no system call here).
 */
export function smcrMayTry(opts: ResolvedSmcOptions, local: () => string, loopbackPeer = false): boolean {
  const opt = smcrOf(opts);
  if (!opt) return false;
  if (opts.smcr !== undefined) return true;
  if (loopbackPeer && !CmDevice.anyOnLoopback()) return false;
  const address = local();
  if (autoDeviceAllowed(address)) return true;
  const dev = CmDevice.holding(address);
  return dev !== undefined && dev.driver === 'rxe';
}

/**
 * Client, before smcrProposal: may this connection propose SMC-R to remote:port
 * (smcr/discovery.ts)? No device on the local address or IPv6: propose, and smcrProposal says
 * why not without sending anything. `smcr: { device, discovery: false }` proposes without asking.
 */
export function smcrDiscovery(ops: SmcrOps, remote: string, port: number | undefined, ask: SmcrAsker = {}): SmcrDiscovery {
  const local = ops.localAddress();
  const opt = smcrOf(ops.opts);
  if (typeof opt === 'object' && opt.discovery === false) return { go: 'propose', cause: 'discovery off for this socket' };
  if (!isIPv4(local) || port === undefined) return { go: 'propose', cause: 'not asked' };
  let dev: SmcrDevice | undefined;
  try { dev = pickSmcrDevice(opt, local); } catch { dev = undefined; }
  if (dev) return discoverSmcr(dev.device, local, remote, port, ask);
  if (opt !== true || !autoDeviceAllowed(local)) return { go: 'propose', cause: 'no device' };
  // smcr: true and no device on the local address yet: bring one up (smcr/auto-device.ts),
  // unless nothing would be asked with it (a destination beyond the subnet).
  if (!inLocalSubnet(local, remote)) return discoverSmcr(undefined, local, remote, port);
  const a = autoDevice(local);
  if ('failed' in a) return { go: 'tcp', cause: a.failed, reason: DECLINE.NOSMCRDEV };
  if ('device' in a) return discoverSmcr(a.device, local, remote, port, ask);
  // Coming up: the connection waits for the device and then the query, within one budget.
  const q = new SmcrQuery(`device ${local}`);
  q.awaitsDevice = true;
  a.pending.then((device) => {
    q.awaitsDevice = false;
    if (!device) {
      q.failure = { reason: DECLINE.NOSMCRDEV, cause: autoDeviceError(local) ?? 'no SMC-R device' };
      return q.finish(undefined);
    }
    const d = discoverSmcr(device, local, remote, port, { ...ask, join: true });
    if (d.go === 'propose') q.finish(true);
    else if (d.go === 'tcp') q.finish(false);
    else d.query.onDone((answer) => q.finish(answer));
  }, () => q.finish(undefined));
  return { go: 'wait', query: q, ms: waitBudget(undefined, ask.tcpMs) };
}

/**
 * Client, at connect() to remote:port (an IPv4 address; `local`: the address it binds, if any):
 * start discovery's query now, so that its round trip overlaps the TCP handshake's
 * (smcr/discovery.ts prefetchSmcr). Only on a device that is up already, the application's or
 * one SMC-R brought up for an earlier connection (none is brought up here: smcrDiscovery does
 * that, and waits for it), and only where smcrDiscovery would ask from the same address. Returns
 * the query started (for claimSmcrPrefetch / abandonSmcrPrefetch) and whether it counted a
 * revalidation, or undefined.
 */
export function smcrPrefetch(opts: ResolvedSmcOptions, remote: string, port: number, local?: string): { query: object; revalidated: boolean } | undefined {
  const opt = smcrOf(opts);
  if (!opt || (typeof opt === 'object' && opt.discovery === false)) return undefined;
  // A process with no device (most under the preload, until SMC-R first brings one up) pays no
  // more; nor does a connection whose answer is known (looked up before addresses and devices).
  if (getDeviceList().length === 0 || !prefetchWanted(remote, port)) return undefined;
  const from = local ?? localAddressFor(remote);
  if (from === undefined || !isIPv4(from)) return undefined;
  let dev: SmcrDevice | undefined;
  try { dev = pickSmcrDevice(opt, from); } catch { dev = undefined; }
  return dev ? prefetchSmcr(dev.device, from, remote, port) : undefined;
}

/**
 * The peer closed or reset its end of the TCP connection before we read a Confirm: TCP is
 * ordered (and takes a reset only in sequence), so it never sent one and never settled, and
 * nothing will write into the RMB our Accept offered. It goes back to the pool at once instead
 * of waiting in quarantine for a CDC that cannot come (and the next connection is offered the
 * same RMB, whose rtoken the client has, not a fresh one).
 */
export function smcrPeerEndedHandshake(key: object): void {
  const hs = handshakes.get(key);
  if (hs && !hs.conn) hs.offered = false;
}

/**
 * Client: the server's Accept offered us its RMB and our Confirm has not gone out. A socket
 * released now declines first (close.ts): the server then takes its RMB back at once, where a
 * bare reset leaves it not knowing whether we settled (it holds the RMB in quarantine and offers
 * the next connection a fresh one, one more rtoken for us to keep).
 */
export function smcrClientOwesConfirm(key: object): boolean {
  return handshakes.get(key)?.owesConfirm === true;
}

/**
 * Server: our Accept is out and no Confirm came yet: 'first' on a first contact (the client
 * cannot be on SMC-R before our CONFIRM_LINK), 'reuse' when it joins a group (the client goes
 * to SMC-R as it sends its Confirm); undefined otherwise (no Accept, or the Confirm came).
 */
export function smcrAwaitingConfirm(key: object): 'first' | 'reuse' | undefined {
  const hs = handshakes.get(key);
  if (!hs || !hs.offered || hs.conn) return undefined;
  return hs.firstContact ? 'first' : 'reuse';
}

/** Server: give back the place the handshake took in its link group at the Proposal. */
function dropSlot(hs: Hs): void {
  if (!hs.slot) return;
  hs.slot = false;
  hs.lgr?.unreserveConn();
}

/** Give back what an SMC-R handshake that did not settle set up. */
export function releaseSmcr(key: object): void {
  const hs = handshakes.get(key);
  if (!hs) return;
  handshakes.delete(key);
  openGate(hs);
  dropSlot(hs);
  if (hs.conn) {
    if (!hs.conn.released) { hs.conn.abort(); hs.conn.release(); }
  } else hs.lgr?.giveBack(hs.rmb, hs.sndbuf, hs.token, hs.offered === true);
  if (hs.firstContact && hs.lgr && !hs.lgr.confirmed) hs.lgr.free(false, 'first contact failed');
}

/** A CLC message (any version) for a socket in an SMC-R handshake, or a v2 Proposal at a server. */
export function onSmcrClc(key: object, ops: SmcrOps, m: SmcClcMessage): void {
  const hs = handshakes.get(key);
  if (m.type === CLC_DECLINE) {
    // A Decline with the first-contact bit says the peer's view of the link group is out of
    // sync (it no longer has the group our Accept reused): Linux ends that group
    // (smc_clc_wait_msg: sync_err, smc_lgr_terminate_sched), or every later connection to the
    // peer would be declined the same way. Here the group's peer is asked first (TEST_LINK):
    // one that answers still runs the group, and a Decline alone, which anyone who can open a
    // TCP connection from the peer's address can send, does not end its connections.
    const stale = m.outOfSync ? hs?.lgr : undefined;
    // A client that declines instead of confirming never settled: nothing writes into the RMB.
    if (hs) hs.offered = false;
    releaseSmcr(key);
    // Before the socket settles (its 'smc' listener may throw): the peer is told with a
    // DELETE_LINK, as smc_lgr_cleanup does, so its side of the group's connections ends too.
    if (stale && !stale.dead) stale.endUnlessPeerAnswers('the peer declined: link group out of sync');
    ops.peerDeclined(m.diagnosis);
    return;
  }
  if (ops.role === 'server' && !hs && m.type === CLC_PROPOSAL) return void onProposal(key, ops, m as SmcProposal);
  if (ops.role === 'client' && hs && !hs.lgr && m.type === CLC_ACCEPT && 'qpn' in m) return void onAccept(key, ops, hs, m);
  if (ops.role === 'server' && hs?.lgr && hs.offered && !hs.conn && m.type === CLC_CONFIRM && 'qpn' in m) return void onConfirm(key, ops, hs, m);
  fail(key, ops, DECLINE.SYNCERR, `unexpected CLC message type ${m.type} in the SMC-R handshake`);
}

function fail(key: object, ops: SmcrOps, reason: number, cause: string): void {
  ops.decline(reason);
  releaseSmcr(key);
  ops.settleTcp(reason, cause);
}

function onProposal(key: object, ops: SmcrOps, p: SmcProposal): void {
  // This socket may not use SMC (smc: false, the policy said no, pauseOnConnect): declined
  // with that reason before anything is looked at, as the SMC-D path does (smcdServerCheck).
  const veto = ops.serverDecline();
  if (veto) return fail(key, ops, veto, `declined: ${declineName(veto)}`);
  if (p.version < SMC_CLC_V2 || !p.v2 || !smcrIndicated(p.typeV2)) return fail(key, ops, DECLINE.MODEUNSUPP, 'declined: no SMC-Rv2 offered');
  if (!p.v2.userEids.includes(SOFTRDMA_UEID)) return fail(key, ops, DECLINE.NOUEID, 'declined: no common UEID');
  // smc_clc_srv_v2x_features_validate (smc_clc.c), for a Proposal of release 1 or later: the
  // smaller of the client's max_conns and ours, at least SMC_CONN_PER_LGR_MIN, else Decline
  // MAXCONNERR; the smaller of its max_links and ours, at least 1, else MAXLINKERR (before a
  // device is looked for, as smc_listen_work). Release 0 names neither.
  const v2x = p.v2.release >= 1;
  const maxConns = v2x ? Math.min(p.v2.maxConns, MAX_CONNS) : MAX_CONNS;
  if (maxConns < MIN_CONNS) return fail(key, ops, DECLINE.MAXCONNERR, `declined: the client offers max_conns ${p.v2.maxConns} (at least ${MIN_CONNS})`);
  if (v2x && p.v2.maxLinks < 1) return fail(key, ops, DECLINE.MAXLINKERR, `declined: the client offers max_links ${p.v2.maxLinks}`);
  let dev: SmcrDevice | undefined;
  try { dev = pickSmcrDevice(smcrOf(ops.opts), ops.localAddress()); } catch { dev = undefined; }
  if (!dev) return fail(key, ops, DECLINE.NOSMCRDEV, 'declined: no SMC-R device');
  // A server's group is the peer's as seen from TCP too: its key adds the connection's peer
  // address to the system id and GID a Proposal names (Linux's smcr_lgr_match looks at those
  // alone), so a Proposal from another address cannot find, join or end another peer's group
  // (the system id is in every CLC message a process sends). A Linux client may propose a GID
  // other than its TCP source address (smc_ib_determine_gid_rcu takes the RoCE netdev's first
  // address in the source's subnet): it still gets its group, keyed by both.
  const hs: Hs = { dev, lgr: undefined, link: undefined, firstContact: false, rmb: undefined, sndbuf: undefined, token: 0, conn: undefined, key: SmcrLinkGroup.key(dev, p.peerId, p.v2.roceGid, ops.remoteAddress()), proposal: p };
  const lgr = SmcrLinkGroup.find(hs.key, 'server')[0];
  const pending = lgr ? undefined : firstContacts.get(hs.key);
  if (pending) {
    void pending.done.then(() => { if (ops.stillPending() && !handshakes.has(key)) onProposal(key, ops, p); });
    return;
  }
  handshakes.set(key, hs);
  hs.firstContact = !lgr;
  if (hs.firstContact) {
    let open!: () => void;
    const done = new Promise<void>((resolve) => { open = resolve; });
    hs.gate = { done, open };
    firstContacts.set(hs.key, hs.gate);
  }
  try {
    if (lgr) hs.lgr = lgr;
    else {
      // smc_clc.c 1279-1281: the server takes the smaller of the client's max_links and its own.
      hs.lgr = new SmcrLinkGroup(dev, 'server');
      hs.lgr.maxLinks = Math.max(1, Math.min(p.v2.maxLinks, localMaxLinks(dev)));
      hs.lgr.maxConns = maxConns;
    }
    // A place in the group from now on (smc_conn_create at the Proposal): the Proposals of
    // connections opened together all choose before any of them joins, and a full group sends
    // the next one to a new group (first contact).
    hs.lgr.reserveConn();
    hs.slot = true;
    // Linux makes the send buffer and the RMB before its Accept (smc_listen_rdma_init). Ours is
    // the client's RMB size, known only from its Confirm, when a failure would come after the
    // client settled: decline now unless both, at our own size, fit in the memory bound.
    const size = rmbSize(ops.opts);
    hs.lgr.reserve(size, size);
    hs.rmb = hs.lgr.takeRmb(size);
  } catch (e) {
    return fail(key, ops, bufferFailure(e, DECLINE.ERR_REGBUF), `declined: ${(e as Error).message}`);
  }
  hs.token = hs.lgr.newToken();
  const accept = () => {
    hs.offered = true;
    ops.acceptSent();
    ops.write(encodeSmcrAcceptConfirm(acceptConfirm(CLC_ACCEPT, hs)));
    ops.restartTimer();
  };
  const group = hs.lgr;
  const rmb = hs.rmb;
  if (hs.firstContact) {
    hs.link = group.link;
    group.expect(hs.token, hs.link, rmb);
    return accept();
  }
  // smc_listen_rdma_reg -> smcr_lgr_reg_rmbs (af_smc.c 2285-2300, smc_core.c): under the link
  // group's LLC flow (an ADD_LINK under way ends first), the link the connection goes on and,
  // with more than one active link, the RMB's rkeys on the others by CONFIRM_RKEY. The RMB is
  // pending (expect) from then on: an ADD_LINK after the flow names it itself.
  const live = () => ops.stillPending() && handshakes.get(key) === hs;
  group.withFlow('CONFIRM_RKEY', async () => {
    if (!live()) return false;
    if (group.dead || group.activeLinks().length === 0) throw new Error('the link group has no active link');
    const link = hs.link = group.linkForNewConn();
    group.expect(hs.token, link, rmb);
    await group.announceRmbHeld(rmb, link);
    return true;
  }).then((ok) => {
    if (ok && live()) accept();
  }, (e: Error) => {
    if (live()) fail(key, ops, DECLINE.ERR_REGBUF, `declined: ${e.message}`);
  });
}

function acceptConfirm(type: typeof CLC_ACCEPT | typeof CLC_CONFIRM, hs: Hs): SmcrAcceptConfirm {
  const link = hs.link!;
  const mr = hs.lgr!.mrOn(hs.rmb!, link.dev);
  return {
    // The link's own GID and MAC with its QPN (smc_clc_send_confirm_accept: conn->lnk's).
    type, version: SMC_CLC_V2, firstContact: hs.firstContact, peerId: localSystemId(), gid: link.dev.gid, mac: link.dev.mac,
    qpn: link.qp.qpn, rmbRkey: mr.rkey, rmbeIndex: 1, rmbeAlertToken: hs.token, rmbeSize: compressBufSize(hs.rmb!.size),
    qpMtu: link.local.mtu, rmbDmaAddr: BigInt(mr.addr), psn: link.local.psn, eid: SOFTRDMA_UEID,
    fce: hs.firstContact ? fce(hs.lgr!) : null, gidList: hs.firstContact && type === CLC_CONFIRM ? [] : null,
  };
}

function peerRmbOf(m: SmcrAcceptConfirm): PeerRmb {
  return { token: m.rmbeAlertToken, rkey: m.rmbRkey, addr: remoteAddr(m.rmbDmaAddr), wireAddr: m.rmbDmaAddr, size: uncompressBufSize(m.rmbeSize) };
}

function onAccept(key: object, ops: SmcrOps, hs: Hs, m: SmcrAcceptConfirm): void {
  if (m.eid !== SOFTRDMA_UEID) return fail(key, ops, DECLINE.NOUEID, 'declined: the server chose an EID we did not offer');
  const peerSize = uncompressBufSize(m.rmbeSize);
  if (peerSize > SMCR_MAX_RMB) return fail(key, ops, DECLINE.SYNCERR, `declined: peer RMB of ${peerSize} bytes`);
  hs.key = SmcrLinkGroup.key(hs.dev, m.peerId, m.gid, ops.remoteAddress());
  hs.firstContact = m.firstContact;
  // smc_clc_clnt_v2x_features_validate (smc_clc.c), a first contact of release 1 or later: the
  // server's max_conns at least SMC_CONN_PER_LGR_MIN, else MAXCONNERR; its max_links 1 or 2
  // (SMC_LINKS_ADD_LNK_MIN/MAX), else MAXLINKERR.
  const v2x = m.firstContact ? m.fce?.v2x : undefined;
  if (v2x && v2x.maxConns < MIN_CONNS) return fail(key, ops, DECLINE.MAXCONNERR, `declined: the server names max_conns ${v2x.maxConns} (at least ${MIN_CONNS})`);
  if (v2x && (v2x.maxLinks < 1 || v2x.maxLinks > MAX_LINKS)) return fail(key, ops, DECLINE.MAXLINKERR, `declined: the server names max_links ${v2x.maxLinks} (1 to ${MAX_LINKS})`);
  try {
    if (m.firstContact) {
      hs.lgr = new SmcrLinkGroup(hs.dev, 'client');
      // smc_clc.c 1302-1305: the client takes the server's max_links (and max_conns) from the Accept.
      hs.lgr.maxLinks = Math.max(1, Math.min(v2x?.maxLinks ?? 1, MAX_LINKS));
      if (v2x) hs.lgr.maxConns = Math.min(v2x.maxConns, MAX_CONNS);
      hs.link = hs.lgr.link;
    } else {
      // The server reuses a link group: ours to that peer with a link to the server's QP, by
      // QPN and GID (af_smc.c smc_connect_rdma; the Accept names the link the server chose).
      // None: Linux's smc_conn_create declines SYNCERR ("Server reuses a link group, but
      // Client wants to start a new one"), whose out-of-sync flag makes the server end that group.
      const found = SmcrLinkGroup.findByServerLink(hs.dev, m.peerId, m.qpn, m.gid, ops.remoteAddress());
      // A group made with another server address: not this server's to name. Declined without
      // the out-of-sync flag (which would make the server end the group it named).
      if (found === 'elsewhere') return fail(key, ops, DECLINE.INTERR, 'declined: the server named a link group this client made with another server address');
      if (found) { hs.lgr = found.lgr; hs.link = found.link; hs.key = found.lgr.peerKey; }
      if (!hs.lgr) return fail(key, ops, DECLINE.SYNCERR, 'declined: the server reused a link group this client does not have');
    }
    hs.rmb = hs.lgr.takeRmb(rmbSize(ops.opts));
    hs.sndbuf = hs.lgr.takeSndbuf(peerSize);
  } catch (e) {
    return fail(key, ops, bufferFailure(e, DECLINE.ERR_REGBUF), `declined: ${(e as Error).message}`);
  }
  if (m.firstContact) {
    // smc_ib_ready_link (af_smc.c smc_connect_rdma): the QP to RTR/RTS, or Decline ERR_RDYLNK.
    try {
      hs.link!.connect({ qpn: m.qpn, psn: m.psn, gid: m.gid, mtu: m.qpMtu });
    } catch (e) {
      return fail(key, ops, DECLINE.ERR_RDYLNK, `declined: the link's QP: ${(e as Error).message}`);
    }
  }
  hs.token = hs.lgr.newToken();
  hs.owesConfirm = true;
  const conn = new SmcrConnection(hs.lgr, hs.rmb, hs.sndbuf, hs.token, peerRmbOf(m), ops.events(), hs.link);
  conn.service = serviceKey(ops.remoteAddress(), ops.remotePort());
  if (!m.firstContact) return joinGroup(key, ops, hs, conn);
  // smc_connect_rdma (af_smc.c 1331-1334): the server's RMB into the rtoken table, or Decline ERR_RTOK.
  if (!hs.lgr.attach(conn, true)) return fail(key, ops, DECLINE.ERR_RTOK, 'declined: the link group\'s rtoken table is full');
  hs.conn = conn;
  ops.write(encodeSmcrAcceptConfirm(acceptConfirm(CLC_CONFIRM, hs)));
  hs.owesConfirm = false;
  hs.lgr.confirmSent(conn);
  ops.restartTimer();
  const lgr = hs.lgr;
  lgr.confirmFirstLink().then(() => {
    lgr.register(hs.key);
    if (ops.stillPending() && handshakes.get(key) === hs) settle(key, ops, hs);
  }, (e: Error) => {
    if (ops.stillPending() && handshakes.get(key) === hs) fail(key, ops, firstLinkFailure(e), `first link not confirmed: ${e.message}`);
  });
}

/**
 * Client, a group the server reused (smc_connect_rdma, af_smc.c 1331-1352): under the link
 * group's LLC flow (a peer's ADD_LINK under way ends first), the server's RMB goes into the
 * rtoken table (smc_rmb_rtoken_handling, or Decline ERR_RTOK) and the connection joins with its
 * keys on every link; with more than one active link then, our RMB's rkeys on the others go by
 * CONFIRM_RKEY (smcr_lgr_reg_rmbs). Then the Confirm.
 */
function joinGroup(key: object, ops: SmcrOps, hs: Hs, conn: SmcrConnection): void {
  const lgr = hs.lgr!;
  const link = hs.link!;
  const rmb = hs.rmb!;
  const live = () => ops.stillPending() && handshakes.get(key) === hs;
  lgr.withFlow('CONFIRM_RKEY', async () => {
    if (!live()) return 'gone';
    if (lgr.dead || !lgr.activeLinks().includes(link)) return 'nolink';
    if (!lgr.attach(conn, true)) return 'rtok';
    hs.conn = conn;
    await lgr.announceRmbHeld(rmb, link);
    return 'ok';
  }).then((r) => {
    if (!live()) return;
    if (r === 'nolink') return fail(key, ops, DECLINE.NOACTLINK, 'declined: the link the Accept named went down');
    if (r === 'rtok') return fail(key, ops, DECLINE.ERR_RTOK, 'declined: the link group\'s rtoken table is full');
    ops.write(encodeSmcrAcceptConfirm(acceptConfirm(CLC_CONFIRM, hs)));
    hs.owesConfirm = false;
    lgr.confirmSent(conn);
    settle(key, ops, hs);
  }, (e: Error) => {
    if (live()) fail(key, ops, DECLINE.ERR_REGBUF, `declined: ${e.message}`);
  });
}

/**
 * Server: a Confirm it cannot take. On a first contact the client waits for our CONFIRM_LINK,
 * so the Decline sends both ends to TCP. A client joining a group went to SMC-R as it sent its
 * Confirm (as Linux's does) and reads no more TCP: the Decline, then a reset, so that neither
 * end waits for the other (Linux 6.1 falls back to TCP here, and the client, on SMC-R, hangs).
 */
function failConfirm(key: object, ops: SmcrOps, hs: Hs, reason: number, cause: string): void {
  if (hs.firstContact) return fail(key, ops, reason, cause);
  ops.decline(reason);
  releaseSmcr(key);
  ops.destroy(cause);
}

function onConfirm(key: object, ops: SmcrOps, hs: Hs, m: SmcrAcceptConfirm): void {
  const lgr = hs.lgr!;
  const p = hs.proposal!;
  // A Proposal without SMC-Rv1 (typeV1 N: Linux's client over RoCEv2-only GIDs) carries no peer
  // ID; Linux fills lcl.id_for_peer only with SMC-Rv1 indicated (smc_clc.c 887-893, 6.1).
  const proposedId = smcrIndicated(p.typeV1);
  if (m.firstContact !== hs.firstContact || (proposedId && !m.peerId.equals(p.peerId))) return failConfirm(key, ops, hs, DECLINE.SYNCERR, 'declined: Confirm does not match the Proposal');
  let link = hs.link!;
  if (!hs.firstContact && (link.remote?.qpn !== m.qpn || !link.remote.gid.equals(m.gid))) return failConfirm(key, ops, hs, DECLINE.SYNCERR, 'declined: Confirm names another link');
  // smc_clc_v2x_features_confirm_check (smc_clc.c): a first contact's Confirm of release 1 or
  // later repeats the max_conns and max_links of our Accept, else MAXCONNERR / MAXLINKERR.
  const v2x = hs.firstContact ? m.fce?.v2x : undefined;
  if (v2x && v2x.maxConns !== lgr.maxConns) return failConfirm(key, ops, hs, DECLINE.MAXCONNERR, `declined: the Confirm names max_conns ${v2x.maxConns}, the Accept ${lgr.maxConns}`);
  if (v2x && v2x.maxLinks !== lgr.maxLinks) return failConfirm(key, ops, hs, DECLINE.MAXLINKERR, `declined: the Confirm names max_links ${v2x.maxLinks}, the Accept ${lgr.maxLinks}`);
  const peerSize = uncompressBufSize(m.rmbeSize);
  if (peerSize > SMCR_MAX_RMB) return failConfirm(key, ops, hs, DECLINE.SYNCERR, `declined: peer RMB of ${peerSize} bytes`);
  // The group may have ended (its device closed, the peer deleted it) since the Accept.
  if (lgr.dead) return failConfirm(key, ops, hs, DECLINE.NOACTLINK, 'declined: the link group ended before the Confirm');
  let peer = peerRmbOf(m);
  if (!hs.firstContact && !lgr.activeLinks().includes(link)) {
    // The Accept's link failed or was deleted since: another active link where the peer's RMB
    // has a key (its CONFIRM_RKEY), else no link for the connection (a connection on the
    // removed link would never send anything).
    const alt = lgr.peerKeyElsewhere(link, peer.rkey, peer.wireAddr);
    if (!alt) return failConfirm(key, ops, hs, DECLINE.NOACTLINK, 'declined: the link the Accept named is gone, and the peer\'s RMB has no key on another link');
    link = alt.link;
    peer = { ...peer, rkey: alt.rkey, addr: remoteAddr(alt.addr), wireAddr: alt.addr };
  }
  try {
    if (hs.firstContact) link.connect({ qpn: m.qpn, psn: m.psn, gid: m.gid, mtu: m.qpMtu });
    hs.sndbuf = lgr.takeSndbuf(peerSize);
  } catch (e) {
    return failConfirm(key, ops, hs, bufferFailure(e, DECLINE.ERR_RDYLNK), `declined: ${(e as Error).message}`);
  }
  const conn = new SmcrConnection(lgr, hs.rmb!, hs.sndbuf, hs.token, peer, ops.events(), link);
  // smc_listen_rdma_finish (af_smc.c 2439-2440): the client's RMB into the rtoken table, or
  // Decline ERR_RTOK (the table filled up since the Proposal chose this group).
  if (!lgr.attach(conn)) return failConfirm(key, ops, hs, DECLINE.ERR_RTOK, 'declined: the link group\'s rtoken table is full');
  hs.conn = conn;
  dropSlot(hs); // a connection of the group now
  if (!hs.firstContact) return settle(key, ops, hs);
  ops.restartTimer();
  lgr.confirmFirstLink().then(() => {
    lgr.register(hs.key);
    if (ops.stillPending() && handshakes.get(key) === hs) settle(key, ops, hs);
  }, (e: Error) => {
    if (ops.stillPending() && handshakes.get(key) === hs) fail(key, ops, firstLinkFailure(e), `first link not confirmed: ${e.message}`);
  });
}

function settle(key: object, ops: SmcrOps, hs: Hs): void {
  handshakes.delete(key);
  // After lgr.register: the Proposals that waited find the group. A server's first contact
  // holds them until the ADD_LINK that followed it ended too (see firstContacts).
  const g = hs.gate;
  if (g && hs.lgr) {
    hs.gate = undefined;
    void hs.lgr.firstAddDone().then(() => releaseGate(hs.key, g));
  } else openGate(hs);
  const conn = hs.conn!;
  conn.start();
  ops.settleSmc(conn);
  conn.settled();
}
