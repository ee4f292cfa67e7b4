// Latency tests. The buffer's first half is what a side sends, the second half what it
// receives. send_lat and write_lat are ping-pongs timed by the client and reported as half
// the round trip (perftest's convention); read_lat times each READ to completion.

import { SendFlags, WcOpcode, WrOpcode } from '../../index.js';
import { latResult, type LatResult } from './report.js';
import { MAX_INLINE, Session, yieldToLoop } from './session.js';

const RX_DEPTH = 64;

export async function runLat(s: Session, size: number): Promise<LatResult> {
  const { test, iters } = s.o;
  const oob = s.oob!;
  const rxArea = s.mr.sge(s.half, size);
  let recvPosted = 0;
  if (test === 'send_lat') for (; recvPosted < Math.min(RX_DEPTH, iters); recvPosted++) s.qp.postRecv({ wrId: recvPosted, sgList: [rxArea] });
  if (test === 'write_lat') s.buf[s.half + size - 1] = 0;
  await oob.barrier(`lat ${size}`);

  const samples = new Float64Array(s.isServer ? 0 : iters);
  const inline = size <= MAX_INLINE ? SendFlags.INLINE : 0;
  const txSge = s.mr.sge(0, size);
  const remoteRx = { remoteAddr: s.remote.addr + s.half, rkey: s.remote.rkey };
  let received = 0;
  const waitRecv = async (target: number) => {
    while (received < target) {
      await s.poll(1, (wc) => {
        if (wc.opcode !== WcOpcode.RECV) return;
        received++;
        if (recvPosted < iters) s.qp.postRecv({ wrId: recvPosted++, sgList: [rxArea] });
      });
    }
  };
  // write_lat: the peer's WRITE lands in our second half; its last byte carries the round.
  const waitByte = async (seq: number) => {
    const at = s.half + size - 1;
    const deadline = Date.now() + s.o.timeoutMs;
    while (s.buf[at] !== seq) {
      // Drain our own WRITE completions while we wait.
      for (const wc of s.cq.poll(16)) if (wc.status !== 0) throw new Error(`completion error ${wc.status}`);
      if (Date.now() > deadline) throw new Error(`peer's write for round ${seq} never arrived`);
      await yieldToLoop();
    }
  };
  const postPing = (i: number) => {
    if (test === 'send_lat') {
      s.qp.postSend({ wrId: i, opcode: WrOpcode.SEND, sendFlags: inline | SendFlags.SIGNALED, sgList: [txSge] });
    } else {
      s.buf[size - 1] = (i % 255) + 1;
      s.qp.postSend({ wrId: i, opcode: WrOpcode.RDMA_WRITE, sendFlags: inline | SendFlags.SIGNALED, sgList: [txSge], rdma: remoteRx });
    }
  };

  for (let i = 0; i < iters; i++) {
    if (test === 'read_lat') {
      if (s.isServer) break; // the server's part is to be read from
      const t0 = process.hrtime.bigint();
      s.qp.postSend({ wrId: i, opcode: WrOpcode.RDMA_READ, sendFlags: SendFlags.SIGNALED, sgList: [rxArea], rdma: { remoteAddr: s.remote.addr, rkey: s.remote.rkey } });
      await s.poll(1, () => {});
      samples[i] = Number(process.hrtime.bigint() - t0) / 1e3;
      continue;
    }
    const t0 = process.hrtime.bigint();
    if (!s.isServer) postPing(i);
    if (test === 'send_lat') await waitRecv(i + 1);
    else await waitByte((i % 255) + 1);
    if (s.isServer) postPing(i);
    else samples[i] = Number(process.hrtime.bigint() - t0) / 2e3;
  }

  if (s.isServer) {
    oob.send({ end: size });
    const peer = await oob.recv<{ end?: number; result?: LatResult }>();
    if (!peer.result) throw new Error('no result from the client');
    return peer.result;
  }
  const result = latResult(test, size, samples);
  await oob.recv(); // the server's end marker
  oob.send({ end: size, result });
  return result;
}
