// SMC-R's server at the Proposal and the Confirm, against Linux's net/smc (review findings): a
// client's out-of-sync Decline ends the link group the Accept reused, telling the peer with a
// DELETE_LINK (smc_clc_wait_msg: sync_err, smc_lgr_terminate_sched, smc_lgr_cleanup), once a
// TEST_LINK finds that the peer really lost it (a security review: anyone who reaches the port
// could send that Decline); a server's group is keyed by the TCP peer's address too, so a
// Proposal from another address cannot find it; and
// a Confirm the server cannot take from a client that joins a
// group (and so went to SMC-R as it sent it) resets the connection instead of leaving the two
// ends on different transports, each waiting for the other. One process, no namespaces
// (smcr-relay-harness.ts).

import assert from 'node:assert/strict';
import { once } from 'node:events';
import net from 'node:net';
import { test } from 'node:test';
import { testRuntimeDir } from '../helpers/runtime-dir.js';

testRuntimeDir('smcr-confirm-review');
process.env.SOFTRDMA_SMC_LEARN = '0'; // every connection tries SMC, however short
const smc = await import('../../src/smc/index.js');
const { echo, setup, settled, sleep, smcrConnection, until, within } = await import('./smcr-relay-harness.js');
const { CLC_ACCEPT, CLC_CONFIRM, CLC_DECLINE, DECLINE, SMC_CLC_V2, SMC_TYPE_N, SMC_TYPE_R, clcFrameLengthAny, decodeSmcClc, encodeSmcDecline, encodeSmcProposal, encodeSmcrAcceptConfirm, localSystemId } = await import('../../src/smc/clc.js');
const { SOFTRDMA_UEID } = await import('../../src/smc/smcr/clc-flow.js');
const { gidFromAddress } = await import('../../src/abi/inet.js');
const { SmcrLinkGroup } = await import('../../src/smc/smcr/lgr.js');

test('an out-of-sync Decline from a client whose group still answers (TEST_LINK) leaves the group and its connections alone; the next connection joins it', async (t) => {
  const env = await setup(t);
  const first = await smcrConnection(env, 'first');
  const firstErrors: string[] = [];
  first.on('error', (e: NodeJS.ErrnoException) => firstErrors.push(String(e.code)));
  const lgr = env.serverLgr();
  // The Accept of the second connection names a QP the client's group does not have: the client
  // takes the group as out of sync (SYNCERR, the first-contact bit set), as a forged Decline
  // would say too.
  env.next({ server: (m) => (m.type === CLC_ACCEPT && 'qpn' in m ? encodeSmcrAcceptConfirm({ ...m, qpn: (m.qpn + 7) & 0xffffff }) : undefined) });
  const c2 = env.connect();
  assert.equal((await settled(c2, 'the second client settles')).mode, 'TCP');
  const declineOf = () => env.relayed.at(-1)!.fromClient.find((m) => m.type === CLC_DECLINE) as { diagnosis: number; outOfSync: boolean } | undefined;
  await until(() => declineOf() !== undefined, 3000, 'the client\'s Decline through the relay');
  const decline = declineOf();
  assert.equal(decline?.diagnosis, DECLINE.SYNCERR);
  assert.equal(decline?.outOfSync, true);
  const checking = () => (lgr as unknown as { syncCheck?: NodeJS.Timeout }).syncCheck !== undefined;
  // The Decline passed the relay before the server read it: wait for the check to begin (it
  // lasts LLC_WAIT_MS) before waiting for its end, or the third connection may come while the
  // group is being checked and make a group of its own (first contact), as it should then.
  await until(checking, 3000, 'the server asks its peer (TEST_LINK)');
  await until(() => !checking(), 5000, 'the server\'s check of its peer done');
  assert.equal(lgr.dead, false, 'the peer answered: the group stays');
  await echo(first, 'still here\n');
  assert.deepEqual(firstErrors, []);
  const c3 = env.connect();
  assert.equal((await settled(c3, 'the third client settles')).mode, 'SMCR');
  await echo(c3, 'third\n');
  assert.equal(env.serverLgr(), lgr, 'the third connection joined the same group');
  assert.equal(env.relayed.at(-1)!.fromServer.find((m) => m.type === CLC_ACCEPT && 'firstContact' in m && (m as { firstContact: boolean }).firstContact), undefined);
});

test('a client that lost its group without a word: its out-of-sync Decline, an unanswered TEST_LINK, and the server ends the group; the next connection makes a new one', async (t) => {
  const env = await setup(t);
  const first = await smcrConnection(env, 'first');
  const lgr = env.serverLgr();
  // The client's side goes (its QPs destroyed, no DELETE_LINK): the server's group is stale.
  env.clientLgr().free(false, 'lost', false);
  first.destroy();
  const c2 = env.connect();
  assert.equal((await settled(c2, 'the second client settles')).mode, 'TCP');
  const decline = () => env.relayed.at(-1)!.fromClient.find((m) => m.type === CLC_DECLINE) as { diagnosis: number; outOfSync: boolean } | undefined;
  await until(() => decline() !== undefined, 3000, 'the client\'s Decline through the relay');
  assert.equal(decline()?.outOfSync, true);
  // While the server asks the peer, the group takes no one: the next connection makes a new
  // one at once (first contact), as after Linux's immediate termination.
  assert.equal(lgr.dead, false);
  const c3 = env.connect();
  assert.equal((await settled(c3, 'the third client settles')).mode, 'SMCR');
  await echo(c3, 'third\n');
  assert.ok(SmcrLinkGroup.list().some((g) => g.role === 'server' && !g.dead && g !== lgr && g.conns.size === 1), 'a new group at the server');
  await until(() => lgr.dead, 6000, 'the stale group ended');
  assert.equal(SmcrLinkGroup.list().filter((g) => g.role === 'server' && !g.dead).length, 1);
});

test('a Proposal from another TCP address naming a client\'s system id and GID does not find its group (first contact), and its out-of-sync Decline leaves the group alone', async (t) => {
  const env = await setup(t);
  const first = await smcrConnection(env, 'first');
  const lgr = env.serverLgr();
  const conns = lgr.conns.size;
  // What another host (here 127.0.0.1) can learn and send: the client's system id (in every
  // CLC message its process sends) and GID, in a Proposal of its own, then a Decline saying the
  // group is out of sync.
  const proposal = encodeSmcProposal({
    version: SMC_CLC_V2, typeV1: SMC_TYPE_N, typeV2: SMC_TYPE_R, peerId: localSystemId(), gid: Buffer.alloc(16), mac: Buffer.alloc(6),
    ismGid: 0n, ismChid: 0, proof: null, prefix: null,
    v2: { release: 1, seid: false, roceGid: gidFromAddress('127.0.0.2'), maxConns: 255, maxLinks: 1, featureMask: 0, userEids: [SOFTRDMA_UEID], smcd: null },
  });
  const decline = encodeSmcDecline({ version: SMC_CLC_V2, eyecatcher: 'SMCR', outOfSync: true, peerId: localSystemId(), diagnosis: DECLINE.SYNCERR, osType: 2, diagnosisV2: [0, 0, 0, 0] });
  const raw = net.connect({ host: '127.0.0.3', port: env.serverPort, localAddress: '127.0.0.1' });
  raw.on('error', () => {});
  t.after(() => raw.destroy());
  await once(raw, 'connect');
  raw.write(proposal);
  const [answer] = await within(once(raw, 'data'), 5000, 'the server\'s answer') as [Buffer];
  const m = decodeSmcClc(answer.subarray(0, clcFrameLengthAny(answer)));
  assert.equal(m.type, CLC_ACCEPT);
  assert.equal((m as { firstContact: boolean }).firstContact, true, 'not the client\'s group');
  raw.write(decline);
  // The server goes on over TCP (an echo server here): the bytes after the Decline come back.
  let echoed = '';
  raw.on('data', (d: Buffer) => { echoed += d.toString('latin1'); });
  raw.write('hello');
  await until(() => echoed.includes('hello'), 5000, 'the echo over TCP');
  await sleep(100);
  assert.equal(lgr.dead, false);
  assert.equal(lgr.conns.size, conns);
  assert.equal(lgr.reservedCount, 0);
  await echo(first, 'untouched\n');
});

test('a Confirm the server cannot take from a client joining its group: Decline, then a reset (the client is on SMC-R already); no end waits for ever', async (t) => {
  const env = await setup(t);
  await smcrConnection(env, 'first');
  // The second client's Confirm names another QP than the link the Accept named (SYNCERR).
  env.next({ client: (m) => (m.type === CLC_CONFIRM && 'qpn' in m ? encodeSmcrAcceptConfirm({ ...m, qpn: (m.qpn + 1) & 0xffffff }) : undefined) });
  const n = env.accepted.length;
  const c = env.connect();
  assert.equal((await settled(c, 'the second client settles')).mode, 'SMCR', 'the client settles as it sends its Confirm, as Linux\'s');
  const errors: string[] = [];
  c.on('error', (e: NodeJS.ErrnoException) => errors.push(String(e.code)));
  c.write('ping\n');
  await within(new Promise((r) => c.once('close', r)), 5000, 'the client\'s close');
  await until(() => env.accepted.length > n, 3000, 'the server\'s socket');
  const s = env.accepted[n]! as net.Socket;
  await until(() => s.destroyed, 3000, 'the server\'s socket destroyed');
  assert.notEqual(smc.getSmcInfo(s).mode, 'SMCR');
  await until(() => env.relayed.at(-1)!.fromServer.some((m) => m.type === CLC_DECLINE), 3000, 'the server\'s Decline');
  assert.ok(errors.length <= 1, errors.join());
});
