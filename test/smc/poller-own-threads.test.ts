// The poller's busy-CPU mode is for CPUs that other processes want: a yield that gives the CPU
// to one of this process's own threads (V8's GC and compiler threads, a worker) and comes back
// late is no such sign. Here a worker thread busy-loops on the one CPU the process may use
// while SMC-R traffic keeps the awake loop yielding: every yield hands the CPU to the worker for
// a slice, and the poller must not call the host busy. (test/smc/busy-host.test.ts checks the
// other side: busy processes still make it sleep.)

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { jsonLines } from '../helpers/procs.js';

const CHILD = fileURLToPath(new URL('../helpers/own-thread-yields.js', import.meta.url));
const taskset = spawnSync('taskset', ['-c', '0', 'true']).status === 0;

test("yields that only let this process's own threads run do not put the poller in its busy-CPU mode", { skip: taskset ? false : 'no taskset (util-linux) to pin the process to one CPU' }, (t) => {
  // Other processes (the rest of the suite, running beside this test) may take the CPU at a
  // yield too, and rightly count: a try counts only if they took little of CPU 0 (the child
  // measures it to the microsecond: its worker keeps CPU 0 busy, so what its own threads did not
  // use went to others), and one of up to six must be such a try. As root the child runs at a
  // higher priority (nice -10, its worker too), so that the suite's other processes take less of
  // CPU 0 and more tries count; the poller's judgement does not depend on priority. Without the
  // accounting of the process's own CPU time every try enters the mode (the worker takes the CPU
  // at each yield), 8 times in 1.5 s on this machine with nothing else running.
  const tries: Array<{ entered: number; late: number; othersMs: number }> = [];
  let quiet: (typeof tries)[number] | undefined;
  const nice = process.getuid?.() === 0 ? ['nice', '-n', '-10'] : [];
  for (let i = 0; i < 6 && !quiet; i++) {
    const argv = [...nice, 'taskset', '-c', '0', process.execPath, CHILD, '1.5'];
    const p = spawnSync(argv[0]!, argv.slice(1), { encoding: 'utf8', timeout: 30_000 });
    assert.equal(p.status, 0, `${p.stderr}${p.error ? String(p.error) : ''}`);
    const r = jsonLines(p.stdout).at(-1) as (typeof tries)[number];
    // The worker did take the CPU at the yields (else the try tests nothing).
    assert.ok(r.late > 20, `the worker thread never held the CPU across a yield: ${JSON.stringify(r)}`);
    tries.push(r);
    // 1.5 s: others under 10 ms of it (the kernel's own work, the test runner waking), at most
    // one 20 ms window's worth of the poller's threshold (a quarter of a window, 5 ms).
    if (r.othersMs < 10) quiet = r;
  }
  if (!quiet) return t.skip(`other processes kept CPU 0 busy in every try, so none could tell: ${JSON.stringify(tries)}`);
  // Two periods at most: under 10 ms taken by others can push at most one window over the
  // threshold (5 ms); the bound allows one more as a margin. (Before the child measured others
  // to the microsecond, /proc/stat's 10 ms ticks called tries quiet that were not: CI on
  // 2026-12-06 saw othersMs 0 and four periods.)
  assert.ok(quiet.entered <= 2, `the poller called the host busy with only its own threads beside it: ${JSON.stringify(tries)}`);
});
