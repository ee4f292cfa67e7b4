// The argument forms of net.connect and tls.connect: (options[, cb]), (port[, host][, cb]),
// (path[, cb]); tls.connect also takes an options object after port and host, or path.

import { isIPv4 } from 'node:net';

/** [a copy of the options, the callback]; a port stays as given. */
export function normalizeConnectArgs(args: unknown[]): [Record<string, unknown>, (() => void) | undefined] {
  const last = args[args.length - 1];
  const cb = typeof last === 'function' ? (last as () => void) : undefined;
  const rest = cb ? args.slice(0, -1) : args;
  const a0 = rest[0];
  if (typeof a0 === 'object' && a0 !== null) return [{ ...(a0 as Record<string, unknown>) }, cb];
  const o: Record<string, unknown> = {};
  let next = 1;
  if (typeof a0 === 'string' && Number.isNaN(Number(a0))) {
    o.path = a0;
  } else {
    o.port = a0;
    if (typeof rest[1] === 'string') { o.host = rest[1]; next = 2; }
  }
  const extra = rest[next];
  if (typeof extra === 'object' && extra !== null) Object.assign(o, extra);
  return [o, cb];
}

/** net.isIPv4 (a regex) for the host connected to last: a client connects to one host again and again. */
let lastHost = { host: '', v4: false };
function ipv4(host: string): boolean {
  if (host !== lastHost.host) lastHost = { host, v4: isIPv4(host) };
  return lastHost.v4;
}

/**
 * What Socket.prototype.connect's arguments name: a Unix socket (no SMC there), the TCP port
 * (when given as a valid number; the peer's port is then known without asking the kernel), and
 * the host when it is an IPv4 address (the peer's address, likewise: node:net connects to an
 * address as given, and getpeername(2) gives it back as written), and whether a localAddress
 * was given (and it, when it is an IPv4 address). net.connect hands connect() its arguments already normalized, as one array.
 */
export function connectTarget(args: unknown[]): { ipc: boolean; port: number | undefined; host: string | undefined; bound: boolean; localAddress: string | undefined } {
  const list = Array.isArray(args[0]) ? (args[0] as unknown[]) : args;
  // net.connect's normalized [options, cb] (the common case): read it, no copy.
  const o = typeof list[0] === 'object' && list[0] !== null ? (list[0] as Record<string, unknown>) : normalizeConnectArgs(list)[0];
  const port = Number(o.port);
  const host = typeof o.host === 'string' && ipv4(o.host) ? o.host : undefined;
  const localAddress = typeof o.localAddress === 'string' && isIPv4(o.localAddress) ? o.localAddress : undefined;
  return { ipc: Boolean(o.path), port: Number.isInteger(port) && port > 0 && port < 65536 ? port : undefined, host, bound: o.localAddress !== undefined, localAddress };
}
