// The order statistics the benchmarks report, and how a ratio reads against its target.

/** A row's target column and whether the ratio meets it; '-' and undefined for rows without one. */
export function verdict(ratio: number, higherBetter: boolean, target: number | undefined): { target: string; met: boolean | undefined } {
  if (target === undefined) return { target: '-', met: undefined };
  const shown = `${higherBetter ? '>=' : '<='} ${target}`;
  // A side that measured nothing (a baseline of 0 makes the ratio Infinity) meets no target.
  if (!Number.isFinite(ratio) || !(ratio > 0)) return { target: shown, met: false };
  return { target: shown, met: higherBetter ? ratio >= target : ratio <= target };
}

/** The median; of an even count, the mean of the two middle values (NaN for none). */
export const median = (xs: number[]): number => {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

/** The 1-based rank k such that [x(k), x(n+1-k)] covers the median with at least 95% confidence. */
function medianCiRank(n: number): number {
  // P(Binomial(n, 1/2) < k) <= 2.5%, the largest such k.
  let cdf = 0;
  let pk = 0.5 ** n; // P(X = 0)
  let k = 0;
  for (let i = 0; i < n; i++) {
    if (cdf + pk > 0.025) break;
    cdf += pk;
    k = i + 1;
    pk = (pk * (n - i)) / (i + 1);
  }
  return k;
}

/**
 * A 95% confidence interval for the median of xs: two of its order statistics. Fewer than 6
 * values have none ([min, max] covers the median with 93.75% at 5, 75% at 3): a RangeError.
 */
export function medianCi(xs: number[]): [number, number] {
  const s = [...xs].sort((a, b) => a - b);
  const k = medianCiRank(s.length);
  if (k < 1) throw new RangeError(`a 95% interval for a median needs at least 6 values, got ${s.length}`);
  return [s[k - 1]!, s[s.length - k]!];
}
