// A responder error that sends no NAK (a full receive CQ, class J) first acknowledges the
// messages it executed before that no ACK covers yet. With ACK coalescing (the default) a
// message's last packet asks for an ACK only if it ends its send batch; Linux's requester asks
// on every message end, so there those messages were acknowledged already, and only the failing
// one fails at the sender.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Access, QpState, QpType, SendFlags, WcStatus, WrOpcode } from '../../src/index.js';
import { aeth, ieth } from '../../src/providers/rxe/wire/headers.js';
import { OpCode } from '../../src/providers/rxe/wire/opcodes.js';
import { RQ_PSN, describe, openHarness, packet, readRequestOf, type Harness } from '../helpers/rxe-harness.js';
import { connect, makePair, waitCompletions } from '../helpers/pair.js';

const hex = (k: number) => ((RQ_PSN + k) & 0xffffff).toString(16);
const sendOnly = (h: Harness, k: number, ackReq: boolean) => packet(h.rq.qpn, OpCode.RC_SEND_ONLY, RQ_PSN + k, { payload: Buffer.alloc(8, k), ackReq });
const filler = { wrId: 0, status: 0, opcode: 0, vendorErr: 0, byteLen: 0, qpNum: 0, srcQp: 0, wcFlags: 0, pkeyIndex: 0, slid: 0, sl: 0, dlidPathBits: 0 };

/** `n` receives of 64 bytes each, one after the other in `m`. */
function postReceives(h: Harness, m: { addr: number; mr: { lkey: number } }, n: number): void {
  for (let i = 0; i < n; i++) h.qp.postRecv({ wrId: i, sgList: [{ addr: m.addr + i * 64, length: 64, lkey: m.mr.lkey }] });
}

/** Fill the receive CQ but for `room` entries. */
function leaveRoom(h: Harness, room: number): void {
  const cq = h.rq.recvCq;
  while (cq.count < cq.cqe - room) cq.push({ ...filler }, false);
}

test('receive CQ overflow after messages that did not ask for an ACK: they are acknowledged (PSN and MSN of the last), the overflowing one is not', async (t) => {
  const h = await openHarness();
  t.after(() => h.close());
  const m = h.mr(256);
  postReceives(h, m, 3);
  leaveRoom(h, 2);
  h.feed(sendOnly(h, 0, false));
  h.feed(sendOnly(h, 1, false));
  assert.deepEqual(h.take().map(describe), [], 'coalesced: nothing asked yet');
  h.feed(sendOnly(h, 2, true));
  const sent = h.take();
  assert.deepEqual(sent.map(describe), [`RC_ACKNOWLEDGE 0x${hex(1)} ACK`]);
  assert.equal(aeth.msn(sent[0]!.pkt), 2, 'two messages executed');
  assert.equal(h.rq.state, QpState.ERR);
});

test('receive CQ overflow on a multi-packet SEND: the ACK is for the message before it, not inside it', async (t) => {
  const h = await openHarness();
  t.after(() => h.close());
  const m = h.mr(4096);
  h.qp.postRecv({ wrId: 0, sgList: [{ addr: m.addr, length: 64, lkey: m.mr.lkey }] });
  h.qp.postRecv({ wrId: 1, sgList: [{ addr: m.addr + 1024, length: 2048, lkey: m.mr.lkey }] });
  leaveRoom(h, 1);
  h.feed(sendOnly(h, 0, false));
  h.feed(packet(h.rq.qpn, OpCode.RC_SEND_FIRST, RQ_PSN + 1, { payload: Buffer.alloc(1024, 1) }));
  h.feed(packet(h.rq.qpn, OpCode.RC_SEND_LAST, RQ_PSN + 2, { payload: Buffer.alloc(100, 2), ackReq: true }));
  const sent = h.take();
  assert.deepEqual(sent.map(describe), [`RC_ACKNOWLEDGE 0x${hex(0)} ACK`]);
  assert.equal(aeth.msn(sent[0]!.pkt), 1);
  assert.equal(h.rq.state, QpState.ERR);
});

test('receive CQ overflow with a deferred ACK held: the deferred ACK leaves first, then the one for the messages after it', async (t) => {
  const h = await openHarness({ ackDeferral: true });
  t.after(() => h.close());
  const m = h.mr(256);
  postReceives(h, m, 3);
  leaveRoom(h, 2);
  h.feed(sendOnly(h, 0, true)); // deferred to the end of the poll phase
  h.feed(sendOnly(h, 1, false));
  h.feed(sendOnly(h, 2, true));
  assert.deepEqual(h.take().map(describe), [`RC_ACKNOWLEDGE 0x${hex(0)} ACK`, `RC_ACKNOWLEDGE 0x${hex(1)} ACK`], 'in PSN order');
});

test('receive CQ overflow when everything executed was acknowledged (a read response came after): no extra ACK', async (t) => {
  const h = await openHarness();
  t.after(() => h.close());
  const m = h.mr(256);
  postReceives(h, m, 2);
  leaveRoom(h, 1);
  h.feed(sendOnly(h, 0, false));
  h.feed(readRequestOf(h, RQ_PSN + 1, m.addr, m.rkey, 16));
  assert.deepEqual(h.take().map(describe), [`RC_RDMA_READ_RESPONSE_ONLY 0x${hex(1)} ACK`]);
  h.feed(sendOnly(h, 2, true));
  assert.deepEqual(h.take().map(describe), []);
  assert.equal(h.rq.state, QpState.ERR);
});

test('class J (SEND_WITH_INV of a bad rkey) that did not ask for an ACK: the message before it is acknowledged', async (t) => {
  const h = await openHarness();
  t.after(() => h.close());
  const m = h.mr(256);
  postReceives(h, m, 2);
  h.feed(sendOnly(h, 0, false));
  h.feed(packet(h.rq.qpn, OpCode.RC_SEND_ONLY_WITH_INVALIDATE, RQ_PSN + 1, { payload: Buffer.alloc(10, 1), fill: (b, i) => ieth.write(b, i.ieth, m.rkey) }));
  const sent = h.take();
  assert.deepEqual(sent.map(describe), [`RC_ACKNOWLEDGE 0x${hex(0)} ACK`]);
  assert.equal(aeth.msn(sent[0]!.pkt), 1);
  assert.deepEqual(h.poll().map((wc) => [Number(wc.wrId), wc.status]), [[0, WcStatus.SUCCESS], [1, WcStatus.REM_INV_REQ_ERR]]);
  assert.equal(h.rq.state, QpState.ERR);
});

test('end to end, ACK coalescing on: a burst overflowing the receiver\'s CQ fails only the overflowing SEND at the sender', async () => {
  const { a, b, close } = await makePair(QpType.RC);
  try {
    const bmr = b.pd.regMr(Buffer.alloc(4096), Access.LOCAL_WRITE);
    const amr = a.pd.regMr(Buffer.alloc(64, 7), Access.LOCAL_WRITE);
    const cqb = b.ctx.createCq(2);
    const n = cqb.cqe + 1;
    const qb = b.pd.createQp({ qpType: QpType.RC, sendCq: cqb, recvCq: cqb, cap: { maxSendWr: 4, maxRecvWr: n + 1 } });
    const qa = a.pd.createQp({ qpType: QpType.RC, sendCq: a.cq, recvCq: a.cq, cap: { maxSendWr: n + 1, maxRecvWr: 4 } });
    // One retry, 67 ms apart (timeout 14): the ACK beats the retries out even on a loaded machine.
    connect(qa, { qpn: qb.qpn, gid: b.ctx.queryGid() }, { psn: 1, remotePsn: 2, retryCnt: 1, timeout: 14 });
    connect(qb, { qpn: qa.qpn, gid: a.ctx.queryGid() }, { psn: 2, remotePsn: 1 });
    for (let i = 0; i < n; i++) qb.postRecv({ wrId: i, sgList: [bmr.sge(i * 64, 64)] });
    for (let i = 0; i < n; i++) qa.postSend({ wrId: i, opcode: WrOpcode.SEND, sendFlags: SendFlags.SIGNALED, sgList: [amr.sge(0, 8)] });
    const got = (await waitCompletions(a.cq, n)).map((wc) => [Number(wc.wrId), wc.status]);
    const want = Array.from({ length: n }, (_, i) => [i, i < n - 1 ? WcStatus.SUCCESS : WcStatus.RETRY_EXC_ERR]);
    assert.deepEqual(got, want, 'the messages the receiver completed succeed at the sender');
    assert.deepEqual(cqb.poll(n).map((wc) => [Number(wc.wrId), wc.status]), want.slice(0, n - 1).map(([i]) => [i, WcStatus.SUCCESS]));
  } finally { await close(); }
});
