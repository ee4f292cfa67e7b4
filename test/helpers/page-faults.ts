// For children that count page faults (heap-child.ts, slice-gc-child.ts): transparent huge
// pages would fault 2 MiB at a time and shrink the counts they compare, so they are turned off
// for the calling process.

import { libcLibrary } from '../../src/sys/libc.js';

const PR_SET_THP_DISABLE = 41;

export function disableTransparentHugePages(): void {
  const prctl = libcLibrary().func('int prctl(int option, unsigned long a2, unsigned long a3, unsigned long a4, unsigned long a5)') as (...a: number[]) => number;
  prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0);
}
