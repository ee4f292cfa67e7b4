// A process whose own worker thread keeps its CPU busy while the main thread's SMC-R awake loop
// yields (poller.ts awake): run pinned to one CPU by test/smc/poller-own-threads.test.ts. Prints
// how often the poller entered its busy-CPU mode and how many of its yields came back late.

import { Worker } from 'node:worker_threads';
import { pollerContention, smcrActivity } from '../../src/smc/poller.js';

const seconds = Number(process.argv[2] ?? '1.5');
const worker = new Worker('const end = Date.now() + ' + String(seconds * 1000 + 2000) + '; while (Date.now() < end) {}', { eval: true });
await new Promise((resolve) => worker.once('online', resolve));
const before = pollerContention().entered;
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
console.log(JSON.stringify({ entered: pollerContention().entered - before, late }));
await worker.terminate();
