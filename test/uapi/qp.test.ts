// QP creation, modify_qp and ibv_bind_mw checks as Linux rxe and rdma-core make them:
// rxe_qp_chk_cap (no lower bound, no receive caps with an SRQ), __qp_chk_state (no leaving
// SQD while it drains), ibv_bind_mw/rxe_bind_mw (synchronous checks before the bind is posted).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  Access, QpAttr, QpState, QpType, SendFlags, WcStatus, WrOpcode, connectQp, gidFromAddress, type QP,
} from '../../src/index.js';
import { caught, withDevice } from '../helpers/uapi.js';

const turn = () => new Promise((r) => setImmediate(r));

/** To RTS towards a peer that never answers (nothing at 127.0.0.9): sends stay outstanding. */
function toSilentPeer(qp: QP): void {
  connectQp(qp, { qpn: 0x123, psn: 0, gid: gidFromAddress('127.0.0.9') }, { timeout: 20, retryCnt: 7 });
}

test('QP capacities: 0-entry queues are legal and full; with an SRQ the receive caps are not checked', async () => {
  await withDevice((ctx, pd) => {
    const cq = ctx.createCq(16);
    const dev = ctx.queryDevice();
    const qp = pd.createQp({ qpType: QpType.RC, sendCq: cq, recvCq: cq, cap: { maxSendWr: 0, maxRecvWr: 0 } });
    // A send WQE has room for one 16-byte SGE, so for 16 bytes inline (rxe_qp_init_req).
    assert.deepEqual(qp.query().cap, { maxSendWr: 0, maxRecvWr: 0, maxSendSge: 1, maxRecvSge: 1, maxInlineData: 16 });
    assert.deepEqual(qp.cap, qp.query().cap);
    toSilentPeer(qp);
    // As a full queue: ENOMEM, and nothing queued.
    const full = pd.createQp({ qpType: QpType.RC, sendCq: cq, recvCq: cq, cap: { maxSendWr: 1, maxRecvWr: 1 } });
    toSilentPeer(full);
    full.postSend({ wrId: 1, opcode: WrOpcode.SEND, sgList: [] });
    full.postRecv({ wrId: 1, sgList: [] });
    const fullSend = caught(() => full.postSend({ wrId: 2, opcode: WrOpcode.SEND, sgList: [] }));
    const fullRecv = caught(() => full.postRecv({ wrId: 2, sgList: [] }));
    assert.equal(caught(() => qp.postSend({ wrId: 1, opcode: WrOpcode.SEND, sgList: [] })).code, fullSend.code);
    assert.equal(caught(() => qp.postRecv({ wrId: 1, sgList: [] })).code, fullRecv.code);
    assert.equal(fullSend.code, 'ENOMEM');
    // UD with no send queue, and a QP on an SRQ whose receive caps would exceed the device's.
    const ud = pd.createQp({ qpType: QpType.UD, sendCq: cq, recvCq: cq, cap: { maxSendWr: 0, maxRecvWr: 4 } });
    assert.equal(ud.query().cap.maxSendWr, 0);
    const srq = pd.createSrq({ maxWr: 8, maxSge: 1 });
    const onSrq = pd.createQp({ qpType: QpType.RC, sendCq: cq, recvCq: cq, srq, cap: { maxSendWr: 4, maxRecvWr: dev.maxQpWr + 1, maxRecvSge: dev.maxSge + 1 } });
    assert.deepEqual([onSrq.query().cap.maxRecvWr, onSrq.query().cap.maxRecvSge], [0, 0], 'no receive queue of its own');
    // Still bounded above, and still required where there is a queue.
    assert.equal(caught(() => pd.createQp({ qpType: QpType.RC, sendCq: cq, recvCq: cq, cap: { maxSendWr: dev.maxQpWr + 1, maxRecvWr: 1 } })).attr, 'cap.max_send_wr');
    assert.equal(caught(() => pd.createQp({ qpType: QpType.RC, sendCq: cq, recvCq: cq, cap: { maxSendWr: 1 } } as never)).attr, 'cap.max_recv_wr');
    assert.equal(caught(() => pd.createQp({ qpType: QpType.RC, sendCq: cq, recvCq: cq, cap: { maxSendWr: -1, maxRecvWr: 1 } })).attr, 'cap.max_send_wr');
  });
});

test('modify_qp out of SQD while the send queue drains is EINVAL naming qp_state, except to ERR (rxe __qp_chk_state)', async () => {
  await withDevice(async (ctx, pd) => {
    const cq = ctx.createCq(16);
    const mr = pd.regMr(Buffer.alloc(4096), Access.LOCAL_WRITE);
    const qp = pd.createQp({ qpType: QpType.RC, sendCq: cq, recvCq: cq, cap: { maxSendWr: 4, maxRecvWr: 4 } });
    toSilentPeer(qp);
    qp.postSend({ wrId: 1, opcode: WrOpcode.SEND, sendFlags: SendFlags.SIGNALED, sgList: [mr.sge(0, 100)] });
    // Started: its packet is sent (the requester runs at post; bounded wait, not a sleep).
    const counters = (ctx.device.provider as unknown as { counters: { sent_pkts: number } }).counters;
    for (let i = 0; i < 200 && counters.sent_pkts === 0; i++) await new Promise((r) => setTimeout(r, 5));
    assert.ok(counters.sent_pkts > 0, 'the SEND left');
    qp.modify({ qpState: QpState.SQD }, QpAttr.STATE);
    assert.equal(qp.query().sqDraining, true, 'the SEND is unanswered, so SQD drains it');
    for (const [to, extra, mask] of [[QpState.RTS, {}, 0], [QpState.SQD, { timeout: 3 }, QpAttr.TIMEOUT], [QpState.RESET, {}, 0]] as const) {
      const e = caught(() => qp.modify({ qpState: to, ...extra }, QpAttr.STATE | mask));
      assert.deepEqual([e.code, e.attr], ['EINVAL', 'qp_state'], e.message);
      assert.equal(qp.state, QpState.SQD);
    }
    // Attributes alone (no state change) are still allowed, and ERR always is.
    qp.modify({ timeout: 3 }, QpAttr.TIMEOUT);
    qp.modify({ qpState: QpState.ERR }, QpAttr.STATE);
    assert.equal(qp.state, QpState.ERR);
  });
});

test('QP.bindMw makes ibv_bind_mw\'s and rxe_bind_mw\'s checks before posting: EINVAL or EPERM naming the field, nothing posted', async () => {
  await withDevice(async (ctx, pd) => {
    const cq = ctx.createCq(16);
    const mr = pd.regMr(Buffer.alloc(4096), Access.LOCAL_WRITE | Access.MW_BIND | Access.REMOTE_WRITE);
    const otherPd = ctx.allocPd();
    const otherMr = otherPd.regMr(Buffer.alloc(4096), Access.LOCAL_WRITE | Access.MW_BIND | Access.REMOTE_WRITE);
    const qp = pd.createQp({ qpType: QpType.RC, sendCq: cq, recvCq: cq, cap: { maxSendWr: 8, maxRecvWr: 4 } });
    toSilentPeer(qp);
    const mw1 = pd.allocMw(1);
    const mw2 = pd.allocMw(2);
    const rkey = mw1.rkey;
    const info = { mr, addr: mr.addr, length: 64, mwAccessFlags: Access.REMOTE_WRITE };
    const cases: Array<[string, string, () => unknown]> = [
      ['EINVAL', 'mw', () => qp.bindMw(mw2, { wrId: 1, bindInfo: info })],
      ['EINVAL', 'mw', () => qp.bindMw(undefined as never, { wrId: 1, bindInfo: info })],
      ['EINVAL', 'mw', () => qp.bindMw({} as never, { wrId: 1, bindInfo: info })],
      ['EINVAL', 'bind_info.mr', () => qp.bindMw(mw1, { wrId: 1, bindInfo: { mr: undefined, addr: 5, length: 0, mwAccessFlags: 0 } })],
      ['EINVAL', 'bind_info.mr', () => qp.bindMw(mw1, { wrId: 1, bindInfo: { mr: undefined, addr: 0, length: 64, mwAccessFlags: 0 } })],
      ['EINVAL', 'bind_info.mw_access_flags', () => qp.bindMw(mw1, { wrId: 1, bindInfo: { ...info, mwAccessFlags: Access.REMOTE_WRITE | Access.ZERO_BASED } })],
      ['EPERM', 'bind_info.mr', () => qp.bindMw(mw1, { wrId: 1, bindInfo: { ...info, mr: otherMr, addr: otherMr.addr } })],
      ['EINVAL', 'bind_info', () => qp.bindMw(mw1, { wrId: 1 } as never)],
    ];
    for (const [code, attr, fn] of cases) {
      const e = caught(fn);
      assert.deepEqual([e.code, e.attr], [code, attr], e.message);
    }
    await turn();
    assert.deepEqual(cq.poll(16), [], 'nothing was posted');
    assert.equal(mw1.rkey, rkey);
    // A good bind (and an unbind: no MR, no range) still goes through.
    const k = qp.bindMw(mw1, { wrId: 2, sendFlags: SendFlags.SIGNALED, bindInfo: info });
    qp.bindMw(mw1, { wrId: 3, sendFlags: SendFlags.SIGNALED, bindInfo: { mr: undefined, addr: 0, length: 0, mwAccessFlags: 0 } });
    await turn();
    assert.deepEqual(cq.poll(16).map((wc) => [wc.wrId, wc.status]), [[2, WcStatus.SUCCESS], [3, WcStatus.SUCCESS]]);
    assert.notEqual(k, rkey);
  });
});
