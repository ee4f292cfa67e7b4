// Findings of a review of the RC requester, completer and responder against Linux 6.1 rxe, each
// fed packet by packet through the harness (test/helpers/rxe-harness.ts):
//  - one loss, one retry (rxe_comp.c started_retry): a duplicated sequence NAK, the late NAK of
//    a loss the timer already retried, and ACKs past a READ whose responses are missing start
//    no second go-back-N round and spend no second retry; an implicit NAK spends one;
//  - the SE bit only on a SEND or WRITE with immediate (rxe_req.c init_req_packet);
//  - NAK codes the completer does not know complete with REM_OP_ERR (check_ack's default);
//  - a WRITE packet shorter than what its message has left writes nothing (check_rkey).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { QpAttr, SendFlags, WcStatus, WrOpcode, QpState, connectQp, gidFromAddress } from '../../src/index.js';
import { OpCode } from '../../src/providers/rxe/wire/opcodes.js';
import { NakCode, reth } from '../../src/providers/rxe/wire/headers.js';
import { PEER, PEER_QPN, RQ_PSN, SQ_PSN, ackOf, describe, fakeTime, nakOf, openHarness, packet } from '../helpers/rxe-harness.js';

const psn = (k: number) => (SQ_PSN + k) & 0xffffff;
const statuses = (wcs: Array<{ wrId: unknown; status: number }>) => wcs.map((wc) => [Number(wc.wrId), wc.status]);

test('a duplicated sequence NAK is the same loss: one go-back-N round, one retry spent (retry_cnt 1 survives)', async (t) => {
  const h = await openHarness({ timeout: 14, retryCnt: 1 });
  t.after(() => h.close());
  fakeTime(t);
  const m = h.mr(8192);
  for (let i = 0; i < 3; i++) h.qp.postSend({ wrId: i + 1, opcode: WrOpcode.SEND, sendFlags: SendFlags.SIGNALED, sgList: [m.mr.sge(0, 100)] });
  assert.equal(h.take().length, 3);
  const nak = nakOf(h, psn(1), NakCode.PSN_SEQ_ERROR);
  h.feed(nak);
  assert.deepEqual(h.take().map((s) => s.pkt.psn), [psn(1), psn(2)]);
  h.feed(Buffer.from(nak));
  assert.deepEqual(h.take(), [], 'no second round for the duplicate');
  assert.equal(h.rq.counters.retransmits, 1);
  assert.equal(h.rq.state, QpState.RTS);
  h.feed(ackOf(h, psn(2)));
  assert.deepEqual(statuses(h.poll()), [[1, WcStatus.SUCCESS], [2, WcStatus.SUCCESS], [3, WcStatus.SUCCESS]]);
});

test('the late NAK of a loss the timer already retried starts nothing; the timer still may', async (t) => {
  const h = await openHarness({ timeout: 10, retryCnt: 1 });
  t.after(() => h.close());
  const time = fakeTime(t);
  const m = h.mr(8192);
  for (let i = 0; i < 3; i++) h.qp.postSend({ wrId: i + 1, opcode: WrOpcode.SEND, sendFlags: SendFlags.SIGNALED, sgList: [m.mr.sge(0, 100)] });
  h.take();
  time.advance(5); // RTO 4.2 ms: go-back-N from the first
  assert.equal(h.take().length, 3);
  assert.equal(h.rq.counters.timeouts, 1);
  h.feed(nakOf(h, psn(0), NakCode.PSN_SEQ_ERROR));
  assert.deepEqual(h.take(), []);
  assert.equal(h.rq.state, QpState.RTS);
  assert.deepEqual(h.poll(), []);
  // retry_cnt is spent: the next timeout fails the oldest WQE, the rest flushed.
  time.advance(5);
  assert.deepEqual(statuses(h.poll()), [[1, WcStatus.RETRY_EXC_ERR], [2, WcStatus.WR_FLUSH_ERR], [3, WcStatus.WR_FLUSH_ERR]]);
});

test('a QP reused through RESET forgets a retry that was under way: its first sequence NAK goes back', async (t) => {
  const h = await openHarness({ timeout: 14, retryCnt: 7 });
  t.after(() => h.close());
  fakeTime(t);
  const m = h.mr(8192);
  const post = (id: number) => h.qp.postSend({ wrId: id, opcode: WrOpcode.SEND, sendFlags: SendFlags.SIGNALED, sgList: [m.mr.sge(0, 100)] });
  post(1); post(2);
  h.take();
  h.feed(nakOf(h, psn(0), NakCode.PSN_SEQ_ERROR)); // a retry starts, nothing acknowledged since
  assert.equal(h.take().length, 2);
  h.qp.modify({ qpState: QpState.RESET }, QpAttr.STATE);
  connectQp(h.qp, { qpn: PEER_QPN, gid: gidFromAddress(PEER), psn: RQ_PSN }, { psn: SQ_PSN, mtu: 3, minRnrTimer: 1, timeout: 14, retryCnt: 7 });
  h.poll();
  post(3); post(4);
  assert.equal(h.take().length, 2);
  h.feed(nakOf(h, psn(0), NakCode.PSN_SEQ_ERROR));
  assert.deepEqual(h.take().map((x) => x.pkt.psn), [psn(0), psn(1)], 'a new loss: go back');
});

test('ACKs past a READ whose responses are missing: one go-back-N round and one retry spent, until something is acknowledged', async (t) => {
  const h = await openHarness({ timeout: 14, retryCnt: 2 });
  t.after(() => h.close());
  fakeTime(t);
  const m = h.mr(8192);
  h.qp.postSend({ wrId: 1, opcode: WrOpcode.RDMA_READ, sendFlags: SendFlags.SIGNALED, sgList: [m.mr.sge(0, 1024)], rdma: { remoteAddr: 0x10000, rkey: 1 } });
  h.qp.postSend({ wrId: 2, opcode: WrOpcode.SEND, sendFlags: SendFlags.SIGNALED, sgList: [m.mr.sge(4096, 10)] });
  h.take();
  h.feed(ackOf(h, psn(1)));
  assert.equal(h.take().length, 2, 'the READ and the SEND again');
  assert.equal(h.rq.comp.retryCnt, 1, 'an implicit NAK spends a retry');
  for (let i = 0; i < 3; i++) h.feed(ackOf(h, psn(1)));
  assert.deepEqual(h.take(), []);
  assert.equal(h.rq.counters.retransmits, 1);
  assert.equal(h.rq.comp.retryCnt, 1);
  assert.equal(h.rq.state, QpState.RTS);
});

test('the SE bit rides only on a SEND (or WRITE with immediate), never on a solicited WRITE, READ or atomic', async (t) => {
  const h = await openHarness({});
  t.after(() => h.close());
  const m = h.mr(8192);
  const f = SendFlags.SIGNALED | SendFlags.SOLICITED;
  h.qp.postSend({ wrId: 1, opcode: WrOpcode.RDMA_WRITE, sendFlags: f, sgList: [m.mr.sge(0, 100)], rdma: { remoteAddr: 0x10000, rkey: 7 } });
  h.qp.postSend({ wrId: 2, opcode: WrOpcode.RDMA_READ, sendFlags: f, sgList: [m.mr.sge(0, 100)], rdma: { remoteAddr: 0x10000, rkey: 7 } });
  h.qp.postSend({ wrId: 3, opcode: WrOpcode.ATOMIC_FETCH_AND_ADD, sendFlags: f, sgList: [m.mr.sge(0, 8)], atomic: { remoteAddr: 0x10000, rkey: 7, compareAdd: 1n } });
  h.qp.postSend({ wrId: 4, opcode: WrOpcode.RDMA_WRITE_WITH_IMM, sendFlags: f, sgList: [m.mr.sge(0, 100)], rdma: { remoteAddr: 0x10000, rkey: 7 }, immData: 5 });
  h.qp.postSend({ wrId: 5, opcode: WrOpcode.SEND, sendFlags: f, sgList: [m.mr.sge(0, 100)] });
  assert.deepEqual(h.take().map((s) => [s.pkt.opcode, (s.bytes[1]! & 0x80) !== 0]), [
    [OpCode.RC_RDMA_WRITE_ONLY, false], [OpCode.RC_RDMA_READ_REQUEST, false], [OpCode.RC_FETCH_ADD, false],
    [OpCode.RC_RDMA_WRITE_ONLY_WITH_IMMEDIATE, true], [OpCode.RC_SEND_ONLY, true],
  ]);
});

for (const code of [NakCode.INVALID_RD_REQUEST, 5, 0x1f]) {
  test(`a NAK with code ${code} completes the send with REM_OP_ERR (Linux check_ack's default)`, async (t) => {
    const h = await openHarness({});
    t.after(() => h.close());
    const m = h.mr(64);
    h.qp.postSend({ wrId: 1, opcode: WrOpcode.SEND, sendFlags: SendFlags.SIGNALED, sgList: [m.sge()] });
    h.take();
    h.feed(nakOf(h, SQ_PSN, code));
    assert.deepEqual(statuses(h.poll()), [[1, WcStatus.REM_OP_ERR]]);
  });
}

test('a WRITE packet shorter than its message has left writes nothing and is NAKed (invalid request)', async (t) => {
  const h = await openHarness({});
  t.after(() => h.close());
  const m = h.mr(1024, 0);
  h.feed(packet(h.rq.qpn, OpCode.RC_RDMA_WRITE_ONLY, RQ_PSN, { ackReq: true, payload: Buffer.alloc(100, 0xee), fill: (b, i) => reth.write(b, i.reth, m.addr, m.rkey, 500) }));
  const out = h.take();
  assert.equal(out.length, 1);
  assert.match(describe(out[0]!), /NAK/);
  assert.equal(m.buf.subarray(0, 100).every((x) => x === 0), true, 'nothing written');
});
