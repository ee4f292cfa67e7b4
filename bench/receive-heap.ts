// What keepFreedHeap (src/ism/libc.ts, and the 256 KiB receive slices it allows instead of
// 64 KiB) buys a receiving SMC-D server: minor page faults per GiB received and the bulk
// rate, with the tuning (the default) and with SOFTRDMA_SMC_HEAP_TUNE=0, both sides of each
// connection in fresh processes. Medians of --runs runs (default 3), tuned and untuned
// alternating which goes first; --json for scripts. test/smc/heap.test.ts checks the
// mechanism itself; this is the effect, and it moves with when V8 happens to collect, so it
// is a benchmark and not a test.

import os from 'node:os';
import { procStatFields } from '../src/ism/runtime-dir.js';
import { runPeerClient, startPeerServer } from '../src/tools/smc-peer-process.js';
import { formatTable } from '../src/tools/table.js';
import { benchOptions, benchRuntimeDir } from './options.js';
import { median } from './stats.js';

const { runs: RUNS, json } = benchOptions('usage: node dist/bench/receive-heap.js [--runs N] [--json]', {});
const runtimeDir = benchRuntimeDir();

const GIB = 1 << 30;

/** Field 10 of /proc/<pid>/stat: minor faults so far. */
const minorFaults = (pid: number) => Number(procStatFields(pid)[7]);

interface Run { faultsPerGib: number; mibPerSec: number }

/** One server process receiving 1 GiB after a 512 MiB warm-up, its faults counted over the 1 GiB. */
async function once(tuned: boolean): Promise<Run> {
  const env = { ...process.env, SOFTRDMA_RUNTIME_DIR: runtimeDir, SOFTRDMA_SMC_HEAP_TUNE: tuned ? '1' : '0' };
  const server = await startPeerServer(['--api', 'smc'], { env });
  try {
    const bulk = ['--api', 'smc', '--port', String(server.port), '--test', 'bulk', '--no-verify', '--bytes'];
    await runPeerClient([...bulk, String(512 << 20)], { env });
    const before = minorFaults(server.pid);
    const r = await runPeerClient([...bulk, String(GIB)], { env });
    if (r.mode !== 'SMCD') throw new Error(`the connection ran as ${String(r.mode)}, not SMCD`);
    return { faultsPerGib: ((minorFaults(server.pid) - before) * GIB) / (r.bytes as number), mibPerSec: r.mibPerSec as number };
  } finally {
    await server.stop();
  }
}

const tuned: Run[] = [];
const untuned: Run[] = [];
for (let i = 0; i < RUNS; i++) {
  if (i % 2 === 0) { tuned.push(await once(true)); untuned.push(await once(false)); } else { untuned.push(await once(false)); tuned.push(await once(true)); }
}
const med = (xs: Run[], k: keyof Run) => median(xs.map((x) => x[k]));
const rows = (['faultsPerGib', 'mibPerSec'] as const).map((k) => ({
  metric: k === 'faultsPerGib' ? 'server minor faults per GiB' : 'bulk rate, MiB/s',
  tuned: med(tuned, k), untuned: med(untuned, k), ratio: median(tuned.map((t, i) => t[k] / untuned[i]![k])),
  runs: tuned.map((t, i) => ({ tuned: t[k], untuned: untuned[i]![k] })),
}));

if (json) {
  console.log(JSON.stringify({ runs: RUNS, cpus: os.cpus().length, node: process.version, rows }, null, 2));
} else {
  console.log(formatTable([['metric', 'tuned', 'SOFTRDMA_SMC_HEAP_TUNE=0', 'tuned/untuned'],
    ...rows.map((r) => [r.metric, r.tuned.toFixed(0), r.untuned.toFixed(0), r.ratio.toFixed(2)])]));
  console.log(`\nmedians of ${RUNS} runs (ratio: the median of the runs' pair ratios); 64 KiB writes, 1 MiB DMB, 1 GiB after 512 MiB; ${os.cpus().length} CPUs, node ${process.version}`);
}
