// softrdma/smc: node:net with SMC-D. Same exports, options, events and methods as node:net,
// plus getSmcInfo(socket), the smc* options, and TLS over SMC-D (connectTls).

import net from 'node:net';
import tls from 'node:tls';
import { normalizeConnectArgs } from './connect-args.js';
import './socket-events.js'; // the 'smc' event in Socket's types
import { Server, type ServerOptions } from './server.js';
import { Socket } from './socket.js';
import { getSmcInfo as socketSmcInfo, type SmcInfo } from './state.js';
import { resolveSmcOptions, type SmcSocketOptions } from './options.js';
import { connectTls as tlsOverSmc, tlsSmcInfo, SmcStream } from './tls.js';
import { enableSmcOnServer as enableOnServer } from './server.js';
import { setSmcPolicy } from './policy.js';
import { learningStats, setSmcLearning } from './handshake-control.js';
import { DECLINE, declineName } from './clc.js';
import { smcTotals, smcRefusals } from './status.js';

export { Server, type ServerOptions } from './server.js';
export { Socket, type SmcInfo, type SmcMode } from './socket.js';
export type { SmcrInfo, SmcrLinkGroupStatus, SmcrLinkStatus } from './smcr/diag.js';
export type { SmcSocketOptions } from './options.js';
export type { SmcrOption } from './smcr/device.js';
import { invalidArgType, setSmcrDefault } from './options.js';
export { setSmcrDefault };
export { SmcStream } from './tls.js';

/** How a socket carries its data: SMC-D, or TCP with the reasons; for TLS sockets, the socket beneath. */
export function getSmcInfo(sock: net.Socket): SmcInfo {
  if (!(sock instanceof net.Socket)) throw invalidArgType('sock', 'an instance of net.Socket', sock);
  return (sock instanceof tls.TLSSocket ? tlsSmcInfo(sock) : undefined) ?? socketSmcInfo(sock);
}

/**
 * SMC on a server made by another module (node:http's, a framework's): its connections
 * negotiate SMC as softrdma/smc's own servers' do, with these options (the smc* socket options;
 * default: the process's). Call it before listen(). A second call changes nothing.
 */
export function enableSmcOnServer(server: net.Server, options?: SmcSocketOptions): void {
  if (!(server instanceof net.Server)) throw invalidArgType('server', 'an instance of net.Server', server);
  enableOnServer(server, resolveSmcOptions(options));
}

/**
 * tls.connect over SMC-D when the destination is a local SMC listener (an IP address or
 * localhost), else plain tls.connect. Same arguments as tls.connect, plus the smc* options.
 */
export function connectTls(options: tls.ConnectionOptions & SmcSocketOptions, secureConnectListener?: () => void): tls.TLSSocket {
  return tlsOverSmc(resolveSmcOptions(options), options, ...(secureConnectListener ? [secureConnectListener] : []));
}
export { setSmcPolicy, type SmcPolicy, type SmcPolicyInfo } from './policy.js';
export { setSmcLearning, learningStats as smcLearning } from './handshake-control.js';
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

// The rest of node:net's exports, delegated where SMC changes nothing, so `softrdma/smc`
// can replace `node:net` in an import (test/smc/exports.test.ts compares the lists).
export { Socket as Stream } from './socket.js';
export {
  getDefaultAutoSelectFamily, setDefaultAutoSelectFamily,
  getDefaultAutoSelectFamilyAttemptTimeout, setDefaultAutoSelectFamilyAttemptTimeout,
} from 'node:net';
const netInternals = net as unknown as Record<string, unknown>;
/** @internal node:net's, untyped there too */
export const _createServerHandle = netInternals._createServerHandle;
/** @internal node:net's, untyped there too */
export const _normalizeArgs = netInternals._normalizeArgs;
/** @internal node:net's (Node 20 and 22), untyped there too */
export const _setSimultaneousAccepts = netInternals._setSimultaneousAccepts;
/** @internal node:net's (Node 24: a bound socket that can move between threads; no SMC) */
export const BoundSocket = netInternals.BoundSocket;
/** @internal node:net's (Node 24) */
export const _TransferredBoundSocket = netInternals._TransferredBoundSocket;

/** `import net from 'softrdma/smc'`: every export above in one object, as node:net's default export. */
const smcNet = {
  connect, createConnection, createServer, Server, Socket, Stream: Socket,
  getSmcInfo, connectTls, setSmcPolicy, setSmcrDefault, setSmcLearning, smcLearning: learningStats, DECLINE, declineName, smcTotals, smcRefusals, enableSmcOnServer, SmcStream,
  isIP: net.isIP, isIPv4: net.isIPv4, isIPv6: net.isIPv6, BlockList: net.BlockList, SocketAddress: net.SocketAddress,
  getDefaultAutoSelectFamily: net.getDefaultAutoSelectFamily, setDefaultAutoSelectFamily: net.setDefaultAutoSelectFamily,
  getDefaultAutoSelectFamilyAttemptTimeout: net.getDefaultAutoSelectFamilyAttemptTimeout,
  setDefaultAutoSelectFamilyAttemptTimeout: net.setDefaultAutoSelectFamilyAttemptTimeout,
};
// node:net's untyped ones are there at run time, not in the types (as in @types/node).
Object.assign(smcNet, { _createServerHandle, _normalizeArgs, _setSimultaneousAccepts, BoundSocket, _TransferredBoundSocket });
export default smcNet;
