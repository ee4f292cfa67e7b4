// An address vector (ibv_ah_attr) is the caller's: create_ah and modify_qp take a copy of it,
// as libibverbs copies the struct into the kernel's command, and what comes back from a query
// is a copy too. Held by reference, a program that reused one attr object (as C programs reuse
// their structs) for the next QP changed what the first one reported, and a getter could hand
// the provider a value the checks never saw.

import type { AhAttr } from './types.js';

/**
 * A copy of an address vector: each field read once, the GID's bytes copied (a Buffer stays a
 * Buffer). What is not an object comes back as it is, for the checks to name.
 */
export function copyAv(v: unknown): unknown {
  if (typeof v !== 'object' || v === null) return v;
  const a = v as Record<string, unknown>;
  const out: Record<string, unknown> = {};
  const g = a.grh;
  if (typeof g === 'object' && g !== null) {
    const r = g as Record<string, unknown>;
    const grh: Record<string, unknown> = {};
    const d = r.dgid;
    grh.dgid = Buffer.isBuffer(d) ? Buffer.from(d) : d instanceof Uint8Array ? new Uint8Array(d) : d;
    for (const k of ['sgidIndex', 'hopLimit', 'trafficClass', 'flowLabel'] as const) {
      const x = r[k];
      if (x !== undefined) grh[k] = x;
    }
    out.grh = grh;
  } else if (g !== undefined) out.grh = g;
  for (const k of ['portNum', 'sl', 'isGlobal'] as const) {
    const x = a[k];
    if (x !== undefined) out[k] = x;
  }
  return out;
}

/** copyAv for an address vector already checked (or produced by a provider). */
export function copyAhAttr(v: AhAttr): AhAttr {
  return copyAv(v) as AhAttr;
}
