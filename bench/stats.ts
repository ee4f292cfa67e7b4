// The order statistics the benchmarks report, and how a ratio reads against its target.

/** A row's target column and whether the ratio meets it; '-' and undefined for rows without one. */
export function verdict(ratio: number, higherBetter: boolean, target: number | undefined): { target: string; met: boolean | undefined } {
  if (target === undefined) return { target: '-', met: undefined };
  return { target: `${higherBetter ? '>=' : '<='} ${target}`, met: higherBetter ? ratio >= target : ratio <= target };
}

/** The median (the upper one of an even count). */
export const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[xs.length >> 1]!;

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
  return Math.max(k, 1);
}

/** A 95% confidence interval for the median of xs: two of its order statistics. */
export function medianCi(xs: number[]): [number, number] {
  const s = [...xs].sort((a, b) => a - b);
  const k = medianCiRank(s.length);
  return [s[k - 1]!, s[s.length - k]!];
}
