// softrdma/smc Server: a node:net Server whose accepted sockets negotiate SMC-D. It announces
// itself in the per-host listener registry while listening, so local SMC clients know they
// may propose; everyone else simply sees a TCP server.

import net from 'node:net';
import tls from 'node:tls';
import util from 'node:util';
import { isMainThread } from 'node:worker_threads';
import { libcLibrary } from '../sys/libc.js';
import { ListenerRegistration } from './discovery.js';
import { lingerHandle } from './close.js';
import { Socket } from './socket.js';
import { kSmc } from './state.js';
import { DECLINE } from './clc.js';
import { resolveSmcOptions, smcrOf, type ResolvedSmcOptions, type SmcSocketOptions } from './options.js';
import { deferTlsConnection } from './tls.js';
import { policyAllows } from './policy.js';
import { registerSmcrListener, type SmcrListenHandle } from './smcr/discovery.js';
import { statusSocketAnchor } from './status.js';

const debug = util.debuglog('smc');

// Symbol.for: a server another copy of softrdma in this process enabled is not enabled twice.
export const kSmcServer = Symbol.for('softrdma.smc.server');

interface SmcServerState {
  opts: ResolvedSmcOptions;
  registration: ListenerRegistration | undefined;
  /** Listening on an IP address (not a Unix socket): known once listening, so a connection costs no getsockname. */
  ipListener: boolean | undefined;
}

export type ServerOptions = net.ServerOpts & SmcSocketOptions;

/** Give any net.Server (also http.Server) SMC behaviour: registration and adoption of sockets. */
export function enableSmcOnServer(server: net.Server, opts: ResolvedSmcOptions): void {
  const srv = server as net.Server & { [kSmcServer]?: SmcServerState };
  if (srv[kSmcServer]) return;
  const state: SmcServerState = { opts, registration: undefined, ipListener: undefined };
  srv[kSmcServer] = state;
  // Registration and its removal run inside the emit hook below rather than as 'listening'
  // and 'close' listeners, which the application would see (listeners(), listenerCount()).
  let smcrListen: SmcrListenHandle | undefined;
  const unregister = (): void => {
    state.registration?.remove();
    state.registration = undefined;
    smcrListen?.remove();
    smcrListen = undefined;
  };
  const onListening = (): void => {
    gentleDrops(server, opts.timeout);
    const a = server.address();
    state.ipListener = a !== null && typeof a === 'object';
    unregister();
    // pauseOnConnect is node:net's way to pass a connection to another process unread. That
    // process has no part in this handshake, and a Proposal would reach it as data: such a
    // listener does not announce itself, so no client proposes (it stays plain TCP).
    if (a && typeof a === 'object' && opts.enabled && !pausesOnConnect(server)) {
      const v6only = a.address === '::' && v6Only(server);
      try {
        // A worker's entry names its thread's status socket: terminate() runs no exit hook.
        const anchor = isMainThread ? undefined : statusSocketAnchor();
        state.registration = new ListenerRegistration(a.address, a.port, v6only, anchor);
      } catch (err) {
        // Without an entry no client proposes SMC: the server still serves, over TCP.
        debug('cannot register the SMC listener %s:%d: %s', a.address, a.port, (err as Error).message);
      }
      // SMC-R: answer the discovery query (SIDR) for this port on the device(s) it may use.
      // Not for an IPv6-only '::' listener: SMC-R runs over IPv4 only, and an IPv4 client
      // answered yes would send its Proposal to whatever holds the port for IPv4.
      const o = v6only ? undefined : smcrOf(opts);
      // Its policy, asked about the querying address as about a connection from it: a no is
      // answered no, so that client stays TCP without a Proposal.
      if (o) {
        const check = (remote: string | undefined) => policyAllows(opts.policy, () => ({ role: 'server', localAddress: a.address, localPort: a.port, remoteAddress: remote, remotePort: undefined }));
        smcrListen = registerSmcrListener(a.address, a.port, o === true ? undefined : o.device, check);
      }
    }
  };
  // The entry goes when the listening socket closes, i.e. in close() itself: the 'close'
  // event waits for every connection to end, and meanwhile another process may take the
  // port, and SMC clients would send it a Proposal.
  const close = server.close;
  server.close = function (this: net.Server): net.Server {
    unregister();
    return close.apply(this, arguments as unknown as Parameters<typeof close>);
  } as typeof server.close;
  const onClose = (): void => {
    unregister();
    state.ipListener = undefined;
  };
  // Adopt before any 'connection' listener (http's included) sees the socket. node:tls
  // (https too) sees it only once the SMC handshake settled: it takes over the TCP handle.
  const emit = server.emit as (...a: unknown[]) => boolean;
  const isTls = server instanceof tls.Server;
  server.emit = function (this: net.Server, event: string | symbol, conn?: unknown): boolean {
    // Only TCP listeners: a Unix-socket server (the ism doorbell's among them) has nothing to negotiate.
    if (event === 'connection' && conn instanceof net.Socket && !(kSmc in conn) && (state.ipListener ??= typeof this.address() === 'object')) {
      const sock = Socket.adopt(conn, state.opts);
      // A client that still proposes (an SMC-R answer cached before this listener) is declined.
      if (pausesOnConnect(this)) sock[kSmc]!.serverDecline ||= DECLINE.NOSMCDEV;
      if (isTls) {
        deferTlsConnection(this as tls.Server, emit, sock);
        return true;
      }
    } else if (event === 'listening') {
      onListening();
      const r = emit.apply(this, arguments as unknown as unknown[]);
      // node:cluster's primary (round_robin_handle.js) listens through a net.Server, takes its
      // handle away in a 'listening' listener and later closes the handle itself: this server
      // never closes. That primary accepts for its workers (each registers its own entry), so
      // it must not be a listener of its own: a plain worker would read a Proposal as data,
      // and the entry would outlive the workers.
      if (!(this as net.Server & { _handle?: unknown })._handle) unregister();
      return r;
    } else if (event === 'close') {
      onClose();
    }
    // Every event of the server passes here: no rest parameter to allocate.
    return emit.apply(this, arguments as unknown as unknown[]);
  } as typeof server.emit;
}

/** node:net keeps the option as a public field of the server. */
function pausesOnConnect(server: net.Server): boolean {
  return (server as net.Server & { pauseOnConnect?: boolean }).pauseOnConnect === true;
}

const kGentle = Symbol('softrdma.smc.gentleDrops');

type ClientHandle = { close(cb?: () => void): void; getpeername?(out: { address?: string }): number };

/**
 * A connection node:net drops (maxConnections, or Node 22's server blockList) has its handle
 * closed at once; an SMC client's Proposal unread in it would turn that close into a RST where
 * node:net's is a FIN. Such a handle closes as a server's connection closed during the
 * handshake does (lingerHandle).
 */
function gentleDrops(server: net.Server, timeout: number): void {
  type Handle = { onconnection?: (err: number, client?: ClientHandle) => void; [kGentle]?: true };
  const h = (server as unknown as { _handle?: Handle | null })._handle;
  if (!h || h[kGentle] || typeof h.onconnection !== 'function') return;
  h[kGentle] = true;
  const onconnection = h.onconnection;
  const srv = server as net.Server & { _connections: number };
  h.onconnection = function (this: unknown, err: number, client?: ClientHandle): void {
    if (!err && client && ((srv.maxConnections != null && srv._connections >= srv.maxConnections) || blocked(srv, client))) {
      client.close = () => lingerHandle(client, timeout);
    }
    onconnection.call(this, err, client);
  };
}

/** node:net's own test (onconnection, Node 22 and later): the peer's address in the server's blockList. */
function blocked(server: net.Server, client: ClientHandle): boolean {
  const list = (server as net.Server & { blockList?: net.BlockList }).blockList;
  if (!list || typeof client.getpeername !== 'function') return false;
  const peer: { address?: string } = {};
  client.getpeername(peer);
  const family = peer.address ? net.isIP(peer.address) : 0;
  return family !== 0 && list.check(peer.address!, family === 6 ? 'ipv6' : 'ipv4');
}

let getsockoptFn: ((fd: number, level: number, name: number, val: Buffer, len: Buffer) => number) | undefined;

/**
 * Whether a '::' listener takes IPv6 only (listen's ipv6Only, or the system's bindv6only):
 * IPV6_V6ONLY read from its socket. When that cannot be read, dual-stack, as Linux's default.
 */
function v6Only(server: net.Server): boolean {
  const fd = (server as unknown as { _handle?: { fd?: number } })._handle?.fd;
  if (typeof fd !== 'number' || fd < 0) return false;
  try {
    getsockoptFn ??= libcLibrary().func('int getsockopt(int, int, int, _Out_ uint8_t *, _Inout_ uint32_t *)') as unknown as typeof getsockoptFn;
    const v = Buffer.alloc(4);
    const len = Buffer.alloc(4);
    len.writeUInt32LE(4);
    return getsockoptFn!(fd, 41 /* IPPROTO_IPV6 */, 26 /* IPV6_V6ONLY */, v, len) === 0 && v.readInt32LE(0) !== 0;
  } catch {
    return false;
  }
}

export class Server extends net.Server {
  constructor(options?: ServerOptions | ((socket: Socket) => void), listener?: (socket: Socket) => void) {
    const opts = typeof options === 'object' && options !== null ? options : {};
    const cb = typeof options === 'function' ? options : listener;
    super(opts, cb as ((socket: net.Socket) => void) | undefined);
    enableSmcOnServer(this, resolveSmcOptions(opts));
  }
}
