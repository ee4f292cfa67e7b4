// The socket's side of the data path, over whichever transport the handshake chose (Linux:
// smc_tx.c's sendmsg and smc_rx.c's delivery into the socket): writes go into the transport
// as far as the peer's buffer has room, the rest when the peer consumed; what the transport
// reports becomes the stream's data, end and errors, or, with node:net's onread option,
// bytes copied straight into the application's buffer.

import net from 'node:net';
import util from 'node:util';
import { isUint8Array } from 'node:util/types';
import type { Socket } from './socket.js';
import { brokenPipe, connReset, kSmc, type OnreadState, type SmcState } from './state.js';
import type { SmcTransport, TransportEvents } from './transport.js';

function unrefTimer(sock: Socket): void {
  (sock as unknown as { _unrefTimer(): void })._unrefTimer();
}

/**
 * What the transport's events do to the socket, for one connection (label: 'SMC-D', for the
 * protocol error's message).
 */
export function transportEvents(sock: Socket, s: SmcState, label: string): TransportEvents {
  return {
    data: (chunk) => {
      unrefTimer(sock);
      if (endRead(sock)) return dropLate(s, chunk.length);
      return sock.smcPush(chunk) || stopTcpRead(sock, s);
    },
    userBuffer: () => (s.onread ? currentBuffer(sock) : undefined),
    userData: (n, buf) => {
      unrefTimer(sock);
      if (endRead(sock)) return dropLate(s, n);
      return callUser(sock, s.onread!, n, buf) || stopTcpRead(sock, s);
    },
    // After the ticks the data set off, as TCP's FIN comes in a read callback of its own after
    // the data's: node:http answers a request in the request's 'end' handler (a tick after
    // the data), and gives up on answering at the socket's 'end'. Then, as node's
    // onStreamRead: push the end and read(0), so a paused stream with nothing buffered still
    // emits 'end'.
    peerDone: () => {
      // onread stopped by the application: TCP's FIN would not be read until it reads again.
      if (s.onread?.stopped) s.onread.endPending = true;
      else process.nextTick(peerEnded, sock);
    },
    peerAbort: (cause = 'peer aborted the SMC connection') => { sock.destroy(connReset(cause)); },
    writable: () => pump(sock, s),
    protocolError: (msg, code = 'EPROTO') => {
      sock.destroy(Object.assign(new Error(code === 'EPROTO' ? `${label} protocol error: ${msg}` : `${label}: ${msg}`), { code }));
    },
  };
}

/** Whether the stream has its end already (push(null) ran: no data may follow it). */
function endRead(sock: Socket): boolean {
  return (sock as unknown as { _readableState: { ended: boolean } })._readableState.ended;
}

/**
 * Bytes after the end: a Linux peer whose close stopped waiting for room in our buffer
 * (smc_close_stream_wait) sends the rest of its buffer later, its CDCs still saying it is done
 * writing, and this socket took the first of those CDCs for the end. A stream cannot take
 * data after its end (ERR_STREAM_PUSH_AFTER_EOF), so they are dropped as read, and counted:
 * the close is then an abort, as Linux's smc_close_final sends one for a socket closed with
 * bytes unread, so the sender learns that they were never read.
 */
function dropLate(s: SmcState, n: number): boolean {
  s.lateBytes += n;
  return true;
}

function peerEnded(sock: Socket): void {
  if (sock.destroyed) return;
  sock.smcPush(null);
  sock.read(0);
}

interface TcpHandle { reading?: boolean; readStop(): number }

function tcpHandle(sock: Socket): TcpHandle | null | undefined {
  return (sock as unknown as { _handle?: TcpHandle | null })._handle;
}

/**
 * The reader stopped taking data (push() or the onread callback said false, or pause() of an
 * onread socket): stop reading the TCP handle too, as node's onStreamRead does (handle.reading =
 * false; readStop()), so a reader paused by backpressure keeps the process alive no more than
 * node:net's does. TCP only carries the peer's end (and its reset) meanwhile, which a paused
 * node:net socket does not read either; the stream's _read starts it again (socket.ts), as
 * node's Socket._read (tryReadStart). A handle whose end or error was read is left alone: it
 * cannot read again (libuv's ENOTCONN would destroy the socket), and reads nothing more. Returns
 * false, for the callers' `||`.
 */
export function stopTcpRead(sock: Socket, s: SmcState): false {
  const h = tcpHandle(sock);
  if (s.phase !== 'smcd' || s.tcpEnded || !h?.reading || sock.destroyed) return false;
  h.reading = false;
  const err = h.readStop();
  if (err) sock.destroy(Object.assign(new Error(`read ${util.getSystemErrorName(err)}`), { errno: err, code: util.getSystemErrorName(err), syscall: 'read' }));
  return false;
}

/** Read the TCP handle again after stopTcpRead, as node's tryReadStart (through node:net's own _read). */
export function startTcpRead(sock: Socket, s: SmcState): void {
  if (s.tcpEnded || tcpHandle(sock)?.reading !== false) return;
  (net.Socket.prototype._read as (n: number) => void).call(sock, 0);
}

/**
 * The peer is gone with a reset. A transport that can (both do) reports it as the peer's abort,
 * after what a stopped reader has yet to read from its buffer (reportState in
 * smcd-connection.ts and smcr/connection.ts); otherwise the socket fails now.
 */
export function peerReset(sock: Socket, conn: SmcTransport, cause: string): void {
  if (conn.peerReset) conn.peerReset(cause);
  else sock.destroy(connReset(cause));
}

type OnStreamRead = (this: unknown, arrayBuffer?: ArrayBuffer) => unknown;

/**
 * SMC-D and SMC-R: TCP's reads pass through here before node's onStreamRead (the handle's onread). Over
 * TCP a reset is read after everything that arrived before it; node:net destroys the socket when
 * it reads one. Over SMC the peer's data are in our ring, not behind the RST in the kernel: a
 * reset read at once would destroy the socket with bytes in the ring its reader has not read
 * yet (a reader that resumed just now, whose handle reads again: the peer's resetAndDestroy()).
 * So node's destroy for a reset is taken here and goes the way of TCP's end (onTcpResetWhileSmc).
 * Data (none but stray bytes over SMC) and the end (push(null): onTcpEndWhileSmc) go to node's
 * code as before; only reads with no data can be a reset, and only for them is the socket's
 * destroy looked at, while node's function runs.
 */
export function watchTcpReset(sock: Socket, s: SmcState): void {
  const h = (sock as unknown as { _handle?: { onread?: unknown } | null })._handle;
  const nodeOnread = h?.onread;
  if (!h || typeof nodeOnread !== 'function') return;
  h.onread = function tcpReadWhileSmc(this: unknown, arrayBuffer?: ArrayBuffer): unknown {
    if (arrayBuffer !== undefined || s.phase !== 'smcd') return (nodeOnread as OnStreamRead).call(this, arrayBuffer);
    const self = sock as unknown as { destroy: Socket['destroy'] };
    const own = Object.getOwnPropertyDescriptor(sock, 'destroy');
    let reset: Error | undefined;
    self.destroy = function destroyUnlessReset(this: Socket, ...args: unknown[]): Socket {
      if (reset === undefined && isTcpReset(args[0])) {
        reset = args[0];
        return this;
      }
      return Reflect.apply(own ? own.value as Socket['destroy'] : net.Socket.prototype.destroy, this, args) as Socket;
    };
    try {
      return (nodeOnread as OnStreamRead).call(this, arrayBuffer);
    } finally {
      if (own) Object.defineProperty(sock, 'destroy', own);
      else delete (self as { destroy?: unknown }).destroy;
      if (reset) onTcpResetWhileSmc(sock, s, reset);
    }
  };
}

/** node's error for a reset its read saw ('read ECONNRESET'), not one of ours (those carry smcCause). */
function isTcpReset(err: unknown): err is Error {
  const e = err as (NodeJS.ErrnoException & { smcCause?: string }) | undefined;
  return e instanceof Error && e.code === 'ECONNRESET' && e.syscall === 'read' && e.smcCause === undefined;
}

/**
 * TCP's reset while the stream runs over SMC, as TCP's end (onTcpEndWhileSmc): the CDC, which
 * the peer writes before it closes TCP, says what happened (its abort, reported as a reset after
 * what the ring holds); without one the peer's process died with something unread, and its
 * kernel answered with the RST: the peer's abort too. The handle reads nothing more.
 */
function onTcpResetWhileSmc(sock: Socket, s: SmcState, err: Error): void {
  s.tcpEnded = true;
  const conn = s.conn;
  if (!conn || conn.released || sock.destroyed) return;
  conn.process();
  if (conn.released || sock.destroyed || conn.peerClosed) return;
  peerReset(sock, conn, `the peer's TCP connection was reset without a closing CDC (process died?): ${err.message}`);
}

/** Write buf through the transport; cb when all of it is in the peer's buffer. */
export function smcWrite(sock: Socket, s: SmcState, buf: Buffer, cb: (err?: Error | null) => void): void {
  unrefTimer(sock);
  s.bytesDispatched += buf.length;
  s.pending = { buf, off: 0, cb };
  pump(sock, s);
}

/** Writes that went through pump() at least once without finishing: they wait for the peer. */
const underway = new WeakSet<object>();

function pump(sock: Socket, s: SmcState): void {
  const p = s.pending;
  const conn = s.conn;
  if (!p || !conn || conn.released) return;
  if (conn.peerClosed) {
    // The peer closed its end entirely (peer_conn_closed) while this write was under way
    // (part of it sent, or waiting for room): the rest can never be read. Over TCP the bytes
    // that keep arriving after close(2) draw a RST, and Linux's smc_tx_sendmsg returns
    // -ECONNRESET once it sees any close (smc_tx_wait): the socket fails with ECONNRESET, as
    // node:net's does (no 'end'; the write's callback comes as for any write destroy() cut
    // short, close.ts teardown).
    if (underway.has(p)) {
      sock.destroy(connReset(conn.peerAborted ? 'peer aborted the SMC connection' : 'peer closed the SMC connection with our write under way'));
      return;
    }
    // A write made after the peer's close was seen. As over TCP, where the first write into a
    // closed connection is discarded and draws a reset, the first write is dropped and the
    // next fails with EPIPE.
    s.pending = undefined;
    if (!s.wroteAfterPeerClosed) {
      s.wroteAfterPeerClosed = true;
      p.cb();
    } else {
      p.cb(brokenPipe('write after the peer closed the SMC connection'));
    }
    return;
  }
  const n = conn.write(p.off === 0 ? p.buf : p.buf.subarray(p.off));
  p.off += n;
  // Progress is activity: node:net's _onTimeout holds 'timeout' back while the write queue shrinks.
  if (n > 0) unrefTimer(sock);
  if (p.off === p.buf.length) {
    s.pending = undefined;
    p.cb();
  } else {
    underway.add(p);
  }
  conn.kick(); // poll for the peer's reply or its consumer cursor
}

// node:net's onread ({ buffer, callback }): node keeps the buffer, the callback and the
// buffer function in symbols of its own (lib/internal/stream_base_commons.js: kBuffer,
// kBufferCb, kBufferGen), sets them in the Socket constructor and calls the callback from
// onStreamRead for each TCP read. Over TCP (a fallback connection) all of that stays node's.
// Only the callback is wrapped, for two reasons: bytes of the CLC handshake arrive through it
// and must reach the handshake instead (they pass through push(), as without onread), and
// over SMC-D the transport copies from the ring into the same buffer and calls the
// application's callback itself.

interface OnreadKeys { buffer: symbol; callback: symbol; gen: symbol }
type Slots = Record<symbol, unknown>;

/** node's symbols, found by their descriptions on the first socket looked at (every net.Socket has them). */
let keys: OnreadKeys | null | undefined;

function onreadKeys(sock: object): OnreadKeys | null {
  if (keys !== undefined) return keys;
  const own = Object.getOwnPropertySymbols(sock);
  const find = (d: string) => own.find((k) => k.description === d);
  const buffer = find('kBuffer');
  const callback = find('kBufferCb');
  const gen = find('kBufferGen');
  keys = buffer && callback && gen ? { buffer, callback, gen } : null;
  return keys;
}

/**
 * If the socket was created with onread, take over its callback (see above). Called once per
 * socket, before it connects; the wrapper follows the socket's current SMC state, which a
 * reconnect replaces.
 */
export function installOnread(sock: Socket, s: SmcState): void {
  const k = onreadKeys(sock);
  const slots = sock as unknown as Slots;
  if (!k || !slots[k.buffer] || typeof slots[k.callback] !== 'function') return;
  const callback = slots[k.callback] as OnreadState['callback'];
  const gen = slots[k.gen] as OnreadState['gen'];
  s.onread = { callback, gen, stopped: false, endPending: false, held: undefined };
  // node asks onread.buffer for the next buffer after every read it hands the callback; a
  // read that carried only CLC bytes is none of the application's, and one that carried
  // application data called it already (callUser): then the buffer stays as it is now.
  let skipGen = false;
  if (gen !== null) {
    slots[k.gen] = function nextBuffer(): unknown {
      if (!skipGen) return gen();
      skipGen = false;
      return slots[k.buffer];
    };
  }
  slots[k.callback] = function onTcpRead(this: unknown, nread: number, buf: Uint8Array): unknown {
    const st = sock[kSmc];
    if (!st || st.phase === 'idle' || (st.phase === 'tcp' && !st.stripClc)) return callback.call(this, nread, buf);
    // CLC bytes, or what follows them: through push() as without onread, copied out of the
    // buffer the next read fills again. Application data among them comes back to us
    // through smcPush (deliverToUser).
    const go = sock.push(Buffer.from(buf.subarray(0, nread)));
    skipGen = true;
    // Settled on TCP with this read, whose data the application's callback refused (false):
    // node:net stops the handle then, and resume() starts it (over SMC-D, TCP must go on being
    // read for the peer's end).
    const after = sock[kSmc];
    return go && !(after?.phase === 'tcp' && after.onread?.stopped);
  };
}

/** The buffer the application supplies now (node's kBuffer). An empty one is libuv's ENOBUFS. */
function currentBuffer(sock: Socket): Uint8Array | undefined {
  const b = (sock as unknown as Slots)[keys!.buffer];
  if (!isUint8Array(b)) return undefined;
  if (b.length === 0) {
    sock.destroy(Object.assign(new Error('read ENOBUFS'), { code: 'ENOBUFS', errno: -105, syscall: 'read' }));
    return undefined;
  }
  return b;
}

/**
 * n bytes are in buf: the application's callback, then, as node's onStreamRead, the next
 * buffer from onread.buffer when that is a function. False: the application stops reading.
 */
function callUser(sock: Socket, o: OnreadState, n: number, buf: Uint8Array): boolean {
  const go = o.callback.call(sock, n, buf) !== false;
  if (o.gen !== null) {
    const next = o.gen();
    if (isUint8Array(next)) (sock as unknown as Slots)[keys!.buffer] = next;
  }
  if (!go) o.stopped = true;
  return go;
}

/**
 * Application bytes that came another way than the ring (TCP after a CLC message, or bytes
 * the handshake held), for an onread socket: copied into its buffer, as many callbacks as
 * they need. Returns false when the application stopped reading (the rest waits in held).
 */
export function deliverToUser(sock: Socket, o: OnreadState, chunk: Buffer): boolean {
  let off = 0;
  while (off < chunk.length) {
    if (o.stopped) {
      o.held = o.held ? Buffer.concat([o.held, chunk.subarray(off)]) : chunk.subarray(off);
      return false;
    }
    const buf = currentBuffer(sock);
    if (!buf) return false;
    const n = Math.min(buf.length, chunk.length - off);
    buf.set(chunk.subarray(off, off + n), 0);
    off += n;
    callUser(sock, o, n, buf);
  }
  return !o.stopped;
}

/** pause() of an onread socket: over SMC-D, stop copying out of the ring. */
export function pauseOnread(s: SmcState): void {
  s.onread!.stopped = true;
  s.conn?.pause();
}

/**
 * resume() of an onread socket: go on delivering, on the next tick, as node's readStart makes
 * the next read come in a callback of its own and not inside resume().
 */
export function resumeOnread(sock: Socket, s: SmcState): void {
  const o = s.onread!;
  if (!o.stopped) return;
  o.stopped = false;
  process.nextTick(continueOnread, sock, s);
}

function continueOnread(sock: Socket, s: SmcState): void {
  const o = s.onread!;
  if (o.stopped || sock.destroyed) return;
  if (o.held) {
    const held = o.held;
    o.held = undefined;
    if (!deliverToUser(sock, o, held)) return;
  }
  const conn = s.conn;
  if (conn && !conn.released && s.phase === 'smcd') {
    if (conn.resume()) conn.kick();
    if (o.stopped) return;
  }
  if (o.endPending) {
    o.endPending = false;
    process.nextTick(peerEnded, sock);
  }
}
