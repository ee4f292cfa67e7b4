// Discovery's orderly-close sign of life (smcr/discovery.ts yesHolds) is dated by the client's
// last write of new bytes: a failover's resend of bytes the peer may have read long ago must not
// date it anew. Unit level: an SmcrConnection over stand-in links and link group.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { SmcrConnection } from '../../src/smc/smcr/connection.js';

/** A link that takes every post. */
function fakeLink(): Record<string, unknown> {
  return { isDown: false, postedSeq: 0, dev: {}, canPost: () => true, write() { this.postedSeq = (this.postedSeq as number) + 1; }, send() { this.postedSeq = (this.postedSeq as number) + 1; }, postFailed(e: unknown) { throw e; } };
}

test('a failover resend leaves the write time of the sign of life alone; new bytes move it', async () => {
  const l1 = fakeLink(), l2 = fakeLink();
  const lgr = { mrOn: () => ({ sge: (p: number, n: number) => ({ p, n }) }), wantsQueue() {} };
  const ring = 4096;
  const buf = () => ({ size: ring, buf: Buffer.alloc(ring) });
  type Ctor = new (...a: unknown[]) => SmcrConnection;
  const conn = new (SmcrConnection as unknown as Ctor)(lgr, buf(), buf(), 1, { token: 2, rkey: 3, addr: 0, wireAddr: 0n, size: ring }, {}, l1);
  conn.service = '10.0.0.1:7202';
  const at = () => (conn as unknown as { lastWriteAt: number }).lastWriteAt;
  conn.write(Buffer.from('hello'));
  await Promise.resolve(); // the flush microtask: the WRITE and its CDC
  const first = at();
  assert.ok(Number.isFinite(first), 'the write is dated');
  const until = performance.now() + 20;
  while (performance.now() < until) { /* time passes */ }
  // The link fails before our CDC was confirmed: the same five bytes go again on the other link.
  conn.setPeerKey(l2 as never, { rkey: 4, addr: 0 } as never);
  assert.equal(conn.switchLink(l2 as never), true);
  assert.equal(at(), first, 'the resend is not a new write');
  conn.write(Buffer.from('more'));
  await Promise.resolve();
  assert.ok(at() > first, 'new bytes are');
});
