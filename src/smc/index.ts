// softrdma/smc: node:net with SMC-D. Same exports, options, events and methods as node:net,
// plus getSmcInfo(socket), the smc* options, and TLS over SMC-D (connectTls).

import net from 'node:net';
import tls from 'node:tls';
import { normalizeConnectArgs } from './connect-args.js';
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
  return tlsOverSmc(resolveSmcOptions(options), options, ...(secureConnectListener ? [secureConnectListener] : []));
}
export { setSmcPolicy, type SmcPolicy, type SmcPolicyInfo } from './policy.js';
export { DECLINE, declineName } from './clc.js';
export { smcTotals, smcRefusals, type SmcTotals, type SmcRefusals } from './status.js';
export { isIP, isIPv4, isIPv6, BlockList, SocketAddress } from 'node:net';

export function createServer(options?: ServerOptions | ((socket: Socket) => void), listener?: (socket: Socket) => void): Server {
  return new Server(options, listener);
}

export type ConnectOptions = net.NetConnectOpts & SmcSocketOptions;

/** Like net.connect: connect(options[, cb]), connect(port[, host][, cb]), connect(path[, cb]). */
export function connect(options: ConnectOptions, connectionListener?: () => void): Socket;
export function connect(port: number, host?: string, connectionListener?: () => void): Socket;
export function connect(path: string, connectionListener?: () => void): Socket;
export function connect(...args: unknown[]): Socket {
  const [options, cb] = normalizeConnectArgs(args);
  const sock = new Socket(options as SmcSocketOptions & net.SocketConstructorOpts);
  if (typeof options.timeout === 'number') sock.setTimeout(options.timeout);
  const o = options as unknown as net.NetConnectOpts;
  return cb ? sock.connect(o, cb) : sock.connect(o);
}

export const createConnection = connect;
