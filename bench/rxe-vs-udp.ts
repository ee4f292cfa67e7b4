// rxe against raw node:dgram between the same two addresses, in the same run, measured two ways:
//   cold:   as a user runs perftest (its defaults, fresh processes: the JIT's warm-up counted,
//           process start and device/QP setup not, on either side):
//           write_bw at 64 KiB, -n 5000; send_bw at 64 KiB, -n 1000; send_lat at 2 B, -n 1000
//           (perftest's statistics on both sides: the two largest round trips left out);
//           and the same runs timed whole, as the user waits for them: from spawning the
//           client (the raw sender) to its result, node's start, module loading, the device,
//           the out-of-band exchange and the QP included (the "whole run" rows; the raw side:
//           to its first datagram's arrival, plus the same bytes at the goodput it reached)
//   steady: -D seconds, of which perftest counts only the middle half (its margins: D/4 at
//           each end, left out), for write_bw, send_bw and send_lat; and
//           write_bw with -q 16 against -q 1
// against a raw pair written as a careful Node programmer would (bench/raw-udp.ts: connected
// sockets, 8 MiB buffers, up to 256 sends in flight; goodput counted at the receiver), cold and
// steady in the same way. Bandwidth against two such pairs: 4 KiB datagrams (rxe's payload per
// packet at MTU 4096, a system call each) and 65,000-byte datagrams (a system call per message,
// as rxe's GSO run of a message's packets is; on loopback the kernel moves each as one packet).
// The second is the stronger baseline and the one a skeptic would pick: both rows carry the target.
// Every figure is the median of --runs runs, interleaved so both sides see the same machine;
// which side of a row runs first alternates from run to run (the machine drifts within a
// run), and the table gives the range of the runs' own ratios beside the ratio of the medians.
//
//   node dist/bench/rxe-vs-udp.js [--runs 3] [--json] [--only PREFIX] [--duration SEC]

import { spawn } from 'node:child_process';
import os from 'node:os';
import { fileURLToPath } from 'node:url';
import { crc32Implementation, describeCrc32 } from '../src/sys/crc32.js';
import { benchOptions } from './options.js';
import { median, verdict } from './stats.js';

const USAGE = 'usage: node dist/bench/rxe-vs-udp.js [--runs N] [--json] [--only PREFIX] [--duration SEC]';
const { runs: RUNS, json, strings: { only, duration } } = benchOptions(USAGE, { only: undefined, duration: '8' });
const DURATION = Number(duration);
/** perftest's default margin with -D (a quarter, rounded down, at each end); the raw side leaves the same out. */
const MARGIN_MS = Math.floor(DURATION / 4) * 1000;
/** The seconds both sides count. */
const WINDOW = DURATION - (2 * MARGIN_MS) / 1000;
const CLI = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const RAW = fileURLToPath(new URL('./raw-udp.js', import.meta.url));
const A = '127.0.0.2', B = '127.0.0.3';

/** The large-datagram baseline's size: 64 KiB messages do not fit a UDP datagram (65,507 B at most). */
const BIG = 65_000;

export const BASELINE =
  'raw UDP: node:dgram, connected sockets (socket.connect), 8 MiB socket buffers, up to 256 sends in ' +
  'flight, goodput at the receiver; bandwidth twice: 4 KiB datagrams (rxe\'s payload per packet at MTU ' +
  `4096, one send each, where rxe sends a message's packets as one GSO run) and ${BIG}-byte datagrams ` +
  '(as near a 64 KiB message as a datagram gets: one send per message, as rxe\'s GSO run); ' +
  'ping-pong of 2-byte datagrams on connected sockets';

interface Child {
  out: Promise<string>;
  onLine(re: RegExp): Promise<RegExpMatchArray>;
  /** When the process was spawned, on the host's monotonic clock (hrtime ns, as raw-udp's *_ns). */
  spawnedNs: number;
  /** When output matching `re` first arrived (hrtime ns). */
  seenAt(re: RegExp): Promise<number>;
}

const nowNs = () => Number(process.hrtime.bigint());

function start(script: string, args: string[]): Child {
  const spawnedNs = nowNs();
  const c = spawn(process.execPath, [script, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let text = '';
  const waiters: { re: RegExp; resolve: (m: RegExpMatchArray, ns: number) => void }[] = [];
  const feed = (d: Buffer) => {
    const ns = nowNs();
    text += d.toString();
    for (const w of [...waiters]) {
      const m = text.match(w.re);
      if (m) { waiters.splice(waiters.indexOf(w), 1); w.resolve(m, ns); }
    }
  };
  c.stdout.on('data', feed);
  c.stderr.on('data', feed);
  const timer = setTimeout(() => c.kill('SIGKILL'), 180_000);
  const out = new Promise<string>((resolve, reject) => c.on('close', (code) => {
    clearTimeout(timer);
    if (code === 0) resolve(text); else reject(new Error(`${script} ${args.join(' ')} exited ${code}:\n${text}`));
  }));
  const seen = (re: RegExp) => new Promise<[RegExpMatchArray, number]>((resolve, reject) => {
    const m = text.match(re);
    if (m) return resolve([m, nowNs()]);
    waiters.push({ re, resolve: (x, ns) => resolve([x, ns]) });
    out.then(() => reject(new Error(`no ${re} from ${script}`)), reject);
  });
  return { out, spawnedNs, onLine: async (re) => (await seen(re))[0], seenAt: async (re) => (await seen(re))[1] };
}

const lastJson = (text: string, key: string) =>
  text.split('\n').filter((l) => l.startsWith('{') && l.includes(`"${key}"`)).map((l) => JSON.parse(l)).pop();

async function perftest(test: string, args: string[]) {
  const server = start(CLI, ['perftest', test, '--bind', A, '-p', '0', '--udp-port', '0', '--json', ...args]);
  const [, tcp, udp] = await server.onLine(/out-of-band TCP port (\d+), RoCE UDP port (\d+)/);
  const client = start(CLI, ['perftest', test, '--bind', B, '-p', tcp!, '--udp-port', udp!, '--json', ...args, '127.0.0.1']);
  const [cText, sText, doneNs] = await Promise.all([client.out, server.out, client.seenAt(/"role":"client"/)]);
  // send_bw's receiver measures what arrived; the other tests are measured by the client.
  const r = lastJson(test === 'send_bw' ? sText : cText, 'test');
  // The client's whole run as its user waits for it: from spawning it (node's start, the
  // module loading, the device, the out-of-band exchange, the QP) to its result line (its
  // messages all completed: acknowledged by the server).
  return { ...r, wholeSec: (doneNs - client.spawnedNs) / 1e9 };
}

let portSeq = 0;
const rawPort = () => 20000 + ((process.pid * 7 + portSeq++) % 20000);

async function rawGoodput(mode: { bytes: number } | { seconds: number }, size = 4096) {
  const port = rawPort();
  const steady = 'seconds' in mode;
  const sink = start(RAW, ['sink', '--bind', A, '--port', String(port), '--warmup-ms', steady ? String(MARGIN_MS) : '0']);
  await sink.onLine(/"ready"/);
  const amount = steady ? ['--duration-ms', String(mode.seconds * 1000 + MARGIN_MS)] : ['--count', String(Math.ceil(mode.bytes / size))];
  const blast = start(RAW, ['blast', '--bind', B, '--port', String(port), '--to', A, '--size', String(size), ...amount]);
  const [text] = await Promise.all([sink.out, blast.out]);
  const r = lastJson(text, 'MBps');
  const MBps = r.MBps as number;
  // The whole run, as rxe's (perftest): from spawning the sender to its first datagram's
  // arrival, then the time the same bytes as rxe's take at the goodput it reached. Not the
  // bytes that arrived over the time to the last one: a fresh sink takes in as little as a
  // third of the 65,000-byte datagrams (the rest overflow its socket), and its start would then
  // weigh on a third of the bytes (a review found that row 25-45% low).
  const wholeMBps = 'bytes' in mode && MBps > 0 ? mode.bytes / ((r.first_ns - blast.spawnedNs) / 1e9 + mode.bytes / (MBps * (1 << 20))) / (1 << 20) : NaN;
  return { MBps, wholeMBps };
}

async function rawPing(mode: { iters: number } | { seconds: number }) {
  const port = rawPort();
  const echo = start(RAW, ['echo', '--bind', A, '--port', String(port)]);
  await echo.onLine(/"ready"/);
  const amount = 'iters' in mode ? ['--iters', String(mode.iters)] : ['--duration-ms', String(mode.seconds * 1000 + MARGIN_MS), '--warmup-ms', String(MARGIN_MS)];
  const ping = start(RAW, ['ping', '--bind', B, '--port', String(port), '--to', A, ...amount]);
  const [text] = await Promise.all([ping.out, echo.out]);
  const r = lastJson(text, 'rtt_avg_us');
  return { mean: r.rtt_avg_us as number, typical: r.rtt_typical_us as number, p99: r.rtt_p99_us as number, wholeMs: (r.done_ns - ping.spawnedNs) / 1e6 };
}

/** perftest's lat tests report half the round trip; the rows compare whole round trips. */
async function rxeLat(args: string[]) {
  const r = await perftest('send_lat', ['-s', '2', ...args]);
  return { mean: r.t_avg_us * 2, typical: r.t_typical_us * 2, p99: r.p99_us * 2, wholeMs: r.wholeSec * 1000 };
}

interface Row { metric: string; unit: string; higherBetter: boolean; target?: number; rxe: number[]; raw: number[]; baseline: string }
const rows = new Map<string, Row>();
function add(metric: string, unit: string, higherBetter: boolean, target: number | undefined, baseline: string, rxe: number, raw: number) {
  let r = rows.get(metric);
  if (!r) rows.set(metric, (r = { metric, unit, higherBetter, target, rxe: [], raw: [], baseline }));
  r.rxe.push(rxe);
  r.raw.push(raw);
}
const want = (prefix: string) => !only || prefix.startsWith(only);
/** Both sides of a row, rxe's first in even runs and the baseline's first in odd ones. */
async function pair<A, B>(run: number, rxe: () => Promise<A>, base: () => Promise<B>): Promise<[A, B]> {
  if (run % 2 === 0) { const a = await rxe(); return [a, await base()]; }
  const b = await base();
  return [await rxe(), b];
}

/**
 * A bandwidth test against both raw baselines (4 KiB and BIG-byte datagrams): one rxe run, the
 * two raw runs before or after it (alternating), two rows.
 */
async function bwRows(run: number, metric: string, target: number, what: string, rxe: () => Promise<{ bw_avg_MBps: number; wholeSec: number }>, mode: { bytes: number } | { seconds: number }) {
  const [x, [small, big]] = await pair(run, rxe, async () => [await rawGoodput(mode, 4096), await rawGoodput(mode, BIG)] as const);
  add(metric, 'MiB/s', true, target, `raw UDP, ${what}, 4 KiB datagrams`, x.bw_avg_MBps, small.MBps);
  add(`${metric}, vs ${BIG} B datagrams`, 'MiB/s', true, target, `raw UDP, ${what}, ${BIG}-byte datagrams`, x.bw_avg_MBps, big.MBps);
  if (!('bytes' in mode)) return;
  // As the user waits for it: the bytes over the client's whole run, process start included.
  const whole = x.wholeSec > 0 ? mode.bytes / x.wholeSec / (1 << 20) : 0;
  add(`${metric}, whole run`, 'MiB/s', true, target, `the same bytes over each side's whole run from spawning the sender (node's start, module loading and setup included): rxe to perftest's result line; raw to its first datagram's arrival, then those bytes at the goodput it reached (a fresh sink drops many); 4 KiB datagrams`, whole, small.wholeMBps);
  add(`${metric}, whole run, vs ${BIG} B datagrams`, 'MiB/s', true, target, `the same, ${BIG}-byte datagrams`, whole, big.wholeMBps);
}

for (let run = 0; run < RUNS; run++) {
  // Cold: perftest's defaults, fresh processes on both sides.
  if (want('cold write_bw')) await bwRows(run, 'cold write_bw 64 KiB, -n 5000', 0.8, 'the bytes of 5000 x 64 KiB, fresh processes',
    () => perftest('write_bw', ['-s', '65536']), { bytes: 5000 * 65536 });
  // perftest's default -n is 5000 for write_bw and 1000 for send_bw (perftest_parameters.c).
  if (want('cold send_bw')) await bwRows(run, 'cold send_bw 64 KiB, -n 1000', 0.8, 'the bytes of 1000 x 64 KiB, fresh processes',
    () => perftest('send_bw', ['-s', '65536']), { bytes: 1000 * 65536 });
  if (want('cold send_lat')) {
    const [x, y] = await pair(run, () => rxeLat([]), () => rawPing({ iters: 1000 }));
    add('cold send_lat 2 B round trip, mean, -n 1000', 'us', false, undefined, "raw UDP ping-pong, 1000 rounds, fresh processes, perftest's statistics (the two largest left out)", x.mean, y.mean);
    add('cold send_lat 2 B round trip, p99', 'us', false, undefined, 'the same runs', x.p99, y.p99);
    add('cold send_lat -n 1000, whole run', 'ms', false, undefined, "the same runs' whole run: from spawning the client (node's start, module loading and setup included) to its result (rxe: perftest's result line; raw: its last answer)", x.wholeMs, y.wholeMs);
  }
  // Steady state: -D seconds after the warm-up margin.
  const D = ['-D', String(DURATION)];
  const window = `the ${WINDOW} s after ${MARGIN_MS / 1000} s of warm-up, as perftest counts -D ${DURATION}`;
  if (want('steady write_bw')) await bwRows(run, `steady write_bw 64 KiB, -D ${DURATION}`, 1.0, window,
    () => perftest('write_bw', ['-s', '65536', ...D]), { seconds: WINDOW });
  if (want('steady send_bw')) await bwRows(run, `steady send_bw 64 KiB, -D ${DURATION}`, 1.0, window,
    () => perftest('send_bw', ['-s', '65536', ...D]), { seconds: WINDOW });
  if (want('steady send_lat')) {
    const [x, y] = await pair(run, () => rxeLat(D), () => rawPing({ seconds: WINDOW }));
    add(`steady send_lat 2 B round trip, mean, -D ${DURATION}`, 'us', false, 1.0, `raw UDP ping-pong: the ${WINDOW} s after ${MARGIN_MS / 1000} s of warm-up, as perftest counts -D ${DURATION}`, x.mean, y.mean);
    add(`steady send_lat 2 B round trip, p99, -D ${DURATION}`, 'us', false, 2.0, 'the same runs', x.p99, y.p99);
    add(`steady send_lat 2 B round trip, typical, -D ${DURATION}`, 'us', false, undefined, 'the same runs', x.typical, y.typical);
  }
  if (want('steady write_bw -q 16')) add(`steady write_bw 64 KiB, -q 16 vs -q 1, -D ${DURATION}`, 'MiB/s', true, 1.0, 'the same test with one QP (rxe on both sides)',
    ...await pair(run, async () => (await perftest('write_bw', ['-s', '65536', '-q', '16', ...D])).bw_avg_MBps, async () => (await perftest('write_bw', ['-s', '65536', ...D])).bw_avg_MBps));
}

const table = [...rows.values()].map((r) => {
  const rxe = median(r.rxe), raw = median(r.raw), ratio = rxe / raw;
  const v = verdict(ratio, r.higherBetter, r.target);
  const runRatios = r.rxe.map((x, i) => x / r.raw[i]!);
  const runs = { min: Math.min(...runRatios), max: Math.max(...runRatios) };
  return { metric: r.metric, unit: r.unit, rxe, raw, ratio, runs, target: v.target, met: v.met, baseline: r.baseline, samples: { rxe: r.rxe, raw: r.raw } };
});
if (json) {
  console.log(JSON.stringify({ runs: RUNS, cpus: os.cpus().length, node: process.version, icrc: crc32Implementation, baseline: BASELINE, rows: table }));
} else {
  console.log(`rxe vs raw node:dgram, ${A} <-> ${B}, each side its own process; medians of ${RUNS} runs; ${os.cpus().length} CPUs, node ${process.version}`);
  console.log(`baseline: ${BASELINE}`);
  // The perftest processes load the CRC as this one does, in the same environment.
  console.log(`rxe's ICRC: ${describeCrc32()}\n`);
  const w = Math.max(...table.map((t) => t.metric.length)) + 2;
  console.log(`${'metric'.padEnd(w)}${'rxe'.padStart(10)}${'baseline'.padStart(10)}  unit    ratio  runs       target`);
  for (const t of table) {
    const met = t.met === undefined ? '' : t.met ? 'met' : 'NOT met';
    const runs = `${t.runs.min.toFixed(2)}-${t.runs.max.toFixed(2)}`;
    console.log(`${t.metric.padEnd(w)}${t.rxe.toFixed(1).padStart(10)}${t.raw.toFixed(1).padStart(10)}  ${t.unit.padEnd(6)}  ${t.ratio.toFixed(2).padStart(5)}  ${runs.padEnd(9)}  ${t.target.padEnd(7)} ${met}`);
  }
  console.log('\nratio: the ratio of the medians; runs: the range of the runs\' own ratios (each run measures both sides, which goes first alternating)');
  console.log('\nbaseline per row:');
  for (const t of table) console.log(`  ${t.metric}: ${t.baseline}`);
}
