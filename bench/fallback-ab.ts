// The client of bench/fallback: one process that alternates, block by block, between two
// ways of reaching a plain peer, and prints each block's figure as JSON. Both ways share
// this process's CPU, JIT state, heap and server, so their difference is what the SMC code
// adds and not which process the scheduler favoured (two processes doing the same thing
// come out several percent apart on this kind of machine).
//
//   node dist/bench/fallback-ab.js --kind setup|pingpong|bulk --a smc|net --b smc|net
//        --port-a N --port-b N [--pairs N] [--server-pid PID]
//
// --a/--b: the client API of each side (softrdma/smc or node:net); --port-a/--port-b: the
// server each side talks to (the same port for a client-side comparison, the SMC and the
// plain listener of one server process for a server-side one). Blocks run A B, B A, A B...,
// so neither side always goes first.
//
// Besides each block's rate or latency, the CPU time it took, this process's and (with
// --server-pid) the server's, per operation: wall-clock figures on a shared 2-CPU machine
// scatter by 10% from block to block; CPU time per operation is what the SMC code adds, and
// it scatters far less.

import fs from 'node:fs';
import net from 'node:net';
import { parseArgs } from 'node:util';
import * as smc from '../src/smc/index.js';
import { bulk, shortConnection, type Api } from '../src/tools/smc-peer.js';

const { values } = parseArgs({
  options: {
    kind: { type: 'string' }, a: { type: 'string' }, b: { type: 'string' },
    'port-a': { type: 'string' }, 'port-b': { type: 'string' }, pairs: { type: 'string', default: '16' },
    'server-pid': { type: 'string' },
  },
});

const apiOf = (v: string | undefined): Api => {
  if (v !== 'smc' && v !== 'net') throw new Error(`--a/--b must be smc or net, got ${v}`);
  return v;
};
const sides = [
  { api: apiOf(values.a), port: Number(values['port-a']) },
  { api: apiOf(values.b), port: Number(values['port-b']) },
];
const PAIRS = Number(values.pairs);
const SERVER_PID = values['server-pid'];

/** CPU time of this process and the server so far, in microseconds (schedstat: nanoseconds, every thread). */
function cpuMicros(): number {
  const me = process.cpuUsage();
  let server = 0;
  if (SERVER_PID) {
    for (const t of fs.readdirSync(`/proc/${SERVER_PID}/task`)) {
      try { server += Number(fs.readFileSync(`/proc/${SERVER_PID}/task/${t}/schedstat`, 'latin1').split(' ')[0]) / 1000; } catch { /* thread gone */ }
    }
  }
  return me.user + me.system + server;
}

function connect(side: { api: Api; port: number }): net.Socket {
  const s = side.api === 'smc' ? smc.connect({ port: side.port, host: '127.0.0.1' }) : net.connect(side.port, '127.0.0.1');
  s.setNoDelay(true);
  return s;
}

const now = () => performance.now();

/** A block's figure (rate or latency) and how many operations (connections, round trips, MiB) it did. */
interface Block { value: number; ops: number }

/** How side A's SMC sockets settled (they must have fallen back to TCP for the figures to mean anything). */
const modes = new Set<string>();
function note(s: net.Socket, api: Api): void {
  if (api === 'smc') modes.add(smc.getSmcInfo(s).mode);
}

/** Connect, 13-byte echo, close, 200 times: connections per second. */
async function setupBlock(side: { api: Api; port: number }): Promise<Block> {
  const N = 200;
  const t0 = now();
  for (let i = 0; i < N; i++) {
    const mode = await shortConnection(side.api, side.port);
    if (side.api === 'smc') modes.add(mode);
  }
  return { value: N / ((now() - t0) / 1000), ops: N };
}

/** An echo connection kept for the whole run, and a block of 1000 14-byte round trips on it: the median in microseconds. */
async function echoConnection(side: { api: Api; port: number }): Promise<(n: number) => Promise<Block>> {
  const s = connect(side);
  await new Promise<void>((resolve, reject) => { s.once('connect', resolve); s.once('error', reject); });
  s.write('E');
  const msg = Buffer.alloc(14, 0x61);
  let waiter: (() => void) | undefined;
  let got = 0;
  s.on('data', (d: Buffer) => {
    got += d.length;
    if (got >= msg.length) { got -= msg.length; waiter?.(); }
  });
  return async (n) => {
    const rtts: number[] = [];
    for (let i = 0; i < n; i++) {
      const t = now();
      await new Promise<void>((resolve) => { waiter = resolve; s.write(msg); });
      rtts.push((now() - t) * 1000);
    }
    note(s, side.api);
    rtts.sort((x, y) => x - y);
    return { value: rtts[rtts.length >> 1]!, ops: n };
  };
}

/** 64 MiB in 64 KiB writes on a new connection, until the server has counted it all: MiB/s. */
async function bulkBlock(side: { api: Api; port: number }): Promise<Block> {
  const r = await bulk(side.api, side.port, { bytes: 64 << 20 }, 64 * 1024, false);
  if (!r.verified) throw new Error(`bulk: the server did not count ${r.bytes} bytes`);
  if (side.api === 'smc') modes.add(r.mode);
  return { value: r.mibPerSec, ops: r.bytes / 1048576 };
}

async function main(): Promise<void> {
  let block: Array<() => Promise<Block>>;
  switch (values.kind) {
    case 'setup': block = sides.map((side) => () => setupBlock(side)); break;
    case 'bulk': block = sides.map((side) => () => bulkBlock(side)); break;
    case 'pingpong': {
      const echo = await Promise.all(sides.map(echoConnection));
      block = echo.map((e) => () => e(1000));
      break;
    }
    default: throw new Error(`--kind must be setup, pingpong or bulk, got ${values.kind}`);
  }
  const out = { a: [] as number[], b: [] as number[], cpuA: [] as number[], cpuB: [] as number[] };
  const measured = async (i: 0 | 1) => {
    const c0 = cpuMicros();
    const r = await block[i]!();
    const cpu = (cpuMicros() - c0) / r.ops;
    if (i === 0) { out.a.push(r.value); out.cpuA.push(cpu); } else { out.b.push(r.value); out.cpuB.push(cpu); }
  };
  // Warm-up: both sides' code compiled and their buffers sized before anything counts.
  for (let i = 0; i < 2; i++) { await block[0]!(); await block[1]!(); }
  for (let p = 0; p < PAIRS; p++) {
    if (p % 2 === 0) { await measured(0); await measured(1); } else { await measured(1); await measured(0); }
  }
  console.log(JSON.stringify({ kind: values.kind, ...out, modes: [...modes] }));
  process.exit(0); // the pingpong connections stay open otherwise
}

await main();
