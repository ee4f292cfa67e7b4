// A peer for SMC demonstrations and benchmarks, run as its own process:
//   serve  --api smc|net [--http] [--and-net]   prints {"port":N} and serves until stdin
//          closes; --and-net: also a plain node:net listener, {"netPort":M}
//   client --api smc|net --test bulk|pingpong|shortconn|http --port N [...]
//          pingpong: --iters N [--warmup-iters W] (default: min(1000, N/10) round trips first, not counted)
//          bulk: --bytes N | --seconds S, [--warmup N | --warmup-seconds S] [--size N] [--no-verify]
//          recv: the server sends (writes of --size) and this client reads, through 'data'
//                events or, with --onread N, node:net's onread into one N-byte buffer;
//                --bytes N | --seconds S, [--warmup N | --warmup-seconds S]
//          shortconn: --seconds S [--warmup-seconds S]
//          http: --seconds S [--warmup-seconds S] [--concurrency N] (node:http keep-alive)
// Server protocol: the first byte picks the service. 'B': count bytes until end, then reply
// with the count (8 bytes, big endian) and a sha256 of the data. 'E': echo. 'R' + count (u64
// BE, 0: until the client closes) + write size (u32 BE): the server sends, then ends.
// With --http the server is node:http (run it under --import softrdma/smc/auto for SMC).

import { createHash, randomBytes } from 'node:crypto';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import * as smc from '../smc/index.js';
import { pollerContention } from '../smc/poller.js';
import { SmcrLinkGroup } from '../smc/smcr/lgr.js';
import { getDeviceList } from '../verbs/api.js';
import { rxeOf } from '../index.js';

export type Api = 'smc' | 'net';

/** --smc-buffer: the DMB size for this process's SMC sockets (default: the library's). */
let smcOpts: smc.SmcSocketOptions = {};

type Extra = Partial<net.TcpSocketConnectOpts>;

function api(name: Api): { createServer: typeof net.createServer; connect: (port: number, host: string, extra?: Extra) => net.Socket } {
  if (name === 'smc') {
    return {
      createServer: ((l: (s: net.Socket) => void) => smc.createServer(smcOpts, l)) as unknown as typeof net.createServer,
      connect: (port, host, extra) => smc.connect({ port, host, ...smcOpts, ...extra }),
    };
  }
  return { createServer: net.createServer, connect: (p, h, extra) => (extra ? net.connect({ port: p, host: h, ...extra }) : net.connect(p, h)) };
}

/** The service a connection asks for with its first byte (see the top of this file). */
function service(sock: net.Socket): void {
  sock.on('error', () => {});
  // As a careful server does for request/response traffic (Nagle would hold a reply behind an
  // unacknowledged one); the benchmarks' node:net baselines get it too.
  sock.setNoDelay(true);
  sock.once('data', function first(this: net.Socket, chunk: Buffer) {
    const kind = chunk[0];
    const rest = chunk.subarray(1);
    if (kind === 0x45 /* E */) {
      if (rest.length) sock.write(rest);
      sock.pipe(sock);
      return;
    }
    if (kind === 0x52 /* R */ && rest.length >= 12) {
      void send(sock, Number(rest.readBigUInt64BE(0)), rest.readUInt32BE(8));
      return;
    }
    let n = rest.length;
    const hashing = kind !== 0x62 /* b: count only, for benchmarks */;
    const h = createHash('sha256').update(rest);
    sock.on('data', hashing ? (d: Buffer) => { n += d.length; h.update(d); } : (d: Buffer) => { n += d.length; });
    sock.on('end', () => {
      const out = Buffer.alloc(8);
      out.writeBigUInt64BE(BigInt(n));
      sock.end(Buffer.concat([out, h.digest()]));
    });
  });
}

/** 'R': write `size`-byte chunks until `count` bytes are sent (0: until the peer goes), then end. */
async function send(sock: net.Socket, count: number, size: number): Promise<void> {
  const chunk = randomBytes(Math.max(1, Math.min(size, 16 << 20)));
  let closed = false;
  let wake: () => void = () => {};
  sock.once('close', () => { closed = true; wake(); });
  sock.on('drain', () => wake());
  sock.resume(); // the client sends nothing more; a paused reader would never see its end
  let sent = 0;
  while (!closed && (count === 0 || sent < count)) {
    const c = count === 0 || count - sent >= chunk.length ? chunk : chunk.subarray(0, count - sent);
    sent += c.length;
    if (!sock.write(c)) await new Promise<void>((r) => { wake = r; });
  }
  if (!closed) sock.end();
}

export interface RecvResult { test: 'recv'; api: Api; mode: string; onread: number; bytes: number; seconds: number; mibPerSec: number; verified: boolean }

/**
 * The server sends (service 'R'), this client reads: through 'data' events, or with onread
 * into one `onread`-byte buffer. The rate counts from the request to the last byte (by bytes)
 * or to the end of the time (by seconds, then the connection is destroyed).
 */
export async function recv(a: Api, port: number, amount: BulkAmount, size: number, onread: number): Promise<RecvResult> {
  let got = 0;
  let finish: () => void = () => {};
  const count = 'bytes' in amount ? amount.bytes : 0;
  const counted = (n: number): void => { got += n; if (got === count) finish(); };
  const extra: Extra | undefined = onread > 0 ? { onread: { buffer: Buffer.allocUnsafe(onread), callback: (n: number) => { counted(n); return true; } } } : undefined;
  const s = api(a).connect(port, HOST, extra);
  s.setNoDelay(true);
  s.on('error', () => {});
  if (!extra) s.on('data', (d: Buffer) => counted(d.length));
  await connected(s);
  const req = Buffer.alloc(13);
  req[0] = 0x52;
  req.writeBigUInt64BE(BigInt(count), 1);
  req.writeUInt32BE(size, 9);
  const done = new Promise<void>((resolve) => { finish = resolve; });
  const t0 = process.hrtime.bigint();
  s.write(req);
  if ('seconds' in amount) setTimeout(() => finish(), amount.seconds * 1000);
  await done;
  const secs = Number(process.hrtime.bigint() - t0) / 1e9;
  const bytes = got;
  const mode = smc.getSmcInfo(s).mode;
  s.destroy();
  return { test: 'recv', api: a, mode, onread, bytes, seconds: secs, mibPerSec: bytes / 1048576 / secs, verified: count === 0 || bytes === count };
}

/**
 * --and-net: a second, plain node:net listener with the same service in the same process,
 * so a benchmark can compare the two server sides without two processes' differences.
 */
function serve(apiName: Api, useHttp: boolean, andNet: boolean): void {
  const body = Buffer.from('hello from softrdma\n');
  const server = useHttp
    ? http.createServer((_req, res) => { res.setHeader('content-type', 'text/plain'); res.end(body); })
    : api(apiName).createServer(service);
  const plain = andNet ? net.createServer(service) : undefined;
  const listening = (srv: net.Server) => new Promise<number>((resolve) => srv.listen(0, BIND, () => resolve((srv.address() as net.AddressInfo).port)));
  void Promise.all([listening(server), plain ? listening(plain) : undefined]).then(([port, netPort]) => {
    console.log(JSON.stringify({ port, ...(netPort ? { netPort } : {}), pid: process.pid }));
  });
  process.stdin.resume();
  process.stdin.on('end', () => { server.close(); plain?.close(); process.exit(0); });
}

function connected(s: net.Socket): Promise<void> {
  return new Promise((resolve, reject) => { s.once('connect', resolve); s.once('error', reject); });
}

export interface BulkResult { test: 'bulk'; api: Api; mode: string; bytes: number; seconds: number; mibPerSec: number; verified: boolean }

/** How much one bulk transfer sends: a byte count, or as much as it can for some seconds. */
export type BulkAmount = { bytes: number } | { seconds: number };

/**
 * Writes of `size` on a new connection, until `amount` is sent and the server has counted
 * (and with verify, hashed) it all. The rate counts from the first write to the server's reply.
 */
export async function bulk(a: Api, port: number, amount: BulkAmount, size: number, verify: boolean): Promise<BulkResult> {
  const s = api(a).connect(port, HOST);
  s.setNoDelay(true);
  await connected(s);
  const chunk = randomBytes(size);
  const h = createHash('sha256');
  const reply: Buffer[] = [];
  const done = new Promise<void>((resolve, reject) => { s.on('data', (d: Buffer) => reply.push(d)); s.on('end', resolve); s.on('error', reject); });
  const t0 = process.hrtime.bigint();
  s.write(verify ? 'B' : 'b');
  let sent = 0;
  const bytes = 'bytes' in amount ? amount.bytes : Infinity;
  const until = 'seconds' in amount ? performance.now() + amount.seconds * 1000 : Infinity;
  while (sent < bytes && (until === Infinity || performance.now() < until)) {
    if (verify) h.update(chunk);
    sent += chunk.length;
    if (!s.write(chunk)) await new Promise((r) => s.once('drain', r));
  }
  s.end();
  await done;
  const secs = Number(process.hrtime.bigint() - t0) / 1e9;
  const r = Buffer.concat(reply);
  const ok = r.length === 40 && r.readBigUInt64BE(0) === BigInt(sent) && (!verify || r.subarray(8).equals(h.digest()));
  return { test: 'bulk', api: a, mode: smc.getSmcInfo(s).mode, bytes: sent, seconds: secs, mibPerSec: sent / 1048576 / secs, verified: ok };
}

async function pingpong(a: Api, port: number, iters: number, size: number, warm = Math.min(1000, iters / 10)): Promise<object> {
  const s = api(a).connect(port, HOST);
  s.setNoDelay(true);
  await connected(s);
  s.write('E');
  const msg = Buffer.alloc(size, 0x61);
  const samples: number[] = [];
  let got = 0;
  let t = 0n;
  await new Promise<void>((resolve, reject) => {
    s.on('error', reject);
    let i = 0;
    s.on('data', (d: Buffer) => {
      got += d.length;
      while (got >= size) {
        got -= size;
        const now = process.hrtime.bigint();
        if (i >= warm) samples.push(Number(now - t) / 1000);
        if (++i >= iters + warm) { resolve(); return; }
        t = process.hrtime.bigint();
        s.write(msg);
      }
    });
    t = process.hrtime.bigint();
    s.write(msg);
  });
  const mode = smc.getSmcInfo(s).mode;
  s.destroy();
  samples.sort((x, y) => x - y);
  const mean = samples.reduce((x, y) => x + y, 0) / samples.length;
  return { test: 'pingpong', api: a, mode, size, iters: samples.length, meanUs: mean, medianUs: samples[samples.length >> 1], p99Us: samples[Math.floor(samples.length * 0.99)] };
}

const ECHO_REQUEST = Buffer.from('E0123456789abc');

/** One short-lived connection: connect, a 13-byte echo, close; resolves with how it settled. */
export function shortConnection(a: Api, port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = api(a).connect(port, HOST);
    s.setNoDelay(true);
    let got = 0;
    let mode = '';
    s.on('error', reject);
    s.on('connect', () => s.write(ECHO_REQUEST));
    s.on('data', (d: Buffer) => { got += d.length; if (got >= ECHO_REQUEST.length - 1) { mode = smc.getSmcInfo(s).mode; s.end(); } });
    s.on('close', () => resolve(mode));
  });
}

async function shortconn(a: Api, port: number, seconds: number): Promise<object> {
  let n = 0;
  const modes = new Set<string>();
  const t0 = process.hrtime.bigint();
  const end = t0 + BigInt(Math.round(seconds * 1e9));
  while (process.hrtime.bigint() < end) {
    modes.add(await shortConnection(a, port));
    n++;
  }
  const secs = Number(process.hrtime.bigint() - t0) / 1e9;
  return { test: 'shortconn', api: a, modes: [...modes], connections: n, seconds: secs, perSec: n / secs };
}

/** This process's SMC-R data path so far: its rxe devices' packets, its links' WRITEs, SENDs and receives (bench/smcr-vs-tcp too). */
export function smcrPath(): Record<string, number> {
  // sendCalls: sendmmsg system calls; recvBatches: recvmmsg reads that delivered, from the
  // event loop or a poller's spin.
  const c = { pktsOut: 0, pktsIn: 0, sendCalls: 0, recvBatches: 0, writes: 0, sends: 0, recvs: 0 };
  for (const d of getDeviceList()) {
    if (d.driver !== 'rxe') continue;
    const { counters } = rxeOf(d);
    c.pktsOut += counters.sent_pkts;
    c.pktsIn += counters.rcvd_pkts;
    c.recvBatches += counters.recvmmsg_batches;
    c.sendCalls += counters.sendmmsg_calls;
  }
  for (const g of SmcrLinkGroup.list()) for (const l of g.links) { c.writes += l.stats.writes; c.sends += l.stats.sends; c.recvs += l.stats.recvs; }
  return c;
}

/** (after - before) / units for each counter, rounded to hundredths. */
export function perUnit(before: Record<string, number>, after: Record<string, number>, units: number): Record<string, number> {
  return Object.fromEntries(Object.keys(before).map((k) => [k, Math.round(((after[k]! - before[k]!) / units) * 100) / 100]));
}

async function httpLoad(port: number, seconds: number, concurrency: number, warmSeconds: number): Promise<object> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: concurrency });
  let n = 0;
  const modes = new Set<string>();
  // Each keep-alive connection's mode once (getSmcInfo builds a diagnostic record: not per request).
  const seen = new WeakSet<net.Socket>();
  const one = (): Promise<void> => new Promise((resolve, reject) => {
    const req = http.get({ host: HOST, port, path: '/', agent }, (res) => {
      if (!seen.has(res.socket)) { seen.add(res.socket); modes.add(smc.getSmcInfo(res.socket).mode); }
      res.on('data', () => {});
      res.on('end', () => { n++; resolve(); });
    });
    req.on('error', reject);
  });
  const load = async (secs: number): Promise<void> => {
    const end = process.hrtime.bigint() + BigInt(Math.round(secs * 1e9));
    await Promise.all(Array.from({ length: concurrency }, async () => { while (process.hrtime.bigint() < end) await one(); }));
  };
  // --warmup-seconds: the same load first, not counted, on the same keep-alive connections:
  // the figure is then the steady state (V8 has compiled both ends' request paths; SMC's link
  // group or DMBs are set up), as bulk's and shortconn's warm-ups make theirs.
  if (warmSeconds > 0) await load(warmSeconds);
  n = 0;
  const t0 = process.hrtime.bigint();
  const c0 = smcrPath();
  await load(seconds);
  const secs = Number(process.hrtime.bigint() - t0) / 1e9;
  const c1 = smcrPath();
  agent.destroy();
  // Per request, where SMC-R carried them (rounded to hundredths).
  const perRequest = c1.pktsOut > c0.pktsOut ? perUnit(c0, c1, Math.max(1, n)) : undefined;
  return { test: 'http', modes: [...modes], requests: n, seconds: secs, perSec: n / secs, ...(perRequest ? { perRequest } : {}) };
}

/** Where clients connect and servers listen (--host, --bind): loopback unless told, as SMC-D's benchmarks run; bench/smcr-vs-tcp gives veth addresses. */
let HOST = '127.0.0.1';
let BIND = '127.0.0.1';

const USAGE = 'usage: smc-peer.js serve --api smc|net [--http] [--and-net] [--bind ADDR]\n       smc-peer.js --api smc|net --test bulk|recv|pingpong|shortconn|http --port N [--host ADDR] [options: see the head of src/tools/smc-peer.ts]';

function usageError(message: string): Error {
  return Object.assign(new Error(message), { code: 'ERR_SMC_PEER_USAGE' });
}

export async function smcPeer(argv: string[]): Promise<void> {
  const { values, positionals } = parseArgs({
    args: argv, allowPositionals: true,
    options: {
      api: { type: 'string', default: 'smc' }, http: { type: 'boolean' }, 'and-net': { type: 'boolean' }, test: { type: 'string' }, port: { type: 'string' },
      bytes: { type: 'string' }, size: { type: 'string' }, iters: { type: 'string', default: '20000' },
      seconds: { type: 'string' }, onread: { type: 'string', default: '0' }, concurrency: { type: 'string', default: '8' }, 'no-verify': { type: 'boolean' },
      'smc-buffer': { type: 'string' }, host: { type: 'string' }, bind: { type: 'string' }, warmup: { type: 'string', default: '0' }, 'warmup-seconds': { type: 'string', default: '0' },
      'warmup-iters': { type: 'string' },
    },
  });
  const a = values.api as Api;
  if (a !== 'smc' && a !== 'net') throw usageError(`--api must be smc or net, got ${a}`);
  if (values.host !== undefined) HOST = values.host;
  if (values.bind !== undefined) BIND = values.bind;
  if (values['smc-buffer'] !== undefined) smcOpts = { smcBufferSize: Number(values['smc-buffer']) };
  if (positionals[0] === 'serve') return serve(a, !!values.http, !!values['and-net']);
  const port = Number(values.port);
  let r: object;
  switch (values.test) {
    case 'bulk': {
      // --warmup/--warmup-seconds: a first transfer on its own connection, not measured, so the
      // figure is the steady state of this process and not the JIT compiling its way through
      // its first GiB. A measurement by time (--seconds) is as long on a fast path as on a slow
      // one, so neither is judged on a few hundred milliseconds.
      if (values.seconds !== undefined && values.bytes !== undefined) throw new Error('bulk takes --bytes or --seconds, not both');
      const amount: BulkAmount = values.seconds !== undefined ? { seconds: Number(values.seconds) } : { bytes: Number(values.bytes ?? 256 << 20) };
      const size = Number(values.size ?? 65536);
      const warmBytes = Number(values.warmup);
      const warmSecs = Number(values['warmup-seconds']);
      if (warmBytes > 0) await bulk(a, port, { bytes: warmBytes }, size, false);
      if (warmSecs > 0) await bulk(a, port, { seconds: warmSecs }, size, false);
      r = await bulk(a, port, amount, size, !values['no-verify']);
      break;
    }
    case 'recv': {
      if (values.seconds !== undefined && values.bytes !== undefined) throw new Error('recv takes --bytes or --seconds, not both');
      const amount: BulkAmount = values.seconds !== undefined ? { seconds: Number(values.seconds) } : { bytes: Number(values.bytes ?? 256 << 20) };
      const size = Number(values.size ?? 65536);
      const onread = Number(values.onread);
      const warmBytes = Number(values.warmup);
      const warmSecs = Number(values['warmup-seconds']);
      if (warmBytes > 0) await recv(a, port, { bytes: warmBytes }, size, onread);
      if (warmSecs > 0) await recv(a, port, { seconds: warmSecs }, size, onread);
      r = await recv(a, port, amount, size, onread);
      break;
    }
    case 'pingpong': {
      const w = values['warmup-iters'];
      if (w !== undefined && !/^\d+$/.test(w)) throw usageError(`--warmup-iters must be a whole number, got ${w}`);
      r = await pingpong(a, port, Number(values.iters), Number(values.size ?? 14), w === undefined ? undefined : Number(w));
      break;
    }
    case 'shortconn': {
      // --warmup-seconds: connections first made and not counted, as bulk's --warmup: the
      // figure is then the steady state (JIT, the DMB pool and the peer's mappings warmed up).
      const warm = Number(values['warmup-seconds']);
      if (warm > 0) await shortconn(a, port, warm);
      r = await shortconn(a, port, Number(values.seconds ?? 3));
      break;
    }
    case 'http': r = await httpLoad(port, Number(values.seconds ?? 3), Number(values.concurrency), Number(values['warmup-seconds'])); break;
    default: throw usageError(`unknown --test ${values.test}`);
  }
  // How often this client's poller saw busy CPUs and stopped spinning (src/smc/poller.ts).
  console.log(JSON.stringify({ ...r, pollerContended: pollerContention().entered }));
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  smcPeer(process.argv.slice(2)).catch((e: unknown) => {
    // A usage mistake is a message and the usage, not a stack (the options are in the header above).
    const code = (e as { code?: string }).code;
    if (typeof code === 'string' && (code.startsWith('ERR_PARSE_ARGS') || code === 'ERR_SMC_PEER_USAGE')) {
      console.error(`smc-peer: ${(e as Error).message.split('. ')[0]}\n${USAGE}`);
      process.exit(2);
    }
    console.error(e);
    process.exit(1);
  });
}
