// The transport an SMC connection's byte stream runs over once the CLC handshake settled:
// what the socket (socket.ts, data.ts, close.ts) needs from it, and all it may use. In Linux
// this is what a struct smc_connection reaches through its link group (conn->lgr: an ISM
// device's DMBs for SMC-D, RDMA links for SMC-R), with smc_tx.c, smc_rx.c, smc_cdc.c and
// smc_close.c calling into either. SMC-D's is SmcdConnection (smcd-connection.ts); SMC-R's
// would be a second implementation, picked by the handshake (handshake.ts), with no change
// to the socket.
//
// Types only: nothing here exists at run time. Each connection has one transport for its
// life, so the socket's call sites see one class per connection, and with only SMC-D, one
// class in all (V8 inlines them as the direct calls they were).

/** Which SMC variant a transport is (getSmcInfo's mode). */
export type SmcTransportMode = 'SMCD' | 'SMCR';

/** A byte total in CDC wire form: {wrap, count} relative to the ring (wrap is 16 bits). */
export interface WireCursor {
  wrap: number;
  count: number;
}

/** The four cursors of a connection, as smcss -d shows them (Linux: smc_diag's smc_diag_conninfo). */
export interface TransportCursors {
  /** Our producer cursor in the peer's ring, and the peer's consumer cursor there. */
  tx: WireCursor;
  peerCons: WireCursor;
  /** The peer's producer cursor in our ring, and our consumer cursor. */
  rx: WireCursor;
  cons: WireCursor;
}

/**
 * What a transport tells the socket that drives it. Called from within the transport's own
 * methods (process(), resume(), peerExited(); SMC-D's checkPeer(), which its poller calls
 * while a write waits), never later on their own.
 */
export interface TransportEvents {
  /** New bytes in order; return false to stop delivery until resume(). */
  data(chunk: Buffer): boolean;
  /**
   * node:net's onread: the buffer the application supplies for the next bytes, which the
   * transport copies into instead of allocating and calling data(); undefined: use data().
   * Optional, with userData: a transport's own users (tests) need not read this way.
   */
  userBuffer?(): Uint8Array | undefined;
  /** n bytes (0 < n <= buf.length) were copied into buf, userBuffer()'s; false: stop until resume(). */
  userData?(n: number, buf: Uint8Array): boolean;
  /** The peer finished writing and everything it wrote was delivered. */
  peerDone(): void;
  /** The peer aborted the connection; message: why, where the transport saw no abort from the peer (its process died). */
  peerAbort(message?: string): void;
  /** The peer consumed data: blocked writes can continue. */
  writable(): void;
  /**
   * The connection cannot go on: the peer's cursors make no sense (EPROTO), or `code` names
   * another cause (ECONNABORTED: the device under the connection went away, as Linux's
   * smc_conn_kill reports it).
   */
  protocolError(message: string, code?: string): void;
}

export interface SmcTransport {
  readonly mode: SmcTransportMode;

  // Sending (Linux smc_tx.c).
  /** Copy as much of data as fits into the peer's buffer and tell the peer; returns the bytes taken. */
  write(data: Uint8Array): number;
  /** There was activity: watch for the peer's answer (data, consumer cursor) for a while. */
  kick(): void;

  // Receiving (Linux smc_rx.c, smc_cdc.c's receive side).
  /** Look at what the peer wrote and act on it (events). Returns whether anything changed. */
  process(): boolean;
  /** The application wants data again. Returns whether anything happened. */
  resume(): boolean;
  /** Deliver nothing until resume() (node:net's pause() of an onread socket stops reading). */
  pause(): void;
  /** Bytes received and not yet delivered, as of the last process(). */
  readonly readable: number;
  /** Bytes the peer has written that we have not consumed, as the buffer says now: close(2)'s question. */
  unreadNow(): number;
  /** Count everything that arrived as read, without delivering it (a flowing reader closing). */
  consumeArrived(): void;

  // Closing (Linux smc_close.c): the connection-state flags of the CDC.
  /** peer_done_writing: no more data from us (half-close). */
  closeWrite(): void;
  /** peer_conn_closed: an orderly end. */
  closeOrderly(): void;
  /** peer_conn_abort. */
  abort(): void;
  /**
   * done(true) once what was posted so far (the closing CDC among it) has reached the peer,
   * done(false) once it never will. Transports whose CDCs travel apart from TCP (SMC-R)
   * implement it, so that the TCP FIN does not overtake the closing CDC (and a RST goes where
   * it cannot arrive); SMC-D's CDC is in shared memory at once.
   */
  whenSent?(done: (confirmed: boolean) => void): void;
  /** The peer's process is gone without a closing message: take it as peer_conn_closed. */
  peerExited(): void;
  /**
   * The peer's TCP connection ended and no closing message was seen. Transports whose messages
   * travel apart from TCP (SMC-R: the CDC by RoCE) implement this to wait a bounded time for
   * the closing message before deciding between peerExited's end and an abort; without it the
   * socket decides at once (SMC-D: the CDC is in shared memory before the FIN is sent).
   */
  peerTcpEnded?(): void;
  /**
   * The peer is gone with a reset and no closing message (its process died with something
   * unread): report it as the peer's abort, after what a stopped reader has yet to read.
   * Without it the socket fails at once (close.ts).
   */
  peerReset?(cause: string): void;
  /** The peer sent done-writing, closed or aborted. */
  readonly peerFinished: boolean;
  /**
   * The peer's write waits for room in our buffer (write_blocked as of the last look): it has
   * more to send, so a close now is an abort (close.ts), as close(2) with data coming draws a RST.
   */
  readonly peerWriteWaits: boolean;
  /** The peer closed its end entirely: it reads nothing more. */
  readonly peerClosed: boolean;
  readonly peerAborted: boolean;
  /** Bytes we wrote that the peer has not consumed. */
  readonly unconsumed: number;
  /** Give the buffers back and stop watching; nothing may be called afterwards but the getters. */
  release(): void;
  readonly released: boolean;

  // Accounting (getSmcInfo, smcss).
  readonly bytesSent: number;
  readonly bytesReceived: number;
  /** The size of the buffer the peer writes into, and of the peer's, which we write into. */
  readonly bufferSize: number;
  readonly peerBufferSize: number;
  /** What smcss -d / -D show (Linux smc_diag): cursors, ring sizes, CDC flags, the transport's own part. */
  diag(): TransportDiag;
}

/** A connection as Linux's smc_diag reports it: smc_diag_conninfo, plus dmbinfo for SMC-D. */
export interface TransportDiag {
  cursors: TransportCursors;
  /** The ring we write into (the peer's), ours, and the peer's as the peer announced it. */
  sndbufSize: number;
  rmbeSize: number;
  peerRmbeSize: number;
  /** The CDC flag bytes we send (producer flags, connection-state flags) and the peer's. */
  prodFlags: number;
  connFlags: number;
  peerProdFlags: number;
  peerConnFlags: number;
  /** SMC-D (smcd_diag_dmbinfo): our DMB's token, the peer's GID and its DMB's token. */
  smcd?: { token: bigint; peerGid: bigint; peerToken: bigint };
}
