// How often the requester asks for an ACK (window.ts ackEvery): twice per window, also per share
// of the window while other QPs of the device send (a lost ask must have packets behind it:
// ack-loss-many-qps.test.ts).

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { MAX_PKTS_PER_ACK, ackEvery, noteIdle, noteSending, windowPkts } from '../../src/providers/rxe/window.js';
import type { RxeQp } from '../../src/providers/rxe/qp.js';

/** QPs of one device whose link's window is 2 MiB, MTU 4096: 512 packets in all. */
function qps(n: number): RxeQp[] {
  const device = { link: { windowBytes: 2 << 20 } };
  return Array.from({ length: n }, () => ({ device, mtu: 4096, req: { cwnd: 1024 } }) as unknown as RxeQp);
}

test('a QP sending alone asks twice per window, at most every 64 packets', () => {
  const [q] = qps(1) as [RxeQp];
  noteSending(q);
  assert.equal(windowPkts(q), 512);
  assert.equal(ackEvery(q), MAX_PKTS_PER_ACK);
  q.req.cwnd = 40; // after a loss
  assert.equal(ackEvery(q), 20);
});

test('sixteen QPs sending at once ask twice per share of the window (every 16 of 32 packets)', () => {
  const all = qps(16);
  for (const q of all) noteSending(q);
  assert.equal(windowPkts(all[0]!), 32);
  assert.equal(ackEvery(all[0]!), 16);
  // Eight: 64 packets each.
  for (const q of all.slice(8)) noteIdle(q);
  assert.equal(ackEvery(all[0]!), 32);
  // Two: 256 each, and 64 is the most between two asks.
  for (const q of all.slice(2, 8)) noteIdle(q);
  assert.equal(ackEvery(all[0]!), 64);
  // Alone again.
  for (const q of all.slice(1, 2)) noteIdle(q);
  assert.equal(ackEvery(all[0]!), 64);
  all[0]!.req.cwnd = 40;
  assert.equal(ackEvery(all[0]!), 20);
});
