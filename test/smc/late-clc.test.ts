// After a handshake times out, the socket is TCP and strips the CLC messages still on their
// way (stripThenPush). When both ends time out at once, each sends its Decline before it reads
// the other's, so the peer's late Accept can be followed by its Decline: both must be
// stripped, and the data after them delivered. A CI run under heavy load once delivered the
// Decline's 28 bytes as data ahead of an echo.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { CLC_ACCEPT, DECLINE, encodeAcceptConfirm, encodeDecline } from '../../src/smc/clc.js';
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
