// SMC-R handshakes and link groups against what Linux's net/smc does (review findings): more
// connections opened at once than a link group holds, the Decline reasons Linux gives for
// max_conns / max_links out of range (smc_clc.c), a first CONFIRM_LINK without the
// NO_RMBE_EYEC flag (RMBE_EC), a QP that cannot be readied (ERR_RDYLNK), a reuse of a group
// the client does not have (SYNCERR), and a client's REQ_ADD_LINK (answered as
// smc_llc_send_req_add_link_response does when no link is added). One process, no namespaces
// (smcr-relay-harness.ts): the relay rewrites CLC messages where a test needs a peer that
// sends other values than softrdma does.

import assert from 'node:assert/strict';
import { once } from 'node:events';
import type net from 'node:net';
import { test } from 'node:test';
import { testRuntimeDir } from '../helpers/runtime-dir.js';
import { listenBehindRelay } from '../helpers/tcp-relay.js';

testRuntimeDir('smcr-review-handshake');
process.env.SOFTRDMA_SMC_LEARN = '0'; // every connection tries SMC, however short
const smc = await import('../../src/smc/index.js');
const { setup, settled, smcrConnection, until, sleep } = await import('./smcr-relay-harness.js');
const { SmcrLinkGroup } = await import('../../src/smc/smcr/lgr.js');
const { CLC_ACCEPT, CLC_CONFIRM, CLC_DECLINE, CLC_PROPOSAL, DECLINE, encodeSmcProposal, encodeSmcrAcceptConfirm } = await import('../../src/smc/clc.js');
const { encodeLlc } = await import('../../src/smc/wire/llc.js');
const { twoDevices } = await import('../helpers/pair.js');
type Env = Awaited<ReturnType<typeof setup>>;
type Msg = Env['relayed'][number]['fromClient'][number];
type Proposal = Parameters<typeof encodeSmcProposal>[0];
type AcceptConfirm = Parameters<typeof encodeSmcrAcceptConfirm>[0];

/** The reason of the Decline a side sent in connection i (relay's record), or undefined. */
const declineOf = (msgs: Msg[]) => (msgs.find((m) => m.type === CLC_DECLINE) as { diagnosis?: number } | undefined)?.diagnosis;
const hex = (n: number | undefined) => (n === undefined ? 'none' : `0x${(n >>> 0).toString(16)}`);

/** A connection through the relay with these hooks; both ends' settling. */
async function attempt(env: Env, hooks: Parameters<Env['next']>[0]) {
  env.next(hooks);
  const n = env.accepted.length;
  const c = env.connect();
  const client = await settled(c, 'the client settles');
  // The server's socket may have settled before the test sees it: its state, not its 'smc' event.
  await until(() => env.accepted.length > n && !smc.getSmcInfo(env.accepted[n]!).pending, 5000, 'the server\'s socket settled');
  const server = smc.getSmcInfo(env.accepted[n]!);
  return { c, client, server, relayed: env.relayed.at(-1)! };
}

test('connections opened at once beyond a link group\'s 255: the full group sends the rest to a new one, all SMC-R', { timeout: 60_000 }, async (t) => {
  const N = 270;
  const { a, b } = await twoDevices();
  const opts = { smcBufferSize: 16384, smcHandshakeTimeout: 30_000 };
  const serverInfo: string[] = [];
  const server = smc.createServer({ smcr: { device: b }, ...opts }, (s) => {
    s.on('error', () => {});
    s.once('smc', (i: { mode: string; fallbackReason?: number }) => serverInfo.push(`${i.mode}${i.fallbackReason ? ` ${hex(i.fallbackReason)}` : ''}`));
    s.pipe(s);
  });
  const relay = await listenBehindRelay(server, '127.0.0.3', '127.0.0.2');
  const socks: net.Socket[] = [];
  t.after(async () => {
    for (const s of socks) s.destroy();
    relay.close();
    server.close();
    for (const g of SmcrLinkGroup.list()) g.free(false, 'test end');
    await a.close();
    await b.close();
  });
  const mk = () => {
    const s = smc.connect({ host: '127.0.0.3', port: (relay.address() as net.AddressInfo).port, localAddress: '127.0.0.2', smcr: { device: a, discovery: false }, ...opts });
    s.on('error', () => {});
    socks.push(s);
    return once(s, 'smc').then(([i]) => i as { mode: string; fallbackReason?: number });
  };
  assert.equal((await mk()).mode, 'SMCR', 'the first contact');
  const infos = await Promise.all(Array.from({ length: N - 1 }, mk));
  const modes = infos.map((i) => `${i.mode}${i.fallbackReason ? ` ${hex(i.fallbackReason)}` : ''}`);
  assert.deepEqual(modes.filter((m) => m !== 'SMCR'), [], 'every client end SMC-R');
  await until(() => serverInfo.length === N, 10_000, 'every server end settled');
  assert.deepEqual(serverInfo.filter((m) => m !== 'SMCR'), [], 'every server end SMC-R');
  const groups = SmcrLinkGroup.list().filter((g) => g.role === 'server' && !g.dead);
  assert.deepEqual(groups.map((g) => g.conns.size).sort((x, y) => y - x), [255, N - 255]);
  assert.ok(groups.every((g) => g.reservedCount === 0), 'every place taken at a Proposal given back');
});

test('max_conns and max_links as Linux negotiates them: out of range declines MAXCONNERR / MAXLINKERR, in range is the group\'s', async (t) => {
  const env = await setup(t);
  /** The client's Proposal with other max_conns / max_links in its v2 extension (a peer of another configuration). */
  const proposal = (maxConns: number, maxLinks?: number) => (m: Msg) => {
    if (m.type !== CLC_PROPOSAL) return undefined;
    const p = m as Proposal & { v2: NonNullable<Proposal['v2']> };
    return encodeSmcProposal({ ...p, v2: { ...p.v2, maxConns, maxLinks: maxLinks ?? p.v2.maxLinks } });
  };
  // Fewer than SMC_CONN_PER_LGR_MIN (16): the server declines MAXCONNERR (smc_clc_srv_v2x_features_validate).
  let r = await attempt(env, { client: proposal(15) });
  assert.equal(r.client.mode, 'TCP');
  assert.equal(hex(declineOf(r.relayed.fromServer)), hex(DECLINE.MAXCONNERR));
  // max_links 0: MAXLINKERR.
  r = await attempt(env, { client: proposal(255, 0) });
  assert.equal(r.client.mode, 'TCP');
  assert.equal(hex(declineOf(r.relayed.fromServer)), hex(DECLINE.MAXLINKERR));
  // 16: a group of 16 at both ends (the server's Accept names it, the client's Confirm repeats it).
  r = await attempt(env, { client: proposal(16) });
  assert.equal(r.client.mode, 'SMCR', r.client.fallbackCause);
  assert.equal(r.server.mode, 'SMCR');
  const accept = r.relayed.fromServer.find((m) => m.type === CLC_ACCEPT) as AcceptConfirm;
  const confirm = r.relayed.fromClient.find((m) => m.type === CLC_CONFIRM) as AcceptConfirm;
  assert.equal(accept.fce?.v2x?.maxConns, 16);
  assert.equal(confirm.fce?.v2x?.maxConns, 16);
  assert.equal(env.serverLgr().maxConns, 16);
  assert.equal(env.clientLgr().maxConns, 16);
  r.c.destroy();
});

test('the client checks the first contact\'s Accept: max_conns under 16 MAXCONNERR, max_links beyond 2 MAXLINKERR; the server its Confirm', async (t) => {
  const env = await setup(t);
  const accept = (f: (m: AcceptConfirm) => AcceptConfirm) => (m: Msg) => (m.type === CLC_ACCEPT ? encodeSmcrAcceptConfirm(f(m as AcceptConfirm)) : undefined);
  const v2x = (m: AcceptConfirm, x: Partial<NonNullable<NonNullable<AcceptConfirm['fce']>['v2x']>>) => ({ ...m, fce: { ...m.fce!, v2x: { ...m.fce!.v2x!, ...x } } });
  let r = await attempt(env, { server: accept((m) => v2x(m, { maxLinks: 3 })) });
  assert.equal(r.client.mode, 'TCP');
  assert.equal(hex(r.client.fallbackReason), hex(DECLINE.MAXLINKERR), r.client.fallbackCause);
  r = await attempt(env, { server: accept((m) => v2x(m, { maxConns: 8 })) });
  assert.equal(hex(r.client.fallbackReason), hex(DECLINE.MAXCONNERR), r.client.fallbackCause);
  // The Confirm must repeat the Accept's values (smc_clc_v2x_features_confirm_check).
  r = await attempt(env, { client: (m) => (m.type === CLC_CONFIRM ? encodeSmcrAcceptConfirm(v2x(m as AcceptConfirm, { maxConns: 200 })) : undefined) });
  assert.equal(r.server.mode, 'TCP');
  assert.equal(hex(declineOf(r.relayed.fromServer)), hex(DECLINE.MAXCONNERR));
});

test('a first contact whose QP cannot be readied declines ERR_RDYLNK; a reuse of a group the client does not have, SYNCERR', async (t) => {
  const env = await setup(t);
  // A path MTU no QP takes (0): smc_ib_ready_link fails.
  let r = await attempt(env, { server: (m) => (m.type === CLC_ACCEPT ? encodeSmcrAcceptConfirm({ ...(m as AcceptConfirm), qpMtu: 0 }) : undefined) });
  assert.equal(r.client.mode, 'TCP');
  assert.equal(hex(r.client.fallbackReason), hex(DECLINE.ERR_RDYLNK), r.client.fallbackCause);
  // The server says "reuse" to a client with no group: smc_conn_create's SYNCERR.
  r = await attempt(env, { server: (m) => (m.type === CLC_ACCEPT ? encodeSmcrAcceptConfirm({ ...(m as AcceptConfirm), firstContact: false, fce: null }) : undefined) });
  assert.equal(r.client.mode, 'TCP');
  assert.equal(hex(r.client.fallbackReason), hex(DECLINE.SYNCERR), r.client.fallbackCause);
  // And a plain connection still makes it.
  await smcrConnection(env, 'plain');
});

test('a first CONFIRM_LINK without the NO_RMBE_EYEC flag: the client declines RMBE_EC and does not answer', async (t) => {
  const env = await setup(t);
  const proto = SmcrLinkGroup.prototype as unknown as { confirmLinkMsg(this: { role: string }, l: unknown): Record<string, unknown> };
  const orig = proto.confirmLinkMsg;
  proto.confirmLinkMsg = function (l) {
    const m = orig.call(this, l);
    return this.role === 'server' ? { ...m, noRmbeEyec: false } : m; // a server that would put eyecatchers in its RMBEs
  };
  t.after(() => { proto.confirmLinkMsg = orig; });
  const c = env.connect();
  const i = await settled(c, 'the client settles');
  assert.equal(i.mode, 'TCP');
  assert.equal(hex(i.fallbackReason), hex(DECLINE.RMBE_EC), i.fallbackCause);
  const client = SmcrLinkGroup.list().find((g) => g.role === 'client' && g.dev.address === '127.0.0.2');
  assert.equal(client?.llcTx['CONFIRM_LINK resp'], undefined, 'no CONFIRM_LINK response');
});

test('a client\'s REQ_ADD_LINK is answered (RESP, data zeroed) when the server adds no link', async (t) => {
  const env = await setup(t);
  await smcrConnection(env, 'one');
  const sv = env.serverLgr(), cl = env.clientLgr();
  const link = sv.link as unknown as { send(m: Buffer): void };
  const sent: Buffer[] = [];
  const send = link.send.bind(link);
  link.send = (m: Buffer) => { if (m[0] === 0x25) sent.push(Buffer.from(m)); send(m); };
  t.after(() => { link.send = send; });
  // What a Linux client sends after it lost a link (smc_llc_send_request_add_link), with its GID.
  cl.sendLlc({ kind: 'REQ_ADD_LINK', version: 2, response: false, gids: [cl.link.local.gid] }, cl.link);
  await until(() => (cl.llcRx['REQ_ADD_LINK resp'] ?? 0) > 0, 3000, 'the answer at the client');
  assert.equal(sv.llcRx.REQ_ADD_LINK, 1);
  assert.equal(sent.length, 1);
  // smc_llc_send_req_add_link_response: the v2 header (type 0x25, length 44 in host order), flags RESP, the 40 data bytes zero.
  const want = Buffer.alloc(44);
  want[0] = 0x25; want[1] = 44; want[3] = 0x80;
  assert.deepEqual(sent[0], want);
  assert.deepEqual(encodeLlc({ kind: 'REQ_ADD_LINK', version: 2, response: true, gids: [] }), want);
  await sleep(50);
  assert.equal(sv.linkEvents.added, 0);
});
