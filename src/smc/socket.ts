// softrdma/smc Socket: a node:net Socket that negotiates SMC-D over its TCP connection and,
// when both ends agree, carries the byte stream through shared memory. Until then, and for
// ever when either side cannot, it is the TCP socket it extends: a fallback connection runs
// node:net's own code, with one branch per call in front of it.
//
// Handshake (RFC 7609 CLC over the TCP connection, which stays open for the connection's
// life and tells us when the peer process dies):
//   client                                   server
//   ── Proposal (ISM GID) ─────────────────►  registers a DMB
//   ◄───────────────── Accept (GID, token) ─
//   attaches server DMB, registers own DMB
//   ── Confirm (GID, token) ──────────────►  attaches client DMB
//   data flows through the DMBs; a Decline at any step means plain TCP from there on.

import net from 'node:net';
import { Duplex } from 'node:stream';
import util from 'node:util';
import { defaultIsmDevice, type IsmDevice, type Dmb, type RemoteDmb } from '../ism/device.js';
import {
  CLC_ACCEPT, CLC_CONFIRM, CLC_DECLINE, CLC_PROPOSAL, ClcError, DECLINE, SMC_TYPE_B, SMC_TYPE_D,
  clcFrameLength, compressBufSize, decodeClc, declineName, encodeAcceptConfirm, encodeDecline, encodeProposal,
  localSystemId, mayBeClc, uncompressBufSize, type AcceptConfirm, type ClcMessage, type Proposal,
} from './clc.js';
import { isSmcListener, unmapV4 } from './discovery.js';
import { RuntimeDirError } from '../ism/runtime-dir.js';
import { checkProposal, proposalProof } from './peer-proof.js';
import { returnDmb, takeDmb } from './dmb-pool.js';
import { forget, kick, stayAwakeUntil } from './poller.js';
import { policyAllows } from './policy.js';
import { SmcdConnection } from './smcd-connection.js';
import { connectTarget } from './connect-args.js';
import { resolveSmcOptions, type ResolvedSmcOptions, type SmcSocketOptions } from './options.js';
import { countSettled, track, untrack } from './status.js';

/**
 * A socket's SMC state. Symbol.for: two copies of softrdma in one process (an application's
 * own dependency and the one smc-run preloads) see the same state on a socket.
 */
export const kSmc = Symbol.for('softrdma.smc');

const nodeConnect = net.Socket.prototype.connect;

// NODE_DEBUG=smc: one line per connection when it settles on SMC-D or TCP, with the cause.
const debug = util.debuglog('smc');
/** NODE_DEBUG is read once at startup; its `enabled` getter costs ~1 us, on every connection. */
const debugOn = debug.enabled;

export type SmcMode = 'SMCD' | 'SMCR' | 'TCP';

export interface SmcInfo {
  mode: SmcMode;
  /** The handshake has not settled yet. */
  pending: boolean;
  /** Why this end did not use SMC (an SMC_CLC_DECL_* code), when it fell back. */
  fallbackReason?: number;
  /** The reason code of a Decline received from the peer. */
  peerDeclineReason?: number;
  /** In words: 'peer is not an SMC listener', 'server wrote first', 'disabled', 'policy', ... */
  fallbackCause?: string;
  /** Bytes carried over shared memory. */
  smcBytesSent: number;
  smcBytesReceived: number;
  /** DMB sizes (ours, which the peer writes into, and the peer's). */
  bufferSize?: number;
  peerBufferSize?: number;
}

type Phase = 'idle' | 'tcp' | 'proposing' | 'srv-wait' | 'srv-accepting' | 'smcd' | 'closed';

interface Held {
  writev: boolean;
  data: unknown;
  encoding: BufferEncoding;
  cb: (err?: Error | null) => void;
}

interface SmcState {
  role: 'client' | 'server';
  phase: Phase;
  opts: ResolvedSmcOptions;
  clc: Buffer | undefined;
  held: Held | undefined;
  heldFinal: ((err?: Error | null) => void) | undefined;
  stripClc: boolean;
  serverDecline: number;
  fallbackReason: number | undefined;
  peerDeclineReason: number | undefined;
  fallbackCause: string | undefined;
  device: IsmDevice | undefined;
  /** The peer's ism GID, once known: DMBs are reused only between the same two devices. */
  peerGid: bigint | undefined;
  dmb: Dmb | undefined;
  remote: RemoteDmb | undefined;
  conn: SmcdConnection | undefined;
  proposal: Proposal | undefined;
  timer: NodeJS.Timeout | undefined;
  pending: { buf: Buffer; off: number; cb: (err?: Error | null) => void } | undefined;
  clcIn: number;
  clcOut: number;
  strayTcpBytes: number;
  writeDone: boolean;
  wroteAfterPeerClosed: boolean;
  /** The port connect() was given (client). */
  targetPort: number | undefined;
  /** bytesRead/bytesWritten are Socket's (its instances; adopted sockets once withSmcCounters ran). */
  counters: boolean;
  /** Server: puts the handle's owner back as a plain property once the handshake settled (followOwner). */
  ownerRestore: (() => void) | undefined;
}

function newState(role: 'client' | 'server', opts: ResolvedSmcOptions, counters: boolean): SmcState {
  return {
    role, phase: role === 'client' ? 'idle' : 'srv-wait', opts, clc: undefined, held: undefined, heldFinal: undefined,
    stripClc: false, serverDecline: 0, fallbackReason: undefined, peerDeclineReason: undefined, fallbackCause: undefined,
    device: undefined, peerGid: undefined, dmb: undefined, remote: undefined, conn: undefined, proposal: undefined, timer: undefined,
    pending: undefined, clcIn: 0, clcOut: 0, strayTcpBytes: 0, writeDone: false, wroteAfterPeerClosed: false,
    targetPort: undefined, counters, ownerRestore: undefined,
  };
}

/**
 * Give a node:net socket (one node:net's server accepted, or one the auto preload is about
 * to connect) Socket's behaviour: its overriding methods become own properties, as node's
 * streams themselves do with options.write or options.read. Swapping the prototype instead
 * (Object.setPrototypeOf) made node's stream code run ~100 us of CPU slower per connection
 * afterwards, for every connection, SMC or not (bench/fallback.ts, server side). One named
 * store per method: a loop of keyed stores plus Object.defineProperty for the counters took
 * ~2 us a socket, on every accepted connection. The byte counters come later, and only to
 * sockets whose counts come to differ from TCP's (withSmcCounters).
 */
function graft(sock: net.Socket): Socket {
  const o = sock as Socket;
  const p = Socket.prototype;
  o.connect = p.connect; o.push = p.push; o.smcPush = p.smcPush; o._write = p._write; o._writev = p._writev;
  o._final = p._final; o._read = p._read; o.pause = p.pause; o.resume = p.resume; o._destroy = p._destroy;
  return o;
}

/**
 * Before an adopted socket's byte counts leave TCP's (CLC bytes sent or received, writes held
 * during the handshake, data through shared memory): give it Socket's bytesRead/bytesWritten.
 */
function withSmcCounters(sock: Socket, s: SmcState): void {
  if (s.counters) return;
  s.counters = true;
  Object.defineProperty(sock, 'bytesRead', counterAccessors.bytesRead);
  Object.defineProperty(sock, 'bytesWritten', counterAccessors.bytesWritten);
}

/** node:net's owner_symbol (the handle's link to the Socket its reads go to), found once. */
let ownerSymbol: symbol | null | undefined;

/**
 * An application may wrap an accepted handle in a new net.Socket({ handle }) (Node's own tests
 * do); the new Socket then owns the handle's reads, and a Proposal still on its way would reach
 * it as data. Until the handshake settles, a new owner becomes an SMC socket sharing this
 * state, so the handshake goes on with it; then the handle's owner is a plain property again.
 */
function followOwner(sock: Socket, s: SmcState, handle: object): void {
  ownerSymbol ??= Object.getOwnPropertySymbols(handle).find((k) => k.description === 'owner_symbol') ?? null;
  const key = ownerSymbol;
  const h = handle as Record<symbol, unknown>;
  if (!key || h[key] !== sock) return;
  let owner: unknown = sock;
  Object.defineProperty(h, key, {
    configurable: true,
    get: () => owner,
    set: (v: unknown) => {
      owner = v;
      if (v !== sock && v instanceof net.Socket && !(kSmc in v) && (s.phase === 'srv-wait' || s.phase === 'srv-accepting')) {
        graft(v)[kSmc] = s;
      }
    },
  });
  s.ownerRestore = () => { Object.defineProperty(h, key, { value: owner, writable: true, configurable: true, enumerable: true }); };
}

function restoreOwner(s: SmcState): void {
  const r = s.ownerRestore;
  if (r) { s.ownerRestore = undefined; r(); }
}

/** Is this destroy() resetAndDestroy()'s (node:net sets the flag before it destroys)? */
function resetting(sock: net.Socket): boolean {
  return (sock as unknown as { resetAndClosing?: boolean }).resetAndClosing === true;
}

function closedBeforeConnection(): NodeJS.ErrnoException {
  return Object.assign(new Error('Socket closed before the connection was established'), { code: 'ERR_SOCKET_CLOSED_BEFORE_CONNECTION' });
}

function connReset(message: string): NodeJS.ErrnoException {
  return Object.assign(new Error(message), { code: 'ECONNRESET', errno: -104, syscall: 'read' });
}

export class Socket extends net.Socket {
  declare [kSmc]: SmcState | undefined;

  constructor(options?: net.SocketConstructorOpts & SmcSocketOptions) {
    super(options);
    this[kSmc] = newState('client', resolveSmcOptions(options), true);
  }

  /** @internal Make an accepted node:net socket an SMC server socket. */
  static adopt(sock: net.Socket, opts: ResolvedSmcOptions): Socket {
    const s = graft(sock);
    const st = newState('server', opts, false);
    s[kSmc] = st;
    const info = () => ({ role: 'server' as const, localAddress: s.localAddress, localPort: s.localPort, remoteAddress: s.remoteAddress, remotePort: s.remotePort });
    // A listener known to speak SMC must still answer a Proposal, even when it will not use SMC.
    // node:http hands the TCP handle to its C++ parser unless it was consumed already; the
    // CLC bytes must pass through push() first, so claim the handle for the JS path.
    const handle = (s as unknown as { _handle?: { _consumed?: boolean } })._handle;
    if (handle) handle._consumed = true;
    if (!opts.enabled) st.serverDecline = DECLINE.NOSMCDEV;
    else if (!policyAllows(opts.policy, info)) st.serverDecline = DECLINE.NOSMCDEV;
    if (handle) followOwner(s, st, handle);
    track(s);
    return s;
  }

  /** @internal Give a plain client socket SMC behaviour before it connects (the auto preload). */
  static adoptClient(sock: net.Socket, opts: ResolvedSmcOptions): Socket {
    const s = graft(sock);
    s[kSmc] = newState('client', opts, false);
    return s;
  }

  /** An adopted node:net socket (see graft()) is an SMC Socket too; for subclasses, the usual rule. */
  static override [Symbol.hasInstance](x: unknown): boolean {
    if (Function.prototype[Symbol.hasInstance].call(this, x)) return true;
    return this === Socket && typeof x === 'object' && x !== null && kSmc in x && x instanceof net.Socket;
  }

  override connect(...args: unknown[]): this {
    let s = this[kSmc];
    // node:net lets a closed socket connect again; so does SMC, with a fresh handshake.
    if (s && s.phase === 'closed' && s.role === 'client') s = this[kSmc] = newState('client', s.opts, s.counters);
    if (s && s.phase === 'idle') {
      const target = connectTarget(args);
      s.targetPort = target.port;
      if (!s.opts.enabled || target.ipc) settleTcp(this, s, undefined, s.opts.enabled ? 'not an IP connection' : 'disabled');
      else {
        this.prependOnceListener('connect', onClientConnect);
        track(this);
      }
    }
    // node:net's own connect as it was when this module loaded, not whatever net.Socket's
    // prototype holds now: APM tools and Node's tests wrap Socket.prototype.connect and count
    // one call per connect, and the auto preload's wrapper has run already.
    return (nodeConnect as (...a: unknown[]) => this).apply(this, args);
  }

  override push(chunk: unknown, encoding?: BufferEncoding): boolean {
    const s = this[kSmc];
    if (!s || (s.phase === 'tcp' && !s.stripClc) || s.phase === 'idle') return super.push(chunk, encoding);
    if (s.phase === 'tcp') return stripThenPush(this, s, chunk as Buffer | null);
    if (s.phase === 'smcd' || s.phase === 'closed') {
      if (chunk === null) onTcpEndWhileSmc(this, s);
      else s.strayTcpBytes += (chunk as Buffer).length;
      return true;
    }
    onClcBytes(this, s, chunk as Buffer | null);
    return true;
  }

  /** @internal data from shared memory, or the end of it */
  smcPush(chunk: Buffer | null): boolean {
    return super.push(chunk);
  }

  override _write(data: unknown, encoding: BufferEncoding, cb: (err?: Error | null) => void): void {
    const s = this[kSmc];
    if (!s || s.phase === 'tcp' || s.phase === 'idle' && !this.connecting) return super._write(data, encoding, cb);
    if (s.phase === 'smcd') return smcWrite(this, s, toBuffer(data, encoding), cb);
    if (serverSpeaksFirst(this, s) || handleGone(this, s)) return super._write(data, encoding, cb);
    withSmcCounters(this, s);
    s.held = { writev: false, data, encoding, cb };
  }

  override _writev(chunks: Array<{ chunk: unknown; encoding: BufferEncoding }>, cb: (err?: Error | null) => void): void {
    const s = this[kSmc];
    if (!s || s.phase === 'tcp' || s.phase === 'idle' && !this.connecting) return super._writev!(chunks, cb);
    if (s.phase === 'smcd') return smcWrite(this, s, Buffer.concat(chunks.map((c) => toBuffer(c.chunk, c.encoding))), cb);
    if (serverSpeaksFirst(this, s) || handleGone(this, s)) return super._writev!(chunks, cb);
    withSmcCounters(this, s);
    s.held = { writev: true, data: chunks, encoding: 'buffer' as BufferEncoding, cb };
  }

  override _final(cb: (err?: Error | null) => void): void {
    const s = this[kSmc];
    if (!s || s.phase === 'tcp' || s.phase === 'idle' || s.phase === 'closed') return super._final(cb);
    if (s.phase === 'smcd') {
      s.writeDone = true;
      s.conn!.closeWrite();
      return super._final(cb); // TCP FIN after peer_done_writing: the peer checks the CDC first
    }
    // A server that ends before anything arrived speaks first, as one that writes: TCP.
    if (serverSpeaksFirst(this, s)) return super._final(cb);
    s.heldFinal = cb;
  }

  override _read(n: number): void {
    const s = this[kSmc];
    if (s?.phase === 'smcd') {
      if (s.conn!.resume()) kick(s.conn!);
      return;
    }
    super._read(n);
  }

  override pause(): this {
    if (this[kSmc]?.phase === 'smcd') return Duplex.prototype.pause.call(this) as this;
    return super.pause();
  }

  override resume(): this {
    if (this[kSmc]?.phase === 'smcd') return Duplex.prototype.resume.call(this) as this;
    return super.resume();
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    const s = this[kSmc];
    if (s) {
      const linger = s.role === 'server' && (s.phase === 'srv-wait' || s.phase === 'srv-accepting') && !resetting(this);
      teardown(this, s);
      if (linger) lingerClose(this, s.opts.timeout);
    }
    super._destroy(err, cb);
  }
}

// @types/node declares bytesRead/bytesWritten as fields; in node they are accessors, which
// SMC mode replaces (the TCP counters would count the CLC handshake, and nothing after it).
const tcpBytesRead = Object.getOwnPropertyDescriptor(net.Socket.prototype, 'bytesRead')!.get!;
const tcpBytesWritten = Object.getOwnPropertyDescriptor(net.Socket.prototype, 'bytesWritten')!.get!;
Object.defineProperty(Socket.prototype, 'bytesRead', {
  configurable: true,
  get(this: Socket): number {
    const s = this[kSmc];
    if (s?.conn) return s.conn.bytesReceived;
    return (tcpBytesRead.call(this) as number) - (s?.clcIn ?? 0);
  },
});
Object.defineProperty(Socket.prototype, 'bytesWritten', {
  configurable: true,
  get(this: Socket): number | undefined {
    const s = this[kSmc];
    if (s?.conn) return s.conn.bytesSent + (s.pending ? s.pending.buf.length - s.pending.off : 0) + this.writableLength;
    const b = tcpBytesWritten.call(this) as number | undefined;
    // node counts a write queued while connecting (its _pendingData); ours are held here.
    return b === undefined ? b : b - (s?.clcOut ?? 0) + heldBytes(s?.held);
  },
});

/** Socket's byte counters, for adopted sockets that need them (withSmcCounters). */
const counterAccessors = {
  bytesRead: Object.getOwnPropertyDescriptor(Socket.prototype, 'bytesRead')!,
  bytesWritten: Object.getOwnPropertyDescriptor(Socket.prototype, 'bytesWritten')!,
};

function heldBytes(h: Held | undefined): number {
  if (!h) return 0;
  const size = (chunk: unknown, enc: BufferEncoding): number => (typeof chunk === 'string' ? Buffer.byteLength(chunk, enc) : (chunk as Uint8Array).byteLength);
  if (!h.writev) return size(h.data, h.encoding);
  return (h.data as Array<{ chunk: unknown; encoding: BufferEncoding }>).reduce((n, c) => n + size(c.chunk, c.encoding), 0);
}

function unrefTimer(sock: Socket): void {
  (sock as unknown as { _unrefTimer(): void })._unrefTimer();
}

/**
 * A server application that writes before any byte arrived (an SMTP-style banner) commits
 * the connection to TCP. A Proposal that may still arrive is swallowed; the client falls
 * back when it reads our bytes.
 */
function serverSpeaksFirst(sock: Socket, s: SmcState): boolean {
  if (s.phase !== 'srv-wait' || s.clc) return false;
  settleTcp(sock, s, DECLINE.PEERNOSMC, 'server wrote first');
  s.stripClc = true;
  return true;
}

function toBuffer(data: unknown, encoding: BufferEncoding): Buffer {
  if (Buffer.isBuffer(data)) return data;
  if (typeof data === 'string') return Buffer.from(data, encoding);
  if (data instanceof Uint8Array) return Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  throw new TypeError('unsupported chunk type');
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
function handleGone(sock: Socket, s: SmcState): boolean {
  if (s.phase === 'idle') return false; // still connecting: node:net creates the handle late
  const h = (sock as unknown as { _handle?: { fd?: number } | null })._handle;
  if (h && !(typeof h.fd === 'number' && h.fd < 0)) return false;
  releaseHandshake(s);
  settleTcp(sock, s, undefined, 'TCP handle closed by the application');
  return true;
}

function sendDecline(sock: Socket, s: SmcState, reason: number): void {
  rawWrite(sock, s, encodeDecline({ diagnosis: reason, smcd: true }));
}

function startTimer(sock: Socket, s: SmcState): void {
  clearTimeout(s.timer);
  s.timer = setTimeout(() => {
    s.timer = undefined;
    if (s.phase === 'proposing' || s.phase === 'srv-accepting') {
      sendDecline(sock, s, DECLINE.TIMEOUT_CL);
      releaseHandshake(s);
      settleTcp(sock, s, DECLINE.TIMEOUT_CL, 'handshake timed out');
      s.stripClc = true; // a late Accept/Confirm is not application data
      if (s.clc) startTimer(sock, s); // part of one may be here already: bound that wait too
    } else if (s.phase === 'srv-wait' && s.clc) {
      // The first bytes looked like the start of a CLC message and no more came: they are the
      // client's data. Deliver them, and let the server's held writes go out.
      const got = s.clc;
      s.clc = undefined;
      settleTcp(sock, s, DECLINE.PEERNOSMC, 'incomplete CLC message: taken as TCP data');
      sock.smcPush(got);
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

function onClientConnect(this: Socket): void {
  const sock = this;
  const s = sock[kSmc];
  if (!s || s.phase !== 'idle') return;
  const info = () => ({ role: 'client' as const, localAddress: sock.localAddress, localPort: sock.localPort, remoteAddress: sock.remoteAddress, remotePort: sock.remotePort });
  if (!policyAllows(s.opts.policy, info)) return settleTcp(sock, s, undefined, 'policy', true);
  let listener = false;
  // The port we connected to is the peer's: only a port some listener uses costs a getpeername.
  try { listener = isSmcListener(() => sock.remoteAddress, s.targetPort ?? sock.remotePort); } catch (e) {
    if (e instanceof RuntimeDirError) return settleTcp(sock, s, DECLINE.NOSMCDEV, `runtime directory refused (${e.kind})`, true);
    listener = false;
  }
  if (!listener) return settleTcp(sock, s, DECLINE.PEERNOSMC, 'peer is not an SMC listener', true);
  try {
    s.device = defaultIsmDevice();
  } catch {
    return settleTcp(sock, s, DECLINE.NOSMCDEV, 'no ism device', true);
  }
  const local = unmapV4(sock.localAddress ?? '');
  const v4 = net.isIPv4(local);
  const proposal = encodeProposal({
    version: 1, path: SMC_TYPE_D, peerId: localSystemId(), smcdGid: s.device.gid, chid: s.device.chid, proof: proposalProof(s.device, sock),
    subnet: v4 ? subnetOf(local) : '0.0.0.0', prefixLength: v4 ? 8 : 0,
    ipv6Prefixes: v4 ? [] : [{ prefix: '::', length: 0 }],
  });
  s.phase = 'proposing';
  rawWrite(sock, s, proposal);
  startTimer(sock, s);
  stayAwakeUntil(() => s.phase !== 'proposing');
}

function subnetOf(a: string): string {
  // Both ends are on this host; the subnet only has to be plausible for a dissector.
  const [x] = a.split('.');
  return `${x}.0.0.0`;
}

/**
 * Leave the handshake for TCP: release what it set up, flush held writes through TCP. From
 * the 'connect' event (deferFlush), the held writes go out after the application's own
 * 'connect' listeners have run, as node:net's queued writes do (their callbacks come after
 * the connect callback).
 */
function settleTcp(sock: Socket, s: SmcState, reason: number | undefined, cause: string, deferFlush = false): void {
  restoreOwner(s);
  clearTimeout(s.timer);
  s.timer = undefined;
  s.phase = 'tcp';
  s.fallbackReason = reason;
  s.fallbackCause = cause;
  countSettled('TCP', reason, cause); // still listed by smcss (as TCP, with the reason) until it closes
  if (debugOn) debug('%s %s:%s -> %s:%s settled on TCP: %s', s.role, sock.localAddress, sock.localPort, sock.remoteAddress, sock.remotePort, cause);
  const held = s.held;
  s.held = undefined;
  const fin = s.heldFinal;
  s.heldFinal = undefined;
  if (sock.listenerCount('smc') > 0) sock.emit('smc', getSmcInfo(sock));
  if (!held && !fin) return;
  if (deferFlush) process.nextTick(flushHeld, sock, held, fin);
  else flushHeld(sock, held, fin);
}

function flushHeld(sock: Socket, held: Held | undefined, fin: ((err?: Error | null) => void) | undefined): void {
  if (held) {
    // The application made these writes before anything went wrong; over TCP they would have
    // been taken, and a reset met later by a read.
    const cb = (err?: Error | null) => held.cb(err ? clcWriteError(err) : err);
    if (sock.destroyed) cb();
    else if (held.writev) net.Socket.prototype._writev!.call(sock, held.data as Array<{ chunk: unknown; encoding: BufferEncoding }>, cb);
    else net.Socket.prototype._write.call(sock, held.data, held.encoding, cb);
  }
  if (fin && !sock.destroyed) net.Socket.prototype._final.call(sock, fin);
}

function fallbackAfterDecline(sock: Socket, s: SmcState, reason: number, sendOwn: boolean, cause: string): void {
  if (sendOwn) sendDecline(sock, s, reason);
  releaseHandshake(s);
  settleTcp(sock, s, reason, cause);
}

function releaseHandshake(s: SmcState): void {
  if (s.dmb && s.device) s.device.unregisterDmb(s.dmb);
  s.dmb = undefined;
  s.remote?.detach();
  s.remote = undefined;
}

function onClcBytes(sock: Socket, s: SmcState, chunk: Buffer | null): void {
  if (chunk === null) {
    // The peer closed during the handshake: nothing more to negotiate.
    const rest = s.clc;
    s.clc = undefined;
    releaseHandshake(s);
    settleTcp(sock, s, DECLINE.SYNCERR, 'peer closed during the handshake');
    if (rest?.length) sock.smcPush(rest);
    sock.smcPush(null);
    return;
  }
  s.clc = s.clc ? Buffer.concat([s.clc, chunk]) : chunk;
  while (s.clc && s.clc.length > 0 && (s.phase === 'proposing' || s.phase === 'srv-wait' || s.phase === 'srv-accepting')) {
    const buf: Buffer = s.clc;
    if (!mayBeClc(buf) && (s.phase === 'srv-wait' || s.phase === 'proposing')) {
      // Not CLC at all: a plain client (server side) or a server that spoke first (client side).
      s.clc = undefined;
      settleTcp(sock, s, DECLINE.PEERNOSMC, s.role === 'server' ? 'peer did not propose SMC' : 'server wrote first');
      sock.smcPush(buf);
      return;
    }
    let len: number;
    try {
      len = clcFrameLength(buf);
    } catch (e) {
      // A broken header. Server: the bytes are the client's data, not a proposal. Client:
      // after our Proposal the server must answer in CLC; anything else is out of sync.
      s.clc = undefined;
      if (s.phase === 'srv-wait') {
        settleTcp(sock, s, DECLINE.PEERNOSMC, 'peer did not propose SMC');
        sock.smcPush(buf);
      } else {
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
  // Whatever follows the handshake belongs to the stream it settled on.
  const rest = s.clc;
  if (rest && (s.phase === 'tcp' || s.phase === 'smcd')) {
    s.clc = undefined;
    if (s.phase === 'tcp') sock.smcPush(rest);
    else s.strayTcpBytes += rest.length;
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

function onProposal(sock: Socket, s: SmcState, p: Proposal): void {
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
  if (reason) return fallbackAfterDecline(sock, s, reason, true, `declined: ${declineName(reason)}`);
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

function startSmcd(sock: Socket, s: SmcState): void {
  restoreOwner(s);
  clearTimeout(s.timer);
  s.timer = undefined;
  const conn = new SmcdConnection(s.dmb!, s.remote!, {
    data: (chunk) => {
      unrefTimer(sock);
      return sock.smcPush(chunk);
    },
    // After the ticks the data set off, as TCP's FIN comes in a read callback of its own after
    // the data's: node:http answers a request in the request's 'end' handler (a tick after
    // the data), and gives up on answering at the socket's 'end'. Then, as node's
    // onStreamRead: push the end and read(0), so a paused stream with nothing buffered still
    // emits 'end'.
    peerDone: () => { process.nextTick(peerEnded, sock); },
    peerAbort: () => { sock.destroy(connReset('peer aborted the SMC connection')); },
    writable: () => pump(s),
    protocolError: (msg) => { sock.destroy(Object.assign(new Error(`SMC-D protocol error: ${msg}`), { code: 'EPROTO' })); },
  });
  withSmcCounters(sock, s);
  s.conn = conn;
  s.dmb!.onSignal = () => { if (!conn.released) { conn.process(); kick(conn); } };
  s.phase = 'smcd';
  countSettled('SMCD');
  if (debugOn) debug('%s %s:%s -> %s:%s settled on SMC-D', s.role, sock.localAddress, sock.localPort, sock.remoteAddress, sock.remotePort);
  sock.emit('smc', getSmcInfo(sock));
  const held = s.held;
  s.held = undefined;
  if (held) {
    const buf = held.writev
      ? Buffer.concat((held.data as Array<{ chunk: unknown; encoding: BufferEncoding }>).map((c) => toBuffer(c.chunk, c.encoding)))
      : toBuffer(held.data, held.encoding);
    smcWrite(sock, s, buf, held.cb);
  }
  const fin = s.heldFinal;
  s.heldFinal = undefined;
  if (fin) sock._final(fin);
  // The client writes right after its Confirm: the server may find data waiting already.
  if (s.role === 'server') conn.process();
  kick(conn);
}

function peerEnded(sock: Socket): void {
  if (sock.destroyed) return;
  sock.smcPush(null);
  sock.read(0);
}

function smcWrite(sock: Socket, s: SmcState, buf: Buffer, cb: (err?: Error | null) => void): void {
  unrefTimer(sock);
  s.pending = { buf, off: 0, cb };
  pump(s);
}

function pump(s: SmcState): void {
  const p = s.pending;
  const conn = s.conn;
  if (!p || !conn || conn.released) return;
  if (conn.peerClosed) {
    // The peer closed its end entirely (peer_conn_closed). As over TCP, where the first write
    // into a closed connection is discarded and draws a reset, the first write is dropped
    // and the next fails with EPIPE.
    s.pending = undefined;
    if (!s.wroteAfterPeerClosed) {
      s.wroteAfterPeerClosed = true;
      p.cb();
    } else {
      p.cb(Object.assign(new Error('write after the peer closed the SMC connection'), { code: 'EPIPE', errno: -32, syscall: 'write' }));
    }
    return;
  }
  const n = conn.write(p.off === 0 ? p.buf : p.buf.subarray(p.off));
  p.off += n;
  if (p.off === p.buf.length) {
    s.pending = undefined;
    p.cb();
  }
  kick(conn); // poll for the peer's reply or its consumer cursor
}

function onTcpEndWhileSmc(sock: Socket, s: SmcState): void {
  const conn = s.conn;
  if (!conn || conn.released) return;
  // The peer writes its CDC before it closes TCP, so the CDC is current now.
  conn.process();
  if (conn.released || conn.peerFinished) return;
  // No closing CDC: the peer's process ended (exit, a signal) and its kernel closed the TCP
  // connection, with a FIN if nothing was left unread there and a RST otherwise. The same rule
  // on the ring: bytes of ours it never consumed make it an abort, as the RST would.
  if (conn.unconsumed > 0) sock.destroy(connReset('peer closed the TCP connection with data of ours unread (process died?)'));
  else conn.peerExited();
}

function stripThenPush(sock: Socket, s: SmcState, chunk: Buffer | null): boolean {
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
  try { len = clcFrameLength(buf); } catch { s.stripClc = false; return sock.smcPush(buf); }
  if (len === 0) {
    s.clc = buf;
    if (!s.timer) startTimer(sock, s);
    return true;
  }
  s.stripClc = false;
  withSmcCounters(sock, s);
  s.clcIn += len;
  return len < buf.length ? sock.smcPush(buf.subarray(len)) : true;
}

/**
 * The server application closed a connection during the handshake, having read nothing of
 * the application's. The client's CLC message may sit unread in the kernel, or be on its way,
 * and closing the handle now would answer it with a RST where this close is a FIN over TCP.
 * So the handle closes gently: FIN now, whatever still comes is read and dropped, and the
 * handle closes at the peer's FIN or after the handshake timeout. The application's socket
 * is done at once ('close' as usual); the lingering one keeps no process alive.
 */
function lingerClose(sock: Socket, timeout: number): void {
  const self = sock as unknown as { _handle: object | null };
  const handle = self._handle;
  if (!handle) return;
  self._handle = null; // node:net's _destroy then closes nothing and emits 'close' itself
  lingerHandle(handle, timeout);
}

/** @internal Close a TCP handle as lingerClose does (also for connections a server drops). */
export function lingerHandle(handle: object, timeout: number): void {
  const l = new net.Socket({ handle } as net.SocketConstructorOpts);
  l.on('error', () => {});
  l.resume();
  l.end();
  l.unref();
  setTimeout(() => l.destroy(), timeout).unref();
}

function teardown(sock: Socket, s: SmcState): void {
  restoreOwner(s);
  clearTimeout(s.timer);
  s.timer = undefined;
  const conn = s.conn;
  if (conn && !conn.released) {
    // TCP's close rule, which Linux's smc_close_active applies too: peer_conn_closed (a FIN)
    // when nothing is left unread, peer_conn_abort (a RST) when data is, or when the
    // application asked for a reset. Writes still queued are dropped, as libuv cancels them.
    // Bytes that reached the ring since the last poll, on a socket that reads all that comes
    // (flowing, nothing held back), count as read: libuv reads TCP as it arrives, while the
    // ring is looked at only when polled or signalled. node:tls closes its transport right
    // after the peer's last record, which would otherwise make its close an abort.
    const reset = resetting(sock);
    if (!reset && sock.readableFlowing === true && conn.readable === 0) conn.consumeArrived();
    if (reset || conn.peerAborted || conn.unreadNow() > 0) conn.abort();
    else conn.closeOrderly();
    forget(conn);
    conn.release((d) => returnDmb(s.device!, s.peerGid!, d));
  } else {
    releaseHandshake(s);
  }
  s.dmb = undefined;
  s.remote = undefined;
  const waiting = [s.pending?.cb, s.held?.cb, s.heldFinal];
  s.pending = undefined;
  s.held = undefined;
  s.heldFinal = undefined;
  if (sock.connecting) {
    // As node:net does for writes queued before the connection was established: they fail
    // with ERR_SOCKET_CLOSED_BEFORE_CONNECTION once the socket has closed.
    sock.once('close', () => { for (const cb of waiting) cb?.(closedBeforeConnection()); });
  } else {
    // As node:net's: a write libuv was still carrying completes without an error when the
    // socket is destroyed (onWriteComplete on a destroyed stream); nothing is emitted.
    for (const cb of waiting) cb?.();
  }
  s.phase = 'closed';
  untrack(sock);
}

/** How this socket carries its data; for a plain node:net socket, mode 'TCP'. */
export function getSmcInfo(sock: net.Socket): SmcInfo {
  const s = (sock as Socket)[kSmc];
  if (!s) return { mode: 'TCP', pending: false, smcBytesSent: 0, smcBytesReceived: 0 };
  const info: SmcInfo = {
    mode: s.conn ? 'SMCD' : 'TCP',
    pending: s.phase === 'idle' || s.phase === 'proposing' || s.phase === 'srv-wait' || s.phase === 'srv-accepting',
    smcBytesSent: s.conn?.bytesSent ?? 0,
    smcBytesReceived: s.conn?.bytesReceived ?? 0,
  };
  if (s.fallbackReason !== undefined) info.fallbackReason = s.fallbackReason;
  if (s.peerDeclineReason !== undefined) info.peerDeclineReason = s.peerDeclineReason;
  if (s.fallbackCause !== undefined) info.fallbackCause = s.fallbackCause;
  if (s.conn) {
    info.bufferSize = s.conn.rx.size;
    info.peerBufferSize = s.conn.tx.size;
  }
  return info;
}

/** @internal for status reporting */
export function smcState(sock: net.Socket): SmcState | undefined {
  return (sock as Socket)[kSmc];
}
