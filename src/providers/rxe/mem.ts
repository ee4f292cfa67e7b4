// Moving message bytes between packets and registered memory, as Linux rxe keeps it in
// rxe_mr.c (copy_data, rxe_mr_copy): a send WQE's SGEs are resolved once to views of the
// registered buffers (segments), and a message offset then names bytes across them; the
// requester sends from these views and the completer copies read results into them. The
// responder places a message into a receive WQE's SGEs looking each one up only when its
// bytes reach it (placeRecv), as copy_data does.

import type { RxeQp } from './qp.js';
import { NO_MEM, type Resolved } from './keys.js';

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

/** What placing bytes into a receive WQE found (Linux copy_data's outcomes). */
export const enum Placed {
  OK,
  /** More bytes than the WQE has room for at that offset: nothing was copied. */
  LENGTH,
  /** An SGE the bytes reach names no valid memory of the QP's PD (RESPST_ERR_MALFORMED_WQE). */
  WQE,
}

/** Where one SGE's bytes go (reused: no allocation per packet). */
const recvMem: Resolved = { mem: NO_MEM, offset: 0 };

/**
 * Copy `len` bytes of `src` from `srcOff` into a receive WQE's SGEs at message offset `msgOff`,
 * as Linux copy_data does for the responder: bytes beyond the WQE's total length are a length
 * error before anything is copied; otherwise the SGEs are walked from `msgOff`, and each one the
 * bytes reach is looked up when they reach it (a valid MR of the QP's PD, LOCAL_WRITE, and the
 * part copied within it), on every call, so an MR deregistered or re-registered under a
 * receive in progress stops the bytes that would land in it. An SGE that fails stops the copy
 * there (what went into the SGEs before it stays). SGEs the message never reaches are never
 * looked up: a receive whose unused SGEs name dead memory completes normally.
 */
export function placeRecv(qp: RxeQp, sgl: readonly { addr: number; length: number; lkey: number }[], total: number, msgOff: number, src: Buffer, srcOff: number, len: number): Placed {
  if (len === 0) return Placed.OK;
  if (msgOff + len > total) return Placed.LENGTH;
  const keys = qp.device.keys;
  try {
    for (let i = 0; i < sgl.length && len > 0; i++) {
      const s = sgl[i]!;
      if (msgOff >= s.length) { msgOff -= s.length; continue; }
      const n = Math.min(len, s.length - msgOff);
      if (keys.resolveLocalInto(recvMem, s.lkey, qp.pd, s.addr + msgOff, n, true) !== undefined) return Placed.WQE;
      src.copy(recvMem.mem, recvMem.offset, srcOff, srcOff + n);
      srcOff += n; len -= n; msgOff = 0;
    }
  } finally {
    recvMem.mem = NO_MEM; // hold no MR's memory between packets
  }
  return len === 0 ? Placed.OK : Placed.LENGTH;
}
