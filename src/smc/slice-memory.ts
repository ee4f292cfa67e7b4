// The Buffers a receiver hands to 'data' listeners are fresh memory, freed only when V8 collects
// them. In a steady stream V8 scavenges every few MiB of them, and glibc reuses what was freed
// (keepFreedHeap). A fresh process is different. V8 collects ArrayBuffers for the first time
// only after external memory grew by 64 MiB. Until then every slice is new heap that the kernel
// faults in and zeroes page by page. Measured here (a fresh process copying 256 MiB out in
// 256 KiB slices), the first 64 MiB took 90 ms and the rest 11 ms.
//
// So every SLICE_CHECK bytes of slices we look whether V8 collected on its own meanwhile
// (perf_hooks 'gc' entries without the forced flag), and if it did not, we ask for a scavenge:
// the slices the application dropped are freed, and the next ones reuse their pages. An
// application that allocates on the heap gets V8's own scavenges and none of ours. If the
// external memory still grew by most of an interval across our scavenge, the application keeps
// its slices; the checks then back off, doubling their interval up to 1 GiB. A check costs
// one v8.getHeapStatistics() (~1.3 us) per 8 MiB.
//
// The scavenge is V8's gc({ type: 'minor' }). It needs --expose-gc, set here at run time as
// the flag is read when a context is made, and taken from a new vm context. The process's own
// global gets no `gc`, but vm contexts and worker threads made later do. SOFTRDMA_SMC_SLICE_GC=0
// turns this off, as does SOFTRDMA_SMC_HEAP_TUNE=0 (without glibc keeping freed memory there
// is nothing to reuse). The first scavenge asked for applies the heap tuning (keepFreedHeap),
// as the first SMC-D connection does.

import { PerformanceObserver, constants } from 'node:perf_hooks';
import v8 from 'node:v8';
import vm from 'node:vm';
import { keepFreedHeap } from '../ism/libc.js';

/** Bytes of slices between two checks, at first and again whenever a scavenge freed them. */
const SLICE_CHECK = 8 << 20;
const MAX_CHECK = 1 << 30;

type MinorGc = (o: { type: 'minor' }) => void;
let minorGc: MinorGc | null | undefined;
let interval = SLICE_CHECK;
let since = 0;
/** Collections V8 did on its own (not asked for), as perf_hooks reports them, and the count at the last check. */
let ownGcs = 0;
let ownGcsSeen = 0;
let observer: PerformanceObserver | undefined;
/** External memory just before our last scavenge, or -1 if the last check asked for none. */
let externalAtGc = -1;

/** Whether checks run at all (SOFTRDMA_SMC_SLICE_GC=0: not); slice bytes told of; scavenges asked for. */
export const sliceGc = { on: process.env.SOFTRDMA_SMC_SLICE_GC !== '0', bytes: 0, forced: 0 };

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

function observe(): void {
  observer = new PerformanceObserver((list) => {
    for (const e of list.getEntries()) {
      const flags = (e as { detail?: { flags?: number } }).detail?.flags ?? 0;
      if (!(flags & constants.NODE_PERFORMANCE_GC_FLAGS_FORCED)) ownGcs++;
    }
  });
  observer.observe({ entryTypes: ['gc'] });
}

/** A receiver allocated `bytes` of fresh slices for 'data' listeners. */
export function slicesAllocated(bytes: number): void {
  sliceGc.bytes += bytes;
  since += bytes;
  if (since < interval || !sliceGc.on) return;
  since = 0;
  if (!observer) observe();
  if (ownGcs !== ownGcsSeen) {
    // V8 collected on its own since the last check (entries come a turn of the loop late).
    ownGcsSeen = ownGcs;
    externalAtGc = -1;
    interval = SLICE_CHECK;
    return;
  }
  const external = v8.getHeapStatistics().external_memory;
  if (externalAtGc >= 0) {
    // Since our last scavenge another interval of slices came. If the scavenge freed the ones
    // before, the external memory is about where it was. If it grew by most of the interval,
    // the application keeps its slices. (Not by half: V8 accounts freed ArrayBuffers as its
    // sweeper reaches them, and a late sweep reads as up to ~3/4 of an interval kept.)
    interval = external - externalAtGc >= interval - (interval >> 3) ? Math.min(MAX_CHECK, interval * 2) : SLICE_CHECK;
  }
  const gc = gcFunction();
  if (!gc) {
    sliceGc.on = false;
    observer?.disconnect();
    return;
  }
  externalAtGc = external;
  gc({ type: 'minor' });
  sliceGc.forced++;
}
