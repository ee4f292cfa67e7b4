// Checks as Linux makes them: an MR's rkey is 0 without remote access (rxe_mr_init); a RoCE
// address without the GRH is EINVAL (rdma_check_ah_attr), for an AH and for a QP's address
// vector, with nothing changed; post_recv errors name QP.POST_RECV or SRQ.POST_RECV as
// post_send's name QP.POST_SEND.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Access, Mtu, QpAttr, QpState, QpType } from '../../src/index.js';
import { caught, withDevice } from '../helpers/uapi.js';

test('an MR without REMOTE_READ, REMOTE_WRITE or REMOTE_ATOMIC has rkey 0 (rxe_mr_init); with one, rkey = lkey; REREG follows the access', async () => {
  await withDevice((_ctx, pd) => {
    for (const access of [0, Access.LOCAL_WRITE, Access.LOCAL_WRITE | Access.MW_BIND]) {
      const mr = pd.regMr(Buffer.alloc(64), access);
      assert.equal(mr.rkey, 0, `access 0x${access.toString(16)}`);
      assert.notEqual(mr.lkey, 0);
    }
    for (const access of [Access.REMOTE_READ, Access.LOCAL_WRITE | Access.REMOTE_WRITE, Access.LOCAL_WRITE | Access.REMOTE_ATOMIC]) {
      const mr = pd.regMr(Buffer.alloc(64), access);
      assert.equal(mr.rkey, mr.lkey, `access 0x${access.toString(16)}`);
    }
    const mr = pd.regMr(Buffer.alloc(64), Access.LOCAL_WRITE);
    mr.rereg({ access: Access.LOCAL_WRITE | Access.REMOTE_WRITE });
    assert.equal(mr.rkey, mr.lkey);
    mr.rereg({ access: Access.LOCAL_WRITE });
    assert.equal(mr.rkey, 0);
  });
});

test('is_global false on RoCE is EINVAL (rdma_check_ah_attr), for an AH and a QP\'s address vector, with nothing created or changed', async () => {
  await withDevice((ctx, pd) => {
    const dgid = ctx.queryGid();
    const before = ctx.census();
    for (const isGlobal of [false, 1 as unknown as boolean]) {
      const e = caught(() => pd.createAh({ isGlobal, grh: { dgid } }));
      assert.deepEqual([e.code, e.object, e.method, e.attr], ['EINVAL', 'AH', 'CREATE', 'ah_attr'], e.message);
      assert.match(e.detail, /\bis_global\b/);
    }
    assert.deepEqual(ctx.census(), before, 'no AH');
    assert.ok(pd.createAh({ isGlobal: true, grh: { dgid } }));
    assert.ok(pd.createAh({ grh: { dgid } }), 'left out, it means true');

    const cq = ctx.createCq(4);
    const qp = pd.createQp({ qpType: QpType.RC, sendCq: cq, recvCq: cq, cap: { maxSendWr: 1, maxRecvWr: 1 } });
    qp.modify({ qpState: QpState.INIT, pkeyIndex: 0, portNum: 1, qpAccessFlags: 0 }, QpAttr.STATE | QpAttr.PKEY_INDEX | QpAttr.PORT | QpAttr.ACCESS_FLAGS);
    const was = qp.query();
    const rtr = QpAttr.STATE | QpAttr.AV | QpAttr.PATH_MTU | QpAttr.DEST_QPN | QpAttr.RQ_PSN | QpAttr.MAX_DEST_RD_ATOMIC | QpAttr.MIN_RNR_TIMER;
    const attr = { qpState: QpState.RTR, pathMtu: Mtu.MTU_1024, destQpNum: 5, rqPsn: 7, maxDestRdAtomic: 1, minRnrTimer: 1 };
    const e = caught(() => qp.modify({ ...attr, ahAttr: { isGlobal: false, grh: { dgid } } }, rtr));
    assert.deepEqual([e.code, e.object, e.method], ['EINVAL', 'QP', 'MODIFY'], e.message);
    assert.match(e.detail, /\bis_global\b/);
    assert.equal(qp.state, QpState.INIT);
    assert.deepEqual(qp.query(), was, 'nothing changed');
    qp.modify({ ...attr, ahAttr: { isGlobal: true, grh: { dgid } } }, rtr);
    assert.equal(qp.state, QpState.RTR);
  });
});

test('post_recv errors name QP.POST_RECV or SRQ.POST_RECV, as post_send\'s name QP.POST_SEND', async () => {
  await withDevice((ctx, pd) => {
    const cq = ctx.createCq(4);
    const mr = pd.regMr(Buffer.alloc(64), Access.LOCAL_WRITE);
    const srq = pd.createSrq({ maxWr: 1, maxSge: 1 });
    const qp = pd.createQp({ qpType: QpType.RC, sendCq: cq, recvCq: cq, cap: { maxSendWr: 1, maxRecvWr: 1 } });
    const onSrq = pd.createQp({ qpType: QpType.RC, sendCq: cq, recvCq: cq, srq, cap: { maxSendWr: 1 } });
    const site = (fn: () => unknown) => { const e = caught(fn); return [e.code, e.object, e.method, e.message.startsWith(`${e.code}: ${e.object}.${e.method}`)]; };
    assert.deepEqual(site(() => qp.postRecv({ wrId: 1, sgList: [mr.sge()] })), ['EINVAL', 'QP', 'POST_RECV', true], 'in RESET');
    assert.deepEqual(site(() => onSrq.postRecv({ wrId: 1, sgList: [mr.sge()] })), ['EINVAL', 'QP', 'POST_RECV', true], 'a QP with an SRQ');
    qp.modify({ qpState: QpState.INIT, pkeyIndex: 0, portNum: 1, qpAccessFlags: 0 }, QpAttr.STATE | QpAttr.PKEY_INDEX | QpAttr.PORT | QpAttr.ACCESS_FLAGS);
    qp.postRecv({ wrId: 1, sgList: [mr.sge()] });
    assert.deepEqual(site(() => qp.postRecv({ wrId: 2, sgList: [mr.sge()] })), ['ENOMEM', 'QP', 'POST_RECV', true], 'receive queue full');
    srq.postRecv({ wrId: 1, sgList: [mr.sge()] });
    assert.deepEqual(site(() => srq.postRecv({ wrId: 2, sgList: [mr.sge()] })), ['ENOMEM', 'SRQ', 'POST_RECV', true], 'SRQ full');
    assert.deepEqual(site(() => qp.postSend({ wrId: 1, opcode: 0, sgList: [] })), ['EINVAL', 'QP', 'POST_SEND', true], 'as post_send');
  });
});
