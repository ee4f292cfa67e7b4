// A client joins only link groups of the server it is talking to: an SMC-R server's Accept that
// reuses a group (no first contact) must name one this client made over TCP with that same
// server address. Before, the client matched the Accept's system id, GID and QPN alone, which
// any server learns from the Accepts another server sends (one raw Proposal), so a hostile
// server could have a victim's connection put into the victim's group with an honest server:
// its bytes written on the honest server's link with a made-up rkey (NAKed: the link, and every
// connection of the honest server over it, broke). Now such an Accept is declined, without the
// out-of-sync flag (which would make the server end the group it named), and the connection
// goes on over TCP. Connection tokens are random per group, no longer counted up for the
// process. One process (smcr-relay-harness.ts); the hostile server speaks raw CLC on 127.0.0.4.

import assert from 'node:assert/strict';
import { once } from 'node:events';
import net from 'node:net';
import { test } from 'node:test';
import { testRuntimeDir } from '../helpers/runtime-dir.js';

testRuntimeDir('smcr-foreign-lgr');
process.env.SOFTRDMA_SMC_LEARN = '0';
const { setup, settled, echo, within } = await import('./smcr-relay-harness.js');
const smc = await import('../../src/smc/index.js');
const clc = await import('../../src/smc/clc.js');
const { SOFTRDMA_UEID } = await import('../../src/smc/smcr/clc-flow.js');
type Clc = ReturnType<typeof clc.decodeSmcClc>;

function readClc(sock: net.Socket): Promise<Clc> {
  return new Promise((resolve, reject) => {
    let buf = Buffer.alloc(0);
    const on = (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      try {
        const n = clc.clcFrameLengthAny(buf);
        if (n) { sock.off('data', on); resolve(clc.decodeSmcClc(buf.subarray(0, n))); }
      } catch (e) { reject(e as Error); }
    };
    sock.on('data', on);
  });
}

test('an Accept naming the group this client has with another server is declined (no out-of-sync flag); the connection is TCP and the other group unharmed', async (t) => {
  const env = await setup(t);
  const legit = env.connect();
  assert.equal((await settled(legit, 'the legitimate client settles')).mode, 'SMCR');
  await echo(legit, 'before\n');
  const lgr = env.clientLgr();
  const remote = lgr.link.remote!;
  const legitAccept = env.relayed[0]!.fromServer[0] as Clc & { rmbeSize: number; qpMtu: number; rmbeAlertToken: number };

  // The hostile server on 127.0.0.4 knows everything the honest server's Accepts say (here: the
  // very link and token), and names that group in a non-first-contact Accept.
  let hostileGot: Clc | undefined;
  const hostile = net.createServer((c) => {
    c.on('error', () => {});
    void readClc(c).then((proposal) => {
      assert.equal(proposal.type, clc.CLC_PROPOSAL);
      c.write(clc.encodeSmcrAcceptConfirm({
        type: clc.CLC_ACCEPT, version: clc.SMC_CLC_V2, firstContact: false, peerId: clc.localSystemId(), gid: remote.gid, mac: Buffer.alloc(6),
        qpn: remote.qpn, rmbRkey: 0x00abcd12, rmbeIndex: 1, rmbeAlertToken: legitAccept.rmbeAlertToken, rmbeSize: legitAccept.rmbeSize, qpMtu: legitAccept.qpMtu,
        rmbDmaAddr: 0x1000n, psn: 0, eid: SOFTRDMA_UEID, fce: null, gidList: null,
      }));
      return readClc(c);
    }).then((m) => { hostileGot = m; }, () => {});
  });
  hostile.listen(0, '127.0.0.4');
  await once(hostile, 'listening');
  t.after(() => hostile.close());
  const victim = smc.connect({ host: '127.0.0.4', port: (hostile.address() as net.AddressInfo).port, localAddress: '127.0.0.2', smcr: { device: env.a, discovery: false } });
  victim.on('error', () => {});
  t.after(() => victim.destroy());
  const info = await settled(victim, 'the victim settles');
  assert.equal(info.mode, 'TCP');
  assert.match(info.fallbackCause ?? '', /named a link group this client made with another server address/);
  await within((async () => { while (!hostileGot) await new Promise((r) => setTimeout(r, 5)); })(), 5000, 'the Decline at the hostile server');
  assert.equal(hostileGot!.type, clc.CLC_DECLINE);
  assert.equal((hostileGot as Clc & { outOfSync: boolean }).outOfSync, false, 'no out-of-sync flag: the named group is not to be ended');
  // The honest group and its connection are as they were.
  assert.equal(lgr.dead, false);
  assert.equal(lgr.conns.size, 1);
  await echo(legit, 'after\n');
  assert.equal(legit.destroyed, false);
});

test('connection tokens are random within a group, not counted up: one Accept of a server does not tell the next token', async (t) => {
  const env = await setup(t);
  const tokens: number[] = [];
  for (let i = 0; i < 4; i++) {
    const c = env.connect();
    assert.equal((await settled(c, `client ${i} settles`)).mode, 'SMCR');
    tokens.push((env.relayed[i]!.fromServer[0] as Clc & { rmbeAlertToken: number }).rmbeAlertToken);
  }
  assert.equal(new Set(tokens).size, 4);
  assert.ok(tokens.every((x) => x !== 0));
  // Counted (by the process: its clients take tokens from the same counter), they step by a
  // constant stride; random, they do not.
  const steps = tokens.slice(1).map((x, i) => (x - tokens[i]! + 2 ** 32) % 2 ** 32);
  assert.ok(new Set(steps).size > 1, `tokens ${tokens.join(', ')} count up by a constant step`);
});
