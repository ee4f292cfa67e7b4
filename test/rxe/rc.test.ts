import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { Access, QpType, SendFlags, WcFlags, WcOpcode, WcStatus, WrOpcode, RxeMethod, RxeAttr, Obj } from '../../src/index.js';
import { makePair, waitCompletions } from '../helpers/pair.js';

test('RC SEND (multi-packet, several SGEs) and SEND_WITH_IMM arrive byte-exact', async () => {
  const { a, b, close } = await makePair(QpType.RC);
  try {
    const src = randomBytes(10_000 + 123);
    const dst = Buffer.alloc(16_384);
    const smr = a.pd.regMr(src, 0);
    const rmr = b.pd.regMr(dst, Access.LOCAL_WRITE);
    b.qp.postRecv({ wrId: 1, sgList: [rmr.sge(0, 5000), rmr.sge(5000)] });
    b.qp.postRecv({ wrId: 2, sgList: [rmr.sge(0, 100)] });
    a.qp.postSend({ wrId: 10, opcode: WrOpcode.SEND, sendFlags: SendFlags.SIGNALED, sgList: [smr.sge(0, 4000), smr.sge(4000)] });
    a.qp.postSend({ wrId: 11, opcode: WrOpcode.SEND_WITH_IMM, immData: 0xdeadbeef, sendFlags: SendFlags.SIGNALED | SendFlags.INLINE, sgList: [smr.sge(0, 3)] });
    const [s1, s2] = await waitCompletions(a.cq, 2);
    assert.deepEqual([s1!.wrId, s1!.status, s1!.opcode], [10, WcStatus.SUCCESS, WcOpcode.SEND]);
    // Linux make_send_cqe: IB_WC_WITH_IMM on a successful SEND_WITH_IMM's completion.
    assert.deepEqual([s1!.wcFlags, s2!.wrId, s2!.status, s2!.wcFlags], [0, 11, WcStatus.SUCCESS, WcFlags.WITH_IMM]);
    const [r1, r2] = await waitCompletions(b.cq, 2);
    // Linux do_complete: IB_WC_GRH on every successful receive, src_qp only from a DETH (0 on RC).
    assert.deepEqual([r1!.wrId, r1!.status, r1!.opcode, r1!.byteLen, r1!.srcQp, r1!.wcFlags], [1, WcStatus.SUCCESS, WcOpcode.RECV, src.length, 0, WcFlags.GRH]);
    assert.ok(dst.subarray(0, src.length).equals(src));
    assert.deepEqual([r2!.wrId, r2!.byteLen, r2!.immData, r2!.wcFlags], [2, 3, 0xdeadbeef, WcFlags.GRH | WcFlags.WITH_IMM]);
  } finally {
    await close();
  }
});

test('RC RDMA WRITE, WRITE_WITH_IMM, READ and atomics', async () => {
  const { a, b, close } = await makePair(QpType.RC);
  try {
    const local = Buffer.alloc(1 << 20);
    const remote = randomBytes(1 << 20);
    const lmr = a.pd.regMr(local, Access.LOCAL_WRITE);
    const rmr = b.pd.regMr(remote, Access.LOCAL_WRITE | Access.REMOTE_WRITE | Access.REMOTE_READ | Access.REMOTE_ATOMIC);
    // READ 300 KiB (many response packets) from the remote buffer.
    a.qp.postSend({ wrId: 1, opcode: WrOpcode.RDMA_READ, sendFlags: SendFlags.SIGNALED, sgList: [lmr.sge(0, 300_000)], rdma: { remoteAddr: rmr.addr + 1000, rkey: rmr.rkey } });
    const [rd] = await waitCompletions(a.cq, 1);
    assert.equal(rd!.status, WcStatus.SUCCESS);
    assert.ok(local.subarray(0, 300_000).equals(remote.subarray(1000, 301_000)));
    // WRITE it back elsewhere, then WRITE_WITH_IMM consuming a receive.
    a.qp.postSend({ wrId: 2, opcode: WrOpcode.RDMA_WRITE, sendFlags: SendFlags.SIGNALED, sgList: [lmr.sge(0, 300_000)], rdma: { remoteAddr: rmr.addr + 500_000, rkey: rmr.rkey } });
    b.qp.postRecv({ wrId: 77, sgList: [] });
    a.qp.postSend({ wrId: 3, opcode: WrOpcode.RDMA_WRITE_WITH_IMM, immData: 42, sendFlags: SendFlags.SIGNALED, sgList: [lmr.sge(0, 8)], rdma: { remoteAddr: rmr.addr, rkey: rmr.rkey } });
    const w = await waitCompletions(a.cq, 2);
    assert.deepEqual(w.map((c) => c.status), [0, 0]);
    const [imm] = await waitCompletions(b.cq, 1);
    assert.deepEqual([imm!.wrId, imm!.opcode, imm!.immData, imm!.byteLen], [77, WcOpcode.RECV_RDMA_WITH_IMM, 42, 8]);
    assert.ok(remote.subarray(500_000, 800_000).equals(local.subarray(0, 300_000)));
    // Atomics on an 8-byte aligned word.
    remote.writeBigUInt64LE(100n, 4096);
    a.qp.postSend({ wrId: 4, opcode: WrOpcode.ATOMIC_FETCH_AND_ADD, sendFlags: SendFlags.SIGNALED, sgList: [lmr.sge(0, 8)], atomic: { remoteAddr: rmr.addr + 4096, rkey: rmr.rkey, compareAdd: 5n } });
    a.qp.postSend({ wrId: 5, opcode: WrOpcode.ATOMIC_CMP_AND_SWP, sendFlags: SendFlags.SIGNALED, sgList: [lmr.sge(8, 8)], atomic: { remoteAddr: rmr.addr + 4096, rkey: rmr.rkey, compareAdd: 105n, swap: 7n } });
    a.qp.postSend({ wrId: 6, opcode: WrOpcode.ATOMIC_CMP_AND_SWP, sendFlags: SendFlags.SIGNALED, sgList: [lmr.sge(16, 8)], atomic: { remoteAddr: rmr.addr + 4096, rkey: rmr.rkey, compareAdd: 999n, swap: 1n } });
    const at = await waitCompletions(a.cq, 3);
    assert.deepEqual(at.map((c) => [c.wrId, c.status, c.opcode]), [[4, 0, WcOpcode.FETCH_ADD], [5, 0, WcOpcode.COMP_SWAP], [6, 0, WcOpcode.COMP_SWAP]]);
    assert.deepEqual([local.readBigUInt64LE(0), local.readBigUInt64LE(8), local.readBigUInt64LE(16)], [100n, 105n, 7n]);
    assert.equal(remote.readBigUInt64LE(4096), 7n);
    // The driver-namespace counters method works through the same uapi.
    const counters = a.ctx.invoke(Obj.QP, RxeMethod.QP_QUERY_COUNTERS, { 0: a.qp.handle })[RxeAttr.COUNTERS] as Record<string, number>;
    // Request packets a sent: the READ 1, the WRITE 300,000 B at path MTU 1024 293, WRITE_WITH_IMM 1,
    // the atomics 3. More when a retry timer fired: the pair's timeout 10 (4 ms) is shorter than a
    // cold process's first 300 KiB READ takes, and the retried READ comes back as duplicates.
    assert.ok(counters.sent_pkts! >= 298, JSON.stringify(counters));
  } finally {
    await close();
  }
});

test('a 64 MiB RDMA WRITE stream arrives byte-exact', async () => {
  const { a, b, close } = await makePair(QpType.RC, { mtu: 5 });
  try {
    const size = 4 << 20, msgs = 16;
    const src = randomBytes(size);
    const dst = Buffer.alloc(size);
    const smr = a.pd.regMr(src, 0);
    const dmr = b.pd.regMr(dst, Access.LOCAL_WRITE | Access.REMOTE_WRITE);
    for (let i = 0; i < msgs; i++) {
      a.qp.postSend({ wrId: i, opcode: WrOpcode.RDMA_WRITE, sendFlags: SendFlags.SIGNALED, sgList: [smr.sge()], rdma: { remoteAddr: dmr.addr, rkey: dmr.rkey } });
    }
    const wcs = await waitCompletions(a.cq, msgs, 60_000);
    assert.ok(wcs.every((c) => c.status === WcStatus.SUCCESS));
    assert.ok(dst.equals(src));
  } finally {
    await close();
  }
});
