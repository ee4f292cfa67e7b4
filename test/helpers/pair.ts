// Two rxe devices on different loopback addresses with a connected QP pair, and helpers to
// wait for completions (bounded: a test fails with a message instead of hanging).

import { once } from 'node:events';
import {
  Access, createRxeDevice, QpAttr, QpState, QpType, type Context, type CQ, type Device, type PD, type QP, type WorkCompletion,
} from '../../src/index.js';

export interface Side { dev: Device; ctx: Context; pd: PD; cq: CQ; qp: QP }

export async function openSide(address: string, port: number): Promise<Omit<Side, 'qp'>> {
  const dev = await createRxeDevice({ address, port });
  const ctx = dev.open();
  const pd = ctx.allocPd();
  const cq = ctx.createCq(4096);
  return { dev, ctx, pd, cq };
}

export const RC_ACCESS = Access.LOCAL_WRITE | Access.REMOTE_WRITE | Access.REMOTE_READ | Access.REMOTE_ATOMIC;

export function connect(qp: QP, remote: { qpn: number; gid: Uint8Array }, opts: { psn?: number; remotePsn?: number; access?: number; timeout?: number; retryCnt?: number; rnrRetry?: number; minRnrTimer?: number; mtu?: number } = {}) {
  const type = qp.qpType;
  qp.modify({ qpState: QpState.INIT, pkeyIndex: 0, portNum: 1, qpAccessFlags: opts.access ?? RC_ACCESS, qkey: 0x11111111 },
    QpAttr.STATE | QpAttr.PKEY_INDEX | QpAttr.PORT | (type === QpType.UD ? QpAttr.QKEY : QpAttr.ACCESS_FLAGS));
  if (type === QpType.UD) {
    qp.modify({ qpState: QpState.RTR }, QpAttr.STATE);
    qp.modify({ qpState: QpState.RTS, sqPsn: opts.psn ?? 0 }, QpAttr.STATE | QpAttr.SQ_PSN);
    return;
  }
  const rtr = { qpState: QpState.RTR, pathMtu: opts.mtu ?? 3, destQpNum: remote.qpn, rqPsn: opts.remotePsn ?? 0, ahAttr: { grh: { dgid: remote.gid, hopLimit: 64 }, isGlobal: true, portNum: 1 }, maxDestRdAtomic: 16, minRnrTimer: opts.minRnrTimer ?? 1 };
  let mask = QpAttr.STATE | QpAttr.AV | QpAttr.PATH_MTU | QpAttr.DEST_QPN | QpAttr.RQ_PSN;
  if (type === QpType.RC) mask |= QpAttr.MAX_DEST_RD_ATOMIC | QpAttr.MIN_RNR_TIMER;
  qp.modify(rtr, mask);
  const rts = { qpState: QpState.RTS, sqPsn: opts.psn ?? 0, timeout: opts.timeout ?? 10, retryCnt: opts.retryCnt ?? 7, rnrRetry: opts.rnrRetry ?? 7, maxRdAtomic: 16 };
  qp.modify(rts, type === QpType.RC ? QpAttr.STATE | QpAttr.SQ_PSN | QpAttr.TIMEOUT | QpAttr.RETRY_CNT | QpAttr.RNR_RETRY | QpAttr.MAX_QP_RD_ATOMIC : QpAttr.STATE | QpAttr.SQ_PSN);
}

/** Two sides on one UDP port (each device sends to its own port number): ephemeral, retried if taken. */
async function openTwo() {
  for (let attempt = 0; ; attempt++) {
    const a = await openSide('127.0.0.2', 0);
    const port = (a.dev.provider as unknown as { port: number }).port;
    try {
      return { a, b: await openSide('127.0.0.3', port) };
    } catch (err) {
      await a.dev.close();
      if ((err as { code?: string }).code !== 'EADDRINUSE' || attempt > 5) throw err;
    }
  }
}

export async function makePair(qpType: number = QpType.RC, opts: Parameters<typeof connect>[2] & { cap?: object } = {}) {
  const { a, b } = await openTwo();
  const cap = { maxSendWr: 1024, maxRecvWr: 1024, maxSendSge: 4, maxRecvSge: 4, maxInlineData: 256, ...(opts.cap ?? {}) };
  const qa = a.pd.createQp({ qpType, sendCq: a.cq, recvCq: a.cq, cap });
  const qb = b.pd.createQp({ qpType, sendCq: b.cq, recvCq: b.cq, cap });
  connect(qa, { qpn: qb.qpn, gid: b.ctx.queryGid() }, { ...opts, psn: 0x100, remotePsn: 0x200 });
  connect(qb, { qpn: qa.qpn, gid: a.ctx.queryGid() }, { ...opts, psn: 0x200, remotePsn: 0x100 });
  const A: Side = { ...a, qp: qa }, B: Side = { ...b, qp: qb };
  return { a: A, b: B, close: async () => { await A.dev.close(); await B.dev.close(); } };
}

/** Poll `cq` until `n` completions arrive, waiting on the event loop; fail after `ms`. */
export async function waitCompletions(cq: CQ, n: number, ms = 10_000): Promise<WorkCompletion[]> {
  const out: WorkCompletion[] = [];
  const deadline = Date.now() + ms;
  while (out.length < n) {
    out.push(...cq.poll(n - out.length));
    if (out.length >= n) break;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms with ${out.length}/${n} completions`);
    await new Promise((r) => setImmediate(r));
  }
  return out;
}

export async function waitFor<T>(what: string, check: () => T | undefined | false, ms = 10_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = check();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 1));
  }
}

export { once };
