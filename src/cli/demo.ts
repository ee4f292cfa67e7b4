// `softrdma demo`: no configuration needed. Two rxe devices on 127.0.0.2 and 127.0.0.3 in
// this process, a connected RC QP pair, and a short run of RDMA WRITE bandwidth and SEND
// ping-pong latency, with the packet counters that show what crossed the wire.

import { randomBytes } from 'node:crypto';
import { Access, connectQp, createRxeDevice, rxeOf, QpType, SendFlags, WcStatus, WrOpcode, type CQ, type WorkCompletion } from '../index.js';
import { parseArgs } from 'node:util';
import { mtuBytes } from '../index.js';
import { devinfo } from './devinfo.js';
import { Progress } from '../tools/progress.js';

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

export const DEMO_USAGE = `usage: softrdma demo [-v]

Two rxe devices in this one process (127.0.0.2 and 127.0.0.3), a connected RC queue pair,
then RDMA WRITE bandwidth and SEND ping-pong latency. Needs no configuration.

  -v, --verbose   also show both devices as ibv_devinfo -v does, and their packet counters`;

const MiB = 1 << 20;

export async function demo(args: string[] = []): Promise<void> {
  const { values } = parseArgs({ args, options: { verbose: { type: 'boolean', short: 'v' } } });
  const port = 4791 + 1000 + (process.pid % 1000); // avoid clashing with a real rxe on 4791
  const da = await createRxeDevice({ address: '127.0.0.2', port, name: 'rxe_demo_a' });
  const db = await createRxeDevice({ address: '127.0.0.3', port, name: 'rxe_demo_b' });
  try {
    console.log(`softrdma demo: RDMA between two software RoCEv2 devices, ${da.name} (127.0.0.2) and ${db.name} (127.0.0.3),
both in this process; every packet between them is a real RoCEv2 datagram (UDP port ${port}), as a kernel rxe sends it.
Below: RDMA WRITE bandwidth (64 KiB messages, checked byte for byte) and the round trip of 2-byte SENDs.
`);
    if (values.verbose) console.log(devinfo([da, db], { verbose: true }));
    const a = da.open(), b = db.open();
    const pa = a.allocPd(), pb = b.allocPd();
    const ca = a.createCq(1024), cb = b.createCq(1024);
    const cap = { maxSendWr: 512, maxRecvWr: 512, maxSendSge: 1, maxRecvSge: 1, maxInlineData: 64 };
    const qa = pa.createQp({ qpType: QpType.RC, sendCq: ca, recvCq: ca, cap });
    const qb = pb.createQp({ qpType: QpType.RC, sendCq: cb, recvCq: cb, cap });
    connectQp(qa, { qpn: qb.qpn, psn: 0, gid: b.queryGid() }, { mtu: a.queryPort().activeMtu });
    connectQp(qb, { qpn: qa.qpn, psn: 0, gid: a.queryGid() }, { mtu: b.queryPort().activeMtu });
    console.log(`  queue pair    RC QP 0x${qa.qpn.toString(16)} on ${da.name} <-> RC QP 0x${qb.qpn.toString(16)} on ${db.name}, path MTU ${mtuBytes(a.queryPort().activeMtu)} B`);

    const size = 64 * 1024, iters = 1000;
    const src = randomBytes(size), dst = Buffer.alloc(size);
    const smr = pa.regMr(src, 0);
    const dmr = pb.regMr(dst, Access.LOCAL_WRITE | Access.REMOTE_WRITE);
    let posted = 0, done = 0;
    const wp = new Progress('RDMA WRITE', iters, () => done);
    const t0 = process.hrtime.bigint();
    while (done < iters) {
      while (posted < iters && posted - done < 64) {
        qa.postSend({ wrId: posted++, opcode: WrOpcode.RDMA_WRITE, sendFlags: SendFlags.SIGNALED, sgList: [smr.sge()], rdma: { remoteAddr: dmr.addr, rkey: dmr.rkey } });
      }
      done += (await poll(ca, 1)).length;
    }
    const secs = Number(process.hrtime.bigint() - t0) / 1e9;
    wp.done();
    if (!dst.equals(src)) throw new Error('demo: data mismatch');
    console.log(`  RDMA WRITE    ${size / 1024} KiB x ${iters}: ${((size * iters) / secs / MiB).toFixed(1)} MiB/s (${(iters / secs).toFixed(0)} msg/s), data verified`);

    const ping = pa.regMr(Buffer.alloc(2), Access.LOCAL_WRITE), pong = pb.regMr(Buffer.alloc(2), Access.LOCAL_WRITE);
    const rounds = 2000;
    let round = 0;
    qa.postRecv({ wrId: 0, sgList: [ping.sge()] });
    qb.postRecv({ wrId: 0, sgList: [pong.sge()] });
    const pp = new Progress('SEND ping-pong', rounds, () => round);
    const t1 = process.hrtime.bigint();
    for (; round < rounds; round++) {
      const i = round;
      qa.postSend({ wrId: i, opcode: WrOpcode.SEND, sendFlags: SendFlags.INLINE, sgList: [ping.sge()] });
      await poll(cb, 1);
      qb.postRecv({ wrId: i, sgList: [pong.sge()] });
      qb.postSend({ wrId: i, opcode: WrOpcode.SEND, sendFlags: SendFlags.INLINE, sgList: [pong.sge()] });
      await poll(ca, 1);
      qa.postRecv({ wrId: i, sgList: [ping.sge()] });
    }
    const rtt = Number(process.hrtime.bigint() - t1) / 1e3 / rounds;
    pp.done();
    console.log(`  SEND          2 B ping-pong x ${rounds}: ${rtt.toFixed(1)} us round trip (${(rtt / 2).toFixed(1)} us one way)`);
    const c = rxeOf(da).counters;
    console.log(`  packets       ${da.name} sent ${c.sent_pkts} and received ${c.rcvd_pkts}: ${c.icrc_errors} ICRC errors, ${c.malformed_drops} malformed`);
    if (values.verbose) {
      const nonzero = (x: Record<string, number>) => Object.entries(x).filter(([, v]) => v !== 0).map(([k, v]) => `${k}=${v}`).join(' ');
      console.log(`\n${da.name} counters: ${nonzero(c as unknown as Record<string, number>)}\n${db.name} counters: ${nonzero(rxeOf(db).counters as unknown as Record<string, number>)}`);
    }
    console.log(`\nNext: softrdma demo -v (the devices as ibv_devinfo shows them), softrdma perftest --help (two processes
or two machines, perftest's tables), softrdma smc-demo (SMC-D sockets next to TCP).`);
  } finally {
    await da.close();
    await db.close();
  }
}
