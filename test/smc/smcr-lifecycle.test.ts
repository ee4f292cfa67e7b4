// SMC-R link group and connection lifecycles (src/smc/smcr/lgr.ts, link.ts, connection.ts,
// clc-flow.ts) at the edges: a device closed under a handshake or a connection, an RMB offered
// in an Accept whose handshake then failed, a group that would linger out or end between our
// Accept and the client's Confirm. One process, no namespaces: the client's rxe device on
// 127.0.0.2, the server's on 127.0.0.3, and the client reaching the server through a TCP relay of
// the test's (a local SMC listener's own port would get SMC-D), which sees every CLC message and
// can hold, drop or rewrite one (smcr-relay-harness.ts).

import assert from 'node:assert/strict';
import { test, type TestContext } from 'node:test';
import { testRuntimeDir } from '../helpers/runtime-dir.js';
import type { Relayed } from './smcr-relay-harness.js';

testRuntimeDir('smcr-lifecycle');
process.env.SOFTRDMA_SMC_LEARN = '0'; // every connection tries SMC, however short
const { setup, within, until, settled, echo, smcrConnection } = await import('./smcr-relay-harness.js');
const { SmcrLinkGroup, smcrMemory, setSmcrLingerMs } = await import('../../src/smc/smcr/lgr.js');
const { CLC_ACCEPT, CLC_CONFIRM, CLC_DECLINE, DECLINE, encodeSmcrAcceptConfirm } = await import('../../src/smc/clc.js');
type SmcrAcceptConfirm = Parameters<typeof encodeSmcrAcceptConfirm>[0];

/** A promise and the function that settles it (what one test step waits for another to see). */
function latch(): [Promise<void>, () => void] {
  let fire!: () => void;
  const seen = new Promise<void>((r) => { fire = r; });
  return [seen, fire];
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
  // Accept and resets the connection, while the client, no first contact, settled on SMC-R as
  // it sent the Confirm and may write into the RMB the Accept named. The relay holds the
  // Decline and the reset back, so the client's closing CDC waits for the test.
  const [declineSeen, declined] = latch();
  const [resetHeld, letReset] = latch();
  t.after(letReset);
  env.next({
    client: (m) => {
      if (m.type !== CLC_CONFIRM) return undefined;
      return encodeSmcrAcceptConfirm({ ...(m as SmcrAcceptConfirm), qpn: ((m as SmcrAcceptConfirm).qpn + 1) & 0xffffff });
    },
    server: async (m) => {
      if (m.type !== CLC_DECLINE) return undefined;
      declined();
      await resetHeld;
      return null;
    },
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
  letReset();
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

test('a link group that ended between Accept and Confirm: the Confirm is declined (then a reset: the client joined the group), the RMB deregistered', async (t) => {
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
  const serverError = new Promise<NodeJS.ErrnoException>((r) => serverTwo.once('error', r));
  lgr.free(false, 'ended by the test');
  release();
  const e = await within(serverError, 5000, 'the server end\'s reset');
  assert.equal(e.code, 'ECONNRESET');
  // node:net's message; SMC's reason in smcCause.
  assert.equal(e.message, 'read ECONNRESET');
  assert.match((e as { smcCause?: string }).smcCause ?? '', /the link group ended before the Confirm/);
  await until(() => env.relayed[1]!.fromServer.some((m) => m.type === CLC_DECLINE && (m as { diagnosis: number }).diagnosis === DECLINE.NOACTLINK), 5000, 'the Decline NOACTLINK');
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

test('a client that resets before it sent a Confirm never settled: the offered RMB is pooled at once, not quarantined (no fresh RMB, no rtoken more for the client)', async (t) => {
  const env = await setup(t);
  await smcrConnection(env, 'first contact');
  const lgr = env.serverLgr();
  let rtokens: number | undefined;
  let offered: { rmbRkey: number; rmbDmaAddr: bigint } | undefined;
  for (let i = 0; i < 3; i++) {
    const [accepted, acceptSeen] = latch();
    // The Accept never reaches the client; the client's end resets: the server reads the reset
    // (RFC 5961: only in sequence) before any Confirm, so none was sent.
    env.next({ server: (m) => (m.type === CLC_ACCEPT ? (acceptSeen(), null) : undefined) });
    const n = env.relayed.length;
    const gone = env.connect();
    gone.on('error', () => {});
    await within(accepted, 5000, 'the server\'s Accept');
    const serverEnd = await within(until(() => env.accepted.length === n + 1, 5000, 'the server accepts').then(() => env.accepted[n]!), 5000, 'accept');
    const closed = new Promise((r) => serverEnd.once('close', r));
    env.upstreams[n]!.resetAndDestroy();
    await within(closed, 5000, 'the server end closes');
    gone.destroy();
    assert.equal(lgr.quarantinedCount, 0, 'nothing waits for a CDC that cannot come');
    // The next connection is offered the same RMB; it ends, and its RMB goes back to the pool.
    const c = await smcrConnection(env, `after reset ${i}`);
    const got = acceptOf(env.relayed[n + 1]!);
    if (offered) assert.deepEqual([got.rmbRkey, got.rmbDmaAddr], [offered.rmbRkey, offered.rmbDmaAddr], 'the RMB the reset handshake was offered, reused');
    offered = acceptOf(env.relayed[n]!);
    assert.deepEqual([got.rmbRkey, got.rmbDmaAddr], [offered.rmbRkey, offered.rmbDmaAddr], 'the offered RMB was reused');
    if (rtokens === undefined) rtokens = env.clientLgr().rtokenCount;
    else assert.equal(env.clientLgr().rtokenCount, rtokens, 'no rtoken more at the client');
    const serverSide = env.accepted[n + 1]!;
    const both = Promise.all([new Promise((r) => c.once('close', r)), new Promise((r) => serverSide.once('close', r))]);
    c.end();
    await within(both, 5000, 'the connection closes');
    await until(() => lgr.quarantinedCount === 0, 5000, 'its RMB back in the pool');
  }
});
