// SMC-D (softrdma/smc) against node:net over loopback, in the same run, each side in its own
// process (src/tools/smc-peer.ts). Prints each figure, the ratio and the target;
// --json prints the same as one JSON document. Medians of --runs runs (default 3).
//
//   bulk       64 KiB writes for 3 s after 1 s of the same on its own
//              connection, bytes counted by the server ('data'
//              events): the steady state                              target SMC/TCP >= 3.0
//              the same the other way, the client reading with node:net's onread into
//              one 64 KiB buffer (both sides)                         target >= 4.0
//              and the first 256 MiB a fresh client process reads
//              through 'data' events, no warm-up                      target >= 2.0
//   pingpong   14-byte round trip, median                             target SMC/TCP <= 0.5
//              (20,000 after 1,000 not counted), and the first 1,000 of fresh processes
//              (server and client new each run), none left out (no target: what a
//              short-lived program gets)
//   http       node:http keep-alive requests/s, 8 in flight, both
//              ends under --import softrdma/smc/auto vs neither       target >= 1.35
//              from fresh processes, and again after 2 s of the load not counted (steady)
//   shortconn  connect, 14-byte echo, close, per second, for 3 s after
//              1 s of the same not counted                            target >= 1.0
//              (the learned handshake control sends these to TCP; a second row forces SMC-D)
//              and the same without the warm-up second (no target): what a fresh process gets
//   busy CPUs  bulk, ping-pong and http again while one plain busy-loop process per CPU runs
//              (started before, stopped after each row): a busy server is the normal case.
//              targets: bulk >= 1.0, ping-pong median <= 1.0, http >= 1.0
//   control    node:net against node:net, the same client and server on both sides: the
//              noise floor of this run (no target)
//   fallback   what SMC costs a connection that falls back to TCP (setup, round trip, bulk;
//              targets >= 0.99, latency <= 1.01), on the client side and on the server side:
//              bench/fallback.ts, a second table, measured block by block in one client
//              process, with confidence intervals and CPU time per operation
// Both sides of the control row talk to one server process; SMC/TCP is the median of the
// per-run ratios (each run's two sides ran back to back).

import { spawn } from 'node:child_process';
import os from 'node:os';
import { autoModuleUrl } from '../src/tools/smc-run.js';
import { runPeerClient, startPeerServer } from '../src/tools/smc-peer-process.js';
import { formatTable } from '../src/tools/table.js';
import { AB_FOOTER, fallbackRows, printRows } from './fallback.js';
import { benchOptions, benchRuntimeDir } from './options.js';
import { median, verdict } from './stats.js';

/** How the TCP side is written, printed with the table (src/tools/smc-peer.ts). */
export const BASELINE =
  'node:net with the same program (src/tools/smc-peer.ts --api net): net.createServer and net.connect, ' +
  'setNoDelay(true) on both ends, the same 64 KiB writes (bulk) or 14-byte messages (ping-pong, short ' +
  'connections), read through \'data\' events (the onread row: node:net\'s onread into one 64 KiB buffer); ' +
  'http: node:http keep-alive on both ends without the preload; each side its own client and server process';

const { runs: RUNS, json, strings: { only } } = benchOptions('usage: node dist/bench/smc-vs-tcp.js [--runs N] [--json] [--only METRIC-PREFIX]', { only: undefined });
const AUTO = autoModuleUrl();
const env = { ...process.env, SOFTRDMA_RUNTIME_DIR: benchRuntimeDir() };

const serve = (args: string[], auto = false) => startPeerServer(args, { env, execArgv: auto ? ['--import', AUTO] : [] });
const client = (args: string[], auto = false, extraEnv: NodeJS.ProcessEnv = {}) => runPeerClient(args, { env: { ...env, ...extraEnv }, execArgv: auto ? ['--import', AUTO] : [] });

interface Row {
  metric: string; smc: number; tcp: number; unit: string; ratio: number;
  /** Every run's figures and pair ratio, for the spread. */
  runs: Array<{ smc: number; tcp: number; ratio: number }>;
  target: string; met: boolean | undefined; smcMode: string;
}
const rows: Row[] = [];

async function measure(metric: string, unit: string, field: string, higherBetter: boolean, target: number | undefined,
  smcSide: { server: string[]; serverAuto?: boolean; client: string[]; clientAuto?: boolean; clientEnv?: NodeJS.ProcessEnv },
  tcpSide: { server: string[]; serverAuto?: boolean; client: string[]; clientAuto?: boolean },
  freshServers = false): Promise<void> {
  if (only && !metric.startsWith(only)) return;
  // Where both sides need the same server (the control row), both talk to one process:
  // two server processes differ by a few percent on their own (scheduling, CPU placement).
  const shared = JSON.stringify([smcSide.server, smcSide.serverAuto]) === JSON.stringify([tcpSide.server, tcpSide.serverAuto]);
  let smcS = await serve(smcSide.server, smcSide.serverAuto);
  let tcpS = shared ? smcS : await serve(tcpSide.server, tcpSide.serverAuto);
  const a: number[] = [];
  const b: number[] = [];
  // Every run's SMC-side mode: a row whose runs did not all settle alike says so (SMCD x2 + TCP x1).
  const modes = new Map<string, number>();
  try {
    for (let i = 0; i < RUNS; i++) {
      // freshServers: new server processes for every run (a cold row counts the server's warm-up too).
      if (freshServers && i > 0) {
        await smcS.stop();
        if (!shared) await tcpS.stop();
        smcS = await serve(smcSide.server, smcSide.serverAuto);
        tcpS = shared ? smcS : await serve(tcpSide.server, tcpSide.serverAuto);
      }
      // Alternate which side runs first, so warm-up and drift do not favour one of them.
      const runSmc = () => client([...smcSide.client, '--port', String(smcS.port)], smcSide.clientAuto, smcSide.clientEnv);
      const runTcp = () => client([...tcpSide.client, '--port', String(tcpS.port)], tcpSide.clientAuto);
      let r1: Awaited<ReturnType<typeof client>>;
      let r2: Awaited<ReturnType<typeof client>>;
      if (i % 2 === 0) { r1 = await runSmc(); r2 = await runTcp(); } else { r2 = await runTcp(); r1 = await runSmc(); }
      if (r1.verified === false || r2.verified === false) throw new Error(`${metric}: byte count mismatch`);
      const m = String(r1.mode ?? (r1.modes as string[] | undefined)?.join('+'));
      modes.set(m, (modes.get(m) ?? 0) + 1);
      a.push(r1[field] as number);
      b.push(r2[field] as number);
    }
  } finally {
    await smcS.stop();
    if (!shared) await tcpS.stop();
  }
  const smc = median(a);
  const tcp = median(b);
  // The ratio is the median of each run's pair (run back to back), which cancels the drift
  // between runs (this machine's rates move by 10% and more from one run to the next).
  const runs = a.map((x, i) => ({ smc: x, tcp: b[i]!, ratio: x / b[i]! }));
  const ratio = median(runs.map((r) => r.ratio));
  const smcMode = modes.size === 1 ? [...modes.keys()][0]! : [...modes].map(([m, n]) => `${m} x${n}`).join(' + ');
  rows.push({ metric, smc, tcp, unit, ratio, runs, smcMode, ...verdict(ratio, higherBetter, target) });
}

const bulk = ['--test', 'bulk', '--seconds', '3', '--warmup-seconds', '1', '--no-verify'];
await measure('bulk 64 KiB', 'MiB/s', 'mibPerSec', true, 3.0, { server: ['--api', 'smc'], client: ['--api', 'smc', ...bulk] }, { server: ['--api', 'net'], client: ['--api', 'net', ...bulk] });
// node:net's onread (a buffer the application supplies, no allocation per read) is a client
// option: the server sends and the client reads, into one 64 KiB buffer on both sides.
const onread = ['--test', 'recv', '--seconds', '3', '--warmup-seconds', '1', '--onread', String(64 << 10)];
await measure('bulk 64 KiB, onread 64 KiB buffer', 'MiB/s', 'mibPerSec', true, 4.0, { server: ['--api', 'smc'], client: ['--api', 'smc', ...onread] }, { server: ['--api', 'net'], client: ['--api', 'net', ...onread] });
// What a fresh process gets: its first 256 MiB, read through 'data' events while V8 compiles
// and the heap grows (the reader is the client, a new process each run; the sending server
// is one process for all runs).
const cold = ['--test', 'recv', '--bytes', String(256 << 20)];
await measure('bulk, first 256 MiB of a fresh process', 'MiB/s', 'mibPerSec', true, 2.0, { server: ['--api', 'smc'], client: ['--api', 'smc', ...cold] }, { server: ['--api', 'net'], client: ['--api', 'net', ...cold] });
// 1 MiB is SMC-D v1's largest DMB and the default; a larger one (allowed between softrdma
// peers, flagged by Wireshark) shows what the ring size costs.
await measure('bulk 64 KiB, 4 MiB DMB', 'MiB/s', 'mibPerSec', true, 2.0, { server: ['--api', 'smc', '--smc-buffer', String(4 << 20)], client: ['--api', 'smc', '--smc-buffer', String(4 << 20), ...bulk] }, { server: ['--api', 'net'], client: ['--api', 'net', ...bulk] });
const pp = ['--test', 'pingpong', '--iters', '20000'];
await measure('pingpong 14 B median', 'us', 'medianUs', false, 0.5, { server: ['--api', 'smc'], client: ['--api', 'smc', ...pp] }, { server: ['--api', 'net'], client: ['--api', 'net', ...pp] });
await measure('pingpong 14 B mean', 'us', 'meanUs', false, 0.5, { server: ['--api', 'smc'], client: ['--api', 'smc', ...pp] }, { server: ['--api', 'net'], client: ['--api', 'net', ...pp] });
// Fresh processes' first round trips (a new server and client each run, as the http row's):
// V8's warm-up included, the handshake not (the first round trip starts once connected).
const ppCold = ['--test', 'pingpong', '--iters', '1000', '--warmup-iters', '0'];
await measure('pingpong 14 B median, first 1000 of fresh processes', 'us', 'medianUs', false, undefined, { server: ['--api', 'smc'], client: ['--api', 'smc', ...ppCold] }, { server: ['--api', 'net'], client: ['--api', 'net', ...ppCold] }, true);
// A fresh server and client process each run, counted from the first request (as a user's
// programs start), then the steady state: the same after 2 s of the load not counted.
const http = ['--api', 'net', '--test', 'http', '--seconds', '3'];
await measure('http requests', 'req/s', 'perSec', true, 1.35, { server: ['--http'], serverAuto: true, client: http, clientAuto: true }, { server: ['--http'], client: http }, true);
const httpSteady = [...http, '--warmup-seconds', '2'];
await measure('http requests, steady', 'req/s', 'perSec', true, 1.35, { server: ['--http'], serverAuto: true, client: httpSteady, clientAuto: true }, { server: ['--http'], client: httpSteady });
const sc = ['--test', 'shortconn', '--seconds', '3', '--warmup-seconds', '1'];
// By default a client learns that SMC does not pay for a peer whose connections are all short
// (src/smc/handshake-control.ts) and connects over plain TCP after eight of them, probing SMC
// now and then: this row is what an application gets. The next row forces SMC-D every time.
await measure('short connections', 'conn/s', 'perSec', true, 1.0, { server: ['--api', 'smc'], client: ['--api', 'smc', ...sc] }, { server: ['--api', 'net'], client: ['--api', 'net', ...sc] });
await measure('short connections, SMC-D every time', 'conn/s', 'perSec', true, undefined, { server: ['--api', 'smc'], client: ['--api', 'smc', ...sc], clientEnv: { SOFTRDMA_SMC_LEARN: '0' } }, { server: ['--api', 'net'], client: ['--api', 'net', ...sc] });
// The same from a fresh client process, warm-up included: V8 compiles its way through the
// first thousands of connections (a fresh SMC client takes ~1 ms a connection at first,
// ~0.4 ms after 2,500; node:net 0.7 ms, then 0.4), and SMC runs more JavaScript per connection.
const scCold = ['--test', 'shortconn', '--seconds', '3'];
await measure('short connections, cold process', 'conn/s', 'perSec', true, undefined, { server: ['--api', 'smc'], client: ['--api', 'smc', ...scCold] }, { server: ['--api', 'net'], client: ['--api', 'net', ...scCold] });
// The same client against the same server on both sides: how far apart two identical
// sides come out in this run, the noise floor the fallback rows are read against.
await measure('control: node:net vs node:net setup', 'conn/s', 'perSec', true, undefined, { server: ['--api', 'net'], client: ['--api', 'net', ...sc] }, { server: ['--api', 'net'], client: ['--api', 'net', ...sc] });
/** One CPU-bound process per CPU (`for (;;) {}`), for as long as fn runs. */
async function withBusyCpus(fn: () => Promise<void>): Promise<void> {
  const loops = os.cpus().map(() => spawn(process.execPath, ['-e', 'for (;;) {}'], { stdio: 'ignore' }));
  try {
    await fn();
  } finally {
    for (const l of loops) l.kill('SIGKILL');
  }
}
const busy = (metric: string) => !only || metric.startsWith(only);
if (busy('bulk 64 KiB, CPUs busy')) {
  await withBusyCpus(() => measure('bulk 64 KiB, CPUs busy', 'MiB/s', 'mibPerSec', true, 1.0, { server: ['--api', 'smc'], client: ['--api', 'smc', ...bulk] }, { server: ['--api', 'net'], client: ['--api', 'net', ...bulk] }));
}
const ppBusy = ['--test', 'pingpong', '--iters', '3000'];
if (busy('pingpong 14 B median, CPUs busy')) {
  await withBusyCpus(() => measure('pingpong 14 B median, CPUs busy', 'us', 'medianUs', false, 1.0, { server: ['--api', 'smc'], client: ['--api', 'smc', ...ppBusy] }, { server: ['--api', 'net'], client: ['--api', 'net', ...ppBusy] }));
}
if (busy('http requests, CPUs busy')) {
  await withBusyCpus(() => measure('http requests, CPUs busy', 'req/s', 'perSec', true, 1.0, { server: ['--http'], serverAuto: true, client: http, clientAuto: true }, { server: ['--http'], client: http }));
}
const fallback = await fallbackRows(6 * RUNS, env, only);

if (json) {
  console.log(JSON.stringify({ runs: RUNS, cpus: os.cpus().length, node: process.version, baseline: BASELINE, rows, fallback: { pairs: 6 * RUNS, rows: fallback } }, null, 2));
} else {
  const head = ['metric', 'SMC', 'TCP', 'unit', 'SMC/TCP', 'runs', 'target', 'met', 'SMC mode'];
  const spread = (r: Row) => {
    const xs = r.runs.map((x) => x.ratio);
    return `${Math.min(...xs).toFixed(2)}-${Math.max(...xs).toFixed(2)}`;
  };
  const lines = rows.map((r) => [r.metric, r.smc.toFixed(1), r.tcp.toFixed(1), r.unit, r.ratio.toFixed(2), spread(r), r.target, r.met === undefined ? '-' : r.met ? 'yes' : 'NO', r.smcMode]);
  if (lines.length) {
    console.log(formatTable([head, ...lines]));
    console.log(`\nmedians of ${RUNS} runs (SMC/TCP: the median of the runs' pair ratios; runs: their range); each side its own process on 127.0.0.1; ${os.cpus().length} CPUs, node ${process.version}`);
    console.log(`baseline: ${BASELINE}`);
  }
  if (fallback.length) {
    if (lines.length) console.log('');
    printRows(fallback, `fallback: ${AB_FOOTER}; ${6 * RUNS} pairs per row`);
  }
}
