// SMC-R's server at the Confirm, against Linux's net/smc (review findings): a client's
// out-of-sync Decline ends the link group the Accept reused, telling the peer with a DELETE_LINK
// (smc_clc_wait_msg: sync_err, smc_lgr_terminate_sched, smc_lgr_cleanup), and a Confirm the server cannot take from a client that joins a
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
const { setup, settled, smcrConnection, until, within } = await import('./smcr-relay-harness.js');
const { CLC_ACCEPT, CLC_CONFIRM, CLC_DECLINE, DECLINE, encodeSmcrAcceptConfirm } = await import('../../src/smc/clc.js');
const { SmcrLinkGroup } = await import('../../src/smc/smcr/lgr.js');

test('a client\'s out-of-sync Decline (it lost the group the Accept reused) ends that group at the server; the next connection makes a new one', async (t) => {
  const env = await setup(t);
  const first = await smcrConnection(env, 'first');
  const firstErrors: string[] = [];
  first.on('error', (e: NodeJS.ErrnoException) => firstErrors.push(String(e.code)));
  const lgr = env.serverLgr();
  const clientLgr = env.clientLgr();
  // The Accept of the second connection names a QP the client's group does not have: the client
  // takes the group as out of sync (SYNCERR, the first-contact bit set).
  env.next({ server: (m) => (m.type === CLC_ACCEPT && 'qpn' in m ? encodeSmcrAcceptConfirm({ ...m, qpn: (m.qpn + 7) & 0xffffff }) : undefined) });
  const c2 = env.connect();
  assert.equal((await settled(c2, 'the second client settles')).mode, 'TCP');
  const declineOf = () => env.relayed.at(-1)!.fromClient.find((m) => m.type === CLC_DECLINE) as { diagnosis: number; outOfSync: boolean } | undefined;
  await until(() => declineOf() !== undefined, 3000, 'the client\'s Decline through the relay');
  const decline = declineOf();
  assert.equal(decline?.diagnosis, DECLINE.SYNCERR);
  assert.equal(decline?.outOfSync, true);
  await until(() => lgr.dead, 3000, 'the server\'s group ended');
  // The peer is told (DELETE_LINK, as smc_lgr_cleanup): its side of the group ends too, and the
  // first connection with it, instead of waiting for TEST_LINK.
  await until(() => clientLgr.dead, 3000, 'the client\'s group ended');
  await until(() => first.destroyed, 3000, 'the first connection ended at the client');
  assert.deepEqual(firstErrors, ['ECONNABORTED']);
  assert.equal(SmcrLinkGroup.list().filter((g) => g.role === 'server' && !g.dead).length, 0);
  const c3 = env.connect();
  assert.equal((await settled(c3, 'the third client settles')).mode, 'SMCR');
  await until(() => SmcrLinkGroup.list().some((g) => g.role === 'server' && !g.dead && g !== lgr), 3000, 'a new group at the server');
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
