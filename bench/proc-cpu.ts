// CPU time of another process on this machine, for benchmarks that count both sides' CPU.

import fs from 'node:fs';

/** CPU time of every thread of a process so far, in microseconds (schedstat: nanoseconds); 0 once it is gone. */
export function threadsMicros(pid: number): number {
  let t = 0;
  let tasks: string[];
  try { tasks = fs.readdirSync(`/proc/${pid}/task`); } catch { return 0; }
  for (const task of tasks) {
    try { t += Number(fs.readFileSync(`/proc/${pid}/task/${task}/schedstat`, 'latin1').split(' ')[0]) / 1000; } catch { /* thread gone */ }
  }
  return t;
}
