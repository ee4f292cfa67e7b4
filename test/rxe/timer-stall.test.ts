// The retransmit timer after the event loop was held up longer than the timeout (a long
// synchronous stretch, a GC): nothing was lost, so nothing may time out. Found by review: the
// timer ran in node's timers phase before the ACK waiting in the socket was read (the poll
// phase comes after), and its wait had started when the packet was built, before the code that
// posted it had finished and the packet had left. With retry_cnt 0 a healthy WRITE failed
// RETRY_EXC_ERR; with more retries the whole window was resent and halved.
// The responder runs in a worker thread, so it answers while this thread is busy.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Worker } from 'node:worker_threads';
import {
  Access, connectQp, createRxeDevice, gidFromAddress, gidToString, queryRxeCounters, QpType, rxeOf, SendFlags, WcStatus, wcStatusStr, WrOpcode, type QP,
} from '../../src/index.js';

const INDEX = new URL('../../src/index.js', import.meta.url).href;

const RESPONDER = `
  const { parentPort } = await import('node:worker_threads');
  const { Access, connectQp, createRxeDevice, gidFromAddress, gidToString, QpType, rxeOf } = await import(${JSON.stringify(INDEX)});
  const dev = await createRxeDevice({ address: '127.0.0.3', port: 0 });
  const ctx = dev.open();
  const pd = ctx.allocPd();
  const cq = ctx.createCq(16);
  const mr = pd.regMr(Buffer.alloc(1 << 16), Access.LOCAL_WRITE | Access.REMOTE_WRITE);
  const qps = [0, 1].map(() => pd.createQp({ qpType: QpType.RC, sendCq: cq, recvCq: cq, cap: { maxSendWr: 4, maxRecvWr: 4 } }));
  parentPort.postMessage({ qpns: qps.map((q) => q.qpn), gid: gidToString(ctx.queryGid()), addr: mr.addr, rkey: mr.rkey, port: rxeOf(dev).port });
  parentPort.once('message', async (peer) => {
    qps.forEach((q, i) => connectQp(q, { qpn: peer.qpns[i], psn: 0, gid: gidFromAddress(peer.gid) }, { psn: 0 }));
    parentPort.postMessage('rts');
    parentPort.once('message', async () => { ctx.close(); await dev.close(); parentPort.close(); });
  });
`;
function busy(ms: number): void {
  const until = performance.now() + ms;
  while (performance.now() < until) { /* the application computing */ }
}

describe('rxe retransmit timer after an event-loop stall longer than the timeout', () => {
  it('a WRITE acknowledged during the stall, or posted just before it, completes SUCCESS with no timeout (retry_cnt 0)', async () => {
    const w = new Worker(RESPONDER, { eval: true, type: 'module' } as unknown as ConstructorParameters<typeof Worker>[1]);
    const next = () => new Promise<unknown>((resolve, reject) => { w.once('message', resolve); w.once('error', reject); });
    const peer = await next() as { qpns: number[]; gid: string; addr: number; rkey: number; port: number };
    const dev = await createRxeDevice({ address: '127.0.0.2', port: peer.port });
    const ctx = dev.open();
    try {
      const pd = ctx.allocPd();
      const cq = ctx.createCq(16);
      const mr = pd.regMr(Buffer.alloc(1 << 16), Access.LOCAL_WRITE);
      const [warm, qp] = [0, 1].map(() => pd.createQp({ qpType: QpType.RC, sendCq: cq, recvCq: cq, cap: { maxSendWr: 4, maxRecvWr: 4 } })) as [QP, QP];
      const rts = next();
      w.postMessage({ qpns: [warm.qpn, qp.qpn], gid: gidToString(ctx.queryGid()) });
      await rts;
      const remote = (i: number) => ({ qpn: peer.qpns[i]!, psn: 0, gid: gidFromAddress(peer.gid) });
      // The warm-up pair has retries (a cold worker may answer late); the measured one, with
      // timeout 15 (134 ms), none to spend.
      connectQp(warm, remote(0), { psn: 0 });
      connectQp(qp, remote(1), { psn: 0, timeout: 15, retryCnt: 0 });
      const write = (q: QP, wrId: number) => q.postSend({ wrId, opcode: WrOpcode.RDMA_WRITE, sendFlags: SendFlags.SIGNALED, sgList: [mr.sge(0, 4096)], rdma: { remoteAddr: peer.addr, rkey: peer.rkey } });
      const done = async () => {
        const wc = await cq.next({ signal: AbortSignal.timeout(5000) });
        assert.equal(wc.status, WcStatus.SUCCESS, `wr ${String(wc.wrId)}: ${wcStatusStr(wc.status)}`);
      };
      for (let i = 0; i < 50; i++) { write(warm, 100 + i); await done(); }
      write(qp, 0);
      await done(); // a timer may still run from it when the next WRITE goes out
      const before = queryRxeCounters(ctx, qp).qp;
      // The stall in the code that posted, before the packet has left.
      write(qp, 1);
      busy(400);
      await done();
      // The packet has left and the completion is awaited; another callback stalls, and the
      // ACK comes meanwhile.
      write(qp, 2);
      const second = done();
      queueMicrotask(() => busy(400));
      await second;
      const after = queryRxeCounters(ctx, qp).qp;
      assert.equal(after.timeouts! - before.timeouts!, 0, 'timeouts counted');
      assert.equal((after.retransmits ?? 0) - (before.retransmits ?? 0), 0, 'packets resent');
    } finally {
      ctx.close();
      await dev.close();
      w.postMessage('close');
      await new Promise((resolve) => w.once('exit', resolve));
    }
  });
});

describe('rxe retransmit timer without a synchronous read (node:dgram path)', () => {
  it('a lost packet still times out after one timeout while the application keeps posting (the second look does not start the wait over)', async () => {
    const { default: dgram } = await import('node:dgram');
    const a = await createRxeDevice({ address: '127.0.0.2', port: 0, recvmmsg: false });
    const b = await createRxeDevice({ address: '127.0.0.3', port: rxeOf(a).port, recvmmsg: false });
    const u = dgram.createSocket('udp4');
    let stop = false;
    try {
      const mk = (dev: Awaited<ReturnType<typeof createRxeDevice>>) => {
        const ctx = dev.open();
        const pd = ctx.allocPd();
        const cq = ctx.createCq(4096);
        const mr = pd.regMr(Buffer.alloc(65536), Access.LOCAL_WRITE | Access.REMOTE_WRITE);
        const qp = pd.createQp({ qpType: QpType.RC, sendCq: cq, recvCq: cq, cap: { maxSendWr: 2048, maxRecvWr: 4 } });
        return { ctx, cq, mr, qp };
      };
      const A = mk(a), B = mk(b);
      connectQp(A.qp, { qpn: B.qp.qpn, psn: 0, gid: B.ctx.queryGid() }, { psn: 0 });
      // timeout 14: 67 ms; no retry: the first timeout fails the WRITE.
      connectQp(B.qp, { qpn: A.qp.qpn, psn: 0, gid: A.ctx.queryGid() }, { psn: 0, timeout: 14, retryCnt: 0 });
      rxeOf(b).faults = { drop: 1 };
      const post = (id: number) => B.qp.postSend({ wrId: id, opcode: WrOpcode.RDMA_WRITE, sendFlags: SendFlags.SIGNALED, sgList: [B.mr.sge(0, 64)], rdma: { remoteAddr: A.mr.addr, rkey: A.mr.rkey } });
      const t0 = performance.now();
      post(0);
      // The application posts a WRITE for each datagram of its own it reads (callbacks in the
      // poll phase, where node:dgram's reads come too), one every millisecond or so.
      await new Promise<void>((r) => u.bind(0, '127.0.0.1', r));
      let n = 1;
      u.on('message', () => {
        if (stop) return;
        try { post(n++); } catch { stop = true; return; }
        setTimeout(() => { if (!stop) u.send('x', u.address().port, '127.0.0.1'); }, 1);
      });
      u.send('x', u.address().port, '127.0.0.1');
      const wc = await B.cq.next({ signal: AbortSignal.timeout(10_000) });
      stop = true;
      const dt = performance.now() - t0;
      assert.equal(wc.status, WcStatus.RETRY_EXC_ERR, wcStatusStr(wc.status));
      assert.ok(dt < 67 * 3, `the timeout came after ${dt.toFixed(0)} ms (one is 67 ms; ${n} WRs posted meanwhile)`);
      rxeOf(b).faults = undefined;
      A.ctx.close();
      B.ctx.close();
    } finally {
      stop = true;
      u.close();
      await a.close();
      await b.close();
    }
  });
});
