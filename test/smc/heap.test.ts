// The SMC-D receiver copies its ring into a fresh Buffer per slice. With glibc's default trim
// threshold the heap top freed by each garbage collection went back to the kernel and the
// next slices faulted it in again (zeroed): that cost more than the copy. keepFreedHeap()
// sets mallopt once; this checks that it applies, that SOFTRDMA_SMC_HEAP_TUNE=0 turns it off,
// and that with it glibc really keeps freed blocks for the next ones.
//
// The effect is checked with malloc and free called directly (test/helpers/heap-child.ts), not
// through a receiving server: there, the counts depend on when V8 collects, and a CI machine
// once showed an untuned server faulting only twice as often as a tuned one (this VM: 5-20
// times). What a receiving server gains is measured by bench/receive-heap.ts.

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';

const LIBC = fileURLToPath(new URL('../../src/ism/libc.js', import.meta.url));
const CHILD = fileURLToPath(new URL('../helpers/heap-child.js', import.meta.url));
const glibc = (process.report.getReport() as { header: { glibcVersionRuntime?: string } }).header.glibcVersionRuntime !== undefined;

function applied(env: NodeJS.ProcessEnv): boolean {
  const out = execFileSync(process.execPath, ['--input-type=module', '-e',
    `const m = await import(${JSON.stringify(LIBC)}); console.log(JSON.stringify([m.keepFreedHeap(), m.keepFreedHeap()]));`], { env });
  const [first, again] = JSON.parse(String(out)) as [boolean, boolean];
  assert.equal(first, again, 'a second call reports the same');
  return first;
}

interface Rounds { applied: boolean; faults: number[]; pagesPerRound: number }
function rounds(tune: '1' | '0', control = ''): Rounds {
  return JSON.parse(String(execFileSync(process.execPath, [CHILD], { env: { ...process.env, SOFTRDMA_SMC_HEAP_TUNE: tune, HEAP_CHILD_CONTROL: control } }))) as Rounds;
}

describe('receive-path heap', { skip: !glibc && 'mallopt is glibc only' }, () => {
  it('keepFreedHeap applies once, and SOFTRDMA_SMC_HEAP_TUNE=0 turns it off', () => {
    assert.equal(applied({ ...process.env, SOFTRDMA_SMC_HEAP_TUNE: undefined }), true);
    assert.equal(applied({ ...process.env, SOFTRDMA_SMC_HEAP_TUNE: '0' }), false);
  });

  it('with it, freed 256 KiB blocks are reused without faulting; a heap that unmaps them faults every round', () => {
    const tuned = rounds('1');
    const control = rounds('0', 'mmap');
    assert.equal(tuned.applied, true);
    assert.equal(control.applied, false);
    // The first round faults its pages in either way: the test is doing what it means to.
    for (const r of [tuned, control]) assert.ok(r.faults[0]! >= r.pagesPerRound / 2, `first round: ${r.faults[0]} faults`);
    // Measured here: 2-3 faults per later round tuned, 4,066 (every page) for the control.
    const later = (r: Rounds) => r.faults.slice(1);
    for (const f of later(tuned)) assert.ok(f < tuned.pagesPerRound / 16, `tuned rounds faulted ${later(tuned).join(', ')} of ${tuned.pagesPerRound} pages`);
    // The control shows the counts can fail: blocks given back are faulted in again.
    for (const f of later(control)) assert.ok(f > control.pagesPerRound / 2, `control rounds faulted only ${later(control).join(', ')} of ${control.pagesPerRound} pages`);
  });
});
