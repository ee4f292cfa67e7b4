// The CLC handshake of an SMC socket (Linux: af_smc.c's smc_connect_clc/smc_connect_ism on
// the client and smc_listen_work on the server, with smc_clc.c's messages, here clc.ts): it
// runs over the TCP connection, which stays open for the connection's life and tells us when
// the peer process dies.
//   client                                   server
//   ── Proposal (ISM GID) ─────────────────►  registers a DMB
//   ◄───────────────── Accept (GID, token) ─
//   attaches server DMB, registers own DMB
//   ── Confirm (GID, token) ──────────────►  attaches client DMB
//   data flows through the DMBs; a Decline at any step means plain TCP from there on.
// It ends in settleTcp (fallback: the socket is node:net's from there on, as
// smc_switch_to_fallback) or settleSmc with the transport it picked: SMC-D's SmcdConnection,
// or SMC-R's SmcrConnection for sockets that opted in (`smcr`), whose flow is in
// smcr/clc-flow.ts: CLC v2 messages, framed here with clcFrameLengthAny and decodeSmcClc.

import net from 'node:net';
import { performance } from 'node:perf_hooks';
import util from 'node:util';
import { tracer } from '../sys/trace.js';
import { defaultIsmDevice } from '../ism/device.js';
import { RuntimeDirError } from '../ism/runtime-dir.js';
import {
  CLC_ACCEPT, CLC_CONFIRM, CLC_DECLINE, CLC_PROPOSAL, ClcError, DECLINE, SMC_CLC_V2, SMC_TYPE_B, SMC_TYPE_D,
  clcFrameLength, clcFrameLengthAny, compressBufSize, decodeClc, decodeSmcClc, declineName, encodeAcceptConfirm, encodeDecline, encodeProposal,
  localSystemId, mayBeClc, smcdIndicated, smcrIndicated, uncompressBufSize, type AcceptConfirm, type ClcMessage, type Proposal, type SmcProposal,
} from './clc.js';
import { pauseOnread, smcWrite, transportEvents, watchTcpReset } from './data.js';
import { unmapV4 } from '../abi/inet.js';
import { isLoopback, isSmcListener, listenersStillRunning } from './discovery.js';
import { smcrOf } from './options.js';
import { returnDmb, takeDmb } from './dmb-pool.js';
import { checkProposal, proposalProof } from './peer-proof.js';
import { kick, rethrowLater, stayAwakeUntil } from './poller.js';
import { mayLearnTcp, peerKey, shouldTrySmc, wouldTrySmc } from './handshake-control.js';
import { anyPolicy, policyAllows } from './policy.js';
import { SmcdConnection } from './smcd-connection.js';
import { inSmcrHandshake, onSmcrClc, releaseSmcr, smcrAwaitingConfirm, smcrClientOwesConfirm, smcrDecline, smcrPeerEndedHandshake, smcrDiscovery, smcrMayTry, smcrPrefetch, smcrProposal, type SmcrOps } from './smcr/clc-flow.js';
import { abandonSmcrPrefetch, claimSmcrPrefetch, forgetSmcrListener, smcrWaitEnded } from './smcr/discovery.js';
import type { Socket } from './socket.js';
import { connReset, getSmcInfo, kSmc, peerName, restoreOwner, toBuffer, withSmcCounters, type Held, type SmcState } from './state.js';
import { countSettled } from './status.js';
import type { SmcTransport } from './transport.js';

interface SettledEvent {
  socket: Socket; mode: string; label: string; role: 'client' | 'server'; reason: number | undefined; cause: string | undefined;
  localAddress: string | undefined; localPort: number | undefined; remoteAddress: string | undefined; remotePort: number | undefined;
}
/**
 * Each connection as it settles on SMC or TCP, with the cause: NODE_DEBUG=smc prints one line,
 * diagnostics_channel 'softrdma:smc:settled' gets the fields.
 */
const settled = tracer<SettledEvent>('smc', 'settled', (e) =>
  `${e.role} ${e.localAddress}:${e.localPort} -> ${e.remoteAddress}:${e.remotePort} settled on ${e.mode === 'TCP' ? `TCP: ${e.cause}` : e.label}`);

/**
 * A server application that writes before any byte arrived (an SMTP-style banner) commits
 * the connection to TCP. A Proposal that may still arrive is swallowed; the client falls
 * back when it reads our bytes. Once a Proposal came (an SMC-R one may wait for the link
 * group's first contact or LLC flow before our Accept: still srv-wait) and after our Accept
 * (srv-accepting, SMC-D and SMC-R), the write is held until the handshake settles.
 */
export function serverSpeaksFirst(sock: Socket, s: SmcState): boolean {
  if (s.phase !== 'srv-wait' || s.clc || s.clcIn > 0) return false;
  settleTcpInWrite(sock, s, DECLINE.PEERNOSMC, 'server wrote first');
  s.stripClc = true;
  return true;
}

/**
 * settleTcp from inside the application's write() or end() (socket.ts's _write, _writev and
 * _final go on over TCP after it): an 'smc' listener's exception thrown through node's Writable
 * would leave that write unsent and the stream stuck mid-write. It reaches 'uncaughtException'
 * a tick later instead, as in onClientConnect.
 */
function settleTcpInWrite(sock: Socket, s: SmcState, reason: number | undefined, cause: string): void {
  try {
    settleTcp(sock, s, reason, cause);
  } catch (e) {
    rethrowLater(e);
  }
}

/**
 * settleTcp, then what came with it for the application (null: the peer's end), pushed also
 * when an 'smc' listener throws (the exception goes on up).
 */
function settleTcpThenPush(sock: Socket, s: SmcState, reason: number | undefined, cause: string, ...chunks: Array<Buffer | null>): void {
  try {
    settleTcp(sock, s, reason, cause);
  } finally {
    for (const c of chunks) sock.smcPush(c);
  }
}

function rawWrite(sock: Socket, s: SmcState, buf: Buffer): void {
  withSmcCounters(sock, s);
  s.clcOut += buf.length;
  (sock as unknown as { _writeGeneric(v: boolean, d: Buffer, e: string, cb: (err?: Error) => void): void })
    ._writeGeneric(false, buf, 'buffer', (err) => { if (err) sock.destroy(clcWriteError(err)); });
}

/**
 * A CLC message could not be written because the peer reset the connection. The application
 * wrote nothing: over TCP it would have learnt of the reset by reading (the write took the
 * kernel's pending error, so the read will not see it now). Say it as that read would.
 */
function clcWriteError(err: Error): Error {
  const code = (err as NodeJS.ErrnoException).code;
  return code === 'ECONNRESET' || code === 'EPIPE' ? connReset('read ECONNRESET') : err;
}

/**
 * The application closed or dropped the TCP handle during the handshake (node's own tests
 * do): nothing more can be negotiated, and its writes meet the handle as on node:net.
 */
export function handleGone(sock: Socket, s: SmcState): boolean {
  if (s.phase === 'idle') return false; // still connecting: node:net creates the handle late
  const h = (sock as unknown as { _handle?: { fd?: number } | null })._handle;
  if (h && !(typeof h.fd === 'number' && h.fd < 0)) return false;
  releaseHandshake(s);
  settleTcpInWrite(sock, s, undefined, 'TCP handle closed by the application');
  return true;
}

/**
 * Our Decline ends the handshake for us, but the peer may have written a CLC message before it
 * reads ours: its own Decline when both ends give up at once (a server whose CONFIRM_LINK wait
 * ends as the client's handshake timer does), or a late Accept or Confirm. Those are stripped,
 * not delivered as data (stripThenPush).
 */
function sendDecline(sock: Socket, s: SmcState, reason: number, smcr = inSmcrHandshake(s)): void {
  rawWrite(sock, s, smcr ? smcrDecline(reason) : encodeDecline({ diagnosis: reason, smcd: true }));
  s.stripClc = true;
}

function startTimer(sock: Socket, s: SmcState): void {
  clearTimeout(s.timer);
  s.timer = setTimeout(() => {
    s.timer = undefined;
    const fallBack = () => {
      sendDecline(sock, s, DECLINE.TIMEOUT_CL);
      releaseHandshake(s);
      settleTcp(sock, s, DECLINE.TIMEOUT_CL, 'handshake timed out');
      if (s.clc) startTimer(sock, s); // part of one may be here already: bound that wait too
    };
    const smcrAccepting = s.phase === 'srv-accepting' && inSmcrHandshake(s);
    const smcrWait = smcrAccepting ? smcrAwaitingConfirm(s) : undefined;
    if (smcrAccepting && !smcrWait) {
      // SMC-R, the client's Confirm came: the first link's confirmation (CONFIRM_LINK) bounds
      // the rest of the wait (smcr/clc-flow.ts).
    } else if (s.phase === 'srv-accepting' && !s.acceptGrace) {
      // Our SMC-D Accept is out. The client goes to SMC-D as it sends its Confirm, and one
      // that does not settle sends its Decline when its own timer runs out: wait one more
      // period for either instead of falling back now, which would lose what a client on
      // SMC-D writes (its Confirm may be in the kernel already: timers run before reads).
      s.acceptGrace = true;
      startTimer(sock, s);
    } else if (s.phase === 'srv-accepting') {
      // Neither came: read what the poll phase brings first, then fall back.
      setImmediate(() => {
        if (s.phase !== 'srv-accepting' || sock.destroyed) return;
        if (!smcrWait) return fallBack();
        const now = smcrAwaitingConfirm(s);
        if (now === 'first') return fallBack(); // the client waits for our CONFIRM_LINK: not on SMC-R yet
        if (now === 'reuse') return acceptTimedOut(sock, s);
        // The Confirm came in the poll phase: the first link's confirmation bounds the rest.
      });
    } else if (s.phase === 'proposing') {
      if (s.clcIn === 0) withdrawSmcrYes(s); // no CLC answer to our Proposal
      fallBack();
    } else if (s.phase === 'srv-wait' && s.clc) {
      // The first bytes looked like the start of a CLC message and no more came: they are the
      // client's data. Deliver them, and let the server's held writes go out.
      const got = s.clc;
      s.clc = undefined;
      settleTcpThenPush(sock, s, DECLINE.PEERNOSMC, 'incomplete CLC message: taken as TCP data', got);
    } else if (s.phase === 'tcp' && s.stripClc && s.clc) {
      // What might have been the start of a late CLC message was not one.
      const got = s.clc;
      s.clc = undefined;
      s.stripClc = false;
      sock.smcPush(got);
    }
  }, s.opts.timeout);
  s.timer.unref();
}

/**
 * Server, SMC-R: our Accept joined the client to a link group it has (no first contact), and
 * neither its Confirm nor its Decline came within two handshake periods. That client goes to
 * SMC-R as it sends its Confirm, and may have written into our RMB: TCP would lose those bytes.
 * The connection fails, as Linux's smc_listen_work does when smc_clc_wait_msg(CONFIRM) returns
 * an error (smc_listen_decline -> smc_listen_out_err); the Decline goes first, for the record.
 */
function acceptTimedOut(sock: Socket, s: SmcState): void {
  sendDecline(sock, s, DECLINE.TIMEOUT_CL);
  releaseHandshake(s);
  s.fallbackReason = DECLINE.TIMEOUT_CL;
  countSettled('failed');
  sock.destroy(connReset('SMC-R handshake: no Confirm from the client after our Accept'));
}

/**
 * Client sockets whose SMC-R Proposal went out on discovery's yes (cached or just answered):
 * the destination (address:port) that answer is kept under. A Proposal that gets no valid CLC
 * answer (withdrawSmcrYes) drops it, so the next connections ask again instead of sending a
 * Proposal to a server that no longer speaks SMC-R, for the rest of the answer's lifetime.
 * Only client sockets are ever in it: withdrawing for any other socket does nothing.
 */
const proposedOnYes = new WeakMap<SmcState, { dst: string; port: number }>();

function withdrawSmcrYes(s: SmcState): void {
  const d = proposedOnYes.get(s);
  if (!d) return;
  proposedOnYes.delete(s);
  forgetSmcrListener(d.dst, d.port);
}

/**
 * The peer's Decline reasons that say it has no SMC-R listener (any more) on that port. Not
 * NOSMCDEV: a softrdma SMC-R server whose policy said no to this connection declines with it,
 * and is still the SMC-R listener discovery found.
 */
function noSmcrListener(reason: number): boolean {
  return reason === DECLINE.PEERNOSMC || reason === DECLINE.NOSMCRDEV;
}

/**
 * The first 'connect' listener of a client socket: the application's own listeners and node:net's
 * start of reading come after it. An 'smc' listener that throws as the connection settles here
 * must not take those away (the socket would neither read nor tell the application it is
 * connected): its exception reaches 'uncaughtException' a tick later instead.
 */
export function onClientConnect(this: Socket): void {
  try {
    clientConnect(this);
  } catch (e) {
    rethrowLater(e);
  }
}

function clientConnect(sock: Socket): void {
  const s = sock[kSmc];
  if (!s || s.phase !== 'idle') return;
  // Connected: what this socket's query at connect() answers stands, wherever the connection goes.
  if (s.prefetch) claimSmcrPrefetch(s.prefetch.query);
  if (anyPolicy(s.opts.policy)) {
    const info = () => ({ role: 'client' as const, localAddress: sock.localAddress, localPort: sock.localPort, remoteAddress: sock.remoteAddress, remotePort: sock.remotePort });
    if (!policyAllows(s.opts.policy, info)) return settleTcp(sock, s, undefined, 'policy', true);
  }
  // The address and port we connected to are the peer's: without an IPv4 address given to
  // connect() (a name, IPv6), only a port some listener uses costs a getpeername.
  const remote = s.targetHost;
  const port = s.targetPort ?? peerName(sock).port;
  const ask = (): boolean | undefined => {
    try { return isSmcListener(remote ?? (() => peerName(sock).address), port); } catch (e) {
      if (e instanceof RuntimeDirError) {
        settleTcp(sock, s, DECLINE.NOSMCDEV, `runtime directory refused (${e.kind})`, true);
        return undefined;
      }
      return false;
    }
  };
  // Short connections cost more over SMC-D or SMC-R than over TCP: learned per peer (only a
  // peer that took SMC is ever learned). Asked first where it could say no (a peer on this
  // port is remembered; the key needs the peer's address, a getpeername when connect() was
  // given a name), so a connection that goes TCP by it pays for nothing else: not the listener
  // lookup, not the local address SMC-R's check reads.
  let key: string | undefined;
  if (mayLearnTcp(port)) {
    key = peerKey(remote ?? peerName(sock).address, port);
    if (!shouldTrySmc(key)) {
      s.learnKey = key;
      s.startedAt = performance.now();
      s.learnedTcp = true; // recorded as it closes (teardown), as an SMC-D connection is
      return settleTcp(sock, s, undefined, 'short connections to this peer: TCP is cheaper (learned; SOFTRDMA_SMC_LEARN=0 turns this off)', true);
    }
  }
  const listener = ask();
  if (listener === undefined) return;
  // Not a local SMC listener: SMC-R, where this end could have it (and the peer has it, which
  // discovery asks); otherwise TCP.
  const smcr = !listener && smcrMayTry(s.opts, () => unmapV4(sock.localAddress ?? ''), s.loopbackPeer);
  if (!listener && !smcr) return settleTcp(sock, s, DECLINE.PEERNOSMC, 'peer is not an SMC listener', true);
  // How this connection ends (its bytes, its life) teaches the rule.
  s.learnKey = key ?? peerKey(remote ?? peerName(sock).address, port);
  s.startedAt = performance.now();
  if (smcr) return discoverThenProposeSmcr(sock, s);
  // The listener's process may have died since the answer was cached (kill -9 changes no file),
  // and another process may hold the port now: it must not get a Proposal.
  if (!listenersStillRunning(port)) {
    const again = ask();
    if (again === undefined) return;
    if (!again) return settleTcp(sock, s, DECLINE.PEERNOSMC, 'peer is not an SMC listener', true);
  }
  try {
    s.device = defaultIsmDevice();
  } catch {
    return settleTcp(sock, s, DECLINE.NOSMCDEV, 'no ism device', true);
  }
  const local = unmapV4(sock.localAddress ?? '');
  const v4 = net.isIPv4(local);
  const prefix = { subnet: v4 ? subnetOf(local) : '0.0.0.0', prefixLength: v4 ? 8 : 0, ipv6Prefixes: v4 ? [] : [{ prefix: '::', length: 0 }] };
  const proof = proposalProof(s.device, sock);
  // Both possible (an SMC-R device on this non-loopback address): one v2 Proposal offers SMC-D
  // in typev1 and SMC-R in typev2, and the server chooses (SMC-D first, as Linux's
  // smc_listen_find_device), so a connection the server cannot take on SMC-D (no DMB left for
  // this peer) can still get SMC-R.
  const combined = v4 && !isLoopback(local) && smcrOf(s.opts) !== undefined
    ? smcrProposal(s, smcrOps(sock, s), { gid: s.device.gid, chid: s.device.chid, proof, prefix })
    : undefined;
  const proposal = combined !== undefined && typeof combined !== 'number' ? combined : encodeProposal({
    version: 1, path: SMC_TYPE_D, peerId: localSystemId(), smcdGid: s.device.gid, chid: s.device.chid, proof, ...prefix,
  });
  s.phase = 'proposing';
  readForHandshake(sock, s);
  rawWrite(sock, s, proposal);
  startTimer(sock, s);
  stayAwakeUntil(() => s.phase !== 'proposing');
}

/**
 * Client, at connect() to an IPv4 address and port (`local`: the address it binds, if given):
 * SMC-R discovery's query, if this connection will need one, goes now, beside the SYN, instead
 * of once 'connect' has come (its answer then arrives about when the handshake ends, and the
 * connection proposes one round trip sooner). Not where the connection could not go SMC-R by what
 * is known before it connects: a policy (which sees the connection only once it is up), a peer
 * the learned rule sends to TCP, a loopback peer.
 */
export function prefetchSmcrDiscovery(s: SmcState, host: string, port: number, local?: string): void {
  if (s.loopbackPeer || anyPolicy(s.opts.policy)) return;
  if (mayLearnTcp(port) && !wouldTrySmc(peerKey(host, port))) return;
  s.prefetch = smcrPrefetch(s.opts, host, port, local);
}

/**
 * The socket is released: if its connect() never reached 'connect' (refused, unreachable,
 * destroyed), a no its query brought, or will bring, is not kept (the server may not have been up
 * yet); nothing once a connection used it (clientConnect claims it).
 */
export function releasePrefetch(s: SmcState): void {
  const p = s.prefetch;
  if (!p) return;
  s.prefetch = undefined;
  abandonSmcrPrefetch(p.query);
}

/**
 * Client sockets waiting for an SMC-R discovery answer (phase 'proposing' with nothing sent, so
 * the application's writes are held): what ends the wait.
 */
const discoveryWaits = new WeakMap<SmcState, (answer: boolean | undefined, cancel?: boolean) => void>();

/**
 * Client: ask smcr/discovery.ts whether the peer has an SMC-R listener. A fresh yes proposes, a
 * fresh no (or a destination outside the subnet) stays TCP with no CLC byte sent; unknown waits
 * up to about one round trip for the query, then TCP for this connection (the answer is cached
 * for the next ones). Bytes from the server meanwhile end the wait: TCP.
 */
function discoverThenProposeSmcr(sock: Socket, s: SmcState): void {
  const dst = unmapV4(peerName(sock).address ?? '');
  const dport = s.targetPort ?? peerName(sock).port;
  // A yes asked since connect() holds for this connection only where connect() was given the
  // address (no lookup in between: its SYN went as the query did).
  const d = smcrDiscovery(smcrOps(sock, s), dst, dport, {
    tcpMs: s.connectAt > 0 ? performance.now() - s.connectAt : undefined,
    since: s.connectAt > 0 && s.targetHost !== undefined ? s.connectAt : undefined,
    counted: s.prefetch?.revalidated === true,
  });
  const onYes = () => { if (dport !== undefined) proposedOnYes.set(s, { dst, port: dport }); };
  if (d.go === 'propose') {
    if (d.cached) onYes();
    return proposeSmcr(sock, s);
  }
  if (d.go === 'tcp') return settleTcp(sock, s, d.reason ?? (d.outside ? DECLINE.DIFFPREFIX : DECLINE.PEERNOSMC), `SMC-R discovery: ${d.cause}`, true);
  s.phase = 'proposing';
  readForHandshake(sock, s); // bytes from the server end the wait
  let timer: NodeJS.Timeout | undefined;
  let stop: (() => void) | undefined;
  const end = (answer: boolean | undefined, cancel = false): void => {
    if (discoveryWaits.get(s) !== end) return;
    discoveryWaits.delete(s);
    clearTimeout(timer);
    stop?.();
    if (cancel) return;
    smcrWaitEnded(answer !== undefined);
    if (s.phase !== 'proposing' || sock.destroyed) return;
    if (answer) {
      onYes();
      return proposeSmcr(sock, s);
    }
    const f = d.query.failure;
    if (f) return settleTcp(sock, s, f.reason, `SMC-R: ${f.cause}`);
    // The wait ran out while this end's device was still coming up: nothing was asked yet.
    if (answer === undefined && d.query.awaitsDevice) return settleTcp(sock, s, DECLINE.NOSMCRDEV, `SMC-R: the local device was still coming up after ${d.ms.toFixed(1)} ms (TCP for this connection)`);
    settleTcp(sock, s, DECLINE.PEERNOSMC, answer === false ? 'SMC-R discovery: no SMC-R listener at the peer'
      : `SMC-R discovery: no answer within ${d.ms.toFixed(1)} ms (TCP for this connection; the answer is cached for the next)`);
  };
  discoveryWaits.set(s, end);
  timer = setTimeout(end, d.ms, undefined);
  timer.unref();
  stop = d.query.onDone((a) => end(a ?? false));
}

/** Client: propose SMC-R (smcr/clc-flow.ts), or stay on TCP when this end cannot. */
function proposeSmcr(sock: Socket, s: SmcState): void {
  const p = smcrProposal(s, smcrOps(sock, s));
  if (typeof p === 'number') {
    proposedOnYes.delete(s); // nothing sent
    return settleTcp(sock, s, p, `SMC-R: ${declineName(p)}`, true);
  }
  s.phase = 'proposing';
  readForHandshake(sock, s);
  rawWrite(sock, s, p);
  startTimer(sock, s);
}

/** What the SMC-R flow may do to this socket's handshake. */
function smcrOps(sock: Socket, s: SmcState): SmcrOps {
  return {
    opts: s.opts,
    role: s.role,
    localAddress: () => unmapV4(sock.localAddress ?? ''),
    remoteAddress: () => unmapV4(peerName(sock).address ?? ''),
    remotePort: () => s.targetPort ?? peerName(sock).port ?? 0,
    write: (buf) => rawWrite(sock, s, buf),
    decline: (reason) => sendDecline(sock, s, reason, true),
    restartTimer: () => startTimer(sock, s),
    stillPending: () => s.phase === 'proposing' || s.phase === 'srv-accepting' || s.phase === 'srv-wait',
    events: () => transportEvents(sock, s, 'SMC-R'),
    settleTcp: (reason, cause) => settleTcp(sock, s, reason, cause),
    settleSmc: (conn) => {
      restoreOwner(s);
      clearTimeout(s.timer);
      s.timer = undefined;
      watchTcpReset(sock, s);
      countSettled('SMCR');
      settleSmc(sock, s, conn, 'SMC-R');
    },
    peerDeclined: (reason) => {
      if (noSmcrListener(reason)) withdrawSmcrYes(s);
      s.peerDeclineReason = reason;
      settleTcp(sock, s, DECLINE.PEERDECL, `peer declined: ${declineName(reason)}`);
    },
    destroy: (message) => sock.destroy(connReset(message)),
    serverDecline: () => s.serverDecline,
    acceptSent: () => {
      // Our Accept is out: as an SMC-D Accept (acceptSmcd), the server's writes are held until
      // the handshake settles, and the timer bounds the wait for the Confirm (startTimer).
      s.phase = 'srv-accepting';
    },
  };
}

/**
 * Is the CLC frame at the start of buf one for the SMC-R flow: this socket is in an SMC-R
 * handshake, or (server) it starts with a version 2 header (only SMC-R clients send those).
 */
function smcrFrame(s: SmcState, buf: Buffer): boolean {
  if (inSmcrHandshake(s)) return true;
  return s.phase === 'srv-wait' && buf.length >= 8 && buf[4] === CLC_PROPOSAL && (buf[7]! >> 4) >= SMC_CLC_V2;
}

function subnetOf(a: string): string {
  // Both ends are on this host; the subnet only has to be plausible for a dissector.
  const [x] = a.split('.');
  return `${x}.0.0.0`;
}

interface ReadHandle { reading?: boolean; fd?: number; readStop(): number }

/**
 * Client: the handshake reads the TCP handle whatever the application's pause state. node:net
 * skips its first read for a socket paused at 'connect' (and its pause() stops an onread
 * socket's handle, socket.ts), so the server's answer would lie unread until the handshake
 * timed out. The CLC bytes never reach the application; endHandshakeRead gives node:net's
 * state back.
 */
function readForHandshake(sock: Socket, s: SmcState): void {
  s.clcRead = true;
  // node:net's own _read: it starts the handle as it would (tryReadStart), errors included.
  (net.Socket.prototype._read as (n: number) => void).call(sock, 0);
}

/**
 * The handshake is over. An onread socket paused meanwhile delivers nothing until resume()
 * (over SMC too). Over TCP the handle reads only if node:net's would by now: once the stream
 * asked for data (its Readable says so in `reading` until data come, and none came: CLC bytes
 * never reach it), and for an onread socket, not paused since. Stopping it is safe: node:net's
 * read() and resume() start a handle that does not read.
 */
function endHandshakeRead(sock: Socket, s: SmcState): void {
  s.clcRead = false;
  const paused = sock.isPaused();
  if (s.onread && paused) pauseOnread(s);
  if (sock.destroyed) return;
  const asked = (sock as unknown as { _readableState: { reading: boolean } })._readableState.reading;
  // Over SMC, TCP goes on being read for the peer's end, unless node:net would not be reading
  // it yet (paused before it asked for data) or not any more (an onread socket paused): a
  // reading handle keeps the process alive, which a paused node:net socket does not. Its _read
  // or resume() (socket.ts) starts the handle again.
  if (s.phase !== 'tcp' && !(paused && (!asked || s.onread))) return;
  if (asked && !(s.onread && paused)) return;
  const h = (sock as unknown as { _handle?: ReadHandle | null })._handle;
  if (!h?.reading || (typeof h.fd === 'number' && h.fd < 0)) return;
  h.reading = false;
  const err = h.readStop();
  if (err) sock.destroy(Object.assign(new Error(`read ${util.getSystemErrorName(err)}`), { errno: err, code: util.getSystemErrorName(err), syscall: 'read' }));
}

/**
 * Leave the handshake for TCP: release what it set up, flush held writes through TCP. From
 * the 'connect' event (deferFlush), the held writes go out after the application's own
 * 'connect' listeners have run, as node:net's queued writes do (their callbacks come after
 * the connect callback).
 */
export function settleTcp(sock: Socket, s: SmcState, reason: number | undefined, cause: string, deferFlush = false): void {
  restoreOwner(s);
  clearTimeout(s.timer);
  s.timer = undefined;
  s.phase = 'tcp';
  s.fallbackReason = reason;
  s.fallbackCause = cause;
  countSettled('TCP', reason, cause); // still listed by smcss (as TCP, with the reason) until it closes
  if (settled.active) traceSettled(sock, s, 'TCP', 'TCP');
  if (s.clcRead) endHandshakeRead(sock, s);
  try {
    if (sock.listenerCount('smc') > 0) sock.emit('smc', getSmcInfo(sock));
  } finally {
    // Also when an 'smc' listener throws (the exception goes on up): over node:net those bytes
    // and the FIN reached the kernel at write() and end().
    if (s.held || s.heldFinal) {
      // Deferred, they stay held until then: a destroy() in a 'connect' listener still sends them (close.ts).
      if (deferFlush) process.nextTick(flushHeld, sock, s);
      else flushHeld(sock, s);
    }
  }
}

function flushHeld(sock: Socket, s: SmcState): void {
  const held = s.held;
  s.held = undefined;
  const fin = s.heldFinal;
  s.heldFinal = undefined;
  if (held) {
    if (sock.destroyed) held.cb(destroyedError()); // not sent (close.ts sends what it can)
    else writeHeld(sock, held);
  }
  if (fin && !sock.destroyed) net.Socket.prototype._final.call(sock, fin);
}

/**
 * A held write through TCP, as node:net writes. The application made it before anything went
 * wrong; over TCP it would have been taken, and a reset met later by a read.
 */
function writeHeld(sock: Socket, held: Held): void {
  const cb = (err?: Error | null) => held.cb(err ? clcWriteError(err) : err);
  if (held.writev) net.Socket.prototype._writev!.call(sock, held.data as Array<{ chunk: unknown; encoding: BufferEncoding }>, cb);
  else net.Socket.prototype._write.call(sock, held.data, held.encoding, cb);
}

/**
 * destroy() with a write held by the handshake (close.ts, before node:net closes the handle).
 * Over node:net those bytes reached the kernel at write(), and the peer gets them. Where the
 * peer cannot be on SMC yet they go over TCP now: a client whose Proposal is unanswered
 * declines first (an SMC-D server goes to SMC-D only at our Confirm, an SMC-R one after it);
 * a server holding what may be the start of a Proposal writes as its handshake timer would;
 * a connection that settled on TCP a moment ago (its flush waits for a tick) just writes, and
 * one that settled on SMC (destroyed by an 'smc' listener) writes into the ring. Anywhere else
 * the peer may be on SMC already, and TCP bytes would be lost there: the write fails, as
 * node:net's writes that never went out do. True when a CLC reply may still come: the handle
 * should close gently. Every callback runs after destroy() returns, as node:net's (from libuv or
 * a tick), never inside it.
 */
export function writeHeldOnRelease(sock: Socket, s: SmcState): boolean {
  const held = s.held!;
  s.held = undefined;
  if (s.phase === 'smcd' && s.conn && !s.conn.released) {
    // Settled on SMC, its 'smc' listener destroyed the socket before the held write went out:
    // it goes into the ring now (what fits, as teardown's rule for a write in progress), with
    // the writes queued behind it, ahead of the close.
    const queued = takeQueuedWrites(sock);
    const parts = [heldBuffer(held), ...queued.map((w) => toBuffer(w.chunk, w.encoding))];
    smcWrite(sock, s, parts.length === 1 ? parts[0]! : Buffer.concat(parts), later((err) => {
      held.cb(err);
      for (const w of queued) w.callback(err);
    }));
    return false;
  }
  const unanswered = s.role === 'client' && s.phase === 'proposing' && s.clcIn === 0;
  if (!unanswered && s.phase !== 'srv-wait' && s.phase !== 'tcp') {
    later(held.cb)(destroyedError());
    return false;
  }
  // Not while SMC-R discovery was asked (nothing sent). CLC has no code for "the application
  // closed": Linux's generic one.
  const proposed = unanswered && s.clcOut > 0;
  // Taken before the held write completes: its callback, on a destroyed stream, fails the rest.
  const queued = takeQueuedWrites(sock);
  if (proposed) sendDecline(sock, s, DECLINE.INTERR);
  writeHeld(sock, { ...held, cb: later(held.cb) });
  if (queued.length > 0) {
    const chunks = queued.map((w) => ({ chunk: w.chunk, encoding: w.encoding }));
    net.Socket.prototype._writev!.call(sock, chunks, later((err) => {
      for (const w of queued) w.callback(err ? clcWriteError(err) : err);
    }));
  }
  return proposed;
}

/** A write callback that runs on the next tick, never inside the call that completes it (destroy()). */
function later(cb: (err?: Error | null) => void): (err?: Error | null) => void {
  return (err) => process.nextTick(cb, err);
}

/** A held write's bytes as one buffer. */
function heldBuffer(held: Held): Buffer {
  return held.writev
    ? Buffer.concat((held.data as Array<{ chunk: unknown; encoding: BufferEncoding }>).map((c) => toBuffer(c.chunk, c.encoding)))
    : toBuffer(held.data, held.encoding);
}

interface QueuedWrite { chunk: Buffer | string; encoding: BufferEncoding; callback: (err?: Error | null) => void }

/**
 * The writes node's Writable queued behind the held one, taken out of its buffer: over
 * node:net they reached the kernel at write() as well, so they go out with it (left there,
 * destroy() fails them with ERR_STREAM_DESTROYED). Nothing where the buffer is not as Node's
 * streams keep it (buffered from bufferedIndex, Node 20-24).
 */
function takeQueuedWrites(sock: Socket): QueuedWrite[] {
  const st = (sock as unknown as { _writableState?: { buffered?: QueuedWrite[]; bufferedIndex?: number; length: number; objectMode?: boolean } })._writableState;
  if (!st || st.objectMode || !Array.isArray(st.buffered) || typeof st.bufferedIndex !== 'number') return [];
  const rest = st.buffered.slice(st.bufferedIndex);
  if (rest.length === 0) return [];
  for (const w of rest) st.length -= w.chunk.length;
  st.buffered = [];
  st.bufferedIndex = 0;
  return rest;
}

/** node:net's error for a write a destroyed stream never sent. */
function destroyedError(): NodeJS.ErrnoException {
  return Object.assign(new Error('Cannot call write after a stream was destroyed'), { code: 'ERR_STREAM_DESTROYED' });
}

function fallbackAfterDecline(sock: Socket, s: SmcState, reason: number, sendOwn: boolean, cause: string): void {
  if (sendOwn) sendDecline(sock, s, reason);
  releaseHandshake(s);
  settleTcp(sock, s, reason, cause);
}

/** Give back what SMC-D's handshake set up (our DMB, the peer's mapping), when it ends without a transport. */
/**
 * A client socket released in the middle of an SMC-R handshake, after the server's Accept and
 * before our Confirm: the server is told with a Decline (Linux's generic INTERR: CLC has no
 * code for "the application closed"), so that it takes back the RMB its Accept offered.
 */
export function declineOnRelease(sock: Socket, s: SmcState): void {
  if (s.role === 'client' && smcrClientOwesConfirm(s) && (sock as unknown as { _handle: unknown })._handle) sendDecline(sock, s, DECLINE.INTERR, true);
}

export function releaseHandshake(s: SmcState): void {
  if (s.dmb && s.device) s.device.unregisterDmb(s.dmb);
  s.dmb = undefined;
  s.remote?.detach();
  s.remote = undefined;
  releaseSmcr(s);
}

export function onClcBytes(sock: Socket, s: SmcState, chunk: Buffer | null): void {
  const waiting = discoveryWaits.get(s);
  if (waiting) {
    // The server spoke (or closed) while we waited for SMC-R discovery: nothing was sent, TCP.
    waiting(undefined, true);
    settleTcpThenPush(sock, s, DECLINE.PEERNOSMC, chunk === null ? 'peer closed during SMC-R discovery' : 'server wrote first', chunk);
    return;
  }
  if (chunk === null) {
    // The peer closed during the handshake: nothing more to negotiate.
    const rest = s.clc;
    s.clc = undefined;
    smcrPeerEndedHandshake(s);
    if (s.phase === 'proposing' && s.clcIn === 0) withdrawSmcrYes(s);
    const midHandshake = s.role === 'client'
      ? s.phase === 'proposing' && s.clcOut > 0
      : s.phase === 'srv-accepting' || s.clcIn > 0;
    if (rest?.length && midHandshake) {
      // Our Proposal (client) or Accept (server; or the client's Proposal came) is out, and the
      // peer sent part of a CLC message, then its end: those are no data of the application's.
      // Linux's smc_clc_wait_msg fails the connect, and smc_listen_work hands such a connection
      // to no application (a zero-length read is ECONNRESET, a short message EPROTO); SMC-D
      // and SMC-R alike.
      releaseHandshake(s);
      s.fallbackReason = DECLINE.SYNCERR;
      countSettled('failed');
      sock.destroy(connReset('SMC handshake: the peer closed in the middle of a CLC message'));
      return;
    }
    releaseHandshake(s);
    settleTcpThenPush(sock, s, DECLINE.SYNCERR, 'peer closed during the handshake', ...(rest?.length ? [rest] : []), null);
    return;
  }
  s.clc = s.clc ? Buffer.concat([s.clc, chunk]) : chunk;
  try {
    readClcMessages(sock, s);
  } finally {
    // Whatever follows the handshake belongs to the stream it settled on (also when an 'smc'
    // listener threw in a settle above: the exception goes on up).
    const rest = s.clc;
    if (rest && (s.phase === 'tcp' || s.phase === 'smcd')) {
      s.clc = undefined;
      if (s.phase === 'tcp') {
        if (s.stripClc) stripThenPush(sock, s, rest);
        else sock.smcPush(rest);
      } else s.strayTcpBytes += rest.length;
    }
  }
}

/** The CLC messages at the start of s.clc, while the handshake is under way. */
function readClcMessages(sock: Socket, s: SmcState): void {
  while (s.clc && s.clc.length > 0 && (s.phase === 'proposing' || s.phase === 'srv-wait' || s.phase === 'srv-accepting')) {
    const buf: Buffer = s.clc;
    if (!mayBeClc(buf) && (s.phase === 'srv-wait' || s.phase === 'proposing')) {
      s.clc = undefined;
      releaseHandshake(s);
      if (s.clcIn > 0) {
        // A CLC message came already (the server's SMC-R Accept, the client's Proposal): bytes
        // that are not CLC are out of sync, not the peer's data, as Linux's smc_clc_wait_msg
        // (EPROTO). The peer may be on SMC-R already: TCP would split the connection.
        s.fallbackReason = DECLINE.SYNCERR;
        countSettled('failed');
        sock.destroy(connReset('SMC handshake out of sync: bytes that are no CLC message after one'));
        return;
      }
      // Not CLC at all: a plain client (server side) or a server that spoke first (client side).
      withdrawSmcrYes(s);
      settleTcpThenPush(sock, s, DECLINE.PEERNOSMC, s.role === 'server' ? 'peer did not propose SMC' : 'server wrote first', buf);
      return;
    }
    let len: number;
    const smcr = smcrFrame(s, buf);
    try {
      len = smcr ? clcFrameLengthAny(buf) : clcFrameLength(buf);
    } catch (e) {
      // A broken header. Server: the bytes are the client's data, not a proposal. Client:
      // after our Proposal the server must answer in CLC; anything else is out of sync.
      s.clc = undefined;
      if (s.phase === 'srv-wait') {
        settleTcpThenPush(sock, s, DECLINE.PEERNOSMC, 'peer did not propose SMC', buf);
      } else {
        if (s.clcIn === 0) withdrawSmcrYes(s);
        releaseHandshake(s);
        sock.destroy(connReset(`SMC handshake out of sync: ${(e as Error).message}`));
      }
      return;
    }
    if (len === 0) {
      // Need more bytes. The handshake timer bounds the wait (the server's starts here).
      if (!s.timer) startTimer(sock, s);
      return;
    }
    const frame = buf.subarray(0, len);
    s.clc = len < buf.length ? buf.subarray(len) : undefined;
    withSmcCounters(sock, s);
    s.clcIn += len;
    if (smcr) {
      try {
        const m = decodeSmcClc(frame);
        if (m.type === CLC_PROPOSAL && s.phase === 'srv-wait' && smcdIndicated(m.typeV1) && smcdFromCombined(sock, s, m)) continue;
        if (m.type === CLC_ACCEPT && !('qpn' in m) && s.role === 'client' && s.phase === 'proposing' && s.device) {
          // The server chose SMC-D from our combined Proposal (a v1 SMC-D Accept): SMC-D from here on.
          releaseSmcr(s);
          handleClc(sock, s, m);
          continue;
        }
        // The first answer to our Proposal is a CLC message no SMC-R server sends there (a plain
        // server echoing the Proposal back): out of sync (the flow declines SYNCERR), no SMC-R listener.
        if (s.clcIn === len && m.type !== CLC_ACCEPT && m.type !== CLC_DECLINE) withdrawSmcrYes(s);
        onSmcrClc(s, smcrOps(sock, s), m);
      } catch (e) {
        // An 'smc' listener that threw as the handshake settled: not the peer's fault, and
        // nothing left to decline; the exception goes on up.
        if (s.phase !== 'proposing' && s.phase !== 'srv-wait' && s.phase !== 'srv-accepting') throw e;
        const reason = e instanceof ClcError ? e.reason : DECLINE.SYNCERR;
        if (s.clcIn === len) withdrawSmcrYes(s); // the first answer was no valid CLC message
        fallbackAfterDecline(sock, s, reason, true, `malformed CLC message: ${(e as Error).message}`);
        break;
      }
      continue;
    }
    let msg: ClcMessage;
    try {
      msg = decodeClc(frame);
    } catch (e) {
      const reason = e instanceof ClcError ? e.reason : DECLINE.SYNCERR;
      fallbackAfterDecline(sock, s, reason, true, `malformed CLC message: ${(e as Error).message}`);
      break;
    }
    handleClc(sock, s, msg);
  }
}

function handleClc(sock: Socket, s: SmcState, m: ClcMessage): void {
  if (m.type === CLC_DECLINE) {
    s.peerDeclineReason = m.diagnosis;
    releaseHandshake(s);
    settleTcp(sock, s, DECLINE.PEERDECL, `peer declined: ${declineName(m.diagnosis)}`);
    return;
  }
  if (s.phase === 'srv-wait' && m.type === CLC_PROPOSAL) return onProposal(sock, s, m);
  if (s.phase === 'proposing' && m.type === CLC_ACCEPT) return onAccept(sock, s, m);
  if (s.phase === 'srv-accepting' && m.type === CLC_CONFIRM) return onConfirm(sock, s, m);
  fallbackAfterDecline(sock, s, DECLINE.SYNCERR, true, `unexpected CLC message type ${m.type} while ${s.phase}`);
}

/**
 * Server: a v2 Proposal that offers SMC-D (typev1) as well as SMC-R. SMC-D is taken first, as
 * Linux's smc_listen_find_device does; if it cannot be (another host or user: the proof fails;
 * no DMB left for this peer) and SMC-R is offered too, false: the SMC-R flow goes on. True when
 * this handled the Proposal (an SMC-D Accept, or a Decline when only SMC-D was offered).
 */
function smcdFromCombined(sock: Socket, s: SmcState, m: SmcProposal): boolean {
  const p: Proposal = {
    type: CLC_PROPOSAL, version: m.version, path: SMC_TYPE_D, peerId: m.peerId, smcdGid: m.ismGid, chid: m.ismChid,
    subnet: m.prefix?.subnet ?? '0.0.0.0', prefixLength: m.prefix?.prefixLength ?? 0, ipv6Prefixes: m.prefix?.ipv6Prefixes ?? [],
    ...(m.proof ? { proof: m.proof } : {}),
  };
  const reason = smcdServerCheck(sock, s, p);
  if (reason && smcrIndicated(m.typeV2) && !s.serverDecline) {
    s.device = undefined;
    return false;
  }
  if (reason) {
    fallbackAfterDecline(sock, s, reason, true, `declined: ${declineName(reason)}`);
    return true;
  }
  acceptSmcd(sock, s, p);
  return true;
}

/** Server: can this SMC-D Proposal be taken (0; a DMB is then held for it), else the Decline reason. */
function smcdServerCheck(sock: Socket, s: SmcState, p: Proposal): number {
  let reason = s.serverDecline;
  if (!reason && p.path !== SMC_TYPE_D && p.path !== SMC_TYPE_B) reason = DECLINE.MODEUNSUPP;
  if (!reason) {
    try { s.device = defaultIsmDevice(); } catch { reason = DECLINE.NOSMCDEV; }
  }
  if (!reason) reason = checkProposal(s.device!, p, sock); // before anything is allocated (peer-proof.ts)
  if (!reason) {
    s.peerGid = p.smcdGid;
    try { s.dmb = takeDmb(s.device!, p.smcdGid, s.opts.bufferSize); } catch { reason = DECLINE.MAX_DMB; }
  }
  return reason;
}

function onProposal(sock: Socket, s: SmcState, p: Proposal): void {
  const reason = smcdServerCheck(sock, s, p);
  if (reason) return fallbackAfterDecline(sock, s, reason, true, `declined: ${declineName(reason)}`);
  acceptSmcd(sock, s, p);
}

function acceptSmcd(sock: Socket, s: SmcState, p: Proposal): void {
  s.proposal = p;
  s.phase = 'srv-accepting';
  rawWrite(sock, s, encodeAcceptConfirm({
    type: CLC_ACCEPT, version: 1, firstContact: true, gid: s.device!.gid, token: s.dmb!.token, dmbeIndex: 0,
    dmbeSize: compressBufSize(s.opts.bufferSize), linkId: 0,
  }));
  startTimer(sock, s);
  stayAwakeUntil(() => s.phase !== 'srv-accepting');
}

function attachPeer(s: SmcState, m: AcceptConfirm): number {
  // A DMB that another connection of ours writes into, or one of our own not handed out for a
  // connection with ourselves (another peer's ring), is not this connection's: our writes would
  // land in another connection. The peer is out of step with us, or hostile.
  if (s.device!.dmbTaken(m.gid, m.token) !== undefined) return DECLINE.SYNCERR;
  try {
    s.remote = s.device!.attachDmb(m.gid, m.token);
  } catch {
    return DECLINE.NOSMCDDEV;
  }
  if (s.remote.size !== uncompressBufSize(m.dmbeSize)) return DECLINE.SYNCERR;
  return 0;
}

function onAccept(sock: Socket, s: SmcState, m: AcceptConfirm): void {
  let reason = attachPeer(s, m);
  if (!reason) {
    s.peerGid = m.gid;
    try { s.dmb = takeDmb(s.device!, m.gid, s.opts.bufferSize); } catch { reason = DECLINE.MAX_DMB; }
  }
  if (reason) return fallbackAfterDecline(sock, s, reason, true, `declined: ${declineName(reason)}`);
  rawWrite(sock, s, encodeAcceptConfirm({
    type: CLC_CONFIRM, version: 1, firstContact: m.firstContact, gid: s.device!.gid, token: s.dmb!.token, dmbeIndex: 0,
    dmbeSize: compressBufSize(s.opts.bufferSize), linkId: 0,
  }));
  startSmcd(sock, s);
}

function onConfirm(sock: Socket, s: SmcState, m: AcceptConfirm): void {
  let reason = m.gid === s.proposal!.smcdGid ? 0 : DECLINE.SYNCERR;
  if (!reason) reason = attachPeer(s, m);
  if (reason) {
    // The client went to SMC-D when it sent its Confirm and may have written data into our
    // DMB already: falling back now would lose it. Decline (for the record) and reset.
    sendDecline(sock, s, reason);
    releaseHandshake(s);
    s.fallbackReason = reason;
    countSettled('failed');
    sock.destroy(connReset(`SMC handshake failed after the client confirmed: ${declineName(reason)}`));
    return;
  }
  startSmcd(sock, s);
}

/** SMC-D's transport: the rings in the two DMBs the handshake set up. */
function startSmcd(sock: Socket, s: SmcState): void {
  restoreOwner(s);
  clearTimeout(s.timer);
  s.timer = undefined;
  const conn = new SmcdConnection(s.dmb!, s.remote!, transportEvents(sock, s, 'SMC-D'), (d) => returnDmb(s.device!, s.peerGid!, d));
  // kick in finally: a throwing application callback inside process() must not leave the connection unpolled.
  s.dmb!.onSignal = () => { if (!conn.released) { try { conn.process(); } finally { kick(conn); } } };
  watchTcpReset(sock, s);
  countSettled('SMCD');
  settleSmc(sock, s, conn, 'SMC-D');
}

/**
 * The handshake settled on SMC over conn: from now on the socket's data goes through it.
 * Writes and an end() held during the handshake go first.
 */
function settleSmc(sock: Socket, s: SmcState, conn: SmcTransport, label: string): void {
  withSmcCounters(sock, s);
  s.conn = conn;
  s.phase = 'smcd';
  if (s.clcRead) endHandshakeRead(sock, s);
  if (settled.active) traceSettled(sock, s, conn.mode, label);
  try {
    sock.emit('smc', getSmcInfo(sock));
  } finally {
    // An application callback that threw ('smc', 'data', a write callback) must not lose the
    // writes and end() held during the handshake nor leave the connection unpolled: the
    // exception goes on up, the rest goes on.
    try {
      const held = s.held;
      s.held = undefined;
      if (held) smcWrite(sock, s, heldBuffer(held), held.cb);
      const fin = s.heldFinal;
      s.heldFinal = undefined;
      if (fin) sock._final(fin);
      // The client writes right after its Confirm: the server may find data waiting already.
      if (s.role === 'server') conn.process();
    } finally {
      conn.kick();
    }
  }
}

export function stripThenPush(sock: Socket, s: SmcState, chunk: Buffer | null): boolean {
  if (chunk === null) {
    s.stripClc = false;
    const rest = s.clc;
    s.clc = undefined;
    if (rest?.length) sock.smcPush(rest);
    return sock.smcPush(null);
  }
  const buf = s.clc ? Buffer.concat([s.clc, chunk]) : chunk;
  s.clc = undefined;
  if (!mayBeClc(buf)) {
    s.stripClc = false;
    return sock.smcPush(buf);
  }
  let len = 0;
  try { len = clcFrameLengthAny(buf); } catch { s.stripClc = false; return sock.smcPush(buf); }
  if (len === 0) {
    s.clc = buf;
    if (!s.timer) startTimer(sock, s);
    return true;
  }
  // A late Accept or Confirm may be followed by the peer's own Decline: when both ends time
  // out at once, each sends one before it reads the other's. So stripping goes on after any
  // message but a Decline, which is the last CLC message a peer sends; what follows that does
  // not look like CLC is data.
  s.stripClc = buf[4] !== CLC_DECLINE;
  withSmcCounters(sock, s);
  s.clcIn += len;
  if (len >= buf.length) return true;
  return s.stripClc ? stripThenPush(sock, s, buf.subarray(len)) : sock.smcPush(buf.subarray(len));
}

/** The addresses cost system calls: built only when someone listens. */
function traceSettled(sock: Socket, s: SmcState, mode: string, label: string): void {
  settled({
    socket: sock, mode, label, role: s.role, reason: s.fallbackReason, cause: s.fallbackCause,
    localAddress: sock.localAddress, localPort: sock.localPort, remoteAddress: sock.remoteAddress, remotePort: sock.remotePort,
  });
}
