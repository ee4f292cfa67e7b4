// Sizes and attributes as Linux 6.1 rxe and the verbs core report and take them, from a review
// against rxe_cq.c / rxe_queue.c (a CQ holds its queue's rounded size, and reports it), rxe_verbs.c's
// port attributes (max_mtu 4096 whatever the link), rxe_qp.c (path_mtu kept as given, up to
// max_mtu), _ib_modify_qp (PSNs above 24 bits masked) and rxe_srq_chk_init (max_sge 0 taken as 1).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Access, Mtu, QpAttr, QpState, QpType, SendFlags, WcStatus, WrOpcode, queryRxeCounters } from '../../src/index.js';
import { makePair, waitCompletions } from '../helpers/pair.js';

test('a CQ holds roundup_pow_of_two(cqe + 1) - 1 entries and says so, at create and resize; the next completion is lost (CQ_ERR)', async () => {
  const { a, close } = await makePair(QpType.RC);
  try {
    const cq = a.ctx.createCq(10);
    assert.equal(cq.cqe, 15);
    cq.resize(20);
    assert.equal(cq.cqe, 31);
    cq.resize(16);
    assert.equal(cq.cqe, 31, '16 rounds to 31 as well');
    cq.resize(8);
    assert.equal(cq.cqe, 15);
    const qp = a.pd.createQp({ qpType: QpType.RC, sendCq: a.cq, recvCq: cq, cap: { maxSendWr: 4, maxRecvWr: 32 } });
    const mr = a.pd.regMr(Buffer.alloc(64), Access.LOCAL_WRITE);
    qp.modify({ qpState: QpState.INIT, pkeyIndex: 0, portNum: 1, qpAccessFlags: 0 }, QpAttr.STATE | QpAttr.PKEY_INDEX | QpAttr.PORT | QpAttr.ACCESS_FLAGS);
    for (let i = 0; i < 16; i++) qp.postRecv({ wrId: i, sgList: [mr.sge()] });
    const lost0 = queryRxeCounters(a.ctx, qp).device.cq_overflows!;
    qp.modify({ qpState: QpState.ERR }, QpAttr.STATE); // 16 flushes into 15 entries
    const got = await waitCompletions(cq, 15);
    assert.deepEqual(got.map((c) => c.wrId), Array.from({ length: 15 }, (_, i) => i));
    assert.ok(got.every((c) => c.status === WcStatus.WR_FLUSH_ERR));
    assert.equal(cq.poll(4).length, 0);
    assert.equal(queryRxeCounters(a.ctx, qp).device.cq_overflows! - lost0, 1, 'the 16th completion lost');
    qp.destroy();
    cq.destroy();
  } finally { await close(); }
});

test('max_mtu is 4096 on a 1024-byte link; a path MTU above the active MTU is kept and reported, the packets cut at the active MTU', async () => {
  const { a, b, close } = await makePair(QpType.RC, { device: { mtu: 1024 }, mtu: Mtu.MTU_4096 });
  try {
    const port = a.ctx.queryPort(1);
    assert.deepEqual([port.maxMtu, port.activeMtu], [Mtu.MTU_4096, Mtu.MTU_1024]);
    assert.equal(a.qp.query().pathMtu, Mtu.MTU_4096);
    const data = Buffer.alloc(10_000);
    for (let i = 0; i < data.length; i++) data[i] = (i * 7) & 0xff;
    const src = a.pd.regMr(data, Access.LOCAL_WRITE);
    const dst = Buffer.alloc(data.length);
    const rmr = b.pd.regMr(dst, Access.LOCAL_WRITE | Access.REMOTE_WRITE);
    const psn0 = a.qp.query().sqPsn;
    a.qp.postSend({ wrId: 1, opcode: WrOpcode.RDMA_WRITE, sendFlags: SendFlags.SIGNALED, sgList: [src.sge()], rdma: { remoteAddr: rmr.addr, rkey: rmr.rkey } });
    assert.equal((await waitCompletions(a.cq, 1))[0]!.status, WcStatus.SUCCESS);
    assert.ok(dst.equals(data));
    assert.equal(a.qp.query().sqPsn - psn0, Math.ceil(data.length / 1024), 'one PSN a packet: packets of the active MTU');
    // Above max_mtu is still EINVAL (rxe_qp_chk_attr).
    const qp = a.pd.createQp({ qpType: QpType.RC, sendCq: a.cq, recvCq: a.cq, cap: { maxSendWr: 4, maxRecvWr: 4 } });
    qp.modify({ qpState: QpState.INIT, pkeyIndex: 0, portNum: 1, qpAccessFlags: 0 }, QpAttr.STATE | QpAttr.PKEY_INDEX | QpAttr.PORT | QpAttr.ACCESS_FLAGS);
    const rtr = { qpState: QpState.RTR, pathMtu: 6 as never, destQpNum: b.qp.qpn, rqPsn: 0, maxDestRdAtomic: 1, minRnrTimer: 1, ahAttr: { isGlobal: true, portNum: 1, grh: { dgid: b.ctx.queryGid(), sgidIndex: 0, hopLimit: 64 } } };
    const mask = QpAttr.STATE | QpAttr.AV | QpAttr.PATH_MTU | QpAttr.DEST_QPN | QpAttr.RQ_PSN | QpAttr.MAX_DEST_RD_ATOMIC | QpAttr.MIN_RNR_TIMER;
    assert.throws(() => qp.modify(rtr as never, mask), { code: 'EINVAL', attr: 'path_mtu' });
    qp.modify({ ...rtr, pathMtu: Mtu.MTU_4096, rqPsn: 0x1abcdef } as never, mask);
    assert.equal(qp.query().rqPsn, 0xabcdef, 'an rq_psn above 24 bits is masked (_ib_modify_qp)');
    qp.modify({ qpState: QpState.RTS, sqPsn: 0xff123456, timeout: 10, retryCnt: 7, rnrRetry: 7, maxRdAtomic: 1 } as never, QpAttr.STATE | QpAttr.SQ_PSN | QpAttr.TIMEOUT | QpAttr.RETRY_CNT | QpAttr.RNR_RETRY | QpAttr.MAX_QP_RD_ATOMIC);
    assert.equal(qp.query().sqPsn, 0x123456);
    assert.throws(() => qp.modify({ sqPsn: 2 ** 32 } as never, QpAttr.SQ_PSN), { code: 'EINVAL', attr: 'sq_psn' });
    qp.destroy();
  } finally { await close(); }
});

test('create_srq with max_sge 0 makes an SRQ of one SGE (rxe_srq_chk_init)', async () => {
  const { a, close } = await makePair(QpType.RC);
  try {
    const srq = a.pd.createSrq({ maxWr: 4, maxSge: 0 });
    assert.equal(srq.query().maxSge, 1);
    const mr = a.pd.regMr(Buffer.alloc(64), Access.LOCAL_WRITE);
    srq.postRecv({ wrId: 1, sgList: [mr.sge()] });
    assert.throws(() => srq.postRecv({ wrId: 2, sgList: [mr.sge(0, 8), mr.sge(8, 8)] }), { code: 'EINVAL' });
    srq.destroy();
  } finally { await close(); }
});
