// PSN arithmetic: 24-bit sequence numbers compared in a half-window, as IBA 9.7.1 requires.

export const PSN_MASK = 0xffffff;

export function psnAdd(psn: number, n: number): number {
  return (psn + n) & PSN_MASK;
}

/**
 * Signed distance a - b in the 24-bit sequence space, in [-2^23, 2^23).
 * Positive when a is "after" b.
 */
export function psnDiff(a: number, b: number): number {
  return (((a - b) & PSN_MASK) << 8) >> 8;
}

export function psnLt(a: number, b: number): boolean {
  return psnDiff(a, b) < 0;
}
