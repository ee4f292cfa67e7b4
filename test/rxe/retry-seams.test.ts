// Retries and abandoned messages, packet by packet (test/helpers/rxe-harness.ts): one loss
// makes one go-back-N round from the completer's PSN (Linux rxe_comp.c starts no second retry
// for it, req_retry restarts from qp->comp.psn); the retransmit timer sleeps through an RNR
// wait; and a UC message abandoned after a malformed packet leaves nothing for the next one.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { QpType, SendFlags, WcStatus, WrOpcode, connectQp, gidFromAddress } from '../../src/index.js';
import { NakCode, parsePacket, reth } from '../../src/providers/rxe/wire/headers.js';
import { OpCode } from '../../src/providers/rxe/wire/opcodes.js';
import { onRequest } from '../../src/providers/rxe/responder.js';
import { PEER, PEER_QPN, RQ_PSN, SQ_PSN, ackOf, describe, fakeTime, nakOf, openHarness, packet, rnrNakOf, states } from '../helpers/rxe-harness.js';

const psn = (k: number) => (SQ_PSN + k) & 0xffffff;
const hex = (k: number) => psn(k).toString(16);

test('a sequence NAK behind an unanswered READ: one go-back-N round, the READ resent whole from the completer\'s PSN', async (t) => {
  const h = await openHarness({ timeout: 14, retryCnt: 3 });
  t.after(() => h.close());
  fakeTime(t);
  const m = h.mr(8192);
  h.qp.postSend({ wrId: 1, opcode: WrOpcode.RDMA_READ, sendFlags: SendFlags.SIGNALED, sgList: [m.mr.sge(0, 4096)], rdma: { remoteAddr: 0x10000, rkey: 1 } });
  h.qp.postSend({ wrId: 2, opcode: WrOpcode.SEND, sendFlags: SendFlags.SIGNALED, sgList: [m.mr.sge(4096, 100)] });
  h.qp.postSend({ wrId: 3, opcode: WrOpcode.SEND, sendFlags: SendFlags.SIGNALED, sgList: [m.mr.sge(4096, 100)] });
  assert.deepEqual(h.take().map(describe), [`RC_RDMA_READ_REQUEST 0x${hex(0)}`, `RC_SEND_ONLY 0x${hex(4)}`, `RC_SEND_ONLY 0x${hex(5)}`]);
  const cwnd = h.rq.req.cwnd;
  // The responder took the READ (PSNs 0..3) and lost the first SEND: its responses are lost too.
  h.feed(nakOf(h, psn(4), NakCode.PSN_SEQ_ERROR));
  const again = h.take();
  assert.deepEqual(again.map(describe), [`RC_RDMA_READ_REQUEST 0x${hex(0)}`, `RC_SEND_ONLY 0x${hex(4)}`, `RC_SEND_ONLY 0x${hex(5)}`], 'each packet once');
  assert.equal(reth.len(again[0]!.pkt), 4096, 'the whole READ, not its last part');
  assert.equal(h.rq.counters.retransmits, 1);
  assert.equal(states(h, 'comp').filter((s) => s === 'COMPST_ERROR_RETRY').length, 1);
  assert.ok(h.rq.req.cwnd >= cwnd / 2, `the window was cut once: ${cwnd} -> ${h.rq.req.cwnd}`);
  assert.deepEqual(h.poll(), []);
});

test('an RNR NAK behind an unanswered READ is an implicit NAK: one go-back-N round, not a second after the RNR timer', async (t) => {
  const h = await openHarness({ timeout: 14, retryCnt: 3, rnrRetry: 3 });
  t.after(() => h.close());
  const time = fakeTime(t);
  const m = h.mr(8192);
  h.qp.postSend({ wrId: 1, opcode: WrOpcode.RDMA_READ, sendFlags: SendFlags.SIGNALED, sgList: [m.mr.sge(0, 4096)], rdma: { remoteAddr: 0x10000, rkey: 1 } });
  h.qp.postSend({ wrId: 2, opcode: WrOpcode.SEND, sendFlags: SendFlags.SIGNALED, sgList: [m.mr.sge(4096, 100)] });
  h.take();
  // The READ's responses were lost; the SEND met no receive.
  h.feed(rnrNakOf(h, psn(4), 14)); // 1.28 ms
  assert.deepEqual(h.take().map(describe), [`RC_RDMA_READ_REQUEST 0x${hex(0)}`, `RC_SEND_ONLY 0x${hex(4)}`], 'resent once, from the READ');
  time.advance(5);
  assert.deepEqual(h.take().map(describe), [], 'and not again when an RNR timer would have run out');
  assert.equal(h.rq.counters.retransmits, 1);
});

test('a NAK inside a READ (the responder failed it part way) fails the READ without resending it', async (t) => {
  const h = await openHarness({ timeout: 14, retryCnt: 3 });
  t.after(() => h.close());
  fakeTime(t);
  const m = h.mr(8192);
  h.qp.postSend({ wrId: 1, opcode: WrOpcode.RDMA_READ, sendFlags: SendFlags.SIGNALED, sgList: [m.mr.sge(0, 4096)], rdma: { remoteAddr: 0x10000, rkey: 1 } });
  h.take();
  // Linux NAKs at the request's PSN, softrdma at the response it could not send: both fail it.
  h.feed(nakOf(h, psn(2), NakCode.REMOTE_ACCESS_ERROR));
  assert.deepEqual(h.take().map(describe), [], 'no READ request resent');
  assert.equal(h.rq.counters.retransmits, 0);
  assert.deepEqual(h.poll().map((wc) => [Number(wc.wrId), wc.status]), [[1, WcStatus.REM_ACCESS_ERR]]);
});

test('the retransmit timer does not wake up while the requester waits out an RNR NAK', async (t) => {
  const h = await openHarness({ timeout: 10, retryCnt: 7, rnrRetry: 7 }); // RTO 4.2 ms
  t.after(() => h.close());
  const time = fakeTime(t);
  const m = h.mr(64);
  h.qp.postSend({ wrId: 1, opcode: WrOpcode.SEND, sendFlags: SendFlags.SIGNALED, sgList: [m.sge()] });
  const [first] = h.take();
  h.feed(rnrNakOf(h, psn(0), 0)); // RNR timer field 0: 655.36 ms
  let armed = 0;
  const mocked = globalThis.setTimeout;
  globalThis.setTimeout = ((...args: Parameters<typeof setTimeout>) => { armed++; return mocked(...args); }) as typeof setTimeout;
  try {
    for (let ms = 0; ms < 600; ms++) time.advance(1);
  } finally {
    globalThis.setTimeout = mocked;
  }
  assert.equal(armed, 0, 'no timer armed during 600 ms of the RNR wait');
  assert.deepEqual(h.take(), []);
  assert.equal(h.rq.counters.timeouts, 0);
  time.advance(60);
  const [resent, ...none] = h.take();
  assert.equal(none.length, 0);
  assert.ok(resent?.bytes.equals(first!.bytes), 'the RNR timer resends the SEND');
  // The resend armed the retransmit timer again: a lost resend is retried after one RTO.
  time.advance(5);
  assert.deepEqual(h.take().map(describe), [`RC_SEND_ONLY 0x${hex(0)}`]);
  assert.equal(h.rq.counters.timeouts, 1);
  h.feed(ackOf(h, psn(0)));
  assert.deepEqual(h.poll().map((wc) => [wc.wrId, wc.status]), [[1, WcStatus.SUCCESS]]);
});

test('UC: after a malformed packet drops a message, the next message lands at the start of its receive', async (t) => {
  const h = await openHarness();
  t.after(() => h.close());
  const qp = h.pd.createQp({ qpType: QpType.UC, sendCq: h.cq, recvCq: h.cq, cap: { maxSendWr: 4, maxRecvWr: 4, maxSendSge: 1, maxRecvSge: 1 } });
  connectQp(qp, { qpn: PEER_QPN, gid: gidFromAddress(PEER), psn: RQ_PSN }, { psn: 0, mtu: 3 });
  const rq = h.rxe.qps.get(qp.qpn)!;
  const m = h.mr(8192);
  qp.postRecv({ wrId: 1, sgList: [m.sge()] });
  const feed = (op: number, k: number, payload: Buffer) => {
    const p = parsePacket(packet(qp.qpn, op, (RQ_PSN + k) & 0xffffff, { payload }));
    if (typeof p === 'string') throw new Error(p);
    onRequest(rq, p, PEER);
  };
  feed(OpCode.UC_SEND_FIRST, 0, Buffer.alloc(1024, 0xaa));
  feed(OpCode.UC_SEND_MIDDLE, 1, Buffer.alloc(100, 0xbb)); // a MIDDLE must carry one MTU: dropped with its message
  feed(OpCode.UC_SEND_ONLY, 2, Buffer.from('hello'));
  assert.deepEqual(h.cq.poll(4).map((wc) => [wc.wrId, wc.status, wc.byteLen]), [[1, WcStatus.SUCCESS, 5]]);
  assert.equal(m.buf.subarray(0, 5).toString(), 'hello');
  assert.equal(h.rxe.counters.malformed_drops, 1);
});
