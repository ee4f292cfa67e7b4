// SMC-R link group and connection lifecycles (src/smc/smcr/lgr.ts, link.ts, connection.ts,
// clc-flow.ts) at the edges: a device closed under a handshake or a connection, an RMB offered
// in an Accept whose handshake then failed, a group that would linger out or end between our
// Accept and the client's Confirm. One process, no namespaces: the client's rxe device on
// 127.0.0.2, the server's on 127.0.0.3, and the client reaching the server through a TCP relay of
// the test's (a local SMC listener's own port would get SMC-D), which sees every CLC message and
// can hold, drop or rewrite one.

import assert from 'node:assert/strict';
import { once } from 'node:events';
import net from 'node:net';
import { test, type TestContext } from 'node:test';
import { testRuntimeDir } from '../helpers/runtime-dir.js';

testRuntimeDir('smcr-lifecycle');
process.env.SOFTRDMA_SMC_LEARN = '0'; // every connection tries SMC, however short
const smc = await import('../../src/smc/index.js');
const { SmcrLinkGroup, smcrMemory, setSmcrLingerMs } = await import('../../src/smc/smcr/lgr.js');
const { CLC_ACCEPT, CLC_CONFIRM, CLC_DECLINE, DECLINE, clcFrameLengthAny, decodeSmcClc, encodeSmcrAcceptConfirm } = await import('../../src/smc/clc.js');
const { twoDevices } = await import('../helpers/pair.js');
type SmcClcMessage = ReturnType<typeof decodeSmcClc>;
type SmcrAcceptConfirm = Parameters<typeof encodeSmcrAcceptConfirm>[0];
type Lgr = InstanceType<typeof SmcrLinkGroup>;

const EYECATCHER = 0xe2d4c3d9; // "SMCR" in EBCDIC

/** A bound on every wait: the test fails naming what did not happen. */
function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([p, new Promise<never>((_, reject) => { timer = setTimeout(() => reject(new Error(`${what}: not within ${ms} ms`)), ms); })])
    .finally(() => clearTimeout(timer));
}

/** A promise and the function that settles it (what one test step waits for another to see). */
function latch(): [Promise<void>, () => void] {
  let fire!: () => void;
  const seen = new Promise<void>((r) => { fire = r; });
  return [seen, fire];
}

/** Poll a condition every 5 ms, within a bound. */
async function until(cond: () => boolean, ms: number, what: string): Promise<void> {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > ms) throw new Error(`${what}: not within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** What a hook makes of one CLC frame: undefined forwards it, null drops it, a Buffer replaces it; possibly later. */
type Hook = (m: SmcClcMessage, frame: Buffer) => Buffer | null | undefined | Promise<Buffer | null | undefined>;
interface Hooks { client?: Hook; server?: Hook }
interface Relayed { fromClient: SmcClcMessage[]; fromServer: SmcClcMessage[] }

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

interface Env {
  a: Awaited<ReturnType<typeof twoDevices>>['a'];
  b: Awaited<ReturnType<typeof twoDevices>>['b'];
  /** The server's sockets, in the order accepted. */
  accepted: net.Socket[];
  /** The relay's record of each connection's CLC messages, in the order made. */
  relayed: Relayed[];
  /** Hooks for the next connection through the relay. */
  next(h: Hooks): void;
  connect(): net.Socket;
  serverLgr(): Lgr;
}

/** Devices, an echo server with SMC-R on 127.0.0.3, the relay, and their teardown after the test. */
async function setup(t: TestContext): Promise<Env> {
  const { a, b } = await twoDevices();
  const accepted: net.Socket[] = [];
  const server = smc.createServer({ smcr: { device: b } }, (s) => {
    accepted.push(s);
    s.on('error', () => {});
    s.pipe(s);
  });
  server.listen(0, '127.0.0.3');
  await once(server, 'listening');
  const relayed: Relayed[] = [];
  let hooks: Hooks = {};
  const relaySockets = new Set<net.Socket>();
  const relay = net.createServer((c) => {
    const h = hooks;
    hooks = {};
    const r: Relayed = { fromClient: [], fromServer: [] };
    relayed.push(r);
    const u = net.connect({ host: '127.0.0.3', port: (server.address() as net.AddressInfo).port, localAddress: '127.0.0.2' });
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
    await a.close();
    await b.close();
    await new Promise((r) => setImmediate(r));
  });
  return {
    a, b, accepted, relayed,
    next: (h) => { hooks = h; },
    connect: () => {
      const s = smc.connect({ host: '127.0.0.3', port: (relay.address() as net.AddressInfo).port, localAddress: '127.0.0.2', smcr: { device: a, discovery: false } });
      s.on('error', () => {});
      clients.push(s);
      return s;
    },
    serverLgr: () => {
      const g = SmcrLinkGroup.list().find((x) => x.role === 'server' && x.dev.address === '127.0.0.3');
      assert.ok(g, 'the server has a link group');
      return g;
    },
  };
}

/** The 'smc' event's info: how the socket settled. */
function settled(s: net.Socket, what: string): Promise<ReturnType<typeof smc.getSmcInfo>> {
  return within(once(s, 'smc').then(([info]) => info as ReturnType<typeof smc.getSmcInfo>), 5000, what);
}

/** Write a line and wait for the echo server to send it back. */
async function echo(s: net.Socket, line: string): Promise<void> {
  const got = new Promise<void>((resolve) => {
    let b = '';
    const on = (d: Buffer) => { b += d.toString(); if (b.includes(line)) { s.off('data', on); resolve(); } };
    s.on('data', on);
  });
  s.write(line);
  await within(got, 5000, `echo of ${line}`);
}

/** A connection that settled on SMC-R at both ends (the echo proves the server's end). */
async function smcrConnection(env: Env, name: string): Promise<net.Socket> {
  const c = env.connect();
  const info = await settled(c, `${name} settles`);
  assert.equal(info.mode, 'SMCR', `${name}: ${info.fallbackCause ?? ''}`);
  await echo(c, `${name}\n`);
  return c;
}

/** Unhandled rejections and uncaught exceptions while the test runs. */
function strays(t: TestContext): unknown[] {
  const seen: unknown[] = [];
  const f = (e: unknown) => { seen.push(e); };
  process.on('unhandledRejection', f);
  process.on('uncaughtException', f);
  t.after(() => { process.off('unhandledRejection', f); process.off('uncaughtException', f); });
  return seen;
}

const acceptOf = (r: Relayed) => r.fromServer.find((m) => m.type === CLC_ACCEPT) as SmcrAcceptConfirm;

test('a device closed under a first contact waiting for CONFIRM_LINK: TCP, nothing thrown', async (t) => {
  const env = await setup(t);
  const thrown = strays(t);
  const [confirmed, confirmSeen] = latch();
  // The client's Confirm never reaches the server: the client waits for CONFIRM_LINK.
  env.next({ client: (m) => (m.type === CLC_CONFIRM ? (confirmSeen(), null) : undefined) });
  const c = env.connect();
  const info = settled(c, 'the client settles');
  await within(confirmed, 5000, 'the client\'s Confirm');
  await env.a.close();
  const i = await info;
  assert.equal(i.mode, 'TCP');
  assert.equal(i.fallbackReason, DECLINE.TIMEOUT_CL, i.fallbackCause);
  await echo(c, 'over TCP\n');
  assert.deepEqual(thrown, []);
});

test('a device closed under an established connection: ECONNABORTED, the connection released, the handle closed', async (t) => {
  const env = await setup(t);
  const thrown = strays(t);
  const c = await smcrConnection(env, 'one');
  const s = env.accepted[0]!;
  const lgr = env.serverLgr();
  assert.equal(lgr.conns.size, 1);
  const err = new Promise<NodeJS.ErrnoException>((r) => s.once('error', r));
  const closed = new Promise((r) => s.once('close', r)); // once() would reject on the 'error'
  await env.b.close();
  const e = await within(err, 5000, 'the server socket\'s error');
  assert.equal(e.code, 'ECONNABORTED', e.message);
  assert.match(e.message, /link down/);
  await within(closed, 5000, 'the server socket closes');
  assert.equal(lgr.dead, true);
  assert.equal(lgr.conns.size, 0, 'the connection left its link group (release ran)');
  assert.equal((s as unknown as { _handle: unknown })._handle, null, 'node:net closed the TCP handle');
  c.destroy();
  assert.deepEqual(thrown, []);
});

test('an RMB offered in an Accept whose handshake failed is not reused before the peer\'s last CDC for it', async (t) => {
  const env = await setup(t);
  await smcrConnection(env, 'first contact');
  const lgr = env.serverLgr();
  // The second connection's Confirm names another QP: the server declines (SYNCERR) after its
  // Accept, while the client, no first contact, settled on SMC-R as it sent the Confirm and
  // may write into the RMB the Accept named.
  const [declineSeen, declined] = latch();
  env.next({
    client: (m) => {
      if (m.type !== CLC_CONFIRM) return undefined;
      return encodeSmcrAcceptConfirm({ ...(m as SmcrAcceptConfirm), qpn: ((m as SmcrAcceptConfirm).qpn + 1) & 0xffffff });
    },
    server: (m) => (m.type === CLC_DECLINE ? (declined(), null) : undefined),
  });
  const stale = env.connect();
  const staleInfo = await settled(stale, 'the second client settles');
  assert.equal(staleInfo.mode, 'SMCR');
  await within(declineSeen, 5000, 'the server\'s Decline');
  const offered = acceptOf(env.relayed[1]!);
  assert.equal(offered.firstContact, false);
  // The next connection gets an RMB of its own.
  await smcrConnection(env, 'third');
  const third = acceptOf(env.relayed[2]!);
  assert.ok(third.rmbRkey !== offered.rmbRkey || third.rmbDmaAddr !== offered.rmbDmaAddr, 'not the RMB the failed handshake offered');
  assert.equal(lgr.quarantinedCount, 1, 'the offered RMB waits for the peer');
  // The stale client's closing CDC frees the RMB for reuse.
  stale.destroy();
  await until(() => lgr.quarantinedCount === 0, 5000, 'the quarantined RMB released by the peer\'s closing CDC');
  await smcrConnection(env, 'fourth');
  const fourth = acceptOf(env.relayed[3]!);
  assert.deepEqual([fourth.rmbRkey, fourth.rmbDmaAddr], [offered.rmbRkey, offered.rmbDmaAddr], 'reused once the peer was done with it');
});

test('a handshake between Accept and Confirm keeps the link group from lingering out', async (t) => {
  const env = await setup(t);
  const was = setSmcrLingerMs(100);
  t.after(() => { setSmcrLingerMs(was); });
  const one = await smcrConnection(env, 'one');
  const lgr = env.serverLgr();
  const [held, release] = latch();
  const [confirmed, confirmSeen] = latch();
  env.next({ client: async (m) => { if (m.type === CLC_CONFIRM) { confirmSeen(); await held; } return undefined; } });
  const two = env.connect();
  const twoInfo = settled(two, 'the second client settles');
  await within(confirmed, 5000, 'the second Confirm');
  // The group's only connection ends while the second handshake waits for its Confirm.
  const gone = new Promise((r) => env.accepted[0]!.once('close', r));
  one.end();
  await within(gone, 5000, 'the first connection closes at the server');
  assert.equal(lgr.conns.size, 0);
  // A timer set after the linger timer, for longer, fires after it would have.
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(lgr.dead, false, 'the group is still there for the pending Confirm');
  release();
  assert.equal((await twoInfo).mode, 'SMCR');
  await echo(two, 'two\n');
  assert.equal(env.serverLgr(), lgr);
  assert.equal(lgr.conns.size, 1);
});

test('a link group that ended between Accept and Confirm: the Confirm is declined, the RMB deregistered', async (t) => {
  const env = await setup(t);
  const base = smcrMemory().held;
  await smcrConnection(env, 'one');
  const lgr = env.serverLgr();
  const [held, release] = latch();
  const [confirmed, confirmSeen] = latch();
  env.next({ client: async (m) => { if (m.type === CLC_CONFIRM) { confirmSeen(); await held; } return undefined; } });
  const two = env.connect();
  await within(confirmed, 5000, 'the second Confirm');
  const serverTwo = await within(until(() => env.accepted.length === 2, 5000, 'the server accepts').then(() => env.accepted[1]!), 5000, 'accept');
  const serverInfo = settled(serverTwo, 'the server end settles');
  lgr.free(false, 'ended by the test');
  release();
  const i = await serverInfo;
  assert.equal(i.mode, 'TCP');
  assert.equal(i.fallbackReason, DECLINE.NOACTLINK, i.fallbackCause);
  two.destroy();
  for (const g of SmcrLinkGroup.list()) g.free(false, 'test end');
  await until(() => smcrMemory().held === base, 5000, `SMC-R memory back to ${base} bytes (held: ${smcrMemory().held})`);
});

test('a client that closes before it got the Accept never settled: the RMB the Accept offered is pooled at once, not quarantined', async (t) => {
  const env = await setup(t);
  await smcrConnection(env, 'first contact');
  const lgr = env.serverLgr();
  const [accepted, acceptSeen] = latch();
  // The Accept never reaches the client, which closes: the server reads the end of the stream
  // before any Confirm, so nothing can write into the RMB it offered.
  env.next({ server: (m) => (m.type === CLC_ACCEPT ? (acceptSeen(), null) : undefined) });
  const gone = env.connect();
  await within(accepted, 5000, 'the server\'s Accept');
  const offered = acceptOf(env.relayed[1]!);
  gone.destroy();
  await until(() => env.accepted.length >= 2, 5000, 'the server done with the second connection');
  assert.equal(lgr.quarantinedCount, 0, 'nothing waits for a CDC that cannot come');
  await smcrConnection(env, 'third');
  const third = acceptOf(env.relayed[2]!);
  assert.deepEqual([third.rmbRkey, third.rmbDmaAddr], [offered.rmbRkey, offered.rmbDmaAddr], 'the offered RMB was reused');
});
