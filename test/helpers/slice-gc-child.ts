// Child process of test/smc/slice-memory.test.ts: a fresh process receiving 256 MiB as a
// receiver hands it to 'data' listeners (a fresh 256 KiB Buffer per slice from freshSlice),
// the listener dropping each slice (SLICE_CHILD_MODE=drop) or keeping them all (keep, 128 MiB).
// Prints the minor page faults, the peak of V8's external memory above the start, and how many
// scavenges slice-memory.ts asked for.

import v8 from 'node:v8';
import { keepFreedHeap } from '../../src/ism/libc.js';
import { freshSlice, sliceGc } from '../../src/smc/slice-memory.js';
import { disableTransparentHugePages } from './page-faults.js';

disableTransparentHugePages();

// Both ways with the heap tuning an SMC-D receiver has (smcd-connection.ts): the control differs
// only in the scavenges asked for.
keepFreedHeap();

const SLICE = 256 * 1024;
const keep = process.env.SLICE_CHILD_MODE === 'keep';
const total = (keep ? 128 : 256) << 20;
const ring = Buffer.alloc(1 << 20, 0x5a);
const kept: Buffer[] = [];
const start = v8.getHeapStatistics().external_memory;
let peak = 0;
const faults0 = process.resourceUsage().minorPageFault;
for (let off = 0; off < total; off += SLICE) {
  const out = freshSlice(SLICE);
  out.set(ring.subarray(off % ring.length, (off % ring.length) + SLICE));
  if (keep) kept.push(out);
  if ((off & ((4 << 20) - 1)) === 0) peak = Math.max(peak, v8.getHeapStatistics().external_memory - start);
}
const intact = kept.every((b) => b.length === SLICE && b[0] === 0x5a && b[SLICE - 1] === 0x5a);
console.log(JSON.stringify({ faults: process.resourceUsage().minorPageFault - faults0, peakMiB: Math.round(peak / 1048576), forced: sliceGc.forced, on: sliceGc.on, kept: kept.length, intact }));
