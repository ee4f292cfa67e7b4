// `node --import softrdma/smc/auto app.js`: every node:net TCP server and client of the
// process becomes SMC-capable, with no code change (the role of smc_run's preload).
// Servers (node:http's included) announce themselves and answer Proposals; clients propose
// to local SMC listeners and stay plain node:net sockets for every other destination.
// node:tls and node:https too: a TLS client to a local SMC listener runs TLS over SMC-D
// (src/smc/tls.ts), and a TLS server answers SMC before node:tls sees the socket.
//
// SOFTRDMA_SMC=0 turns it off; SOFTRDMA_SMC_BUFFER sets the DMB size (as for every socket).
// SOFTRDMA_SMC_SUMMARY=<file> appends one JSON line per process at exit: how its
// connections settled (SMCD, TCP by fallback reason), for scripts that check a whole run.

import fs from 'node:fs';
import { syncBuiltinESMExports } from 'node:module';
import net from 'node:net';
import tls from 'node:tls';
import { connectTarget } from './connect-args.js';
import { enableSmcOnServer } from './server.js';
import { Socket } from './socket.js';
import { kSmc } from './state.js';
import { resolveSmcOptions } from './options.js';
import { smcTotals } from './status.js';
import { connectTls, hookTlsWrapping } from './tls.js';

const opts = resolveSmcOptions({ smc: process.env.SOFTRDMA_SMC !== '0' });

const plainConnect = net.Socket.prototype.connect;
net.Socket.prototype.connect = function connect(this: net.Socket, ...args: unknown[]) {
  // Unix sockets (the ism doorbell among them) stay untouched node:net sockets.
  if (opts.enabled && Object.getPrototypeOf(this) === net.Socket.prototype && !(kSmc in this) && !connectTarget(args).ipc) {
    Socket.adoptClient(this, opts);
    return (Socket.prototype.connect as (...a: unknown[]) => net.Socket).apply(this, args);
  }
  return (plainConnect as (...a: unknown[]) => net.Socket).apply(this, args);
} as typeof net.Socket.prototype.connect;

const plainListen = net.Server.prototype.listen;
net.Server.prototype.listen = function listen(this: net.Server, ...args: unknown[]) {
  if (opts.enabled) enableSmcOnServer(this, opts);
  return (plainListen as (...a: unknown[]) => net.Server).apply(this, args);
} as typeof net.Server.prototype.listen;

tls.connect = function connect(...args: unknown[]) {
  return connectTls(opts, ...args);
} as typeof tls.connect;
if (opts.enabled) hookTlsWrapping();
// ES modules that import names (`import { connect, TLSSocket } from 'node:tls'`) see the
// patched functions too: their bindings were made when node:tls was first imported.
syncBuiltinESMExports();

const summaryFile = process.env.SOFTRDMA_SMC_SUMMARY;
if (summaryFile) {
  process.on('exit', () => {
    const line = JSON.stringify({ pid: process.pid, argv: process.argv.slice(1), ...smcTotals() });
    try { fs.appendFileSync(summaryFile, `${line}\n`); } catch { /* a summary must not change the exit */ }
  });
}
