// Latency tests, with perftest 6.06's loops and out-of-band steps (send_lat.c, write_lat.c,
// read_lat.c and run_iter_lat* in perftest_resources.c), so either side can be the C binary:
// - send_lat: the client sends first; each side answers the peer's SEND with its own.
// - write_lat: the server writes first; each side WRITEs its round number (mod 256) into the
//   last byte of the peer's area and waits for the peer's round in its own.
// - read_lat: only the client works (RDMA READs from the server's area); the server closes.
// - atomic_lat: as read_lat, with an 8-byte atomic (-A: FETCH_AND_ADD of 1, or CMP_AND_SWAP
//   of 0 for 0) on the server's area in place of the READ.
// As perftest (run_iter_lat*, print_report_lat), each side times its own posts, and the
// samples are the gaps between consecutive posts (-n posts, -n - 1 gaps): send_lat and
// write_lat report half of each gap (a round trip), read_lat and atomic_lat the whole gap
// (one READ or atomic and its completion). With -D a side stops when its time is up,
// and reports what perftest's timed table has (the rounds between the margins, t_avg as their
// time over their count, tps) from a summary that does not grow with the run's length.

import { SendFlags, WcOpcode, WrOpcode, type SendWr, type WorkCompletion } from '../../index.js';
import { LatSummary, latResult, sampleWindow, type LatResult } from './report.js';
import { INLINE_SIZE, nowNs, yieldToLoop, type Session } from './session.js';
import { spinUntil } from '../spin-poll.js';

const RX_DEPTH = 64;

export async function runLatTest(s: Session, emit: (r: LatResult) => void): Promise<LatResult[]> {
  const o = s.o;
  const results: LatResult[] = [];
  if ((o.test === 'read_lat' || o.test === 'atomic_lat') && s.isServer) {
    // perftest's read_lat and atomic_lat servers have nothing to do but close; they print no
    // result. The close waits for the client's whole run: no --timeout.
    await s.closeConnection(true);
    return results;
  }
  for (const size of o.sizes) {
    let r: LatResult | undefined;
    if (o.test === 'send_lat') {
      const rx = new Receives(s, size);
      if (s.softrdma) await s.oob!.barrier(`send_lat ${size}`);
      await s.sync();
      r = await sendLat(s, size, rx);
    } else if (o.test === 'write_lat') {
      // perftest has no step between sizes here; two softrdma sides add one.
      if (s.softrdma) await s.oob!.barrier(`write_lat ${size}`);
      r = await writeLat(s, size);
    } else {
      r = await readLat(s, size); // read_lat and atomic_lat
    }
    results.push(r);
    emit(r);
  }
  // write_lat ends without a word (no ctx_close_connection); the others close as perftest does.
  if (o.test === 'write_lat') await s.oob!.finish(2000);
  else await s.closeConnection();
  return results;
}

function deadlineOf(s: Session): number {
  return s.o.durationSec ? nowNs() + s.o.durationSec * 1e9 : Infinity;
}

/** Round count: -n, or as many as fit in -D. */
function more(s: Session, done: number, deadline: number): boolean {
  return s.o.durationSec ? nowNs() < deadline : done < s.o.iters;
}

/**
 * The times of a ping-pong's posts (each follows the peer's answer to the one before); the
 * latency samples are half the gaps between consecutive ones (perftest's tposted and its
 * rtt_factor 2): -n posts make -n - 1 samples, and nothing after the last post is timed.
 * With -n every post is kept (-n of them); with -D only what is between perftest's margins
 * counts, and it is summarised as it comes (LatSummary), so a long timed run does not grow.
 */
class Posts {
  private readonly all: number[] | undefined;
  private readonly w: { from: number; to: number };
  private readonly summary = new LatSummary();
  private first = 0;
  private prev = 0;
  private inWindow = 0;
  constructor(s: Session, t0: number) {
    this.w = sampleWindow(t0, s.o.durationSec, s.o.marginSec);
    this.all = s.o.durationSec ? undefined : [];
  }

  push(t: number): void {
    if (this.all) { this.all.push(t); return; }
    if (t < this.w.from || t > this.w.to) return;
    if (this.inWindow++ === 0) this.first = t;
    else this.summary.add((t - this.prev) / 2e3);
    this.prev = t;
  }

  /** The result; `iters`: the rounds of a -n run. */
  result(s: Session, size: number, iters: number): LatResult {
    if (this.all) {
      const posts = this.all, n = posts.length - 1;
      if (n < 1) throw new Error('too few rounds to measure');
      const samples = new Float64Array(n);
      for (let i = 0; i < n; i++) samples[i] = (posts[i + 1]! - posts[i]!) / 2e3;
      return { ...latResult(s.o.test, size, samples), iterations: iters, tps_average: n / ((posts[n]! - posts[0]!) / 1e9) };
    }
    // perftest's timed report: the rounds between the margins, t_avg = their time / rounds / 2.
    const r = this.summary.result(s.o.test, size);
    if (!r) throw new Error('too few rounds to measure');
    const secs = (this.prev - this.first) / 1e9;
    return { ...r, t_avg_us: (secs * 1e6) / r.iterations / 2, tps_average: r.iterations / secs };
  }
}

class Receives {
  posted = 0;
  received = 0;
  private readonly take = (wc: WorkCompletion) => this.onWc(wc);
  constructor(private readonly s: Session, private readonly size: number) {
    const n = s.o.durationSec ? RX_DEPTH : Math.min(RX_DEPTH, s.o.iters);
    for (let k = 0; k < n; k++) this.post();
  }
  private post() {
    this.s.qp.postRecv({ wrId: this.posted++, sgList: [this.s.mr.sge(this.s.recvOff(0), this.size)] });
  }
  onWc(wc: WorkCompletion) {
    if (wc.opcode !== WcOpcode.RECV) return;
    this.received++;
    if (this.s.o.durationSec || this.posted < this.s.o.iters) this.post();
  }
  /** Until `target` SENDs arrived; false if the deadline passed first. */
  async wait(target: number, deadline: number): Promise<boolean> {
    while (this.received < target) {
      await this.s.poll(1, this.take, deadline);
      if (nowNs() >= deadline && this.received < target) return false;
    }
    return true;
  }
}

async function sendLat(s: Session, size: number, rx: Receives): Promise<LatResult> {
  const inline = size <= INLINE_SIZE ? SendFlags.INLINE : 0;
  const sge = s.mr.sge(s.sendOff(0), size);
  const t0 = nowNs();
  const deadline = deadlineOf(s);
  const posts = new Posts(s, t0);
  let sent = 0;
  for (;;) {
    // The client sends first and then waits for each answer; the server waits, then answers.
    if (s.isServer) {
      if (!more(s, sent, deadline)) break;
      if (!(await rx.wait(sent + 1, deadline))) break;
    } else {
      if (sent > 0 && !(await rx.wait(sent, deadline))) break;
      if (!more(s, sent, deadline)) break;
    }
    posts.push(nowNs());
    s.qp.postSend({ wrId: sent, opcode: WrOpcode.SEND, sendFlags: inline | SendFlags.SIGNALED, sgList: [sge] });
    sent++;
  }
  return posts.result(s, size, sent);
}

async function writeLat(s: Session, size: number): Promise<LatResult> {
  const inline = size <= INLINE_SIZE ? SendFlags.INLINE : 0;
  const sge = s.mr.sge(s.sendOff(0), size);
  const remote = { remoteAddr: s.remoteAddr(0), rkey: s.remote[0]!.rkey };
  const postAt = s.sendOff(0) + size - 1, pollAt = s.recvOff(0) + size - 1;
  const t0 = nowNs();
  const deadline = deadlineOf(s);
  const timeout = s.o.timeoutMs;
  const posts = new Posts(s, t0);
  let scnt = 0, rcnt = 0;
  const polled: WorkCompletion[] = []; // one array for every poll of the spin
  const drain = () => { for (const wc of s.cq.poll(16, polled)) if (wc.status !== 0) throw new Error(`completion error ${wc.status}`); };
  while (s.o.durationSec ? nowNs() < deadline : scnt < s.o.iters || rcnt < s.o.iters) {
    // As perftest: everyone waits for the peer's round first, except the server before its first write.
    if ((s.o.durationSec || rcnt < s.o.iters) && !(scnt < 1 && s.isServer)) {
      rcnt++;
      const want = rcnt & 0xff;
      const give = Date.now() + timeout;
      // Polling the CQ (for the send completions) is what reads the socket: the peer's WRITE
      // lands in the buffer during a poll (busy polling).
      while (!spinUntil(() => { drain(); return s.buf[pollAt] === want; }, () => s.cq.canSpin)) {
        if (nowNs() >= deadline) break;
        if (Date.now() > give) throw new Error(`the peer's write for round ${rcnt} never arrived`);
        await yieldToLoop();
      }
      if (s.buf[pollAt] !== want) break;
    }
    if (s.o.durationSec || scnt < s.o.iters) {
      posts.push(nowNs());
      s.buf[postAt] = ++scnt & 0xff;
      s.qp.postSend({ wrId: scnt, opcode: WrOpcode.RDMA_WRITE, sendFlags: inline | SendFlags.SIGNALED, sgList: [sge], rdma: remote });
    }
  }
  drain();
  return posts.result(s, size, scnt);
}

async function readLat(s: Session, size: number): Promise<LatResult> {
  const deadline = deadlineOf(s);
  // -n: every READ's post time (-n of them; the samples are the -n - 1 gaps between them, as
  // perftest's run_iter_lat and print_report_lat, rtt_factor 1); -D: a summary of the gaps
  // between the margins.
  const posts: number[] | undefined = s.o.durationSec ? undefined : [];
  const summary = new LatSummary();
  const remote = { remoteAddr: s.remoteAddr(0), rkey: s.remote[0]!.rkey };
  const sge = s.mr.sge(s.sendOff(0), size);
  // atomic_lat: the old value lands in our send area (as perftest's), the server's counter moves.
  const wr: SendWr = s.o.test !== 'atomic_lat'
    ? { wrId: 0, opcode: WrOpcode.RDMA_READ, sendFlags: SendFlags.SIGNALED, sgList: [sge], rdma: remote }
    : s.o.atomicType === 'CMP_AND_SWAP'
      ? { wrId: 0, opcode: WrOpcode.ATOMIC_CMP_AND_SWP, sendFlags: SendFlags.SIGNALED, sgList: [sge], atomic: { ...remote, compareAdd: 0n, swap: 0n } }
      : { wrId: 0, opcode: WrOpcode.ATOMIC_FETCH_AND_ADD, sendFlags: SendFlags.SIGNALED, sgList: [sge], atomic: { ...remote, compareAdd: 1n } };
  const t0 = nowNs();
  // With -D only the READs posted between perftest's margins count.
  const w = sampleWindow(t0, s.o.durationSec, s.o.marginSec);
  let rounds = 0, first = 0, last = 0, counted = 0, prev = 0;
  while (more(s, rounds, deadline)) {
    const t = nowNs();
    wr.wrId = rounds++;
    s.qp.postSend(wr);
    await s.poll(1, () => {});
    const done = nowNs();
    if (t < w.from || t > w.to) continue;
    if (!counted++) first = t;
    else if (!posts) summary.add((t - prev) / 1e3);
    prev = t;
    last = done;
    posts?.push(t);
  }
  let r: LatResult | undefined;
  if (posts) {
    if (posts.length < 2) throw new Error('too few READs to measure');
    const gaps = new Float64Array(posts.length - 1);
    for (let i = 0; i < gaps.length; i++) gaps[i] = (posts[i + 1]! - posts[i]!) / 1e3;
    r = latResult(s.o.test, size, gaps);
  } else {
    // A single READ between the margins has no gap: its own time stands in.
    if (counted === 1) summary.add((last - first) / 1e3);
    r = summary.result(s.o.test, size);
  }
  if (!r) throw new Error('no READ completed between the margins');
  const secs = (last - first) / 1e9;
  // -D: perftest's timed report, t_avg = the time of the READs between the margins / their count.
  return { ...r, iterations: counted, ...(posts ? {} : { t_avg_us: (secs * 1e6) / counted }), tps_average: counted / secs };
}
