// rxe against raw node:dgram between the same two addresses, in the same run:
//   throughput: `softrdma perftest write_bw` at 64 KiB vs a raw blaster/sink moving 4 KiB datagrams
//   latency:    `softrdma perftest send_lat` at 2 B (one-way, x2 for the round trip) vs a raw UDP ping-pong
// Every figure is the median of --runs runs (the machine's scheduling is noisy); each side of
// each pair is its own process, as in real use.
//
//   node dist/bench/rxe-vs-udp.js [--runs 3] [--json]

import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { benchOptions } from './options.js';
import { median } from './stats.js';

const { runs: RUNS, json, strings: { iters } } = benchOptions('usage: node dist/bench/rxe-vs-udp.js [--runs N] [--json] [--iters N]', { iters: '10000' });
const CLI = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const RAW = fileURLToPath(new URL('./raw-udp.js', import.meta.url));
const A = '127.0.0.2', B = '127.0.0.3';

interface Child { out: Promise<string>; lines: string[]; onLine(re: RegExp): Promise<RegExpMatchArray> }

function start(script: string, args: string[]): Child {
  const c = spawn(process.execPath, [script, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let text = '';
  const waiters: { re: RegExp; resolve: (m: RegExpMatchArray) => void }[] = [];
  const feed = (d: Buffer) => {
    text += d.toString();
    for (const w of [...waiters]) {
      const m = text.match(w.re);
      if (m) { waiters.splice(waiters.indexOf(w), 1); w.resolve(m); }
    }
  };
  c.stdout.on('data', feed);
  c.stderr.on('data', feed);
  const timer = setTimeout(() => c.kill('SIGKILL'), 120_000);
  const out = new Promise<string>((resolve, reject) => c.on('close', (code) => {
    clearTimeout(timer);
    if (code === 0) resolve(text); else reject(new Error(`${script} ${args.join(' ')} exited ${code}:\n${text}`));
  }));
  return {
    out, lines: [],
    onLine: (re) => new Promise((resolve, reject) => {
      const m = text.match(re);
      if (m) return resolve(m);
      waiters.push({ re, resolve });
      out.then(() => reject(new Error(`no ${re} from ${script}`)), reject);
    }),
  };
}

const lastJson = (text: string, key: string) =>
  text.split('\n').filter((l) => l.startsWith('{') && l.includes(`"${key}"`)).map((l) => JSON.parse(l)).pop();

async function perftest(test: string, args: string[]) {
  const server = start(CLI, ['perftest', test, '--bind', A, '-p', '0', '--udp-port', '0', '--json', ...args]);
  const [, tcp, udp] = await server.onLine(/out-of-band TCP port (\d+), RoCE UDP port (\d+)/);
  const client = start(CLI, ['perftest', test, '--bind', B, '-p', tcp!, '--udp-port', udp!, '--json', ...args, '127.0.0.1']);
  const [text] = await Promise.all([client.out, server.out]);
  return lastJson(text, 'test');
}

let portSeq = 0;
const rawPort = () => 20000 + ((process.pid * 7 + portSeq++) % 20000);

async function rawGoodput(bytes: number) {
  const port = rawPort();
  const sink = start(RAW, ['sink', '--bind', A, '--port', String(port)]);
  await sink.onLine(/"ready"/);
  const blast = start(RAW, ['blast', '--bind', B, '--port', String(port), '--to', A, '--size', '4096', '--count', String(Math.ceil(bytes / 4096))]);
  const [text] = await Promise.all([sink.out, blast.out]);
  return lastJson(text, 'MBps');
}

async function rawPing(iters: number) {
  const port = rawPort();
  const echo = start(RAW, ['echo', '--bind', A, '--port', String(port)]);
  await echo.onLine(/"ready"/);
  const ping = start(RAW, ['ping', '--bind', B, '--port', String(port), '--to', A, '--iters', String(iters)]);
  const [text] = await Promise.all([ping.out, echo.out]);
  return lastJson(text, 'rtt_avg_us');
}

const ITERS = Number(iters);
const rxeBw: number[] = [], rawBw: number[] = [], rxeRtt: number[] = [], rawRtt: number[] = [], rxeRttAvg: number[] = [], rawRttAvg: number[] = [];
for (let r = 0; r < RUNS; r++) {
  // Interleaved, so both sides of each comparison see the same machine state.
  rxeBw.push((await perftest('write_bw', ['-s', '65536', '-n', String(ITERS)])).bw_avg_MBps);
  rawBw.push((await rawGoodput(65536 * ITERS)).MBps);
  const lat = await perftest('send_lat', ['-s', '2', '-n', '5000']);
  rxeRtt.push(lat.t_typical_us * 2);
  rxeRttAvg.push(lat.t_avg_us * 2);
  const ping = await rawPing(5000);
  rawRtt.push(ping.rtt_typical_us);
  rawRttAvg.push(ping.rtt_avg_us);
}

const result = {
  runs: RUNS,
  throughput: { rxe_write_bw_64KiB_MiBps: median(rxeBw), raw_udp_4KiB_goodput_MiBps: median(rawBw), ratio: median(rxeBw) / median(rawBw), target: '>= 0.8', samples: { rxe: rxeBw, raw: rawBw } },
  latency: {
    rxe_send_lat_2B_rtt_us: median(rxeRtt), raw_udp_2B_rtt_us: median(rawRtt), ratio: median(rxeRtt) / median(rawRtt), target: '<= 1.25',
    avg: { rxe: median(rxeRttAvg), raw: median(rawRttAvg) }, samples: { rxe: rxeRtt, raw: rawRtt },
  },
};
if (json) {
  console.log(JSON.stringify(result));
} else {
  const f = (x: number) => x.toFixed(1).padStart(9);
  console.log(`rxe vs raw node:dgram, ${A} <-> ${B}, separate processes, median of ${RUNS} runs`);
  console.log('');
  console.log('                                      rxe        raw UDP    ratio   target');
  console.log(`throughput (MiB/s, 64 KiB vs 4 KiB) ${f(median(rxeBw))}  ${f(median(rawBw))}   ${result.throughput.ratio.toFixed(2)}   >= 0.80  ${result.throughput.ratio >= 0.8 ? 'met' : 'NOT met'}`);
  console.log(`round trip, typical (us, 2 B)        ${f(median(rxeRtt))}  ${f(median(rawRtt))}   ${result.latency.ratio.toFixed(2)}   <= 1.25  ${result.latency.ratio <= 1.25 ? 'met' : 'NOT met'}`);
  console.log(`round trip, mean (us, 2 B)           ${f(median(rxeRttAvg))}  ${f(median(rawRttAvg))}   ${(median(rxeRttAvg) / median(rawRttAvg)).toFixed(2)}`);
}
