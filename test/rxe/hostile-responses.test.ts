// Responses a buggy or hostile peer may send that the completer must not believe (a review of
// the receive path with crafted packets): an ACK for PSNs the window still holds back (reserved
// for a message, not sent) completed that message with SUCCESS and the rest of it never left
// (Linux rxe_comp.c completes a WQE only once it is wqe_state_pending); an RNR NAK for a packet
// inside a message moved comp.psn to it, so the RNR retry resent from there and the packets
// before it were never resent (Linux's RNR NAK leaves comp.psn, and rnr_nak_timer → req_retry
// resends from it); and a response half the PSN space past the last sent one still counts as
// beyond it. Fed packet by packet through the harness (test/helpers/rxe-harness.ts).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { QpState, SendFlags, WcStatus, WrOpcode } from '../../src/index.js';
import { SQ_PSN, ackOf, fakeTime, openHarness, rnrNakOf } from '../helpers/rxe-harness.js';

const psn = (k: number) => (SQ_PSN + k) & 0xffffff;

test('an ACK for PSNs the window still holds back completes nothing: the WRITE goes on and completes once all of it is acknowledged', async (t) => {
  const h = await openHarness({ timeout: 14 });
  t.after(() => h.close());
  fakeTime(t);
  const npkts = 2048;
  const m = h.mr(npkts * 1024);
  h.qp.postSend({ wrId: 1, opcode: WrOpcode.RDMA_WRITE, sendFlags: SendFlags.SIGNALED, sgList: [m.mr.sge()], rdma: { remoteAddr: 0x10000, rkey: 0x1234 } });
  const first = h.take();
  assert.ok(first.length > 0 && first.length < npkts, `the window holds part back (${first.length} of ${npkts} sent)`);
  const dropsBefore = h.rq.device.counters.unexpected_response_drops;
  h.feed(ackOf(h, psn(npkts - 1)));
  assert.deepEqual(h.poll(), [], 'no completion for a message not all sent');
  assert.equal(h.rq.device.counters.unexpected_response_drops, dropsBefore + 1, 'counted as a response for nothing sent');
  assert.equal(h.rq.state, QpState.RTS);
  // The real ACKs, as the packets leave: everything is sent, then the WRITE completes.
  let sent = first.length;
  for (let round = 0; sent < npkts && round < 1000; round++) {
    h.feed(ackOf(h, psn(sent - 1)));
    sent += h.take().length;
  }
  assert.equal(sent, npkts, 'every packet left');
  h.feed(ackOf(h, psn(npkts - 1)));
  assert.deepEqual(h.poll().map((wc) => [Number(wc.wrId), wc.status]), [[1, WcStatus.SUCCESS]]);
});

test('an RNR NAK for a packet inside a message: the RNR retry resends the message from its first packet', async (t) => {
  const h = await openHarness({ timeout: 14, rnrRetry: 7 });
  t.after(() => h.close());
  const time = fakeTime(t);
  const m = h.mr(64 * 1024);
  h.qp.postSend({ wrId: 1, opcode: WrOpcode.RDMA_WRITE, sendFlags: SendFlags.SIGNALED, sgList: [m.mr.sge()], rdma: { remoteAddr: 0x10000, rkey: 0x1234 } });
  assert.equal(h.take().length, 64);
  h.feed(rnrNakOf(h, psn(40), 1)); // RNR timer 1: 0.01 ms
  time.advance(1);
  const again = h.take().map((s) => s.pkt.psn);
  assert.equal(again[0], psn(0), `resent from ${again[0]?.toString(16)}`);
  assert.equal(again.length, 64);
  h.feed(ackOf(h, psn(63)));
  assert.deepEqual(h.poll().map((wc) => [Number(wc.wrId), wc.status]), [[1, WcStatus.SUCCESS]]);
});

test('an ACK half the PSN space past the last sent PSN is dropped, not taken as acknowledging everything', async (t) => {
  const h = await openHarness({ timeout: 14 });
  t.after(() => h.close());
  fakeTime(t);
  const m = h.mr(4096);
  h.qp.postSend({ wrId: 1, opcode: WrOpcode.SEND, sendFlags: SendFlags.SIGNALED, sgList: [m.mr.sge()] });
  assert.equal(h.take().length, 4);
  h.feed(ackOf(h, psn(3)));
  assert.equal(h.poll().length, 1);
  h.feed(ackOf(h, psn(3 + 0x800000)));
  h.qp.postSend({ wrId: 2, opcode: WrOpcode.SEND, sendFlags: SendFlags.SIGNALED, sgList: [m.mr.sge()] });
  assert.equal(h.take().length, 4);
  h.feed(ackOf(h, psn(7)));
  assert.deepEqual(h.poll().map((wc) => [Number(wc.wrId), wc.status]), [[2, WcStatus.SUCCESS]], 'the next message is acknowledged as usual');
});
