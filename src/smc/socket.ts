// softrdma/smc Socket: a node:net Socket that negotiates SMC over its TCP connection and,
// when both ends agree, carries the byte stream through an SMC transport (SMC-D: shared
// memory). Until then, and for ever when either side cannot, it is the TCP socket it extends:
// a fallback connection runs node:net's own code, with one branch per call in front of it.
//
// The class is Linux's af_smc.c proto_ops (connect, sendmsg, recvmsg, shutdown, release); the
// rest lives beside it as in net/smc: the per-socket record in state.ts (smc.h), the CLC
// handshake in handshake.ts, the data path in data.ts (smc_tx.c, smc_rx.c), closing in
// close.ts (smc_close.c), and the transport behind the interface of transport.ts.

import net from 'node:net';
import { Duplex } from 'node:stream';
import { DECLINE } from './clc.js';
import { afterCdcSent, onTcpEndWhileSmc, smcRelease } from './close.js';
import { connectTarget } from './connect-args.js';
import { deliverToUser, installOnread, pauseOnread, resumeOnread, smcWrite, startTcpRead, stopTcpRead } from './data.js';
import { followOwner, setOwnerJoin } from './handle-owner.js';
import { handleGone, onClcBytes, onClientConnect, prefetchSmcrDiscovery, serverSpeaksFirst, settleTcp, stripThenPush } from './handshake.js';
import { resolveSmcOptions, type ResolvedSmcOptions, type SmcSocketOptions } from './options.js';
import { anyPolicy, policyAllows } from './policy.js';
import { counterAccessors, kSmc, newState, toBuffer, withSmcCounters, type SmcState } from './state.js';
import { track, untrack } from './status.js';

export type { SmcInfo, SmcMode } from './state.js';

const nodeConnect = net.Socket.prototype.connect;
const nodeOnTimeout = (net.Socket.prototype as unknown as { _onTimeout(): void })._onTimeout;

/**
 * Whether the CLC handshake is under way with both ends taking part: the server answered our
 * Proposal (a client waiting for the rest: SMC-R's CONFIRM_LINK, say), our Accept is out, or the
 * first bytes of a Proposal came and the rest is awaited. Each step is bounded by the handshake
 * timer. A client whose Proposal is unanswered is not held back: a listener that does not answer
 * (its process stuck) is what a client's connect timeout is for, as over TCP; nor is a server
 * that has received nothing yet, idle as over TCP.
 */
function handshakeUnderWay(s: SmcState): boolean {
  const p = s.phase;
  return (p === 'proposing' && s.clcIn > 0) || p === 'srv-accepting' || (p === 'srv-wait' && s.clc !== undefined);
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
  o._final = p._final; o._read = p._read; o.read = p.read; o.pause = p.pause; o.resume = p.resume; o._destroy = p._destroy;
  o._onTimeout = p._onTimeout;
  return o;
}

/** The socket whose push(null) for TCP's end just ran while over SMC (see read()). */
let tcpEofRead: Socket | undefined;

/**
 * A new owner of an accepted handle during the handshake (handle-owner.ts): it becomes an SMC
 * socket sharing this state, so the handshake goes on with it, and smcss lists it in place of
 * the socket it replaced (whose teardown, if any, would come through the new owner's).
 */
setOwnerJoin((prev, v) => {
  const s = (prev as Socket)[kSmc];
  if (s && v instanceof net.Socket && !(kSmc in v) && (s.phase === 'srv-wait' || s.phase === 'srv-accepting')) {
    graft(v)[kSmc] = s;
    untrack(prev as Socket);
    track(v);
    return true;
  }
  return false;
});

export class Socket extends net.Socket {
  declare [kSmc]: SmcState | undefined;

  constructor(options?: net.SocketConstructorOpts & SmcSocketOptions) {
    super(options);
    const s = this[kSmc] = newState('client', resolveSmcOptions(options), true);
    installOnread(this, s);
  }

  /** @internal Make an accepted node:net socket an SMC server socket. */
  static adopt(sock: net.Socket, opts: ResolvedSmcOptions): Socket {
    const s = graft(sock);
    const st = newState('server', opts, false);
    s[kSmc] = st;
    // A listener known to speak SMC must still answer a Proposal, even when it will not use SMC.
    // node:http hands the TCP handle to its C++ parser unless it was consumed already; the
    // CLC bytes must pass through push() first, so claim the handle for the JS path.
    const handle = (s as unknown as { _handle?: { _consumed?: boolean } })._handle;
    if (handle) handle._consumed = true;
    if (!opts.enabled) st.serverDecline = DECLINE.NOSMCDEV;
    else if (anyPolicy(opts.policy)) {
      const info = () => ({ role: 'server' as const, localAddress: s.localAddress, localPort: s.localPort, remoteAddress: s.remoteAddress, remotePort: s.remotePort });
      if (!policyAllows(opts.policy, info)) st.serverDecline = DECLINE.NOSMCDEV;
    }
    if (handle) st.ownerHandle = followOwner(handle, s);
    track(s);
    return s;
  }

  /** @internal Give a plain client socket SMC behaviour before it connects (the auto preload). */
  static adoptClient(sock: net.Socket, opts: ResolvedSmcOptions): Socket {
    const s = graft(sock);
    installOnread(s, s[kSmc] = newState('client', opts, false));
    return s;
  }

  /** An adopted node:net socket (see graft()) is an SMC Socket too; for subclasses, the usual rule. */
  static override [Symbol.hasInstance](x: unknown): boolean {
    if (Function.prototype[Symbol.hasInstance].call(this, x)) return true;
    return this === Socket && typeof x === 'object' && x !== null && kSmc in x && x instanceof net.Socket;
  }

  // node:net's overloads, so that a wrong call does not compile (the implementation takes them all).
  override connect(options: net.SocketConnectOpts, connectionListener?: () => void): this;
  override connect(port: number, host: string, connectionListener?: () => void): this;
  override connect(port: number, connectionListener?: () => void): this;
  override connect(path: string, connectionListener?: () => void): this;
  override connect(...args: unknown[]): this {
    let s = this[kSmc];
    // node:net lets a closed socket connect again; so does SMC, with a fresh handshake.
    if (s && s.phase === 'closed' && s.role === 'client') {
      const onread = s.onread;
      s = this[kSmc] = newState('client', s.opts, s.counters);
      if (onread) s.onread = { ...onread, stopped: false, endPending: false, held: undefined };
    }
    if (s && s.phase === 'idle') {
      s.connectAt = performance.now();
      const target = connectTarget(args);
      s.targetPort = target.port;
      s.targetHost = target.host;
      s.loopbackPeer = target.host !== undefined && target.host.startsWith('127.') && !target.bound;
      if (!s.opts.enabled || target.ipc) settleTcp(this, s, undefined, s.opts.enabled ? 'not an IP connection' : 'disabled');
      else {
        this.prependOnceListener('connect', onClientConnect);
        track(this);
        if (target.host !== undefined && target.port !== undefined) prefetchSmcrDiscovery(s, target.host, target.port, target.localAddress);
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
      if (chunk === null) {
        onTcpEndWhileSmc(this, s);
        tcpEofRead = this;
      }
      else s.strayTcpBytes += (chunk as Buffer).length;
      return true;
    }
    onClcBytes(this, s, chunk as Buffer | null);
    return true;
  }

  /** @internal data from the SMC transport, or the end of it */
  smcPush(chunk: Buffer | null): boolean {
    // onread: the application's buffer, never 'data' (as node:net's onStreamRead).
    const o = chunk !== null ? this[kSmc]?.onread : undefined;
    if (o) return deliverToUser(this, o, chunk!);
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
      s.writeDoneAfterPeer = s.conn!.peerFinished;
      const conn = s.conn!;
      conn.closeWrite();
      // TCP's FIN once peer_done_writing has reached the peer (SMC-R: afterCdcSent), which
      // takes the CDC for what happened and the FIN only for a process gone. If it cannot
      // arrive (the link failed), the close is a RST, and end() fails: what was written may
      // not have arrived, and the peer must not take a clean end for it.
      return afterCdcSent(conn, (confirmed) => {
        if (confirmed) return super._final(cb);
        (this as unknown as { resetAndClosing?: boolean }).resetAndClosing = true;
        cb(Object.assign(new Error('the SMC-R connection\'s closing message did not reach the peer (the link failed)'), { code: 'ECONNABORTED' }));
      });
    }
    // A server that ends before anything arrived speaks first, as one that writes: TCP.
    if (serverSpeaksFirst(this, s)) return super._final(cb);
    s.heldFinal = cb;
  }

  override _read(n: number): void {
    const s = this[kSmc];
    if (s?.phase === 'smcd') {
      // TCP carries the peer's end (and reset): read it again if backpressure (data.ts
      // stopTcpRead) or the handshake stopped it for a paused socket, as node's Socket._read.
      if (!s.tcpEnded && !(this as unknown as { _handle?: { reading?: boolean } | null })._handle?.reading) super._read(n);
      if (s.onread?.stopped) return; // only resume() restarts an onread socket
      if (s.conn!.resume()) s.conn!.kick();
      return;
    }
    super._read(n);
  }

  override read(size?: number): unknown {
    // node:net's read() starts an onread socket's handle reading again; ours is the ring.
    // Not the read(0) node's onStreamRead makes right after TCP's end: that is no
    // application asking for data (the ring, not TCP, carries the stream). Over TCP, node
    // restarts the handle, and what came with the last CLC message (held) goes first.
    const s = this[kSmc];
    if (tcpEofRead === this) tcpEofRead = undefined;
    else if (s?.onread?.stopped && (s.phase === 'smcd' || s.phase === 'tcp')) resumeOnread(this, s);
    return super.read(size);
  }

  override pause(): this {
    const s = this[kSmc];
    if (s?.phase === 'smcd') {
      // node:net stops reading an onread socket's handle here: ours is the ring, and the
      // handle too, which only the peer's end would come through (stopTcpRead).
      if (s.onread) {
        pauseOnread(s);
        stopTcpRead(this, s);
      }
      return Duplex.prototype.pause.call(this) as this;
    }
    // The handshake reads the handle whatever the pause state; settling gives node:net's back.
    if (s?.clcRead) return Duplex.prototype.pause.call(this) as this;
    return super.pause();
  }

  override resume(): this {
    const s = this[kSmc];
    if (s?.onread) resumeOnread(this, s);
    if (s?.phase === 'smcd') {
      if (s.onread) startTcpRead(this, s); // as node:net's resume() of an onread socket
      return Duplex.prototype.resume.call(this) as this;
    }
    return super.resume();
  }

  /**
   * The idle timer (setTimeout) ran out. node:net holds 'timeout' back while a write is making
   * progress (its _onTimeout re-arms the timer when the write queue shrank); SMC holds it back
   * while the handshake is under way: the connection is not idle, its first bytes are being
   * negotiated, and over TCP they would have been flowing (a server with a 1 ms timeout timed out
   * twice during a slow handshake, before the request it was waiting for: Node's
   * test-http-set-timeout-server). The timer is re-armed, so an idle connection still times out
   * once the handshake settles; the handshake timer bounds the wait.
   */
  _onTimeout(): void {
    const s = this[kSmc];
    if (s !== undefined && handshakeUnderWay(s)) {
      (this as unknown as { _unrefTimer(): void })._unrefTimer();
      return;
    }
    nodeOnTimeout.call(this);
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    const s = this[kSmc];
    if (s) smcRelease(this, s, err);
    super._destroy(err, cb);
  }
}

// @types/node declares bytesRead/bytesWritten as fields; in node they are accessors, which
// SMC mode replaces (the TCP counters would count the CLC handshake, and nothing after it).
Object.defineProperty(Socket.prototype, 'bytesRead', counterAccessors.bytesRead);
Object.defineProperty(Socket.prototype, 'bytesWritten', counterAccessors.bytesWritten);
