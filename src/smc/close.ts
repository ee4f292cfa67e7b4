// Closing an SMC socket as close(2) closes TCP (Linux: smc_close.c): end() is
// peer_done_writing, destroy() an orderly close (peer_conn_closed) when nothing received is
// left unread and an abort (peer_conn_abort) when something is, when the peer's write waits
// for room (its bytes would reach a closed TCP socket: a RST) or the application reset; a
// peer whose TCP connection ends without a closing CDC has exited. During the handshake the
// server's TCP handle lingers instead of answering a CLC message in flight with a RST.

import net from 'node:net';
import { performance } from 'node:perf_hooks';
import { declineOnRelease, onClientConnect, releaseHandshake, releasePrefetch, writeHeldOnRelease } from './handshake.js';
import { smcrPeerEndedHandshake } from './smcr/clc-flow.js';
import type { Socket } from './socket.js';
import { restoreOwner, type SmcState } from './state.js';
import { recordConnection } from './handshake-control.js';
import { untrack } from './status.js';
import { peerReset } from './data.js';
import type { SmcTransport } from './transport.js';

/**
 * destroy() of an SMC socket (Linux: smc_release), before node:net's own _destroy: a write the
 * handshake held goes out over TCP where it still can (handshake.ts writeHeldOnRelease); a
 * server still in the handshake, or a client that just declined, lingers (lingerClose);
 * anything else closes by TCP's rule (teardown).
 */
export function smcRelease(sock: Socket, s: SmcState, err?: Error | null): void {
  // The peer reset the connection: TCP hands us what it sent before the reset first (and takes
  // a reset only in sequence: RFC 5961), so a Confirm we have not read was never sent.
  if ((err as NodeJS.ErrnoException | null | undefined)?.code === 'ECONNRESET') smcrPeerEndedHandshake(s);
  releasePrefetch(s);
  const reset = resetting(sock);
  let linger = s.role === 'server' && (s.phase === 'srv-wait' || s.phase === 'srv-accepting') && !reset;
  // Held while connecting, a write fails as node:net's queued ones do (teardown).
  if (s.held !== undefined && s.phase !== 'idle' && writeHeldOnRelease(sock, s) && !reset) linger = true;
  teardown(sock, s);
  if (linger) lingerClose(sock, s.opts.timeout);
}

/** Is this destroy() resetAndDestroy()'s (node:net sets the flag before it destroys)? */
function resetting(sock: net.Socket): boolean {
  return (sock as unknown as { resetAndClosing?: boolean }).resetAndClosing === true;
}

function closedBeforeConnection(): NodeJS.ErrnoException {
  return Object.assign(new Error('Socket closed before the connection was established'), { code: 'ERR_SOCKET_CLOSED_BEFORE_CONNECTION' });
}

/**
 * TCP's end while the stream runs over SMC (Linux: smc_close_passive_work): the peer's closing
 * CDC, or, without one, the peer's process is gone.
 */
export function onTcpEndWhileSmc(sock: Socket, s: SmcState): void {
  s.tcpEnded = true;
  const conn = s.conn;
  if (!conn || conn.released) return;
  // The peer writes its CDC before it closes TCP, so the CDC is current now.
  conn.process();
  if (conn.released || conn.peerFinished) return;
  if (conn.peerTcpEnded) return conn.peerTcpEnded();
  // No closing CDC: the peer's process ended (exit, a signal) and its kernel closed the TCP
  // connection, with a FIN if nothing was left unread there and a RST otherwise. The same rule
  // on the ring: bytes of ours it never consumed make it an abort, as the RST would.
  if (conn.unconsumed > 0) peerReset(sock, conn, 'peer closed the TCP connection with data of ours unread (process died?)');
  else conn.peerExited();
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
  const handle = takeHandle(sock);
  if (handle) lingerHandle(handle, timeout);
}

interface TcpHandle { bytesRead: number; bytesWritten: number; readStop?(): number; unref?(): void; reset?(cb: () => void): number; close(): void }

/**
 * The socket's TCP handle, for the caller to close later, and a stand-in in its place: node:net's
 * _destroy, next, "closes" the stand-in, keeps the byte counts from it and emits 'close' with
 * hadError from its callback, as for a real handle (without a handle it emits 'close' with no
 * argument).
 */
function takeHandle(sock: Socket): TcpHandle | null {
  const self = sock as unknown as { _handle: object | null };
  const handle = self._handle as TcpHandle | null;
  if (handle) self._handle = { bytesRead: handle.bytesRead, bytesWritten: handle.bytesWritten, onread: null, close: closedLater };
  return handle;
}

/** A stand-in handle's close: the callback comes in a later turn, as libuv's close callback does. */
function closedLater(cb?: () => void): void {
  if (cb) setImmediate(cb);
}

/**
 * The longest a close waits for its closing CDC to reach the peer: past the link's own verdict
 * (TEST_LINK's 30 s and its 2 s wait, or a failover), which ends the wait sooner. Then the CDC
 * is taken as lost.
 */
const SENT_WAIT_MS = 60_000;

/**
 * go(true) once what conn posted (its closing CDC last) has reached the peer, at once for a
 * transport without whenSent (SMC-D: the CDC is in shared memory); go(false) when it will not
 * (the group's last link failed, a failover left a released connection behind, SENT_WAIT_MS passed). Over
 * SMC-R the CDC goes by RoCE and the FIN by TCP: a FIN first looks to the peer like this
 * process gone (peerTcpEnded), which under loss (the CDC resent behind a window of WRITEs)
 * could last past the peer's wait and cut the stream short; and a FIN after a CDC that never
 * arrived would do the same for good, so that close is a RST.
 */
export function afterCdcSent(conn: SmcTransport, go: (confirmed: boolean) => void): void {
  if (!conn.whenSent) return go(true);
  let done = false;
  const timer = setTimeout(() => { if (!done) { done = true; go(false); } }, SENT_WAIT_MS);
  timer.unref();
  conn.whenSent((confirmed) => {
    if (done) return;
    done = true;
    clearTimeout(timer);
    go(confirmed);
  });
}

/**
 * destroy() of a connection that closed orderly over SMC-R: the application's socket is done
 * at once, and the TCP handle closes once the closing CDC has reached the peer (a FIN), as
 * end() does (afterCdcSent), or with a RST if it will not. It keeps no process alive meanwhile.
 */
function closeHandleAfterSent(sock: Socket, conn: SmcTransport): void {
  const handle = takeHandle(sock);
  if (!handle) return;
  try { handle.readStop?.(); handle.unref?.(); } catch { /* closing anyway */ }
  afterCdcSent(conn, (confirmed) => {
    try {
      if (confirmed || !handle.reset || handle.reset(() => {}) !== 0) handle.close();
    } catch { /* already closed */ }
  });
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

/** Release everything of the connection; writes still waiting complete as node:net's would. */
function teardown(sock: Socket, s: SmcState): void {
  restoreOwner(s);
  clearTimeout(s.timer);
  s.timer = undefined;
  s.clcRead = false;
  const conn = s.conn;
  if (conn && !conn.released) {
    if (s.learnKey !== undefined) recordConnection(s.learnKey, conn.bytesSent + conn.bytesReceived, performance.now() - s.startedAt);
    // TCP's close rule, which Linux's smc_close_active applies too: peer_conn_closed (a FIN)
    // when nothing is left unread, peer_conn_abort (a RST) when data is, or when the
    // application asked for a reset. Writes still queued are dropped, as libuv cancels them.
    // Bytes that reached the ring since the last poll, on a socket that reads all that comes
    // (flowing, nothing held back), count as read: libuv reads TCP as it arrives, while the
    // ring is looked at only when polled or signalled. node:tls closes its transport right
    // after the peer's last record, which would otherwise make its close an abort.
    const reset = resetting(sock);
    // An onread socket reads as it arrives unless its callback or pause() stopped it.
    const reading = s.onread ? !s.onread.stopped : sock.readableFlowing === true;
    if (!reset && reading && conn.readable === 0) conn.consumeArrived();
    // A peer whose write waits for room in our buffer (as of the look unreadNow just took)
    // has more to send than arrived: over TCP those bytes would come after close(2) and draw
    // a RST, so this close is an abort too, however much of it was read.
    const unread = conn.unreadNow();
    const aborts = reset || conn.peerAborted || unread > 0 || conn.peerWriteWaits || s.lateBytes > 0;
    if (aborts) conn.abort();
    else conn.closeOrderly();
    conn.release();
    // An orderly close's FIN follows its CDC (a reset may overtake it: it is an abort either way).
    if (!aborts && conn.whenSent) closeHandleAfterSent(sock, conn);
  } else {
    if (s.learnedTcp) {
      // Its byte counts are final: node:net's _destroy, next, closes the handle.
      s.learnedTcp = false;
      recordConnection(s.learnKey!, sock.bytesRead + (sock.bytesWritten ?? 0), performance.now() - s.startedAt);
    }
    declineOnRelease(sock, s);
    releaseHandshake(s);
  }
  s.dmb = undefined;
  s.remote = undefined;
  // A connect that failed never emitted 'connect': its handshake listener would stay, one more
  // with every retry on the same socket.
  sock.removeListener('connect', onClientConnect);
  if (s.pending || s.held || s.heldFinal) {
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
      // socket is destroyed (onWriteComplete on a destroyed stream); nothing is emitted. Later,
      // not inside destroy(): node:net's callback comes from libuv or a nextTick.
      process.nextTick(() => { for (const cb of waiting) cb?.(); });
    }
  }
  s.phase = 'closed';
  untrack(sock);
}
