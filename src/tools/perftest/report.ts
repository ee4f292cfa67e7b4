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
}

const MB = 1 << 20;

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

export function bwHeader(): string {
  return ` #bytes     #iterations    BW peak[MB/sec]    BW average[MB/sec]   MsgRate[Mpps]`;
}

export function bwLine(r: BwResult): string {
  return ` ${String(r.bytes).padEnd(7)}    ${String(r.iterations).padEnd(10)}       ${r.bw_peak_MBps.toFixed(2).padEnd(7)}            ${r.bw_avg_MBps.toFixed(2).padEnd(7)}\t\t   ${r.msg_rate_Mpps.toFixed(6)}`;
}

export function latHeader(): string {
  return ` #bytes #iterations    t_min[usec]    t_max[usec]  t_typical[usec]    t_avg[usec]    t_stdev[usec]   99% percentile[usec]   99.9% percentile[usec] `;
}

export function latLine(r: LatResult): string {
  const f = (x: number) => x.toFixed(2).padEnd(7);
  return ` ${String(r.bytes).padEnd(7)} ${String(r.iterations).padEnd(10)} ${f(r.t_min_us)}        ${f(r.t_max_us)}      ${f(r.t_typical_us)}  \t       ${f(r.t_avg_us)}     \t${f(r.t_stdev_us)}\t\t${f(r.p99_us)} \t\t${f(r.p999_us)}`;
}

export const TITLES: Record<string, string> = {
  write_bw: 'RDMA_Write BW Test', read_bw: 'RDMA_Read BW Test', send_bw: 'Send BW Test', atomic_bw: 'Atomic FETCH_AND_ADD BW Test',
  write_lat: 'RDMA_Write Latency Test', read_lat: 'RDMA_Read Latency Test', send_lat: 'Send Latency Test',
};
