// Child process of test/smc/heap.test.ts: what glibc does with freed memory once
// keepFreedHeap() has (or, with SOFTRDMA_SMC_HEAP_TUNE=0, has not) run. It allocates, writes
// and frees the same batch of 256 KiB blocks round after round, straight through malloc and
// free (no garbage collector, so no timing), and prints the minor page faults of each round.
// A heap that keeps what was freed serves the next round from pages already present.
//
// HEAP_CHILD_CONTROL=mmap is the control: glibc's mmap threshold is pinned at its 128 KiB start
// value, which turns off glibc's dynamic threshold, so every 256 KiB block is its own mapping,
// unmapped by free and faulted in again by the next round. Without the pin, what an untuned
// heap gives back depends on what else sits on it (Node 24 once kept all but 66 pages on the
// first reuse), so that cannot be the control.

import { keepFreedHeap } from '../../src/ism/libc.js';
import { libcLibrary } from '../../src/sys/libc.js';
import { disableTransparentHugePages } from './page-faults.js';

const BLOCK = 256 * 1024;
const BLOCKS = 64;
const ROUNDS = 6;

const so = libcLibrary();
const malloc = so.func('void *malloc(size_t size)') as (n: number) => unknown;
const free = so.func('void free(void *p)') as (p: unknown) => void;
const memset = so.func('void *memset(void *p, int c, size_t n)') as (p: unknown, c: number, n: number) => unknown;
disableTransparentHugePages();

const M_MMAP_THRESHOLD = -3;
const mallopt = so.func('int mallopt(int param, int value)') as (param: number, value: number) => number;
const applied = keepFreedHeap();
if (process.env.HEAP_CHILD_CONTROL === 'mmap' && mallopt(M_MMAP_THRESHOLD, 128 * 1024) !== 1) throw new Error('mallopt failed');
const faults: number[] = [];
for (let round = 0; round < ROUNDS; round++) {
  const before = process.resourceUsage().minorPageFault;
  const blocks: unknown[] = [];
  for (let i = 0; i < BLOCKS; i++) {
    const p = malloc(BLOCK);
    if (p === null) throw new Error('malloc failed');
    memset(p, round + 1, BLOCK);
    blocks.push(p);
  }
  for (const p of blocks) free(p);
  faults.push(process.resourceUsage().minorPageFault - before);
}
console.log(JSON.stringify({ applied, faults, pagesPerRound: (BLOCK * BLOCKS) / 4096 }));
