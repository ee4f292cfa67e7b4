// softrdma/smc: node:net with SMC-D. Same exports, options, events and methods as node:net,
// plus getSmcInfo(socket) and the smc* options.

import net from 'node:net';
import { Server, type ServerOptions } from './server.js';
import { Socket, type SmcSocketOptions } from './socket.js';

export { Server, enableSmcOnServer, type ServerOptions } from './server.js';
export { Socket, getSmcInfo, type SmcInfo, type SmcMode, type SmcSocketOptions } from './socket.js';
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
