// node:tls scenarios for the TLS parity tests (test/smc/tls-parity.test.ts), run with and
// without the auto preload: each prints one JSON line of what the application saw, which must
// be the same both ways, and the process must end by itself.
//   tls-parity-peer series | client-ends-first | given-connected | given-connecting | bad-options |
//     tls-socket-on-accepted | tls-server-emit-connection | named-imports | end-at-connect

import fs from 'node:fs';
import net from 'node:net';
import tls, { TLSSocket as NamedTLSSocket, connect as namedConnect } from 'node:tls';
import { fileURLToPath } from 'node:url';
import { getSmcInfo } from '../../src/smc/index.js';

const FIXTURES = fileURLToPath(new URL('../../../test/fixtures/', import.meta.url));
const key = fs.readFileSync(`${FIXTURES}tls-key.pem`);
const cert = fs.readFileSync(`${FIXTURES}tls-cert.pem`);

function server(onSecure: (c: tls.TLSSocket) => void): Promise<{ server: tls.Server; port: number }> {
  const s = tls.createServer({ key, cert }, onSecure);
  return new Promise((resolve) => s.listen(0, '127.0.0.1', () => resolve({ server: s, port: (s.address() as net.AddressInfo).port })));
}

function closed(s: net.Socket): Promise<void> {
  return new Promise((resolve) => { if (s.closed) resolve(); else s.once('close', () => resolve()); });
}

/** What a client saw until its socket closed: data, end, close, errors. */
function watch(c: tls.TLSSocket): { events: string[]; done: Promise<void> } {
  const events: string[] = [];
  let data = '';
  c.on('secureConnect', () => events.push('secureConnect'));
  c.on('data', (d: Buffer) => { data += d.toString(); });
  c.on('end', () => events.push(`end(${data})`));
  c.on('error', (e: NodeJS.ErrnoException) => events.push(`error(${e.code})`));
  return { events, done: closed(c).then(() => { events.push('close'); }) };
}

const modes: string[] = [];
const mode = (t: net.Socket) => { modes.push(getSmcInfo(t).mode); };

async function series(): Promise<unknown> {
  // Connections one after another to one server, which ends each at once: each must close
  // (the client ends its side when the server's end arrives, as allowHalfOpen is false).
  const serverSaw: boolean[] = [];
  const { server: s, port } = await server((c) => { serverSaw.push(c.allowHalfOpen); mode(c); c.end('hello'); });
  const results = [];
  for (let i = 0; i < 3; i++) {
    const c = tls.connect({ port, host: '127.0.0.1', rejectUnauthorized: false }, () => mode(c));
    const w = watch(c);
    await w.done;
    results.push({ allowHalfOpen: c.allowHalfOpen, events: w.events });
  }
  await new Promise((resolve) => s.close(resolve));
  return { results, serverAllowHalfOpen: serverSaw };
}

async function clientEndsFirst(): Promise<unknown> {
  // The client ends; the server (allowHalfOpen false) must end in turn, and both close.
  const serverEvents: string[] = [];
  let serverClosed!: Promise<void>;
  const { server: s, port } = await server((c) => {
    c.on('end', () => serverEvents.push('end'));
    c.on('data', () => serverEvents.push('data'));
    serverClosed = closed(c).then(() => { serverEvents.push('close'); });
  });
  const c = tls.connect({ port, host: '127.0.0.1', rejectUnauthorized: false }, () => { mode(c); c.end('bye'); });
  const w = watch(c);
  await w.done;
  await serverClosed;
  await new Promise((resolve) => s.close(resolve));
  return { client: w.events, server: serverEvents };
}

async function givenSocket(connected: boolean): Promise<unknown> {
  // tls.connect({ socket }) over a net.Socket the application connected (or is connecting):
  // TLS runs over that very connection.
  const { server: s, port } = await server((c) => c.end('Hello'));
  const tcp = net.connect(port, '127.0.0.1');
  if (connected) await new Promise((resolve) => tcp.once('connect', resolve));
  const c = tls.connect({ socket: tcp, rejectUnauthorized: false }, () => mode(c));
  const w = watch(c);
  await w.done;
  await closed(tcp);
  await new Promise((resolve) => s.close(resolve));
  return { client: w.events, tcpDestroyed: tcp.destroyed };
}

async function badOptions(): Promise<unknown> {
  // node:tls throws on options it cannot use, before it connects anywhere; nothing of the
  // attempt may live on (an error without a listener, a connection keeping the process up).
  const { server: s, port } = await server((c) => c.end());
  let code: string | undefined;
  try {
    tls.connect({ port, host: '127.0.0.1', ciphers: 'no-such-cipher' });
  } catch (e) {
    code = (e as NodeJS.ErrnoException).code;
  }
  await new Promise((resolve) => s.close(resolve));
  return { code };
}

/** A plain node:net server (an SMC listener under the preload) that puts TLS on its sockets itself. */
function netServer(onConnection: (c: net.Socket) => void): Promise<{ server: net.Server; port: number }> {
  const s = net.createServer(onConnection);
  return new Promise((resolve) => s.listen(0, '127.0.0.1', () => resolve({ server: s, port: (s.address() as net.AddressInfo).port })));
}

async function tlsOnAccepted(how: 'constructor' | 'emit'): Promise<unknown> {
  // new tls.TLSSocket(accepted, { isServer: true }) 100 ms after the accept (the client's
  // ClientHello already arrived), or tlsServer.emit('connection', accepted): TLS over that very
  // connection, which the client reached over SMC-D; the server answers and ends.
  const serverEvents: string[] = [];
  let serverClosed!: Promise<void>;
  const onSecure = (t: tls.TLSSocket) => {
    t.on('data', (d: Buffer) => { serverEvents.push(`data(${d.toString()})`); t.end('pong'); });
    serverClosed = closed(t).then(() => { serverEvents.push('close'); });
  };
  const tlsServer = tls.createServer({ key, cert }, (t) => {
    serverEvents.push(`server: ${(t as unknown as { server?: unknown }).server === tlsServer}`);
    onSecure(t);
  });
  const { server: s, port } = await netServer((c) => {
    if (how === 'emit') { tlsServer.emit('connection', c); return; }
    setTimeout(() => {
      const t = new tls.TLSSocket(c, { isServer: true, secureContext: tls.createSecureContext({ key, cert }) });
      serverEvents.push(`instanceof: ${t instanceof tls.TLSSocket}`);
      onSecure(t);
    }, 100);
  });
  const c = tls.connect({ port, host: '127.0.0.1', rejectUnauthorized: false }, () => { mode(c); c.write('ping'); });
  const w = watch(c);
  await w.done;
  await serverClosed;
  await new Promise((resolve) => s.close(resolve));
  return { client: w.events, server: serverEvents };
}

async function namedImports(): Promise<unknown> {
  // An ES module that imports the names (TLSSocket, connect): the same as through the default
  // export, a TLS socket built on an accepted socket and a client, over one SMC-D connection.
  const serverEvents: string[] = [];
  let serverClosed!: Promise<void>;
  const { server: s, port } = await netServer((c) => {
    const t = new NamedTLSSocket(c, { isServer: true, secureContext: tls.createSecureContext({ key, cert }) });
    t.on('data', (d: Buffer) => { serverEvents.push(`data(${d.toString()})`); t.end('pong'); });
    serverClosed = closed(t).then(() => { serverEvents.push('close'); });
  });
  const c = namedConnect({ port, host: '127.0.0.1', rejectUnauthorized: false }, () => { mode(c); c.write('ping'); });
  const w = watch(c);
  await w.done;
  await serverClosed;
  await new Promise((resolve) => s.close(resolve));
  return { client: w.events, server: serverEvents };
}

async function endAtConnect(): Promise<unknown> {
  // The client ends at 'connect' (TCP connected, the handshake not begun), as the last case of
  // test-https-agent-create-connection does: node:tls shuts its transport down at once, and what
  // it writes after that (the rest of its handshake, in answer to the server's) must fail
  // quietly, as a write to a shut-down TCP socket does under TLSWrap, not become an 'error'.
  const { server: s, port } = await server(() => {});
  s.on('tlsClientError', () => {});
  const c = tls.connect({ port, host: '127.0.0.1', rejectUnauthorized: false });
  c.on('connect', () => c.end());
  // How the connection settled, once it has (at 'connect' an SMC socket is still negotiating).
  c.on('end', () => mode(c));
  const w = watch(c);
  await w.done;
  await new Promise((resolve) => s.close(resolve));
  return { client: w.events };
}

const scenarios: Record<string, () => Promise<unknown>> = {
  'end-at-connect': endAtConnect,
  'named-imports': namedImports,
  'tls-socket-on-accepted': () => tlsOnAccepted('constructor'),
  'tls-server-emit-connection': () => tlsOnAccepted('emit'),
  'bad-options': badOptions,
  series,
  'client-ends-first': clientEndsFirst,
  'given-connected': () => givenSocket(true),
  'given-connecting': () => givenSocket(false),
};

const name = process.argv[2] ?? '';
const run = scenarios[name];
if (!run) {
  console.error(`usage: tls-parity-peer ${Object.keys(scenarios).join(' | ')}`);
  process.exit(2);
}
const result = await run();
console.log(JSON.stringify({ result, modes }));
