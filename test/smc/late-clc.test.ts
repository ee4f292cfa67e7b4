// After a handshake times out, the socket is TCP and strips the CLC messages still on their
// way (stripThenPush). When both ends time out at once, each sends its Decline before it reads
// the other's, so the peer's late Accept can be followed by its Decline: both must be
// stripped, and the data after them delivered. A CI run under heavy load once delivered the
// Decline's 28 bytes as data ahead of an echo.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import net, { type AddressInfo } from 'node:net';
import { CLC_ACCEPT, DECLINE, SMC_CLC_V2, SMC_TYPE_N, SMC_TYPE_R, encodeAcceptConfirm, encodeDecline, encodeSmcDecline, encodeSmcProposal } from '../../src/smc/clc.js';
import type { SmcInfo } from '../../src/smc/index.js';
import { stripThenPush } from '../../src/smc/handshake.js';
import { resolveSmcOptions } from '../../src/smc/options.js';
import { newState } from '../../src/smc/state.js';
import type { Socket } from '../../src/smc/socket.js';

function afterTimeout() {
  const s = newState('client', resolveSmcOptions({}), false);
  s.phase = 'tcp';
  s.stripClc = true;
  s.counters = true; // no accessors on the fake socket
  const got: Array<Buffer | null> = [];
  const sock = { smcPush: (b: Buffer | null) => { got.push(b); return true; } } as unknown as Socket;
  const data = () => Buffer.concat(got.filter((b): b is Buffer => b !== null)).toString();
  // As the socket's push does: strip only while stripClc holds.
  const push = (b: Buffer | null) => (s.stripClc ? stripThenPush(sock, s, b) : sock.smcPush(b));
  return { s, sock, got, data, push };
}

const accept = encodeAcceptConfirm({ type: CLC_ACCEPT, version: 1, firstContact: true, gid: 7n, token: 9n, dmbeIndex: 0, dmbeSize: 1, linkId: 0 });
const decline = encodeDecline({ diagnosis: DECLINE.TIMEOUT_CL, smcd: true });

describe('CLC messages arriving after a handshake timed out', () => {
  it('a late Accept and then the peer\'s own Decline are both stripped, in one chunk or several', () => {
    const one = afterTimeout();
    one.push(Buffer.concat([accept, decline, Buffer.from('hello')]));
    assert.equal(one.data(), 'hello');
    assert.equal(one.s.stripClc, false);

    const split = afterTimeout();
    for (const b of [accept.subarray(0, 5), accept.subarray(5), decline.subarray(0, 10), decline.subarray(10), Buffer.from('hel'), Buffer.from('lo')]) split.push(b);
    assert.equal(split.data(), 'hello');
    assert.equal(split.s.clcIn, accept.length + decline.length);
  });

  it('after a late Accept alone, the next bytes that are not CLC are data', () => {
    const t = afterTimeout();
    t.push(accept);
    assert.equal(t.s.stripClc, true, 'a Decline may still come');
    t.push(Buffer.from('data'));
    assert.equal(t.data(), 'data');
    assert.equal(t.s.stripClc, false);
  });

  it('after the peer\'s Decline, stripping ends: later bytes are data even if they look like CLC', () => {
    const t = afterTimeout();
    t.push(decline);
    t.push(decline);
    assert.equal(t.data(), decline.toString());
  });
});

// The race the CI run hit in smcr.test.ts: an SMC-R server whose CONFIRM_LINK wait ended sent
// its Decline as the client's handshake timer sent the client's; the server took the client's
// Decline for data and echoed it. Here a raw client sends a Proposal the server must decline
// (no SMC-R device on 127.0.0.1), then its own Decline before reading the server's, then data:
// the server's application gets the data alone, whether it all comes in one segment or not.
describe('an SMC-R server that declines, and the client\'s Decline crossing its own', () => {
  const proposal = encodeSmcProposal({
    version: SMC_CLC_V2, typeV1: SMC_TYPE_N, typeV2: SMC_TYPE_R, peerId: Buffer.alloc(8, 1), gid: Buffer.alloc(16, 2), mac: Buffer.alloc(6, 3),
    ismGid: 0n, ismChid: 0, proof: null, prefix: null,
    v2: { release: 1, seid: false, roceGid: Buffer.alloc(16, 2), maxConns: 255, maxLinks: 1, featureMask: 0, userEids: ['SOFTRDMA-SMCR'], smcd: null },
  });
  const ownDecline = encodeSmcDecline({ version: SMC_CLC_V2, eyecatcher: 'SMCR', outOfSync: false, peerId: Buffer.alloc(8, 1), diagnosis: DECLINE.TIMEOUT_CL, osType: 1, diagnosisV2: [0, 0, 0, 0] });

  for (const split of [false, true]) {
    it(split ? 'Proposal, then Decline and data in later segments' : 'Proposal, Decline and data in one segment', async () => {
      const smc = await import('../../src/smc/index.js');
      let gotData = '';
      let info: SmcInfo | undefined;
      const ended = new Promise<void>((resolve) => {
        const server = smc.createServer({ smcr: true }, (sock) => {
          sock.setEncoding('utf8');
          sock.on('data', (d: string) => { gotData += d; });
          sock.on('end', () => { info = smc.getSmcInfo(sock); sock.end(); server.close(); resolve(); });
        });
        server.listen(0, '127.0.0.1', () => {
          const port = (server.address() as AddressInfo).port;
          const raw = net.connect(port, '127.0.0.1', () => {
            if (!split) return raw.end(Buffer.concat([proposal, ownDecline, Buffer.from('hello')]));
            raw.write(proposal);
            // Once the server's Decline is here, it has settled on TCP: ours crosses it.
            raw.once('data', () => { raw.write(ownDecline); setImmediate(() => raw.end('hello')); });
          });
          raw.resume();
        });
      });
      await Promise.race([ended, new Promise((_, reject) => setTimeout(() => reject(new Error('no end within 10 s')), 10_000).unref())]);
      assert.equal(gotData, 'hello', 'the client\'s Decline is not data');
      assert.equal(info?.mode, 'TCP');
      assert.equal(info?.fallbackReason, DECLINE.NOSMCRDEV);
    });
  }
});
