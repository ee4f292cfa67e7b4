// A process whose own worker thread keeps its CPU busy while the main thread's SMC-R awake loop
// yields (poller.ts awake): run pinned to one CPU by test/smc/poller-own-threads.test.ts. Prints
// how often the poller entered its busy-CPU mode and how many of its yields came back late.

import fs from 'node:fs';
import { Worker } from 'node:worker_threads';
import { pollerContention, smcrActivity } from '../../src/smc/poller.js';

const seconds = Number(process.argv[2] ?? '1.5');
const worker = new Worker('const end = Date.now() + ' + String(seconds * 1000 + 2000) + '; while (Date.now() < end) {}', { eval: true });
await new Promise((resolve) => worker.once('online', resolve));
const before = pollerContention().entered;
// What CPU 0 (the one this process is pinned to) spent on anything, and this process on itself,
// over the run: the difference is what other processes took of it (they count, rightly).
const cpu0 = (): number => {
  const f = fs.readFileSync('/proc/stat', 'latin1').split('\n').find((l) => l.startsWith('cpu0 '))!.trim().split(/\s+/).slice(1).map(Number);
  const ticks = f.reduce((a, b) => a + b, 0) - f[3]! - f[4]!; // all but idle and iowait
  return (ticks * 1000) / 100; // USER_HZ 100: ms
};
const busy0 = cpu0();
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
const othersMs = Math.max(0, cpu0() - busy0 - (own.user + own.system) / 1000);
console.log(JSON.stringify({ entered: pollerContention().entered - before, late, othersMs: Math.round(othersMs) }));
await worker.terminate();
