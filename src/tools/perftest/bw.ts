// Bandwidth tests. The client keeps up to tx-depth work requests in flight, signalling every
// CQ_MOD-th (as perftest's cq moderation does), and timestamps each completion. Afterwards
// the two sides compare what landed: a hash of the written or read bytes, or for atomics
// the counter's growth, so a run that moved wrong data cannot report a bandwidth.

import { createHash } from 'node:crypto';
import { SendFlags, WcOpcode, WrOpcode, type SendWr } from '../../index.js';
import { bwResult, type BwResult } from './report.js';
import { MAX_INLINE, Session } from './session.js';

const CQ_MOD = 64;
const RX_DEPTH = 512;

interface Check { hash: string; u64: string }

function check(s: Session, size: number): Check {
  return { hash: createHash('sha256').update(s.buf.subarray(0, size)).digest('hex'), u64: s.buf.readBigUInt64LE(0).toString() };
}

export async function runBw(s: Session, size: number): Promise<BwResult> {
  const { test, iters } = s.o;
  const oob = s.oob!;
  // Receives for send_bw are posted before the barrier so the first SEND finds one.
  let recvPosted = 0;
  if (test === 'send_bw' && s.isServer) {
    for (; recvPosted < Math.min(iters, RX_DEPTH); recvPosted++) s.qp.postRecv({ wrId: recvPosted, sgList: [s.mr.sge(0, size)] });
  }
  const before = check(s, size);
  oob.send({ start: size, before });
  const peerBefore = (await oob.recv<{ start?: number; before?: Check }>()).before;
  if (!peerBefore) throw new Error('peer out of step at start');

  let mine: BwResult | undefined;
  if (!s.isServer) mine = await clientLoop(s, size);
  else if (test === 'send_bw') mine = await serverReceive(s, size, recvPosted);

  // The client speaks first at the end: only then has everything it posted completed, so
  // only then may the server look at its buffer.
  type End = { end?: number; after?: Check; result?: BwResult };
  let peer: End;
  let after: Check;
  if (s.isServer) {
    peer = await oob.recv<End>();
    after = check(s, size);
    oob.send({ end: size, after, result: mine });
  } else {
    after = check(s, size);
    oob.send({ end: size, after, result: mine });
    peer = await oob.recv<End>();
  }
  if (peer.end !== size || !peer.after) throw new Error('peer out of step at end');

  // The client measured; the server shows the client's figures (or its own for send_bw).
  const result = mine && !(s.isServer && test !== 'send_bw') ? mine : peer.result;
  if (!result) throw new Error('no result from the peer');

  // Did the data arrive? The checks depend on which side is the target.
  let verified: boolean;
  const client = s.isServer ? peer.after : after, server = s.isServer ? after : peer.after;
  const clientBefore = s.isServer ? peerBefore : before, serverBefore = s.isServer ? before : peerBefore;
  if (test === 'atomic_bw') verified = BigInt.asUintN(64, BigInt(serverBefore.u64) + BigInt(result.iterations)) === BigInt(server.u64);
  else if (test === 'read_bw') verified = client.hash === serverBefore.hash;
  else verified = server.hash === clientBefore.hash;
  return { ...result, verified };
}

async function clientLoop(s: Session, size: number): Promise<BwResult> {
  const { test, iters, txDepth } = s.o;
  const sge = s.mr.sge(0, size);
  const remote = { remoteAddr: s.remote.addr, rkey: s.remote.rkey };
  const template: SendWr =
    test === 'write_bw' ? { wrId: 0, opcode: WrOpcode.RDMA_WRITE, sgList: [sge], rdma: remote }
    : test === 'read_bw' ? { wrId: 0, opcode: WrOpcode.RDMA_READ, sgList: [sge], rdma: remote }
    : test === 'send_bw' ? { wrId: 0, opcode: WrOpcode.SEND, sgList: [sge] }
    // The fetched old values land in the second half, leaving the counter check alone.
    : { wrId: 0, opcode: WrOpcode.ATOMIC_FETCH_AND_ADD, sgList: [s.mr.sge(s.half, 8)], atomic: { ...remote, compareAdd: 1n } };
  const inline = (test === 'write_bw' || test === 'send_bw') && size <= MAX_INLINE ? SendFlags.INLINE : 0;
  // -D: post until the time is up, then one last signalled WR; otherwise -n operations.
  const deadline = s.o.durationSec ? s.o.durationSec * 1e9 : 0;
  let limit = deadline ? Number.MAX_SAFE_INTEGER : iters;
  let done = new Float64Array(deadline ? 1 << 16 : iters);
  let posted = 0, completed = 0;
  const t0 = now();
  const onWc = (wc: { wrId: number | bigint }) => {
    const upto = Number(wc.wrId) + 1;
    const t = now();
    if (upto > done.length) {
      const bigger = new Float64Array(Math.max(upto, done.length * 2));
      bigger.set(done);
      done = bigger;
    }
    for (let k = completed; k < upto; k++) done[k] = t;
    completed = upto;
  };
  while (completed < limit) {
    if (deadline && limit === Number.MAX_SAFE_INTEGER && now() - t0 >= deadline) limit = posted + 1;
    while (posted < limit && posted - completed < txDepth) {
      const signaled = (posted + 1) % CQ_MOD === 0 || posted === limit - 1 || posted - completed + 1 === txDepth;
      s.qp.postSend({ ...template, wrId: posted, sendFlags: inline | (signaled ? SendFlags.SIGNALED : 0) });
      posted++;
    }
    await s.poll(1, onWc);
  }
  return bwResult(test, size, t0, done.subarray(0, completed), null);
}

async function serverReceive(s: Session, size: number, recvPosted: number): Promise<BwResult> {
  const iters = s.o.iters;
  const done = new Float64Array(iters);
  let received = 0;
  const t0 = now();
  while (received < iters) {
    await s.poll(1, (wc) => {
      if (wc.opcode !== WcOpcode.RECV) return;
      done[received++] = now();
      if (recvPosted < iters) s.qp.postRecv({ wrId: recvPosted++, sgList: [s.mr.sge(0, size)] });
    });
  }
  return bwResult(s.o.test, size, t0, done, null);
}

function now(): number { return Number(process.hrtime.bigint()); }
