// A lost AckReq packet while several RC QPs of one device send (window.ts ackEvery): the packets
// the QP sends after its ask show the responder the gap, whose sequence NAK brings the resend at
// once. An ask placed as the last packet before the QP's share of the window fills had nothing
// behind it, and the QP waited for its retransmit timer (a review's repro of the first version
// of the shared-window asks: 4-9 timeouts a run, 0-1 before).

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Access, QpType, SendFlags, WcStatus, WrOpcode, rxeOf } from '../../src/index.js';
import { connect, openSide, waitCompletions } from '../helpers/pair.js';

const QPS = 8;
const MSG = 1 << 20;
const PER_QP = 8; // 8 MiB a QP: 2048 packets of 4096 bytes
const PSN0 = 0x100;
/** No drop among a QP's last packets: a lost last ask has nothing after it on any design. */
const TAIL = 256;

/** Request opcodes (RC SEND/WRITE/READ request packets, not ACKs or read responses). */
const isRequest = (op: number) => op <= 0x0c;

for (const seed of [1, 2, 3]) {
  test(`${QPS} QPs streaming WRITEs, 2% of their AckReq packets lost (seed ${seed}): no retransmit timeout`, async (t) => {
    let a: Awaited<ReturnType<typeof openSide>> | undefined, b: typeof a;
    for (let i = 0; ; i++) {
      a = await openSide('127.0.0.2', 0);
      try { b = await openSide('127.0.0.3', rxeOf(a.dev).port); break; } catch (e) { await a.dev.close(); if (i > 5) throw e; }
    }
    t.after(async () => { await a!.dev.close(); await b!.dev.close(); });
    let s = seed;
    const rnd = () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32);
    const total = PER_QP * (MSG / 4096);
    let dropped = 0;
    // Lost after the kernel, at the receiver: the sender's path (sendmmsg, GSO, AckReq coalescing) is as always.
    const link = rxeOf(b!.dev).link as unknown as { onPacket: (pkt: Buffer, ...rest: unknown[]) => void };
    const deliver = link.onPacket.bind(link);
    link.onPacket = (pkt, ...rest) => {
      const psn = pkt.readUInt32BE(8) & 0xffffff;
      if (isRequest(pkt[0]!) && (pkt[8]! & 0x80) !== 0 && psn - PSN0 < total - TAIL && rnd() < 0.02) { dropped++; return; }
      deliver(pkt, ...rest);
    };
    const cap = { maxSendWr: 1024, maxRecvWr: 16, maxSendSge: 1, maxRecvSge: 1, maxInlineData: 0 };
    const src = a!.pd.regMr(Buffer.alloc(MSG, 7), 0);
    const qps = [];
    for (let i = 0; i < QPS; i++) {
      const qa = a!.pd.createQp({ qpType: QpType.RC, sendCq: a!.cq, recvCq: a!.cq, cap });
      const qb = b!.pd.createQp({ qpType: QpType.RC, sendCq: b!.cq, recvCq: b!.cq, cap });
      const dst = b!.pd.regMr(Buffer.alloc(MSG), Access.LOCAL_WRITE | Access.REMOTE_WRITE);
      // timeout 15: Linux's and SMC-R's 134 ms, a stall long enough to see.
      connect(qa, { qpn: qb.qpn, gid: b!.ctx.queryGid() }, { timeout: 15, mtu: 5, psn: PSN0, remotePsn: 0x200 });
      connect(qb, { qpn: qa.qpn, gid: a!.ctx.queryGid() }, { timeout: 15, mtu: 5, psn: 0x200, remotePsn: PSN0 });
      qps.push({ qa, dst });
    }
    for (const { qa, dst } of qps) {
      for (let k = 0; k < PER_QP; k++) {
        qa.postSend({ wrId: k, opcode: WrOpcode.RDMA_WRITE, sendFlags: k === PER_QP - 1 ? SendFlags.SIGNALED : 0, sgList: [src.sge()], rdma: { remoteAddr: dst.addr, rkey: dst.rkey } });
      }
    }
    const wcs = await waitCompletions(a!.cq, QPS, 30_000);
    assert.deepEqual(wcs.map((w) => w.status), new Array(QPS).fill(WcStatus.SUCCESS));
    assert.ok(dropped > 0, 'some asks were lost');
    const timeouts = qps.map(({ qa }) => (rxeOf(a!.dev).qps.get(qa.qpn) as unknown as { counters: { timeouts: number } }).counters.timeouts);
    assert.deepEqual(timeouts, new Array(QPS).fill(0), `${dropped} asks lost; retransmit timeouts per QP`);
  });
}
