// The responder against Linux rxe_resp.c, packet by packet (test/helpers/rxe-harness.ts):
// rkeys and lkeys looked up for every packet (check_rkey, copy_data), the PSN a duplicate is
// acknowledged with (duplicate_request's ack_psn), SEND with Invalidate of a bad rkey (class J),
// the receive status of a WRITE_WITH_IMM access error, the order of an atomic's checks, and
// rxe_resp_check_length.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Access, QpState, QpType, WcStatus, WrOpcode, connectQp, gidFromAddress, incRkey } from '../../src/index.js';
import { NakCode, atmeth, ieth, immdt, parsePacket, reth } from '../../src/providers/rxe/wire/headers.js';
import { OpCode } from '../../src/providers/rxe/wire/opcodes.js';
import { onRequest } from '../../src/providers/rxe/responder.js';
import { MTU, PEER, PEER_QPN, RQ_PSN, describe, openHarness, packet, readRequestOf, sendOnlyOf, type Harness } from '../helpers/rxe-harness.js';

const hex = (k: number) => ((RQ_PSN + k) & 0xffffff).toString(16);
const wcs = (h: Harness) => h.poll().map((wc) => [Number(wc.wrId), wc.status]);
const writeFirst = (h: Harness, k: number, va: number, rkey: number, len: number, payload: Buffer) =>
  packet(h.rq.qpn, OpCode.RC_RDMA_WRITE_FIRST, RQ_PSN + k, { payload, fill: (b, i) => reth.write(b, i.reth, va, rkey, len) });

// ---- rkeys and lkeys, every packet (Linux check_rkey, copy_data) ----

test('a WRITE whose MR is deregistered after its FIRST packet: the LAST is NAKed as a remote access error and writes nothing', async (t) => {
  const h = await openHarness();
  t.after(() => h.close());
  const dst = h.mr(2 * MTU, 0);
  h.feed(writeFirst(h, 0, dst.addr, dst.rkey, 2 * MTU, Buffer.alloc(MTU, 0xaa)));
  assert.deepEqual(h.take().map(describe), []);
  dst.mr.dereg();
  h.feed(packet(h.rq.qpn, OpCode.RC_RDMA_WRITE_LAST, RQ_PSN + 1, { payload: Buffer.alloc(MTU, 0xbb), ackReq: true }));
  assert.deepEqual(h.take().map(describe), [`RC_ACKNOWLEDGE 0x${hex(1)} NAK ${NakCode.REMOTE_ACCESS_ERROR}`]);
  assert.equal(dst.buf.indexOf(0xbb), -1, 'no byte of the LAST packet landed in the deregistered memory');
  assert.equal(h.rq.state, QpState.ERR);
});

test('a WRITE whose MR is re-registered (new keys) after its FIRST packet: the MIDDLE is NAKed as a remote access error', async (t) => {
  const h = await openHarness();
  t.after(() => h.close());
  const dst = h.mr(3 * MTU, 0);
  h.feed(writeFirst(h, 0, dst.addr, dst.rkey, 3 * MTU, Buffer.alloc(MTU, 0xaa)));
  dst.mr.rereg({ access: Access.LOCAL_WRITE | Access.REMOTE_WRITE });
  h.feed(packet(h.rq.qpn, OpCode.RC_RDMA_WRITE_MIDDLE, RQ_PSN + 1, { payload: Buffer.alloc(MTU, 0xbb), ackReq: true }));
  assert.deepEqual(h.take().map(describe), [`RC_ACKNOWLEDGE 0x${hex(1)} NAK ${NakCode.REMOTE_ACCESS_ERROR}`]);
  assert.equal(dst.buf.indexOf(0xbb), -1);
});

test('a WRITE through a type 2 window invalidated after its FIRST packet: the LAST is NAKed as a remote access error', async (t) => {
  const h = await openHarness();
  t.after(() => h.close());
  const buf = Buffer.alloc(4 * MTU);
  const mr = h.pd.regMr(buf, Access.LOCAL_WRITE | Access.MW_BIND);
  const mw = h.pd.allocMw(2);
  const rkey = incRkey(mw.rkey);
  h.qp.postSend({ wrId: 1, opcode: WrOpcode.BIND_MW, bindMw: { mw, rkey, bindInfo: { mr, addr: mr.addr, length: 2 * MTU, mwAccessFlags: Access.REMOTE_WRITE } } });
  h.feed(writeFirst(h, 0, mr.addr, rkey, 2 * MTU, Buffer.alloc(MTU, 0xaa)));
  assert.equal(buf[0], 0xaa, 'the FIRST went through the window');
  h.qp.postSend({ wrId: 2, opcode: WrOpcode.LOCAL_INV, invalidateRkey: rkey });
  h.feed(packet(h.rq.qpn, OpCode.RC_RDMA_WRITE_LAST, RQ_PSN + 1, { payload: Buffer.alloc(MTU, 0xbb), ackReq: true }));
  assert.deepEqual(h.take().map(describe), [`RC_ACKNOWLEDGE 0x${hex(1)} NAK ${NakCode.REMOTE_ACCESS_ERROR}`]);
  assert.equal(buf.indexOf(0xbb), -1);
});

test('a SEND whose receive MR is deregistered after its FIRST packet: MALFORMED_WQE, NAK remote operational error, LOC_QP_OP_ERR, nothing written', async (t) => {
  const h = await openHarness();
  t.after(() => h.close());
  const m = h.mr(4 * MTU, 0);
  h.qp.postRecv({ wrId: 7, sgList: [m.sge()] });
  h.feed(packet(h.rq.qpn, OpCode.RC_SEND_FIRST, RQ_PSN, { payload: Buffer.alloc(MTU, 0xaa) }));
  m.mr.dereg();
  h.feed(packet(h.rq.qpn, OpCode.RC_SEND_LAST, RQ_PSN + 1, { payload: Buffer.alloc(100, 0xbb), ackReq: true }));
  assert.deepEqual(h.take().map(describe), [`RC_ACKNOWLEDGE 0x${hex(1)} NAK ${NakCode.REMOTE_OPERATIONAL_ERROR}`]);
  assert.deepEqual(wcs(h), [[7, WcStatus.LOC_QP_OP_ERR]]);
  assert.equal(m.buf.indexOf(0xbb), -1);
  assert.equal(h.rq.state, QpState.ERR);
});

// ---- duplicates ----

test('a duplicate SEND after a READ is acknowledged at the SEND, not at the READ\'s last PSN (Linux ack_psn - 1)', async (t) => {
  const h = await openHarness();
  t.after(() => h.close());
  const m = h.mr(100);
  h.qp.postRecv({ wrId: 1, sgList: [m.sge()] });
  const src = h.mr(3000);
  const send = sendOnlyOf(h, RQ_PSN, Buffer.alloc(10));
  h.feed(send);
  h.feed(readRequestOf(h, RQ_PSN + 1, src.addr, src.rkey, 3000)); // PSNs 1..3
  h.feed(readRequestOf(h, RQ_PSN + 4, src.addr, src.rkey, 100)); // and a second READ, PSN 4
  h.take();
  h.feed(send);
  assert.deepEqual(h.take().map(describe), [`RC_ACKNOWLEDGE 0x${hex(0)} ACK`]);
  // A WRITE after the READs moves it on.
  h.feed(packet(h.rq.qpn, OpCode.RC_RDMA_WRITE_ONLY, RQ_PSN + 5, { payload: Buffer.alloc(8), ackReq: true, fill: (b, i) => reth.write(b, i.reth, src.addr, src.rkey, 8) }));
  h.take();
  h.feed(send);
  assert.deepEqual(h.take().map(describe), [`RC_ACKNOWLEDGE 0x${hex(5)} ACK`]);
});

// ---- SEND with Invalidate, WRITE with immediate ----

test('SEND_WITH_INV naming an rkey that cannot be invalidated: class J, the receive fails with REM_INV_REQ_ERR, the QP errs, the requester gets an ACK', async (t) => {
  const h = await openHarness();
  t.after(() => h.close());
  const m = h.mr(100);
  h.qp.postRecv({ wrId: 3, sgList: [m.sge()] });
  h.feed(packet(h.rq.qpn, OpCode.RC_SEND_ONLY_WITH_INVALIDATE, RQ_PSN, { payload: Buffer.alloc(10, 1), ackReq: true, fill: (b, i) => ieth.write(b, i.ieth, m.rkey) }));
  assert.deepEqual(h.take().map(describe), [`RC_ACKNOWLEDGE 0x${hex(0)} ACK`], 'an ACK, no NAK');
  assert.deepEqual(wcs(h), [[3, WcStatus.REM_INV_REQ_ERR]]);
  assert.equal(h.rq.state, QpState.ERR);
});

test('WRITE_WITH_IMM with a bad rkey: NAK remote access error, the receive it took fails with REM_ACCESS_ERR', async (t) => {
  const h = await openHarness();
  t.after(() => h.close());
  const m = h.mr(100);
  h.qp.postRecv({ wrId: 5, sgList: [m.sge()] });
  h.feed(packet(h.rq.qpn, OpCode.RC_RDMA_WRITE_ONLY_WITH_IMMEDIATE, RQ_PSN, {
    payload: Buffer.alloc(8), ackReq: true,
    fill: (b, i) => { reth.write(b, i.reth, m.addr, m.rkey ^ 0x55, 8); immdt.write(b, i.immdt, 1); },
  }));
  assert.deepEqual(h.take().map(describe), [`RC_ACKNOWLEDGE 0x${hex(0)} NAK ${NakCode.REMOTE_ACCESS_ERROR}`]);
  assert.deepEqual(wcs(h), [[5, WcStatus.REM_ACCESS_ERR]]);
});

// ---- atomics: the rkey first, the alignment after ----

const fetchAdd = (h: Harness, va: number | bigint, rkey: number) =>
  packet(h.rq.qpn, OpCode.RC_FETCH_ADD, RQ_PSN, { ackReq: true, fill: (b, i) => atmeth.write(b, i.atmeth, va, rkey, 1n, 0n) });

test('atomics: a VA at or above 2^53 is a remote access error, a bad key before a misaligned VA too, a good key at a misaligned VA an invalid request', async () => {
  const cases: [string, (h: Harness, m: { addr: number; rkey: number }) => Buffer, number][] = [
    ['VA 0xffff888000000000 (aligned)', (h, m) => fetchAdd(h, 0xffff888000000000n, m.rkey), NakCode.REMOTE_ACCESS_ERROR],
    ['VA 0xffff888000000004 (misaligned)', (h, m) => fetchAdd(h, 0xffff888000000004n, m.rkey), NakCode.REMOTE_ACCESS_ERROR],
    ['a bad rkey at a misaligned VA', (h, m) => fetchAdd(h, m.addr + 4, m.rkey ^ 0x55), NakCode.REMOTE_ACCESS_ERROR],
    ['a good rkey at a misaligned VA', (h, m) => fetchAdd(h, m.addr + 4, m.rkey), NakCode.INVALID_REQUEST],
  ];
  for (const [what, build, code] of cases) {
    const h = await openHarness();
    try {
      const m = h.mr(64, 0);
      h.feed(build(h, m));
      assert.deepEqual(h.take().map(describe), [`RC_ACKNOWLEDGE 0x${hex(0)} NAK ${code}`], what);
      assert.equal(m.buf.readBigUInt64LE(0), 0n, what);
    } finally { await h.close(); }
  }
  // An aligned one still works.
  const h = await openHarness();
  try {
    const m = h.mr(64, 0);
    h.feed(fetchAdd(h, m.addr + 8, m.rkey));
    assert.deepEqual(h.take().map(describe), [`RC_ATOMIC_ACKNOWLEDGE 0x${hex(0)} ACK`]);
    assert.equal(m.buf.readBigUInt64LE(8), 1n);
  } finally { await h.close(); }
});

// ---- rxe_resp_check_length ----

test('RC lengths (rxe_resp_check_length): an ONLY above the MTU, a LAST of 0 bytes or above the MTU are NAKed as invalid requests', async () => {
  const cases: [string, (h: Harness, m: { addr: number; rkey: number }) => Buffer[], number, boolean][] = [
    ['SEND_ONLY of 3 MTUs', (h) => [packet(h.rq.qpn, OpCode.RC_SEND_ONLY, RQ_PSN, { payload: Buffer.alloc(3 * MTU, 0xbb), ackReq: true })], 0, true],
    ['SEND_LAST of 0 bytes', (h) => [
      packet(h.rq.qpn, OpCode.RC_SEND_FIRST, RQ_PSN, { payload: Buffer.alloc(MTU, 0xaa) }),
      packet(h.rq.qpn, OpCode.RC_SEND_LAST, RQ_PSN + 1, { payload: Buffer.alloc(0), ackReq: true }),
    ], 1, true],
    ['SEND_LAST of 2 MTUs', (h) => [
      packet(h.rq.qpn, OpCode.RC_SEND_FIRST, RQ_PSN, { payload: Buffer.alloc(MTU, 0xaa) }),
      packet(h.rq.qpn, OpCode.RC_SEND_LAST, RQ_PSN + 1, { payload: Buffer.alloc(2 * MTU, 0xbb), ackReq: true }),
    ], 1, true],
    ['WRITE_ONLY of 2 MTUs', (h, m) => [
      packet(h.rq.qpn, OpCode.RC_RDMA_WRITE_ONLY, RQ_PSN, { payload: Buffer.alloc(2 * MTU, 0xbb), ackReq: true, fill: (b, i) => reth.write(b, i.reth, m.addr, m.rkey, 2 * MTU) }),
    ], 0, false],
    ['WRITE_LAST of 2 MTUs', (h, m) => [
      writeFirst(h, 0, m.addr, m.rkey, 3 * MTU, Buffer.alloc(MTU, 0xaa)),
      packet(h.rq.qpn, OpCode.RC_RDMA_WRITE_LAST, RQ_PSN + 1, { payload: Buffer.alloc(2 * MTU, 0xbb), ackReq: true }),
    ], 1, false],
  ];
  for (const [what, build, at, recv] of cases) {
    const h = await openHarness();
    try {
      const m = h.mr(4 * MTU, 0);
      if (recv) h.qp.postRecv({ wrId: 6, sgList: [m.sge()] });
      for (const p of build(h, m)) h.feed(p);
      assert.deepEqual(h.take().map(describe), [`RC_ACKNOWLEDGE 0x${hex(at)} NAK ${NakCode.INVALID_REQUEST}`], what);
      assert.deepEqual(wcs(h), recv ? [[6, WcStatus.REM_INV_REQ_ERR]] : [], what);
      assert.equal(m.buf.indexOf(0xbb), -1, `${what}: nothing of it written`);
      assert.equal(h.rq.state, QpState.ERR, what);
    } finally { await h.close(); }
  }
});

test('UC lengths: an ONLY above the MTU and a LAST of 0 bytes are dropped; the next message completes the receive', async (t) => {
  const h = await openHarness();
  t.after(() => h.close());
  const qp = h.pd.createQp({ qpType: QpType.UC, sendCq: h.cq, recvCq: h.cq, cap: { maxSendWr: 4, maxRecvWr: 4, maxSendSge: 1, maxRecvSge: 1 } });
  connectQp(qp, { qpn: PEER_QPN, gid: gidFromAddress(PEER), psn: RQ_PSN }, { psn: 0, mtu: 3 });
  const rq = h.rxe.qps.get(qp.qpn)!;
  const m = h.mr(8192, 0);
  qp.postRecv({ wrId: 1, sgList: [m.sge()] });
  const feed = (op: number, k: number, payload: Buffer) => {
    const p = parsePacket(packet(qp.qpn, op, (RQ_PSN + k) & 0xffffff, { payload }));
    if (typeof p === 'string') throw new Error(p);
    onRequest(rq, p, PEER);
  };
  const drops = h.rxe.counters.malformed_drops;
  feed(OpCode.UC_SEND_ONLY, 0, Buffer.alloc(3 * MTU, 0xbb));
  feed(OpCode.UC_SEND_FIRST, 1, Buffer.alloc(MTU, 0xaa));
  feed(OpCode.UC_SEND_LAST, 2, Buffer.alloc(0));
  assert.deepEqual(h.poll(), [], 'nothing completed');
  assert.equal(h.rxe.counters.malformed_drops - drops, 2);
  assert.equal(m.buf.indexOf(0xbb), -1);
  feed(OpCode.UC_SEND_ONLY, 3, Buffer.alloc(10, 0xcc));
  assert.deepEqual(h.poll().map((wc) => [Number(wc.wrId), wc.status, wc.byteLen]), [[1, WcStatus.SUCCESS, 10]]);
  assert.equal(m.buf[0], 0xcc);
  assert.equal(rq.state, QpState.RTS);
});

// ---- a full receive CQ (rxe_cq_post -EBUSY, do_complete's RESPST_ERR_CQ_OVERFLOW) ----

test('a SEND whose completion finds the receive CQ full: no ACK, the QP goes to ERR (the message is not reported as delivered)', async (t) => {
  const h = await openHarness();
  t.after(() => h.close());
  const m = h.mr(100);
  h.qp.postRecv({ wrId: 1, sgList: [m.sge()] });
  const cq = h.rq.recvCq;
  const filler = { wrId: 0, status: 0, opcode: 0, vendorErr: 0, byteLen: 0, qpNum: 0, srcQp: 0, wcFlags: 0, pkeyIndex: 0, slid: 0, sl: 0, dlidPathBits: 0 };
  while (cq.count < cq.cqe) cq.push({ ...filler }, false);
  h.feed(sendOnlyOf(h, RQ_PSN, Buffer.alloc(10, 9)));
  assert.deepEqual(h.take().map(describe), []);
  assert.equal(h.rq.state, QpState.ERR);
});

test('a CQ armed for the next completion stays so when solicited-only is asked after (rxe_req_notify_cq)', async (t) => {
  const h = await openHarness();
  t.after(() => h.close());
  const cq = h.rq.recvCq;
  let notified = 0;
  cq.onNotify = () => { notified++; };
  cq.reqNotify(false);
  cq.reqNotify(true);
  cq.push({ wrId: 0, status: WcStatus.SUCCESS, opcode: 0, vendorErr: 0, byteLen: 0, qpNum: 0, srcQp: 0, wcFlags: 0, pkeyIndex: 0, slid: 0, sl: 0, dlidPathBits: 0 }, false);
  await new Promise((r) => setImmediate(r));
  assert.equal(notified, 1);
});
