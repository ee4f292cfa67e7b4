// The Buffers a receiver hands to 'data' listeners are fresh memory, freed only when V8 collects
// them. In a steady stream V8 scavenges every few MiB of them, and glibc reuses what was freed
// (keepFreedHeap). A fresh process is different. V8 collects ArrayBuffers for the first time
// only after external memory grew by 32-64 MiB (~32 on Node 20 and 22, ~64 on Node 24). Until
// then every slice is new heap that the kernel faults in and zeroes page by page. Measured here
// (a fresh process copying 256 MiB out in 256 KiB slices, Node 20), the first 256 MiB took
// 108 ms and the next 11 ms.
//
// So every SLICE_CHECK bytes of slices we look at V8's external memory. If it grew by less than
// 3/4 of what came, slices are being freed: V8 collects on its own (as it does every ~2 MiB
// in a steady stream once it has started, and whenever the application allocates on the
// heap), or our last scavenge did. Otherwise we ask for a scavenge: the slices the application
// dropped are freed, and the next ones reuse their pages. In a fresh process that is every
// other check, as the check after ours sees our scavenge's work. If the memory still grows by
// that much right after one of ours, the application keeps its slices, and the checks back off,
// doubling their interval up to 1 GiB. A check costs one v8.getHeapStatistics() (~1.3 us).
// (V8's own collections could be counted from perf_hooks' gc entries, but observing them cost
// a third of a steady stream's rate.)
//
// The scavenge is V8's gc({ type: 'minor' }). It needs --expose-gc, set here at run time as
// the flag is read when a context is made, and taken from a new vm context. The process's own
// global gets no `gc`, but vm contexts and worker threads made later do. SOFTRDMA_SMC_SLICE_GC=0
// turns this off, as does SOFTRDMA_SMC_HEAP_TUNE=0 (without glibc keeping freed memory there
// is nothing to reuse). The first scavenge asked for applies the heap tuning (keepFreedHeap),
// as the first SMC-D connection does.

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
/** External memory at the last check (-1: none yet), and whether that check asked for a scavenge. */
let externalThen = -1;
let askedLast = false;

/** Whether checks run at all (SOFTRDMA_SMC_SLICE_GC=0: not); slice bytes told of; scavenges asked for. */
export const sliceGc = { on: process.env.SOFTRDMA_SMC_SLICE_GC !== '0', bytes: 0, forced: 0 };

function gcFunction(): MinorGc | null {
  if (minorGc !== undefined) return minorGc;
  minorGc = null;
  if (!keepFreedHeap()) return null;
  try {
    v8.setFlagsFromString('--expose-gc');
    const gc: unknown = vm.runInNewContext('typeof gc === "function" ? gc : undefined');
    if (typeof gc === 'function') {
      // The scavenge frees the slices' memory in V8's array-buffer sweep, which V8 runs on a
      // background thread. On a busy host that thread waits for a CPU while the next slices
      // are already allocated on fresh pages: under CI load the scavenges saved almost nothing
      // (8,676 page faults against 9,145 without them). Swept on this thread, the memory is
      // free before the next slice: ~4,450 faults whatever the load (Node 20, 22 and 24). Only
      // our scavenge sweeps this way; V8's own collections keep the background sweep, unless
      // the process was started with it off.
      const restore = ![...process.execArgv, ...(process.env.NODE_OPTIONS ?? '').split(/\s+/)].some((a) => /^--no[-_]concurrent[-_]array[-_]buffer[-_]sweeping$/.test(a));
      const scavenge = gc as MinorGc;
      minorGc = (o) => {
        v8.setFlagsFromString('--no-concurrent-array-buffer-sweeping');
        try {
          scavenge(o);
        } finally {
          if (restore) v8.setFlagsFromString('--concurrent-array-buffer-sweeping');
        }
      };
    }
  } catch { /* no way to ask: V8 collects when it decides */ }
  return minorGc;
}

/** A fresh slice of `bytes` for 'data' listeners (Buffer.allocUnsafe), counted for the checks above. */
export function freshSlice(bytes: number): Buffer {
  slicesAllocated(bytes);
  return Buffer.allocUnsafe(bytes);
}

function slicesAllocated(bytes: number): void {
  sliceGc.bytes += bytes;
  since += bytes;
  if (since < interval || !sliceGc.on) return;
  const came = since;
  since = 0;
  const external = v8.getHeapStatistics().external_memory;
  const grew = external - externalThen;
  const first = externalThen < 0;
  externalThen = external;
  if (!first && grew < came - (came >> 2)) {
    // Slices are being freed, by V8 or by our last scavenge.
    askedLast = false;
    interval = SLICE_CHECK;
    return;
  }
  // Nothing freed. Right after a scavenge of ours (swept before it returned: gcFunction) that
  // means the application keeps its slices.
  if (askedLast) interval = Math.min(MAX_CHECK, interval * 2);
  const gc = gcFunction();
  if (!gc) { sliceGc.on = false; return; }
  gc({ type: 'minor' });
  askedLast = true;
  sliceGc.forced++;
}
