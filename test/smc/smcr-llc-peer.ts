// The scenarios of smcr-llc-flows.test.ts, one per process: run inside a network namespace
// whose loopback has four addresses in two /24 subnets, an rxe device on each (A1, B1 in the
// first subnet, A2, B2 in the second), so link groups between A1 (client) and B1 (server) get a
// second link on the second subnet (ADD_LINK; what it shares with smcr-review-llc-peer.ts is in
// smcr-llc-peer-common.ts). The SMC-R server listens on B1 behind a TCP
// relay, which can hold a CLC message of one connection (an Accept or a Confirm) or the end of
// the client's TCP stream, to put a handshake or a close where a scenario needs it. Prints one
// JSON line with the scenario's findings ({ scenario: ... }) and exits; { fail } on an error.
//
//   node smcr-llc-peer.js <overlap|readd|sqfull|hostile|devclose|reuse|linger|rkeys|delrkey>

import net from 'node:net';
import { once } from 'node:events';
import { rxeOf, type Device } from '../../src/index.js';
import * as smc from '../../src/smc/index.js';
import * as lgrModule from '../../src/smc/smcr/lgr.js';
import { SmcrLinkGroup, smcrMemory, type Rmb } from '../../src/smc/smcr/lgr.js';
import type { SmcrConnection } from '../../src/smc/smcr/connection.js';
import type { SmcrLink } from '../../src/smc/smcr/link.js';
import { smcState } from '../../src/smc/state.js';
import { EYECATCHER_R } from '../../src/smc/clc.js';
import { devices, group, groups, runScenario, twoLinks, until, type Name } from './smcr-llc-peer-common.js';

const ADDR = { A1: '10.91.1.1', B1: '10.91.1.2', A2: '10.91.2.1', B2: '10.91.2.2' } as const;
const CLC_ACCEPT = 2, CLC_CONFIRM = 3;

/** Like until, but false instead of a throw (for what the old code never does). */
async function within(cond: () => boolean, ms: number): Promise<boolean> {
  try { await until(cond, '', ms); return true; } catch { return false; }
}

/** A CLC message of this type starts the chunk (each CLC message of a handshake goes alone). */
const isClc = (b: Buffer, type: number) => b.length > 4 && b.subarray(0, 4).equals(EYECATCHER_R) && b[4] === type;

interface Relay {
  /** Hold a chunk of connection idx (0 first), going up (client to server) or down: return a promise to wait for. */
  hold?: (dir: 'up' | 'down', idx: number, b: Buffer) => Promise<void> | undefined;
  /** Hold the client's end of its TCP stream. */
  holdEnd?: () => Promise<void>;
}

async function setup(d: Record<Name, Device>, serverHandler?: (s: net.Socket) => void, bufferSize = 65536) {
  const opts = { smcBufferSize: bufferSize, smcHandshakeTimeout: 10_000 };
  const accepted: net.Socket[] = [];
  const server = smc.createServer({ smcr: { device: d.B1 }, ...opts }, (s) => {
    accepted.push(s);
    s.on('error', () => {});
    if (serverHandler) serverHandler(s);
    else s.pipe(s);
  });
  server.listen(0, ADDR.B1);
  await once(server, 'listening');
  const relay: Relay = {};
  let n = 0;
  const rs = net.createServer((c) => {
    const idx = n++;
    const u = net.connect({ host: ADDR.B1, port: (server.address() as net.AddressInfo).port, localAddress: ADDR.A1 });
    let up = Promise.resolve();
    let down = Promise.resolve();
    c.on('data', (b) => { up = up.then(async () => { await relay.hold?.('up', idx, b); u.write(b); }); });
    u.on('data', (b) => { down = down.then(async () => { await relay.hold?.('down', idx, b); c.write(b); }); });
    c.on('end', () => { up = up.then(async () => { await relay.holdEnd?.(); u.end(); }); });
    u.on('end', () => c.end());
    c.on('error', () => u.destroy());
    u.on('error', () => c.destroy());
  });
  rs.listen(0, ADDR.B1);
  await once(rs, 'listening');
  const errors: string[] = [];
  const connect = () => {
    const s = smc.connect({ host: ADDR.B1, port: (rs.address() as net.AddressInfo).port, localAddress: ADDR.A1, smcr: { device: d.A1, discovery: false }, ...opts });
    s.on('error', (e: NodeJS.ErrnoException) => errors.push(`${e.code}: ${e.message}`));
    return s;
  };
  const open = async () => {
    const s = connect();
    const info = (await once(s, 'smc'))[0] as { mode: string };
    if (info.mode !== 'SMCR') throw new Error(`a connection settled on ${info.mode}`);
    return s;
  };
  return { relay, connect, open, errors, accepted };
}

const oneLink = () => groups().length === 2 && groups().every((g) => g.activeLinks().length === 1);
const connOf = (s: net.Socket) => smcState(s)?.conn as SmcrConnection | undefined;

/** Per side, the connections lacking the peer's key on an active link (the failover would lose them). */
function missingKeys(): Record<string, string[]> {
  const r: Record<string, string[]> = {};
  for (const g of groups()) {
    const ls = g.activeLinks();
    r[g.role] = [...g.conns.values()].flatMap((c) => ls.filter((l) => !c.peerKeyOn(l)).map((l) => `token ${c.token} on link ${c.link.id}: no key on link ${l.id}`));
  }
  return r;
}

/** Echo `bytes` through each socket; resolves per socket with what happened. */
function echo(socks: net.Socket[], bytes: number) {
  return socks.map((s, i) => new Promise<Record<string, unknown>>((resolve) => {
    let n = 0;
    s.on('data', (b: Buffer) => { n += b.length; if (n >= bytes) resolve({ i, ok: true, switches: connOf(s)?.switches }); });
    s.on('error', (e) => resolve({ i, ok: false, err: e.message }));
    s.on('close', () => resolve({ i, ok: n >= bytes, closed: true, n }));
    const buf = Buffer.alloc(64 << 10, i);
    let sent = 0;
    const pump = () => { while (sent < bytes) { sent += buf.length; if (!s.write(buf)) return void s.once('drain', pump); } };
    pump();
  }));
}

/** One round trip through the (echoing) server on s, or why not within ms. */
async function ping(s: net.Socket, ms = 4000): Promise<string> {
  if (s.destroyed) return 'destroyed';
  let seen = '';
  const got = new Promise<string>((resolve) => {
    s.on('data', (b: Buffer) => { seen += b.toString('latin1'); if (seen.endsWith('ping')) resolve('echo ok'); });
    s.once('close', () => resolve('closed'));
  });
  s.write('ping');
  return Promise.race([got, new Promise<string>((r) => setTimeout(() => r(`no echo within ${ms} ms`), ms).unref())]);
}

const scenarios: Record<string, () => Promise<Record<string, unknown>>> = {
  // Six connections opened at once, as the first link group's ADD_LINK runs: each ends with the
  // peer's keys on both links, they spread over both links, and when the first link is cut
  // (A1 stops sending) all of them carry on over the second.
  async overlap() {
    const d = await devices(ADDR);
    const env = await setup(d);
    const socks = Array.from({ length: 6 }, () => env.connect());
    const modes = await Promise.all(socks.map(async (s) => ((await once(s, 'smc'))[0] as { mode: string }).mode));
    await until(() => twoLinks() && group('server').conns.size === 6 && group('client').conns.size === 6, 'six connections on two links');
    const missing = missingKeys();
    const perLink = group('server').activeLinks().map((l) => [...group('server').conns.values()].filter((c) => c.link === l).length);
    const results = echo(socks, 1 << 20);
    await until(() => socks.every((s) => s.bytesRead > 0), 'the echoes under way');
    rxeOf(d.A1).faults = { drop: 1 };
    const done = await Promise.race([Promise.all(results), new Promise<string>((r) => setTimeout(() => r('timeout'), 20_000).unref())]);
    return { modes, missing, perLink, results: done, errors: env.errors, events: group('client')?.linkEvents };
  },

  // The server lost its second link and adds one again (SOFTRDMA_SMCR_ADDLINK_MS later) while
  // two handshakes that chose with one link are between the Accept and the Confirm: one with its
  // Confirm held (the client joined, the server not yet), one with its Accept held (the server
  // offered its RMB, the client has not seen it). ADD_LINK names their RMBs: both connections end
  // with the peer's keys on both links, on both sides.
  async readd() {
    const d = await devices(ADDR);
    const env = await setup(d);
    await env.open();
    await until(twoLinks, 'two links');
    const sv = group('server');
    const second = sv.links.find((l) => l !== sv.links[0])!;
    second.handlers!.down('simulated work request error');
    await until(oneLink, 'one link on both sides');
    let release!: () => void;
    const held = new Promise<void>((r) => { release = r; });
    const holds: string[] = [];
    env.relay.hold = (dir, idx, b) => {
      if ((idx === 1 && dir === 'up' && isClc(b, CLC_CONFIRM)) || (idx === 2 && dir === 'down' && isClc(b, CLC_ACCEPT))) {
        holds.push(`${idx} ${dir}`);
        return held;
      }
      return undefined;
    };
    // The client settles as it sends its Confirm: listen for 'smc' from the start.
    const settled = (s: net.Socket) => once(s, 'smc').then(([info]) => (info as { mode: string }).mode);
    const x = env.connect();
    const modeX = settled(x);
    await until(() => holds.length === 1, 'the Confirm held');
    const y = env.connect();
    const modeY = settled(y);
    await until(() => holds.length === 2, 'the Accept held');
    const addedBefore = sv.linkEvents.added;
    await until(() => twoLinks() && sv.linkEvents.added > addedBefore, 'a second link again', 15_000);
    release();
    const modes = await Promise.all([modeX, modeY]);
    await until(() => group('server').conns.size === 3 && group('client').conns.size === 3, 'three connections on both sides');
    return { modes, missing: missingKeys(), errors: env.errors, holds };
  },

  // 255 connections over two links; the server alone sees the first fail (simulated), with a
  // write of each of its connections there unconfirmed (the client's first device sends
  // nothing, so no ACK): those (about 128) each post three work requests on the second link
  // to move (the failover-validation CDC, the WRITE again, its CDC), more than its send queue
  // holds, and the DELETE_LINK after them must still reach the client, whose connections
  // then move too.
  async sqfull() {
    const d = await devices(ADDR);
    const env = await setup(d, undefined, 16384);
    const socks = [await env.open()];
    await until(twoLinks, 'two links');
    while (socks.length < 255) socks.push(...await Promise.all(Array.from({ length: Math.min(15, 255 - socks.length) }, () => env.open())));
    await until(() => env.accepted.length === 255, 'the server\'s sockets');
    const sv = group('server'), cl = group('client');
    const first = sv.links[0]!;
    const onFirst = env.accepted.filter((s) => connOf(s)?.link === first);
    rxeOf(d.A1).faults = { drop: 1 };
    for (const s of onFirst) s.write('x');
    await new Promise((r) => setImmediate(r)); // the writes are posted (a microtask each)
    first.handlers!.down('simulated work request error on the server only');
    const told = await within(() => (cl.llcRx.DELETE_LINK ?? 0) > 0, 5000);
    const s = socks.find((x) => connOf(x)?.link.id === first.id) ?? socks[0]!;
    return { onFirst: onFirst.length, told, clientDeleteLinkRx: cl.llcRx.DELETE_LINK ?? 0, serverDeleteLinkTx: sv.llcTx.DELETE_LINK ?? 0, llcSq: sv.llcSq, echo: await ping(s), errors: env.errors.length };
  },

  // A server that sends ADD_LINK requests naming QPN 0 (and never adds a link itself): each is
  // refused, and none leaves a QP behind.
  async hostile() {
    (SmcrLinkGroup.prototype as unknown as { srvAddLink(): Promise<void> }).srvAddLink = async () => {};
    const d = await devices(ADDR);
    const env = await setup(d, undefined, 16384);
    await env.open();
    await until(() => groups().length === 2, 'both groups');
    const sv = group('server'), cl = group('client');
    const qps = () => Object.fromEntries((['A1', 'B1', 'A2', 'B2'] as Name[]).map((n) => [n, rxeOf(d[n]).qps.size]));
    const before = qps();
    const gid = Buffer.alloc(16);
    gid[10] = 0xff; gid[11] = 0xff;
    Buffer.from([10, 91, 2, 2]).copy(gid, 12);
    const N = 100;
    for (let i = 0; i < N; i++) {
      sv.sendLlc({ kind: 'ADD_LINK', version: 2, response: false, rejected: false, rejReason: 0, senderMac: Buffer.alloc(6), senderGid: gid, senderQpn: 0, linkNum: 2, qpMtu: 5, initialPsn: 0, v2ext: null }, sv.first);
      if (i % 20 === 19) await until(() => cl.linkEvents.addRejected >= i + 1, 'the rejections');
    }
    await until(() => cl.linkEvents.addRejected >= N, 'the rejections');
    await new Promise((r) => setImmediate(r)); // links are destroyed once the tick's completions are handled
    return { before, after: qps(), rejected: cl.linkEvents.addRejected, lastFailure: cl.linkEvents.lastFailure, clientLinks: cl.links.length };
  },

  // Two links, three connections (on links 1, 2, 1); the client's first device (A1, link 1's)
  // is closed: the connections on it move to link 2, the server hears DELETE_LINK, and all
  // three still echo.
  async devclose() {
    const d = await devices(ADDR);
    const env = await setup(d);
    const socks = [await env.open()];
    await until(twoLinks, 'two links');
    socks.push(await env.open(), await env.open());
    const links = socks.map((s) => connOf(s)!.link.id);
    const sv = group('server');
    await d.A1.close();
    const told = await within(() => (sv.llcRx.DELETE_LINK ?? 0) > 0, 5000);
    const res: string[] = [];
    for (const s of socks) res.push(await ping(s));
    const g = (role: string) => SmcrLinkGroup.list().filter((x) => x.role === role).map((x) => ({ dead: x.dead, links: x.activeLinks().map((l) => l.dev.address), events: x.linkEvents }));
    return { links, told, res, client: g('client'), server: g('server'), errors: env.errors };
  },

  // A connection on link 1 writes 40000 bytes and is destroyed; the client's posts on link 1
  // arrive but their ACKs do not (B1 sends nothing), so they stay unconfirmed. The server reads
  // them and closes, and its RMB goes back to the pool; a new connection gets that RMB and its
  // client writes 30000 bytes, unread. When the client finds link 1 dead (TEST_LINK) and fails
  // over, the closed connection must not write its old bytes again: they would land in the new
  // connection's ring (Linux does not resend for closing connections either).
  async reuse() {
    const d = await devices(ADDR);
    const serverSocks: net.Socket[] = [];
    const got: number[] = [];
    const env = await setup(d, (s) => {
      const i = serverSocks.push(s) - 1;
      got[i] = 0;
      if (i < 2) s.on('data', (b: Buffer) => { got[i]! += b.length; });
      s.on('end', () => s.end());
    });
    const first = await env.open();
    await until(twoLinks, 'two links');
    const other = await env.open();
    const cl = group('client');
    const victim = connOf(first)!.link.id === 1 ? first : other;
    const vIdx = victim === first ? 0 : 1;
    await until(() => serverSocks.length === 2, 'both server sockets');
    const vServer = connOf(serverSocks[vIdx]!)!;
    const vRmb = vServer.rmb;
    rxeOf(d.B1).faults = { drop: 1 };
    victim.write(Buffer.alloc(40000, 7));
    victim.destroy();
    await until(() => got[vIdx]! >= 40000, 'the victim\'s bytes at the server');
    await until(() => vServer.released, 'the server\'s end released', 5000);
    const next = await env.open();
    await until(() => serverSocks.length === 3 && connOf(serverSocks[2]!) !== undefined, 'the new connection at the server');
    const c3 = connOf(serverSocks[2]!)!;
    c3.pause();
    const sameRmb = c3.rmb === vRmb;
    next.write(Buffer.alloc(30000, 0x4e));
    await until(() => c3.readable >= 30000, 'the new connection\'s bytes in its RMB');
    const failedOver = await within(() => cl.linkEvents.deleted > 0, 15_000);
    await new Promise((r) => setTimeout(r, 500)); // any resend has landed
    const app: Buffer[] = [];
    serverSocks[2]!.on('data', (b: Buffer) => { app.push(b); });
    c3.resume();
    await within(() => Buffer.concat(app).length >= 30000, 3000);
    const read = Buffer.concat(app);
    return { sameRmb, failedOver, read: read.length, sevens: read.filter((x) => x === 7).length, closingLeft: cl.closingCount };
  },

  // An idle group lingers (400 ms here); a Proposal arrives while an ADD_LINK-like flow holds
  // the lock for 1 s. The handshake waiting for its turn keeps the group from lingering out
  // under it: it gets SMC-R in the same group (before, the group was freed and the handshake
  // declined to TCP).
  async linger() {
    lgrModule.setSmcrLingerMs(400);
    const d = await devices(ADDR);
    const env = await setup(d, undefined, 16384);
    const s = await env.open();
    await until(twoLinks, 'two links');
    const sv = group('server');
    s.destroy();
    await until(() => sv.conns.size === 0 && sv.closingCount === 0, 'the group idle');
    await new Promise((r) => setTimeout(r, 100)); // lingering now
    const release = await sv.llcFlow('ADD_LINK'); // as the server's ADD_LINK holds it
    setTimeout(release, 1000);
    const c = env.connect();
    const [m] = await once(c, 'smc') as [{ mode: string }];
    c.destroy();
    return { mode: m.mode, serverGroupDead: sv.dead, deleteLinkTx: sv.llcTx.DELETE_LINK ?? 0 };
  },

  // Two CONFIRM_RKEY requests of the client at once, on the two links, announcing buffers
  // whose rkeys on those links are the same number (each device numbers its own keys): each
  // must get its own answer.
  async rkeys() {
    const d = await devices(ADDR);
    const env = await setup(d);
    await env.open();
    await until(twoLinks, 'two links');
    const cl = group('client');
    const [l1, l2] = cl.activeLinks() as [SmcrLink, SmcrLink];
    const fake = (a: SmcrLink, b: SmcrLink, addr: number) => {
      const mr = { rkey: 0x123456, addr };
      return { buf: Buffer.alloc(64), mr, size: 64, access: 0, mrs: new Map([[a.dev, mr], [b.dev, { rkey: 0x654321, addr: addr + 0x1000 }]]) } as unknown as Rmb;
    };
    const r = await Promise.allSettled([cl.announceRmb(fake(l1, l2, 0x10000), l1), cl.announceRmb(fake(l2, l1, 0x20000), l2)]);
    return { results: r.map((x) => x.status === 'fulfilled' ? 'ok' : String((x.reason as Error).message)), rkeyNegative: group('server').rx.rkeyNegative, unexpected: cl.rx.llcUnexpected };
  },

  // An RMB offered in an Accept whose handshake failed waits in quarantine; when that runs out
  // (shortened here) the server tells the client with DELETE_RKEY before it deregisters it.
  async delrkey() {
    const setQuarantine = (lgrModule as { setSmcrOfferedQuarantineMs?: (ms: number) => number }).setSmcrOfferedQuarantineMs;
    if (!setQuarantine) throw new Error('no setSmcrOfferedQuarantineMs: the offered quarantine cannot be shortened');
    setQuarantine(200);
    const d = await devices(ADDR);
    const env = await setup(d);
    await env.open();
    await until(twoLinks, 'two links');
    const sv = group('server'), cl = group('client');
    const rmb = sv.takeRmb(16384);
    const held = smcrMemory().held;
    sv.giveBack(rmb, undefined, sv.newToken(), true);
    const quarantined = sv.quarantinedCount;
    const expired = await within(() => sv.quarantinedCount === quarantined - 1, 5000);
    await new Promise((r) => setTimeout(r, 300)); // a DELETE_RKEY, if one went, has arrived
    return { expired, quarantined, left: sv.quarantinedCount, tx: sv.llcTx.DELETE_RKEY ?? 0, clientRx: cl.llcRx.DELETE_RKEY ?? 0, freed: held - smcrMemory().held };
  },
};

await runScenario(scenarios);
