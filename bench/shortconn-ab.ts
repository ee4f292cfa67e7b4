// Short connections (connect, 14-byte echo, close) of several sides at once, each side its own
// server process and client process, as an application runs them (smc-vs-tcp's row does that
// too, but one side after the other, and this machine's rate moves by 10-20% between two such
// runs). Here every client is started, warmed up (3000 connections) and kept; a coordinator
// then asks them in turn for a batch of connections, round after round, so all sides meet the
// same minutes of the machine. A side is a build (its dist directory) and an API, so two builds
// of softrdma compare against each other and against node:net:
//
//   node dist/bench/shortconn-ab.js [--rounds N] [--batch N] NAME=DIST:smc|net[:ENV=V;ENV=V] ...
//   e.g. before=/tmp/old-dist:smc after=dist:smc net=dist:net
//
// Per batch: the client's CPU time (process.cpuUsage) and the server's (its threads'
// schedstat), per connection, and the wall time. Printed per side: medians, and the median of
// the per-round ratios to the last side (CPU time, both processes; connection rate).
// `worker DIST API PORT SERVER_PID` is the client process (internal).

import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { threadsMicros } from './proc-cpu.js';
import { median } from './stats.js';

const SELF = fileURLToPath(import.meta.url);
const WARM = 3000;

interface Batch { client: number; server: number; wall: number }

async function worker(dist: string, api: string, port: number, serverPid: number): Promise<void> {
  const peer = await import(pathToFileURL(path.resolve(dist, 'src/tools/smc-peer.js')).href) as { shortConnection(a: string, p: number): Promise<string> };
  for (let i = 0; i < WARM; i++) await peer.shortConnection(api, port);
  process.stdout.write('ready\n');
  for await (const line of readline.createInterface({ input: process.stdin })) {
    const n = Number(line);
    const s0 = threadsMicros(serverPid);
    const c0 = process.cpuUsage();
    const t0 = performance.now();
    for (let i = 0; i < n; i++) await peer.shortConnection(api, port);
    const wall = (performance.now() - t0) * 1000;
    const c = process.cpuUsage(c0);
    await new Promise((r) => setImmediate(r)); // the server's close of the last one
    const b: Batch = { client: (c.user + c.system) / n, server: (threadsMicros(serverPid) - s0) / n, wall: wall / n };
    process.stdout.write(`${JSON.stringify(b)}\n`);
  }
}

interface Side { name: string; server: ChildProcess; client: ChildProcess; lines: AsyncIterator<string>; dir: string; batches: Batch[] }

async function startSide(spec: string): Promise<Side> {
  const m = /^([^=]+)=([^:]+):(smc|net)(?::(.*))?$/.exec(spec);
  if (!m) throw new Error(`a side is NAME=DIST:smc|net[:ENV=V;...], got ${spec}`);
  const [, name, dist, api, envs] = m as unknown as [string, string, string, string, string | undefined];
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'softrdma-bench-'));
  const env: NodeJS.ProcessEnv = { ...process.env, SOFTRDMA_RUNTIME_DIR: dir };
  for (const kv of (envs ?? '').split(';').filter(Boolean)) {
    const i = kv.indexOf('=');
    env[kv.slice(0, i)] = kv.slice(i + 1);
  }
  const server = spawn(process.execPath, [path.resolve(dist, 'src/tools/smc-peer.js'), 'serve', '--api', api], { stdio: ['pipe', 'pipe', 'inherit'], env });
  const [hello] = (await once(readline.createInterface({ input: server.stdout! }), 'line')) as [string];
  const { port, pid } = JSON.parse(hello) as { port: number; pid: number };
  const client = spawn(process.execPath, [SELF, 'worker', dist, api, String(port), String(pid)], { stdio: ['pipe', 'pipe', 'inherit'], env });
  const lines = readline.createInterface({ input: client.stdout! })[Symbol.asyncIterator]();
  if ((await lines.next()).value !== 'ready') throw new Error(`${name}: the client did not start`);
  return { name, server, client, lines, dir, batches: [] };
}

async function main(): Promise<void> {
  const { values, positionals } = parseArgs({ allowPositionals: true, options: { rounds: { type: 'string', default: '20' }, batch: { type: 'string', default: '500' }, help: { type: 'boolean', short: 'h' } } });
  const usage = 'usage: node dist/bench/shortconn-ab.js [--rounds N] [--batch N] NAME=DIST:smc|net[:ENV=V;...] ... (the last side is the reference)';
  if (positionals[0] === 'worker') {
    const [, dist, api, port, pid] = positionals as [string, string, string, string, string];
    await worker(dist, api, Number(port), Number(pid));
    process.exit(0);
  }
  if (values.help || positionals.length < 2) {
    console.log(usage);
    process.exit(values.help ? 0 : 2);
  }
  const rounds = Number(values.rounds);
  const batch = Number(values.batch);
  const sides: Side[] = [];
  try {
    for (const spec of positionals) sides.push(await startSide(spec));
    for (let r = 0; r < rounds; r++) {
      // Rotate the order, so no side always follows the same one.
      for (let k = 0; k < sides.length; k++) {
        const side = sides[(k + r) % sides.length]!;
        side.client.stdin!.write(`${batch}\n`);
        side.batches.push(JSON.parse((await side.lines.next()).value as string) as Batch);
      }
    }
    const ref = sides[sides.length - 1]!;
    for (const s of sides) {
      const cpu = s.batches.map((b, i) => (b.client + b.server) / (ref.batches[i]!.client + ref.batches[i]!.server));
      const rate = s.batches.map((b, i) => ref.batches[i]!.wall / b.wall);
      console.log(`${s.name.padEnd(12)} ${(1e6 / median(s.batches.map((b) => b.wall))).toFixed(0).padStart(6)} conn/s  rate/${ref.name} ${median(rate).toFixed(3)} (${Math.min(...rate).toFixed(2)}-${Math.max(...rate).toFixed(2)})  `
        + `CPU us/conn client ${median(s.batches.map((b) => b.client)).toFixed(1)} server ${median(s.batches.map((b) => b.server)).toFixed(1)}  CPU/${ref.name} ${median(cpu).toFixed(3)} (${Math.min(...cpu).toFixed(2)}-${Math.max(...cpu).toFixed(2)})`);
    }
    console.log(`\n${rounds} rounds of ${batch} connections per side, after ${WARM}; medians, and the median (range) of the per-round ratios; ${os.cpus().length} CPUs, node ${process.version}`);
  } finally {
    for (const s of sides) { s.client.stdin!.end(); s.server.stdin!.end(); }
    for (const s of sides) {
      if (s.server.exitCode === null) await once(s.server, 'exit');
      fs.rmSync(s.dir, { recursive: true, force: true });
    }
  }
  process.exit(0);
}

await main();
