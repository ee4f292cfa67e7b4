// Receive WQEs, completions and events against Linux 6.1 rxe: copy_data looks up only the
// SGEs it copies into; a UD or UC receive WQE the message cannot be placed in is
// RESPST_ERR_MALFORMED_WQE (class A: the QP goes to ERR); SQ_DRAINED is raised on every
// completed drain; do_complete and make_send_cqe fill the WC's flags, byte count and source
// QP only on success; rxe_cq_post wakes a solicited-only arm only for a solicited posting.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Access, QpAttr, QpState, QpType, SendFlags, SrqAttr, WcFlags, WcOpcode, WcStatus, WrOpcode, type CQ, type SendWr, type WorkCompletion } from '../../src/index.js';
import { NakCode } from '../../src/providers/rxe/wire/headers.js';
import { OpCode } from '../../src/providers/rxe/wire/opcodes.js';
import { makePair, waitCompletions, waitFor, type Side } from '../helpers/pair.js';
import { MTU, RQ_PSN, SQ_PSN, ackOf, describe, nakOf, openHarness, packet, sendOnlyOf } from '../helpers/rxe-harness.js';

const QKEY = 0x11111111;
const wcs = (list: WorkCompletion[]) => list.map((wc) => [Number(wc.wrId), wc.status]);
const hex = (k: number) => ((RQ_PSN + k) & 0xffffff).toString(16);

/** Send `payload` from a to b's QP (UD: through an AH to it). */
function sendTo(a: Side, b: Side, qpType: number, payload: Buffer, wrId = 100): void {
  const wr: SendWr = { wrId, opcode: WrOpcode.SEND, sendFlags: SendFlags.SIGNALED, sgList: [a.pd.regMr(payload, 0).sge()] };
  if (qpType === QpType.UD) wr.ud = { ah: a.pd.createAh({ grh: { dgid: b.ctx.queryGid(), hopLimit: 64 } }), remoteQpn: b.qp.qpn, remoteQkey: QKEY };
  a.qp.postSend(wr);
}

/** An SGE of `size` bytes whose MR is deregistered already. */
function deadSge(s: Side, size = 256) {
  const mr = s.pd.regMr(Buffer.alloc(size), Access.LOCAL_WRITE);
  const sge = mr.sge();
  mr.dereg();
  return sge;
}

async function collect(cq: CQ, n: number): Promise<WorkCompletion[]> {
  const out: WorkCompletion[] = [];
  await waitFor(`${n} completions`, () => { out.push(...cq.poll(16)); return out.length >= n; });
  return out;
}

// ---- only the SGEs the message reaches are looked up (copy_data) ----

for (const [name, qpType] of [['UD', QpType.UD], ['UC', QpType.UC], ['RC', QpType.RC]] as const) {
  test(`${name}: a receive whose second SGE names a deregistered MR, for a message that fits in the first, succeeds`, async () => {
    const { a, b, close } = await makePair(qpType);
    try {
      const buf = Buffer.alloc(256);
      b.qp.postRecv({ wrId: 1, sgList: [b.pd.regMr(buf, Access.LOCAL_WRITE).sge(), deadSge(b)] });
      sendTo(a, b, qpType, Buffer.from('hello'));
      const [s] = await waitCompletions(a.cq, 1);
      const [r] = await waitCompletions(b.cq, 1);
      assert.deepEqual([s!.status, r!.wrId, r!.status, r!.byteLen], [WcStatus.SUCCESS, 1, WcStatus.SUCCESS, (qpType === QpType.UD ? 40 : 0) + 5]);
      assert.equal(buf.subarray(qpType === QpType.UD ? 40 : 0).subarray(0, 5).toString(), 'hello');
      assert.equal(b.qp.query().qpState, QpState.RTS);
    } finally { await close(); }
  });
}

test('RC: a zero-length SEND into a receive whose only SGE is dead succeeds (copy_data copies nothing, looks nothing up)', async (t) => {
  const h = await openHarness();
  t.after(() => h.close());
  const m = h.mr(64);
  const sge = m.sge();
  m.mr.dereg();
  h.qp.postRecv({ wrId: 3, sgList: [sge] });
  h.feed(sendOnlyOf(h, RQ_PSN, Buffer.alloc(0)));
  assert.deepEqual(h.take().map(describe), [`RC_ACKNOWLEDGE 0x${hex(0)} ACK`]);
  assert.deepEqual(wcs(h.poll()), [[3, WcStatus.SUCCESS]]);
});

test('RC: a multi-packet SEND reaching a dead second SGE only in its LAST packet: the FIRST is placed, the LAST is MALFORMED_WQE', async (t) => {
  const h = await openHarness();
  t.after(() => h.close());
  const m = h.mr(MTU);
  const dead = h.mr(MTU);
  const sge = dead.sge();
  dead.mr.dereg();
  h.qp.postRecv({ wrId: 4, sgList: [m.sge(), sge] });
  h.feed(packet(h.rq.qpn, OpCode.RC_SEND_FIRST, RQ_PSN, { payload: Buffer.alloc(MTU, 0xaa) }));
  assert.deepEqual(h.take().map(describe), []);
  assert.equal(m.buf.indexOf(0), -1, 'the FIRST packet filled the live SGE');
  h.feed(packet(h.rq.qpn, OpCode.RC_SEND_LAST, RQ_PSN + 1, { payload: Buffer.alloc(10, 0xbb), ackReq: true }));
  assert.deepEqual(h.take().map(describe), [`RC_ACKNOWLEDGE 0x${hex(1)} NAK ${NakCode.REMOTE_OPERATIONAL_ERROR}`]);
  assert.deepEqual(wcs(h.poll()), [[4, WcStatus.LOC_QP_OP_ERR]]);
  assert.equal(h.rq.state, QpState.ERR);
});

// ---- UD and UC: a bad receive WQE is class A, the QP goes to ERR ----

for (const [name, qpType] of [['UD', QpType.UD], ['UC', QpType.UC]] as const) {
  test(`${name}: a receive WQE naming a deregistered MR completes with LOC_QP_OP_ERR, the QP goes to ERR and the next receive is flushed`, async () => {
    const { a, b, close } = await makePair(qpType);
    try {
      b.qp.postRecv({ wrId: 1, sgList: [deadSge(b)] });
      b.qp.postRecv({ wrId: 2, sgList: [b.pd.regMr(Buffer.alloc(256), Access.LOCAL_WRITE).sge()] });
      sendTo(a, b, qpType, Buffer.from('hello'));
      const got = await collect(b.cq, 2);
      assert.deepEqual(wcs(got), [[1, WcStatus.LOC_QP_OP_ERR], [2, WcStatus.WR_FLUSH_ERR]]);
      // An error completion carries no byte count, flags or source QP (Linux do_complete).
      assert.deepEqual([got[0]!.byteLen, got[0]!.wcFlags, got[0]!.srcQp], [0, 0, 0]);
      assert.equal(b.qp.query().qpState, QpState.ERR);
    } finally { await close(); }
  });

  test(`${name}: a message longer than its receive WQE completes with LOC_LEN_ERR, the QP goes to ERR and the next receive is flushed`, async () => {
    const { a, b, close } = await makePair(qpType);
    try {
      const room = qpType === QpType.UD ? 40 + 4 : 4;
      b.qp.postRecv({ wrId: 1, sgList: [b.pd.regMr(Buffer.alloc(room), Access.LOCAL_WRITE).sge()] });
      b.qp.postRecv({ wrId: 2, sgList: [b.pd.regMr(Buffer.alloc(256), Access.LOCAL_WRITE).sge()] });
      sendTo(a, b, qpType, Buffer.from('hello, too long'));
      assert.deepEqual(wcs(await collect(b.cq, 2)), [[1, WcStatus.LOC_LEN_ERR], [2, WcStatus.WR_FLUSH_ERR]]);
      assert.equal(b.qp.query().qpState, QpState.ERR);
    } finally { await close(); }
  });
}

// ---- SQ_DRAINED ----

for (const [name, qpType] of [['UD', QpType.UD], ['RC', QpType.RC]] as const) {
  test(`${name}: SQ_DRAINED is raised without EN_SQD_ASYNC_NOTIFY, at once for an empty SQ, once per entry into SQD`, async () => {
    const { a, close } = await makePair(qpType);
    try {
      const events: string[] = [];
      a.ctx.on('async-event', (e: { name: string }) => events.push(e.name));
      a.qp.modify({ qpState: QpState.SQD }, QpAttr.STATE);
      await waitFor('SQ_DRAINED', () => events.length > 0);
      await new Promise((r) => setTimeout(r, 20));
      assert.deepEqual(events, ['SQ_DRAINED']);
      a.qp.modify({ qpState: QpState.RTS }, QpAttr.STATE);
      a.qp.modify({ qpState: QpState.SQD, enSqdAsyncNotify: false }, QpAttr.STATE | QpAttr.EN_SQD_ASYNC_NOTIFY);
      await waitFor('a second SQ_DRAINED', () => events.length > 1);
      await new Promise((r) => setTimeout(r, 20));
      assert.deepEqual(events, ['SQ_DRAINED', 'SQ_DRAINED']);
    } finally { await close(); }
  });
}

test('RC: a drain waiting on a started WQE raises SQ_DRAINED without EN_SQD_ASYNC_NOTIFY when it completes', async (t) => {
  const h = await openHarness();
  t.after(() => h.close());
  const events: string[] = [];
  h.ctx.on('async-event', (e: { name: string }) => events.push(e.name));
  const m = h.mr(16);
  h.qp.postSend({ wrId: 1, opcode: WrOpcode.RDMA_WRITE, sendFlags: SendFlags.SIGNALED, sgList: [m.sge()], rdma: { remoteAddr: 0x1000, rkey: 0x1234 } });
  assert.equal(h.take().length, 1);
  h.qp.modify({ qpState: QpState.SQD }, QpAttr.STATE);
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(events, [], 'the WRITE is still unacknowledged');
  h.feed(ackOf(h, SQ_PSN));
  await waitFor('SQ_DRAINED', () => events.length > 0);
  assert.deepEqual(events, ['SQ_DRAINED']);
  assert.deepEqual(wcs(h.poll()), [[1, WcStatus.SUCCESS]]);
});

// ---- WC fields ----

test('UC: WITH_IMM on successful SEND_WITH_IMM and RDMA_WRITE_WITH_IMM send completions; GRH on the receives, source QP 0', async () => {
  const { a, b, close } = await makePair(QpType.UC);
  try {
    const dst = b.pd.regMr(Buffer.alloc(64), Access.LOCAL_WRITE | Access.REMOTE_WRITE);
    b.qp.postRecv({ wrId: 1, sgList: [dst.sge(0, 32)] });
    b.qp.postRecv({ wrId: 2, sgList: [] });
    b.qp.postRecv({ wrId: 3, sgList: [dst.sge(0, 32)] });
    const src = a.pd.regMr(Buffer.from('abc'), 0);
    a.qp.postSend({ wrId: 11, opcode: WrOpcode.SEND_WITH_IMM, immData: 7, sendFlags: SendFlags.SIGNALED, sgList: [src.sge()] });
    a.qp.postSend({ wrId: 12, opcode: WrOpcode.RDMA_WRITE_WITH_IMM, immData: 8, sendFlags: SendFlags.SIGNALED, sgList: [src.sge()], rdma: { remoteAddr: dst.addr + 32, rkey: dst.rkey } });
    a.qp.postSend({ wrId: 13, opcode: WrOpcode.SEND, sendFlags: SendFlags.SIGNALED, sgList: [src.sge()] });
    const sends = await waitCompletions(a.cq, 3);
    assert.deepEqual(sends.map((wc) => [Number(wc.wrId), wc.status, wc.wcFlags, wc.byteLen]),
      [[11, WcStatus.SUCCESS, WcFlags.WITH_IMM, 3], [12, WcStatus.SUCCESS, WcFlags.WITH_IMM, 3], [13, WcStatus.SUCCESS, 0, 3]]);
    const recvs = await collect(b.cq, 3);
    assert.deepEqual(recvs.map((wc) => [Number(wc.wrId), wc.status, wc.opcode, wc.wcFlags, wc.srcQp]), [
      [1, WcStatus.SUCCESS, WcOpcode.RECV, WcFlags.GRH | WcFlags.WITH_IMM, 0],
      [2, WcStatus.SUCCESS, WcOpcode.RECV_RDMA_WITH_IMM, WcFlags.GRH | WcFlags.WITH_IMM, 0],
      [3, WcStatus.SUCCESS, WcOpcode.RECV, WcFlags.GRH, 0],
    ]);
  } finally { await close(); }
});

test('RC: a failed RDMA_WRITE_WITH_IMM completes with no WITH_IMM flag and no byte count (make_send_cqe fills them only on success)', async (t) => {
  const h = await openHarness();
  t.after(() => h.close());
  const m = h.mr(16);
  h.qp.postSend({ wrId: 1, opcode: WrOpcode.RDMA_WRITE_WITH_IMM, immData: 5, sendFlags: SendFlags.SIGNALED, sgList: [m.sge()], rdma: { remoteAddr: 0x1000, rkey: 0x1234 } });
  h.take();
  h.feed(nakOf(h, SQ_PSN, NakCode.REMOTE_ACCESS_ERROR));
  const [wc] = h.poll();
  assert.deepEqual([Number(wc!.wrId), wc!.status, wc!.wcFlags, wc!.byteLen], [1, WcStatus.REM_ACCESS_ERR, 0, 0]);
});

// ---- a solicited-only arm (rxe_cq_post) ----

test('a CQ armed solicited-only is not woken by an error send completion (the completer posts unsolicited)', async (t) => {
  const h = await openHarness();
  t.after(() => h.close());
  let notified = 0;
  h.rq.sendCq.onNotify = () => { notified++; };
  h.rq.sendCq.reqNotify(true);
  const m = h.mr(16);
  h.qp.postSend({ wrId: 1, opcode: WrOpcode.RDMA_WRITE, sendFlags: SendFlags.SIGNALED, sgList: [m.sge()], rdma: { remoteAddr: 0x1000, rkey: 0x1234 } });
  h.take();
  h.feed(nakOf(h, SQ_PSN, NakCode.REMOTE_ACCESS_ERROR));
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(wcs(h.poll()), [[1, WcStatus.REM_ACCESS_ERR]]);
  assert.equal(notified, 0);
});

test('a CQ armed solicited-only is woken by a receive flush (the responder posts flushes as solicited)', async (t) => {
  const h = await openHarness();
  t.after(() => h.close());
  let notified = 0;
  h.rq.recvCq.onNotify = () => { notified++; };
  h.qp.postRecv({ wrId: 9, sgList: [h.mr(16).sge()] });
  h.rq.recvCq.reqNotify(true);
  h.qp.modify({ qpState: QpState.ERR }, QpAttr.STATE);
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(wcs(h.poll()), [[9, WcStatus.WR_FLUSH_ERR]]);
  assert.equal(notified, 1);
});

// ---- queue sizes (rxe_qp_init_req, rxe_queue_init, rxe_srq_from_init) ----

test('QP queues hold roundup_pow_of_two(n + 1) - 1 entries, a send WQE max(16 * max_send_sge, max_inline_data) bytes, and create and query say so', async () => {
  const { a, close } = await makePair(QpType.RC);
  try {
    const dev = a.ctx.queryDevice();
    const qp = a.pd.createQp({ qpType: QpType.RC, sendCq: a.cq, recvCq: a.cq, cap: { maxSendWr: 4, maxRecvWr: 4, maxSendSge: 4, maxRecvSge: 1, maxInlineData: 0 } });
    const want = { maxSendWr: 7, maxRecvWr: 7, maxSendSge: 4, maxRecvSge: 1, maxInlineData: 64 };
    assert.deepEqual(qp.cap, want);
    assert.deepEqual(qp.query().cap, want);
    qp.modify({ qpState: QpState.INIT, pkeyIndex: 0, portNum: 1, qpAccessFlags: 0 }, QpAttr.STATE | QpAttr.PKEY_INDEX | QpAttr.PORT | QpAttr.ACCESS_FLAGS);
    for (let i = 0; i < 7; i++) qp.postRecv({ wrId: i, sgList: [] });
    assert.throws(() => qp.postRecv({ wrId: 7, sgList: [] }), { code: 'ENOMEM' });
    // Inline data beyond 8 SGEs' worth sizes the SGEs too; never beyond the device's maxima.
    const wide = a.pd.createQp({ qpType: QpType.RC, sendCq: a.cq, recvCq: a.cq, cap: { maxSendWr: dev.maxQpWr, maxRecvWr: 8, maxSendSge: 1, maxInlineData: 200 } });
    assert.deepEqual(wide.cap, { maxSendWr: dev.maxQpWr, maxRecvWr: 15, maxSendSge: 12, maxRecvSge: 1, maxInlineData: 200 });
    const most = a.pd.createQp({ qpType: QpType.RC, sendCq: a.cq, recvCq: a.cq, cap: { maxSendWr: 1, maxRecvWr: 0, maxSendSge: 1, maxInlineData: dev.maxInlineData } });
    assert.equal(most.cap.maxSendSge, dev.maxSge);
    qp.destroy(); wide.destroy(); most.destroy();
  } finally { await close(); }
});

test('an SRQ holds roundup_pow_of_two(max_wr + 1) - 1 receives, query says so, and srq_limit may go up to it', async () => {
  const { a, close } = await makePair(QpType.RC);
  try {
    const srq = a.pd.createSrq({ maxWr: 4, maxSge: 1 });
    assert.equal(srq.query().maxWr, 7);
    for (let i = 0; i < 7; i++) srq.postRecv({ wrId: i, sgList: [] });
    assert.throws(() => srq.postRecv({ wrId: 7, sgList: [] }), { code: 'ENOMEM' });
    srq.modify({ srqLimit: 7 }, SrqAttr.LIMIT);
    assert.throws(() => srq.modify({ srqLimit: 8 }, SrqAttr.LIMIT), { code: 'EINVAL' });
    srq.destroy();
  } finally { await close(); }
});
