// The SMC-D receiver copies its ring into a fresh Buffer per slice. With glibc's default trim
// threshold the heap top freed by each garbage collection went back to the kernel and the
// next slices faulted it in again (zeroed): that cost more than the copy. keepFreedHeap()
// sets mallopt once; this checks it applies, can be turned off, and that a receiving server
// process really stops re-faulting its heap.
//
// In test/serial: npm test runs it on its own after the others. Its page-fault counts depend
// on when the garbage collector runs, and under another test file's load the untuned server
// once faulted only 3,252 times (7,500-40,000 alone), too close to the tuned one's.

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { runPeerClient, startPeerServer } from '../../src/tools/smc-peer-process.js';

const runtime = fs.mkdtempSync(path.join(os.tmpdir(), 'softrdma-heap-test-'));
after(() => fs.rmSync(runtime, { recursive: true, force: true }));
const LIBC = fileURLToPath(new URL('../../src/ism/libc.js', import.meta.url));
const glibc = (process.report.getReport() as { header: { glibcVersionRuntime?: string } }).header.glibcVersionRuntime !== undefined;

function applied(env: NodeJS.ProcessEnv): boolean {
  const out = execFileSync(process.execPath, ['--input-type=module', '-e',
    `const m = await import(${JSON.stringify(LIBC)}); console.log(JSON.stringify([m.keepFreedHeap(), m.keepFreedHeap()]));`], { env });
  const [first, again] = JSON.parse(String(out)) as [boolean, boolean];
  assert.equal(first, again, 'a second call reports the same');
  return first;
}

/** Minor page faults of a process so far (/proc/<pid>/stat field 10). */
function minorFaults(pid: number): number {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'latin1');
  return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[7]);
}

/** Faults of an SMC server while it receives `bytes`, after a first transfer warmed it up. */
async function serverFaults(env: NodeJS.ProcessEnv, bytes: number): Promise<number> {
  const server = await startPeerServer(['--api', 'smc'], { env });
  try {
    const bulk = ['--api', 'smc', '--port', String(server.port), '--test', 'bulk', '--no-verify', '--bytes'];
    await runPeerClient([...bulk, String(bytes)], { env });
    const before = minorFaults(server.pid);
    const r = await runPeerClient([...bulk, String(bytes)], { env });
    assert.equal(r.mode, 'SMCD');
    assert.equal(r.verified, true);
    return minorFaults(server.pid) - before;
  } finally {
    await server.stop();
  }
}

describe('receive-path heap', { skip: !glibc && 'mallopt is glibc only' }, () => {
  it('keepFreedHeap applies once, and SOFTRDMA_SMC_HEAP_TUNE=0 turns it off', () => {
    assert.equal(applied({ ...process.env, SOFTRDMA_SMC_HEAP_TUNE: undefined }), true);
    assert.equal(applied({ ...process.env, SOFTRDMA_SMC_HEAP_TUNE: '0' }), false);
  });

  it('a receiving server does not fault its heap back in for every batch of slices', async () => {
    const env = { ...process.env, SOFTRDMA_RUNTIME_DIR: runtime };
    const bytes = 512 << 20;
    const tuned = await serverFaults(env, bytes);
    const untuned = await serverFaults({ ...env, SOFTRDMA_SMC_HEAP_TUNE: '0' }, bytes);
    // Measured here: 180-2,000 against 7,500-40,000 per 512 MiB.
    assert.ok(tuned * 3 < untuned, `server minor faults: ${tuned} with the tuning, ${untuned} without`);
  });
});
