// Type 1 memory windows: the rkey a bind asks for is the window's from the moment it is posted
// (rdma-core rxe_bind_mw sets ibmw->rkey = next_rkey(ibmw->rkey) at once), so two binds waiting
// in the send queue get two keys, and the first binding's key stops working once the second
// bind has run.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Access, MwType, QpAttr, QpState, QpType, SendFlags, WcStatus, WrOpcode, incRkey } from '../../src/index.js';
import { makePair, waitCompletions } from '../helpers/pair.js';

test('two type 1 binds posted while the SQ is held (SQD): distinct rkeys, MW.rkey follows the posts, the first key dies with the re-bind', async () => {
  const { a, b, close } = await makePair(QpType.RC);
  try {
    const win = Buffer.alloc(4096);
    const mr = b.pd.regMr(win, Access.LOCAL_WRITE | Access.MW_BIND);
    const mw = b.pd.allocMw(MwType.TYPE_1);
    const r0 = mw.rkey;
    b.qp.modify({ qpState: QpState.SQD }, QpAttr.STATE); // the binds wait in the send queue
    const r1 = b.qp.bindMw(mw, { wrId: 1, sendFlags: SendFlags.SIGNALED, bindInfo: { mr, addr: mr.addr, length: 64, mwAccessFlags: Access.REMOTE_WRITE } });
    assert.equal(r1, incRkey(r0));
    assert.equal(mw.rkey, r1, 'the posted key is the window\'s at once');
    const r2 = b.qp.bindMw(mw, { wrId: 2, sendFlags: SendFlags.SIGNALED, bindInfo: { mr, addr: mr.addr, length: 4096, mwAccessFlags: Access.REMOTE_WRITE } });
    assert.notEqual(r2, r1, 'a second bind before the first has run gets a key of its own');
    assert.equal(r2, incRkey(r1));
    assert.equal(mw.rkey, r2);
    b.qp.modify({ qpState: QpState.RTS }, QpAttr.STATE);
    assert.deepEqual((await waitCompletions(b.cq, 2)).map((wc) => [wc.wrId, wc.status]), [[1, WcStatus.SUCCESS], [2, WcStatus.SUCCESS]]);
    assert.equal(mw.rkey, r2);

    const src = a.pd.regMr(Buffer.alloc(16, 0xab), Access.LOCAL_WRITE);
    const write = (wrId: number, rkey: number) =>
      a.qp.postSend({ wrId, opcode: WrOpcode.RDMA_WRITE, sendFlags: SendFlags.SIGNALED, sgList: [src.sge()], rdma: { remoteAddr: mr.addr + 1000, rkey } });
    write(7, r2);
    assert.equal((await waitCompletions(a.cq, 1))[0]!.status, WcStatus.SUCCESS, 'the current binding\'s key works');
    assert.equal(win[1000], 0xab);
    win.fill(0);
    write(8, r1);
    assert.equal((await waitCompletions(a.cq, 1))[0]!.status, WcStatus.REM_ACCESS_ERR, 'the first binding\'s key stopped working with the re-bind');
    assert.equal(win[1000], 0);
  } finally { await close(); }
});

test('a type 1 bind queued behind a large WRITE (QP in RTS) and a second bind: distinct keys, the first no longer valid', async () => {
  const { a, b, close } = await makePair(QpType.RC);
  try {
    const sink = a.pd.regMr(Buffer.alloc(8 << 20), Access.LOCAL_WRITE | Access.REMOTE_WRITE);
    const win = Buffer.alloc(8 << 20);
    const bmr = b.pd.regMr(win, Access.LOCAL_WRITE | Access.MW_BIND);
    const mw = b.pd.allocMw(MwType.TYPE_1);
    b.qp.postSend({ wrId: 0, opcode: WrOpcode.RDMA_WRITE, sgList: [bmr.sge()], rdma: { remoteAddr: sink.addr, rkey: sink.rkey } });
    const r1 = b.qp.bindMw(mw, { wrId: 1, bindInfo: { mr: bmr, addr: bmr.addr, length: 64, mwAccessFlags: Access.REMOTE_WRITE } });
    const r2 = b.qp.bindMw(mw, { wrId: 2, sendFlags: SendFlags.SIGNALED, bindInfo: { mr: bmr, addr: bmr.addr, length: 4096, mwAccessFlags: Access.REMOTE_WRITE } });
    assert.notEqual(r1, r2);
    assert.deepEqual((await waitCompletions(b.cq, 1, 20_000)).map((wc) => [wc.wrId, wc.status]), [[2, WcStatus.SUCCESS]]);
    const src = a.pd.regMr(Buffer.alloc(16, 0xab), Access.LOCAL_WRITE);
    a.qp.postSend({ wrId: 7, opcode: WrOpcode.RDMA_WRITE, sendFlags: SendFlags.SIGNALED, sgList: [src.sge()], rdma: { remoteAddr: bmr.addr + 1000, rkey: r1 } });
    assert.equal((await waitCompletions(a.cq, 1))[0]!.status, WcStatus.REM_ACCESS_ERR);
    assert.equal(win[1000], 0, 'nothing written through the stale key');
  } finally { await close(); }
});
