import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { Access, QpAttr, QpState, QpType, SendFlags, VerbsError, WcFlags, WcOpcode, WcStatus, WrOpcode, incRkey } from '../../src/index.js';
import { makePair, once, waitCompletions, waitFor } from '../helpers/pair.js';

test('remote access errors: bad key, out of bounds, wrong PD, stale key after rereg', async (t) => {
  const cases: Array<[string, (rmr: any, pdOther: any) => { rkey: number; addr: number }]> = [
    ['bad key byte', (rmr) => ({ rkey: (rmr.rkey ^ 0x01) >>> 0, addr: rmr.addr })],
    ['out of bounds', (rmr) => ({ rkey: rmr.rkey, addr: rmr.addr + 4090 })],
    ['another PD', (_rmr, other) => ({ rkey: other.rkey, addr: other.addr })],
    ['stale key after rereg', (rmr) => { const old = rmr.rkey; rmr.rereg({ access: rmr.access }); return { rkey: old, addr: rmr.addr }; }],
  ];
  for (const [name, pick] of cases) {
    await t.test(name, async () => {
      const { a, b, close } = await makePair(QpType.RC);
      try {
        const lmr = a.pd.regMr(Buffer.alloc(64), Access.LOCAL_WRITE);
        const rmr = b.pd.regMr(Buffer.alloc(4096), Access.LOCAL_WRITE | Access.REMOTE_WRITE | Access.REMOTE_READ);
        const other = b.ctx.allocPd().regMr(Buffer.alloc(4096), Access.LOCAL_WRITE | Access.REMOTE_WRITE);
        const target = pick(rmr, other);
        b.qp.postRecv({ wrId: 9, sgList: [] });
        a.qp.postSend({ wrId: 1, opcode: WrOpcode.RDMA_WRITE, sendFlags: SendFlags.SIGNALED, sgList: [lmr.sge(0, 16)], rdma: { remoteAddr: target.addr, rkey: target.rkey } });
        a.qp.postSend({ wrId: 2, opcode: WrOpcode.SEND, sendFlags: 0, sgList: [lmr.sge(0, 8)] });
        const [e1, e2] = await waitCompletions(a.cq, 2);
        assert.deepEqual([e1!.wrId, e1!.status], [1, WcStatus.REM_ACCESS_ERR]);
        assert.deepEqual([e2!.wrId, e2!.status], [2, WcStatus.WR_FLUSH_ERR]); // unsignaled, but errors always complete
        assert.equal(a.qp.state, QpState.ERR);
        await waitFor('responder in ERR', () => b.qp.state === QpState.ERR);
        const [flushed] = await waitCompletions(b.cq, 1);
        assert.deepEqual([flushed!.wrId, flushed!.status], [9, WcStatus.WR_FLUSH_ERR]);
      } finally {
        await close();
      }
    });
  }
});

test('RNR: no receive posted exhausts rnr_retry; with infinite retry the send waits for the receive', async () => {
  {
    const { a, b, close } = await makePair(QpType.RC, { rnrRetry: 1, minRnrTimer: 1 });
    try {
      const mr = a.pd.regMr(Buffer.alloc(8), 0);
      a.qp.postSend({ wrId: 1, opcode: WrOpcode.SEND, sendFlags: SendFlags.SIGNALED, sgList: [mr.sge()] });
      const [wc] = await waitCompletions(a.cq, 1);
      assert.equal(wc!.status, WcStatus.RNR_RETRY_EXC_ERR);
      assert.ok(b.qp.query().qpState === QpState.RTS);
    } finally { await close(); }
  }
  {
    const { a, b, close } = await makePair(QpType.RC, { rnrRetry: 7, minRnrTimer: 1 });
    try {
      const mr = a.pd.regMr(Buffer.from('late receiver'), 0);
      const dst = Buffer.alloc(64);
      const dmr = b.pd.regMr(dst, Access.LOCAL_WRITE);
      a.qp.postSend({ wrId: 1, opcode: WrOpcode.SEND, sendFlags: SendFlags.SIGNALED, sgList: [mr.sge()] });
      await waitFor('an RNR NAK', () => b.dev.provider.queryDevice() && (b.dev.provider as any).counters.send_rnr_err > 0);
      b.qp.postRecv({ wrId: 5, sgList: [dmr.sge()] });
      const [wc] = await waitCompletions(a.cq, 1);
      assert.equal(wc!.status, WcStatus.SUCCESS);
      assert.equal(dst.subarray(0, 13).toString(), 'late receiver');
    } finally { await close(); }
  }
});

test('moving a QP to ERR flushes every outstanding request in order', async () => {
  const { a, close } = await makePair(QpType.RC);
  try {
    const mr = a.pd.regMr(Buffer.alloc(64), Access.LOCAL_WRITE);
    for (let i = 0; i < 5; i++) a.qp.postRecv({ wrId: i, sgList: [mr.sge()] });
    a.qp.modify({ qpState: QpState.ERR }, QpAttr.STATE);
    const wcs = await waitCompletions(a.cq, 5);
    assert.deepEqual(wcs.map((w) => [w.wrId, w.status]), [0, 1, 2, 3, 4].map((i) => [i, WcStatus.WR_FLUSH_ERR]));
    a.qp.postSend({ wrId: 99, opcode: WrOpcode.SEND, sgList: [] });
    const [late] = await waitCompletions(a.cq, 1);
    assert.deepEqual([late!.wrId, late!.status], [99, WcStatus.WR_FLUSH_ERR]);
  } finally { await close(); }
});

test('memory windows: type 2 bind, remote write through the window, SEND_WITH_INV, EBUSY dereg', async () => {
  const { a, b, close } = await makePair(QpType.RC);
  try {
    const target = Buffer.alloc(8192);
    const bmr = b.pd.regMr(target, Access.LOCAL_WRITE | Access.MW_BIND);
    const mw = b.pd.allocMw(2);
    const rkey = incRkey(mw.rkey);
    b.qp.postSend({ wrId: 1, opcode: WrOpcode.BIND_MW, sendFlags: SendFlags.SIGNALED, bindMw: { mw, rkey, bindInfo: { mr: bmr, addr: bmr.addr + 4096, length: 1024, mwAccessFlags: Access.REMOTE_WRITE } } });
    const [bound] = await waitCompletions(b.cq, 1);
    assert.deepEqual([bound!.status, bound!.opcode], [WcStatus.SUCCESS, WcOpcode.BIND_MW]);
    assert.equal(mw.rkey, rkey);
    assert.throws(() => bmr.dereg(), (e: any) => e.code === 'EINVAL'); // rxe_dereg_mr: IBA 10.6.7.2.6
    const data = randomBytes(100);
    const smr = a.pd.regMr(data, 0);
    a.qp.postSend({ wrId: 2, opcode: WrOpcode.RDMA_WRITE, sendFlags: SendFlags.SIGNALED, sgList: [smr.sge()], rdma: { remoteAddr: bmr.addr + 4096 + 10, rkey } });
    assert.equal((await waitCompletions(a.cq, 1))[0]!.status, WcStatus.SUCCESS);
    assert.ok(target.subarray(4106, 4206).equals(data));
    // The peer invalidates the window with SEND_WITH_INV; the receiver sees WITH_INV.
    b.qp.postRecv({ wrId: 3, sgList: [] });
    a.qp.postSend({ wrId: 4, opcode: WrOpcode.SEND_WITH_INV, invalidateRkey: rkey, sendFlags: SendFlags.SIGNALED, sgList: [] });
    const [inv] = await waitCompletions(b.cq, 1);
    assert.deepEqual([inv!.status, inv!.wcFlags & WcFlags.WITH_INV, inv!.invalidatedRkey], [WcStatus.SUCCESS, WcFlags.WITH_INV, rkey]);
    await waitCompletions(a.cq, 1);
    bmr.dereg(); // no window bound any more
    // The invalidated key no longer reaches memory.
    a.qp.postSend({ wrId: 5, opcode: WrOpcode.RDMA_WRITE, sendFlags: SendFlags.SIGNALED, sgList: [smr.sge()], rdma: { remoteAddr: 4096, rkey } });
    assert.equal((await waitCompletions(a.cq, 1))[0]!.status, WcStatus.REM_ACCESS_ERR);
  } finally { await close(); }
});

test('UD: SEND_WITH_IMM with Q_Key, source QP and GRH in the completion; wrong Q_Key is dropped', async () => {
  const { a, b, close } = await makePair(QpType.UD);
  try {
    const ah = a.pd.createAh({ grh: { dgid: b.ctx.queryGid(), hopLimit: 64 } });
    const buf = Buffer.alloc(40 + 64);
    const rmr = b.pd.regMr(buf, Access.LOCAL_WRITE);
    b.qp.postRecv({ wrId: 1, sgList: [rmr.sge()] });
    const smr = a.pd.regMr(Buffer.from('hello, datagram'), 0);
    a.qp.postSend({ wrId: 7, opcode: WrOpcode.SEND, sendFlags: SendFlags.SIGNALED, sgList: [smr.sge()], ud: { ah, remoteQpn: b.qp.qpn, remoteQkey: 0x1234 } });
    a.qp.postSend({ wrId: 8, opcode: WrOpcode.SEND_WITH_IMM, immData: 9, sendFlags: SendFlags.SIGNALED, sgList: [smr.sge()], ud: { ah, remoteQpn: b.qp.qpn, remoteQkey: 0x11111111 } });
    await waitCompletions(a.cq, 2);
    const [wc] = await waitCompletions(b.cq, 1);
    assert.deepEqual([wc!.wrId, wc!.byteLen, wc!.srcQp, wc!.immData], [1, 40 + 15, a.qp.qpn, 9]);
    assert.equal(wc!.wcFlags & WcFlags.GRH, WcFlags.GRH);
    assert.equal(buf.subarray(40, 55).toString(), 'hello, datagram');
    assert.deepEqual([...buf.subarray(32, 36)], [127, 0, 0, 2]); // IPv4 source in the GRH area
    assert.equal((b.dev.provider as any).counters.qkey_drops, 1);
  } finally { await close(); }
});

test('UD: a message may fill the port MTU (no path MTU applies), one byte more is EINVAL', async () => {
  const { a, b, close } = await makePair(QpType.UD);
  try {
    const mtu = 128 << a.ctx.queryPort(1).activeMtu;
    assert.equal(mtu, 4096, 'loopback devices have a 4096-byte MTU');
    const ah = a.pd.createAh({ grh: { dgid: b.ctx.queryGid(), hopLimit: 64 } });
    const dst = Buffer.alloc(40 + mtu);
    b.qp.postRecv({ wrId: 1, sgList: [b.pd.regMr(dst, Access.LOCAL_WRITE).sge()] });
    const src = randomBytes(mtu + 1);
    const smr = a.pd.regMr(src, 0);
    const ud = { ah, remoteQpn: b.qp.qpn, remoteQkey: 0x11111111 };
    assert.throws(() => a.qp.postSend({ wrId: 1, opcode: WrOpcode.SEND, sgList: [smr.sge()], ud }), (e: any) => e.code === 'EINVAL' && /port MTU 4096/.test(e.message));
    a.qp.postSend({ wrId: 2, opcode: WrOpcode.SEND, sendFlags: SendFlags.SIGNALED, sgList: [smr.sge(0, mtu)], ud });
    const [wc] = await waitCompletions(b.cq, 1);
    assert.deepEqual([wc!.status, wc!.byteLen], [0, 40 + mtu]);
    assert.ok(dst.subarray(40).equals(src.subarray(0, mtu)));
  } finally { await close(); }
});

test('UC: RDMA WRITE and multi-packet SEND', async () => {
  const { a, b, close } = await makePair(QpType.UC);
  try {
    const src = randomBytes(20_000);
    const dst = Buffer.alloc(20_000);
    const smr = a.pd.regMr(src, 0);
    const dmr = b.pd.regMr(dst, Access.LOCAL_WRITE | Access.REMOTE_WRITE);
    a.qp.postSend({ wrId: 1, opcode: WrOpcode.RDMA_WRITE, sendFlags: SendFlags.SIGNALED, sgList: [smr.sge(0, 10_000)], rdma: { remoteAddr: dmr.addr, rkey: dmr.rkey } });
    b.qp.postRecv({ wrId: 2, sgList: [dmr.sge(10_000)] });
    a.qp.postSend({ wrId: 3, opcode: WrOpcode.SEND, sendFlags: SendFlags.SIGNALED, sgList: [smr.sge(10_000)] });
    await waitCompletions(a.cq, 2);
    const [r] = await waitCompletions(b.cq, 1);
    assert.deepEqual([r!.wrId, r!.status, r!.byteLen], [2, WcStatus.SUCCESS, 10_000]);
    assert.ok(dst.equals(src));
  } finally { await close(); }
});

test('SRQ: receives shared by QPs, limit event fires once below the limit', async () => {
  const { a, b, close } = await makePair(QpType.RC);
  try {
    const srq = b.pd.createSrq({ maxWr: 8, maxSge: 1 });
    const qp2 = b.pd.createQp({ qpType: QpType.RC, sendCq: b.cq, recvCq: b.cq, srq, cap: { maxSendWr: 4 } });
    assert.throws(() => qp2.postRecv({ wrId: 0, sgList: [] }), /SRQ/);
    const mr = b.pd.regMr(Buffer.alloc(256), Access.LOCAL_WRITE);
    for (let i = 0; i < 4; i++) srq.postRecv({ wrId: 100 + i, sgList: [mr.sge(i * 64, 64)] });
    srq.modify({ srqLimit: 3 }, 2);
    // Reconnect b's side through qp2 so the sends land on the SRQ.
    const { connect } = await import('../helpers/pair.js');
    const a2 = a.pd.createQp({ qpType: QpType.RC, sendCq: a.cq, recvCq: a.cq, cap: { maxSendWr: 4, maxRecvWr: 1 } });
    connect(a2, { qpn: qp2.qpn, gid: b.ctx.queryGid() });
    connect(qp2, { qpn: a2.qpn, gid: a.ctx.queryGid() });
    const limit = once(b.ctx, 'async-event');
    const smr = a.pd.regMr(Buffer.from('x'), 0);
    a2.postSend([{ wrId: 1, opcode: WrOpcode.SEND, sendFlags: SendFlags.SIGNALED, sgList: [smr.sge()] }, { wrId: 2, opcode: WrOpcode.SEND, sendFlags: SendFlags.SIGNALED, sgList: [smr.sge()] }]);
    const rs = await waitCompletions(b.cq, 2);
    assert.deepEqual(rs.map((w) => w.wrId), [100, 101]);
    const [ev] = await limit;
    assert.equal(ev.name, 'SRQ_LIMIT_REACHED');
    assert.equal(ev.srq, srq);
    assert.equal(srq.query().srqLimit, 0);
  } finally { await close(); }
});

test('post_send checks: state, queue depth, SGE count, inline size, opcode per QP type', async () => {
  const { a, close } = await makePair(QpType.UC, { cap: { maxSendWr: 2, maxSendSge: 1, maxInlineData: 8 } });
  try {
    const mr = a.pd.regMr(Buffer.alloc(64), 0);
    const e = (wr: any) => { try { a.qp.postSend(wr); } catch (err: any) { return err.code + ':' + (err.attr ?? ''); } return 'ok'; };
    assert.equal(e({ wrId: 1, opcode: WrOpcode.RDMA_READ, sgList: [], rdma: { remoteAddr: 0, rkey: 0 } }), 'EINVAL:opcode');
    assert.equal(e({ wrId: 1, opcode: WrOpcode.SEND, sgList: [mr.sge(0, 1), mr.sge(1, 1)] }), 'EINVAL:sg_list');
    // max_inline_data 8 with one SGE is 16: rxe sizes a send WQE for max(16 * max_send_sge, max_inline_data).
    assert.equal(a.qp.cap.maxInlineData, 16);
    assert.equal(e({ wrId: 1, opcode: WrOpcode.SEND, sendFlags: SendFlags.INLINE, sgList: [mr.sge(0, 17)] }), 'EINVAL:send_flags');
    const cq = a.ctx.createCq(4);
    const fresh = a.pd.createQp({ qpType: QpType.RC, sendCq: cq, recvCq: cq, cap: { maxSendWr: 1, maxRecvWr: 1 } });
    assert.throws(() => fresh.postSend({ wrId: 1, opcode: WrOpcode.SEND }), /RESET; post_send needs RTS/);
  } finally { await close(); }
});

test('post_send refuses fields the send path could not use (naming them), and the QP goes on working', async () => {
  const { a, b, close } = await makePair(QpType.RC);
  try {
    const lmr = a.pd.regMr(Buffer.alloc(64), Access.LOCAL_WRITE);
    const rmr = b.pd.regMr(Buffer.alloc(4096), Access.LOCAL_WRITE | Access.REMOTE_WRITE | Access.REMOTE_ATOMIC);
    const psn = a.qp.query().sqPsn;
    const bad: Array<[string, () => void]> = [
      ['atomic', () => a.qp.postSend({ wrId: 1, opcode: WrOpcode.ATOMIC_FETCH_AND_ADD, sgList: [lmr.sge(0, 8)], atomic: { remoteAddr: rmr.addr, rkey: rmr.rkey, compareAdd: 1 as unknown as bigint } })],
      ['atomic', () => a.qp.postSend({ wrId: 1, opcode: WrOpcode.ATOMIC_CMP_AND_SWP, sgList: [lmr.sge(0, 8)], atomic: { remoteAddr: rmr.addr, rkey: rmr.rkey, compareAdd: 1n, swap: -1n } })],
      ['atomic', () => a.qp.postSend({ wrId: 1, opcode: WrOpcode.ATOMIC_FETCH_AND_ADD, sgList: [lmr.sge(0, 8)], atomic: { remoteAddr: rmr.addr, rkey: BigInt(rmr.rkey) as unknown as number, compareAdd: 1n } })],
      ['rdma', () => a.qp.postSend({ wrId: 1, opcode: WrOpcode.RDMA_WRITE, sgList: [lmr.sge(0, 8)], rdma: { remoteAddr: rmr.addr, rkey: 2 ** 32 } })],
      ['imm_data', () => a.qp.postSend({ wrId: 1, opcode: WrOpcode.RDMA_WRITE_WITH_IMM, immData: 7n as unknown as number, sgList: [lmr.sge(0, 8)], rdma: { remoteAddr: rmr.addr, rkey: rmr.rkey } })],
      ['bind_mw', () => a.qp.postSend({ wrId: 1, opcode: WrOpcode.BIND_MW, bindMw: { mw: {}, rkey: 1 } as never })],
      ['invalidate_rkey', () => a.qp.postSend({ wrId: 1, opcode: WrOpcode.LOCAL_INV, invalidateRkey: -1 })],
      ['wr', () => a.qp.postSend(null as never)],
    ];
    for (const [attr, post] of bad) assert.throws(post, (e: unknown) => e instanceof VerbsError && e.code === 'EINVAL' && e.attr === attr, attr);
    assert.equal(a.qp.query().sqPsn, psn, 'no refused request took a PSN');
    // The queue is not jammed: a good request after the bad ones completes.
    a.qp.postSend({ wrId: 2, opcode: WrOpcode.ATOMIC_FETCH_AND_ADD, sendFlags: SendFlags.SIGNALED, sgList: [lmr.sge(0, 8)], atomic: { remoteAddr: rmr.addr, rkey: rmr.rkey, compareAdd: 3n } });
    const [wc] = await waitCompletions(a.cq, 1);
    assert.deepEqual([wc!.wrId, wc!.status], [2, WcStatus.SUCCESS]);
    assert.equal((a.dev.provider as any).counters.requester_errors, 0);
  } finally { await close(); }
});

test('UD: an AH of another PD fails the send with LOC_QP_OP_ERR (Linux rxe_get_av), not a delivery', async () => {
  const { a, b, close } = await makePair(QpType.UD);
  try {
    const ah = a.ctx.allocPd().createAh({ grh: { dgid: b.ctx.queryGid(), hopLimit: 64 } });
    b.qp.postRecv({ wrId: 1, sgList: [b.pd.regMr(Buffer.alloc(128), Access.LOCAL_WRITE).sge()] });
    const smr = a.pd.regMr(Buffer.from('wrong pd'), 0);
    a.qp.postSend({ wrId: 7, opcode: WrOpcode.SEND, sendFlags: SendFlags.SIGNALED, sgList: [smr.sge()], ud: { ah, remoteQpn: b.qp.qpn, remoteQkey: 0x11111111 } });
    const [wc] = await waitCompletions(a.cq, 1);
    assert.deepEqual([wc!.wrId, wc!.status], [7, WcStatus.LOC_QP_OP_ERR]);
    assert.equal(a.qp.state, QpState.ERR);
    assert.equal(b.cq.poll(1).length, 0, 'nothing was delivered');
  } finally { await close(); }
});

test('modify_qp: RESET -> ERR is EINVAL, as in Linux qp_state_table', async () => {
  const { a, close } = await makePair(QpType.RC);
  try {
    const qp = a.pd.createQp({ qpType: QpType.RC, sendCq: a.cq, recvCq: a.cq, cap: { maxSendWr: 4, maxRecvWr: 4 } });
    assert.throws(() => qp.modify({ qpState: QpState.ERR }, QpAttr.STATE), (e: unknown) => e instanceof VerbsError && e.code === 'EINVAL');
    assert.equal(qp.query().qpState, QpState.RESET);
    qp.destroy();
  } finally { await close(); }
});

test('SQD: a message already started finishes, nothing new starts, SQ_DRAINED fires; RTS sends the rest', async () => {
  const { a, b, close } = await makePair(QpType.RC);
  try {
    const big = randomBytes(1 << 20);
    const src = a.pd.regMr(big, 0);
    const dst = Buffer.alloc(1 << 20);
    const rmr = b.pd.regMr(dst, Access.LOCAL_WRITE | Access.REMOTE_WRITE);
    const drained = once(a.ctx, 'async-event');
    const psn0 = a.qp.query().sqPsn;
    const npkts = (1 << 20) / (128 << a.qp.query().pathMtu);
    // Hundreds of packets: the requester sends 64 a turn, so the SQD below comes in the middle.
    a.qp.postSend({ wrId: 1, opcode: WrOpcode.RDMA_WRITE, sendFlags: SendFlags.SIGNALED, sgList: [src.sge()], rdma: { remoteAddr: rmr.addr, rkey: rmr.rkey } });
    a.qp.postSend({ wrId: 2, opcode: WrOpcode.RDMA_WRITE, sendFlags: SendFlags.SIGNALED, sgList: [src.sge(0, 16)], rdma: { remoteAddr: rmr.addr, rkey: rmr.rkey } });
    a.qp.modify({ qpState: QpState.SQD, enSqdAsyncNotify: true }, QpAttr.STATE | QpAttr.EN_SQD_ASYNC_NOTIFY);
    const [first] = await waitCompletions(a.cq, 1);
    assert.deepEqual([first!.wrId, first!.status], [1, WcStatus.SUCCESS]);
    assert.ok(dst.equals(big));
    const [ev] = await drained;
    assert.equal(ev.name, 'SQ_DRAINED');
    assert.equal(a.qp.query().sqDraining, false);
    // The second was only posted: it took no PSN, and waits for RTS.
    assert.equal(a.qp.query().sqPsn, (psn0 + npkts) & 0xffffff);
    assert.equal(a.cq.poll(1).length, 0);
    a.qp.modify({ qpState: QpState.RTS }, QpAttr.STATE);
    const [second] = await waitCompletions(a.cq, 1);
    assert.deepEqual([second!.wrId, second!.status], [2, WcStatus.SUCCESS]);
  } finally { await close(); }
});

test('memory windows: a zero-based type 1 bind, and a bind to a zero-based MR, fail with MW_BIND_ERR (rxe_check_bind_mw)', async () => {
  for (const [what, type, mrAccess, mwAccess] of [
    ['zero-based type 1 window', 1, 0, Access.ZERO_BASED],
    ['type 2 window on a zero-based MR', 2, Access.ZERO_BASED, 0],
  ] as const) {
    const { b, close } = await makePair(QpType.RC);
    try {
      const bmr = b.pd.regMr(Buffer.alloc(8192), Access.LOCAL_WRITE | Access.MW_BIND | mrAccess);
      const mw = b.pd.allocMw(type);
      const bindInfo = { mr: bmr, addr: bmr.addr, length: 1024, mwAccessFlags: Access.REMOTE_WRITE | mwAccess };
      if (type === 1) {
        // ibv_bind_mw refuses a zero-based bind before posting (rdma-core's rxe_bind_mw); a
        // BIND_MW work request reaches the kernel's check, as here.
        assert.throws(() => b.qp.bindMw(mw, { wrId: 1, sendFlags: SendFlags.SIGNALED, bindInfo }),
          (e: unknown) => e instanceof VerbsError && e.code === 'EINVAL' && e.attr === 'bind_info.mw_access_flags');
      }
      b.qp.postSend({ wrId: 1, opcode: WrOpcode.BIND_MW, sendFlags: SendFlags.SIGNALED, bindMw: { mw, rkey: incRkey(mw.rkey), bindInfo } });
      const [wc] = await waitCompletions(b.cq, 1);
      assert.equal(wc!.status, WcStatus.MW_BIND_ERR, what);
    } finally { await close(); }
  }
});

test('ZERO_BASED on an MR moves nothing (rxe_mr_init_user keeps the iova given): the MR is at its iova, before and after REREG, and the flag can be switched alone', async () => {
  const { a, b, close } = await makePair(QpType.RC);
  try {
    const X = 0x100000;
    const mem = Buffer.alloc(4096);
    const mr = b.pd.regMr(mem, Access.LOCAL_WRITE | Access.REMOTE_WRITE | Access.ZERO_BASED, { iova: X });
    assert.equal(mr.addr, X);
    const src = a.pd.regMr(Buffer.alloc(16, 0xab), Access.LOCAL_WRITE);
    a.qp.postSend({ wrId: 1, opcode: WrOpcode.RDMA_WRITE, sendFlags: SendFlags.SIGNALED, sgList: [src.sge()], rdma: { remoteAddr: X + 8, rkey: mr.rkey } });
    assert.equal((await waitCompletions(a.cq, 1))[0]!.status, WcStatus.SUCCESS);
    assert.equal(mem[8], 0xab);
    mr.rereg({ memory: Buffer.alloc(8192), iova: 2 * X });
    assert.equal(mr.addr, 2 * X, 'a new translation takes its iova, zero-based or not');
    const plain = b.pd.regMr(Buffer.alloc(4096), Access.LOCAL_WRITE);
    const at = plain.addr;
    plain.rereg({ access: Access.LOCAL_WRITE | Access.ZERO_BASED });
    assert.equal(plain.addr, at);
    assert.equal(plain.access, Access.LOCAL_WRITE | Access.ZERO_BASED);
  } finally { await close(); }
});

test('CQ resize below the completions it holds is EINVAL naming cqe (rxe_cq_chk_attr), and changes nothing', async () => {
  const { a, close } = await makePair(QpType.RC);
  try {
    const mr = a.pd.regMr(Buffer.alloc(64), Access.LOCAL_WRITE);
    for (let i = 0; i < 3; i++) a.qp.postRecv({ wrId: i, sgList: [mr.sge()] });
    a.qp.modify({ qpState: QpState.ERR }, QpAttr.STATE); // three flush completions queued, at once
    const cqe = a.cq.cqe;
    assert.throws(() => a.cq.resize(2), (e: unknown) => e instanceof VerbsError && e.code === 'EINVAL' && e.attr === 'cqe');
    assert.equal(a.cq.cqe, cqe);
    assert.equal((await waitCompletions(a.cq, 3)).length, 3);
  } finally { await close(); }
});

test('SQD: a started SEND that drew an RNR NAK is resent when the RNR timer fires (not left to the retry timer), then SQ_DRAINED', async () => {
  // retry_cnt 0: were the resend left to the retransmit timer, the SEND would fail with
  // RETRY_EXC_ERR. Its timeout (16: ~270 ms) leaves a cold process time to read the RNR NAK.
  const { a, b, close } = await makePair(QpType.RC, { retryCnt: 0, rnrRetry: 7, minRnrTimer: 1, timeout: 16 });
  try {
    const src = a.pd.regMr(Buffer.from('after the RNR'), 0);
    const dst = Buffer.alloc(64);
    const drained = once(a.ctx, 'async-event');
    a.qp.postSend({ wrId: 1, opcode: WrOpcode.SEND, sendFlags: SendFlags.SIGNALED, sgList: [src.sge()] });
    await waitFor('an RNR NAK', () => (b.dev.provider as any).counters.send_rnr_err > 0);
    a.qp.modify({ qpState: QpState.SQD, enSqdAsyncNotify: true }, QpAttr.STATE | QpAttr.EN_SQD_ASYNC_NOTIFY);
    b.qp.postRecv({ wrId: 5, sgList: [b.pd.regMr(dst, Access.LOCAL_WRITE).sge()] });
    const [wc] = await waitCompletions(a.cq, 1);
    assert.deepEqual([wc!.wrId, wc!.status], [1, WcStatus.SUCCESS]);
    assert.equal(dst.subarray(0, 13).toString(), 'after the RNR');
    assert.equal((await drained)[0].name, 'SQ_DRAINED');
  } finally { await close(); }
});

test('a send path that throws (a bug: here the key table\'s lookup made to throw under the requester) fails its WQE with LOC_QP_OP_ERR, counted, and nothing escapes', async () => {
  const { a, b, close } = await makePair(QpType.RC);
  try {
    const lmr = a.pd.regMr(Buffer.alloc(64), Access.LOCAL_WRITE);
    const rmr = b.pd.regMr(Buffer.alloc(64), Access.LOCAL_WRITE | Access.REMOTE_WRITE);
    // post_send checks a WRITE's SGEs without looking their keys up (the requester does, as
    // Linux's copy_data): a lookup that throws is a send path that throws.
    const keys = (a.dev.provider as any).keys as { resolveLocal: (...args: unknown[]) => unknown };
    const resolveLocal = keys.resolveLocal;
    keys.resolveLocal = () => { throw new Error('a bug in the send path'); };
    try {
      a.qp.postSend({ wrId: 1, opcode: WrOpcode.RDMA_WRITE, sendFlags: SendFlags.SIGNALED, sgList: [lmr.sge(0, 8)], rdma: { remoteAddr: rmr.addr, rkey: rmr.rkey } });
    } finally {
      keys.resolveLocal = resolveLocal;
    }
    const [wc] = await waitCompletions(a.cq, 1);
    assert.deepEqual([wc!.wrId, wc!.status], [1, WcStatus.LOC_QP_OP_ERR]);
    assert.equal(a.qp.state, QpState.ERR);
    assert.equal((a.dev.provider as any).counters.requester_errors, 1);
  } finally { await close(); }
});

test('objects of another context are refused by name (handles are per context: one would name whatever this context has under its number)', async () => {
  const { a, b, close } = await makePair(QpType.UD);
  try {
    const other = a.dev.open();
    try {
      const foreignCq = other.createCq(8);
      const foreignAh = other.allocPd().createAh({ grh: { dgid: b.ctx.queryGid(), hopLimit: 64 } });
      const refused = (attr: string) => (e: unknown) => e instanceof VerbsError && e.code === 'EINVAL' && e.attr === attr;
      assert.throws(() => a.pd.createQp({ qpType: QpType.UD, sendCq: foreignCq, recvCq: a.cq, cap: { maxSendWr: 1, maxRecvWr: 1 } }), refused('send_cq'));
      assert.throws(() => a.pd.createQp({ qpType: QpType.UD, cap: { maxSendWr: 1, maxRecvWr: 1 } } as never), refused('send_cq'));
      const smr = a.pd.regMr(Buffer.from('x'), 0);
      assert.throws(() => a.qp.postSend({ wrId: 1, opcode: WrOpcode.SEND, sgList: [smr.sge()], ud: { ah: foreignAh, remoteQpn: b.qp.qpn, remoteQkey: 0x11111111 } }), refused('ud'));
    } finally { other.close(); }
  } finally { await close(); }
});
