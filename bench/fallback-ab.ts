// The client of bench/fallback: one process that alternates, block by block, between two
// ways of reaching a plain peer, and prints each block's figure as JSON. Both ways share
// this process's CPU, JIT state, heap and server, so their difference is what the SMC code
// adds and not which process the scheduler favoured (two processes doing the same thing
// come out several percent apart on this kind of machine).
//
//   node dist/bench/fallback-ab.js --kind setup|pingpong|bulk --a smc|net --b smc|net
//        --port-a N --port-b N [--pairs N]
//
// --a/--b: the client API of each side (softrdma/smc or node:net); --port-a/--port-b: the
// server each side talks to (the same port for a client-side comparison, the SMC and the
// plain listener of one server process for a server-side one). Blocks run A B, B A, A B...,
// so neither side always goes first.

import net from 'node:net';
import { parseArgs } from 'node:util';
import * as smc from '../src/smc/index.js';

const { values } = parseArgs({
  options: {
    kind: { type: 'string' }, a: { type: 'string' }, b: { type: 'string' },
    'port-a': { type: 'string' }, 'port-b': { type: 'string' }, pairs: { type: 'string', default: '16' },
  },
});

type Api = 'smc' | 'net';
const apiOf = (v: string | undefined): Api => {
  if (v !== 'smc' && v !== 'net') throw new Error(`--a/--b must be smc or net, got ${v}`);
  return v;
};
const sides = [
  { api: apiOf(values.a), port: Number(values['port-a']) },
  { api: apiOf(values.b), port: Number(values['port-b']) },
];
const PAIRS = Number(values.pairs);

function connect(side: { api: Api; port: number }): net.Socket {
  const s = side.api === 'smc' ? smc.connect({ port: side.port, host: '127.0.0.1' }) : net.connect(side.port, '127.0.0.1');
  s.setNoDelay(true);
  return s;
}

const now = () => performance.now();

/** How side A's SMC sockets settled (they must have fallen back to TCP for the figures to mean anything). */
const modes = new Set<string>();
function note(s: net.Socket, api: Api): void {
  if (api === 'smc') modes.add(smc.getSmcInfo(s).mode);
}

/** Connect, 14-byte echo, close, 200 times: connections per second. */
async function setupBlock(side: { api: Api; port: number }): Promise<number> {
  const N = 200;
  const msg = Buffer.from('E0123456789abc');
  const t0 = now();
  for (let i = 0; i < N; i++) {
    await new Promise<void>((resolve, reject) => {
      const s = connect(side);
      let got = 0;
      s.on('error', reject);
      s.on('connect', () => s.write(msg));
      s.on('data', (d: Buffer) => { got += d.length; if (got >= msg.length - 1) { note(s, side.api); s.end(); } });
      s.on('close', () => resolve());
    });
  }
  return N / ((now() - t0) / 1000);
}

/** An echo connection kept for the whole run, and a block of 1000 14-byte round trips on it: the median in microseconds. */
async function echoConnection(side: { api: Api; port: number }): Promise<(n: number) => Promise<number>> {
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
    return rtts[rtts.length >> 1]!;
  };
}

/** 64 MiB in 64 KiB writes on a new connection, until the server has counted it all: MiB/s. */
async function bulkBlock(side: { api: Api; port: number }): Promise<number> {
  const BYTES = 64 << 20;
  const chunk = Buffer.alloc(64 * 1024, 0x5a);
  const s = connect(side);
  const t0 = now();
  const reply: Buffer[] = [];
  const done = new Promise<void>((resolve, reject) => { s.on('data', (d: Buffer) => reply.push(d)); s.on('end', resolve); s.on('error', reject); });
  s.write('b');
  for (let sent = 0; sent < BYTES; sent += chunk.length) {
    if (!s.write(chunk)) await new Promise((r) => s.once('drain', r));
  }
  s.end();
  await done;
  note(s, side.api);
  const r = Buffer.concat(reply);
  if (r.length !== 40 || r.readBigUInt64BE(0) !== BigInt(BYTES)) throw new Error(`bulk: the server counted ${r.length === 40 ? r.readBigUInt64BE(0) : '?'} bytes, not ${BYTES}`);
  return BYTES / 1048576 / ((now() - t0) / 1000);
}

async function main(): Promise<void> {
  let block: Array<() => Promise<number>>;
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
  // Warm-up: both sides' code compiled and their buffers sized before anything counts.
  for (let i = 0; i < 2; i++) { await block[0]!(); await block[1]!(); }
  const a: number[] = [];
  const b: number[] = [];
  for (let p = 0; p < PAIRS; p++) {
    if (p % 2 === 0) { a.push(await block[0]!()); b.push(await block[1]!()); } else { b.push(await block[1]!()); a.push(await block[0]!()); }
  }
  console.log(JSON.stringify({ kind: values.kind, a, b, modes: [...modes] }));
  process.exit(0); // the pingpong connections stay open otherwise
}

await main();
