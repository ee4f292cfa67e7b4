// softrdma perftest's defaults and figures against perftest's own (perftest_parameters.c):
// - -n: DEF_ITERS_WB (5000) for write_bw only, DEF_ITERS (1000) for every other test
//   (init_perftest_params), so a C ib_send_bw and a softrdma send_bw on defaults agree;
// - the latency table: print_report_lat on the gaps between consecutive posts (iters - 1 of
//   them, halved for the ping-pongs), the two largest dropped (LAT_MEASURE_TAIL), t_max =
//   delta[m], get_median, percentiles delta[ceil(m * 0.99)] and delta[ceil(m * 0.999)];
// - the BW peak: print_report_bw's least (tcompleted[j] - tposted[i]) / (j - i + 1) over the
//   signalled completions j;
// - -f without -D: accepted, as perftest (checked against its default duration, 5 s).
// The expected figures are computed here by ports of perftest's C loops, not by our code.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { WcOpcode, WcStatus, type SendWr, type WorkCompletion } from '../../src/index.js';
import { parsePerftestArgs, PERFTEST_USAGE } from '../../src/tools/perftest/options.js';
import * as report from '../../src/tools/perftest/report.js';
import { runLatTest } from '../../src/tools/perftest/lat.js';
import { sendLoop, sum } from '../../src/tools/perftest/bw.js';
import type { Session } from '../../src/tools/perftest/session.js';

const { bwResult, latLine, latResult, LatSummary } = report;

describe('perftest -n default (init_perftest_params: DEF_ITERS_WB for write_bw, DEF_ITERS otherwise)', () => {
  it('5000 for write_bw, 1000 for send_bw, read_bw, atomic_bw and the latency tests', () => {
    assert.equal(parsePerftestArgs(['write_bw']).iters, 5000);
    for (const t of ['send_bw', 'read_bw', 'atomic_bw', 'send_lat', 'write_lat', 'read_lat']) assert.equal(parsePerftestArgs([t]).iters, 1000, t);
    assert.equal(parsePerftestArgs(['send_bw', '-n', '77']).iters, 77);
  });

  it('the usage text says so', () => {
    assert.match(PERFTEST_USAGE, /-n, --iters N .*\(default 5000 for write_bw, 1000 for the\s+other tests/);
  });
});

describe('perftest -f without -D (perftest: accepted and unused; checked against DEF_DURATION 5)', () => {
  it('is accepted up to 2, refused from 3 (5 > 2 * margin fails)', () => {
    const o = parsePerftestArgs(['write_bw', '-f', '2']);
    assert.equal(o.durationSec, undefined);
    assert.equal(o.marginSec, 0);
    assert.throws(() => parsePerftestArgs(['write_bw', '-f', '3']), /more than twice the margin/);
    assert.equal(parsePerftestArgs(['write_bw', '-D', '8', '-f', '3']).marginSec, 3);
  });
});

/**
 * A port of perftest's print_report_lat (tst == LAT) on tposted in "cycles" of 1 ns (so
 * cycles_to_units, the MHz, is 1000), with its integer types: delta and the median are
 * cycles_t (integers), temp_var and pow_var are int.
 */
function perftestLat(tposted: number[], rttFactor: number) {
  let measureCnt = tposted.length - 1;
  const delta: number[] = [];
  for (let i = 0; i < measureCnt; i++) delta.push(tposted[i + 1]! - tposted[i]!);
  const q = 1000 * rttFactor; // cycles_rtt_quotient
  delta.sort((a, b) => a - b);
  measureCnt -= 2; // LAT_MEASURE_TAIL
  const n = measureCnt;
  const median = (n - 1) % 2 ? Math.trunc((delta[n / 2]! + delta[n / 2 - 1]!) / 2) : delta[Math.trunc(n / 2)]!;
  let averageSum = 0;
  for (let i = 0; i < measureCnt; i++) averageSum += delta[i]! / q;
  const average = averageSum / measureCnt;
  let stdevSum = 0;
  for (let i = 0; i < measureCnt; i++) {
    const tempVar = Math.trunc(average - delta[i]! / q);
    stdevSum += Math.trunc(tempVar ** 2);
  }
  const iters99 = Math.ceil(measureCnt * 0.99), iters999 = Math.ceil(measureCnt * 0.999);
  return {
    t_min_us: delta[0]! / q, t_max_us: delta[measureCnt]! / q, t_typical_us: median / q, t_avg_us: average,
    t_stdev_us: Math.sqrt(stdevSum / measureCnt), p99_us: delta[iters99]! / q, p999_us: delta[iters999]! / q,
  };
}

/** What our lat tests hand latResult: the gaps between posts, in us, divided by the rtt factor. */
function gapsUs(tposted: number[], rttFactor: number): Float64Array {
  return Float64Array.from(tposted.slice(1), (t, i) => (t - tposted[i]!) / 1000 / rttFactor);
}

const KEYS = ['t_min_us', 't_max_us', 't_typical_us', 't_avg_us', 't_stdev_us', 'p99_us', 'p999_us'] as const;

function postsFromGaps(gapsNs: number[]): number[] {
  const t = [1_000_000];
  for (const g of gapsNs) t.push(t[t.length - 1]! + g);
  return t;
}

describe("perftest's latency statistics (print_report_lat)", () => {
  it('1000 gaps of 10 us and outliers 2000, 500, 500: the two largest dropped, t_max 500, t_avg over the first m', () => {
    const gaps = [...Array<number>(500).fill(10_000), 2_000_000, ...Array<number>(250).fill(10_000), 500_000, ...Array<number>(250).fill(10_000), 500_000];
    const posts = postsFromGaps(gaps); // read_lat's rtt_factor 1: the gaps are the latencies
    const want = perftestLat(posts, 1);
    // By hand: m = 1003 - 2 = 1001; delta[0..1000] are 1000 x 10 and one 500; delta[1001] = 500.
    assert.equal(want.t_max_us, 500);
    assert.ok(Math.abs(want.t_avg_us - 10500 / 1001) < 1e-9);
    const got = latResult('read_lat', 2, gapsUs(posts, 1));
    assert.equal(got.t_max_us, 500);
    // Unrounded, as perftest's double (the table rounds it: 10.49; --output=latency prints %lf).
    assert.ok(Math.abs(got.t_avg_us - 10500 / 1001) < 1e-9, String(got.t_avg_us));
    assert.match(latLine(got), /^ 2 {7}1003 {10}10\.00 +500\.00 +10\.00 +\t +10\.49 /);
    assert.equal(got.t_min_us, 10);
    assert.equal(got.t_typical_us, 10);
    assert.equal(got.p99_us, 10); // delta[ceil(1001 * 0.99)] = delta[991]
    assert.equal(got.p999_us, 500); // delta[ceil(1001 * 0.999)] = delta[1000]
    for (const k of KEYS) assert.ok(Math.abs(got[k] - want[k]) < 0.006, `${k}: ${got[k]} vs perftest ${want[k]}`);
  });

  it('the same as a port of perftest on random runs, round trips halved (rtt_factor 2), odd and even m', () => {
    let seed = 11;
    const rnd = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
    for (const iters of [5, 6, 7, 100, 1000, 1001, 5000]) {
      for (const rtt of [1, 2]) {
        const gaps = Array.from({ length: iters - 1 }, () => 2 * Math.round(4000 + rnd() * 30_000 + (rnd() < 0.02 ? rnd() * 900_000 : 0)));
        const posts = postsFromGaps(gaps);
        const want = perftestLat(posts, rtt);
        const got = latResult('send_lat', 2, gapsUs(posts, rtt));
        for (const k of KEYS) assert.ok(Math.abs(got[k] - want[k]) < 0.006, `iters ${iters} rtt ${rtt} ${k}: ${got[k]} vs perftest ${want[k]}`);
      }
    }
  });

  it('t_stdev as perftest computes it: deviations truncated to whole microseconds (int temp_var)', () => {
    // Gaps 10.0 and 10.8 us alternating: every deviation from the average is under 1 us.
    const gaps = Array.from({ length: 999 }, (_, i) => (i % 2 ? 10_800 : 10_000));
    const got = latResult('read_lat', 2, gapsUs(postsFromGaps(gaps), 1));
    assert.equal(got.t_stdev_us, 0);
  });

  it('-D: the summary uses the same definitions (the two largest dropped, t_max the second largest)', () => {
    const gaps = [...Array<number>(1000).fill(10), 2000, 500, 500];
    const sum = new LatSummary();
    for (const g of gaps) sum.add(g);
    const got = sum.result('read_lat', 2)!, want = latResult('read_lat', 2, Float64Array.from(gaps));
    assert.equal(got.t_max_us, 500);
    for (const k of KEYS) assert.equal(got[k], want[k], k);
  });
});

/** A latency session whose peer answers each post after `delayMs(k)` (k: the poll's number). */
function latSession(test: 'read_lat' | 'send_lat', isServer: boolean, iters: number, delayMs: (k: number) => number): Session {
  let polls = 0;
  const qp = { postSend(_wr: SendWr): void {}, postRecv(): void {} };
  return {
    o: { test, sizes: [2], iters, durationSec: undefined, marginSec: 0, timeoutMs: 30_000 },
    isServer, softrdma: false, qp, remote: [{ rkey: 2 }],
    mr: { sge: (addr: number, length: number) => ({ addr, length, lkey: 1 }) },
    sendOff: () => 0, recvOff: () => 0, remoteAddr: () => 0n,
    async sync() {}, async closeConnection() {},
    async poll(_want: number, onWc: (wc: WorkCompletion) => void): Promise<number> {
      await new Promise((r) => setTimeout(r, delayMs(polls++)));
      onWc({ wrId: 0n, status: WcStatus.SUCCESS, opcode: test === 'read_lat' ? WcOpcode.RDMA_READ : WcOpcode.RECV, byteLen: 2 } as unknown as WorkCompletion);
      return 1;
    },
  } as unknown as Session;
}

describe("perftest's latency samples: the gaps between a side's posts (run_iter_lat*, tposted)", () => {
  it('read_lat: -n READs make -n - 1 gaps; the last READ is in none (its time is not a sample)', async () => {
    // Every READ takes 1 ms, but the last two take 300 and 400 ms: the gap before the last
    // post holds the 300 (it is dropped, as the largest; t_max is the second largest, about
    // 1 ms), the 400 is in no gap.
    const iters = 20;
    const [r] = await runLatTest(latSession('read_lat', false, iters, (k) => (k === iters - 2 ? 300 : k === iters - 1 ? 400 : 1)), () => {});
    assert.equal(r!.iterations, iters);
    assert.ok(r!.t_max_us < 150_000, `t_max ${r!.t_max_us} us: the last READs' time counted`);
  });

  it('send_lat: the server times nothing after its last post (no gap from the last post to the end)', async () => {
    // Each SEND of the client arrives 5 ms after the server's answer (a timer may fire up to
    // 1 ms early): every gap between the server's posts is 4 ms or more, 2 ms once halved.
    const [r] = await runLatTest(latSession('send_lat', true, 20, () => 5), () => {});
    assert.equal(r!.iterations, 20);
    assert.ok(r!.t_min_us >= 1000, `t_min ${r!.t_min_us} us: a gap that is not a round trip`);
  });
});

/** A port of perftest's peak loop in print_report_bw (post_list 1), on ns instead of cycles. */
function perftestOptDelta(tposted: Float64Array, tcompleted: Float64Array, cqMod: number): number {
  const n = tcompleted.length;
  const roundUp = (v: number, a: number) => (v % a === 0 ? v : a * (Math.floor(v / a) + 1));
  let opt = Infinity;
  for (let i = 0; i < n; i++) {
    for (let j = roundUp(i + 1, cqMod) - 1; j < n; j += cqMod) opt = Math.min(opt, (tcompleted[j]! - tposted[i]!) / (j - i + 1));
    if (n % cqMod) {
      const j = n - 1;
      opt = Math.min(opt, (tcompleted[j]! - tposted[i]!) / (j - i + 1));
    }
  }
  return opt;
}

/** Posts at the given per-operation intervals; each signalled completion (every cqMod-th and the last) `latNs` after its post. */
function bwRun(intervalNs: (k: number) => number, n: number, cqMod: number, latNs: number) {
  const posted = new Float64Array(n), done = new Float64Array(n);
  let t = 1e12;
  for (let k = 0; k < n; k++) { posted[k] = t; t += intervalNs(k); }
  let from = 0;
  for (let j = 0; j < n; j++) {
    if ((j + 1) % cqMod === 0 || j === n - 1) {
      done.fill(posted[j]! + latNs, from, j + 1);
      from = j + 1;
    }
  }
  return { posted, done };
}

describe("perftest's BW peak (print_report_bw)", () => {
  it('1000 operations signalled every 64th, the second half 4x faster: the peak is the fast half\'s rate', () => {
    const bytes = 65536;
    const { posted, done } = bwRun((k) => (k < 500 ? 40_000 : 10_000), 1000, 64, 20_000);
    const r = bwResult('write_bw', bytes, posted[0]!, done, null, posted, 64);
    const trueFast = bytes / 10e-6 / 2 ** 20; // 6250 MiB/s
    const perftest = bytes / (perftestOptDelta(posted, done, 64) / 1e9) / 2 ** 20;
    assert.ok(Math.abs(r.bw_peak_MBps - perftest) <= 0.01, `peak ${r.bw_peak_MBps} vs perftest's ${perftest}`);
    assert.ok(r.bw_peak_MBps > 0.95 * trueFast && r.bw_peak_MBps <= trueFast, `peak ${r.bw_peak_MBps} vs the fast half's ${trueFast}`);
    assert.ok(r.bw_peak_MBps > 1.5 * r.bw_avg_MBps, `peak ${r.bw_peak_MBps}, average ${r.bw_avg_MBps}`);
  });

  it('a steady run: the peak is near the average (not zero, not over-estimated); without post times it is the average', () => {
    const { posted, done } = bwRun(() => 10_000, 20_000, 64, 30_000);
    const r = bwResult('write_bw', 4096, posted[0]!, done, null, posted, 64);
    assert.ok(r.bw_peak_MBps >= r.bw_avg_MBps && r.bw_peak_MBps < 1.01 * r.bw_avg_MBps, `peak ${r.bw_peak_MBps}, average ${r.bw_avg_MBps}`);
    const noPosts = bwResult('write_bw', 4096, posted[0]!, done, null);
    assert.equal(noPosts.bw_peak_MBps, noPosts.bw_avg_MBps);
  });

  it('the same minimum as perftest\'s O(n^2 / cq_mod) loop on random runs, any cq_mod and length', () => {
    let seed = 5;
    const rnd = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
    for (const [n, cq] of [[1, 64], [5, 64], [63, 64], [64, 64], [65, 64], [1000, 64], [777, 3], [300, 1], [2000, 64]] as const) {
      for (let rep = 0; rep < 3; rep++) {
        const posted = new Float64Array(n), done = new Float64Array(n);
        let t = 5e11;
        for (let k = 0; k < n; k++) { posted[k] = t; t += 100 + rnd() * 20_000 * (rnd() < 0.1 ? 10 : 1); }
        // Completions in uneven batches (as -t or a slow peer make them), never before the post.
        let from = 0, c = posted[0]!;
        for (let j = 0; j < n; j++) {
          if ((j + 1) % cq === 0 || j === n - 1 || rnd() < 0.05) {
            c = Math.max(c, posted[j]!) + rnd() * 50_000;
            done.fill(c, from, j + 1);
            from = j + 1;
          }
        }
        const want = perftestOptDelta(posted, done, cq), got = report.peakDelta(posted, done, cq);
        assert.ok(Math.abs(got - want) <= 1e-9 * want, `n ${n} cq ${cq}: ${got} vs perftest's ${want}`);
      }
    }
  });
});

/** A bw session (-n) whose signalled completions come one a poll, the first `slow` after 8 ms each, the rest after 1 ms. */
function bwSession(iters: number, slow: number): Session {
  const done: WorkCompletion[] = [];
  const qp = {
    postSend(wr: SendWr): void {
      if (wr.sendFlags! & 2) done.push({ wrId: wr.wrId, status: WcStatus.SUCCESS, opcode: WcOpcode.RDMA_WRITE, byteLen: 0 } as unknown as WorkCompletion);
    },
  };
  let delivered = 0;
  return {
    o: { test: 'write_bw', iters, txDepth: 128, durationSec: undefined, marginSec: 0, noPeak: false, bidir: false },
    isServer: false, nq: 1, qps: [qp], remote: [{ rkey: 2 }],
    mr: { sge: (addr: number, length: number) => ({ addr, length, lkey: 1 }) },
    sendOff: () => 0, remoteAddr: () => 0n,
    async poll(_want: number, onWc: (wc: WorkCompletion) => void): Promise<number> {
      // Slow completions 50 ms apart, then as fast as the loop turns: a late timer (a loaded
      // machine) only makes the slow half slower, so the peak stays well above the average.
      await new Promise((r) => (delivered++ < slow ? setTimeout(r, 50) : setImmediate(r)));
      onWc(done.shift()!);
      return 1;
    },
  } as unknown as Session;
}

describe("the bw sender records perftest's tposted (each post's time) for the peak", () => {
  it('-n 1000 with completions slow, then 8x faster: the peak is well above the average', async () => {
    const { result: r } = await sendLoop(bwSession(1000, 8), 65536, undefined);
    assert.equal(r.iterations, 1000);
    assert.ok(r.bw_peak_MBps > 1.5 * r.bw_avg_MBps, `peak ${r.bw_peak_MBps}, average ${r.bw_avg_MBps}`);
  });
});

describe("--report_gbits under 0.1 Gb/sec: perftest's inc_accuracy (REPORT_FMT_EXT, six decimals)", () => {
  const r: report.BwResult = { test: 'write_bw', bytes: 2, iterations: 1000, bw_peak_MBps: 1.23, bw_avg_MBps: 0.95, msg_rate_Mpps: 0.498, verified: null };
  it('the table line is REPORT_FMT_EXT: " %-7lu    %lu           %-7.6lf            %-7.6lf            %-7.6lf"', () => {
    // 0.95 MiB/sec = 0.95 * 2^20 * 8 / 10^9 Gb/sec = 0.0079691776; 1.23 MiB/sec = 0.01031798784.
    assert.equal(report.bwLine(r, true), ' 2          1000           0.010318            0.007969            0.498000');
    // MiB/sec, or Gb/sec from 0.1 up: REPORT_FMT, two decimals.
    assert.match(report.bwLine(r, false), /^ 2 {10}1000 {13}1\.23 {4}/);
    assert.match(report.bwLine({ ...r, bw_avg_MBps: 12 }, true), /^ 2 {10}1000 {13}0\.01 {15}0\.10 /);
  });

  it('-b: decided on this side\'s own average, as perftest decides before adding the peer\'s', () => {
    // 8 MiB/sec each way: 0.067 Gb/sec per direction, 0.134 summed.
    const one: report.BwResult = { ...r, bw_peak_MBps: 9, bw_avg_MBps: 8 };
    const both = sum(one, { ...one }, null);
    assert.equal(both.bw_avg_MBps, 16);
    assert.match(report.bwLine(both, true), /^ 2 {10}1000 {11}0\.\d{6} {12}0\.134218 /);
    assert.equal(report.withPerftestKeys(both, true).BW_average, 0.134218);
    // Without a local average on record (one direction): the usual rule.
    assert.match(report.bwLine({ ...both }, true), /^ 2 {10}1000 {13}0\.\d\d {15}0\.13 /);
  });

  it('the JSON has six decimals too (REPORT_FMT_EXT_JSON)', () => {
    const j = report.withPerftestKeys(r, true);
    assert.equal(j.BW_average, 0.007969);
    assert.equal(j.BW_peak, 0.010318);
    assert.equal(report.withPerftestKeys(r, false).BW_average, 0.95);
  });
});
