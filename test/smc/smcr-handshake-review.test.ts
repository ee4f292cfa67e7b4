// SMC-R handshake findings of a review (docs/smc.md, "How a connection is made" and
// "Discovery"): a server that must not use SMC declines an SMC-R-only Proposal; a server whose
// Accept is out waits for the Confirm within its handshake timer and holds its writes until the
// connection settled; a discovery yes whose Proposal got no CLC answer is forgotten; a client
// never reads part of a CLC message as data. One process, no namespaces: the devices and relay
// of smcr-relay-harness.ts (127.0.0.2 the client's, 127.0.0.3 the server's).

import assert from 'node:assert/strict';
import { once } from 'node:events';
import net from 'node:net';
import { test, type TestContext } from 'node:test';
import { testRuntimeDir } from '../helpers/runtime-dir.js';

testRuntimeDir('smcr-handshake-review');
process.env.SOFTRDMA_SMC_LEARN = '0'; // every connection tries SMC, however short
const smc = await import('../../src/smc/index.js');
const { setup, settled, smcrConnection, until, sleep, within } = await import('./smcr-relay-harness.js');
const { SmcrLinkGroup } = await import('../../src/smc/smcr/lgr.js');
const { CLC_ACCEPT, CLC_CONFIRM, CLC_DECLINE, CLC_PROPOSAL, DECLINE, encodeSmcProposal, encodeSmcrAcceptConfirm, clcFrameLengthAny, localSystemId } = await import('../../src/smc/clc.js');
const { SOFTRDMA_UEID } = await import('../../src/smc/smcr/clc-flow.js');
const { clearSmcrDiscoveryCache, discoverSmcr, registerSmcrListener, setSmcrLivePeerCheck, smcrDiscoveryCounters } = await import('../../src/smc/smcr/discovery.js');
const { twoDevices } = await import('../helpers/pair.js');
type Env = Awaited<ReturnType<typeof setup>>;
type Msg = Env['relayed'][number]['fromClient'][number];
type Proposal = Parameters<typeof encodeSmcProposal>[0];

const EYECATCHER = Buffer.from([0xe2, 0xd4, 0xc3, 0xd9]);
const hex = (n: number | undefined) => (n === undefined ? 'none' : `0x${(n >>> 0).toString(16)}`);
const declineOf = (msgs: Msg[]) => (msgs.find((m) => m.type === CLC_DECLINE) as { diagnosis?: number; version?: number } | undefined);

/** How many CLC frames a byte stream starts with (a frame has the eyecatcher at both ends). */
function clcFrames(b: Buffer): number {
  let n = 0;
  for (let i = 0; b.subarray(i, i + 4).equals(EYECATCHER);) {
    const len = clcFrameLengthAny(b.subarray(i));
    if (len === 0) return n + 1; // a frame's start
    n++;
    i += len;
  }
  return n;
}

test('a server whose policy says no declines an SMC-R-only Proposal (v2 Decline, its reason): 3 connections all TCP', async (t) => {
  const env = await setup(t, undefined, { smcPolicy: () => false });
  for (let i = 0; i < 3; i++) {
    const n = env.accepted.length;
    const c = env.connect();
    const info = await settled(c, `connection ${i} settles`);
    assert.equal(info.mode, 'TCP', `client ${i}: ${info.fallbackCause ?? ''}`);
    await until(() => env.accepted.length > n && !smc.getSmcInfo(env.accepted[n]!).pending, 5000, `server end ${i} settled`);
    const server = smc.getSmcInfo(env.accepted[n]!);
    assert.equal(server.mode, 'TCP');
    const d = declineOf(env.relayed.at(-1)!.fromServer);
    assert.equal(hex(d?.diagnosis), hex(DECLINE.NOSMCDEV), 'the server declined with the policy\'s reason');
    assert.equal(d?.version, 2, 'a v2 Decline, as the Proposal');
    assert.equal(env.relayed.at(-1)!.fromServer.some((m) => m.type === CLC_ACCEPT), false, 'no Accept');
    // Over TCP, the echo server answers.
    const got = once(c, 'data');
    c.write(`ping ${i}\n`);
    assert.equal(String((await within(got, 5000, 'echo'))[0]), `ping ${i}\n`);
    c.destroy();
  }
  assert.equal(SmcrLinkGroup.list().filter((g) => g.role === 'server' && !g.dead).length, 0, 'no link group made');
});

test('an Accept without a Confirm: the server\'s handshake timer ends it within two periods and gives back its RMB and place', { timeout: 30_000 }, async (t) => {
  const TIMEOUT = 300;
  const env = await setup(t, undefined, { smcHandshakeTimeout: TIMEOUT });
  const c1 = await smcrConnection(env, 'one'); // a link group the next Proposal reuses
  const proposal = env.relayed[0]!.fromClient.find((m) => m.type === CLC_PROPOSAL) as Proposal;
  const relayPort = c1.remotePort!;
  const raw = (p: Proposal) => {
    const s = net.connect({ host: '127.0.0.3', port: relayPort, localAddress: '127.0.0.2' });
    s.on('error', () => {});
    const got: Buffer[] = [];
    s.on('data', (d: Buffer) => got.push(d));
    s.write(encodeSmcProposal(p));
    t.after(() => s.destroy());
    return { s, got };
  };
  // A client of the group: the Accept reuses it; no Confirm ever comes. That client goes to
  // SMC-R as it sends its Confirm, so no TCP fallback: a reset (Linux: smc_listen_out_err).
  const group = env.serverLgr();
  let n = env.accepted.length;
  let r = raw(proposal);
  await until(() => env.relayed.length === 2 && env.relayed[1]!.fromServer.some((m) => m.type === CLC_ACCEPT), 5000, 'the Accept');
  const accept = env.relayed[1]!.fromServer.find((m) => m.type === CLC_ACCEPT) as { firstContact: boolean };
  assert.equal(accept.firstContact, false);
  const t0 = Date.now();
  await until(() => env.accepted.length > n && !smc.getSmcInfo(env.accepted[n]!).pending, 2 * TIMEOUT + 1500, 'the server ended the handshake');
  assert.ok(Date.now() - t0 >= TIMEOUT, 'not before the timer');
  assert.equal(env.accepted[n]!.destroyed, true, 'the connection was reset');
  await until(() => declineOf(env.relayed[1]!.fromServer) !== undefined, 3000, 'the server\'s Decline');
  assert.equal(hex(declineOf(env.relayed[1]!.fromServer)?.diagnosis), hex(DECLINE.TIMEOUT_CL));
  assert.equal(group.reservedCount, 0, 'its place in the group given back');
  assert.equal(group.conns.size, 1, 'only the first connection in the group');
  await until(() => r.s.destroyed || r.s.readableEnded, 3000, 'the raw client sees the end');
  // A first contact (another peer ID): the client waits for our CONFIRM_LINK and cannot be on
  // SMC-R yet; the server declines and goes on over TCP, and its group goes.
  n = env.accepted.length;
  const other = Buffer.from(localSystemId());
  other[7] = other[7]! ^ 0xff;
  r = raw({ ...proposal, peerId: other });
  await until(() => env.relayed.length === 3 && env.relayed[2]!.fromServer.some((m) => m.type === CLC_ACCEPT), 5000, 'the second Accept');
  assert.equal((env.relayed[2]!.fromServer.find((m) => m.type === CLC_ACCEPT) as { firstContact: boolean }).firstContact, true);
  await until(() => env.accepted.length > n && !smc.getSmcInfo(env.accepted[n]!).pending, 2 * TIMEOUT + 1500, 'the server ended the first contact');
  const info = smc.getSmcInfo(env.accepted[n]!);
  assert.equal(info.mode, 'TCP');
  assert.equal(hex(info.fallbackReason), hex(DECLINE.TIMEOUT_CL));
  await until(() => SmcrLinkGroup.list().filter((g) => g.role === 'server' && !g.dead).length === 1, 3000, 'the unconfirmed group freed');
  // TCP from here: the echo answers the raw client (after the Accept and the Decline).
  r.s.write('after\n');
  await until(() => Buffer.concat(r.got).includes('after\n'), 3000, 'echo over TCP');
  assert.equal(group.reservedCount, 0);
});

test('a server write after its Accept waits for the Confirm and goes over SMC-R, where the client reads it', { timeout: 30_000 }, async (t) => {
  const env = await setup(t, (s) => {
    s.pipe(s);
    if (env.accepted.length === 2) setTimeout(() => { if (!s.destroyed) s.write('BANNER\n'); }, 500);
  });
  await smcrConnection(env, 'one'); // the group the next connection reuses: its client settles at its Confirm
  // The Confirm reaches the server only 1 s later: the banner is written in between.
  env.next({ client: async (m) => { if (m.type === CLC_CONFIRM) await sleep(1000); return undefined; } });
  const c = env.connect();
  const got: Buffer[] = [];
  c.on('data', (d: Buffer) => got.push(d));
  const info = await settled(c, 'the client settles');
  assert.equal(info.mode, 'SMCR', info.fallbackCause);
  await until(() => Buffer.concat(got).includes('BANNER\n'), 5000, 'the client reads the banner');
  assert.equal(smc.getSmcInfo(env.accepted[1]!).mode, 'SMCR', 'the server settled on SMC-R');
  assert.equal(Buffer.concat(got).toString(), 'BANNER\n');
});

/**
 * A cached yes for a port an SMC-R server had, now a plain server's (it greets first, or
 * echoes); 3 connections; the CLC frames it saw in each. `live`: the client has a live SMC-R
 * connection to that host meanwhile (its process lives; it closed that listener), so the yes
 * is taken as it is; without one the yes is asked again before any Proposal.
 */
async function staleYes(t: TestContext, plainKind: 'greets' | 'echoes', live = true): Promise<number[]> {
  const { a, b } = await twoDevices();
  clearSmcrDiscoveryCache();
  const was = setSmcrLivePeerCheck(() => live);
  t.after(() => { setSmcrLivePeerCheck(was); });
  const frames: number[] = [];
  const socks = new Set<net.Socket>();
  // The plain server that took the port: it greets first (the client learns at once that no CLC answer comes).
  const plain = net.createServer((s) => {
    socks.add(s);
    const i = frames.push(0) - 1;
    let all = Buffer.alloc(0);
    s.on('data', (d: Buffer) => { all = Buffer.concat([all, d]); frames[i] = clcFrames(all); });
    s.on('error', () => {});
    if (plainKind === 'echoes') s.pipe(s);
    else s.write('220 plain\r\n');
  });
  plain.listen(0, '127.0.0.3');
  await once(plain, 'listening');
  const port = (plain.address() as net.AddressInfo).port;
  t.after(async () => {
    for (const s of socks) s.destroy();
    plain.close();
    clearSmcrDiscoveryCache();
    await a.close();
    await b.close();
  });
  // The SMC-R server that was there answered discovery: a yes in the cache.
  const listen = registerSmcrListener('127.0.0.3', port, b);
  const d = discoverSmcr(a, '127.0.0.2', '127.0.0.3', port);
  if (d.go === 'wait') await within(new Promise((r) => d.query.onDone(r)), 3000, 'the SIDR answer');
  listen.remove(); // that server is gone
  const d2 = discoverSmcr(a, '127.0.0.2', '127.0.0.3', port);
  assert.equal(d2.go, live ? 'propose' : 'wait', live ? 'a cached yes, a live connection to the peer' : 'a cached yes asked again');
  if (d2.go === 'wait') await within(new Promise((r) => d2.query.onDone(r)), 3000, 'the second SIDR answer');
  for (let i = 0; i < 3; i++) {
    const c = smc.connect({ host: '127.0.0.3', port, localAddress: '127.0.0.2', smcr: { device: a } });
    c.on('error', () => {});
    socks.add(c);
    const info = await settled(c, `connection ${i} settles`);
    assert.equal(info.mode, 'TCP');
    const got: Buffer[] = [];
    c.on('data', (x: Buffer) => got.push(x));
    if (plainKind === 'greets') await until(() => Buffer.concat(got).toString() === '220 plain\r\n', 3000, `connection ${i} reads the greeting`);
    c.write('QUIT\r\n');
    if (plainKind === 'echoes') await until(() => Buffer.concat(got).toString() === 'QUIT\r\n', 3000, `connection ${i} reads its echo, no CLC byte`);
    await until(() => frames.length > i && frames[i] !== undefined, 3000, 'the server saw it');
    await sleep(50);
    c.destroy();
  }
  return frames;
}

test('a discovery yes whose Proposal gets no CLC answer is forgotten: an SMC-R server replaced by a plain one sees one CLC frame in 3 connections', { timeout: 30_000 }, async (t) => {
  const before = smcrDiscoveryCounters().withdrawn ?? 0;
  const frames = await staleYes(t, 'greets');
  const total = frames.reduce((x, y) => x + y, 0);
  assert.ok(total <= 1, `the plain server saw ${total} CLC frames (${frames.join(', ')})`);
  assert.equal(smcrDiscoveryCounters().withdrawn, before + 1);
});

test('the same with a plain echo server (the Proposal comes back: out of sync): only the first connection carries CLC bytes', { timeout: 30_000 }, async (t) => {
  const frames = await staleYes(t, 'echoes');
  assert.deepEqual(frames.slice(1), [0, 0], `CLC frames per connection: ${frames.join(', ')}`);
});

test('with no live connection to the peer a cached yes is asked again first: the plain server that took the port sees no CLC byte at all', { timeout: 30_000 }, async (t) => {
  const before = smcrDiscoveryCounters().revalidated;
  const frames = await staleYes(t, 'greets', false);
  assert.deepEqual(frames, [0, 0, 0], `CLC frames per connection: ${frames.join(', ')}`);
  assert.equal(smcrDiscoveryCounters().revalidated, before + 1);
});

test('the server answers the Proposal with part of an Accept, then its end: the client gets an error, never those bytes as data', async (t) => {
  const { a, b } = await twoDevices();
  const accept = encodeSmcrAcceptConfirm({
    type: CLC_ACCEPT, version: 2, firstContact: false, peerId: localSystemId(), gid: Buffer.alloc(16), mac: Buffer.alloc(6), qpn: 17,
    rmbRkey: 1, rmbeIndex: 1, rmbeAlertToken: 1, rmbeSize: 0, qpMtu: 3, rmbDmaAddr: 0n, psn: 0, eid: SOFTRDMA_UEID, fce: null, gidList: null,
  });
  const socks = new Set<net.Socket>();
  const fake = net.createServer((s) => {
    socks.add(s);
    s.on('error', () => {});
    s.once('data', () => s.end(accept.subarray(0, 12)));
  });
  fake.listen(0, '127.0.0.3');
  await once(fake, 'listening');
  t.after(async () => {
    for (const s of socks) s.destroy();
    fake.close();
    await a.close();
    await b.close();
  });
  const c = smc.connect({ host: '127.0.0.3', port: (fake.address() as net.AddressInfo).port, localAddress: '127.0.0.2', smcr: { device: a, discovery: false } });
  socks.add(c);
  const data: Buffer[] = [];
  c.on('data', (d: Buffer) => data.push(d));
  const [err] = await within(once(c, 'error'), 5000, 'the client\'s error') as [NodeJS.ErrnoException];
  assert.equal(err.code, 'ECONNRESET');
  await sleep(50);
  assert.equal(Buffer.concat(data).toString('hex'), '', 'no data (no CLC bytes)');
  assert.equal(smc.getSmcInfo(c).pending, false);
});
