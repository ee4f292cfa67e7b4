// softrdma/smc: node:net with SMC-D. Same exports, options, events and methods as node:net,
// plus getSmcInfo(socket), the smc* options, and TLS over SMC-D (connectTls).

import net from 'node:net';
import tls from 'node:tls';
import { Server, type ServerOptions } from './server.js';
import { getSmcInfo as socketSmcInfo, resolveSmcOptions, Socket, type SmcInfo, type SmcSocketOptions } from './socket.js';
import { connectTls as tlsOverSmc, tlsSmcInfo } from './tls.js';

export { Server, enableSmcOnServer, type ServerOptions } from './server.js';
export { Socket, type SmcInfo, type SmcMode, type SmcSocketOptions } from './socket.js';
export { SmcStream } from './tls.js';

/** How a socket carries its data: SMC-D, or TCP with the reasons; for TLS sockets, the socket beneath. */
export function getSmcInfo(sock: net.Socket): SmcInfo {
  return (sock instanceof tls.TLSSocket ? tlsSmcInfo(sock) : undefined) ?? socketSmcInfo(sock);
}

/**
 * tls.connect over SMC-D when the destination is a local SMC listener (an IP address or
 * localhost), else plain tls.connect. Same arguments as tls.connect, plus the smc* options.
 */
export function connectTls(options: tls.ConnectionOptions & SmcSocketOptions, secureConnectListener?: () => void): tls.TLSSocket {
  return tlsOverSmc(tls.connect, resolveSmcOptions(options), options, ...(secureConnectListener ? [secureConnectListener] : []));
}
export { setSmcPolicy, type SmcPolicy, type SmcPolicyInfo } from './policy.js';
export { DECLINE, declineName } from './clc.js';
export { isIP, isIPv4, isIPv6, BlockList, SocketAddress } from 'node:net';

export function createServer(options?: ServerOptions | ((socket: Socket) => void), listener?: (socket: Socket) => void): Server {
  return new Server(options, listener);
}

export type ConnectOptions = net.NetConnectOpts & SmcSocketOptions;

function normalizeArgs(args: unknown[]): [Record<string, unknown>, (() => void) | undefined] {
  const last = args[args.length - 1];
  const cb = typeof last === 'function' ? (last as () => void) : undefined;
  const a0 = args[0];
  if (typeof a0 === 'object' && a0 !== null) return [{ ...(a0 as Record<string, unknown>) }, cb];
  if (typeof a0 === 'string' && Number.isNaN(Number(a0))) return [{ path: a0 }, cb];
  const o: Record<string, unknown> = { port: a0 };
  if (typeof args[1] === 'string') o.host = args[1];
  return [o, cb];
}

/** Like net.connect: connect(options[, cb]), connect(port[, host][, cb]), connect(path[, cb]). */
export function connect(options: ConnectOptions, connectionListener?: () => void): Socket;
export function connect(port: number, host?: string, connectionListener?: () => void): Socket;
export function connect(path: string, connectionListener?: () => void): Socket;
export function connect(...args: unknown[]): Socket {
  const [options, cb] = normalizeArgs(args);
  const sock = new Socket(options as SmcSocketOptions & net.SocketConstructorOpts);
  if (typeof options.timeout === 'number') sock.setTimeout(options.timeout);
  const o = options as unknown as net.NetConnectOpts;
  return cb ? sock.connect(o, cb) : sock.connect(o);
}

export const createConnection = connect;
