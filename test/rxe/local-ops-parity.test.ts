// Local operations and READ/atomic limits as Linux rxe has them (an RC review of 2026-12-07;
// each case failed on the code before it): the local invalidate fence, the flush of local work
// already carried out behind a failed request, and max_rd_atomic / max_dest_rd_atomic rounded
// up to a power of two.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Access, QpState, QpType, SendFlags, WcStatus, WrOpcode, incRkey } from '../../src/index.js';
import { reth } from '../../src/providers/rxe/wire/headers.js';
import { openHarness, describe, nakOf, packet, readRequestOf, RQ_PSN } from '../helpers/rxe-harness.js';
import { makePair, waitCompletions } from '../helpers/pair.js';

const RC_RDMA_WRITE_ONLY = 0x0a;

test('LOCAL_INV waits until every earlier WQE has completed (IBA 10.6.5.1 local invalidate fence; rxe_wqe_is_fenced): a peer WRITE through the window meanwhile lands', async () => {
  const h = await openHarness();
  try {
    const m = h.mr(8192, 1);
    const buf = Buffer.alloc(4096);
    const mr = h.pd.regMr(buf, Access.LOCAL_WRITE | Access.MW_BIND);
    const mw = h.pd.allocMw(2);
    const rkey = incRkey(mw.rkey);
    h.qp.postSend({ wrId: 1, opcode: WrOpcode.BIND_MW, sendFlags: SendFlags.SIGNALED, bindMw: { mw, rkey, bindInfo: { mr, addr: mr.addr, length: 4096, mwAccessFlags: Access.REMOTE_WRITE } } });
    assert.deepEqual(h.poll().map((wc) => [wc.wrId, wc.status]), [[1, WcStatus.SUCCESS]]);
    h.qp.postSend({ wrId: 2, opcode: WrOpcode.SEND, sendFlags: SendFlags.SIGNALED, sgList: [{ addr: m.addr, length: 100, lkey: m.mr.lkey }] }); // sent, not ACKed
    h.qp.postSend({ wrId: 3, opcode: WrOpcode.LOCAL_INV, sendFlags: SendFlags.SIGNALED, invalidateRkey: rkey });
    h.take();
    assert.equal((h.rxe.keys.lookup(rkey) as { bound?: boolean } | undefined)?.bound, true, 'still bound while the SEND is unacknowledged');
    // The peer writes through the window before our SEND's ACK comes back.
    h.feed(packet(h.rq.qpn, RC_RDMA_WRITE_ONLY, RQ_PSN, { payload: Buffer.alloc(8, 0xab), ackReq: true, fill: (b, i) => reth.write(b, i.reth, mr.addr, rkey, 8) }));
    assert.deepEqual(h.take().map(describe), ['RC_ACKNOWLEDGE 0x200 ACK']);
    assert.equal(buf[0], 0xab);
    assert.equal(h.rq.state, QpState.RTS);
  } finally {
    await h.close();
  }
});

test('a LOCAL_INV behind a UC SEND runs once the SEND is sent (UC completes on sending: nothing else runs the requester again)', async () => {
  const { a, b, close } = await makePair(QpType.UC);
  try {
    const mr = a.pd.regMr(Buffer.alloc(4096), Access.LOCAL_WRITE | Access.MW_BIND);
    const mw = a.pd.allocMw(2);
    const rkey = incRkey(mw.rkey);
    b.qp.postRecv({ wrId: 9, sgList: [b.pd.regMr(Buffer.alloc(64), Access.LOCAL_WRITE).sge()] });
    a.qp.postSend({ wrId: 1, opcode: WrOpcode.BIND_MW, sendFlags: SendFlags.SIGNALED, bindMw: { mw, rkey, bindInfo: { mr, addr: mr.addr, length: 4096, mwAccessFlags: Access.REMOTE_WRITE } } });
    a.qp.postSend({ wrId: 2, opcode: WrOpcode.SEND, sendFlags: SendFlags.SIGNALED, sgList: [mr.sge(0, 64)] });
    a.qp.postSend({ wrId: 3, opcode: WrOpcode.LOCAL_INV, sendFlags: SendFlags.SIGNALED, invalidateRkey: rkey });
    const wcs = await waitCompletions(a.cq, 3, 5000);
    assert.deepEqual(wcs.map((wc) => [wc.wrId, wc.status]), [[1, WcStatus.SUCCESS], [2, WcStatus.SUCCESS], [3, WcStatus.SUCCESS]]);
    assert.equal(mw.rkey >>> 8, rkey >>> 8);
    assert.equal((await waitCompletions(b.cq, 1))[0]!.status, WcStatus.SUCCESS);
  } finally {
    await close();
  }
});

test('a local operation carried out behind a request that then fails is flushed, in order (rxe_comp.c flush_send_queue)', async () => {
  const h = await openHarness();
  try {
    const m = h.mr(8192, 1);
    const mr = h.pd.regMr(Buffer.alloc(4096), Access.LOCAL_WRITE | Access.MW_BIND);
    const mw = h.pd.allocMw(2);
    const sge = { addr: m.addr, length: 100, lkey: m.mr.lkey };
    h.qp.postSend({ wrId: 1, opcode: WrOpcode.SEND, sendFlags: SendFlags.SIGNALED, sgList: [sge] });
    h.qp.postSend({ wrId: 2, opcode: WrOpcode.BIND_MW, sendFlags: SendFlags.SIGNALED, bindMw: { mw, rkey: incRkey(mw.rkey), bindInfo: { mr, addr: mr.addr, length: 4096, mwAccessFlags: Access.REMOTE_WRITE } } });
    h.qp.postSend({ wrId: 3, opcode: WrOpcode.SEND, sendFlags: SendFlags.SIGNALED, sgList: [sge] });
    h.take();
    h.feed(nakOf(h, 0x100, 2)); // the first SEND: remote access error
    assert.deepEqual(h.poll().map((wc) => [wc.wrId, wc.status]), [[1, WcStatus.REM_ACCESS_ERR], [2, WcStatus.WR_FLUSH_ERR], [3, WcStatus.WR_FLUSH_ERR]]);
  } finally {
    await h.close();
  }
});

test('max_rd_atomic and max_dest_rd_atomic are rounded up to a power of two (rxe_qp_from_attr): 3 gives 4 READs in flight and 4 responder resources', async () => {
  const h = await openHarness({ maxDestRdAtomic: 3, maxRdAtomic: 3 });
  try {
    const q = h.qp.query();
    assert.deepEqual([q.maxRdAtomic, q.maxDestRdAtomic], [4, 4]);
    const src = h.mr(4096, 7);
    for (let i = 0; i < 4; i++) h.feed(readRequestOf(h, RQ_PSN + i, src.addr, src.rkey, 8));
    h.take();
    // The first READ again (its response lost): its resource is still there to answer it.
    h.feed(readRequestOf(h, RQ_PSN, src.addr, src.rkey, 8));
    assert.equal(h.take().length, 1);
    const dst = h.mr(4096);
    for (let i = 0; i < 5; i++) h.qp.postSend({ wrId: i, opcode: WrOpcode.RDMA_READ, sendFlags: SendFlags.SIGNALED, sgList: [{ addr: dst.addr + i * 8, length: 8, lkey: dst.mr.lkey }], rdma: { remoteAddr: 0x1000, rkey: 0x1234 } });
    assert.equal(h.take().length, 4, 'READs in flight');
  } finally {
    await h.close();
  }
});
