// A process whose own worker thread keeps its CPU busy while the main thread's SMC-R awake loop
// yields (poller.ts awake): run pinned to one CPU by test/smc/poller-own-threads.test.ts. Prints
// how often the poller entered its busy-CPU mode and how many of its yields came back late.

import { Worker } from 'node:worker_threads';
import { pollerContention, smcrActivity } from '../../src/smc/poller.js';

const seconds = Number(process.argv[2] ?? '1.5');
const worker = new Worker('const end = Date.now() + ' + String(seconds * 1000 + 2000) + '; while (Date.now() < end) {}', { eval: true });
await new Promise((resolve) => worker.once('online', resolve));
const before = pollerContention().entered;
// What other processes (and interrupts) took of CPU 0, the one this process is pinned to: the
// worker never sleeps, so CPU 0 is never idle, and every moment of the run that this process's
// threads did not use went to someone else. getrusage counts this process's threads to the
// nanosecond (/proc/stat's per-CPU figures are 10 ms ticks, too coarse for the test's bound).
const wall0 = performance.now();
const own0 = process.cpuUsage();
// SMC-R traffic as far as the poller can tell: the awake loop runs, yielding once a millisecond.
const end = performance.now() + seconds * 1000;
let late = 0;
await new Promise<void>((resolve) => {
  const tick = () => {
    const t = performance.now();
    smcrActivity();
    if (t >= end) return resolve();
    setImmediate(() => {
      if (performance.now() - t > 1) late++;
      tick();
    });
  };
  tick();
});
const own = process.cpuUsage(own0);
const othersMs = Math.max(0, performance.now() - wall0 - (own.user + own.system) / 1000);
console.log(JSON.stringify({ entered: pollerContention().entered - before, late, othersMs: Math.round(othersMs * 10) / 10 }));
await worker.terminate();
