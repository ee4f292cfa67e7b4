// The RC state machines packet by packet (test/helpers/rxe-harness.ts): decoded packets from
// a peer that does not exist go straight into the responder and the completer, the packets
// the QP sends are captured instead of leaving through a socket, and the retransmit and RNR
// timers run on fake time. Each test asserts the exact packets sent back, the completions,
// and the named states the trace reports (as Linux rxe's resp_states/comp_states).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { QpState, SendFlags, WcOpcode, WcStatus, WrOpcode } from '../../src/index.js';
import { NakCode } from '../../src/providers/rxe/wire/headers.js';
import { OpCode } from '../../src/providers/rxe/wire/opcodes.js';
import { MIN_WINDOW, windowPkts } from '../../src/providers/rxe/window.js';
import { COMP_STATE_NAMES, CompState, RESP_STATE_NAMES, RespState } from '../../src/providers/rxe/states.js';
import {
  MTU, PEER, PEER_QPN, RQ_PSN, SQ_PSN, ackOf, describe, fakeTime, nakOf, openHarness, readRequestOf, readResponseOf, rnrNakOf, sendOnlyOf, states, type Harness,
} from '../helpers/rxe-harness.js';

/** Post a signaled SEND of `len` bytes from a fresh MR. */
function postSend(h: Harness, wrId: number, len = 100) {
  const mr = h.mr(len, wrId);
  h.qp.postSend({ wrId, opcode: WrOpcode.SEND, sendFlags: SendFlags.SIGNALED, sgList: [mr.sge()] });
}

const statuses = (h: Harness) => h.poll().map((wc) => [wc.wrId, wc.status]);
const psn = (k: number) => (SQ_PSN + k) & 0xffffff;
const rpsn = (k: number) => (RQ_PSN + k) & 0xffffff;

test('state name tables name every state, as Linux prints them', () => {
  assert.equal(RESP_STATE_NAMES[RespState.CHK_PSN], 'RESPST_CHK_PSN');
  assert.equal(COMP_STATE_NAMES[CompState.GET_ACK], 'COMPST_GET_ACK');
  assert.equal(RESP_STATE_NAMES.length, Object.keys(RespState).length);
  assert.equal(COMP_STATE_NAMES.length, Object.keys(CompState).length);
  assert.ok([...RESP_STATE_NAMES, ...COMP_STATE_NAMES].every((n) => typeof n === 'string'), 'no holes');
});

test('a lost ACK: the retransmit timer resends the same bytes, and the late ACK completes the send', async (t) => {
  const h = await openHarness({ timeout: 10, retryCnt: 3 }); // 4.096 us x 2^10 = 4.2 ms
  t.after(() => h.close());
  const time = fakeTime(t);
  postSend(h, 1);
  const [first, ...more] = h.take();
  assert.deepEqual([describe(first!), more.length, first!.to, first!.pkt.destQp, first!.pkt.ackReq], [`RC_SEND_ONLY 0x${psn(0).toString(16)}`, 0, PEER, PEER_QPN, true]);

  time.advance(4); // not yet
  assert.deepEqual(h.take(), []);
  time.advance(1);
  const [again, ...none] = h.take();
  assert.equal(none.length, 0);
  assert.ok(again!.bytes.equals(first!.bytes), 'the retransmission is byte-identical, ICRC included');
  assert.deepEqual([h.rq.counters.timeouts, h.rq.counters.retransmits], [1, 1]);
  assert.deepEqual(states(h, 'comp'), ['COMPST_ERROR_RETRY']);
  assert.deepEqual(h.poll(), [], 'no completion before the ACK');

  h.feed(ackOf(h, psn(0)));
  assert.deepEqual(statuses(h), [[1, WcStatus.SUCCESS]]);
  assert.deepEqual(states(h, 'comp').slice(1), ['COMPST_CHECK_ACK', 'COMPST_COMP_ACK']);
  time.advance(100);
  assert.deepEqual(h.take(), [], 'nothing left to retransmit');
});

test('retries run out: after retry_cnt retransmissions the send fails with RETRY_EXC_ERR and the QP is in ERR', async (t) => {
  const h = await openHarness({ timeout: 10, retryCnt: 2 });
  t.after(() => h.close());
  const time = fakeTime(t);
  postSend(h, 7);
  const sent = [h.take()];
  for (let i = 0; i < 3; i++) { time.advance(5); sent.push(h.take()); }
  assert.deepEqual(sent.map((s) => s.length), [1, 1, 1, 0], 'the first send, two retries, then none');
  assert.deepEqual(statuses(h), [[7, WcStatus.RETRY_EXC_ERR]]);
  assert.equal(h.qp.query().qpState, QpState.ERR);
  assert.deepEqual(states(h, 'comp'), ['COMPST_ERROR_RETRY', 'COMPST_ERROR_RETRY', 'COMPST_ERROR']);
  assert.equal(h.rxe.counters.retry_exceeded_err, 1);
});

test('a sequence NAK completes what it acknowledges and goes back to its PSN', async (t) => {
  const h = await openHarness({ timeout: 14, retryCnt: 3 });
  t.after(() => h.close());
  fakeTime(t);
  for (let i = 1; i <= 3; i++) postSend(h, i);
  const sent = h.take();
  assert.deepEqual(sent.map(describe), [0, 1, 2].map((k) => `RC_SEND_ONLY 0x${psn(k).toString(16)}`));

  h.feed(nakOf(h, psn(1), NakCode.PSN_SEQ_ERROR)); // the peer got psn(0), lost psn(1)
  assert.deepEqual(statuses(h), [[1, WcStatus.SUCCESS]], 'the NAK acknowledges everything before its PSN');
  const resent = h.take();
  assert.deepEqual(resent.map((s) => s.pkt.psn), [psn(1), psn(2)], 'go-back-N from the NAKed PSN');
  assert.ok(resent.every((s, i) => s.bytes.equals(sent[i + 1]!.bytes)), 'resent byte-identical');
  assert.equal(h.rq.counters.seq_naks_rcvd, 1);
  assert.deepEqual(states(h, 'comp'), ['COMPST_CHECK_ACK', 'COMPST_ERROR_RETRY']);

  h.feed(ackOf(h, psn(2)));
  assert.deepEqual(statuses(h), [[2, WcStatus.SUCCESS], [3, WcStatus.SUCCESS]]);
});

test('the responder NAKs a PSN gap once, then takes the expected PSN', async (t) => {
  const h = await openHarness();
  t.after(() => h.close());
  const buf = h.mr(256);
  h.qp.postRecv([{ wrId: 10, sgList: [buf.sge()] }, { wrId: 11, sgList: [buf.sge()] }]);

  h.feed(sendOnlyOf(h, rpsn(1), Buffer.from('early')));
  h.feed(sendOnlyOf(h, rpsn(2), Buffer.from('later')));
  assert.deepEqual(h.take().map(describe), [`RC_ACKNOWLEDGE 0x${rpsn(0).toString(16)} NAK ${NakCode.PSN_SEQ_ERROR}`], 'one NAK, at the expected PSN');
  assert.deepEqual(h.poll(), []);
  assert.deepEqual([h.rq.counters.seq_naks_sent, h.rxe.counters.out_of_seq_request], [1, 2]);
  assert.deepEqual(states(h, 'resp'), ['RESPST_ERR_PSN_OUT_OF_SEQ', 'RESPST_ERR_PSN_OUT_OF_SEQ']);

  h.feed(sendOnlyOf(h, rpsn(0), Buffer.from('first')));
  assert.deepEqual(h.take().map(describe), [`RC_ACKNOWLEDGE 0x${rpsn(0).toString(16)} ACK`]);
  const [wc] = h.poll();
  assert.deepEqual([wc!.wrId, wc!.status, wc!.opcode, wc!.byteLen, wc!.srcQp], [10, WcStatus.SUCCESS, WcOpcode.RECV, 5, 0], 'src_qp only from a DETH (UD)');
  assert.equal(h.qp.query().rqPsn, rpsn(1));
  // The NAK was for this gap; a new gap NAKs again.
  h.feed(sendOnlyOf(h, rpsn(3), Buffer.from('gap')));
  assert.deepEqual(h.take().map(describe), [`RC_ACKNOWLEDGE 0x${rpsn(1).toString(16)} NAK ${NakCode.PSN_SEQ_ERROR}`]);
});

test('a duplicate SEND is acknowledged again and not executed twice', async (t) => {
  const h = await openHarness();
  t.after(() => h.close());
  const buf = h.mr(64);
  h.qp.postRecv([{ wrId: 20, sgList: [buf.sge()] }, { wrId: 21, sgList: [buf.sge()] }]);
  const send = sendOnlyOf(h, rpsn(0), Buffer.from('once'));
  h.feed(send);
  h.feed(send); // its ACK was lost: the peer resends
  const ack = `RC_ACKNOWLEDGE 0x${rpsn(0).toString(16)} ACK`;
  assert.deepEqual(h.take().map(describe), [ack, ack]);
  assert.deepEqual(statuses(h), [[20, WcStatus.SUCCESS]], 'one receive consumed');
  assert.deepEqual([h.rq.counters.duplicates, h.rxe.counters.duplicate_request], [1, 1]);
  assert.deepEqual(states(h, 'resp'), ['RESPST_EXECUTE', 'RESPST_COMPLETE', 'RESPST_ACKNOWLEDGE', 'RESPST_DUPLICATE_REQUEST']);
});

test('a duplicate READ is answered again from the responder resource, from the PSN asked', async (t) => {
  const h = await openHarness();
  t.after(() => h.close());
  const src = h.mr(3000);
  for (let i = 0; i < 3000; i++) src.buf[i] = i & 0xff;
  const read = readRequestOf(h, rpsn(0), src.addr, src.rkey, 3000);
  h.feed(read);
  const first = h.take();
  const hex = (k: number) => rpsn(k).toString(16);
  assert.deepEqual(first.map(describe), [
    `RC_RDMA_READ_RESPONSE_FIRST 0x${hex(0)} ACK`, `RC_RDMA_READ_RESPONSE_MIDDLE 0x${hex(1)}`, `RC_RDMA_READ_RESPONSE_LAST 0x${hex(2)} ACK`,
  ]);
  assert.deepEqual(first.map((s) => s.pkt.payloadLength), [MTU, MTU, 3000 - 2 * MTU]);
  assert.equal(h.qp.query().rqPsn, rpsn(3), 'a READ takes one PSN per response packet');

  h.feed(read); // every response was lost
  const again = h.take();
  assert.equal(again.length, 3);
  assert.ok(again.every((s, i) => s.bytes.equals(first[i]!.bytes)), 'the same responses, byte for byte');
  // A requester that got the first response resends the READ from the next PSN (for the rest).
  h.feed(readRequestOf(h, rpsn(1), src.addr + MTU, src.rkey, 3000 - MTU));
  const rest = h.take();
  assert.deepEqual(rest.map((s) => s.pkt.psn), [rpsn(1), rpsn(2)]);
  assert.ok(rest.every((s, i) => s.bytes.equals(first[i + 1]!.bytes)));
  assert.deepEqual(states(h, 'resp'), ['RESPST_READ_REPLY', 'RESPST_DUPLICATE_REQUEST', 'RESPST_DUPLICATE_REQUEST']);
  assert.equal(h.qp.query().rqPsn, rpsn(3), 'duplicates do not move the expected PSN');
});

test('the requester places READ responses and completes the READ', async (t) => {
  const h = await openHarness({ timeout: 14 });
  t.after(() => h.close());
  fakeTime(t);
  const dst = h.mr(1500);
  h.qp.postSend({ wrId: 30, opcode: WrOpcode.RDMA_READ, sendFlags: SendFlags.SIGNALED, sgList: [dst.sge()], rdma: { remoteAddr: 0x1000, rkey: 0x4242 } });
  assert.deepEqual(h.take().map(describe), [`RC_RDMA_READ_REQUEST 0x${psn(0).toString(16)}`]);
  const data = Buffer.alloc(1500, 0xab);
  h.feed(readResponseOf(h, OpCode.RC_RDMA_READ_RESPONSE_FIRST, psn(0), data.subarray(0, MTU)));
  h.feed(readResponseOf(h, OpCode.RC_RDMA_READ_RESPONSE_FIRST, psn(0), data.subarray(0, MTU))); // a duplicate: dropped
  h.feed(readResponseOf(h, OpCode.RC_RDMA_READ_RESPONSE_LAST, psn(1), data.subarray(MTU)));
  const [wc] = h.poll();
  assert.deepEqual([wc!.wrId, wc!.status, wc!.opcode, wc!.byteLen], [30, WcStatus.SUCCESS, WcOpcode.RDMA_READ, 1500]);
  assert.ok(dst.buf.equals(data));
  assert.deepEqual(states(h, 'comp'), ['COMPST_READ', 'COMPST_DONE', 'COMPST_READ', 'COMPST_COMP_WQE']);
  assert.equal(h.rq.counters.duplicates, 1);
});

test('RNR NAKs: the requester waits the RNR timer and resends, until rnr_retry runs out', async (t) => {
  const h = await openHarness({ timeout: 14, rnrRetry: 2 });
  t.after(() => h.close());
  const time = fakeTime(t);
  postSend(h, 40);
  const [first] = h.take();
  for (let i = 0; i < 2; i++) {
    h.feed(rnrNakOf(h, psn(0), 14)); // 1.28 ms
    time.advance(1);
    assert.deepEqual(h.take(), [], 'paused for the RNR timer');
    time.advance(1);
    const [again] = h.take();
    assert.ok(again?.bytes.equals(first!.bytes), `RNR retry ${i + 1} resends the packet`);
  }
  h.feed(rnrNakOf(h, psn(0), 14));
  assert.deepEqual(statuses(h), [[40, WcStatus.RNR_RETRY_EXC_ERR]]);
  assert.equal(h.qp.query().qpState, QpState.ERR);
  assert.deepEqual(states(h, 'comp'), ['COMPST_CHECK_ACK', 'COMPST_RNR_RETRY', 'COMPST_CHECK_ACK', 'COMPST_RNR_RETRY', 'COMPST_CHECK_ACK', 'COMPST_ERROR']);
  assert.deepEqual([h.rq.counters.rnr_naks_rcvd, h.rxe.counters.retry_rnr_exceeded_err], [3, 1]);
});

test('the responder sends an RNR NAK with its min_rnr_timer while no receive is posted', async (t) => {
  const h = await openHarness({ minRnrTimer: 5 });
  t.after(() => h.close());
  const send = sendOnlyOf(h, rpsn(0), Buffer.from('hello'));
  h.feed(send);
  assert.deepEqual(h.take().map(describe), [`RC_ACKNOWLEDGE 0x${rpsn(0).toString(16)} RNR_NAK 5`]);
  assert.equal(h.qp.query().rqPsn, rpsn(0), 'the PSN is not consumed');
  const buf = h.mr(16);
  h.qp.postRecv({ wrId: 50, sgList: [buf.sge()] });
  h.feed(send);
  assert.deepEqual(h.take().map(describe), [`RC_ACKNOWLEDGE 0x${rpsn(0).toString(16)} ACK`]);
  assert.deepEqual(statuses(h), [[50, WcStatus.SUCCESS]]);
  assert.deepEqual(states(h, 'resp'), ['RESPST_ERR_RNR', 'RESPST_EXECUTE', 'RESPST_COMPLETE', 'RESPST_ACKNOWLEDGE']);
});

/** Bound the window by the peer's receive buffer (link.windowBytes), whatever the congestion window. */
function setWindowBytes(h: Harness, bytes: number) {
  (h.rxe.link as { windowBytes: number }).windowBytes = bytes;
}

test('a window that shrank under unasked packets: one more packet goes, asking, not a retransmit timeout', async (t) => {
  const h = await openHarness({ timeout: 14, cap: { maxSendWr: 4 } });
  t.after(() => h.close());
  const time = fakeTime(t);
  h.rq.req.cwnd = h.rq.req.ssthresh = 64; // ACKs asked every 32 packets
  const big = h.mr(120 * 1024); // 120 packets at MTU 1024
  h.qp.postSend({ wrId: 1, opcode: WrOpcode.SEND, sendFlags: SendFlags.SIGNALED, sgList: [big.sge()] });
  const first = h.take();
  assert.deepEqual(first.map((s) => s.pkt.psn), [...Array(64).keys()].map(psn));
  assert.deepEqual(first.filter((s) => s.pkt.ackReq).map((s) => s.pkt.psn), [psn(31), psn(63)]);
  // The peer acknowledges what it has so far (a cumulative ACK for a packet that did not ask).
  h.feed(ackOf(h, psn(40)));
  const second = h.take();
  assert.deepEqual([second[0]!.pkt.psn, second.at(-1)!.pkt.psn], [psn(64), psn(104)]);
  assert.deepEqual(second.filter((s) => s.pkt.ackReq).map((s) => s.pkt.psn), [psn(95)]);
  // The window shrinks to 8 (as when more QPs start sending); then the ACK for 95 comes.
  // 96..104 are in flight and none asks: without an ask nothing would come back.
  setWindowBytes(h, MIN_WINDOW * 1024);
  h.feed(ackOf(h, psn(95)));
  const forced = h.take();
  assert.deepEqual(forced.map((s) => [s.pkt.psn, s.pkt.ackReq]), [[psn(105), true]], 'one packet past the window, asking');
  assert.equal(h.rxe.counters.window_forced_asks, 1);
  h.feed(ackOf(h, psn(105)));
  assert.deepEqual(h.take().map((s) => s.pkt.psn), [106, 107, 108, 109, 110, 111, 112, 113].map(psn), 'the window of 8 again');
  h.feed(ackOf(h, psn(113)));
  assert.deepEqual(h.take().map((s) => s.pkt.psn), [114, 115, 116, 117, 118, 119].map(psn));
  h.feed(ackOf(h, psn(119)));
  assert.deepEqual(statuses(h), [[1, WcStatus.SUCCESS]]);
  time.advance(1000);
  assert.deepEqual([h.rq.counters.timeouts, h.take().length], [0, 0], 'no retransmit timeout, nothing resent');
});

test('a short message goes whole or waits for the window; a long one is cut by it', async (t) => {
  const h = await openHarness({ timeout: 14, cap: { maxSendWr: 16 } });
  t.after(() => h.close());
  fakeTime(t);
  setWindowBytes(h, 36 * 1024); // 36 packets, no multiple of the messages' 8
  const mr = h.mr(8 * 1024);
  for (let i = 0; i < 6; i++) h.qp.postSend({ wrId: 10 + i, opcode: WrOpcode.SEND, sendFlags: SendFlags.SIGNALED, sgList: [mr.sge()] });
  assert.deepEqual(h.take().map((s) => s.pkt.psn), [...Array(32).keys()].map(psn), 'four messages; the fifth would not fit');
  h.feed(ackOf(h, psn(7)));
  assert.deepEqual(h.take().map((s) => s.pkt.psn), [...Array(8).keys()].map((k) => psn(32 + k)), 'the fifth, whole');
  // A message longer than a quarter of the window is cut where the window ends.
  h.feed(ackOf(h, psn(39)));
  assert.equal(h.poll().length, 5);
  const long = h.mr(40 * 1024);
  h.qp.postSend({ wrId: 20, opcode: WrOpcode.SEND, sendFlags: SendFlags.SIGNALED, sgList: [long.sge()] });
  assert.deepEqual(h.take().map((s) => s.pkt.psn), [...Array(36).keys()].map((k) => psn(40 + k)), 'the sixth (8) and 28 of the long one');
});

test('a READ in flight holds the window until its last response, not its first', async (t) => {
  const h = await openHarness({ timeout: 14, cap: { maxSendWr: 16 } });
  t.after(() => h.close());
  fakeTime(t);
  setWindowBytes(h, MIN_WINDOW * 1024);
  const dst = h.mr(64 * 1024), src = h.mr(64 * 1024);
  const read = (wrId: number) => h.qp.postSend({ wrId, opcode: WrOpcode.RDMA_READ, sendFlags: SendFlags.SIGNALED, sgList: [dst.sge()], rdma: { remoteAddr: src.addr, rkey: src.rkey } });
  read(1); // 64 response PSNs, far past the window of 8
  assert.deepEqual(h.take().map((s) => s.pkt.psn), [psn(0)]);
  h.feed(readResponseOf(h, OpCode.RC_RDMA_READ_RESPONSE_FIRST, psn(0), Buffer.alloc(1024)));
  read(2);
  assert.deepEqual(h.take(), [], 'the second READ waits: 63 responses of the first are still coming');
  assert.equal(h.rxe.counters.window_forced_asks, 0);
});

test('a short message that does not fit waits for the ACK on its way; with none on its way it goes whole', async (t) => {
  const h = await openHarness({ timeout: 14, cap: { maxSendWr: 16 } });
  t.after(() => h.close());
  fakeTime(t);
  setWindowBytes(h, 36 * 1024);
  const m = h.mr(8 * 1024);
  const send = (wrId: number) => h.qp.postSend({ wrId, opcode: WrOpcode.SEND, sendFlags: SendFlags.SIGNALED, sgList: [m.sge()] });
  for (let i = 0; i < 4; i++) send(i);
  assert.equal(h.take().length, 32);
  h.feed(ackOf(h, psn(7)));
  send(4);
  send(5);
  assert.deepEqual(h.take().map((s) => s.pkt.psn), [...Array(8).keys()].map((k) => psn(32 + k)), 'the fifth fits; the sixth waits');
  // As go-back-N leaves it: nothing known to ask in flight. The sixth goes whole, its last packet asking.
  h.rq.req.askPsn = -1;
  send(6);
  const whole = h.take();
  assert.deepEqual(whole.map((s) => s.pkt.psn), [...Array(8).keys()].map((k) => psn(40 + k)));
  assert.equal(whole.at(-1)!.pkt.ackReq, true);
  assert.equal(h.rxe.counters.window_forced_asks, 1);
  send(7);
  assert.deepEqual(h.take(), [], 'the seventh waits for that ACK');
});

test('responses outside the window of sent PSNs are dropped; stale ones change nothing', async (t) => {
  const h = await openHarness({ timeout: 14 });
  t.after(() => h.close());
  fakeTime(t);
  postSend(h, 60);
  postSend(h, 61);
  h.take();
  h.feed(ackOf(h, psn(2))); // never sent
  h.feed(readResponseOf(h, OpCode.RC_RDMA_READ_RESPONSE_ONLY, psn(5), Buffer.alloc(8))); // never sent
  assert.deepEqual(h.poll(), []);
  assert.equal(h.rxe.counters.unexpected_response_drops, 2);
  h.feed(ackOf(h, psn(0)));
  assert.deepEqual(statuses(h), [[60, WcStatus.SUCCESS]]);
  h.feed(ackOf(h, psn(0))); // a duplicate ACK
  h.feed(nakOf(h, psn(0), NakCode.PSN_SEQ_ERROR)); // a stale NAK: no go-back
  assert.deepEqual(h.take(), [], 'nothing resent');
  assert.deepEqual(h.poll(), []);
  h.feed(ackOf(h, psn(1)));
  assert.deepEqual(statuses(h), [[61, WcStatus.SUCCESS]]);
  assert.deepEqual(states(h, 'comp'), [
    'COMPST_DONE', 'COMPST_DONE', 'COMPST_CHECK_ACK', 'COMPST_COMP_ACK', 'COMPST_CHECK_ACK', 'COMPST_DONE', 'COMPST_CHECK_ACK', 'COMPST_DONE', 'COMPST_CHECK_ACK', 'COMPST_COMP_ACK',
  ]);
});

test('the requester sends no PSN beyond its window and opens it as ACKs come', async (t) => {
  const h = await openHarness({ timeout: 14, cap: { maxSendWr: 32 } });
  t.after(() => h.close());
  fakeTime(t);
  h.rq.req.cwnd = h.rq.req.ssthresh = MIN_WINDOW; // as after a timeout
  assert.equal(windowPkts(h.rq), MIN_WINDOW);
  for (let i = 0; i < 12; i++) postSend(h, 100 + i);
  assert.deepEqual(h.take().map((s) => s.pkt.psn), [...Array(MIN_WINDOW).keys()].map(psn));
  h.feed(ackOf(h, psn(3)));
  assert.equal(h.poll().length, 4);
  assert.deepEqual(h.take().map((s) => s.pkt.psn), [8, 9, 10, 11].map(psn), 'four more, the window still 8');
  assert.ok(h.rq.req.cwnd > MIN_WINDOW && h.rq.req.cwnd < MIN_WINDOW + 1, 'congestion avoidance: less than a packet more');
});
