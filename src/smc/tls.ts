// TLS over SMC-D. node:tls wraps a connected net.Socket's TCP handle in C++ (TLSWrap then
// reads and writes the TCP stream itself), which would send TLS records around the SMC-D
// connection. Given a plain JS stream instead, node:tls wraps it in a JSStreamSocket and
// moves the records through JS. So an SMC socket meets TLS through SmcStream, a Duplex in
// front of it, and the TLS socket borrows the SMC socket's addresses and socket options.
//
// When the SMC handshake falls back to TCP, nothing of this is used: a TLS server hands the
// accepted socket itself to node:tls (with the first bytes it read still buffered, which
// node:tls feeds to OpenSSL first), and a TLS client to a destination that is neither a local
// SMC listener nor a host discovery found an SMC-R listener on is node:tls's own, untouched.

import net from 'node:net';
import os from 'node:os';
import { Duplex } from 'node:stream';
import tls from 'node:tls';
import { isUint8Array } from 'node:util/types';
import { normalizeConnectArgs } from './connect-args.js';
import { isSmcListener } from './discovery.js';
import { Socket } from './socket.js';
import { getSmcInfo, kSmc, smcState, type SmcInfo } from './state.js';
import { smcrOf, type ResolvedSmcOptions } from './options.js';
import { smcrKnownListener } from './smcr/discovery.js';

/**
 * The SMC socket as a plain Duplex, so that node:tls treats it as a JS stream. The stream is
 * half-open itself (node:tls decides when its writable side ends: after close_notify), but
 * see asTransport(): the TLS socket built on it must not be.
 */
export class SmcStream extends Duplex {
  /**
   * One entry per write() not yet taken by _write, in order (a Writable calls _write in the
   * order of the writes): where _write leaves the error of the SMC socket's write, for a
   * write with a callback (one without has its error emitted, as a Writable's).
   */
  private readonly writeSlots: Array<{ err?: Error; cb: boolean }> = [];
  /** The error the SMC socket's last failed write gave (it emits the same error next). */
  private writeError: Error | undefined;
  /** The peer's end came (pushed). */
  private peerEnded = false;
  /**
   * @internal The TLS socket on this stream stands for one node:tls connects itself (the
   * preload's connectTls), which over TCP has no net.Socket under it (see hookTls).
   */
  ownConnection = false;

  constructor(readonly socket: Socket) {
    super({ allowHalfOpen: true });
    socket.on('data', (d: Buffer) => { if (!this.push(d)) socket.pause(); });
    socket.on('end', () => { this.peerEnded = true; this.push(null); });
    // A failed write reaches node:tls through that write's callback alone (see write()); the
    // socket's 'error' for it is not the stream's.
    socket.on('error', (e) => { if (e !== this.writeError) this.destroy(e); });
    socket.on('close', () => { if (!this.destroyed && !this.outlivesSocket) this.destroy(); });
  }
  /**
   * A net.Socket whose write fails destroys itself (a Writable's write error); a TCP handle
   * under TLSWrap does not: its writes fail (EPIPE, which TLSWrap ignores once it shut down),
   * its shutdown completes all the same (net.js's afterShutdown takes no status), and the TLS
   * socket closes when it is done ('finish' after a client's end(), then 'close'). So when
   * the SMC socket closed because of a failed write after the peer's end arrived (nothing is
   * left to read), this stream stays until its owner ends or destroys it (JSStreamSocket, when
   * the TLS socket closes); its writes fail and its end completes. With the peer's end not
   * yet read, the stream closes with the socket, as a TCP read would fail then.
   */
  get outlivesSocket(): boolean {
    return this.writeError !== undefined && this.peerEnded;
  }
  override _read(): void {
    this.socket.resume();
  }
  /**
   * A socket that is not half-open ends its own side when the peer's end arrives (a socket
   * the application gave tls.connect may be one). Over TCP node:tls would have taken its
   * handle and nothing would have ended it; here, what node:tls writes after that (its
   * close_notify, for a peer that has closed) has nowhere to go and is dropped, as is the end.
   */
  private get selfEnded(): boolean {
    return this.socket.writableEnded || (!this.socket.allowHalfOpen && this.socket.readableEnded);
  }
  override _write(chunk: Buffer, encoding: BufferEncoding, cb: (err?: Error | null) => void): void {
    const slot = this.writeSlots.shift();
    if (this.selfEnded) return cb();
    this.socket.write(chunk, encoding, (err?: Error | null) => {
      if (!err || !slot?.cb) return cb(err);
      slot.err = err;
      this.writeError = err;
      cb();
    });
  }
  /**
   * Over TCP node:tls writes into the TCP handle, and a write that fails (EPIPE once the peer
   * is gone) comes back to TLSWrap as that write's status alone (OnStreamAfterWrite: ignored
   * after TLSWrap shut the stream down, else the failure of the TLS write it carried); nothing
   * emits 'error'. Through a JSStreamSocket, a Writable's failed write would also be an
   * 'error' of this stream, which JSStreamSocket passes on as the TLS socket's 'error' (a
   * client whose peer closed failed on writing its close_notify). So the SMC socket's write
   * error goes to the write's callback only (JSStreamSocket makes it the write's status).
   *
   * And a write after node:tls shut this stream down (JSStreamSocket's doShutdown ended it): what
   * TLS writes in answer to records that still come (over TCP, uv_write refuses it with EPIPE
   * and TLSWrap ignores write errors once shut down, OnStreamAfterWrite). A Writable would
   * raise ERR_STREAM_WRITE_AFTER_END, which JSStreamSocket passes on as the TLS socket's
   * 'error': the write fails with EPIPE to its callback alone.
   */
  override write(chunk: unknown, encoding?: BufferEncoding | ((err?: Error | null) => void), cb?: (err?: Error | null) => void): boolean {
    const done = typeof encoding === 'function' ? encoding : cb;
    if (!this.writableEnded) {
      const slot: { err?: Error; cb: boolean } = { cb: done !== undefined };
      this.writeSlots.push(slot);
      const after = (err?: Error | null): void => {
        // A write the Writable failed without calling _write (destroyed meanwhile) took no slot.
        this.dropSlot(slot);
        done?.(err ?? slot.err);
      };
      try {
        return super.write(chunk, (typeof encoding === 'function' ? undefined : encoding) as BufferEncoding, after);
      } catch (e) {
        this.dropSlot(slot); // refused at once (a chunk of the wrong type): no _write will take it
        throw e;
      }
    }
    if (done) process.nextTick(done, Object.assign(new Error('write EPIPE'), { code: 'EPIPE', errno: -32, syscall: 'write' }));
    return false;
  }
  private dropSlot(slot: { err?: Error; cb: boolean }): void {
    const i = this.writeSlots.indexOf(slot);
    if (i >= 0) this.writeSlots.splice(i, 1);
  }
  override _final(cb: (err?: Error | null) => void): void {
    if (this.selfEnded || this.outlivesSocket) return cb();
    this.socket.end(cb);
  }
  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    // node:tls destroys its transport to close it; destroy() closes an SMC socket as close(2)
    // closes TCP: orderly unless data is left unread.
    if (!this.socket.destroyed) this.socket.destroy(err ?? undefined);
    cb(err);
  }
  // What a tls.Server's own 'connection' listeners read of the socket they are given (over
  // TCP: the net.Socket itself), from the SMC socket.
  get server(): net.Server | undefined { return (this.socket as net.Socket & { server?: net.Server }).server; }
  get remoteAddress(): string | undefined { return this.socket.remoteAddress; }
  get remotePort(): number | undefined { return this.socket.remotePort; }
  get remoteFamily(): string | undefined { return this.socket.remoteFamily; }
  get localAddress(): string | undefined { return this.socket.localAddress; }
  get localPort(): number | undefined { return this.socket.localPort; }
  address(): ReturnType<net.Socket['address']> { return this.socket.address(); }
  setNoDelay(noDelay?: boolean): this { this.socket.setNoDelay(noDelay); return this; }
  setKeepAlive(enable?: boolean, delay?: number): this { this.socket.setKeepAlive(enable, delay); return this; }
  ref(): this { this.socket.ref(); return this; }
  unref(): this { this.socket.unref(); return this; }
}

/**
 * Whether node:tls must meet `sock` through an SmcStream: an SMC socket that has not settled
 * on TCP for good (still negotiating, over SMC, or on TCP with a late CLC message to strip).
 * Anything else node:tls wraps as it does, its TCP handle in C++.
 */
export function needsSmcStream(sock: unknown): sock is Socket {
  if (!(sock instanceof net.Socket) || !(kSmc in sock) || sock.destroyed) return false;
  const st = smcState(sock);
  return st !== undefined && st.phase !== 'closed' && !(st.phase === 'tcp' && !st.stripClc);
}

/**
 * Build a TLS socket on an SmcStream. TLSSocket copies its transport's allowHalfOpen (over TCP:
 * the net.Socket's, false unless asked for, so a TLS socket ends its side when the peer's end
 * arrives). An SmcStream is half-open for its own sake, which made every TLS socket over SMC-D
 * half-open: a server's end() left the client's side open and the server waiting for ever, so
 * a series of connections to one server hung after the first. While the TLS socket is built,
 * the stream reports the allowHalfOpen the TCP transport would have had.
 */
function asTransport<T>(stream: SmcStream, allowHalfOpen: boolean, build: () => T): T {
  stream.allowHalfOpen = allowHalfOpen;
  try {
    return build();
  } finally {
    stream.allowHalfOpen = true;
  }
}

interface TlsInternals {
  _handle?: { _parentWrap?: { stream?: unknown } | null } | null;
}

/** The SMC socket under a TLS socket: over SMC-D (an SmcStream) or the TCP socket itself. */
function smcSocketUnder(t: net.Socket): net.Socket | undefined {
  const wrap = (t as unknown as TlsInternals)._handle?._parentWrap;
  if (!wrap) return undefined;
  if (wrap.stream instanceof SmcStream) return wrap.stream.socket;
  return wrap instanceof net.Socket ? wrap : undefined;
}

/** getSmcInfo for TLS sockets: how the socket beneath carries the records. */
export function tlsSmcInfo(t: net.Socket): SmcInfo | undefined {
  const under = smcSocketUnder(t);
  return under ? getSmcInfo(under) : undefined;
}

type HandleMethod = (...a: unknown[]) => unknown;

/**
 * TLSWrap forwards getpeername, getsockname, setNoDelay and setKeepAlive to the handle it
 * wraps. A JSStream has none of them; lend it the TCP handle's, so remoteAddress, address(),
 * setNoDelay() and friends behave on a TLS socket over SMC-D as over TCP.
 */
function lendSocketMethods(jsStream: Record<string, unknown>, sock: Socket): void {
  const tcp = () => (sock as unknown as { _handle?: Record<string, HandleMethod> | null })._handle;
  for (const name of ['getpeername', 'getsockname', 'setNoDelay', 'setKeepAlive']) {
    jsStream[name] = (...a: unknown[]) => {
      const h = tcp();
      return h && typeof h[name] === 'function' ? h[name]!(...a) : -9 /* UV_EBADF */;
    };
  }
  // TLSWrap's ref() and unref() go to the handle it wraps (node:tls proxies them): here the
  // SMC socket's, so an unref()'d TLS socket keeps the process alive no more than over TCP.
  jsStream.ref = () => { sock.ref(); };
  jsStream.unref = () => { sock.unref(); };
}

let hooked = false;
/** Have every TLS socket built over an SmcStream borrow the SMC socket's methods. */
export function hookTls(): void {
  if (hooked) return;
  hooked = true;
  const proto = tls.TLSSocket.prototype as unknown as { _wrapHandle(wrap: unknown, handle: unknown, ...rest: unknown[]): unknown };
  const wrapHandle = proto._wrapHandle;
  proto._wrapHandle = function (this: tls.TLSSocket, wrap: unknown, handle: unknown, ...rest: unknown[]) {
    const stream = (wrap as { stream?: unknown } | null)?.stream;
    if (stream instanceof SmcStream && handle) {
      lendSocketMethods(handle as Record<string, unknown>, stream.socket);
      // node:tls destroys a TLS socket when the net.Socket it wraps closes, before that
      // socket's own 'close' listeners run (its listener came first); through the stream it
      // would be a tick later, and the TLS socket may have been built after the application's
      // listeners (a tls.Server sees the socket once its SMC handshake settled).
      const t = this;
      // (Not a TLS socket whose own destroy closed its handle already and that the application
      // revived since, with _undestroy(): nothing destroys that again over TCP, see below.)
      stream.socket.prependOnceListener('close', () => {
        if (!t.destroyed && !stream.outlivesSocket && (t as unknown as { _handle: unknown })._handle !== null) t.destroy();
      });
      // And the other way: over TCP a destroyed TLS socket has closed the handle it wraps, so
      // nothing reads for it any more. Here the JSStreamSocket in between would go on reading
      // (a read it had scheduled runs into the TLS socket's closed handle: a TypeError emitted
      // as a second error, after an AbortSignal's AbortError): it goes with the TLS socket.
      const js = wrap as net.Socket;
      const destroy = (t as unknown as { _destroy: (err: Error | null, cb: (e?: Error | null) => void) => void })._destroy;
      (t as unknown as { _destroy: typeof destroy })._destroy = function (this: tls.TLSSocket, err, cb) {
        destroy.call(this, err, cb);
        if (!js.destroyed) js.destroy();
      };
      queueWrites(js);
      startWhenConnected(t, stream.socket);
      if (stream.ownConnection) {
        const before = js.listeners('close') as Array<(...a: unknown[]) => void>;
        const res = wrapHandle.call(this, wrap, handle, ...rest);
        noSecondDestroy(t, js, before);
        return res;
      }
    }
    return wrapHandle.call(this, wrap, handle, ...rest);
  };
}

/**
 * node:tls destroys a TLS socket when the socket it wraps closes (_wrapHandle: `if (wrap)
 * wrap.on('close', () => this.destroy())`). A TLS socket tls.connect makes over TCP wraps no
 * socket (its own TCP handle): when it is destroyed, its handle closes and TLSWrap cancels the
 * writes still pending (TLSWrap.close's destroySSL: ECANCELED), and nothing destroys it again.
 * Over an SmcStream the JSStreamSocket's 'close' comes first and destroyed it once more: an
 * application that revived it in its 'error' listener (_undestroy, as test-tls-writewrap-leak
 * does) had its pending write succeed (onWriteComplete gives a destroyed stream's write no
 * error) instead of failing with ECANCELED. For such a socket, node's listener leaves alone a
 * TLS socket whose own destroy closed its handle already (the one case where it differs).
 */
function noSecondDestroy(t: tls.TLSSocket, js: net.Socket, before: Array<(...a: unknown[]) => void>): void {
  for (const l of js.listeners('close') as Array<(...a: unknown[]) => void>) {
    if (before.includes(l)) continue;
    js.off('close', l);
    js.on('close', function (this: unknown, ...a: unknown[]) {
      if ((t as unknown as { _handle: unknown })._handle === null) return;
      l.apply(this, a);
    });
  }
}

interface JsStreamWrites {
  _handle: unknown;
  doWrite(req: unknown, bufs: unknown): number;
  doShutdown(req: unknown): number;
  finishWrite(handle: { finishWrite(req: unknown, status: number): void }, status: number): void;
}

const UV_ECANCELED = -os.constants.errno.ECANCELED;

/**
 * Node's JSStreamSocket carries one write at a time (doWrite asserts that none is under way,
 * lib/internal/js_stream_socket.js), and completes each from setImmediate. TLSWrap keeps to
 * that for its record writes (EncOut waits while write_size_ != 0) but not for the empty
 * write it passes down when the TLS socket writes nothing (TLSWrap::DoWrite, length 0: the
 * underlying stream's Write() without looking at write_size_; renegotiate() writes ''). Over
 * TCP libuv finishes that write at once; here it is under way for a turn, and records that
 * arrive meanwhile (the poller delivers them from the check phase, where setImmediate runs)
 * make TLSWrap write again: ERR_INTERNAL_ASSERTION. Writes that come while one is under way
 * wait and go in order, as uv_write queues them, before a shutdown that came after them.
 */
/** @internal Exported for its test (a real JSStreamSocket, test/smc/tls-queue-writes.test.ts). */
export function queueWrites(js: net.Socket): void {
  const j = js as unknown as JsStreamWrites & Record<symbol, unknown>;
  const own = Object.getOwnPropertySymbols(js);
  const sym = (d: string) => own.find((k) => k.description === d);
  const kWrite = sym('kCurrentWriteRequest');
  const kShutdown = sym('kPendingShutdownRequest');
  const kClosing = sym('kPendingClose');
  if (!kWrite || !kShutdown || !kClosing || typeof j.doWrite !== 'function' || typeof j.finishWrite !== 'function' || typeof j.doShutdown !== 'function') return;
  const doWrite = j.doWrite;
  const finishWrite = j.finishWrite;
  const doShutdown = j.doShutdown;
  const queue: Array<[unknown, unknown]> = [];
  j.doWrite = function (this: typeof j, req, bufs) {
    if (this[kWrite] !== null || queue.length > 0) {
      queue.push([req, bufs]);
      return 0;
    }
    return doWrite.call(this, req, bufs);
  };
  // A shutdown while writes wait goes after them. TLSWrap's shuts down from inside a write's
  // completion (finishWrite -> the TLS socket's write callback -> its end()'s _final), when no
  // write is under way but the queue is not empty: node's doShutdown would start it at once,
  // and the next queued write would then fail its assertion that no shutdown is under way.
  j.doShutdown = function (this: typeof j, req) {
    if (queue.length > 0) {
      this[kShutdown] = req;
      return 0;
    }
    return doShutdown.call(this, req);
  };
  j.finishWrite = function (this: typeof j, handle, status) {
    if (this[kWrite] === null || queue.length === 0) return finishWrite.call(this, handle, status);
    // The shutdown waits for the queued writes; a write TLSWrap makes as this one completes
    // (inside finishWrite) joins the queue behind them, and so does a shutdown it makes then.
    const before = this[kShutdown];
    this[kShutdown] = null;
    finishWrite.call(this, handle, status);
    const during = this[kShutdown];
    this[kShutdown] = null;
    while (queue.length > 0 && this[kWrite] === null) {
      const [req, bufs] = queue.shift()!;
      // Closing (doClose cancels what is under way): the queued writes are cancelled too.
      if (this[kClosing] || this._handle === null) handle.finishWrite(req, UV_ECANCELED);
      else doWrite.call(this, req, bufs);
    }
    const shutdown = before ?? during;
    if (shutdown) {
      if (this[kWrite] !== null) this[kShutdown] = shutdown;
      else doShutdown.call(this, shutdown);
    }
  };
}

/**
 * node:tls starts the handshake of a client when its connection is up: tls.connect makes
 * _start a 'connect' listener of the TLS socket, ahead of the application's (and TLSSocket's
 * _init has it wait while a net.Socket it wraps connects). Over the SmcStream of a socket
 * still connecting it would start at once: a handshake that fails as it starts (no protocol
 * the client's options allow) failed before there was a connection, and the server saw none,
 * where over TCP it gets the client's alert (its tlsClientError reports it). So _start waits
 * for the TLS socket's 'connect' (relayConnect emits it), its listener ahead of the
 * application's as node:tls's own: the ClientHello goes before what a 'connect' listener
 * does (an end() there shuts down after it). Without relayConnect (an SmcStream the
 * application handed to tls.connect), it waits for the SMC socket's 'connect'.
 */
function startWhenConnected(t: tls.TLSSocket, sock: Socket): void {
  if (!sock.connecting) return;
  const tt = t as tls.TLSSocket & { _start(): void };
  const start = tt._start;
  tt._start = function (this: typeof tt) {
    if (!sock.connecting) return start.call(this);
    let started = false;
    const go = () => { if (!started) { started = true; start.call(this); } };
    this.once('connect', go);
    sock.once('connect', () => { if (!this.connecting) go(); });
  };
}

/** A destination this process can tell, without a lookup, to be a local SMC listener. */
function smcDestination(o: tls.ConnectionOptions, smcOpts: ResolvedSmcOptions): boolean {
  if (o.socket || o.path || o.port === undefined) return false;
  const host = o.host ?? 'localhost';
  const port = Number(o.port);
  try {
    if (host === 'localhost') return isSmcListener('127.0.0.1', port) || isSmcListener('::1', port);
    if (net.isIP(host) === 0) return false;
    if (isSmcListener(host, port)) return true;
    // Another host: over SMC-R only where discovery already said yes. Otherwise node:tls's own
    // (a TLS stream through JS costs more than TLSWrap, and most destinations have no SMC-R),
    // and the question is asked for the next connection.
    return smcrOf(smcOpts) !== undefined && net.isIPv4(host) && smcrKnownListener(host, port);
  } catch {
    return false;
  }
}

/** node:tls's own connect, taken before the auto preload replaces tls.connect with connectTls. */
const plain = tls.connect as (...a: unknown[]) => tls.TLSSocket;

/**
 * tls.connect, over SMC-D when the destination is a local SMC listener; otherwise exactly
 * node:tls's connect. Arguments as tls.connect's.
 */
export function connectTls(smcOpts: ResolvedSmcOptions, ...args: unknown[]): tls.TLSSocket {
  const [opts, cb] = normalizeConnectArgs(args);
  const o = opts as tls.ConnectionOptions;
  if (o.socket) return overGivenSocket(o, cb, args);
  if (!smcOpts.enabled || !smcDestination(o, smcOpts)) return plain(...args);
  hookTls();
  const sock = Socket.adoptClient(new net.Socket({ allowHalfOpen: true }), smcOpts);
  const host = o.host ?? 'localhost';
  const { localAddress, family } = o as { localAddress?: string; family?: number };
  sock.connect({ port: Number(o.port), host, ...(localAddress ? { localAddress } : {}), ...(family ? { family } : {}) });
  if (o.timeout) sock.setTimeout(o.timeout);
  const servername = o.servername ?? (net.isIP(host) ? undefined : host);
  const stream = new SmcStream(sock);
  stream.ownConnection = true;
  let t: tls.TLSSocket;
  try {
    t = asTransport(stream, Boolean((o as { allowHalfOpen?: boolean }).allowHalfOpen),
      () => plain({ ...o, socket: stream, ...(servername ? { servername } : {}) }, ...(cb ? [cb] : [])));
  } catch (err) {
    // node:tls refused the options (a bad cipher list, pfx, ...) and throws, as it does before
    // it connects: the connection begun here must not live on (it kept the process running,
    // and its 'error' had no listener).
    stream.destroy();
    sock.destroy();
    throw err;
  }
  useOnread(t, (o as { onread?: unknown }).onread);
  relayConnect(sock, t);
  return t;
}

/**
 * tls.connect's onread ({ buffer, callback }): node:tls gives it to the TLS socket only when
 * it makes the connection itself (TLSSocket: `onread: !socket ? tlsOptions.onread : null`),
 * and here it is handed a stream, so the cleartext would come as 'data'. As net.Socket's
 * constructor and initSocketHandle do with it (lib/net.js): node's own symbols on the TLS
 * socket (kBuffer, kBufferCb, kBufferGen, found by their descriptions), and the buffer given
 * to TLSWrap (useUserBuffer), before the TLS socket reads (node:tls starts on the next tick).
 */
function useOnread(t: tls.TLSSocket, onread: unknown): void {
  if (onread === null || typeof onread !== 'object') return;
  const { buffer, callback } = onread as { buffer?: unknown; callback?: unknown };
  if (!(isUint8Array(buffer) || typeof buffer === 'function') || typeof callback !== 'function') return;
  const own = Object.getOwnPropertySymbols(t);
  const sym = (d: string) => own.find((k) => k.description === d);
  const kBuffer = sym('kBuffer');
  const kBufferCb = sym('kBufferCb');
  const kBufferGen = sym('kBufferGen');
  const handle = (t as unknown as { _handle?: { useUserBuffer?(b: Uint8Array): void } | null })._handle;
  if (!kBuffer || !kBufferCb || !kBufferGen || typeof handle?.useUserBuffer !== 'function') return;
  const slots = t as unknown as Record<symbol, unknown>;
  slots[kBufferCb] = callback;
  let userBuf: unknown = buffer;
  if (typeof buffer === 'function') {
    slots[kBuffer] = true;
    slots[kBufferGen] = buffer;
    userBuf = (buffer as () => unknown)();
  }
  if (!isUint8Array(userBuf)) return;
  slots[kBuffer] = userBuf;
  handle.useUserBuffer(userBuf);
}

/**
 * The TLS socket learns of the TCP connection only through its stream: relay 'connect' (http's
 * agent and timeouts wait for it) once the TCP socket is connected, as node:tls does for a
 * net.Socket it wraps.
 */
function relayConnect(sock: net.Socket, t: tls.TLSSocket): void {
  if (!sock.connecting) return;
  sock.once('connect', () => { (t as unknown as { connecting: boolean }).connecting = false; t.emit('connect'); });
  (t as unknown as { connecting: boolean }).connecting = true;
}

/**
 * tls.connect({ socket }): TLS over the very connection the application hands in, as node:tls
 * does. node:tls would wrap that socket's TCP handle in C++ and read and write the TCP stream
 * itself, around softrdma: over an SMC client socket (every net.Socket under the preload) the
 * TLS records would bypass an SMC-D connection, and the SMC handshake bytes of one still
 * negotiating (the server's Accept) would reach OpenSSL while the ClientHello reached a server
 * waiting for the Confirm ("SMC handshake out of sync"). So unless the socket has settled on
 * TCP for good, TLS runs on it through an SmcStream, which carries whatever the socket settles
 * on (its writes are held while it negotiates, and its 'data' is the application's bytes only).
 */
function overGivenSocket(o: tls.ConnectionOptions, cb: (() => void) | undefined, args: unknown[]): tls.TLSSocket {
  const smcSock = o.socket;
  // A plain socket, or one on TCP with no late CLC message to strip: node:tls's own path.
  if (!needsSmcStream(smcSock)) return plain(...args);
  return overSmcStream(smcSock, (stream) => plain({ ...o, socket: stream }, ...(cb ? [cb] : [])));
}

/**
 * TLS on an SMC socket the application gave (tls.connect({ socket }), or the TLSSocket class
 * under the preload): `build` makes the TLS socket on the socket's SmcStream, with the
 * allowHalfOpen the TCP transport would have had, and the TLS socket (`tlsOf` the result, if
 * build returns something else) learns of the socket's 'connect'.
 */
function overSmcStream<T>(sock: Socket, build: (stream: SmcStream) => T, tlsOf: (r: T) => unknown = (r) => r): T {
  hookTls();
  const stream = new SmcStream(sock);
  const r = asTransport(stream, sock.allowHalfOpen, () => build(stream));
  const t = tlsOf(r);
  if (t instanceof net.Socket) relayConnect(sock, t as tls.TLSSocket);
  return r;
}

/**
 * A tls.Server (https.Server too) answering SMC: each accepted socket settles its SMC
 * handshake before node:tls sees it, and meets TLS over SMC-D or SMC-R through an SmcStream,
 * or as the TCP socket it is when the handshake fell back.
 */
export function deferTlsConnection(server: tls.Server, emit: (...a: unknown[]) => boolean, sock: Socket): void {
  hookTls();
  const hand = () => {
    if (getSmcInfo(sock).mode === 'TCP') return emit.call(server, 'connection', sock);
    // node:tls's connection listener builds the TLS socket at once: not half-open unless the
    // server is (the accepted socket's allowHalfOpen is the server's).
    const stream = new SmcStream(sock);
    return asTransport(stream, sock.allowHalfOpen, () => emit.call(server, 'connection', stream));
  };
  // On a fallback the bytes that told the server so are pushed back into the socket right
  // after the 'smc' event; node:tls reads them when it starts, on the next tick.
  if (getSmcInfo(sock).pending) {
    const timeoutMs = handshakeTimeoutOf(server);
    // A client that never says a word never settles the SMC handshake, and node:tls, which
    // has not seen the socket, would never time its handshake out: do what it does after
    // handshakeTimeout, a tlsClientError with ERR_TLS_HANDSHAKE_TIMEOUT (node:tls 20 leaves
    // the connection open; so does this).
    let timedOut = false;
    const timer = timeoutMs <= 0 ? undefined : setTimeout(() => {
      if (!getSmcInfo(sock).pending || sock.destroyed) return;
      timedOut = true;
      const err = Object.assign(new Error('TLS handshake timeout'), { code: 'ERR_TLS_HANDSHAKE_TIMEOUT' });
      server.emit('tlsClientError', err, sock);
    }, timeoutMs);
    timer?.unref();
    // node:tls has not seen the socket yet: an error now (a reset because the client's Confirm
    // did not fit) goes where node:tls sends errors before a handshake, not to nobody (which
    // would make it an uncaught exception).
    const onError = (err: Error) => { server.emit('tlsClientError', err, sock); };
    sock.on('error', onError);
    sock.once('close', () => { clearTimeout(timer); sock.off('error', onError); });
    // After the timeout the connection gets no TLS (node:tls reports one error per connection).
    sock.once('smc', () => {
      clearTimeout(timer);
      sock.off('error', onError);
      if (timedOut) sock.destroy(); else process.nextTick(hand);
    });
    // A server with pauseOnConnect has its sockets made not reading (net.Server's onconnection:
    // pauseOnCreate), and the handshake would wait for ever for the client's first bytes.
    // node:tls reads such a socket at once all the same (initRead's read(0) starts the handle
    // whatever the pause; only the TLS socket stays paused): so may the handshake.
    if ((server as tls.Server & { pauseOnConnect?: boolean }).pauseOnConnect) sock.read(0);
  } else hand();
}

/** node:tls's handshakeTimeout of a server (its own symbol; 120 s, its default, if not found; ≤ 0: none, as node:tls). */
function handshakeTimeoutOf(server: tls.Server): number {
  const sym = Object.getOwnPropertySymbols(server).find((x) => x.description === 'handshake-timeout');
  const v = sym ? (server as unknown as Record<symbol, unknown>)[sym] : undefined;
  return typeof v === 'number' ? v : 120_000;
}

let wrappingHooked = false;

/**
 * The auto preload: TLS that the application builds on an SMC socket itself goes through an
 * SmcStream too, as tls.connect({ socket }) does (overGivenSocket): `new tls.TLSSocket(sock,
 * { isServer: true })` on an accepted socket, and `tlsServer.emit('connection', sock)` handing
 * one to a tls.Server. node:tls would wrap the socket's TCP handle in C++ (TLS records around
 * an SMC connection; the CLC messages of one still negotiating read as TLS). tls.TLSSocket
 * becomes a Proxy of the class (instanceof, subclasses and statics as before) whose construct
 * swaps such a socket for its stream; tls.Server's emit hands such a socket over once its
 * handshake settled, as an SMC tls.Server's own accepted sockets are (deferTlsConnection).
 */
export function hookTlsWrapping(): void {
  if (wrappingHooked) return;
  wrappingHooked = true;
  const Original = tls.TLSSocket;
  tls.TLSSocket = new Proxy(Original, {
    construct(target, args: unknown[], newTarget) {
      const sock = args[0];
      if (!needsSmcStream(sock)) return Reflect.construct(target, args, newTarget) as object;
      return overSmcStream(sock, (stream) => Reflect.construct(target, [stream, ...args.slice(1)], newTarget) as object);
    },
    // An ES5-style subclass (util.inherits, then tls.TLSSocket.call(this, sock, opts)).
    apply(target, thisArg: unknown, args: unknown[]) {
      const sock = args[0];
      if (!needsSmcStream(sock)) return Reflect.apply(target, thisArg, args) as unknown;
      return overSmcStream(sock, (stream) => Reflect.apply(target, thisArg, [stream, ...args.slice(1)]) as unknown, () => thisArg);
    },
  });
  const proto = tls.Server.prototype as unknown as { emit(...a: unknown[]): boolean };
  const emit = proto.emit;
  proto.emit = function (this: tls.Server, event: unknown, conn?: unknown): boolean {
    if (event === 'connection' && needsSmcStream(conn)) {
      deferTlsConnection(this, emit, conn);
      return true;
    }
    return emit.apply(this, arguments as unknown as unknown[]);
  };
}
