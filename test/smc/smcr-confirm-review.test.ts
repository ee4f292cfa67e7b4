// SMC-R's server at the Proposal and the Confirm, against Linux's net/smc (review findings): a
// client's out-of-sync Decline ends the link group the Accept reused, telling the peer with a
// DELETE_LINK (smc_clc_wait_msg: sync_err, smc_lgr_terminate_sched, smc_lgr_cleanup), once a
// TEST_LINK finds that the peer really lost it (a security review: anyone who reaches the port
// could send that Decline); a Proposal whose GID is not the TCP peer's address is declined; and
// a Confirm the server cannot take from a client that joins a
// group (and so went to SMC-R as it sent it) resets the connection instead of leaving the two
// ends on different transports, each waiting for the other. One process, no namespaces
// (smcr-relay-harness.ts).

import assert from 'node:assert/strict';
import type net from 'node:net';
import { test } from 'node:test';
import { testRuntimeDir } from '../helpers/runtime-dir.js';

testRuntimeDir('smcr-confirm-review');
process.env.SOFTRDMA_SMC_LEARN = '0'; // every connection tries SMC, however short
const smc = await import('../../src/smc/index.js');
const { echo, setup, settled, smcrConnection, until, within } = await import('./smcr-relay-harness.js');
const { CLC_ACCEPT, CLC_CONFIRM, CLC_DECLINE, DECLINE, encodeSmcrAcceptConfirm } = await import('../../src/smc/clc.js');
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
  await until(() => lgr.dead, 6000, 'the server\'s group ended');
  assert.equal(SmcrLinkGroup.list().filter((g) => g.role === 'server' && !g.dead).length, 0);
  const c3 = env.connect();
  assert.equal((await settled(c3, 'the third client settles')).mode, 'SMCR');
  await echo(c3, 'third\n');
  assert.notEqual(env.serverLgr(), lgr, 'a new group at the server');
});

test('a Proposal whose GID is not the TCP peer\'s address is declined (NOROUTE): no Accept, no place in the group that GID has', async (t) => {
  const env = await setup(t);
  await smcrConnection(env, 'first');
  const lgr = env.serverLgr();
  const conns = lgr.conns.size;
  // The client's own GID (::ffff:127.0.0.2) in its Proposal made another address's.
  const own = Buffer.from('00000000000000000000ffff7f000002', 'hex');
  env.next({
    client: (m, frame) => {
      if (m.type !== 1) return undefined;
      const forged = Buffer.from(frame);
      let n = 0;
      for (let at = forged.indexOf(own); at > 0; at = forged.indexOf(own, at + 16), n++) forged[at + 15] = 9;
      assert.ok(n > 0, 'the Proposal carries the client\'s GID');
      return forged;
    },
  });
  const c2 = env.connect();
  const info = await settled(c2, 'the second client settles');
  assert.equal(info.mode, 'TCP');
  assert.equal(info.peerDeclineReason, DECLINE.NOROUTE);
  await echo(c2, 'over tcp\n');
  assert.equal(env.relayed.at(-1)!.fromServer.some((m) => m.type === CLC_ACCEPT), false);
  assert.equal(lgr.conns.size, conns);
  assert.equal((lgr as unknown as { reservedConns: number }).reservedConns, 0);
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
