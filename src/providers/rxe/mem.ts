// Moving message bytes between packets and registered memory, as Linux rxe keeps it in
// rxe_mr.c (copy_data, rxe_mr_copy): a work request's SGEs are resolved once to views of
// the registered buffers (segments), and a message offset then names bytes across them.
// The requester sends from these views; the responder and completer copy into them.

import type { RxeQp } from './qp.js';

/** One resolved SGE: `len` bytes of registered memory `mem` from `off`. */
export interface Seg { mem: Buffer; off: number; len: number }

/**
 * Resolve SGEs against the QP's PD (lkey, bounds, and LOCAL_WRITE when `write`); empty SGEs
 * are skipped. Undefined if any SGE fails the check.
 */
export function resolveSegs(qp: RxeQp, sgl: readonly { addr: number; length: number; lkey: number }[], write: boolean): Seg[] | undefined {
  const out: Seg[] = [];
  for (const s of sgl) {
    if (s.length === 0) continue;
    const r = qp.device.keys.resolveLocal(s.lkey, qp.pd, s.addr, s.length, write);
    if (typeof r === 'string') return undefined;
    out.push({ mem: r.mem, off: r.offset, len: s.length });
  }
  return out;
}

/** Append views of `len` message bytes starting at `msgOff` to `out`. */
export function views(segs: Seg[], msgOff: number, len: number, out: Buffer[]): void {
  for (const s of segs) {
    if (len === 0) return;
    if (msgOff >= s.len) { msgOff -= s.len; continue; }
    const n = Math.min(len, s.len - msgOff);
    out.push(s.mem.subarray(s.off + msgOff, s.off + msgOff + n));
    len -= n; msgOff = 0;
  }
}

/** Copy bytes into segments at a message offset. False if they do not fit. */
export function scatter(segs: Seg[], msgOff: number, src: Buffer, srcOff: number, len: number): boolean {
  for (const s of segs) {
    if (len === 0) return true;
    if (msgOff >= s.len) { msgOff -= s.len; continue; }
    const n = Math.min(len, s.len - msgOff);
    src.copy(s.mem, s.off + msgOff, srcOff, srcOff + n);
    srcOff += n; len -= n; msgOff = 0;
  }
  return len === 0;
}

/**
 * Whether the SGEs that hold message bytes [msgOff, msgOff + len) still name valid memory of
 * the QP's PD. Segments are resolved once, but Linux's copy_data looks the lkey of every SGE it
 * copies into up again on each copy (lookup_mr), so an MR deregistered or re-registered under
 * a receive or a READ in progress stops further bytes from landing in it. No allocation: this
 * runs for every SEND packet and READ response.
 */
export function sgesLive(qp: RxeQp, sgl: readonly { length: number; lkey: number }[], msgOff: number, len: number): boolean {
  const keys = qp.device.keys;
  for (let i = 0; i < sgl.length && len > 0; i++) {
    const s = sgl[i]!;
    if (msgOff >= s.length) { msgOff -= s.length; continue; }
    if (!keys.liveLocal(s.lkey, qp.pd)) return false;
    len -= s.length - msgOff;
    msgOff = 0;
  }
  return true;
}
