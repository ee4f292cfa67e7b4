// `softrdma demo`: no configuration needed. Two rxe devices on 127.0.0.2 and 127.0.0.3 in
// this process, a connected RC QP pair, and a short run of RDMA WRITE bandwidth and SEND
// ping-pong latency, with the packet counters that show what crossed the wire.

import { randomBytes } from 'node:crypto';
import { Access, connectQp, createRxeDevice, rxeOf, QpType, SendFlags, WcStatus, WrOpcode, type CQ, type WorkCompletion } from '../index.js';
import { devinfo } from './devinfo.js';

async function poll(cq: CQ, n: number): Promise<WorkCompletion[]> {
  const out: WorkCompletion[] = [];
  const deadline = Date.now() + 30_000;
  while (out.length < n) {
    out.push(...cq.poll(n - out.length));
    if (out.length < n) {
      if (Date.now() > deadline) throw new Error('demo: timed out waiting for completions');
      await new Promise((r) => setImmediate(r));
    }
  }
  for (const w of out) if (w.status !== WcStatus.SUCCESS) throw new Error(`demo: completion failed with status ${w.status}`);
  return out;
}

export async function demo(): Promise<void> {
  const port = 4791 + 1000 + (process.pid % 1000); // avoid clashing with a real rxe on 4791
  const da = await createRxeDevice({ address: '127.0.0.2', port, name: 'rxe_demo_a' });
  const db = await createRxeDevice({ address: '127.0.0.3', port, name: 'rxe_demo_b' });
  try {
    console.log(devinfo([da, db]));
    const a = da.open(), b = db.open();
    const pa = a.allocPd(), pb = b.allocPd();
    const ca = a.createCq(1024), cb = b.createCq(1024);
    const cap = { maxSendWr: 512, maxRecvWr: 512, maxSendSge: 1, maxRecvSge: 1, maxInlineData: 64 };
    const qa = pa.createQp({ qpType: QpType.RC, sendCq: ca, recvCq: ca, cap });
    const qb = pb.createQp({ qpType: QpType.RC, sendCq: cb, recvCq: cb, cap });
    connectQp(qa, { qpn: qb.qpn, psn: 0, gid: b.queryGid() }, { mtu: a.queryPort().activeMtu });
    connectQp(qb, { qpn: qa.qpn, psn: 0, gid: a.queryGid() }, { mtu: b.queryPort().activeMtu });
    console.log(`RC QP ${qa.qpn} on ${da.name} (127.0.0.2) <-> RC QP ${qb.qpn} on ${db.name} (127.0.0.3), UDP port ${port}\n`);

    const size = 64 * 1024, iters = 1000;
    const src = randomBytes(size), dst = Buffer.alloc(size);
    const smr = pa.regMr(src, 0);
    const dmr = pb.regMr(dst, Access.LOCAL_WRITE | Access.REMOTE_WRITE);
    const t0 = process.hrtime.bigint();
    let posted = 0, done = 0;
    while (done < iters) {
      while (posted < iters && posted - done < 64) {
        qa.postSend({ wrId: posted++, opcode: WrOpcode.RDMA_WRITE, sendFlags: SendFlags.SIGNALED, sgList: [smr.sge()], rdma: { remoteAddr: dmr.addr, rkey: dmr.rkey } });
      }
      done += (await poll(ca, 1)).length;
    }
    const secs = Number(process.hrtime.bigint() - t0) / 1e9;
    if (!dst.equals(src)) throw new Error('demo: data mismatch');
    console.log(`RDMA WRITE ${size} B x ${iters}: ${((size * iters) / secs / 1e6).toFixed(1)} MB/s (${(iters / secs).toFixed(0)} msg/s), data verified`);

    const ping = pa.regMr(Buffer.alloc(2), Access.LOCAL_WRITE), pong = pb.regMr(Buffer.alloc(2), Access.LOCAL_WRITE);
    const rounds = 2000;
    qa.postRecv({ wrId: 0, sgList: [ping.sge()] });
    qb.postRecv({ wrId: 0, sgList: [pong.sge()] });
    const t1 = process.hrtime.bigint();
    for (let i = 0; i < rounds; i++) {
      qa.postSend({ wrId: i, opcode: WrOpcode.SEND, sendFlags: SendFlags.INLINE, sgList: [ping.sge()] });
      await poll(cb, 1);
      qb.postRecv({ wrId: i, sgList: [pong.sge()] });
      qb.postSend({ wrId: i, opcode: WrOpcode.SEND, sendFlags: SendFlags.INLINE, sgList: [pong.sge()] });
      await poll(ca, 1);
      qa.postRecv({ wrId: i, sgList: [ping.sge()] });
    }
    const rtt = Number(process.hrtime.bigint() - t1) / 1e3 / rounds;
    console.log(`SEND ping-pong 2 B x ${rounds}: ${rtt.toFixed(1)} us round trip (${(rtt / 2).toFixed(1)} us one way)`);
    const c = rxeOf(da).counters;
    console.log(`\n${da.name} counters: sent_pkts=${c.sent_pkts} rcvd_pkts=${c.rcvd_pkts} icrc_errors=${c.icrc_errors} malformed_drops=${c.malformed_drops}`);
    console.log('\nBoth devices ran in this one process; see README for two processes and for perftest-style runs.');
  } finally {
    await da.close();
    await db.close();
  }
}
