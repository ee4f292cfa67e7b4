// SRQ, UC and UD as Linux rxe has them (a review of 2026-12-07; each case failed on the code
// before it): SRQ resize and an unchecked srq_limit at create, a UC message broken on an SRQ QP
// completing its receive in error, the UD GRH area's IP length, and a UD Q_Key sent as given.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Access, QpAttr, QpType, SendFlags, SrqAttr, VerbsError, WcStatus, WrOpcode, connectQp, gidFromAddress } from '../../src/index.js';
import { immdt, parsePacket, reth } from '../../src/providers/rxe/wire/headers.js';
import { onRequest } from '../../src/providers/rxe/responder.js';
import type { RxeQp } from '../../src/providers/rxe/qp.js';
import type { RxeSrq } from '../../src/providers/rxe/srq.js';
import { openHarness, packet, PEER, PEER_QPN, RQ_PSN } from '../helpers/rxe-harness.js';
import { makePair, waitCompletions } from '../helpers/pair.js';

const UC_SEND_FIRST = 0x20, UC_SEND_LAST = 0x22, UC_SEND_ONLY = 0x24, UC_RDMA_WRITE_ONLY_WITH_IMMEDIATE = 0x2b;

test('modify_srq resizes the queue (rxe_srq_from_attr: rounded as at create, the posted receives kept in order); too small for what is posted, or below an armed limit, is EINVAL with nothing changed', async () => {
  const { a, close } = await makePair(QpType.RC);
  try {
    const srq = a.pd.createSrq({ maxWr: 4, maxSge: 1 });
    assert.equal(srq.query().maxWr, 7);
    const mr = a.pd.regMr(Buffer.alloc(64), Access.LOCAL_WRITE);
    for (let i = 0; i < 7; i++) srq.postRecv({ wrId: i, sgList: [mr.sge(0, 8)] });
    assert.throws(() => srq.postRecv({ wrId: 99, sgList: [mr.sge(0, 8)] }), (e: unknown) => e instanceof VerbsError && e.code === 'ENOMEM');
    srq.modify({ maxWr: 64 }, SrqAttr.MAX_WR);
    assert.equal(srq.query().maxWr, 127);
    for (let i = 7; i < 20; i++) srq.postRecv({ wrId: i, sgList: [mr.sge(0, 8)] });
    const code = (fn: () => void) => { try { fn(); } catch (e) { return (e as VerbsError).code; } return 'ok'; };
    assert.equal(code(() => srq.modify({ maxWr: 8 }, SrqAttr.MAX_WR)), 'EINVAL', '20 posted do not fit in 15');
    assert.equal(srq.query().maxWr, 127);
    srq.modify({ srqLimit: 10 }, SrqAttr.LIMIT);
    assert.equal(code(() => srq.modify({ maxWr: 9 }, SrqAttr.MAX_WR)), 'EINVAL', 'below the armed limit');
    // The receives come out in the order posted, across the resize.
    const srqImpl = a.ctx.impl<RxeSrq>(srq.handle);
    assert.deepEqual(Array.from({ length: 20 }, () => Number(srqImpl.take()!.wrId)), Array.from({ length: 20 }, (_, i) => i));
    // rxe_srq_chk_init checks no srq_limit: one above max_wr is taken as given.
    const s2 = a.pd.createSrq({ maxWr: 10, maxSge: 1, srqLimit: 12 });
    assert.deepEqual([s2.query().maxWr, s2.query().srqLimit], [15, 12]);
  } finally {
    await close();
  }
});

for (const kase of ['a lost middle packet', 'a write with immediate and a bad rkey'] as const) {
  test(`UC on an SRQ, ${kase}: the receive the message took from the SRQ completes in error (class E), and the next message is taken`, async () => {
    const h = await openHarness();
    try {
      const srq = h.pd.createSrq({ maxWr: 8, maxSge: 1 });
      const qp = h.pd.createQp({ qpType: QpType.UC, sendCq: h.cq, recvCq: h.cq, srq, cap: { maxSendWr: 4, maxSendSge: 1 } });
      connectQp(qp, { qpn: PEER_QPN, gid: gidFromAddress(PEER), psn: RQ_PSN }, { psn: 0, mtu: 3 });
      const rq = h.rxe.qps.get(qp.qpn) as RxeQp;
      const m = h.mr(8192);
      srq.postRecv({ wrId: 1, sgList: [m.mr.sge(0, 4096)] });
      srq.postRecv({ wrId: 2, sgList: [m.mr.sge(4096, 4096)] });
      const feed = (op: number, k: number, payload: Buffer, fill?: NonNullable<Parameters<typeof packet>[3]>['fill']) => {
        const p = parsePacket(packet(qp.qpn, op, (RQ_PSN + k) & 0xffffff, { payload, fill }));
        if (typeof p === 'string') throw new Error(p);
        onRequest(rq, p, PEER);
      };
      let k = 0;
      if (kase === 'a lost middle packet') {
        feed(UC_SEND_FIRST, k++, Buffer.alloc(1024, 0xaa));
        k++; // the MIDDLE is lost
        feed(UC_SEND_LAST, k++, Buffer.alloc(10, 0xbb));
      } else {
        feed(UC_RDMA_WRITE_ONLY_WITH_IMMEDIATE, k++, Buffer.from('abcd'), (b, i) => { reth.write(b, i.reth, m.addr, (m.rkey ^ 0xff) >>> 0, 4); immdt.write(b, i.immdt, 5); });
      }
      feed(UC_SEND_ONLY, k++, Buffer.from('x'));
      const want = kase === 'a lost middle packet' ? WcStatus.REM_INV_REQ_ERR : WcStatus.REM_ACCESS_ERR;
      assert.deepEqual(h.cq.poll(8).map((wc) => [wc.wrId, wc.status]), [[1, want], [2, WcStatus.SUCCESS]]);
      assert.equal(m.buf[4096], 'x'.charCodeAt(0));
    } finally {
      await h.close();
    }
  });
}

test('UD: the IPv4 header in the GRH area carries the datagram\'s real total length, pad and ImmDt included (as the header Linux copies)', async () => {
  const { a, b, close } = await makePair(QpType.UD);
  try {
    const ah = a.pd.createAh({ grh: { dgid: b.ctx.queryGid(), hopLimit: 64 } });
    const buf = Buffer.alloc(128);
    b.qp.postRecv({ wrId: 1, sgList: [b.pd.regMr(buf, Access.LOCAL_WRITE).sge()] });
    const smr = a.pd.regMr(Buffer.from('hello'), 0); // 5 bytes: 3 pad bytes on the wire
    a.qp.postSend({ wrId: 7, opcode: WrOpcode.SEND_WITH_IMM, immData: 9, sendFlags: SendFlags.SIGNALED, sgList: [smr.sge()], ud: { ah, remoteQpn: b.qp.qpn, remoteQkey: 0x11111111 } });
    await waitCompletions(a.cq, 1);
    const [wc] = await waitCompletions(b.cq, 1);
    assert.equal(wc!.byteLen, 40 + 5);
    // IPv4 20 + UDP 8 + BTH 12 + DETH 8 + ImmDt 4 + payload 5 + pad 3 + ICRC 4
    assert.equal(buf.readUInt16BE(20 + 2), 20 + 8 + 12 + 8 + 4 + 5 + 3 + 4);
  } finally {
    await close();
  }
});

test('UD: a work request\'s Q_Key goes out as it is, bit 31 set or not (init_req_packet): a peer with a controlled Q_Key is reached by naming it', async () => {
  const { a, b, close } = await makePair(QpType.UD);
  try {
    b.qp.modify({ qkey: 0x80000005 }, QpAttr.QKEY);
    const ah = a.pd.createAh({ grh: { dgid: b.ctx.queryGid(), hopLimit: 64 } });
    b.qp.postRecv({ wrId: 1, sgList: [b.pd.regMr(Buffer.alloc(128), Access.LOCAL_WRITE).sge()] });
    const smr = a.pd.regMr(Buffer.from('hello'), 0);
    a.qp.postSend({ wrId: 7, opcode: WrOpcode.SEND, sendFlags: SendFlags.SIGNALED, sgList: [smr.sge()], ud: { ah, remoteQpn: b.qp.qpn, remoteQkey: 0x80000005 } });
    await waitCompletions(a.cq, 1);
    assert.equal((await waitCompletions(b.cq, 1, 5000))[0]!.status, WcStatus.SUCCESS);
  } finally {
    await close();
  }
});
