// SMC-R discovery (src/smc/smcr/discovery.ts) across two network namespaces joined by veth: a
// client with `smcr: true` asks the peer host (a SIDR query through the CM on QP1) before it
// sends an SMC-R Proposal, and caches the answer. Each side is its own process
// (smcr-discovery-peer.ts). Skipped, saying why, when namespaces cannot be made.
//   A (10.233.9.1, rxe device): an SMC-R echo server on 7202, a plain node:net server on 7201;
//     10.233.10.1 (another subnet, routed on-link from B): a plain server on 7204.
//   A2 (10.233.9.3, no softrdma device at all): a plain node:net server on 7203, one that
//     writes a banner first on 7205.
//   A3, A4 (10.233.9.4, .5): servers started and killed by single subtests.
//   B (10.233.9.2, rxe device): the client.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { jsonLines, runNode, type Proc } from '../helpers/procs.js';
import { testRuntimeDir } from '../helpers/runtime-dir.js';
import { inLocalSubnet, smcrServiceId, waitBudget, SMCR_SERVICE_ID_BASE } from '../../src/smc/smcr/discovery.js';
import { parseServiceId, serviceIdFor, PortSpace } from '../../src/cm/wire/cma-header.js';
import { deleteNamespaces, ip, setUpVethPair } from '../helpers/netns.js';

testRuntimeDir('smcr-discovery-test');

const PEER = fileURLToPath(new URL('./smcr-discovery-peer.js', import.meta.url));
const tag = `sd${process.pid % 100000}`;
const NS_A = `${tag}a`, NS_B = `${tag}b`;
const A = '10.233.9.1', A2 = '10.233.9.3', A3 = '10.233.9.4', A4 = '10.233.9.5', B = '10.233.9.2', FAR = '10.233.10.1';
const HELLO = Buffer.from('hello').toString('hex');

function setUp(): string | undefined {
  return setUpVethPair({
    tag, nsA: NS_A, nsB: NS_B, addrA: A, addrB: B,
    extra: () => {
      ip('-n', NS_A, 'addr', 'add', `${A2}/24`, 'dev', `${tag}va`);
      ip('-n', NS_A, 'addr', 'add', `${A3}/24`, 'dev', `${tag}va`);
      ip('-n', NS_A, 'addr', 'add', `${A4}/24`, 'dev', `${tag}va`);
      ip('-n', NS_A, 'addr', 'add', `${FAR}/24`, 'dev', `${tag}va`);
      ip('-n', NS_B, 'route', 'add', '10.233.10.0/24', 'dev', `${tag}vb`);
    },
  });
}

function tearDown() {
  deleteNamespaces(NS_A, NS_B);
}

test('the SMC-R service id names SMC-R and the port, and no rdma_cm port space can produce it', () => {
  assert.equal(smcrServiceId(7202), 0x02e2_d4c3_d900_1c22n);
  assert.equal(smcrServiceId(7202) & 0xffffn, 7202n);
  assert.equal(parseServiceId(smcrServiceId(7202)), undefined, 'not an RDMA CM service id');
  for (const ps of Object.values(PortSpace)) {
    for (const port of [0, 1, 7202, 0xffff]) assert.notEqual(serviceIdFor(ps, port) & ~0xffffn, SMCR_SERVICE_ID_BASE);
  }
  assert.ok(SMCR_SERVICE_ID_BASE >> 32n !== 0n, 'rdma_cm service ids have the upper 32 bits zero');
  assert.throws(() => smcrServiceId(0), RangeError);
});

test('the wait for an answer before the device has one: 2 x the TCP handshake, 2 to 20 ms', () => {
  assert.equal(waitBudget(undefined, 0.3), 2);
  assert.equal(waitBudget(undefined, 3), 6);
  assert.equal(waitBudget(undefined, 50), 20);
  assert.equal(waitBudget(undefined, undefined), 20, 'no handshake time known: the bound');
});

test('the prefix rule: the subnet of the interface holding the local address', () => {
  assert.equal(inLocalSubnet('127.0.0.1', '127.0.0.2'), true);
  assert.equal(inLocalSubnet('127.0.0.1', '10.1.2.3'), false);
  assert.equal(inLocalSubnet('198.51.100.77', '198.51.100.78'), false, 'an address in no interface\'s subnet: never asked');
  assert.equal(inLocalSubnet('::1', '::1'), false, 'IPv6: SMC-Rv2 over AF_INET only');
});

const skip = setUp();
const procs: Proc[] = [];

function peer(ns: string, args: string[], env: Record<string, string> = {}, stdin?: 'pipe'): Proc {
  const p = runNode(PEER, args, { netns: ns, env, stdin });
  procs.push(p);
  return p;
}

/** The client's result lines, in order, once it printed `done`. */
async function runClient(plan: unknown[], env: Record<string, string> = {}): Promise<Array<Record<string, unknown>>> {
  const c = peer(NS_B, ['client', '--bind', B, '--plan', JSON.stringify(plan)], env);
  await c.waitUntil((out) => jsonLines(out).find((l) => l.done), 'the client done', 60_000);
  assert.equal(await c.exit(10_000), 0, c.stdout + c.stderr);
  return jsonLines(c.stdout);
}

type Counters = Record<string, number>;

test('SMC-R discovery across two network namespaces', { skip }, async (t) => {
  t.after(async () => {
    for (const p of procs) if (p.child.exitCode === null) p.child.kill('SIGKILL');
    await Promise.all(procs.map((p) => p.exit(5000).catch(() => undefined)));
    tearDown();
  });
  const srv = peer(NS_A, ['server', '--bind', A, '--device', '--smcr', '7202', '--plain', '7201', '--policy-no', '7207', '--smcr-reset', '7213']);
  const far = peer(NS_A, ['server', '--bind', FAR, '--plain', '7204']);
  const bare = peer(NS_A, ['server', '--bind', A2, '--plain', '7203,7208', '--banner', '7205']);
  for (const [p, n] of [[srv, 4], [far, 1], [bare, 3]] as const) {
    await p.waitUntil((out) => (jsonLines(out).filter((l) => l.listening).length === n ? true : undefined), `${n} listeners`);
  }
  const plainGot = (p: Proc, port: number) => jsonLines(p.stdout).filter((l) => l.plain === port).map((l) => l.got);
  /**
   * The SMC-R server `first` on A3:port is killed and a plain server takes its port; then the
   * client `c` (waiting at a { line } step) goes on: its connection number `n` must be TCP and
   * the plain server must see the application's bytes only. Returns the plain server.
   */
  const replacedByPlain = async (first: Proc, c: Proc, port: number, n: number): Promise<Proc> => {
    first.child.kill('SIGKILL');
    await first.exit(5000).catch(() => undefined);
    const plain = peer(NS_A, ['server', '--bind', A3, '--plain', String(port)]);
    await plain.waitFor(new RegExp(`"listening":${port}`));
    c.child.stdin!.write('go\n');
    await c.waitUntil((out) => jsonLines(out).find((l) => l.done), 'the client done', 30_000);
    const r = jsonLines(c.stdout).filter((l) => l.client);
    assert.equal(r[n]!.mode, 'TCP', JSON.stringify(r[n]));
    assert.equal(r[n]!.echo, 'hello');
    await plain.waitUntil((out) => jsonLines(out).find((l) => l.plain === port), 'the plain server\'s report');
    assert.deepEqual(plainGot(plain, port), [HELLO], 'the application\'s bytes, no CLC byte');
    return plain;
  };

  await t.test('towards plain node:net servers: no CLC byte, no delay beyond the wait bound, and the answer is cached', async () => {
    const lines = await runClient([
      { to: `${A2}:7203` }, { to: `${A}:7201` }, { sleep: 1200 }, { to: `${A2}:7203` }, { to: `${A}:7201` }, { to: `${A2}:7208` },
    ]);
    const r = lines.filter((l) => l.client);
    assert.equal(r.length, 5);
    for (const l of r) {
      assert.equal(l.mode, 'TCP', JSON.stringify(l));
      assert.equal(l.echo, 'hello');
      // The wait is at most 20 ms (about one round trip); the bound leaves room for a busy machine.
      assert.ok((l.settleMs as number) < 250, `settled ${String(l.settleMs)} ms after connect: ${JSON.stringify(l)}`);
    }
    // A host without a softrdma device answers nothing: the connection waited, then TCP.
    assert.match(r[0]!.cause as string, /SMC-R discovery/);
    // A host with a device but no SMC-R listener on that port: SIDR_REP(UNSUPPORTED), cached no.
    assert.match(r[1]!.cause as string, /no SMC-R listener|no answer within/);
    assert.match(r[2]!.cause as string, /cached: no SMC-R listener/);
    assert.match(r[3]!.cause as string, /cached: no SMC-R listener/);
    // Another port of the host that answered nothing: not asked (no softrdma device there).
    assert.match(r[4]!.cause as string, /cached: the peer host answered no SMC-R query/);
    const c = lines.at(-1)!.counters as Counters;
    assert.equal(c.queries, 2, JSON.stringify(c));
    assert.equal(c.timeouts, 1, 'the host without a device never answered');
    assert.equal(c.answers_negative, 1, 'the device without a listener answered UNSUPPORTED');
    assert.equal(c.hits_negative, 3);
    assert.equal(c.misses, 2);
    // What the plain servers received: exactly the application's bytes, never a CLC byte.
    await bare.waitUntil((out) => (jsonLines(out).filter((l) => l.plain === 7203).length === 2 ? true : undefined), 'two connections at 7203');
    await srv.waitUntil((out) => (jsonLines(out).filter((l) => l.plain === 7201).length === 2 ? true : undefined), 'two connections at 7201');
    assert.deepEqual(plainGot(bare, 7203), [HELLO, HELLO]);
    assert.deepEqual(plainGot(srv, 7201), [HELLO, HELLO]);
  });

  await t.test('a server that speaks first while the client waits for the answer: TCP at once, the banner delivered', async (t) => {
    const lines = await runClient([{ to: `${A2}:7205` }]);
    const r = lines.find((l) => l.client)!;
    assert.equal(r.mode, 'TCP');
    assert.equal(r.echo, '220 hi\nhello');
    t.diagnostic(`cause: ${String(r.cause)}`);
    // The banner ends the wait (the host has no device: no answer would come), or the wait ran out first.
    assert.match(r.cause as string, /server wrote first|no answer within/);
    await bare.waitUntil((out) => (jsonLines(out).some((l) => l.plain === 7205) ? true : undefined), 'the banner server\'s report');
    assert.deepEqual(plainGot(bare, 7205), [HELLO]);
  });

  await t.test('towards an SMC-R server: the first connection is TCP or SMC-R (the wait rule), later ones SMC-R; a yes is taken as it is only while a connection to the peer is live', async (t) => {
    // Waits as long as an answer takes (the rule's bound is the first subtest's): every connection here is counted.
    // The sign of life of an orderly close just before is off here (the next subtest has it):
    // the held connection follows the second at once.
    const lines = await runClient([{ to: `${A}:7202` }, { sleep: 300 }, { to: `${A}:7202` }, { hold: `${A}:7202` }, { to: `${A}:7202` }, { to: `${A}:7202` }], { SOFTRDMA_SMCR_DISCOVERY_WAIT_MS: '5000', SOFTRDMA_SMCR_DISCOVERY_RECENT_MS: '0' });
    const r = lines.filter((l) => l.client);
    for (const l of r) assert.equal(l.echo, 'hello');
    t.diagnostic(`first connection: ${JSON.stringify(r[0])}`);
    assert.ok(r[0]!.mode === 'SMCR' || (r[0]!.mode === 'TCP' && /no answer within/.test(r[0]!.cause as string)), JSON.stringify(r[0]));
    for (const l of r.slice(1)) assert.equal(l.mode, 'SMCR', JSON.stringify(l));
    // The second and the held one find the yes with no live connection to the peer: asked
    // again (a plain server may have taken the port since), at connect(), so the answer comes
    // back while the TCP handshake runs; the last two find the held one.
    // (The first connection's too: the client made its device before it.)
    for (const l of [r[0]!, r[1]!, r[2]!]) assert.equal(l.queriesAtConnect, (l.queriesBefore as number) + 1, `asked before the handshake ended: ${JSON.stringify(l)}`);
    for (const l of [r[3]!, r[4]!]) assert.equal(l.queriesAtConnect, l.queriesBefore, JSON.stringify(l));
    const c = lines.at(-1)!.counters as Counters;
    assert.equal(c.queries, 3, JSON.stringify(c));
    assert.equal(c.prefetched, 3, JSON.stringify(c));
    assert.equal(c.revalidated, 2, JSON.stringify(c));
    assert.equal(c.answers_positive, 3);
    // The held connection's two successors; and each of the three asked whose answer was in
    // before its 'connect' (it was asked after that connection's connect(): it holds for it).
    assert.ok(c.hits_positive! >= 2 && c.hits_positive! <= 5, JSON.stringify(c));
    assert.equal(c.hits_positive! + c.waited_answered!, 5, JSON.stringify(c));
  });

  await t.test('a yes holds without asking for a connection opened right after the peer closed one in order; once the window has passed, asked again', async () => {
    const lines = await runClient([{ to: `${A}:7202` }, { to: `${A}:7202` }, { sleep: 1300 }, { to: `${A}:7202` }],
      { SOFTRDMA_SMCR_DISCOVERY_WAIT_MS: '5000', SOFTRDMA_SMCR_DISCOVERY_RECENT_MS: '1000' });
    const r = lines.filter((l) => l.client);
    for (const l of r) { assert.equal(l.mode, 'SMCR', JSON.stringify(l)); assert.equal(l.echo, 'hello'); }
    assert.equal(r[1]!.queriesAtConnect, r[1]!.queriesBefore, `no query: ${JSON.stringify(r[1])}`);
    assert.equal((r[1]!.counters as Counters).hits_recent, 1, JSON.stringify(r[1]));
    assert.equal(r[2]!.queriesAtConnect, (r[2]!.queriesBefore as number) + 1, `asked again: ${JSON.stringify(r[2])}`);
    assert.equal((r[2]!.counters as Counters).hits_recent, 1, JSON.stringify(r[2]));
    // The sign's age runs from the last write, not from the closing CDC's arrival: a client whose
    // event loop stalled meanwhile reads that CDC late, and the next connection asks again.
    const s = await runClient([{ to: `${A}:7202` }, { to: `${A}:7202`, stallMs: 300 }, { to: `${A}:7202` }],
      { SOFTRDMA_SMCR_DISCOVERY_WAIT_MS: '5000', SOFTRDMA_SMCR_DISCOVERY_RECENT_MS: '50' });
    const q = s.filter((l) => l.client);
    for (const l of q) assert.equal(l.mode, 'SMCR', JSON.stringify(l));
    assert.equal(q[2]!.queriesAtConnect, (q[2]!.queriesBefore as number) + 1, `asked again after the stall: ${JSON.stringify(q[2])}`);
    // The case at hand: the server closed (and sent its closing CDC) while the client stalled.
    const stall = q[1]!.stall as { start: number; end: number };
    assert.ok(jsonLines(srv.stdout).some((l) => l.ended === 7202 && (l.at as number) >= stall.start && (l.at as number) < stall.end), `the server ended during the stall ${JSON.stringify(stall)}`);
    assert.equal((q[2]!.counters as Counters).hits_recent, (q[1]!.counters as Counters).hits_recent, JSON.stringify(q));
  });

  await t.test('the signs of life are per port: a connection to another port of the peer, just closed or live, does not vouch for a port whose SMC-R listener a plain server replaced', async () => {
    const x = peer(NS_A, ['server', '--bind', A3, '--device', '--smcr', '7215,7216,7217'], {}, 'pipe');
    try {
      await x.waitUntil((out) => (jsonLines(out).filter((l) => l.listening).length === 3 ? true : undefined), 'three listeners');
      // The window is wide enough for a connection right after another, and passes during the swaps.
      const c = peer(NS_B, ['client', '--bind', B, '--plan', JSON.stringify([
        { to: `${A3}:7215` }, { to: `${A3}:7216` }, { to: `${A3}:7217` }, { line: true },
        { to: `${A3}:7215` }, { to: `${A3}:7216` }, { hold: `${A3}:7215` }, { to: `${A3}:7217` },
      ])], { SOFTRDMA_SMCR_DISCOVERY_WAIT_MS: '5000', SOFTRDMA_SMCR_DISCOVERY_RECENT_MS: '50' }, 'pipe');
      await c.waitUntil((out) => (jsonLines(out).filter((l) => l.client).length === 3 ? true : undefined), 'three connections');
      x.child.stdin!.write('swap 7216\nswap 7217\n');
      await x.waitUntil((out) => (jsonLines(out).filter((l) => l.swapped).length === 2 ? true : undefined), 'two swaps');
      await new Promise((r) => setTimeout(r, 100));
      c.child.stdin!.write('go\n');
      await c.waitUntil((out) => jsonLines(out).find((l) => l.done), 'the client done', 30_000);
      const r = jsonLines(c.stdout).filter((l) => l.client);
      assert.deepEqual(r.map((l) => l.mode), ['SMCR', 'SMCR', 'SMCR', 'SMCR', 'TCP', 'SMCR', 'TCP'], JSON.stringify(r));
      for (const l of r) assert.equal(l.echo, 'hello');
      // 7216 right after 7215 closed in order, and 7217 with 7215 held live: each asked again.
      for (const l of [r[4]!, r[6]!]) assert.equal(l.queriesAtConnect, (l.queriesBefore as number) + 1, JSON.stringify(l));
      for (const port of [7216, 7217]) {
        await x.waitUntil((out) => jsonLines(out).find((l) => l.plain === port), `the plain server's report at ${port}`);
        assert.deepEqual(plainGot(x, port), [HELLO], `the application's bytes at ${port}, no CLC byte`);
      }
      assert.equal(await c.exit(10_000), 0, c.stdout + c.stderr);
    } finally {
      x.child.kill('SIGKILL');
      await x.exit(5000).catch(() => undefined);
    }
  });

  await t.test('a client whose policy says no sends no query, neither at connect() nor after; the next socket without one asks at connect()', async () => {
    const lines = await runClient([{ to: `${A}:7202`, policyNo: true }, { to: `${A}:7202` }], { SOFTRDMA_SMCR_DISCOVERY_WAIT_MS: '5000' });
    const r = lines.filter((l) => l.client);
    assert.equal(r[0]!.mode, 'TCP', JSON.stringify(r[0]));
    assert.equal(r[0]!.queriesAtConnect, 0, JSON.stringify(r[0]));
    assert.equal((r[0]!.counters as Counters).queries, 0, JSON.stringify(r[0]));
    assert.equal(r[1]!.mode, 'SMCR', JSON.stringify(r[1]));
    assert.equal(r[1]!.queriesAtConnect, 1, JSON.stringify(r[1]));
    for (const l of r) assert.equal(l.echo, 'hello');
  });

  await t.test('answers expire: after the expiry the destination is asked again', async () => {
    const env = { SOFTRDMA_SMCR_DISCOVERY_POSITIVE_MS: '1500', SOFTRDMA_SMCR_DISCOVERY_NEGATIVE_MS: '1500', SOFTRDMA_SMCR_DISCOVERY_WAIT_MS: '5000' };
    const lines = await runClient([
      { hold: `${A}:7202` }, { sleep: 100 }, { to: `${A}:7202` }, { to: `${A}:7201` }, { sleep: 1800 }, { to: `${A}:7202` }, { to: `${A}:7201` },
    ], env);
    const r = lines.filter((l) => l.client);
    assert.equal(r[1]!.mode, 'SMCR', JSON.stringify(r[1]));
    const c = lines.at(-1)!.counters as Counters;
    assert.equal(c.queries, 4, `7202 and 7201 asked twice each: ${JSON.stringify(c)}`);
    // The held connection's successor finds the yes; each of the other four asked (at connect()),
    // and found the answer in by its 'connect' or waited for it.
    assert.ok(c.hits! >= 1, JSON.stringify(c));
    assert.equal(c.hits! + c.waited_answered!, 5, JSON.stringify(c));
    for (const l of r) assert.equal(l.echo, 'hello');
  });

  await t.test('an SMC-R server killed and a plain one on its port: the plain server sees no CLC byte (the yes is asked again)', async () => {
    const first = peer(NS_A, ['server', '--bind', A3, '--device', '--smcr', '7206']);
    await first.waitFor(/"listening":7206/);
    const c = peer(NS_B, ['client', '--bind', B, '--plan', JSON.stringify([{ to: `${A3}:7206` }, { to: `${A3}:7206` }, { line: true }, { to: `${A3}:7206` }])],
      { SOFTRDMA_SMCR_DISCOVERY_WAIT_MS: '5000' }, 'pipe');
    await c.waitUntil((out) => (jsonLines(out).filter((l) => l.client).length === 2 ? true : undefined), 'two connections');
    assert.deepEqual(jsonLines(c.stdout).filter((l) => l.client).map((l) => l.mode), ['SMCR', 'SMCR']);
    // The server dies between connections (none is open to notice it), and a plain one takes its port.
    const plain = await replacedByPlain(first, c, 7206, 2);
    const counters = jsonLines(c.stdout).at(-1)!.counters as Counters;
    // The second connection followed the first's orderly close: asked again, or (within 1 ms
    // of it) taken on that sign of life. The third, after the kill, was asked again.
    assert.equal(counters.revalidated + counters.hits_recent!, 2, JSON.stringify(counters));
    const third = jsonLines(c.stdout).filter((l) => l.client)[2]!;
    assert.equal(third.queriesAtConnect, (third.queriesBefore as number) + 1, JSON.stringify(third));
    plain.child.kill('SIGKILL');
  });

  await t.test('a connect() that fails keeps no "no" from the query it sent: a client retrying until its server is up gets SMC-R', async () => {
    // A device but no listener on the port: UNSUPPORTED, in before or after the refusal; not kept,
    // so the second attempt asks again.
    const port = await runClient([{ try: `${A}:7299` }, { sleep: 300 }, { try: `${A}:7299` }]);
    const p = port.filter((l) => l.client);
    assert.deepEqual(p.map((l) => l.error), ['ECONNREFUSED', 'ECONNREFUSED']);
    assert.equal((p[1]!.counters as Counters).prefetched, 2, JSON.stringify(p[1]));
    // No device on the host yet: the query goes unanswered (after the refusal) and is not kept
    // for the host; the server comes up, and the next connection asks and goes SMC-R.
    const c = peer(NS_B, ['client', '--bind', B, '--plan', JSON.stringify([{ try: `${A4}:7209` }, { sleep: 1200 }, { line: true }, { to: `${A4}:7209` }])],
      { SOFTRDMA_SMCR_DISCOVERY_WAIT_MS: '5000' }, 'pipe');
    await c.waitUntil((out) => jsonLines(out).find((l) => l.client), 'the refused connection');
    assert.equal(jsonLines(c.stdout).find((l) => l.client)!.error, 'ECONNREFUSED');
    const srv4 = peer(NS_A, ['server', '--bind', A4, '--device', '--smcr', '7209']);
    await srv4.waitFor(/"listening":7209/);
    c.child.stdin!.write('go\n');
    await c.waitUntil((out) => jsonLines(out).find((l) => l.done), 'the client done', 30_000);
    const r = jsonLines(c.stdout).filter((l) => l.client);
    assert.equal(r[1]!.mode, 'SMCR', JSON.stringify(r[1]));
    assert.equal(r[1]!.echo, 'hello');
    assert.equal(await c.exit(10_000), 0, c.stdout + c.stderr);
    srv4.child.kill('SIGKILL');
  });

  await t.test('a connect() given a name: a yes another connection got during its lookup does not hold for it (its SYN goes after the lookup); a plain server that took the port meanwhile sees no CLC byte', async () => {
    const first = peer(NS_A, ['server', '--bind', A3, '--device', '--smcr', '7212']);
    await first.waitFor(/"listening":7212/);
    // The named connection's lookup waits; meanwhile a connection by address gets a yes (asked at
    // its connect()), and the SMC-R server is replaced by a plain one before the lookup answers.
    const c = peer(NS_B, ['client', '--bind', B, '--plan', JSON.stringify([{ named: `${A3}:7212` }, { to: `${A3}:7212` }, { line: true }, { lookedUp: true }])],
      { SOFTRDMA_SMCR_DISCOVERY_WAIT_MS: '5000' }, 'pipe');
    await c.waitUntil((out) => jsonLines(out).find((l) => l.client), 'the connection by address');
    assert.equal(jsonLines(c.stdout).find((l) => l.client)!.mode, 'SMCR');
    const plain = await replacedByPlain(first, c, 7212, 1);
    assert.equal(await c.exit(10_000), 0, c.stdout + c.stderr);
    plain.child.kill('SIGKILL');
  });

  await t.test('a server whose policy offers SMC to nobody answers the query no: the client stays TCP with no Proposal', async () => {
    const lines = await runClient([{ to: `${A}:7207` }, { to: `${A}:7207` }], { SOFTRDMA_SMCR_DISCOVERY_WAIT_MS: '5000' });
    const r = lines.filter((l) => l.client);
    for (const l of r) { assert.equal(l.mode, 'TCP', JSON.stringify(l)); assert.equal(l.echo, 'hello'); }
    assert.match(r[0]!.cause as string, /no SMC-R listener at the peer/);
    assert.match(r[1]!.cause as string, /cached: no SMC-R listener/);
    await srv.waitUntil((out) => (jsonLines(out).filter((l) => l.plain === 7207).length === 2 ? true : undefined), 'two connections at 7207');
    assert.deepEqual(plainGot(srv, 7207), [HELLO, HELLO], 'no CLC byte');
    const served = jsonLines(srv.stdout).filter((l) => l.plain === 7207).at(-1)!.served as Counters;
    assert.equal(served.served_refused, 1, JSON.stringify(served));
  });

  await t.test('a destination outside the local subnet is never asked: TCP at once, no CLC byte', async () => {
    const lines = await runClient([{ to: `${FAR}:7204` }, { to: `${FAR}:7204` }]);
    const r = lines.filter((l) => l.client);
    for (const l of r) {
      assert.equal(l.mode, 'TCP');
      assert.match(l.cause as string, /outside .* subnet/);
    }
    const c = lines.at(-1)!.counters as Counters;
    assert.equal(c.queries, 0);
    assert.equal(c.outside_subnet, 2);
    await far.waitUntil((out) => (jsonLines(out).filter((l) => l.plain === 7204).length === 2 ? true : undefined), 'two connections at 7204');
    assert.deepEqual(plainGot(far, 7204), [HELLO, HELLO]);
  });
});
