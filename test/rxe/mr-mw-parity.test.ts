// Memory regions and windows as Linux 6.1 rxe and libibverbs take them, from a review against
// rxe_mr.c, rxe_mw.c (rxe_check_bind_mw) and ib_check_mr_access: the access bits reg_mr
// accepts (HUGETLB and the optional range are hints; ON_DEMAND is EOPNOTSUPP), the bits a
// window bind accepts (an MR's flags copied into mw_access_flags), an unbind (length 0) that
// asks for write access, and dereg of an MR with windows bound (EINVAL).
// Where softrdma stays stricter than Linux (a PD check Linux skips, a window's own range), see
// docs/rxe.md.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Access, MwType, QpType, SendFlags, VerbsError, WcStatus, WrOpcode, incRkey } from '../../src/index.js';
import { makePair, waitCompletions } from '../helpers/pair.js';

test('reg_mr: HUGETLB and RELAXED_ORDERING are taken and ignored, ON_DEMAND is EOPNOTSUPP, a bit beyond IB_ACCESS_SUPPORTED EINVAL', async () => {
  const { a, close } = await makePair(QpType.RC);
  try {
    const mem = Buffer.alloc(4096);
    for (const bit of [Access.HUGETLB, Access.RELAXED_ORDERING, 1 << 29]) {
      const mr = a.pd.regMr(mem, Access.LOCAL_WRITE | Access.REMOTE_READ | bit);
      assert.equal(mr.access, Access.LOCAL_WRITE | Access.REMOTE_READ, `bit ${bit.toString(16)} kept out of the MR's access`);
      mr.rereg({ access: Access.LOCAL_WRITE | bit });
      assert.equal(mr.access, Access.LOCAL_WRITE);
      mr.dereg();
    }
    const isErr = (code: string) => (e: unknown) => e instanceof VerbsError && e.code === code && e.attr === 'access_flags';
    assert.throws(() => a.pd.regMr(mem, Access.LOCAL_WRITE | Access.ON_DEMAND), isErr('EOPNOTSUPP'));
    assert.throws(() => a.pd.regMr(mem, Access.LOCAL_WRITE | (1 << 8)), isErr('EINVAL'));
    assert.throws(() => a.pd.regMr(mem, Access.LOCAL_WRITE | (1 << 30)), isErr('EINVAL'));
  } finally { await close(); }
});

test('bind: mw_access_flags may carry an MR\'s LOCAL_WRITE and MW_BIND (the window keeps its remote rights), both types; a bit no MR may have is MW_BIND_ERR', async () => {
  const { a, b, close } = await makePair(QpType.RC);
  try {
    const mem = Buffer.alloc(4096);
    const mr = b.pd.regMr(mem, Access.LOCAL_WRITE | Access.MW_BIND);
    const copied = Access.LOCAL_WRITE | Access.REMOTE_WRITE | Access.MW_BIND;
    const mw1 = b.pd.allocMw(MwType.TYPE_1);
    const rkey1 = b.qp.bindMw(mw1, { wrId: 1, sendFlags: SendFlags.SIGNALED, bindInfo: { mr, addr: mr.addr, length: 64, mwAccessFlags: copied } });
    assert.equal((await waitCompletions(b.cq, 1))[0]!.status, WcStatus.SUCCESS);
    const mw2 = b.pd.allocMw(MwType.TYPE_2);
    const rkey2 = incRkey(mw2.rkey);
    b.qp.postSend({ wrId: 2, opcode: WrOpcode.BIND_MW, sendFlags: SendFlags.SIGNALED, bindMw: { mw: mw2, rkey: rkey2, bindInfo: { mr, addr: mr.addr + 64, length: 64, mwAccessFlags: copied } } });
    assert.equal((await waitCompletions(b.cq, 1))[0]!.status, WcStatus.SUCCESS);
    // Each window writes as granted; neither reads (REMOTE_READ was not asked for).
    const src = a.pd.regMr(Buffer.alloc(8, 0x5a), Access.LOCAL_WRITE);
    for (const [rkey, at] of [[rkey1, 0], [rkey2, 64]] as const) {
      a.qp.postSend({ wrId: 3, opcode: WrOpcode.RDMA_WRITE, sendFlags: SendFlags.SIGNALED, sgList: [src.sge()], rdma: { remoteAddr: mr.addr + at, rkey } });
      assert.equal((await waitCompletions(a.cq, 1))[0]!.status, WcStatus.SUCCESS);
      assert.equal(mem[at], 0x5a);
    }
    a.qp.postSend({ wrId: 4, opcode: WrOpcode.RDMA_READ, sendFlags: SendFlags.SIGNALED, sgList: [src.sge()], rdma: { remoteAddr: mr.addr, rkey: rkey1 } });
    assert.equal((await waitCompletions(a.cq, 1))[0]!.status, WcStatus.REM_ACCESS_ERR);
  } finally { await close(); }
  // A bit beyond what reg_mr takes (1 << 8) fails the bind (6.2's RXE_ACCESS_SUPPORTED_MW).
  const p = await makePair(QpType.RC);
  try {
    const mr = p.b.pd.regMr(Buffer.alloc(4096), Access.LOCAL_WRITE | Access.MW_BIND);
    const mw = p.b.pd.allocMw(MwType.TYPE_2);
    p.b.qp.postSend({ wrId: 5, opcode: WrOpcode.BIND_MW, sendFlags: SendFlags.SIGNALED, bindMw: { mw, rkey: incRkey(mw.rkey), bindInfo: { mr, addr: mr.addr, length: 64, mwAccessFlags: Access.REMOTE_WRITE | (1 << 8) } } });
    assert.equal((await waitCompletions(p.b.cq, 1))[0]!.status, WcStatus.MW_BIND_ERR);
  } finally { await p.close(); }
});

test('a type 1 unbind (length 0) asking for write access completes: with no MR there is no LOCAL_WRITE to check (rxe_check_bind_mw returns before C10-74)', async () => {
  const { a, b, close } = await makePair(QpType.RC);
  try {
    const mr = b.pd.regMr(Buffer.alloc(4096), Access.REMOTE_READ | Access.MW_BIND); // no LOCAL_WRITE
    const mw = b.pd.allocMw(MwType.TYPE_1);
    const rkey = b.qp.bindMw(mw, { wrId: 1, sendFlags: SendFlags.SIGNALED, bindInfo: { mr, addr: mr.addr, length: 64, mwAccessFlags: Access.REMOTE_READ } });
    assert.equal((await waitCompletions(b.cq, 1))[0]!.status, WcStatus.SUCCESS);
    b.qp.bindMw(mw, { wrId: 2, sendFlags: SendFlags.SIGNALED, bindInfo: { mr, addr: 0, length: 0, mwAccessFlags: Access.REMOTE_WRITE } });
    assert.equal((await waitCompletions(b.cq, 1))[0]!.status, WcStatus.SUCCESS);
    mr.dereg(); // unbound: nothing holds the MR
    // The old key reaches nothing.
    const dst = a.pd.regMr(Buffer.alloc(8), Access.LOCAL_WRITE);
    a.qp.postSend({ wrId: 3, opcode: WrOpcode.RDMA_READ, sendFlags: SendFlags.SIGNALED, sgList: [dst.sge()], rdma: { remoteAddr: 0, rkey } });
    assert.equal((await waitCompletions(a.cq, 1))[0]!.status, WcStatus.REM_ACCESS_ERR);
  } finally { await close(); }
});

test('dereg of an MR with a window bound is EINVAL (rxe_dereg_mr, "IBA 10.6.7.2.6") and leaves the MR working; once the window is gone it succeeds', async () => {
  const { a, b, close } = await makePair(QpType.RC);
  try {
    const mem = Buffer.alloc(4096);
    const mr = b.pd.regMr(mem, Access.LOCAL_WRITE | Access.REMOTE_WRITE | Access.MW_BIND);
    const mw = b.pd.allocMw(MwType.TYPE_1);
    b.qp.bindMw(mw, { wrId: 1, sendFlags: SendFlags.SIGNALED, bindInfo: { mr, addr: mr.addr, length: 64, mwAccessFlags: Access.REMOTE_WRITE } });
    assert.equal((await waitCompletions(b.cq, 1))[0]!.status, WcStatus.SUCCESS);
    assert.throws(() => mr.dereg(), (e: unknown) => e instanceof VerbsError && e.code === 'EINVAL' && e.attr === 'mr_handle' && /1 memory window\(s\) bound/.test(e.message));
    const src = a.pd.regMr(Buffer.alloc(8, 0x33), Access.LOCAL_WRITE);
    a.qp.postSend({ wrId: 2, opcode: WrOpcode.RDMA_WRITE, sendFlags: SendFlags.SIGNALED, sgList: [src.sge()], rdma: { remoteAddr: mr.addr + 100, rkey: mr.rkey } });
    assert.equal((await waitCompletions(a.cq, 1))[0]!.status, WcStatus.SUCCESS);
    assert.equal(mem[100], 0x33);
    mw.dealloc();
    mr.dereg();
  } finally { await close(); }
});
