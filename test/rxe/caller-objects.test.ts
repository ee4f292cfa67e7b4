// The caller's objects stay the caller's. A work request belongs to its caller again once postSend/postRecv returns, as with
// ibv_post_send/ibv_post_recv (the provider copies it into its queue): a program that reuses one
// WR object and its SGEs for the next post, as C programs reuse their structs, must get each
// posted request carried out as it was when posted. Also a hardening: a field changed after
// the post into something post_send would have refused must not reach the requester (it would
// throw from the send loop with the WQE's PSNs taken, and jam the send queue).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Access, QpAttr, QpState, QpType, SendFlags, VerbsError, WcOpcode, WcStatus, WrOpcode, type AhAttr, type RecvWr, type SendWr, type Sge, type WorkCompletion } from '../../src/index.js';
import { incRkey } from '../../src/verbs/api.js';
import { makePair, waitCompletions } from '../helpers/pair.js';

test('one SendWr and one RecvWr object reused for every post (wrId, SGE, remote address changed after each): each request is done as posted', async () => {
  const { a, b, close } = await makePair(QpType.RC);
  try {
    const N = 8, LEN = 3000; // two packets per message at the default MTU: the second is built after postSend returned
    const src = a.pd.regMr(Buffer.alloc(N * LEN), Access.LOCAL_WRITE);
    const dst = b.pd.regMr(Buffer.alloc(2 * N * LEN), Access.LOCAL_WRITE | Access.REMOTE_WRITE);
    for (let i = 0; i < N; i++) (src.memory as Buffer).fill(0x41 + i, i * LEN, (i + 1) * LEN);

    // Receives: one RecvWr and one SGE object, changed after each post.
    const rsge: Sge = { ...dst.sge(0, LEN) };
    const rwr: RecvWr = { wrId: 0, sgList: [rsge] };
    for (let i = 0; i < N; i++) {
      rwr.wrId = 100 + i;
      rsge.addr = dst.addr + i * LEN;
      b.qp.postRecv(rwr);
    }
    rwr.wrId = 999;
    rsge.addr = dst.addr + N * LEN; // an area no receive was posted for
    rsge.length = 1;

    // Sends and writes: one SendWr, its sgList array and SGE, changed after each post.
    const ssge: Sge = { ...src.sge(0, LEN) };
    const swr: SendWr = { wrId: 0, opcode: WrOpcode.SEND, sendFlags: SendFlags.SIGNALED, sgList: [ssge] };
    for (let i = 0; i < N; i++) {
      swr.wrId = i;
      ssge.addr = src.addr + i * LEN;
      a.qp.postSend(swr);
    }
    const wwr: SendWr = { wrId: 0, opcode: WrOpcode.RDMA_WRITE, sendFlags: SendFlags.SIGNALED, sgList: [ssge], rdma: { remoteAddr: 0, rkey: dst.rkey } };
    for (let i = 0; i < N; i++) {
      wwr.wrId = 50 + i;
      ssge.addr = src.addr + i * LEN;
      wwr.rdma!.remoteAddr = dst.addr + (N + i) * LEN;
      a.qp.postSend(wwr);
    }
    // Changed after the last post into what post_send refuses: the posted requests do not see it.
    swr.wrId = 777;
    ssge.addr = -1;
    ssge.length = 1 << 30;
    wwr.rdma!.rkey = 'bad' as unknown as number;
    wwr.sgList!.length = 0;

    const sent = await waitCompletions(a.cq, 2 * N);
    assert.deepEqual(sent.map((wc) => [wc.wrId, wc.status]), [
      ...Array.from({ length: N }, (_, i) => [i, WcStatus.SUCCESS]),
      ...Array.from({ length: N }, (_, i) => [50 + i, WcStatus.SUCCESS]),
    ]);
    const got = await waitCompletions(b.cq, N);
    assert.deepEqual(got.map((wc) => [wc.wrId, wc.opcode, wc.status, wc.byteLen]), Array.from({ length: N }, (_, i) => [100 + i, WcOpcode.RECV, WcStatus.SUCCESS, LEN]));
    const mem = dst.memory as Buffer;
    for (let i = 0; i < N; i++) {
      assert.ok(mem.subarray(i * LEN, (i + 1) * LEN).every((x) => x === 0x41 + i), `SEND ${i} landed in receive ${i}'s area, whole`);
      assert.ok(mem.subarray((N + i) * LEN, (N + i + 1) * LEN).every((x) => x === 0x41 + i), `WRITE ${i} landed where it was posted to, whole`);
    }
  } finally {
    await close();
  }
});

test('cq.poll(max, into) fills the caller\'s array (emptied first) and returns it, as ibv_poll_cq fills the caller\'s; a non-array is EINVAL naming it', async () => {
  const { a, b, close } = await makePair(QpType.RC);
  try {
    const src = a.pd.regMr(Buffer.alloc(64), Access.LOCAL_WRITE);
    const dst = b.pd.regMr(Buffer.alloc(64), Access.LOCAL_WRITE | Access.REMOTE_WRITE);
    const into: WorkCompletion[] = [{ wrId: -1 } as WorkCompletion];
    assert.equal(a.cq.poll(4, into), into);
    assert.equal(into.length, 0, 'an empty CQ empties it');
    for (let i = 0; i < 3; i++) a.qp.postSend({ wrId: i, opcode: WrOpcode.RDMA_WRITE, sendFlags: SendFlags.SIGNALED, sgList: [src.sge(0, 8)], rdma: { remoteAddr: dst.addr, rkey: dst.rkey } });
    const got: number[] = [];
    const deadline = Date.now() + 10_000;
    while (got.length < 3 && Date.now() < deadline) {
      const r = a.cq.poll(2, into);
      assert.equal(r, into);
      assert.ok(into.length <= 2, 'at most max');
      got.push(...into.map((wc) => Number(wc.wrId)));
      await new Promise((resolve) => setImmediate(resolve));
    }
    assert.deepEqual(got, [0, 1, 2]);
    for (const bad of [null, {}, 'x', 1, Object.freeze([])]) {
      assert.throws(() => a.cq.poll(1, bad as unknown as WorkCompletion[]), (e: unknown) => e instanceof VerbsError && e.code === 'EINVAL' && /POLL attribute 'into'/.test(e.message));
    }
  } finally {
    await close();
  }
});

test('a WR field read through a getter is read once, at the post: a getter that would give another value later changes nothing posted', async () => {
  const { a, b, close } = await makePair(QpType.RC);
  try {
    const lmr = a.pd.regMr(Buffer.from('abcdefgh'), Access.LOCAL_WRITE);
    const rmr = b.pd.regMr(Buffer.alloc(64), Access.LOCAL_WRITE | Access.REMOTE_WRITE);
    let reads = 0;
    const rdma = { remoteAddr: rmr.addr, get rkey(): number { return ++reads > 1 ? 'not a key' as unknown as number : rmr.rkey; } };
    a.qp.postSend({ wrId: 1, opcode: WrOpcode.RDMA_WRITE, sendFlags: SendFlags.SIGNALED, sgList: [lmr.sge(0, 8)], rdma });
    const [wc] = await waitCompletions(a.cq, 1);
    assert.deepEqual([wc!.wrId, wc!.status], [1, WcStatus.SUCCESS]);
    assert.equal(reads, 1);
    assert.equal((rmr.memory as Buffer).toString('latin1', 0, 8), 'abcdefgh');
  } finally {
    await close();
  }
});

for (const change of ['the MR deregistered', 'the { lkey } object changed'] as const) {
  test(`a BIND_MW keeps the MR's key it was posted with (${change} before the bind runs): the bind goes by that key, as Linux keeps wr.mw.mr_lkey`, async () => {
    const { a, b, close } = await makePair(QpType.RC);
    try {
      const rmr = b.pd.regMr(Buffer.alloc(64 * 1024), Access.LOCAL_WRITE | Access.REMOTE_READ);
      const lmr = a.pd.regMr(Buffer.alloc(64 * 1024), Access.LOCAL_WRITE);
      const bmr = a.pd.regMr(Buffer.alloc(8192), Access.LOCAL_WRITE | Access.MW_BIND);
      const mw = a.pd.allocMw(2);
      const rkey = incRkey(mw.rkey);
      // A READ first, and the bind fenced behind it: the bind runs after this test has changed things.
      a.qp.postSend({ wrId: 1, opcode: WrOpcode.RDMA_READ, sendFlags: SendFlags.SIGNALED, sgList: [lmr.sge(0, 64 * 1024)], rdma: { remoteAddr: rmr.addr, rkey: rmr.rkey } });
      const bare = { lkey: bmr.lkey };
      const dereg = change === 'the MR deregistered';
      a.qp.postSend({ wrId: 2, opcode: WrOpcode.BIND_MW, sendFlags: SendFlags.SIGNALED | SendFlags.FENCE, bindMw: { mw, rkey, bindInfo: { mr: dereg ? bmr : bare, addr: bmr.addr, length: 1024, mwAccessFlags: Access.REMOTE_READ } } });
      if (dereg) bmr.dereg();
      else bare.lkey = 0x12345600; // no MR has this key
      const wcs = await waitCompletions(a.cq, 2);
      assert.deepEqual(wcs.map((wc) => [wc.wrId, wc.status]), [[1, WcStatus.SUCCESS], [2, dereg ? WcStatus.MW_BIND_ERR : WcStatus.SUCCESS]]);
      assert.equal((a.dev.provider as unknown as { counters: { requester_errors: number } }).counters.requester_errors, 0, 'no exception in the send path');
    } finally {
      await close();
    }
  });
}

test('an sg_list longer than max_send_sge / max_recv_sge is refused before anything is copied (an array of length 2^32 - 1 does not hang the post)', async () => {
  const { a, close } = await makePair(QpType.RC);
  try {
    const huge: Sge[] = [];
    huge.length = 2 ** 32 - 1;
    const refused = (e: unknown) => e instanceof VerbsError && e.code === 'EINVAL' && /exceed max_(send|recv)_sge/.test(e.message);
    assert.throws(() => a.qp.postSend({ wrId: 1, opcode: WrOpcode.SEND, sgList: huge }), refused);
    assert.throws(() => a.qp.postRecv({ wrId: 1, sgList: huge }), refused);
  } finally {
    await close();
  }
});

// An address vector is the caller's too: libibverbs copies ibv_ah_attr (and ibv_qp_attr's) into
// the command, so a program may reuse the struct for the next QP or AH.
test('modifyQp keeps a copy of the address vector: the caller changing its object (or a query\'s) changes nothing, and a getter is read once', async () => {
  const { a, b, close } = await makePair(QpType.RC);
  try {
    const gidB = Buffer.from(b.ctx.queryGid());
    const toRtr = (av: unknown) => {
      const qp = a.pd.createQp({ qpType: QpType.RC, sendCq: a.cq, recvCq: a.cq, cap: { maxSendWr: 4, maxRecvWr: 4 } });
      qp.modify({ qpState: QpState.INIT, pkeyIndex: 0, portNum: 1, qpAccessFlags: 0 }, QpAttr.STATE | QpAttr.PKEY_INDEX | QpAttr.PORT | QpAttr.ACCESS_FLAGS);
      qp.modify({ qpState: QpState.RTR, pathMtu: 3, destQpNum: b.qp.qpn, rqPsn: 0, maxDestRdAtomic: 1, minRnrTimer: 1, ahAttr: av as AhAttr },
        QpAttr.STATE | QpAttr.AV | QpAttr.PATH_MTU | QpAttr.DEST_QPN | QpAttr.RQ_PSN | QpAttr.MAX_DEST_RD_ATOMIC | QpAttr.MIN_RNR_TIMER);
      return qp;
    };
    const av: AhAttr = { grh: { dgid: Buffer.from(gidB), hopLimit: 64, sgidIndex: 0, flowLabel: 7 }, isGlobal: true, portNum: 1 };
    const qp = toRtr(av);
    // The struct reused for something else.
    av.grh.dgid.fill(0xee);
    av.grh.hopLimit = 1;
    av.grh.flowLabel = 99;
    av.portNum = 2;
    const expect = (q: ReturnType<typeof qp.query>) => {
      assert.deepEqual([...q.ahAttr!.grh.dgid], [...gidB]);
      assert.deepEqual([q.ahAttr!.grh.hopLimit, q.ahAttr!.grh.flowLabel, q.ahAttr!.portNum], [64, 7, 1]);
    };
    const q = qp.query();
    expect(q);
    // A query's answer is the caller's to change.
    q.ahAttr!.grh.dgid.fill(0);
    q.ahAttr!.grh.hopLimit = 3;
    expect(qp.query());

    // A getter that would hand the provider something the checks never saw.
    let reads = 0;
    const tricky = { grh: { get dgid() { return reads++ === 0 ? Buffer.from(gidB) : new Uint8Array(3); }, sgidIndex: 0 }, isGlobal: true };
    const qp2 = toRtr(tricky);
    assert.equal(reads, 1, 'dgid read once');
    assert.deepEqual([...qp2.query().ahAttr!.grh.dgid], [...gidB]);
    assert.equal(qp2.state, QpState.RTR);
  } finally {
    await close();
  }
});

test('createAh keeps a copy of the address vector: a UD send through it reaches the peer after the caller reused its object, and ah.attr is a copy', async () => {
  const { a, b, close } = await makePair(QpType.UD);
  try {
    const gidB = Buffer.from(b.ctx.queryGid());
    const av: AhAttr = { grh: { dgid: Buffer.from(gidB), hopLimit: 64 } };
    const ah = a.pd.createAh(av);
    av.grh.dgid.fill(0);
    av.grh.dgid[10] = 0xff; av.grh.dgid[11] = 0xff; av.grh.dgid[12] = 127; av.grh.dgid[15] = 9; // ::ffff:127.0.0.9, nobody
    av.grh.hopLimit = 1;
    assert.deepEqual([...ah.attr.grh.dgid], [...gidB]);
    ah.attr.grh.dgid.fill(0);
    assert.deepEqual([...ah.attr.grh.dgid], [...gidB], 'ah.attr hands out a copy');

    const buf = Buffer.alloc(40 + 16);
    b.qp.postRecv({ wrId: 1, sgList: [b.pd.regMr(buf, Access.LOCAL_WRITE).sge()] });
    const smr = a.pd.regMr(Buffer.from('through the AH'), 0);
    a.qp.postSend({ wrId: 2, opcode: WrOpcode.SEND, sendFlags: SendFlags.SIGNALED, sgList: [smr.sge()], ud: { ah, remoteQpn: b.qp.qpn, remoteQkey: 0x11111111 } });
    assert.equal((await waitCompletions(a.cq, 1))[0]!.status, WcStatus.SUCCESS);
    const [wc] = await waitCompletions(b.cq, 1);
    assert.equal(wc!.status, WcStatus.SUCCESS);
    assert.equal(buf.subarray(40, 54).toString(), 'through the AH');

    let reads = 0;
    const gidOnce = { grh: { get dgid() { return reads++ === 0 ? Buffer.from(gidB) : 'not a gid'; } } };
    const ah2 = a.pd.createAh(gidOnce as unknown as AhAttr);
    assert.equal(reads, 1, 'dgid read once');
    assert.deepEqual([...ah2.attr.grh.dgid], [...gidB]);
  } finally {
    await close();
  }
});

test('createQp reads each cap field once: a getter cannot pass the limit check with one value and size the queue with another', async () => {
  const { a, close } = await makePair(QpType.RC);
  try {
    let reads = 0;
    const cap = { get maxSendWr() { return reads++ === 0 ? 4 : 1e9; }, maxRecvWr: 4 };
    const qp = a.pd.createQp({ qpType: QpType.RC, sendCq: a.cq, recvCq: a.cq, cap: cap as unknown as { maxSendWr: number; maxRecvWr: number } });
    assert.equal(reads, 1, 'maxSendWr read once');
    const got = qp.query().cap.maxSendWr;
    assert.ok(got >= 4 && got < 1e6, `the send queue holds ${got}`);
  } finally {
    await close();
  }
});
