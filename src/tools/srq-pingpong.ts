// `softrdma pingpong srq`: a port of rdma-core's ibv_srq_pingpong (libibverbs/examples/
// srq_pingpong.c). N RC QPs (-q, default 16) share one receive queue (an SRQ of rx_depth
// receives) and one CQ; each QP ping-pongs on its own, and the run ends when `iters` sends and
// `iters` receives have completed across all of them (the C tool's --help says "per QP"; its
// loop counts them together, and so does this one).
//
// Wire facts that a C peer depends on: the TCP exchange always carries MAX_QP (256) address
// lines each way, whatever -q is (lines past -q are zero: "0000:000000:000000:000...0"), then
// the client's "done\0"; the server reads all 256, connects its QPs, then answers with its 256.
// Each QP i connects to the peer's line i; the QPs' attributes are rc_pingpong's (hop limit
// 1, one outstanding read/atomic, RNR timer 12, timeout 14, retries 7/7).

import { randomBytes } from 'node:crypto';
import { connectQp, initQp, QpType, SendFlags, WcStatus, wcStatusStr, WrOpcode, Access, type Context, type CompChannel, type MtuValue, type QP, type WorkCompletion } from '../index.js';
import { decodeDest, driveCq, encodeDest, gidText, MSG_BYTES, RECV_WRID, SEND_WRID, type Dest } from './pingpong-common.js';
import { hex } from './table.js';

/** srq_pingpong.c's MAX_QP: the exchange's line count, and the most QPs -q may ask for. */
export const MAX_QP = 256;

export interface SrqSettings {
  servername: string | undefined;
  ibPort: number;
  size: number;
  mtu: number;
  numQp: number;
  rxDepth: number;
  iters: number;
  gidx: number;
  events: boolean;
  /** The TCP exchange (pingpong-common.ts exchangeDests, its socket closed by the caller). */
  exchange(mine: Buffer, theirLength: number, beforeAnswer: (theirs: Buffer) => void): Promise<Buffer>;
}

/** The 256 lines of one side: its QPs', then zeros. */
function encodeAll(mine: Dest[]): Buffer {
  const zero: Dest = { lid: 0, qpn: 0, psn: 0, gid: new Uint8Array(16) };
  return Buffer.concat(Array.from({ length: MAX_QP }, (_, i) => encodeDest(mine[i] ?? zero)));
}

function decodeAll(all: Buffer): Dest[] {
  return Array.from({ length: MAX_QP }, (_, i) => decodeDest(all.subarray(i * MSG_BYTES, (i + 1) * MSG_BYTES)));
}

export async function srqPingpong(ctx: Context, o: SrqSettings, out: (line: string) => void): Promise<{ usecPerIter: number; bytes: number }> {
  const pd = ctx.allocPd();
  const buf = Buffer.alloc(o.size, 0);
  const mr = pd.regMr(buf, Access.LOCAL_WRITE);
  const channel: CompChannel | undefined = o.events ? ctx.createCompChannel() : undefined;
  const cq = ctx.createCq(o.rxDepth + o.numQp, { channel });
  const srq = pd.createSrq({ maxWr: o.rxDepth, maxSge: 1 });
  const qps: QP[] = [];
  let sendFlags = SendFlags.SIGNALED;
  for (let i = 0; i < o.numQp; i++) {
    const qp = pd.createQp({ qpType: QpType.RC, sendCq: cq, recvCq: cq, srq, cap: { maxSendWr: 1, maxSendSge: 1 } });
    qps.push(qp);
    // ibv_query_qp's cap.max_inline_data: inline when the message fits.
    if (qp.query().cap.maxInlineData >= o.size) sendFlags |= SendFlags.INLINE;
  }
  for (const qp of qps) initQp(qp, { portNum: o.ibPort, access: 0 });
  const byQpn = new Map(qps.map((qp, i) => [qp.qpn, i]));

  const recvSge = mr.sge(0, o.size);
  const postRecv = (n: number) => {
    for (let i = 0; i < n; i++) srq.postRecv({ wrId: RECV_WRID, sgList: [recvSge] });
    return n;
  };
  let routs = postRecv(o.rxDepth);
  if (channel) cq.reqNotify();

  const lid = ctx.queryPort(o.ibPort).lid;
  const gid = ctx.queryGid(o.ibPort, o.gidx);
  const mine: Dest[] = qps.map((qp) => ({ lid, qpn: qp.qpn, psn: randomBytes(3).readUIntBE(0, 3), gid }));
  for (const d of mine) out(`  local address:  LID 0x${hex(d.lid, 4)}, QPN 0x${hex(d.qpn, 6)}, PSN 0x${hex(d.psn, 6)}, GID ${gidText(d.gid)}`);

  // A peer with fewer QPs sends zero lines for the rest: srq_pingpong.c connects those QPs to
  // QPN 0, which Linux takes and never uses on the server side (nothing arrives on them to
  // answer); QPN 0 is refused here, so they stay in INIT, and a client's first send on one
  // fails, as the C client's retries to QPN 0 run out.
  const connect = (rem: Dest[]) => {
    qps.forEach((qp, i) => {
      const r = rem[i]!;
      if (r.qpn === 0) return;
      try {
        connectQp(qp, { qpn: r.qpn, psn: r.psn, gid: r.gid }, {
          psn: mine[i]!.psn, mtu: o.mtu as MtuValue, hopLimit: 1, sgidIndex: o.gidx, portNum: o.ibPort,
          maxRdAtomic: 1, maxDestRdAtomic: 1, minRnrTimer: 12, timeout: 14, retryCnt: 7, rnrRetry: 7,
        });
      } catch (err) {
        throw new Error(`Failed to modify QP[${i}] to RTR/RTS: ${(err as Error).message}`);
      }
    });
  };

  const rem = decodeAll(await o.exchange(encodeAll(mine), MSG_BYTES * MAX_QP, (theirs) => connect(decodeAll(theirs))));
  for (let i = 0; i < o.numQp; i++) {
    const r = rem[i]!;
    out(`  remote address: LID 0x${hex(r.lid, 4)}, QPN 0x${hex(r.qpn, 6)}, PSN 0x${hex(r.psn, 6)}, GID ${gidText(r.gid)}`);
  }
  if (o.servername) connect(rem);

  const sendSge = mr.sge(0, o.size);
  const postSend = (i: number) => qps[i]!.postSend({ wrId: SEND_WRID, opcode: WrOpcode.SEND, sendFlags, sgList: [sendSge] });
  // Per QP, the completions it still waits for before its next send (srq_pingpong.c's pending[]).
  const pending = new Array<number>(o.numQp).fill(RECV_WRID);
  if (o.servername) {
    for (let i = 0; i < o.numQp; i++) {
      if (rem[i]!.qpn === 0) throw new Error(`Couldn't post send: QP[${i}] has no peer (the server runs ${rem.findIndex((d) => d.qpn === 0)} QPs; give both sides the same -q)`);
      postSend(i);
      pending[i] = RECV_WRID | SEND_WRID;
    }
  }
  const t0 = process.hrtime.bigint();
  let rcnt = 0, scnt = 0;
  const onWc = (wc: WorkCompletion) => {
    if (wc.status !== WcStatus.SUCCESS) throw new Error(`Failed status ${wcStatusStr(wc.status)} (${wc.status}) for wr_id ${wc.wrId}`);
    const i = byQpn.get(wc.qpNum);
    if (i === undefined) throw new Error(`Couldn't find QPN ${hex(wc.qpNum, 6)}`);
    if (wc.wrId === SEND_WRID) scnt++;
    else if (wc.wrId === RECV_WRID) {
      // Refill the SRQ when no more than one receive per QP is left, as the C tool.
      if (--routs <= o.numQp) routs += postRecv(o.rxDepth - routs);
      rcnt++;
    } else throw new Error(`Completion for unknown wr_id ${wc.wrId}`);
    pending[i] = pending[i]! & ~Number(wc.wrId);
    if (scnt < o.iters && !pending[i]) {
      postSend(i);
      pending[i] = RECV_WRID | SEND_WRID;
    }
  };
  await driveCq(cq, channel, o.numQp + o.rxDepth, () => rcnt >= o.iters && scnt >= o.iters, onWc, () => `${rcnt} received, ${scnt} sent`);
  const usec = Number(process.hrtime.bigint() - t0) / 1e3;
  const bytes = o.size * o.iters * 2;
  out(`${bytes} bytes in ${(usec / 1e6).toFixed(2)} seconds = ${((bytes * 8) / usec).toFixed(2)} Mbit/sec`);
  out(`${o.iters} iters in ${(usec / 1e6).toFixed(2)} seconds = ${(usec / o.iters).toFixed(2)} usec/iter`);
  return { usecPerIter: usec / o.iters, bytes };
}
