// In-process SMC-R harness of smcr-lifecycle.test.ts and the smcr-review-*.test.ts files: the
// client's rxe device on 127.0.0.2, the server's on 127.0.0.3, an SMC-R server there, and a TCP
// relay of the test's between them (a local SMC listener's own port would get SMC-D) that sees
// every CLC message of each connection and can hold, drop or rewrite one. Everything goes with
// the test.

import assert from 'node:assert/strict';
import { once } from 'node:events';
import net from 'node:net';
import type { TestContext } from 'node:test';

const smc = await import('../../src/smc/index.js');
const { SmcrLinkGroup } = await import('../../src/smc/smcr/lgr.js');
const { clcFrameLengthAny, decodeSmcClc } = await import('../../src/smc/clc.js');
const { twoDevices } = await import('../helpers/pair.js');

export type SmcClcMessage = ReturnType<typeof decodeSmcClc>;
export type Lgr = InstanceType<typeof SmcrLinkGroup>;
export type SmcInfo = ReturnType<typeof smc.getSmcInfo>;

const EYECATCHER = 0xe2d4c3d9; // "SMCR" in EBCDIC

/** A bound on every wait: the test fails naming what did not happen. */
export function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([p, new Promise<never>((_, reject) => { timer = setTimeout(() => reject(new Error(`${what}: not within ${ms} ms`)), ms); })])
    .finally(() => clearTimeout(timer));
}

/** Poll a condition every 5 ms, within a bound. */
export async function until(cond: () => boolean, ms: number, what: string): Promise<void> {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > ms) throw new Error(`${what}: not within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** What a hook makes of one CLC frame: undefined forwards it, null drops it, a Buffer replaces it; possibly later. */
export type Hook = (m: SmcClcMessage, frame: Buffer) => Buffer | null | undefined | Promise<Buffer | null | undefined>;
export interface Hooks { client?: Hook; server?: Hook }
export interface Relayed { fromClient: SmcClcMessage[]; fromServer: SmcClcMessage[] }

/** Forward from -> to, handing each CLC frame (while the stream starts with one) to the hook, in order. */
function pump(from: net.Socket, to: net.Socket, seen: SmcClcMessage[], hook: Hook | undefined): void {
  let buf = Buffer.alloc(0);
  let clc = true;
  let chain: Promise<unknown> = Promise.resolve();
  const then = (f: () => unknown) => { chain = chain.then(f).catch((e: unknown) => { to.destroy(e as Error); }); };
  from.on('data', (d: Buffer) => then(async () => {
    if (!clc) return void (to.destroyed || to.write(d));
    buf = Buffer.concat([buf, d]);
    while (clc && buf.length >= 4) {
      if (buf.readUInt32BE(0) !== EYECATCHER) { clc = false; break; }
      const n = clcFrameLengthAny(buf);
      if (n === 0) return;
      const frame = buf.subarray(0, n);
      buf = buf.subarray(n);
      const m = decodeSmcClc(frame);
      seen.push(m);
      const out = hook ? await hook(m, frame) : undefined;
      if (out !== null && !to.destroyed) to.write(out ?? frame);
    }
    if (!clc && buf.length > 0 && !to.destroyed) to.write(buf);
    if (!clc) buf = Buffer.alloc(0);
  }));
  from.on('end', () => then(() => to.end()));
  from.on('close', () => then(() => to.destroy()));
  from.on('error', () => {});
}

export interface Env {
  a: Awaited<ReturnType<typeof twoDevices>>['a'];
  b: Awaited<ReturnType<typeof twoDevices>>['b'];
  /** The server's sockets, in the order accepted. */
  accepted: net.Socket[];
  /** The SMC-R server's own port (on 127.0.0.3), for connections that do not go through the relay. */
  serverPort: number;
  /** The relay's record of each connection's CLC messages, in the order made. */
  relayed: Relayed[];
  /** Hooks for the next connection through the relay. */
  next(h: Hooks): void;
  /** The relay's socket to the server for each connection, in the order made (resetAndDestroy() on one: the client's reset, as the server sees it). */
  upstreams: net.Socket[];
  connect(opts?: Record<string, unknown>): net.Socket;
  serverLgr(): Lgr;
  clientLgr(): Lgr;
}

/** Devices, a server with SMC-R on 127.0.0.3 (an echo server unless told), the relay, and their teardown after the test. */
export async function setup(t: TestContext, onConn?: (s: net.Socket) => void, serverOpts: Record<string, unknown> = {}): Promise<Env> {
  const { a, b } = await twoDevices();
  const accepted: net.Socket[] = [];
  const server = smc.createServer({ smcr: { device: b }, ...serverOpts }, (s) => {
    accepted.push(s);
    s.on('error', () => {});
    if (onConn) onConn(s);
    else s.pipe(s);
  });
  server.listen(0, '127.0.0.3');
  await once(server, 'listening');
  const relayed: Relayed[] = [];
  let hooks: Hooks = {};
  const relaySockets = new Set<net.Socket>();
  const upstreams: net.Socket[] = [];
  // Half-open on both sides: the relay passes each end's FIN on, and answers none with its own.
  const relay = net.createServer({ allowHalfOpen: true }, (c) => {
    const h = hooks;
    hooks = {};
    const r: Relayed = { fromClient: [], fromServer: [] };
    relayed.push(r);
    const u = net.connect({ host: '127.0.0.3', port: (server.address() as net.AddressInfo).port, localAddress: '127.0.0.2', allowHalfOpen: true });
    upstreams.push(u);
    for (const s of [c, u]) { relaySockets.add(s); s.on('close', () => relaySockets.delete(s)); }
    pump(c, u, r.fromClient, h.client);
    pump(u, c, r.fromServer, h.server);
  });
  relay.listen(0, '127.0.0.3');
  await once(relay, 'listening');
  const clients: net.Socket[] = [];
  t.after(async () => {
    for (const s of [...clients, ...accepted, ...relaySockets]) s.destroy();
    relay.close();
    server.close();
    for (const g of SmcrLinkGroup.list()) g.free(false, 'test end');
    await a.close();
    await b.close();
    await new Promise((r) => setImmediate(r));
  });
  const lgrOf = (role: 'client' | 'server', address: string) => {
    const g = SmcrLinkGroup.list().find((x) => x.role === role && !x.dead && x.dev.address === address);
    assert.ok(g, `the ${role} has a link group`);
    return g;
  };
  return {
    a, b, accepted, relayed, upstreams,
    serverPort: (server.address() as net.AddressInfo).port,
    next: (h) => { hooks = h; },
    connect: (opts = {}) => {
      const s = smc.connect({ host: '127.0.0.3', port: (relay.address() as net.AddressInfo).port, localAddress: '127.0.0.2', smcr: { device: a, discovery: false }, ...opts });
      s.on('error', () => {});
      clients.push(s);
      return s;
    },
    serverLgr: () => lgrOf('server', '127.0.0.3'),
    clientLgr: () => lgrOf('client', '127.0.0.2'),
  };
}

/** The 'smc' event's info: how the socket settled. */
export function settled(s: net.Socket, what: string, ms = 5000): Promise<SmcInfo> {
  return within(once(s, 'smc').then(([info]) => info as SmcInfo), ms, what);
}

/** Write a line and wait for the echo server to send it back. */
export async function echo(s: net.Socket, line: string): Promise<void> {
  const got = new Promise<void>((resolve) => {
    let b = '';
    const on = (d: Buffer) => { b += d.toString(); if (b.includes(line)) { s.off('data', on); resolve(); } };
    s.on('data', on);
  });
  s.write(line);
  await within(got, 5000, `echo of ${JSON.stringify(line)}`);
}

/** A connection that settled on SMC-R at both ends (the echo proves the server's end). */
export async function smcrConnection(env: Env, name: string): Promise<net.Socket> {
  const c = env.connect();
  const info = await settled(c, `${name} settles`);
  assert.equal(info.mode, 'SMCR', `${name}: ${info.fallbackCause ?? ''}`);
  await echo(c, `${name}\n`);
  return c;
}
