// perftest's result tables and the matching JSON objects. As in perftest, MB is 2^20 bytes
// and the latency of send_lat/write_lat is half the measured round trip.

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

/** The result with perftest's own JSON keys added (the first ones stay for existing scripts). */
export function withPerftestKeys<T extends BwResult | LatResult>(r: T, gbits: boolean): T {
  if ('bw_avg_MBps' in r) {
    const u = gbits ? toGbits : (x: number) => x;
    return { ...r, MsgSize: r.bytes, n_iterations: r.iterations, BW_peak: round(u(r.bw_peak_MBps)), BW_average: round(u(r.bw_avg_MBps)), MsgRate: r.msg_rate_Mpps };
  }
  const l = r as LatResult;
  return { ...l, MsgSize: l.bytes, n_iterations: l.iterations, t_min: l.t_min_us, t_max: l.t_max_us, t_typical: l.t_typical_us, t_avg: l.t_avg_us, t_stdev: l.t_stdev_us, percentile_99: l.p99_us, 'percentile_99.9': l.p999_us } as T;
}

export const MB = 1 << 20;

/**
 * Bandwidth from completion times: `doneNs[i]` is when operation i was known complete.
 * The peak is the best rate over any window of 1/16 of the run (at least one operation),
 * which is steadier than perftest's per-completion peak but means the same thing.
 */
export function bwResult(test: string, bytes: number, startNs: number, doneNs: Float64Array, verified: boolean | null): BwResult {
  const n = doneNs.length;
  const total = (doneNs[n - 1]! - startNs) / 1e9;
  const win = Math.max(1, Math.floor(n / 16));
  let best = Infinity;
  for (let i = win; i < n; i++) best = Math.min(best, doneNs[i]! - doneNs[i - win]!);
  const peak = n > win && best > 0 ? (bytes * win) / (best / 1e9) / MB : (bytes * n) / total / MB;
  return {
    test, bytes, iterations: n,
    bw_peak_MBps: round(Math.max(peak, (bytes * n) / total / MB)),
    bw_avg_MBps: round((bytes * n) / total / MB),
    msg_rate_Mpps: Math.round((n / total / 1e6) * 1e6) / 1e6,
    verified,
  };
}

export function latResult(test: string, bytes: number, samplesUs: Float64Array): LatResult {
  const s = Float64Array.from(samplesUs).sort();
  const n = s.length;
  const avg = s.reduce((a, b) => a + b, 0) / n;
  const variance = s.reduce((a, b) => a + (b - avg) ** 2, 0) / n;
  const pct = (p: number) => s[Math.min(n - 1, Math.ceil(p * n) - 1)]!;
  return {
    test, bytes, iterations: n,
    t_min_us: round(s[0]!), t_max_us: round(s[n - 1]!), t_typical_us: round(s[n >> 1]!),
    t_avg_us: round(avg), t_stdev_us: round(Math.sqrt(variance)), p99_us: round(pct(0.99)), p999_us: round(pct(0.999)),
  };
}

function round(x: number): number { return Math.round(x * 100) / 100; }

/** perftest's RESULT_FMT / RESULT_FMT_G (perftest_parameters.h). */
export function bwHeader(gbits = false): string {
  return gbits
    ? ` #bytes     #iterations    BW peak[Gb/sec]    BW average[Gb/sec]   MsgRate[Mpps]`
    : ` #bytes     #iterations    BW peak[MiB/sec]    BW average[MiB/sec]   MsgRate[Mpps]`;
}

/** perftest's REPORT_FMT: " %-7lu    %-10lu       %-7.2lf            %-7.2lf\t\t     %-7.6lf". */
export function bwLine(r: BwResult, gbits = false): string {
  const u = gbits ? toGbits : (x: number) => x;
  return ` ${String(r.bytes).padEnd(7)}    ${String(r.iterations).padEnd(10)}       ${u(r.bw_peak_MBps).toFixed(2).padEnd(7)}            ${u(r.bw_avg_MBps).toFixed(2).padEnd(7)}\t\t     ${r.msg_rate_Mpps.toFixed(6).padEnd(7)}`;
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

export const TITLES: Record<string, string> = {
  write_bw: 'RDMA_Write BW Test', read_bw: 'RDMA_Read BW Test', send_bw: 'Send BW Test', atomic_bw: 'Atomic FETCH_AND_ADD BW Test',
  write_lat: 'RDMA_Write Latency Test', read_lat: 'RDMA_Read Latency Test', send_lat: 'Send Latency Test',
};

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
      bw_peak_MBps: round(avg), bw_avg_MBps: round(avg),
      msg_rate_Mpps: Math.round((this.n / secs / 1e6) * 1e6) / 1e6, verified: null,
    };
  }
}

/**
 * -D in a latency test: the samples (us) between the margins, summarised in bounded memory:
 * count, min, max, mean and standard deviation exactly; the median and percentiles from a
 * histogram of four significant digits (to the 0.01 us the table shows below 100 us, within
 * 0.1% above; at most 9000 buckets a decade).
 */
export class LatSummary {
  n = 0;
  private min = Infinity;
  private max = -Infinity;
  private sum = 0;
  private mean = 0;
  private m2 = 0;
  private readonly hist = new Map<number, number>();

  add(us: number): void {
    this.n++;
    this.sum += us;
    this.min = Math.min(this.min, us);
    this.max = Math.max(this.max, us);
    const d = us - this.mean;
    this.mean += d / this.n;
    this.m2 += d * (us - this.mean);
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

  /** The sample of rank `r` (0-based) in ascending order, as its bucket. */
  private at(r: number): number {
    let seen = 0;
    for (const k of [...this.hist.keys()].sort((a, b) => a - b)) {
      seen += this.hist.get(k)!;
      if (seen > r) return k;
    }
    return this.max;
  }

  /** latResult's fields from the summary (undefined without samples). */
  result(test: string, bytes: number): LatResult | undefined {
    const n = this.n;
    if (!n) return undefined;
    const rank = (p: number) => Math.min(n - 1, Math.ceil(p * n) - 1);
    return {
      test, bytes, iterations: n,
      t_min_us: round(this.min), t_max_us: round(this.max), t_typical_us: round(this.at(n >> 1)),
      t_avg_us: round(this.sum / n), t_stdev_us: round(Math.sqrt(this.m2 / n)), p99_us: round(this.at(rank(0.99))), p999_us: round(this.at(rank(0.999))),
    };
  }
}
