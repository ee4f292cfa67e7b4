// perftest's result tables and the matching JSON objects. As in perftest, MB is 2^20 bytes
// and the latency of send_lat/write_lat is half the measured round trip. The results keep the
// figures unrounded, as perftest's doubles: the table rounds them (%.2lf), the JSON as perftest's
// --out_json does (jsonRounded), --output prints them with %lf.

import { DEF_CQ_MOD } from './options.js';

export const RESULT_LINE = '-'.repeat(87);

export interface BwResult {
  test: string;
  bytes: number;
  iterations: number;
  bw_peak_MBps: number;
  bw_avg_MBps: number;
  msg_rate_Mpps: number;
  /** perftest's --out_json keys; BW in MiB/sec, or Gb/sec with --report_gbits. */
  MsgSize?: number;
  n_iterations?: number;
  BW_peak?: number;
  BW_average?: number;
  MsgRate?: number;
  /** Whether the data the peer ended up with matched what was sent (null: not checked). */
  verified: boolean | null;
}

export interface LatResult {
  test: string;
  bytes: number;
  iterations: number;
  t_min_us: number;
  t_max_us: number;
  t_typical_us: number;
  t_avg_us: number;
  t_stdev_us: number;
  p99_us: number;
  p999_us: number;
  /** Round trips (or READs) per second over the run; perftest prints it with -D. */
  tps_average?: number;
  MsgSize?: number;
  n_iterations?: number;
  t_min?: number;
  t_max?: number;
  t_typical?: number;
  t_avg?: number;
  t_stdev?: number;
  percentile_99?: number;
  'percentile_99.9'?: number;
}

/** Gb/sec from MiB/sec (perftest: Factor = 10^9 / (2^20 * 8) = 119.2). */
export const toGbits = (mib: number) => (mib * MB * 8) / 1e9;

/**
 * The result as JSON shows it, with perftest's own keys added (the first ones stay for existing
 * scripts): rounded as perftest's --out_json prints them (REPORT_FMT_JSON: BW %.2lf, MsgRate
 * %.6lf; REPORT_FMT_LAT_JSON and _LAT_DUR_JSON: %.2f), softrdma's keys the same way.
 */
export function withPerftestKeys<T extends BwResult | LatResult>(r: T, gbits: boolean): T {
  if ('bw_avg_MBps' in r) {
    const u = gbits ? toGbits : (x: number) => x;
    // REPORT_FMT_EXT_JSON (%.6lf) where the table is REPORT_FMT_EXT: see incAccuracy.
    const fix = incAccuracy(r, gbits) ? round6 : round;
    return {
      ...r, bw_peak_MBps: round(r.bw_peak_MBps), bw_avg_MBps: round(r.bw_avg_MBps), msg_rate_Mpps: round6(r.msg_rate_Mpps),
      MsgSize: r.bytes, n_iterations: r.iterations, BW_peak: fix(u(r.bw_peak_MBps)), BW_average: fix(u(r.bw_avg_MBps)), MsgRate: round6(r.msg_rate_Mpps),
    };
  }
  const l = r as LatResult;
  const t = {
    t_min_us: round(l.t_min_us), t_max_us: round(l.t_max_us), t_typical_us: round(l.t_typical_us), t_avg_us: round(l.t_avg_us),
    t_stdev_us: round(l.t_stdev_us), p99_us: round(l.p99_us), p999_us: round(l.p999_us),
    ...(l.tps_average === undefined ? {} : { tps_average: round(l.tps_average) }),
  };
  return { ...l, ...t, MsgSize: l.bytes, n_iterations: l.iterations, t_min: t.t_min_us, t_max: t.t_max_us, t_typical: t.t_typical_us, t_avg: t.t_avg_us, t_stdev: t.t_stdev_us, percentile_99: t.p99_us, 'percentile_99.9': t.p999_us } as T;
}

export const MB = 1 << 20;

export { DEF_CQ_MOD };

/**
 * Bandwidth from completion times: `doneNs[k]` is when the k-th operation (counted over all
 * QPs, as perftest's tcompleted) was known complete, that is the time of the signalled
 * completion that covered it; `postedNs[k]`, when given, when the k-th operation was posted
 * (perftest's tposted). The average is perftest's: every operation over the time from the
 * first post (`startNs` without post times) to the last completion. The peak is perftest's
 * (print_report_bw): the least (tcompleted[j] - tposted[i]) / (j - i + 1) over every i and
 * every j >= i that a signalled completion ends (each cqMod-th operation, and the last one):
 * see peakDelta. `cqMod` must be the run's (options.ts cqModeration: perftest's cq_mod, which
 * is what its peak uses too). Without post times the peak is the average. Unrounded.
 */
export function bwResult(test: string, bytes: number, startNs: number, doneNs: Float64Array, verified: boolean | null, postedNs?: Float64Array, cqMod: number = DEF_CQ_MOD): BwResult {
  const n = doneNs.length;
  const posts = postedNs && postedNs.length >= n ? postedNs : undefined;
  const total = (doneNs[n - 1]! - (posts ? posts[0]! : startNs)) / 1e9;
  const avg = (bytes * n) / total / MB;
  const delta = posts ? peakDelta(posts, doneNs, cqMod) : Infinity;
  const peak = delta > 0 && Number.isFinite(delta) ? bytes / (delta / 1e9) / MB : avg;
  return {
    test, bytes, iterations: n,
    bw_peak_MBps: peak,
    bw_avg_MBps: avg,
    msg_rate_Mpps: n / total / 1e6,
    verified,
  };
}

/**
 * perftest's opt_delta (print_report_bw): the least time per operation over every run of
 * operations i..j that begins at a post (tposted[i]) and ends at a signalled completion
 * (tcompleted[j], j = ROUND_UP(i + 1, cq_mod) - 1 + k * cq_mod, and j = n - 1 when n is not a
 * multiple of cq_mod):
 *
 *     for (i = 0; i < n; i++) {
 *       for (j = ROUND_UP(i + 1, cq_mod) - 1; j < n; j += cq_mod)
 *         opt_delta = min(opt_delta, (tcompleted[j] - tposted[i]) / (j - i + 1));
 *       if (n % cq_mod) { j = n - 1; opt_delta = min(opt_delta, (tcompleted[j] - tposted[i]) / (j - i + 1)); }
 *     }
 *
 * The same minimum without perftest's n^2 / cq_mod steps (-q 256 -n 20000 would be 10^11): the
 * quotient is the slope from (i, tposted[i]) up to (j + 1, tcompleted[j]); for a given j the
 * least slope over i <= j is the tangent from that point to the upper convex hull of the post
 * points so far, found by bisection. O(n log n), no allocation but the hull's index array.
 */
export function peakDelta(postedNs: Float64Array, doneNs: Float64Array, cqMod: number = DEF_CQ_MOD): number {
  const n = doneNs.length;
  if (!n) return Infinity;
  // Times relative to the first post, so the products below keep their precision.
  const base = postedNs[0]!;
  const px = (i: number) => i, py = (i: number) => postedNs[i]! - base;
  const hull = new Int32Array(n);
  let h = 0, next = 0, best = Infinity;
  const query = (j: number) => {
    while (next <= j) {
      // Upper hull: drop the last point while it is not above the line from the one before it to the new one.
      const c = next++;
      while (h >= 2) {
        const a = hull[h - 2]!, b = hull[h - 1]!;
        if ((px(b) - px(a)) * (py(c) - py(a)) - (py(b) - py(a)) * (px(c) - px(a)) >= 0) h--;
        else break;
      }
      hull[h++] = c;
    }
    const ax = j + 1, ay = doneNs[j]! - base;
    const slope = (k: number) => (ay - py(hull[k]!)) / (ax - px(hull[k]!));
    // Along the upper hull the slope to a point on its right falls, then rises: find the turn.
    let lo = 0, hi = h - 1;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (slope(mid + 1) <= slope(mid)) lo = mid + 1;
      else hi = mid;
    }
    const t = slope(lo);
    if (t < best) best = t;
  };
  for (let j = cqMod - 1; j < n; j += cqMod) query(j);
  if (n % cqMod) query(n - 1);
  return best;
}

/** perftest's LAT_MEASURE_TAIL: the largest gaps its latency report leaves out. */
export const LAT_MEASURE_TAIL = 2;

/**
 * perftest's print_report_lat (perftest_parameters.c), on its `delta`: `samplesUs` are the
 * gaps between consecutive posts (-n posts, -n - 1 gaps), already divided by perftest's
 * rtt_factor (2 for send_lat and write_lat, whose gaps are round trips; 1 for read_lat). As
 * perftest: the gaps sorted, the LAT_MEASURE_TAIL largest dropped (m = count - 2), t_min =
 * delta[0], t_max = delta[m] (the second largest), t_typical get_median(m, delta), t_avg and
 * t_stdev over delta[0..m-1], the percentiles delta[ceil(m * 0.99)] and delta[ceil(m * 0.999)].
 * t_stdev is perftest's too: each deviation from the average truncated to whole microseconds
 * (its `int temp_var`) before it is squared, so jitter under 1 us counts as none.
 */
export function latResult(test: string, bytes: number, samplesUs: Float64Array): LatResult {
  const s = Float64Array.from(samplesUs).sort();
  const n = s.length;
  const m = measureCount(n);
  const at = (i: number) => s[Math.min(i, n - 1)]!;
  let sum = 0;
  for (let i = 0; i < m; i++) sum += s[i]!;
  const avg = sum / m;
  let sq = 0;
  for (let i = 0; i < m; i++) sq += Math.trunc(avg - s[i]!) ** 2;
  return {
    test, bytes, iterations: n,
    t_min_us: s[0]!, t_max_us: at(m), t_typical_us: median(m, at),
    t_avg_us: avg, t_stdev_us: Math.sqrt(sq / m), p99_us: at(Math.ceil(m * 0.99)), p999_us: at(Math.ceil(m * 0.999)),
  };
}

/** perftest's measure_cnt after the tail is dropped (at least one gap counts when there are fewer than three). */
function measureCount(n: number): number {
  return Math.max(1, n - LAT_MEASURE_TAIL);
}

/** perftest's get_median(m, delta): the middle gap, or the mean of the two middle ones when m is even. */
function median(m: number, at: (i: number) => number): number {
  return m % 2 === 0 ? (at(m / 2) + at(m / 2 - 1)) / 2 : at((m - 1) / 2);
}

/** perftest's %.2lf and %.6lf, for the JSON. */
function round(x: number): number { return Math.round(x * 100) / 100; }
function round6(x: number): number { return Math.round(x * 1e6) / 1e6; }

/**
 * perftest 4.5-0.17's RESULT_FMT / RESULT_FMT_G (perftest_parameters.h). Its "MB" is 2^20 bytes,
 * as the figures are (later perftest releases say MiB).
 */
export function bwHeader(gbits = false): string {
  return gbits
    ? ` #bytes     #iterations    BW peak[Gb/sec]    BW average[Gb/sec]   MsgRate[Mpps]`
    : ` #bytes     #iterations    BW peak[MB/sec]    BW average[MB/sec]   MsgRate[Mpps]`;
}

/**
 * perftest's inc_accuracy (print_full_bw_report): with --report_gbits, an average under
 * 0.1 Gb/sec is printed with six decimals (REPORT_FMT_EXT, REPORT_FMT_EXT_JSON). The figures
 * come from MiB/sec kept to 0.01 (8.4e-5 Gb/sec), so the last digit or two are not measured.
 */
export function incAccuracy(r: Pick<BwResult, 'bw_avg_MBps'>, gbits: boolean): boolean {
  return gbits && toGbits(localAverage.get(r) ?? r.bw_avg_MBps) < 0.1;
}

/**
 * -b: the average of this side's own direction behind a summed result (bw.ts sum). perftest
 * decides inc_accuracy on its own side's bw_avg before it adds the peer's (print_full_bw_report),
 * so two directions under 0.1 Gb/sec each keep six decimals even where their sum is not. Kept
 * out of the result object, which is printed as JSON.
 */
export const localAverage = new WeakMap<object, number>();

/**
 * perftest 4.5-0.17's REPORT_FMT: " %-7lu    %-10lu       %-7.2lf            %-7.2lf\t\t   %-7.6lf"; with
 * incAccuracy its REPORT_FMT_EXT: " %-7lu    %lu           %-7.6lf            %-7.6lf            %-7.6lf".
 */
export function bwLine(r: BwResult, gbits = false): string {
  const u = gbits ? toGbits : (x: number) => x;
  if (incAccuracy(r, gbits)) {
    const f = (x: number) => x.toFixed(6).padEnd(7);
    return ` ${String(r.bytes).padEnd(7)}    ${r.iterations}           ${f(u(r.bw_peak_MBps))}            ${f(u(r.bw_avg_MBps))}            ${f(r.msg_rate_Mpps)}`;
  }
  return ` ${String(r.bytes).padEnd(7)}    ${String(r.iterations).padEnd(10)}       ${u(r.bw_peak_MBps).toFixed(2).padEnd(7)}            ${u(r.bw_avg_MBps).toFixed(2).padEnd(7)}\t\t   ${r.msg_rate_Mpps.toFixed(6).padEnd(7)}`;
}

export function latHeader(): string {
  return ` #bytes #iterations    t_min[usec]    t_max[usec]  t_typical[usec]    t_avg[usec]    t_stdev[usec]   99% percentile[usec]   99.9% percentile[usec] `;
}

export function latLine(r: LatResult): string {
  const f = (x: number) => x.toFixed(2).padEnd(7);
  // perftest's REPORT_FMT_LAT: " %-7lu %lu          %-7.2f        %-7.2f      %-7.2f  \t       %-7.2f     \t%-7.2f\t\t%-7.2f \t\t%-7.2f"
  return ` ${String(r.bytes).padEnd(7)} ${r.iterations}          ${f(r.t_min_us)}        ${f(r.t_max_us)}      ${f(r.t_typical_us)}  \t       ${f(r.t_avg_us)}     \t${f(r.t_stdev_us)}\t\t${f(r.p99_us)} \t\t${f(r.p999_us)}`;
}

/** perftest's RESULT_FMT_LAT_DUR / REPORT_FMT_LAT_DUR: the table of a timed (-D) latency run. */
export function latDurHeader(): string {
  return ` #bytes        #iterations       t_avg[usec]    tps average`;
}

export function latDurLine(r: LatResult): string {
  return ` ${String(r.bytes).padEnd(7)}       ${r.iterations}            ${r.t_avg_us.toFixed(2).padEnd(7)}        ${(r.tps_average ?? 0).toFixed(2).padEnd(7)}`;
}

/** ctx_print_test_info's title: the verb, the atomic type for the atomic tests, "BW" or "Latency", "Test". */
export function title(o: { test: string; atomicType: string }): string {
  const [verb, kind] = o.test.split('_') as [string, string];
  const name = { write: 'RDMA_Write', read: 'RDMA_Read', send: 'Send', atomic: `Atomic ${o.atomicType}` }[verb] ?? verb;
  return `${name} ${kind === 'bw' ? 'BW' : 'Latency'} Test`;
}

/**
 * perftest's -D window: results count only from `margin` seconds after the start to `margin`
 * before the end (its alarm states START, SAMPLE, STOP_SAMPLE), so neither the warm-up nor the
 * wind-down is measured. Without -D everything counts.
 */
export function sampleWindow(t0Ns: number, durationSec: number | undefined, marginSec: number): { from: number; to: number } {
  if (!durationSec) return { from: t0Ns, to: Infinity };
  return { from: t0Ns + marginSec * 1e9, to: t0Ns + (durationSec - marginSec) * 1e9 };
}

/**
 * -D in a bandwidth test: the completions between the margins, counted in constant memory
 * (a timed run may last hours; a timestamp per operation would not fit). The average is
 * perftest's: the operations completed between the margins over the whole window (its
 * catch_alarm takes the times at the window's ends), so a stall inside the window counts. No
 * peak: perftest measures none with -D (peakNotMeasured), the average stands in for it here.
 */
export class WindowedCount {
  n = 0;
  constructor(readonly from: number, readonly to: number) {}

  /** `count` operations known complete at `t` (ns). */
  push(t: number, count: number): void {
    if (t < this.from || t > this.to || count <= 0) return;
    this.n += count;
  }

  /** The result, or undefined when nothing completed between the margins. */
  result(test: string, bytes: number): BwResult | undefined {
    if (!this.n || !(this.to > this.from)) return undefined;
    const secs = (this.to - this.from) / 1e9;
    const avg = (bytes * this.n) / secs / MB;
    return {
      test, bytes, iterations: this.n,
      bw_peak_MBps: avg, bw_avg_MBps: avg,
      msg_rate_Mpps: this.n / secs / 1e6, verified: null,
    };
  }
}

/**
 * -D in a latency test: the samples (us) between the margins, summarised in bounded memory:
 * count, min, the two largest and the sum exactly; the median, the percentiles and the
 * deviation from a histogram of four significant digits (to the 0.01 us the table shows below
 * 100 us, within 0.1% above; at most 9000 buckets a decade). perftest's timed table shows
 * only t_avg and tps; the rest goes to the JSON, with latResult's (perftest's) definitions.
 */
export class LatSummary {
  n = 0;
  private min = Infinity;
  /** The two largest samples (top[0] >= top[1]): perftest's statistics leave them out. */
  private readonly top = [-Infinity, -Infinity];
  private sum = 0;
  private readonly hist = new Map<number, number>();

  add(us: number): void {
    this.n++;
    this.sum += us;
    this.min = Math.min(this.min, us);
    if (us > this.top[0]!) { this.top[1] = this.top[0]!; this.top[0] = us; } else if (us > this.top[1]!) this.top[1] = us;
    const k = LatSummary.bucket(us);
    this.hist.set(k, (this.hist.get(k) ?? 0) + 1);
  }

  /** A sample's bucket: its value in hundredths of a microsecond, to four significant digits. */
  static bucket(us: number): number {
    const v = Math.max(0, Math.round(us * 100));
    if (v < 10_000) return v / 100;
    const unit = 10 ** (Math.floor(Math.log10(v)) - 3);
    return (Math.floor(v / unit) * unit) / 100;
  }

  /**
   * latResult's fields from the summary (undefined without samples), with latResult's (perftest's)
   * definitions: the two largest samples left out, t_max the second largest (exact), t_min and
   * t_avg exact; the median, the percentiles and t_stdev (deviations truncated to whole
   * microseconds, as perftest's) from the histogram.
   */
  result(test: string, bytes: number): LatResult | undefined {
    const n = this.n;
    if (!n) return undefined;
    const m = measureCount(n);
    const keys = [...this.hist.keys()].sort((a, b) => a - b);
    // The sample of rank r (0-based) in ascending order, as its bucket; the largest two exact.
    const at = (r: number): number => {
      r = Math.min(r, n - 1);
      if (r === n - 1) return this.top[0]!;
      if (r === n - 2) return this.top[1]!;
      let seen = 0;
      for (const k of keys) {
        seen += this.hist.get(k)!;
        if (seen > r) return k;
      }
      return this.top[0]!;
    };
    const dropped = this.top.slice(0, n - m);
    let sum = this.sum;
    for (const x of dropped) sum -= x;
    const avg = sum / m;
    let sq = 0;
    for (const k of keys) sq += this.hist.get(k)! * Math.trunc(avg - k) ** 2;
    for (const x of dropped) sq -= Math.trunc(avg - LatSummary.bucket(x)) ** 2;
    return {
      test, bytes, iterations: n,
      t_min_us: this.min, t_max_us: at(m), t_typical_us: median(m, at),
      t_avg_us: avg, t_stdev_us: Math.sqrt(Math.max(0, sq) / m), p99_us: at(Math.ceil(m * 0.99)), p999_us: at(Math.ceil(m * 0.999)),
    };
  }
}
