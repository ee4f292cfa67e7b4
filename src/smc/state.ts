// A socket's SMC state: the record every part of an SMC socket works on (Linux: struct
// smc_sock and its struct smc_connection, smc.h), what getSmcInfo() and smcss read from it,
// and the byte counters an SMC socket shows in place of TCP's.

import net from 'node:net';
import { unfollow } from './handle-owner.js';
import type { Dmb, IsmDevice, RemoteDmb } from '../ism/device.js';
import type { Proposal } from './clc.js';
import type { ResolvedSmcOptions } from './options.js';
import type { SmcrConnection } from './smcr/connection.js';
import { smcrInfo, type SmcrInfo } from './smcr/diag.js';
import type { Socket } from './socket.js';
import type { SmcTransport } from './transport.js';

/**
 * A socket's SMC state. Symbol.for: two copies of softrdma in one process (an application's
 * own dependency and the one smc-run preloads) see the same state on a socket.
 */
export const kSmc = Symbol.for('softrdma.smc');

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
  /**
   * Of smcBytesReceived, bytes that came after the end was read and were dropped (a Linux
   * peer's close that stopped waiting for room sends its rest later); absent when none.
   */
  lateBytesDropped?: number;
  /** DMB sizes (ours, which the peer writes into, and the peer's). */
  bufferSize?: number;
  peerBufferSize?: number;
  /**
   * SMC-R connections: the link group (its ID, role, type, the peer's system ID and GID) and the
   * link (link id and UID, RoCE device and port, GIDs, QPNs, path MTU) the connection runs over,
   * as smcss -R and `softrdma linkgroup` show them.
   */
  smcr?: SmcrInfo;
}

/** 'smcd': the stream runs over the transport in conn (SMC-D's is the only one yet). */
export type Phase = 'idle' | 'tcp' | 'proposing' | 'srv-wait' | 'srv-accepting' | 'smcd' | 'closed';

export interface Held {
  writev: boolean;
  data: unknown;
  encoding: BufferEncoding;
  cb: (err?: Error | null) => void;
}

export interface SmcState {
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
  /** SMC-D's handshake: the ism device, the peer's GID and the two DMBs, until conn takes them. */
  device: IsmDevice | undefined;
  /** The peer's ism GID, once known: DMBs are reused only between the same two devices. */
  peerGid: bigint | undefined;
  dmb: Dmb | undefined;
  remote: RemoteDmb | undefined;
  /** The transport, from the moment the handshake settled on SMC. */
  conn: SmcTransport | undefined;
  proposal: Proposal | undefined;
  timer: NodeJS.Timeout | undefined;
  /** A server's handshake timer ran out once after its Accept: it waits one more period (handshake.ts startTimer). */
  acceptGrace: boolean;
  pending: { buf: Buffer; off: number; cb: (err?: Error | null) => void } | undefined;
  clcIn: number;
  clcOut: number;
  strayTcpBytes: number;
  /**
   * Bytes the peer sent after the end this socket already read (a Linux sender whose close
   * stopped waiting sends the rest later): dropped, and the close is an abort (data.ts).
   */
  lateBytes: number;
  writeDone: boolean;
  /** Whether the peer had finished writing when we did (smcss: APPFINCLOSEWAIT1, else PEERCLOSEWAIT2). */
  writeDoneAfterPeer: boolean;
  wroteAfterPeerClosed: boolean;
  /** The port connect() was given (client). */
  targetPort: number | undefined;
  /** The host connect() was given, when an IPv4 address: the peer's address, without a getpeername(2). */
  targetHost: string | undefined;
  /** connect() named an IPv4 loopback address and no localAddress: the local end is loopback too. */
  loopbackPeer: boolean;
  /** bytesRead/bytesWritten are Socket's (its instances; adopted sockets once withSmcCounters ran). */
  counters: boolean;
  /** Server: the accepted handle whose new owners join the handshake until it settles (handle-owner.ts). */
  ownerHandle: object | undefined;
  /** Client: the peer this connection teaches handshake-control.ts about, and when it started (ms). */
  learnKey: string | undefined;
  /** Client: went to TCP by the learned rule; its bytes and lifetime are recorded as it closes (close.ts). */
  learnedTcp: boolean;
  startedAt: number;
  /** When connect() was called (performance.now()), 0 before: the TCP handshake's time bounds SMC-R discovery's wait. */
  connectAt: number;
  /**
   * SMC-R discovery's query this socket's connect() sent (handshake.ts prefetchSmcrDiscovery),
   * until its connect ends ('connect', or a close before it); `revalidated`: it asked a cached
   * yes again (counted once, there).
   */
  prefetch: { query: object; revalidated: boolean } | undefined;
  /** node:net's onread on this socket (data.ts): the application's callback, and its stops. */
  onread: OnreadState | undefined;
  /** Client: the handshake reads the TCP handle whatever the pause state; settling gives node:net's back (handshake.ts). */
  clcRead: boolean;
  /**
   * Bytes handed to the transport by write() (node:net's _bytesDispatched): a write cut short
   * by destroy() still counts whole, as node:net's does once libuv has it.
   */
  bytesDispatched: number;
  /** Over SMC, TCP's end or a read error was read: the handle has nothing more to say and is never read again. */
  tcpEnded: boolean;
}

export interface OnreadState {
  /** The application's onread.callback (node:net's own slot holds data.ts's wrapper). */
  callback: (nread: number, buf: Uint8Array) => unknown;
  /** onread.buffer when it is a function (node's slot holds data.ts's wrapper), else null. */
  gen: (() => unknown) | null;
  /** The callback returned false, or pause(): nothing is delivered until resume(). */
  stopped: boolean;
  /** The peer's end came while stopped: it follows the data at resume(). */
  endPending: boolean;
  /** Bytes of a TCP read not delivered when the callback returned false (fallback, after CLC). */
  held: Buffer | undefined;
}

export function newState(role: 'client' | 'server', opts: ResolvedSmcOptions, counters: boolean): SmcState {
  return {
    role, phase: role === 'client' ? 'idle' : 'srv-wait', opts, clc: undefined, held: undefined, heldFinal: undefined,
    stripClc: false, serverDecline: 0, fallbackReason: undefined, peerDeclineReason: undefined, fallbackCause: undefined,
    device: undefined, peerGid: undefined, dmb: undefined, remote: undefined, conn: undefined, proposal: undefined, timer: undefined, acceptGrace: false,
    pending: undefined, clcIn: 0, clcOut: 0, strayTcpBytes: 0, lateBytes: 0, writeDone: false, writeDoneAfterPeer: false, wroteAfterPeerClosed: false,
    targetPort: undefined, targetHost: undefined, loopbackPeer: false, counters, ownerHandle: undefined, learnKey: undefined, learnedTcp: false, startedAt: 0, connectAt: 0, prefetch: undefined, onread: undefined,
    clcRead: false, bytesDispatched: 0, tcpEnded: false,
  };
}

/**
 * Before an adopted socket's byte counts leave TCP's (CLC bytes sent or received, writes held
 * during the handshake, data through shared memory): give it Socket's bytesRead/bytesWritten.
 */
export function withSmcCounters(sock: Socket, s: SmcState): void {
  if (s.counters) return;
  s.counters = true;
  Object.defineProperty(sock, 'bytesRead', counterAccessors.bytesRead);
  Object.defineProperty(sock, 'bytesWritten', counterAccessors.bytesWritten);
}

/** The handshake settled (or the socket closed): a new owner of the handle no longer joins it. */
export function restoreOwner(s: SmcState): void {
  const h = s.ownerHandle;
  if (h) { s.ownerHandle = undefined; unfollow(h); }
}

interface PeerName { address?: string; port?: number }

/**
 * The peer's address and port, as remoteAddress and remotePort give them, without filling
 * node:net's cache (_peername, _getpeername): node:net shows a peer name it was once asked for
 * even after 'close', and none for a socket whose application never asked; the handshake's
 * own look must not change that.
 */
export function peerName(sock: net.Socket): PeerName {
  const o = sock as unknown as { _peername?: PeerName; _handle?: { getpeername?(out: PeerName): number } | null };
  if (o._peername) return o._peername;
  const h = o._handle;
  if (!h?.getpeername || sock.connecting) return {};
  // Kept per handle (a socket that connects again has a new one): a client's handshake asks
  // up to three times, each a getpeername system call.
  const known = peerNames.get(h);
  if (known) return known;
  const out: PeerName = {};
  if (h.getpeername(out)) return {};
  peerNames.set(h, out);
  return out;
}

const peerNames = new WeakMap<object, PeerName>();

/** An error as node:net makes it for a failed system call (its message 'read ECONNRESET'), and softrdma's reason in smcCause. */
export interface SmcError extends NodeJS.ErrnoException {
  /** Why, in SMC's terms (the peer's abort, its process died, ...): the message stays node:net's, which applications match on. */
  smcCause?: string;
}

function sysError(code: string, errno: number, syscall: string, cause: string): SmcError {
  return Object.assign(new Error(`${syscall} ${code}`), { code, errno, syscall, smcCause: cause });
}

/** ECONNRESET as node:net reports a reset its read saw ('read ECONNRESET'); cause says what SMC saw. */
export function connReset(cause: string): SmcError {
  return sysError('ECONNRESET', -104, 'read', cause);
}

/** EPIPE as node:net reports a write after the peer closed ('write EPIPE'). */
export function brokenPipe(cause: string): SmcError {
  return sysError('EPIPE', -32, 'write', cause);
}

// node:net's own counters, which count the CLC handshake and nothing that went over SMC.
const tcpBytesRead = Object.getOwnPropertyDescriptor(net.Socket.prototype, 'bytesRead')!.get!;
const tcpBytesWritten = Object.getOwnPropertyDescriptor(net.Socket.prototype, 'bytesWritten')!.get!;

/**
 * Socket's byte counters: socket.ts puts them on Socket.prototype, withSmcCounters on adopted
 * sockets that need them. The same getter functions in both places, as before the split.
 */
export const counterAccessors = {
  bytesRead: {
    configurable: true,
    get(this: Socket): number {
      const s = this[kSmc];
      if (s?.conn) return s.conn.bytesReceived;
      return (tcpBytesRead.call(this) as number) - (s?.clcIn ?? 0);
    },
  },
  bytesWritten: {
    configurable: true,
    get(this: Socket): number | undefined {
      const s = this[kSmc];
      // Everything written so far, as node:net counts it, in bytes: every chunk handed to the
      // transport, whole (node's _bytesDispatched: a write destroy() cut short still counts),
      // and the chunks queued behind it (writableLength would count the one in flight twice,
      // and a queued string in characters).
      if (s?.conn) {
        let n = s.bytesDispatched;
        for (const e of (this as unknown as { writableBuffer: Array<{ chunk: unknown; encoding: BufferEncoding }> }).writableBuffer) n += chunkBytes(e.chunk, e.encoding);
        return n;
      }
      const b = tcpBytesWritten.call(this) as number | undefined;
      // node counts a write queued while connecting (its _pendingData); ours are held here.
      return b === undefined ? b : b - (s?.clcOut ?? 0) + heldBytes(s?.held);
    },
  },
} satisfies Record<string, PropertyDescriptor>;

/** A written chunk's size in bytes, as node:net counts it (a string in its encoding). */
function chunkBytes(chunk: unknown, enc: BufferEncoding): number {
  return typeof chunk === 'string' ? Buffer.byteLength(chunk, enc) : (chunk as Uint8Array).byteLength;
}

function heldBytes(h: Held | undefined): number {
  if (!h) return 0;
  if (!h.writev) return chunkBytes(h.data, h.encoding);
  return (h.data as Array<{ chunk: unknown; encoding: BufferEncoding }>).reduce((n, c) => n + chunkBytes(c.chunk, c.encoding), 0);
}

export function toBuffer(data: unknown, encoding: BufferEncoding): Buffer {
  if (Buffer.isBuffer(data)) return data;
  if (typeof data === 'string') return Buffer.from(data, encoding);
  if (data instanceof Uint8Array) return Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  throw new TypeError('unsupported chunk type');
}

/** How this socket carries its data; for a plain node:net socket, mode 'TCP'. */
export function getSmcInfo(sock: net.Socket): SmcInfo {
  const s = (sock as Socket)[kSmc];
  if (!s) return { mode: 'TCP', pending: false, smcBytesSent: 0, smcBytesReceived: 0 };
  const info: SmcInfo = {
    mode: s.conn ? s.conn.mode : 'TCP',
    pending: s.phase === 'idle' || s.phase === 'proposing' || s.phase === 'srv-wait' || s.phase === 'srv-accepting',
    smcBytesSent: s.conn?.bytesSent ?? 0,
    smcBytesReceived: s.conn?.bytesReceived ?? 0,
  };
  if (s.fallbackReason !== undefined) info.fallbackReason = s.fallbackReason;
  if (s.peerDeclineReason !== undefined) info.peerDeclineReason = s.peerDeclineReason;
  if (s.fallbackCause !== undefined) info.fallbackCause = s.fallbackCause;
  if (s.lateBytes > 0) info.lateBytesDropped = s.lateBytes;
  if (s.conn) {
    info.bufferSize = s.conn.bufferSize;
    info.peerBufferSize = s.conn.peerBufferSize;
    if (s.conn.mode === 'SMCR') info.smcr = smcrInfo(s.conn as SmcrConnection);
  }
  return info;
}

/** @internal for status reporting */
export function smcState(sock: net.Socket): SmcState | undefined {
  return (sock as Socket)[kSmc];
}
