// Plain-text output for the tools and benchmarks: tables with columns padded to their widest
// cell, and fixed-width hex fields.

export function formatTable(rows: string[][], gap = '  '): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows.map((r) => r.map((c, i) => c.padEnd(widths[i]!)).join(gap).trimEnd()).join('\n');
}

/** n in hex, zero-padded to `width` digits (LIDs, QPNs, PSNs, keys in the tools' output). */
export function hex(n: number, width: number): string {
  return n.toString(16).padStart(width, '0');
}
