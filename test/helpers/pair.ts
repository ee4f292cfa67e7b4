// Two rxe devices on different loopback addresses with a connected QP pair, and helpers to
// wait for completions (bounded: a test fails with a message instead of hanging).

import { once } from 'node:events';
import {
  connectQp, createRxeDevice, QpType, rxeOf, RC_ACCESS, type ConnectOptions, type RxeDeviceOptions, type Context, type CQ, type Device, type PD, type QP, type WorkCompletion,
} from '../../src/index.js';

export interface Side { dev: Device; ctx: Context; pd: PD; cq: CQ; qp: QP }

export async function openSide(address: string, port: number, device: Partial<RxeDeviceOptions> = {}): Promise<Omit<Side, 'qp'>> {
  const dev = await createRxeDevice({ ...device, address, port });
  const ctx = dev.open();
  const pd = ctx.allocPd();
  const cq = ctx.createCq(4096);
  return { dev, ctx, pd, cq };
}

export { RC_ACCESS };

/** Two devices on 127.0.0.2 and 127.0.0.3 sharing one ephemeral UDP port (retried if the port is taken on the second address). */
export async function twoDevices(): Promise<{ a: Device; b: Device; close: () => Promise<void> }> {
  for (let attempt = 0; ; attempt++) {
    const a = await createRxeDevice({ address: '127.0.0.2', port: 0 });
    try {
      const b = await createRxeDevice({ address: '127.0.0.3', port: rxeOf(a).port });
      return { a, b, close: async () => { await a.close(); await b.close(); } };
    } catch (err) {
      await a.close();
      if ((err as { code?: string }).code !== 'EADDRINUSE' || attempt > 5) throw err;
    }
  }
}

/** connectQp with test-friendly defaults (short RNR timer and retry timeout). */
export function connect(qp: QP, remote: { qpn: number; gid: Uint8Array }, opts: ConnectOptions & { remotePsn?: number } = {}) {
  connectQp(qp, { qpn: remote.qpn, gid: remote.gid, psn: opts.remotePsn ?? 0 }, { minRnrTimer: 1, timeout: 10, ...opts });
}

/**
 * Two sides on one UDP port (each device sends to its own port number): ephemeral, retried if
 * taken. On 127.0.0.2 and 127.0.0.3 unless told: a test about fixed ports (the per-QP source
 * ports follow from the QPNs, which two processes may share) takes addresses of its own.
 */
async function openTwo(addrs: readonly [string, string] = ['127.0.0.2', '127.0.0.3'], device: Partial<RxeDeviceOptions> = {}) {
  for (let attempt = 0; ; attempt++) {
    const a = await openSide(addrs[0], 0, device);
    const port = rxeOf(a.dev).port;
    try {
      return { a, b: await openSide(addrs[1], port, device) };
    } catch (err) {
      await a.dev.close();
      if ((err as { code?: string }).code !== 'EADDRINUSE' || attempt > 5) throw err;
    }
  }
}

export async function makePair(qpType: number = QpType.RC, opts: Parameters<typeof connect>[2] & { cap?: object; addresses?: readonly [string, string]; device?: Partial<RxeDeviceOptions> } = {}) {
  const { addresses, device, ...qpOpts } = opts;
  const { a, b } = await openTwo(addresses, device);
  const cap = { maxSendWr: 1024, maxRecvWr: 1024, maxSendSge: 4, maxRecvSge: 4, maxInlineData: 256, ...(opts.cap ?? {}) };
  const qa = a.pd.createQp({ qpType, sendCq: a.cq, recvCq: a.cq, cap });
  const qb = b.pd.createQp({ qpType, sendCq: b.cq, recvCq: b.cq, cap });
  connect(qa, { qpn: qb.qpn, gid: b.ctx.queryGid() }, { ...qpOpts, psn: 0x100, remotePsn: 0x200 });
  connect(qb, { qpn: qa.qpn, gid: a.ctx.queryGid() }, { ...qpOpts, psn: 0x200, remotePsn: 0x100 });
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
