// The completer against Linux rxe_comp.c: a read response or atomic ACK past a SEND or WRITE
// that left without AckReq acknowledges it (check_psn, COMPST_COMP_WQE); an ACK is an implicit
// NAK for a READ only when it is past the READ's last PSN; a READ response finds its local MR
// looked up again (do_read: copy_data); the RNR timer always runs the requester
// (rnr_nak_timer). Packet by packet (test/helpers/rxe-harness.ts), and once end to end.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Access, Obj, QpState, QpType, RxeAttr, RxeMethod, SendFlags, WcStatus, WrOpcode } from '../../src/index.js';
import { ACK_SYNDROME_NO_CREDIT_LIMIT, AethSyndrome, NakCode, aeth, atmack } from '../../src/providers/rxe/wire/headers.js';
import { OpCode } from '../../src/providers/rxe/wire/opcodes.js';
import { ackCoalescing } from '../../src/providers/rxe/requester.js';
import { MTU, SQ_PSN, ackOf, describe, fakeTime, nakOf, openHarness, packet, readResponseOf, rnrNakOf, type Harness } from '../helpers/rxe-harness.js';
import { makePair, waitCompletions } from '../helpers/pair.js';

const psn = (k: number) => (SQ_PSN + k) & 0xffffff;
const hex = (k: number) => psn(k).toString(16);
const wcs = (h: Harness) => h.poll().map((wc) => [Number(wc.wrId), wc.status]);

test('a READ response past a SEND still waiting for its ACK acknowledges the SEND: both complete, nothing resent', async (t) => {
  const h = await openHarness({ timeout: 0 });
  t.after(() => h.close());
  const m = h.mr(100), d = h.mr(100);
  h.qp.postSend({ wrId: 1, opcode: WrOpcode.SEND, sendFlags: SendFlags.SIGNALED, sgList: [m.sge()] });
  h.qp.postSend({ wrId: 2, opcode: WrOpcode.RDMA_READ, sendFlags: SendFlags.SIGNALED, sgList: [d.sge()], rdma: { remoteAddr: 0x1000, rkey: 0x4242 } });
  assert.deepEqual(h.take().map(describe), [`RC_SEND_ONLY 0x${hex(0)}`, `RC_RDMA_READ_REQUEST 0x${hex(1)}`]);
  // The SEND's ACK was lost, or never asked for (AckReq coalescing).
  h.feed(readResponseOf(h, OpCode.RC_RDMA_READ_RESPONSE_ONLY, psn(1), Buffer.alloc(100, 5)));
  assert.deepEqual(wcs(h), [[1, WcStatus.SUCCESS], [2, WcStatus.SUCCESS]]);
  assert.equal(d.buf.indexOf(5), 0);
  assert.equal(h.rq.counters.retransmits, 0);
});

test('an atomic ACK past a SEND still waiting for its ACK acknowledges the SEND too', async (t) => {
  const h = await openHarness({ timeout: 0 });
  t.after(() => h.close());
  const m = h.mr(100), d = h.mr(8);
  h.qp.postSend({ wrId: 1, opcode: WrOpcode.SEND, sendFlags: SendFlags.SIGNALED, sgList: [m.sge()] });
  h.qp.postSend({ wrId: 2, opcode: WrOpcode.ATOMIC_FETCH_AND_ADD, sendFlags: SendFlags.SIGNALED, sgList: [d.sge()], atomic: { remoteAddr: 0x1000, rkey: 0x4242, compareAdd: 1n } });
  h.take();
  h.feed(packet(h.rq.qpn, OpCode.RC_ATOMIC_ACKNOWLEDGE, psn(1), {
    fill: (b, i) => { aeth.write(b, i.aeth, AethSyndrome.ACK | ACK_SYNDROME_NO_CREDIT_LIMIT, 0); atmack.write(b, i.atmack, 0x1234n); },
  }));
  assert.deepEqual(wcs(h), [[1, WcStatus.SUCCESS], [2, WcStatus.SUCCESS]]);
  assert.equal(d.buf.readBigUInt64LE(0), 0x1234n);
});

test('a READ response past an earlier unanswered READ: the SEND before both completes, the READs go again (implicit NAK)', async (t) => {
  const h = await openHarness({ timeout: 14 });
  t.after(() => h.close());
  fakeTime(t);
  const m = h.mr(100), d = h.mr(200);
  h.qp.postSend({ wrId: 1, opcode: WrOpcode.SEND, sendFlags: SendFlags.SIGNALED, sgList: [m.sge()] });
  h.qp.postSend({ wrId: 2, opcode: WrOpcode.RDMA_READ, sendFlags: SendFlags.SIGNALED, sgList: [d.mr.sge(0, 100)], rdma: { remoteAddr: 0x1000, rkey: 0x4242 } });
  h.qp.postSend({ wrId: 3, opcode: WrOpcode.RDMA_READ, sendFlags: SendFlags.SIGNALED, sgList: [d.mr.sge(100, 100)], rdma: { remoteAddr: 0x1000, rkey: 0x4242 } });
  h.take();
  h.feed(readResponseOf(h, OpCode.RC_RDMA_READ_RESPONSE_ONLY, psn(2), Buffer.alloc(100, 5)));
  assert.deepEqual(wcs(h), [[1, WcStatus.SUCCESS]]);
  assert.deepEqual(h.take().map(describe), [`RC_RDMA_READ_REQUEST 0x${hex(1)}`, `RC_RDMA_READ_REQUEST 0x${hex(2)}`]);
  assert.equal(d.buf.indexOf(5), -1, 'the response was not placed');
});

test('end to end, AckReq coalescing on: a SEND and a READ posted together complete without a timeout', async () => {
  const was = ackCoalescing.on;
  ackCoalescing.on = true;
  const { a, b, close } = await makePair(QpType.RC, { timeout: 14 });
  try {
    const local = Buffer.alloc(8192), remote = Buffer.alloc(8192, 7);
    const lmr = a.pd.regMr(local, Access.LOCAL_WRITE);
    const rmr = b.pd.regMr(remote, Access.LOCAL_WRITE | Access.REMOTE_READ | Access.REMOTE_WRITE);
    b.qp.postRecv({ wrId: 9, sgList: [rmr.sge(4096, 100)] });
    a.qp.postSend({ wrId: 1, opcode: WrOpcode.SEND, sendFlags: SendFlags.SIGNALED, sgList: [lmr.sge(0, 10)] });
    a.qp.postSend({ wrId: 2, opcode: WrOpcode.RDMA_READ, sendFlags: SendFlags.SIGNALED, sgList: [lmr.sge(100, 3000)], rdma: { remoteAddr: rmr.addr, rkey: rmr.rkey } });
    const done = await waitCompletions(a.cq, 2, 3000);
    assert.deepEqual(done.map((w) => [Number(w.wrId), w.status]), [[1, WcStatus.SUCCESS], [2, WcStatus.SUCCESS]]);
    assert.ok(local.subarray(100, 3100).every((x) => x === 7));
    const c = a.ctx.invoke(Obj.QP, RxeMethod.QP_QUERY_COUNTERS, { 0: a.qp.handle })[RxeAttr.COUNTERS] as Record<string, number>;
    assert.deepEqual([c.timeouts, c.retransmits], [0, 0]);
  } finally {
    ackCoalescing.on = was;
    await close();
  }
});

test('an ACK at a READ\'s last PSN is not an implicit NAK (Linux: only one past it): the SEND before completes, the READ is not resent', async (t) => {
  const h = await openHarness({ timeout: 14 });
  t.after(() => h.close());
  fakeTime(t);
  const m = h.mr(100), d = h.mr(3 * MTU);
  h.qp.postSend({ wrId: 1, opcode: WrOpcode.SEND, sendFlags: SendFlags.SIGNALED, sgList: [m.sge()] });
  h.qp.postSend({ wrId: 2, opcode: WrOpcode.RDMA_READ, sendFlags: SendFlags.SIGNALED, sgList: [d.sge()], rdma: { remoteAddr: 0x1000, rkey: 0x4242 } });
  h.take();
  h.feed(ackOf(h, psn(3))); // the READ is PSNs 1..3
  assert.deepEqual(h.take().map(describe), [], 'nothing resent');
  assert.equal(h.rq.counters.retransmits, 0);
  assert.deepEqual(wcs(h), [[1, WcStatus.SUCCESS]]);
  h.feed(readResponseOf(h, OpCode.RC_RDMA_READ_RESPONSE_FIRST, psn(1), Buffer.alloc(MTU, 1)));
  h.feed(readResponseOf(h, OpCode.RC_RDMA_READ_RESPONSE_MIDDLE, psn(2), Buffer.alloc(MTU, 2)));
  h.feed(readResponseOf(h, OpCode.RC_RDMA_READ_RESPONSE_LAST, psn(3), Buffer.alloc(MTU, 3)));
  assert.deepEqual(wcs(h), [[2, WcStatus.SUCCESS]]);
  // One past the READ's last PSN is an implicit NAK, as before.
  h.qp.postSend({ wrId: 3, opcode: WrOpcode.RDMA_READ, sendFlags: SendFlags.SIGNALED, sgList: [d.mr.sge(0, 100)], rdma: { remoteAddr: 0x1000, rkey: 0x4242 } });
  h.qp.postSend({ wrId: 4, opcode: WrOpcode.SEND, sendFlags: SendFlags.SIGNALED, sgList: [m.sge()] });
  h.take();
  h.feed(ackOf(h, psn(5)));
  assert.deepEqual(h.take().map(describe), [`RC_RDMA_READ_REQUEST 0x${hex(4)}`, `RC_SEND_ONLY 0x${hex(5)}`]);
});

test('a READ whose local MR is deregistered between responses fails with LOC_PROT_ERR and places nothing more', async (t) => {
  const h = await openHarness({ timeout: 0 });
  t.after(() => h.close());
  const d = h.mr(3 * MTU, 0);
  h.qp.postSend({ wrId: 1, opcode: WrOpcode.RDMA_READ, sendFlags: SendFlags.SIGNALED, sgList: [d.sge()], rdma: { remoteAddr: 0x1000, rkey: 0x4242 } });
  h.take();
  h.feed(readResponseOf(h, OpCode.RC_RDMA_READ_RESPONSE_FIRST, psn(0), Buffer.alloc(MTU, 1)));
  assert.equal(d.buf[0], 1);
  d.mr.dereg();
  h.feed(readResponseOf(h, OpCode.RC_RDMA_READ_RESPONSE_MIDDLE, psn(1), Buffer.alloc(MTU, 2)));
  assert.deepEqual(wcs(h), [[1, WcStatus.LOC_PROT_ERR]]);
  assert.equal(d.buf.indexOf(2), -1, 'nothing of the MIDDLE landed');
  assert.equal(h.rq.state, QpState.ERR);
});

test('an RNR NAK whose WQE completes during the wait (a reordered ACK): the RNR timer still runs the requester, and what was posted meanwhile leaves', async (t) => {
  const h = await openHarness({ timeout: 14, rnrRetry: 7 });
  t.after(() => h.close());
  const time = fakeTime(t);
  const m1 = h.mr(100), m2 = h.mr(100);
  h.qp.postSend({ wrId: 1, opcode: WrOpcode.SEND, sendFlags: SendFlags.SIGNALED, sgList: [m1.sge()] });
  assert.deepEqual(h.take().map(describe), [`RC_SEND_ONLY 0x${hex(0)}`]);
  h.feed(rnrNakOf(h, psn(0), 14)); // 1.28 ms
  h.feed(ackOf(h, psn(0)));
  assert.deepEqual(wcs(h), [[1, WcStatus.SUCCESS]]);
  h.qp.postSend({ wrId: 2, opcode: WrOpcode.SEND, sendFlags: SendFlags.SIGNALED, sgList: [m2.sge()] });
  assert.deepEqual(h.take().map(describe), [], 'held during the RNR wait');
  time.advance(2);
  assert.deepEqual(h.take().map(describe), [`RC_SEND_ONLY 0x${hex(1)}`]);
  assert.equal(h.rq.req.paused, false);
});

test('a SEND whose MR is deregistered before a packet is resent fails with LOC_PROT_ERR and sends nothing more (copy_data looks the lkey up for every packet)', async (t) => {
  const h = await openHarness({ timeout: 0 });
  t.after(() => h.close());
  const m = h.mr(3 * MTU);
  h.qp.postSend({ wrId: 1, opcode: WrOpcode.SEND, sendFlags: SendFlags.SIGNALED, sgList: [m.sge()] });
  assert.deepEqual(h.take().map(describe), [`RC_SEND_FIRST 0x${hex(0)}`, `RC_SEND_MIDDLE 0x${hex(1)}`, `RC_SEND_LAST 0x${hex(2)}`]);
  m.mr.dereg();
  // The responder lost the MIDDLE: a sequence-error NAK asks for it again.
  h.feed(nakOf(h, psn(0), NakCode.PSN_SEQ_ERROR));
  assert.deepEqual(h.take().map(describe), []);
  assert.deepEqual(wcs(h), [[1, WcStatus.LOC_PROT_ERR]]);
  assert.equal(h.rq.state, QpState.ERR);
});
