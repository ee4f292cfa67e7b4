// What an object destroyed under posted work, and a malformed argument, get: a failed
// completion or a typed error naming the field, never a quiet success or a leak. (An
// argument-validation review of 2026-12-07; each case failed on the code before it.)

import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  Access, Attr, M, Obj, QpAttr, QpState, QpType, SendFlags, VerbsError, WcStatus, WrOpcode, connectQp, createRxeDevice, gidFromAddress, rxeOf,
} from '../../src/index.js';
import { incRkey } from '../../src/verbs/api.js';
import { makePair, waitCompletions } from '../helpers/pair.js';

const errOf = (fn: () => unknown): VerbsError | undefined => {
  try { fn(); } catch (e) { assert.ok(e instanceof VerbsError, String(e)); return e; }
  return undefined;
};
const turn = () => new Promise((r) => setImmediate(r));

test('a BIND_MW whose window is deallocated before the bind runs fails with MW_BIND_ERR (rxe_bind_mw looks the window up), and its MR can be deregistered', async () => {
  const dev = await createRxeDevice({ address: '127.0.0.2', port: 0 });
  try {
    const ctx = dev.open();
    const pd = ctx.allocPd();
    const cq = ctx.createCq(16);
    const qp = pd.createQp({ qpType: QpType.RC, sendCq: cq, recvCq: cq, cap: { maxSendWr: 8, maxRecvWr: 4 } });
    connectQp(qp, { qpn: 0x123, psn: 0, gid: gidFromAddress('127.0.0.9') });
    const mr = pd.regMr(Buffer.alloc(4096), Access.LOCAL_WRITE | Access.MW_BIND | Access.REMOTE_READ);
    const mw = pd.allocMw(2);
    // In SQD the posted bind waits (as it would behind a FENCE).
    qp.modify({ qpState: QpState.SQD }, QpAttr.STATE);
    await turn();
    qp.postSend({ wrId: 1, opcode: WrOpcode.BIND_MW, sendFlags: SendFlags.SIGNALED,
      bindMw: { mw, rkey: incRkey(mw.rkey), bindInfo: { mr, addr: mr.addr, length: 64, mwAccessFlags: Access.REMOTE_READ } } });
    mw.dealloc();
    qp.modify({ qpState: QpState.RTS }, QpAttr.STATE);
    const [wc] = await waitCompletions(cq, 1);
    assert.equal(wc!.status, WcStatus.MW_BIND_ERR);
    qp.destroy();
    assert.equal(errOf(() => mr.dereg()), undefined, 'no window holds the MR');
  } finally {
    await dev.close();
  }
});

test('a UD send whose AH is destroyed before the send runs fails with LOC_QP_OP_ERR (rxe_get_av finds no AH)', async () => {
  const { a, b, close } = await makePair(QpType.UD);
  try {
    const ah = a.pd.createAh({ grh: { dgid: b.ctx.queryGid(), hopLimit: 64 } });
    const smr = a.pd.regMr(Buffer.from('late'), 0);
    a.qp.modify({ qpState: QpState.SQD }, QpAttr.STATE);
    await turn();
    a.qp.postSend({ wrId: 1, opcode: WrOpcode.SEND, sendFlags: SendFlags.SIGNALED, sgList: [smr.sge()], ud: { ah, remoteQpn: b.qp.qpn, remoteQkey: 0x11111111 } });
    ah.destroy();
    a.qp.modify({ qpState: QpState.RTS }, QpAttr.STATE);
    const [wc] = await waitCompletions(a.cq, 1);
    assert.equal(wc!.status, WcStatus.LOC_QP_OP_ERR);
  } finally {
    await close();
  }
});

test('send_flags and a bind\'s mwAccessFlags must be 32-bit flag words; a BIND_MW takes no SGEs and no immediate data (rdma-core rxe validate_send_wr)', async () => {
  const { a, close } = await makePair(QpType.RC);
  try {
    const mr = a.pd.regMr(Buffer.alloc(64), Access.LOCAL_WRITE | Access.MW_BIND);
    for (const sendFlags of [2 ** 32 + SendFlags.SIGNALED, -1, NaN, 1.5, 'SIGNALED']) {
      const e = errOf(() => a.qp.postSend({ wrId: 1, opcode: WrOpcode.SEND, sendFlags: sendFlags as number, sgList: [mr.sge()] }));
      assert.deepEqual([e?.code, e?.attr], ['EINVAL', 'send_flags'], `send_flags ${String(sendFlags)}`);
    }
    const mw = a.pd.allocMw(2);
    const bind = (extra: object, mwAccessFlags: number = Access.REMOTE_READ) => errOf(() => a.qp.postSend({
      wrId: 2, opcode: WrOpcode.BIND_MW, ...extra, bindMw: { mw, rkey: incRkey(mw.rkey), bindInfo: { mr, addr: mr.addr, length: 64, mwAccessFlags } },
    }));
    assert.deepEqual([bind({}, 2 ** 32 + Access.REMOTE_READ)?.code, bind({}, 2 ** 32 + Access.REMOTE_READ)?.attr], ['EINVAL', 'bind_mw']);
    assert.deepEqual([bind({ sgList: [mr.sge()] })?.code, bind({ sgList: [mr.sge()] })?.attr], ['EINVAL', 'sg_list']);
    assert.deepEqual([bind({ immData: 5 })?.code, bind({ immData: 5 })?.attr], ['EINVAL', 'imm_data']);
    assert.equal(bind({}), undefined, 'a plain bind is still accepted');
  } finally {
    await close();
  }
});

test('cq.poll: a count that is not an integer is EINVAL (a negative one polls nothing, as ibv_poll_cq); a destroyed CQ is EBADF for poll and reqNotify', async () => {
  const { a, b, close } = await makePair(QpType.RC);
  try {
    const mr = a.pd.regMr(Buffer.alloc(8), 0);
    b.qp.postRecv({ wrId: 9, sgList: [b.pd.regMr(Buffer.alloc(8), Access.LOCAL_WRITE).sge()] });
    a.qp.postSend({ wrId: 1, opcode: WrOpcode.SEND, sendFlags: SendFlags.SIGNALED, sgList: [mr.sge()] });
    await waitCompletions(b.cq, 1);
    // A completion waits on a's CQ.
    for (let i = 0; i < 1000 && a.cq.poll(0).length === 0 && rxeOf(a.dev).counters.rcvd_pkts === 0; i++) await turn();
    for (const max of [NaN, null, 'abc', 1.5]) {
      const e = errOf(() => a.cq.poll(max as number));
      assert.deepEqual([e?.code, e?.attr], ['EINVAL', 'num_entries'], `poll(${String(max)})`);
    }
    assert.deepEqual(a.cq.poll(-1), []);
    assert.equal((await waitCompletions(a.cq, 1))[0]!.wrId, 1, 'the completion was left for a good poll');

    const cq = a.ctx.createCq(4);
    cq.destroy();
    assert.equal(errOf(() => cq.poll())?.code, 'EBADF');
    assert.equal(errOf(() => cq.reqNotify())?.code, 'EBADF');
  } finally {
    await close();
  }
});

test('getCqEvent on a destroyed completion channel rejects with EBADF (as a waiter the destroy finds, and cq.next()) instead of throwing', async () => {
  const dev = await createRxeDevice({ address: '127.0.0.2', port: 0 });
  try {
    const ch = dev.open().createCompChannel();
    ch.destroy();
    let p: Promise<unknown> | undefined;
    assert.doesNotThrow(() => { p = ch.getCqEvent(); });
    await assert.rejects(p!, (e: unknown) => e instanceof VerbsError && e.code === 'EBADF');
  } finally {
    await dev.close();
  }
});

test('the dispatcher reads each attribute\'s id once: one checked as a bool cannot be stored as a handle, and a failed create leaves no QP behind', async () => {
  const dev = await createRxeDevice({ address: '127.0.0.2', port: 0 });
  try {
    const ctx = dev.open();
    const pd = ctx.allocPd();
    const cq = ctx.createCq(16);
    const a = Attr.QP.CREATE;
    let reads = 0;
    const tricky = { get id() { return ++reads <= 1 ? a.SQ_SIG_ALL : a.SEND_CQ; }, value: true };
    const before = rxeOf(dev).qps.size;
    const e = errOf(() => ctx.invoke(Obj.QP, M.QP.CREATE, [
      { id: a.PD_HANDLE, value: pd.handle }, { id: a.QP_TYPE, value: QpType.RC }, tricky,
      { id: a.RECV_CQ, value: cq.handle }, { id: a.CAP, value: { maxSendWr: 1, maxRecvWr: 1 } },
    ]));
    assert.equal(reads, 1);
    assert.deepEqual([e?.code, e?.attr], ['EINVAL', 'send_cq']); // send_cq was never given
    assert.equal(rxeOf(dev).qps.size, before, 'no QP left in the device');
    cq.destroy();
    pd.dealloc();
    ctx.close();
  } finally {
    await dev.close();
  }
});
