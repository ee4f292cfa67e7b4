// When ACKs leave and how many (issue 18 §3): an ACK leaves before the consumer's completion
// callback runs, a WRITE and a SEND posted together draw one ACK, and a lone message is still
// ACKed at once (no retransmission).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Access, QpType, SendFlags, WcOpcode, WcStatus, WrOpcode, queryRxeCounters, rxeOf, type WorkCompletion } from '../../src/index.js';
import { connect, makePair, twoDevices, waitCompletions } from '../helpers/pair.js';
import { ackCoalescing } from '../../src/providers/rxe/requester.js';
import { ackDeferral } from '../../src/providers/rxe/responder.js';
import { mmsgAvailable } from '../../src/providers/rxe/mmsg-receiver.js';
import { OpCode } from '../../src/providers/rxe/wire/opcodes.js';

/** A long retransmit timeout (4.096 us x 2^20, ~4.3 s): any retransmission is a failure here, never a rescue. */
const SLOW_RTO = { timeout: 20 };

/** The responder's ACK deferral (responder.ts, ackDeferral; on by default) set for fn. */
function withDeferral(on: boolean, fn: () => Promise<void>): () => Promise<void> {
  return async () => {
    const was = ackDeferral.on;
    ackDeferral.on = on;
    try { await fn(); } finally { ackDeferral.on = was; }
  };
}
const withoutDeferral = (fn: () => Promise<void>) => withDeferral(false, fn);

/** AckReq coalescing (requester.ts, ackCoalescing; on by default) set for fn. */
function withCoalescing(fn: () => Promise<void>, on = true): () => Promise<void> {
  return async () => {
    const was = ackCoalescing.on;
    ackCoalescing.on = on;
    try { await fn(); } finally { ackCoalescing.on = was; }
  };
}

test('a WRITE and a SEND posted together draw one ACK, and both complete (AckReq coalescing on)', withCoalescing(async () => {
  const { a, b, close } = await makePair(QpType.RC, SLOW_RTO);
  try {
    const src = Buffer.from('0123456789abcdef'.repeat(4));
    const rbuf = Buffer.alloc(4096);
    const smr = a.pd.regMr(src, 0);
    const rmr = b.pd.regMr(rbuf, Access.LOCAL_WRITE | Access.REMOTE_WRITE);
    b.qp.postRecv({ wrId: 9, sgList: [rmr.sge(1024, 1024)] });
    // SMC-R's pattern: the data as an RDMA WRITE into the peer's buffer, then the 44-byte CDC SEND.
    a.qp.postSend({ wrId: 1, opcode: WrOpcode.RDMA_WRITE, sendFlags: SendFlags.SIGNALED, sgList: [smr.sge(0, 14)], rdma: { remoteAddr: rmr.addr, rkey: rmr.rkey } });
    a.qp.postSend({ wrId: 2, opcode: WrOpcode.SEND, sendFlags: SendFlags.SIGNALED | SendFlags.INLINE, sgList: [smr.sge(0, 44)] });
    const sent = await waitCompletions(a.cq, 2);
    assert.deepEqual(sent.map((c) => [c.wrId, c.status, c.opcode]), [[1, WcStatus.SUCCESS, WcOpcode.RDMA_WRITE], [2, WcStatus.SUCCESS, WcOpcode.SEND]]);
    const [recv] = await waitCompletions(b.cq, 1);
    assert.deepEqual([recv!.wrId, recv!.status, recv!.byteLen], [9, WcStatus.SUCCESS, 44]);
    assert.ok(rbuf.subarray(0, 14).equals(src.subarray(0, 14)));
    const ca = queryRxeCounters(a.ctx, a.qp), cb = queryRxeCounters(b.ctx, b.qp);
    assert.equal(cb.qp.acks_sent, 1, `responder ACKs: ${JSON.stringify(cb.qp)}`);
    assert.equal(ca.qp.acks_rcvd, 1);
    assert.equal(ca.device.ack_req_coalesced, 1, 'the WRITE went without AckReq');
    assert.deepEqual([ca.qp.retransmits, ca.qp.timeouts], [0, 0]);
  } finally {
    await close();
  }
}));

test('a burst of SENDs draws one ACK for its last message; a later lone SEND is still ACKed (AckReq coalescing on)', withCoalescing(async () => {
  const { a, b, close } = await makePair(QpType.RC, SLOW_RTO);
  try {
    const src = Buffer.alloc(64, 7);
    const smr = a.pd.regMr(src, 0);
    const rmr = b.pd.regMr(Buffer.alloc(64 * 16), Access.LOCAL_WRITE);
    for (let i = 0; i < 11; i++) b.qp.postRecv({ wrId: i, sgList: [rmr.sge(64 * i, 64)] });
    for (let i = 0; i < 10; i++) a.qp.postSend({ wrId: i, opcode: WrOpcode.SEND, sendFlags: SendFlags.SIGNALED, sgList: [smr.sge()] });
    const burst = await waitCompletions(a.cq, 10);
    assert.deepEqual(burst.map((c) => c.status), Array(10).fill(WcStatus.SUCCESS));
    assert.deepEqual(burst.map((c) => c.wrId), [...Array(10).keys()]);
    assert.equal(queryRxeCounters(b.ctx, b.qp).qp.acks_sent, 1);
    a.qp.postSend({ wrId: 10, opcode: WrOpcode.SEND, sendFlags: SendFlags.SIGNALED, sgList: [smr.sge()] });
    const [lone] = await waitCompletions(a.cq, 1);
    assert.equal(lone!.status, WcStatus.SUCCESS);
    await waitCompletions(b.cq, 11);
    const ca = queryRxeCounters(a.ctx, a.qp);
    assert.equal(queryRxeCounters(b.ctx, b.qp).qp.acks_sent, 2);
    assert.deepEqual([ca.qp.acks_rcvd, ca.qp.retransmits, ca.qp.timeouts], [2, 0, 0]);
  } finally {
    await close();
  }
}));

test('a lone SEND is ACKed at once: no retransmission, no timeout (both settings)', async () => {
  for (const on of [false, true]) await withCoalescing(loneSend, on)();
});

test('with coalescing off (SOFTRDMA_RXE_ACK_COALESCE=0) a WRITE and a SEND posted together each ask for an ACK, as Linux rxe (responder deferral off: one ACK each)', withCoalescing(withoutDeferral(async () => {
  const { a, b, close } = await makePair(QpType.RC, SLOW_RTO);
  try {
    const smr = a.pd.regMr(Buffer.alloc(64, 1), 0);
    const rmr = b.pd.regMr(Buffer.alloc(4096), Access.LOCAL_WRITE | Access.REMOTE_WRITE);
    b.qp.postRecv({ wrId: 9, sgList: [rmr.sge(1024, 1024)] });
    a.qp.postSend({ wrId: 1, opcode: WrOpcode.RDMA_WRITE, sendFlags: SendFlags.SIGNALED, sgList: [smr.sge(0, 14)], rdma: { remoteAddr: rmr.addr, rkey: rmr.rkey } });
    a.qp.postSend({ wrId: 2, opcode: WrOpcode.SEND, sendFlags: SendFlags.SIGNALED, sgList: [smr.sge(0, 44)] });
    assert.deepEqual((await waitCompletions(a.cq, 2)).map((c) => c.status), [WcStatus.SUCCESS, WcStatus.SUCCESS]);
    await waitCompletions(b.cq, 1);
    assert.equal(queryRxeCounters(b.ctx, b.qp).qp.acks_sent, 2);
    assert.equal(queryRxeCounters(a.ctx, a.qp).device.ack_req_coalesced, 0);
  } finally {
    await close();
  }
}), false));

async function loneSend(): Promise<void> {
  const { a, b, close } = await makePair(QpType.RC, SLOW_RTO);
  try {
    const smr = a.pd.regMr(Buffer.from('ping'), 0);
    const rmr = b.pd.regMr(Buffer.alloc(16), Access.LOCAL_WRITE);
    b.qp.postRecv({ wrId: 1, sgList: [rmr.sge()] });
    const t0 = performance.now();
    a.qp.postSend({ wrId: 1, opcode: WrOpcode.SEND, sendFlags: SendFlags.SIGNALED, sgList: [smr.sge()] });
    const [wc] = await waitCompletions(a.cq, 1);
    const ms = performance.now() - t0;
    assert.equal(wc!.status, WcStatus.SUCCESS);
    const ca = queryRxeCounters(a.ctx, a.qp);
    assert.deepEqual([ca.qp.acks_rcvd, ca.qp.retransmits, ca.qp.timeouts], [1, 0, 0]);
    assert.equal(queryRxeCounters(b.ctx, b.qp).qp.acks_sent, 1);
    // Not a timing assertion: a retransmission would have taken the ~4.3 s timeout.
    assert.ok(ms < 4000, `completed after ${ms.toFixed(0)} ms`);
  } finally {
    await close();
  }
}

/**
 * Two connected RC QPs on two devices; b takes completions as SMC-R does, through an armed
 * completion channel.
 */
async function channelPair() {
  const { a: da, b: db, close } = await twoDevices();
  const ca = da.open(), cb = db.open();
  const pa = ca.allocPd(), pb = cb.allocPd();
  const cqa = ca.createCq(64);
  const channel = cb.createCompChannel();
  const cqb = cb.createCq(64, { channel });
  const cap = { maxSendWr: 16, maxRecvWr: 16, maxSendSge: 1, maxRecvSge: 1 };
  const qa = pa.createQp({ qpType: QpType.RC, sendCq: cqa, recvCq: cqa, cap });
  const qb = pb.createQp({ qpType: QpType.RC, sendCq: cqb, recvCq: cqb, cap });
  connect(qa, { qpn: qb.qpn, gid: cb.queryGid() }, { ...SLOW_RTO, psn: 1, remotePsn: 2 });
  connect(qb, { qpn: qa.qpn, gid: ca.queryGid() }, { ...SLOW_RTO, psn: 2, remotePsn: 1 });
  return { da, db, ca, cb, pa, pb, cqa, cqb, qa, qb, channel, close };
}

test("without deferral the responder's ACK leaves before the consumer's completion callback runs", withoutDeferral(async () => {
  const { db, cb, pa, pb, cqa, cqb, qa, qb, channel, close } = await channelPair();
  try {
    const smr = pa.regMr(Buffer.from('request'), 0);
    const rmr = pb.regMr(Buffer.alloc(64), Access.LOCAL_WRITE);
    qb.postRecv({ wrId: 5, sgList: [rmr.sge()] });
    const link = rxeOf(db).link;
    const seen = new Promise<{ wc: WorkCompletion; queued: number; acks: number; sent: number }>((resolve) => {
      channel.onCqEvent((cq) => {
        const [wc] = cq.poll(1);
        // Inside the consumer's callback: the ACK for this SEND has been handed to a socket.
        resolve({ wc: wc!, queued: link.queued, acks: queryRxeCounters(cb, qb).qp.acks_sent!, sent: rxeOf(db).counters.sent_pkts });
      });
    });
    cqb.reqNotify();
    qa.postSend({ wrId: 1, opcode: WrOpcode.SEND, sendFlags: SendFlags.SIGNALED, sgList: [smr.sge()] });
    const got = await seen;
    assert.deepEqual([got.wc.wrId, got.wc.status], [5, WcStatus.SUCCESS]);
    assert.equal(got.acks, 1);
    assert.equal(got.queued, 0, 'the ACK was still queued behind the consumer');
    assert.equal(got.sent, 1);
    const [wc] = await waitCompletions(cqa, 1);
    assert.equal(wc!.status, WcStatus.SUCCESS);
  } finally {
    await close();
  }
}));

test("deferred (the default): the consumer's answer leaves before the ACK, and a WRITE and a SEND draw one ACK", withDeferral(true, async () => {
  const { db, ca, cb, pa, pb, cqa, cqb, qa, qb, channel, close } = await channelPair();
  try {
    const src = pa.regMr(Buffer.from('request'.repeat(4)), 0);
    const wbuf = pb.regMr(Buffer.alloc(64), Access.LOCAL_WRITE | Access.REMOTE_WRITE);
    const rmr = pb.regMr(Buffer.alloc(64), Access.LOCAL_WRITE);
    const answer = pb.regMr(Buffer.from('answer'), 0);
    const amr = pa.regMr(Buffer.alloc(64), Access.LOCAL_WRITE);
    qb.postRecv({ wrId: 5, sgList: [rmr.sge()] });
    qa.postRecv({ wrId: 6, sgList: [amr.sge()] });
    // The opcodes b's link sends, in order.
    const link = rxeOf(db).link;
    const order: number[] = [];
    const sendv = link.sendv.bind(link);
    link.sendv = (parts, ...rest) => { order.push(parts[0]![0]!); sendv(parts, ...rest); };
    const seen = new Promise<number>((resolve) => {
      channel.onCqEvent((cq) => {
        const [wc] = cq.poll(1);
        assert.equal(wc!.wrId, 5);
        // The consumer answers from its completion callback, as SMC-R's echo does.
        qb.postSend({ wrId: 2, opcode: WrOpcode.SEND, sendFlags: SendFlags.SIGNALED, sgList: [answer.sge()] });
        resolve(queryRxeCounters(cb, qb).qp.acks_sent!);
      });
    });
    cqb.reqNotify();
    qa.postSend({ wrId: 1, opcode: WrOpcode.RDMA_WRITE, sendFlags: SendFlags.SIGNALED, sgList: [src.sge(0, 14)], rdma: { remoteAddr: wbuf.addr, rkey: wbuf.rkey } });
    qa.postSend({ wrId: 3, opcode: WrOpcode.SEND, sendFlags: SendFlags.SIGNALED, sgList: [src.sge(0, 7)] });
    assert.equal(await seen, 0, 'no ACK before the consumer ran');
    const wcs = await waitCompletions(cqa, 3);
    assert.deepEqual(wcs.map((c) => c.status), [WcStatus.SUCCESS, WcStatus.SUCCESS, WcStatus.SUCCESS]);
    await waitCompletions(cqb, 1);
    await new Promise((r) => setImmediate(r));
    assert.deepEqual(order.slice(0, 2), [OpCode.RC_SEND_ONLY, OpCode.RC_ACKNOWLEDGE], `b sent ${JSON.stringify(order)}`);
    const ra = queryRxeCounters(ca, qa), rb = queryRxeCounters(cb, qb);
    assert.equal(rb.qp.acks_sent, 1, 'one cumulative ACK for the WRITE and the SEND');
    assert.deepEqual([ra.qp.acks_rcvd, ra.qp.retransmits, ra.qp.timeouts], [1, 0, 0]);
  } finally {
    await close();
  }
}));

for (const recvmmsg of [false, true]) {
  // The deferred ACK leaves from a setImmediate, which a consumer polling from setImmediate can
  // beat (the case the flush on destroy is for): on node:dgram's path always; on recvmmsg's,
  // whose batch is read in the check phase, the ACK's immediate runs a turn later.
  const path = recvmmsg ? 'read with recvmmsg' : 'node:dgram';
  test(`a QP destroyed as soon as its consumer sees the last receive still sends the deferred ACK (pingpong exits at once; ${path})`, { skip: recvmmsg && !mmsgAvailable() }, withDeferral(true, async () => {
    const { a, b, close } = await makePair(QpType.RC, { ...SLOW_RTO, device: { recvmmsg } });
    try {
      const smr = a.pd.regMr(Buffer.alloc(64, 7), 0);
      const rmr = b.pd.regMr(Buffer.alloc(64), Access.LOCAL_WRITE);
      b.qp.postRecv({ wrId: 5, sgList: [rmr.sge(0, 64)] });
      a.qp.postSend({ wrId: 6, opcode: WrOpcode.SEND, sendFlags: SendFlags.SIGNALED, sgList: [smr.sge(0, 64)] });
      // The consumer polls from setImmediate, as pingpong does: on node:dgram's path it sees the
      // completion in the same check phase that would send the deferred ACK, and destroys the QP first.
      let recv: WorkCompletion[] = [];
      const deadline = Date.now() + 5000;
      while (!(recv = b.cq.poll(1)).length && Date.now() < deadline) await new Promise((r) => setImmediate(r));
      assert.equal(recv[0]?.status, WcStatus.SUCCESS);
      const acked = queryRxeCounters(b.ctx, b.qp).qp.acks_sent;
      b.qp.destroy();
      // Without the ACK, a would retransmit after ~4.3 s into a destroyed QP: retried forever.
      const [sent] = await waitCompletions(a.cq, 1, 2000);
      assert.deepEqual([sent!.wrId, sent!.status], [6, WcStatus.SUCCESS]);
      assert.equal(queryRxeCounters(a.ctx, a.qp).qp.retransmits, 0);
      assert.equal(acked, 0, 'the ACK was still deferred when the QP was destroyed (the case under test)');
    } finally {
      await close();
    }
  }));
}

test('deferred ACKs of many QPs in one turn: each QP acknowledges its burst, once per turn, and nothing stays held', withDeferral(true, withCoalescing(async () => {
  // write_bw -q 16's pattern: many QPs of one device pair, each with a burst in flight. The
  // held ACKs are kept in the QPs and a queue (responder.ts deferAck), not a map of objects.
  const { a: da, b: db, close } = await twoDevices();
  try {
    const ca = da.open(), cb = db.open();
    const pa = ca.allocPd(), pb = cb.allocPd();
    const cqa = ca.createCq(256), cqb = cb.createCq(256);
    const cap = { maxSendWr: 16, maxRecvWr: 16, maxSendSge: 1, maxRecvSge: 1 };
    const src = pa.regMr(Buffer.alloc(8192, 7), 0);
    const dst = pb.regMr(Buffer.alloc(8192), Access.LOCAL_WRITE | Access.REMOTE_WRITE);
    const N = 8, BURST = 4;
    const qas: ReturnType<typeof pa.createQp>[] = [], qbs: ReturnType<typeof pb.createQp>[] = [];
    for (let i = 0; i < N; i++) {
      const qa = pa.createQp({ qpType: QpType.RC, sendCq: cqa, recvCq: cqa, cap });
      const qb = pb.createQp({ qpType: QpType.RC, sendCq: cqb, recvCq: cqb, cap });
      connect(qa, { qpn: qb.qpn, gid: cb.queryGid() }, { ...SLOW_RTO, psn: 10 * i, remotePsn: 1000 + i });
      connect(qb, { qpn: qa.qpn, gid: ca.queryGid() }, { ...SLOW_RTO, psn: 1000 + i, remotePsn: 10 * i });
      qas.push(qa);
      qbs.push(qb);
    }
    for (let i = 0; i < N; i++) {
      for (let k = 0; k < BURST; k++) {
        qas[i]!.postSend({ wrId: i * 100 + k, opcode: WrOpcode.RDMA_WRITE, sendFlags: SendFlags.SIGNALED, sgList: [src.sge(0, 512)], rdma: { remoteAddr: dst.addr + i * 1024, rkey: dst.rkey } });
      }
    }
    const wcs = await waitCompletions(cqa, N * BURST);
    assert.ok(wcs.every((wc) => wc.status === WcStatus.SUCCESS));
    for (let i = 0; i < N; i++) {
      // Completions of each QP in order, and its last one ACKed by the peer's cumulative ACK.
      assert.deepEqual(wcs.filter((wc) => Number(wc.wrId) >= i * 100 && Number(wc.wrId) < i * 100 + 100).map((wc) => Number(wc.wrId) % 100), [0, 1, 2, 3]);
      const cqp = queryRxeCounters(ca, qas[i]!).qp, rqp = queryRxeCounters(cb, qbs[i]!).qp;
      assert.deepEqual([cqp.retransmits, cqp.timeouts], [0, 0], `QP ${i}: ${JSON.stringify(cqp)}`);
      assert.ok(rqp.acks_sent! >= 1 && rqp.acks_sent! <= BURST, `QP ${i} ACKs: ${rqp.acks_sent}`);
      assert.equal(rxeOf(db).qps.get(qbs[i]!.qpn)!.resp.ackPsn, -1, `QP ${i} still holds an ACK`);
    }
    // A QP whose ACK already left holds and sends a new one in a later turn.
    qas[0]!.postSend({ wrId: 99, opcode: WrOpcode.RDMA_WRITE, sendFlags: SendFlags.SIGNALED, sgList: [src.sge(0, 512)], rdma: { remoteAddr: dst.addr, rkey: dst.rkey } });
    const [last] = await waitCompletions(cqa, 1);
    assert.equal(last!.status, WcStatus.SUCCESS);
    assert.equal(rxeOf(db).qps.get(qbs[0]!.qpn)!.resp.ackPsn, -1);
  } finally {
    await close();
  }
})));
