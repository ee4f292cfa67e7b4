// Bandwidth tests. The sender keeps up to tx-depth work requests in flight on each QP,
// signalling every cq_mod-th (perftest's CQ moderation: options.ts cqModeration), and timestamps each post and each
// completion (perftest's tposted and tcompleted, from which the peak comes); with -q each QP
// does -n operations (or runs until -D is up), posted round robin.
//
// The out-of-band steps follow perftest 6.06's write_bw/read_bw/atomic_bw and send_bw mains
// (see session.ts). Between two softrdma sides, each size also gets a data check: the sides
// swap hashes of their areas before and after the run, so a run that moved wrong data
// cannot report a bandwidth. Those messages only flow when both sides said they are softrdma.

import { createHash } from 'node:crypto';
import { SendFlags, WcOpcode, WrOpcode, type SendWr, type WorkCompletion } from '../../index.js';
import type { BwReport } from './exchange.js';
import { cqModeration, peakNotMeasured } from './options.js';
import { bwResult, DEF_CQ_MOD, localAverage, MB, sampleWindow, toGbits, WindowedCount, type BwResult } from './report.js';
import { INLINE_SIZE, nowNs, RX_DEPTH, type Session } from './session.js';

/** wr_id = sequence * QP_SLOTS + QP index. */
const QP_SLOTS = 256;

interface AreaCheck { send: string; recv: string; u64: string }
interface Check { qps: AreaCheck[] }
interface Done { done?: number; counts?: number[]; result?: BwResult | null }

function check(s: Session, size: number): Check {
  const h = (off: number) => createHash('sha256').update(s.buf.subarray(off, off + size)).digest('hex');
  return { qps: Array.from({ length: s.nq }, (_, i) => ({ send: h(s.sendOff(i)), recv: h(s.recvOff(i)), u64: s.buf.readBigUInt64LE(s.recvOff(i)).toString() })) };
}

/** Runs every size; `emit` prints each result line as it comes. */
export async function runBwTest(s: Session, emit: (r: BwResult) => void): Promise<BwResult[]> {
  const o = s.o;
  const results: BwResult[] = [];
  const out = (r: BwResult) => { results.push(r); emit(r); };
  const send = o.test === 'send_bw';
  const active = !s.isServer || o.bidir;

  if (!send && !o.bidir && s.isServer && !s.softrdma) {
    // perftest's server of a one-way RDMA test only waits (for the client's whole run: no
    // --timeout), then shows the client's report.
    await s.sync(true);
    out(fromReport(o.test, await s.xchgReport(ZERO), o.gbits));
    await s.closeConnection();
    return results;
  }

  let last: BwResult | undefined;
  for (const size of o.sizes) {
    const rx = send && (s.isServer || o.bidir) ? new Receiver(s, size) : undefined;
    const before = s.softrdma ? await exchangeCheck(s, size, 'before') : undefined;
    if (o.bidir || send) await s.sync();
    let mine: { result: BwResult; counts: number[] } | undefined;
    if (active) mine = await sendLoop(s, size, rx);
    else if (rx) mine = await rx.run();
    // After a timed run the receiver keeps re-posting until the sender's next message shows it stopped.
    const after = (p: Promise<void>) => (rx && o.durationSec ? s.drainDuring(p, (wc) => rx.onWc(wc)) : p);
    let result = mine?.result;
    await after((async () => {
      // The first message after our run may have to wait for the end of the peer's (the
      // server of a one-way test, or the slower side of -b): no --timeout on it.
      if (!send && o.bidir && o.all) await s.sync(true);
      if (s.softrdma) {
        const peer = await endCheck(s, size, mine, before!);
        result ??= peer.result ?? undefined;
        if (result) result = { ...result, verified: peer.verified };
      }
      if (o.bidir && !(send && o.durationSec)) {
        const rep = await s.xchgReport(toReport(mine!.result, o.gbits), !s.softrdma);
        result = sum(mine!.result, fromReport(o.test, rep, o.gbits), result!.verified);
      }
      if (send && o.all) await s.sync();
    })());
    if (!result) throw new Error('no result for this size');
    last = mine?.result;
    out(result);
  }
  if (!send && !o.bidir) {
    // One-way RDMA tests: the client's last report goes to the server at the end.
    await s.sync(s.isServer);
    await s.xchgReport(last && !s.isServer ? toReport(last, o.gbits) : ZERO);
  }
  await s.closeConnection();
  return results;
}

const ZERO: BwReport = { size: 0n, iters: 0n, bwPeak: 0, bwAvg: 0, msgRate: 0 };

function toReport(r: BwResult, gbits: boolean): BwReport {
  const u = gbits ? toGbits : (x: number) => x;
  return { size: BigInt(r.bytes), iters: BigInt(r.iterations), bwPeak: u(r.bw_peak_MBps), bwAvg: u(r.bw_avg_MBps), msgRate: r.msg_rate_Mpps };
}

/** A peer's report, in MiB/sec (perftest sends it in the unit its side reports in; we assume ours). */
function fromReport(test: string, r: BwReport, gbits: boolean): BwResult {
  const mib = (x: number) => (gbits ? (x * 1e9) / 8 / MB : x);
  return { test, bytes: Number(r.size), iterations: Number(r.iters), bw_peak_MBps: mib(r.bwPeak), bw_avg_MBps: mib(r.bwAvg), msg_rate_Mpps: r.msgRate, verified: null };
}

/** -b: perftest's table shows the sum of both directions. @internal Exported for test/tools/perftest-stats.test.ts. */
export function sum(a: BwResult, b: BwResult, verified: boolean | null): BwResult {
  const r = { ...a, bw_peak_MBps: a.bw_peak_MBps + b.bw_peak_MBps, bw_avg_MBps: a.bw_avg_MBps + b.bw_avg_MBps, msg_rate_Mpps: a.msg_rate_Mpps + b.msg_rate_Mpps, verified };
  localAverage.set(r, a.bw_avg_MBps);
  return r;
}


async function exchangeCheck(s: Session, size: number, phase: 'before'): Promise<{ mine: Check; peer: Check }> {
  const mine = check(s, size);
  s.oob!.send({ [phase]: size, ...mine });
  const peer = await s.oob!.recv<Partial<Check> & Record<string, unknown>>();
  if (peer[phase] !== size || !Array.isArray(peer.qps) || peer.qps.length !== s.nq) throw new Error(`softrdma peer out of step ${phase} the ${size}-byte run`);
  return { mine, peer: peer as Check };
}

/**
 * Two steps, so that nobody hashes its buffer while the peer may still be changing it: each
 * side says it is done (after all its own operations completed), then each hashes and tells.
 */
async function endCheck(s: Session, size: number, mine: { result: BwResult; counts: number[] } | undefined, before: { mine: Check; peer: Check }): Promise<{ result: BwResult | null; verified: boolean }> {
  const oob = s.oob!;
  oob.send({ done: size, counts: mine?.counts ?? [], result: mine?.result ?? null } satisfies Done);
  // The peer says so when its run ends, however long that takes (a long -n: no --timeout; with
  // -D, at most -D and --timeout more: see Session.handshake).
  const peerDone = await oob.recv<Done>(s.peerRunWaitMs());
  if (peerDone.done !== size) throw new Error(`softrdma peer out of step after the ${size}-byte run`);
  const after = check(s, size);
  oob.send({ after: size, ...after });
  const peerAfter = await oob.recv<Partial<Check> & { after?: number }>();
  if (peerAfter.after !== size || !Array.isArray(peerAfter.qps) || peerAfter.qps.length !== s.nq) throw new Error(`softrdma peer out of step after the ${size}-byte run`);
  // Each direction that ran: initiator -> target.
  const me = { before: before.mine, after, counts: mine?.counts ?? [] };
  const peer = { before: before.peer, after: peerAfter as Check, counts: peerDone.counts ?? [] };
  const dirs = s.o.bidir ? [[me, peer], [peer, me]] : s.isServer ? [[peer, me]] : [[me, peer]];
  let ok = true;
  for (const [ini, tgt] of dirs) {
    for (let i = 0; i < s.nq; i++) {
      const I = { b: ini!.before.qps[i]!, a: ini!.after.qps[i]! }, T = { b: tgt!.before.qps[i]!, a: tgt!.after.qps[i]! };
      // FETCH_AND_ADD: the target's counter grew by the atomics done; CMP_AND_SWAP (0 for 0): unchanged, and every one was done.
      if (s.o.test === 'atomic_bw' && s.o.atomicType === 'CMP_AND_SWAP') ok &&= T.b.u64 === T.a.u64 && (ini!.counts[i] ?? -1) >= 0;
      else if (s.o.test === 'atomic_bw') ok &&= BigInt.asUintN(64, BigInt(T.b.u64) + BigInt(ini!.counts[i] ?? -1)) === BigInt(T.a.u64);
      else if (s.o.test === 'read_bw') ok &&= I.a.send === T.b.recv;
      else ok &&= T.a.recv === I.b.send;
    }
  }
  return { result: peerDone.result ?? null, verified: ok };
}

/** Receives SENDs into QP i's target area, re-posting while more are due. */
class Receiver {
  posted: number[];
  received: number[];
  constructor(private readonly s: Session, private readonly size: number) {
    const n = s.o.durationSec ? RX_DEPTH : Math.min(RX_DEPTH, s.o.iters);
    this.posted = new Array<number>(s.nq).fill(0);
    this.received = new Array<number>(s.nq).fill(0);
    for (let i = 0; i < s.nq; i++) for (let k = 0; k < n; k++) this.post(i);
  }
  private post(i: number) {
    this.s.qps[i]!.postRecv({ wrId: this.posted[i]! * QP_SLOTS + i, sgList: [this.s.mr.sge(this.s.recvOff(i), this.size)] });
    this.posted[i]!++;
  }
  /** Returns whether the completion was a receive. */
  onWc(wc: WorkCompletion): boolean {
    if (wc.opcode !== WcOpcode.RECV) return false;
    const i = Number(wc.wrId) % QP_SLOTS;
    this.received[i]!++;
    // With -D the run ends by time, so keep the queue full; otherwise post exactly -n in all.
    if (this.s.o.durationSec || this.posted[i]! < this.s.o.iters) this.post(i);
    return true;
  }
  get total(): number { return this.received.reduce((a, b) => a + b, 0); }
  doneCount(): boolean { return this.received.every((r) => r >= this.s.o.iters); }

  /** send_bw's server: count receives (-n per QP, or until -D is up). */
  async run(): Promise<{ result: BwResult; counts: number[] }> {
    const s = this.s;
    const deadline = s.o.durationSec ? nowNs() + s.o.durationSec * 1e9 : Infinity;
    const t0 = nowNs(); // just after the handshake that lets the sender start
    const times = completions(s, t0);
    let any = false;
    while (s.o.durationSec ? nowNs() < deadline : !this.doneCount()) {
      await s.poll(1, (wc) => { if (this.onWc(wc)) { times.push(nowNs(), 1); any = true; } }, deadline);
    }
    if (!any) throw new Error('no message arrived');
    const r = times.result(s.o.test, this.size);
    if (!r) throw new Error('no message arrived between the margins');
    // Arrivals are seen in batches of one poll, so windows of them say nothing about a peak:
    // the receiver's stands at its average (printed as 0.00 where perftest measures none, peakNotMeasured).
    return { result: { ...r, bw_peak_MBps: r.bw_avg_MBps }, counts: [...this.received] };
  }
}

/** What a run keeps of its completions: see completions(). */
interface Completions {
  push(t: number, count: number): void;
  result(test: string, size: number): BwResult | undefined;
}

/**
 * -n: every completion's time (-n x -q of them, as perftest keeps); -D: only the counts
 * between the margins (WindowedCount), so that a long timed run does not grow.
 */
function completions(s: Session, t0: number, cqMod = DEF_CQ_MOD): Completions {
  if (!s.o.durationSec) return new Times(t0, cqMod);
  const w = sampleWindow(t0, s.o.durationSec, s.o.marginSec);
  return new WindowedCount(w.from, w.to);
}

/** Completion timestamps, growing as needed; `posted`: the posts' (see sendLoop), for the peak. */
class Times implements Completions {
  private a = new Float64Array(1 << 12);
  n = 0;
  /** `cqMod`: the run's CQ moderation, which the peak's signalled completions follow. */
  constructor(private readonly t0: number, private readonly cqMod: number) {}
  posted: Float64Array | undefined;
  result(test: string, size: number): BwResult | undefined {
    return this.n ? bwResult(test, size, this.t0, this.view(), null, this.posted, this.cqMod) : undefined;
  }
  push(t: number, count: number) {
    if (this.n + count > this.a.length) {
      const b = new Float64Array(Math.max(this.n + count, this.a.length * 2));
      b.set(this.a.subarray(0, this.n));
      this.a = b;
    }
    this.a.fill(t, this.n, this.n + count);
    this.n += count;
  }
  view(): Float64Array { return this.a.subarray(0, this.n); }
}

/**
 * A clock on nowNs's scale (ns) that allocates nothing (performance.now; nowNs makes a BigInt
 * each time), for the timestamps of every post and completion of a bw run.
 */
function opClock(): () => number {
  const off = nowNs() - performance.now() * 1e6;
  return () => performance.now() * 1e6 + off;
}

/** The sending side (the client, or both with -b): -n operations per QP, or until -D is up. */
/** @internal Exported for test/tools/perftest-sendloop.test.ts. */
export async function sendLoop(s: Session, size: number, rx: Receiver | undefined): Promise<{ result: BwResult; counts: number[] }> {
  const { test, iters, txDepth } = s.o;
  const nq = s.nq;
  const templates: SendWr[] = s.qps.map((_, i) => {
    const sge = s.mr.sge(s.sendOff(i), size);
    const remote = { remoteAddr: s.remoteAddr(i), rkey: s.remote[i]!.rkey };
    return test === 'write_bw' ? { wrId: 0, opcode: WrOpcode.RDMA_WRITE, sgList: [sge], rdma: remote }
      : test === 'read_bw' ? { wrId: 0, opcode: WrOpcode.RDMA_READ, sgList: [sge], rdma: remote }
      : test === 'send_bw' ? { wrId: 0, opcode: WrOpcode.SEND, sgList: [sge] }
      // The fetched old values land in our own send area, leaving the target's counter alone.
      // -A CMP_AND_SWAP: compare with 0 and swap in 0, as perftest (the target does not change).
      : s.o.atomicType === 'CMP_AND_SWAP' ? { wrId: 0, opcode: WrOpcode.ATOMIC_CMP_AND_SWP, sgList: [s.mr.sge(s.sendOff(i), 8)], atomic: { ...remote, compareAdd: 0n, swap: 0n } }
      : { wrId: 0, opcode: WrOpcode.ATOMIC_FETCH_AND_ADD, sgList: [s.mr.sge(s.sendOff(i), 8)], atomic: { ...remote, compareAdd: 1n } };
  });
  const inline = (test === 'write_bw' || test === 'send_bw') && size <= INLINE_SIZE ? SendFlags.INLINE : 0;
  // -D: post until the time is up, then one last signalled WR per QP; otherwise -n per QP.
  const timed = !!s.o.durationSec;
  const limit = new Array<number>(nq).fill(timed ? Number.MAX_SAFE_INTEGER : iters);
  const posted = new Array<number>(nq).fill(0), completed = new Array<number>(nq).fill(0);
  // perftest's cq_mod: one WR in cqMod is signalled, and the peak is measured at those completions.
  const cqMod = cqModeration(s.o, size);
  const clock = opClock();
  const t0 = clock();
  const times = completions(s, t0, cqMod);
  // perftest's tposted: each post's time, in the order of the posts over all QPs, where the
  // peak is measured (-n; at most 20000 per QP, see peakNotMeasured), in an array made once.
  const postTimes = !timed && times instanceof Times && !peakNotMeasured(s.o, s.isServer) ? new Float64Array(iters * nq) : undefined;
  if (postTimes) (times as Times).posted = postTimes;
  let k = 0;
  const deadline = timed ? t0 + s.o.durationSec! * 1e9 : Infinity;
  let stopped = !timed;
  const onWc = (wc: WorkCompletion) => {
    if (rx?.onWc(wc)) return;
    const id = Number(wc.wrId), i = id % QP_SLOTS, upto = Math.floor(id / QP_SLOTS) + 1;
    times.push(clock(), upto - completed[i]!);
    completed[i] = upto;
  };
  const sendsDone = () => completed.every((c, i) => c >= limit[i]!);
  const recvsDone = () => !rx || timed || rx.doneCount();
  while (!(stopped && sendsDone() && recvsDone())) {
    if (!stopped && nowNs() >= deadline) {
      stopped = true;
      // The last WR of each QP must be signalled: one more if any are still in flight.
      for (let i = 0; i < nq; i++) limit[i] = posted[i]! + (posted[i]! === completed[i]! ? 0 : 1);
    }
    for (let i = 0; i < nq; i++) {
      while (posted[i]! < limit[i]! && posted[i]! - completed[i]! < txDepth) {
        const p = posted[i]!;
        // As perftest's run_iter_bw: every cq_mod-th and the last; cq_mod is at most the TX
        // depth, so a signalled WR is always in flight when the depth is reached.
        const signaled = (p + 1) % cqMod === 0 || p === limit[i]! - 1;
        if (postTimes) postTimes[k++] = clock();
        s.qps[i]!.postSend({ ...templates[i]!, wrId: p * QP_SLOTS + i, sendFlags: inline | (signaled ? SendFlags.SIGNALED : 0) });
        posted[i]!++;
      }
    }
    // The time may have run out with nothing in flight (every WR completed): then no
    // completion is coming, and waiting for one would hang until the completion timeout.
    if (stopped && sendsDone() && recvsDone()) break;
    await s.poll(1, onWc, stopped ? Infinity : deadline);
  }
  const result = times.result(test, size);
  if (!result) throw new Error('no operation completed between the margins');
  return { result, counts: completed };
}
