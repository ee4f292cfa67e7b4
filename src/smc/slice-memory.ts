// The Buffers a receiver hands to 'data' listeners are fresh memory, freed only when V8 collects
// them. In a steady stream V8 scavenges every few MiB of them, and glibc reuses what was freed
// (keepFreedHeap). A fresh process is different. V8 collects ArrayBuffers for the first time
// only after external memory grew by 64 MiB. Until then every slice is new heap that the kernel
// faults in and zeroes page by page. Measured here (a fresh process copying 256 MiB out in
// 256 KiB slices), the first 64 MiB took 90 ms and the rest 11 ms.
//
// So every SLICE_CHECK bytes of slices, we look whether V8 scavenged meanwhile (its new
// space shrank), and if it did not, we ask for a scavenge: the slices the application dropped
// are freed, and the next ones reuse their pages. If the external memory still grew by half
// an interval or more across our scavenge, the application keeps its slices; the checks then back off,
// doubling their interval up to 1 GiB. In steady state V8 scavenges on its own, and a check
// costs one v8.getHeapSpaceStatistics() (~1.4 us) per 8 MiB.
//
// The scavenge is V8's gc({ type: 'minor' }). It needs --expose-gc, set here at run time as
// the flag is read when a context is made, and taken from a new vm context: the process's own
// global gets no `gc`, but vm contexts made later do. SOFTRDMA_SMC_SLICE_GC=0 turns this off,
// as does SOFTRDMA_SMC_HEAP_TUNE=0 (without glibc keeping freed memory there is nothing to reuse).

import v8 from 'node:v8';
import vm from 'node:vm';
import { keepFreedHeap } from '../ism/libc.js';

/** Bytes of slices between two checks, at first and again whenever V8 is seen collecting. */
const SLICE_CHECK = 8 << 20;
const MAX_CHECK = 1 << 30;

type MinorGc = (o: { type: 'minor' }) => void;
let minorGc: MinorGc | null | undefined;
let interval = SLICE_CHECK;
let since = 0;
/** The new space's use at the last check: less now means V8 scavenged since. */
let newSpaceUsed = 0;
/** External memory just before our last scavenge, or -1 if the last check asked for none. */
let externalAtGc = -1;

/** Whether checks run at all (SOFTRDMA_SMC_SLICE_GC=0: not), and how many scavenges they asked for. */
export const sliceGc = { on: process.env.SOFTRDMA_SMC_SLICE_GC !== '0', forced: 0 };

function gcFunction(): MinorGc | null {
  if (minorGc !== undefined) return minorGc;
  minorGc = null;
  if (!keepFreedHeap()) return null;
  try {
    v8.setFlagsFromString('--expose-gc');
    const gc: unknown = vm.runInNewContext('typeof gc === "function" ? gc : undefined');
    if (typeof gc === 'function') minorGc = gc as MinorGc;
  } catch { /* no way to ask: V8 collects when it decides */ }
  return minorGc;
}

function newSpace(): number {
  for (const s of v8.getHeapSpaceStatistics()) if (s.space_name === 'new_space') return s.space_used_size;
  return 0;
}

/** A receiver allocated `bytes` of fresh slices for 'data' listeners. */
export function slicesAllocated(bytes: number): void {
  since += bytes;
  if (since < interval || !sliceGc.on) return;
  since = 0;
  const used = newSpace();
  const scavenged = used < newSpaceUsed;
  newSpaceUsed = used;
  if (scavenged && externalAtGc < 0) { interval = SLICE_CHECK; return; } // V8 collects on its own
  const external = v8.getHeapStatistics().external_memory;
  if (externalAtGc >= 0) {
    // Since our last scavenge another interval of slices came. If it freed the ones before,
    // the external memory is about where it was; if it grew by half an interval or more, the
    // application keeps its slices (half: V8 accounts freed ArrayBuffers as its sweeper gets
    // to them, and other external memory comes and goes).
    interval = external - externalAtGc >= interval >> 1 ? Math.min(MAX_CHECK, interval * 2) : SLICE_CHECK;
  }
  const gc = gcFunction();
  if (!gc) { sliceGc.on = false; return; }
  externalAtGc = external;
  gc({ type: 'minor' });
  sliceGc.forced++;
  newSpaceUsed = newSpace();
}
