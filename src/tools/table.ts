// Plain-text tables for the tools and benchmarks: columns padded to their widest cell.

export function formatTable(rows: string[][], gap = '  '): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows.map((r) => r.map((c, i) => c.padEnd(widths[i]!)).join(gap).trimEnd()).join('\n');
}
