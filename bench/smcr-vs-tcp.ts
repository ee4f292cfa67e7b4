// SMC-R (softrdma/smc with `smcr`, src/smc/smcr/) against node:net between two network
// namespaces joined by a veth pair, as test/smc/smcr.test.ts sets them up: each namespace has
// one process (this file run with --role server or --role client) with its own rxe device on
// its address. Same run, paired: each run measures SMC-R, TCP and the reference back to back
// (the order alternates between runs). Medians of --runs runs (default 3); --json prints the
// same as one JSON document. Needs root (network namespaces); skipped, saying so, otherwise.
//
//   bulk       64 KiB writes one way (client to server) for --seconds (default 3) on a
//              connection after 1 s of the same on another connection not counted; the rate is
//              the bytes the server counted over the time from the first write until the server's
//              count came back after the client's end()                 target SMC-R/perftest >= 0.8
//              The baseline is `softrdma perftest write_bw -s 65536 -D SECONDS+2 -f 1` (the
//              SECONDS after 1 s of warm-up, as the SMC-R side's) between the
//              same addresses (two more rxe devices on UDP 4793): rxe's RDMA WRITE path alone,
//              which the issue names as the reference. TCP's bulk over the same veth is printed
//              beside it (no target).
//   bulk-cold  the same from a fresh client process: its first connection's --seconds, no
//              connection before it, against node:net's the same way (no target: what a
//              short-lived program gets; V8's warm-up included, the handshake and the link
//              group's first contact not: the clock starts once the connection is up)
//   pingpong   14-byte round trip, median of --iters (default 5000) after 500 not counted,
//              one connection                                            target SMC-R/TCP <= 0.8
//   pingpong-cold  the median of a fresh client process's first 1000 round trips, none left
//              out, against node:net's the same way (no target; as bulk-cold, from the
//              connection up)
//              Printed beside it, the floor (udp-floor.ts): raw UDP with the same datagrams
//              each way, busy-polled, no protocol work: what no user-space SMC-R can beat here.
//   http       node:http keep-alive requests/s, 8 in flight, for --seconds after 2 s of the
//              same load not counted (steady state): both ends under
//              --import softrdma/smc/auto with no device of their own (SMC-R on by default
//              brings them up), against both ends plain node:http (src/tools/smc-peer.ts);
//              the client waits up to 1 s for discovery's first answer (SOFTRDMA_SMCR_DISCOVERY_WAIT_MS)
//              so that its 8 connections are SMC-R      target SMC-R/TCP >= 1.0
//   http-cold  the same from a fresh client process, counted from its first request, as a
//              user's program starts: discovery, the link group's first contact and V8's
//              warm-up included (no target: printed beside the steady row)
//   shortconn  connect, 14-byte echo, close, per second, for --seconds after 5 s of the same
//              not counted (steady state: the link group up and reused, and V8 done compiling:
//              a connection runs each of SMC-R's handshake functions once or twice, so the
//              optimizing compiler reaches them only after some thousands of connections; with
//              1 s of warm-up a client read 417 conn/s, with 4 s 694, against the same server in
//              the same minute, 2026-12-07), softrdma/smc with SMC-R by default and the learned
//              handshake control off (SOFTRDMA_SMC_LEARN=0), against node:net to node:net
//              (tcp_tw_reuse in the client's namespace), warmed up the same way
//                                                                       target SMC-R/TCP >= 0.8
//              and again with the learned handshake control on (its default), which sends
//              a peer's short connections to TCP after 8 of them: mostly TCP, so no target
//              (the is for SMC-R connections, the row above); printed for what a
//              default client gets
//   shortconn-cold  the same from a fresh client process, counted from its first connection for
//              --seconds, as a user's program starts, but for discovery's wait (no target:
//              printed beside the steady row)
// Every SMC-R client waits up to 1 s for discovery's first answer (SOFTRDMA_SMCR_DISCOVERY_WAIT_MS;
// the default is about one round trip, at most 20 ms before any answer), so that its connections
// are SMC-R and the rows measure SMC-R; the servers are started once for all runs (a fresh
// client each run, a warm server after the first).

import type { ChildProcess } from 'node:child_process';
import net from 'node:net';
import os from 'node:os';
import { execFileSync, spawn as spawnChild } from 'node:child_process';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { formatTable } from '../src/tools/table.js';
import { crc32Implementation, describeCrc32 } from '../src/sys/crc32.js';
import { benchOptions, benchRuntimeDir } from './options.js';
import { median, verdict } from './stats.js';
import { deleteNamespaces, ip, setUpVethPair } from '../test/helpers/netns.js';
import { SMCR_MESSAGE_DATAGRAMS, floorClient, floorServer } from './udp-floor.js';

const USAGE = 'usage: node dist/bench/smcr-vs-tcp.js [--runs N] [--json] [--seconds S] [--iters N] [--only bulk,bulk-cold,pingpong,pingpong-cold,http,http-cold,shortconn,shortconn-cold,learned]  (as root: it makes two network namespaces)';
const { runs: RUNS, json, strings } = benchOptions(USAGE, {
  seconds: '3', iters: '5000', only: undefined, role: undefined, bind: undefined, peer: undefined, test: undefined, api: undefined, port: undefined, cold: '0',
});
const SECONDS = Number(strings.seconds);
const TESTS = ['bulk', 'bulk-cold', 'pingpong', 'pingpong-cold', 'http', 'http-cold', 'shortconn', 'shortconn-cold', 'learned'];
const ONLY = strings.only === undefined ? TESTS : strings.only.split(',');
for (const t of ONLY) if (!TESTS.includes(t)) { console.error(`--only: unknown test ${t} (${TESTS.join(', ')})\n${USAGE}`); process.exit(2); }
const ITERS = Number(strings.iters);
/** The short-connection rows' warm-up (s): see shortconn at the head of this file. */
const SHORT_WARMUP = 5;
const SELF = fileURLToPath(import.meta.url);
const CLI = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const PEER = fileURLToPath(new URL('../src/tools/smc-peer.js', import.meta.url));
const AUTO = pathToFileURL(fileURLToPath(new URL('../src/smc/auto.js', import.meta.url))).href;

const PORT_SMCR = 7301, PORT_TCP = 7302, PORT_PERF = 18601, UDP_PERF = 4793, PORT_FLOOR = 7303;
const CHUNK = 64 * 1024;
const PING = 14;

const out = (o: Record<string, unknown>) => process.stdout.write(`${JSON.stringify(o)}\n`);

// --- the two roles, each in its own namespace --------------------------------------------

/** The server: an SMC-R listener and a node:net listener; each connection echoes (ping-pong) or counts (bulk). */
async function serverRole(bind: string): Promise<void> {
  const { createRxeDevice } = await import('../src/index.js');
  const smc = await import('../src/smc/index.js');
  const device = await createRxeDevice({ address: bind, port: 4791, name: 'rxe_bs' });
  device.unref();
  process.on('SIGTERM', () => process.exit(0)); // (so that --cpu-prof writes its profile)
  // The first byte says what the connection is: 'p' ping-pong (echo), 'b' bulk (count until end, reply the count).
  const handle = (sock: net.Socket) => {
    let kind = '';
    let n = 0;
    sock.on('error', () => {});
    sock.setNoDelay(true);
    sock.on('data', (d: Buffer) => {
      if (!kind) { kind = String.fromCharCode(d[0]!); d = d.subarray(1); }
      if (kind === 'p') sock.write(d);
      else n += d.length;
    });
    sock.on('end', () => { sock.end(`${n}\n`); });
  };
  const s1 = smc.createServer({ smcr: true }, handle as never);
  const s2 = net.createServer(handle);
  let up = 0;
  for (const [s, p] of [[s1, PORT_SMCR], [s2, PORT_TCP]] as const) s.listen(p, bind, () => { if (++up === 2) out({ listening: true }); });
}

/** cold: a fresh process's first figures (no warm-up connection, no round trips left out). */
async function clientRole(bind: string, peer: string, test: string, api: string, cold: boolean): Promise<void> {
  const { createRxeDevice } = await import('../src/index.js');
  const smc = await import('../src/smc/index.js');
  // The client's side of the data path, per MiB (bulk) or per round trip (ping-pong): its rxe
  // device's packets, the links' WRITEs, SENDs (CDC) and receives.
  const { smcrPath: snap, perUnit: per } = await import('../src/tools/smc-peer.js');
  const device = await createRxeDevice({ address: bind, port: 4791, name: 'rxe_bc' });
  device.unref();
  const connect = (): Promise<net.Socket> => new Promise((resolve, reject) => {
    const sock: net.Socket = api === 'smcr'
      ? smc.connect({ host: peer, port: PORT_SMCR, localAddress: bind, smcr: { device } }) as unknown as net.Socket
      : net.connect({ host: peer, port: PORT_TCP, localAddress: bind });
    sock.setNoDelay(true);
    sock.once('error', reject);
    // SMC-R: the handshake settles after TCP's connect; the 'smc' event says how.
    sock.once(api === 'smcr' ? 'smc' : 'connect', () => resolve(sock));
  });
  const mode = (sock: net.Socket) => {
    if (api !== 'smcr') return 'TCP';
    const info = smc.getSmcInfo(sock as never);
    return info.mode === 'TCP' ? `TCP (${String(info.fallbackReason)})` : info.mode;
  };
  if (test === 'bulk') {
    const chunk = Buffer.alloc(CHUNK, 0x5a);
    const run = async (ms: number) => {
      const sock = await connect();
      const m = mode(sock);
      let reply = '';
      sock.setEncoding('utf8');
      sock.on('data', (d: string) => { reply += d; });
      const done = new Promise<void>((resolve) => sock.on('end', resolve));
      const t0 = performance.now();
      sock.write('b');
      await new Promise<void>((resolve) => {
        const pump = () => {
          while (performance.now() - t0 < ms) { if (!sock.write(chunk)) return; }
          resolve();
        };
        sock.on('drain', pump);
        pump();
      });
      const conn = (await import('../src/smc/state.js')).smcState(sock as never)?.conn as { writeStalls?: number } | undefined;
      const stalls = conn?.writeStalls ?? 0;
      sock.end();
      await done;
      const s = (performance.now() - t0) / 1000;
      sock.destroy();
      return { bytes: Number(reply.trim()), s, mode: m, stalls };
    };
    if (!cold) await run(1000);
    const c0 = snap();
    const r = await run(SECONDS * 1000);
    out({ result: true, mibPerSec: r.bytes / 2 ** 20 / r.s, bytes: r.bytes, mode: r.mode, perMiB: { ...per(c0, snap(), r.bytes / 2 ** 20), writeStalls: Math.round((r.stalls / (r.bytes / 2 ** 20)) * 100) / 100 } });
  } else {
    const sock = await connect();
    const m = mode(sock);
    const msg = Buffer.alloc(PING, 0x61);
    const times: number[] = [];
    const warm = cold ? 0 : 500, iters = cold ? 1000 : ITERS;
    let got = 0;
    let t0 = 0;
    let i = 0;
    const c0 = snap();
    await new Promise<void>((resolve) => {
      sock.on('data', (d: Buffer) => {
        got += d.length;
        if (got < PING) return;
        got -= PING;
        if (i++ >= warm) times.push(performance.now() - t0);
        if (times.length >= iters) { resolve(); return; }
        t0 = performance.now();
        sock.write(msg);
      });
      sock.write('p');
      t0 = performance.now();
      sock.write(msg);
    });
    sock.destroy();
    const { pollerContention } = await import('../src/smc/poller.js');
    out({ result: true, medianUs: median(times) * 1000, mode: m, perRoundTrip: per(c0, snap(), iters + warm), busyCpuPeriods: pollerContention().entered });
  }
  process.exit(0);
}

if (strings.role === 'server') {
  await serverRole(strings.bind!);
} else if (strings.role === 'floor-server') {
  await floorServer(strings.bind!, PORT_FLOOR, strings.peer!, PORT_FLOOR, () => out({ listening: true }));
  process.exit(0);
} else if (strings.role === 'floor-client') {
  out({ result: true, medianUs: await floorClient(strings.bind!, PORT_FLOOR, strings.peer!, PORT_FLOOR, ITERS) ?? null });
  process.exit(0);
} else if (strings.role === 'client') {
  await clientRole(strings.bind!, strings.peer!, strings.test!, strings.api!, strings.cold === '1');
} else {
  await main();
}

// --- the driver ----------------------------------------------------------------------------

async function main(): Promise<void> {
  const tag = `sb${process.pid % 100000}`;
  const NS_A = `${tag}a`, NS_B = `${tag}b`;
  const ADDR_A = '10.233.9.1', ADDR_B = '10.233.9.2';
  // The http and short-connection servers are processes of their own, each bringing up its own
  // rxe device (UDP 4791 of its address): one address each.
  const ADDR_HTTP = '10.233.9.3', ADDR_SHORT = '10.233.9.4';
  const tearDown = () => deleteNamespaces(NS_A, NS_B);
  const why = setUpVethPair({
    tag, nsA: NS_A, nsB: NS_B, addrA: ADDR_A, addrB: ADDR_B,
    extra: () => {
      for (const a of [ADDR_HTTP, ADDR_SHORT]) ip('-n', NS_A, 'addr', 'add', `${a}/24`, 'dev', `${tag}va`);
      // Short connections leave the client's ports in TIME_WAIT for 60 s (veth is not loopback,
      // where Linux reuses them by default): some 12,000 connections a minute (--only shortconn)
      // used up the ephemeral range and node:net fell to ~300 conn/s. Both sides connect over
      // TCP, so both get the reuse.
      execFileSync('ip', ['netns', 'exec', NS_B, 'sysctl', '-qw', 'net.ipv4.tcp_tw_reuse=1']);
    },
  });
  if (why) {
    console.log(`bench/smcr-vs-tcp: skipped: ${why}${why.startsWith('needs root') ? ' (run it with sudo)' : ''}`);
    return;
  }
  const env = { ...process.env, SOFTRDMA_RUNTIME_DIR: benchRuntimeDir(), SOFTRDMA_SMC_LEARN: '0' };
  const children: ChildProcess[] = [];
  const inNs = (ns: string, args: string[], extraEnv: Record<string, string> = {}, stdin: 'ignore' | 'pipe' = 'ignore') => {
    // SMCR_BENCH_PROF=DIR: a CPU profile of every process (node --cpu-prof), for the data path's profile.
    const prof = process.env.SMCR_BENCH_PROF ? ['--cpu-prof', '--cpu-prof-dir', process.env.SMCR_BENCH_PROF] : [];
    const c = spawnChild('ip', ['netns', 'exec', ns, process.execPath, ...prof, ...args], { env: { ...env, ...extraEnv }, stdio: [stdin, 'pipe', 'pipe'] });
    children.push(c);
    let err = '';
    c.stderr!.on('data', (d: Buffer) => { err = (err + d.toString()).slice(-2000); });
    c.on('exit', (code) => { if (code) process.stderr.write(err); });
    return c;
  };
  /** Run a child to its end and return the last JSON line that has `key`. */
  const result = (c: ChildProcess, key: string, ms = 120_000): Promise<Record<string, unknown>> => new Promise((resolve, reject) => {
    let text = '';
    c.stdout!.setEncoding('utf8');
    c.stdout!.on('data', (d: string) => { text += d; });
    const timer = setTimeout(() => { c.kill('SIGKILL'); reject(new Error(`no result within ${ms} ms`)); }, ms);
    c.on('close', () => {
      clearTimeout(timer);
      const line = text.split('\n').reverse().map((l) => { try { return JSON.parse(l) as Record<string, unknown>; } catch { return undefined; } }).find((o) => o && key in o);
      if (line) resolve(line); else reject(new Error(`no result: ${text.slice(-500)}`));
    });
  });
  // Each client is a new process: its first connection asks discovery, which on a busy machine
  // can take longer than the default wait (at most 20 ms before any answer), and the
  // connection then went TCP and its run was counted as SMC-R's (seen: a ping-pong "SMC-R" run
  // at 47 us). Wait up to 1 s for the answer, as the http and short-connection clients do.
  const client = (test: string, api: string, cold = false) => result(inNs(NS_B, [SELF, '--role', 'client', '--bind', ADDR_B, '--peer', ADDR_A, '--test', test, '--api', api, '--seconds', String(SECONDS), '--iters', String(ITERS), '--cold', cold ? '1' : '0'],
    { SOFTRDMA_SMCR_DISCOVERY_WAIT_MS: '1000' }), 'result');
  const perftest = async (): Promise<number> => {
    // The same warm-up as the SMC-R side's (1 s not counted): -D SECONDS+2 with a 1 s margin at
    // each end counts SECONDS of a warm process (a bare -D 3 has no margin and counts the JIT's
    // warm-up against the baseline).
    const args = ['perftest', 'write_bw', '-s', String(CHUNK), '-D', String(SECONDS + 2), '-f', '1', '--udp-port', String(UDP_PERF), '-p', String(PORT_PERF)];
    const srv = inNs(NS_A, [CLI, ...args, '--bind', ADDR_A, '-d', 'rxe_pa']);
    let srvOut = '';
    srv.stdout!.on('data', (d: Buffer) => { srvOut += d.toString(); });
    // The server listens once it printed its header; retry the client until it connects.
    for (let attempt = 0; ; attempt++) {
      await new Promise((r) => setTimeout(r, 500));
      try {
        const r = await result(inNs(NS_B, [CLI, ...args, '--bind', ADDR_B, '-d', 'rxe_pb', '--json', ADDR_A]), 'BW_average');
        srv.kill();
        return r.BW_average as number;
      } catch (err) {
        if (attempt >= 5) { srv.kill(); throw new Error(`perftest: ${(err as Error).message}; server: ${srvOut.slice(-300)}`); }
      }
    }
  };

  /** The floor under the ping-pong (udp-floor.ts): its server, then its client; the median round trip (us). */
  const floor = async (): Promise<number> => {
    const fs = inNs(NS_A, [SELF, '--role', 'floor-server', '--bind', ADDR_A, '--peer', ADDR_B]);
    await new Promise<void>((resolve, reject) => {
      let text = '';
      fs.stdout!.on('data', (d: Buffer) => { text += d.toString(); if (text.includes('"listening"')) resolve(); });
      fs.on('exit', (code) => reject(new Error(`floor server exited (${code})`)));
    });
    try {
      const r = await result(inNs(NS_B, [SELF, '--role', 'floor-client', '--bind', ADDR_B, '--peer', ADDR_A, '--iters', String(ITERS)]), 'result');
      if (typeof r.medianUs !== 'number') throw new Error('the floor server did not answer');
      return r.medianUs;
    } finally {
      fs.kill('SIGKILL');
    }
  };

  /** A smc-peer server (stdin kept open: it exits when stdin ends); resolves with its ports. */
  const peerServer = (args: string[]): Promise<{ port: number; netPort?: number }> => new Promise((resolve, reject) => {
    const c = inNs(NS_A, args, {}, 'pipe');
    let text = '';
    c.stdout!.on('data', (d: Buffer) => {
      text += d.toString();
      const m = /\{"port".*\}/.exec(text);
      if (m) resolve(JSON.parse(m[0]) as { port: number; netPort?: number });
    });
    c.on('exit', (code) => reject(new Error(`smc-peer server exited (${code})`)));
  });
  /** Wait, with a bound, until a process in NS_A holds UDP 4791 on `addr` (its device is up). */
  const deviceUp = async (addr: string): Promise<void> => {
    const deadline = Date.now() + 10_000;
    while (!execFileSync('ip', ['netns', 'exec', NS_A, 'ss', '-H', '-uln', 'sport = :4791'], { encoding: 'utf8' }).includes(addr)) {
      if (Date.now() > deadline) throw new Error(`no rxe device came up on ${addr}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  };

  const srv = inNs(NS_A, [SELF, '--role', 'server', '--bind', ADDR_A]);
  try {
    await new Promise<void>((resolve, reject) => {
      let text = '';
      srv.stdout!.on('data', (d: Buffer) => { text += d.toString(); if (text.includes('"listening"')) resolve(); });
      srv.on('exit', (code) => reject(new Error(`server exited (${code})`)));
    });
    const httpSmcr = await peerServer(['--import', AUTO, PEER, 'serve', '--api', 'net', '--http', '--bind', ADDR_HTTP]);
    const httpTcp = await peerServer([PEER, 'serve', '--api', 'net', '--http', '--bind', ADDR_HTTP]);
    const short = await peerServer([PEER, 'serve', '--api', 'smc', '--and-net', '--bind', ADDR_SHORT]);
    await deviceUp(ADDR_HTTP);
    await deviceUp(ADDR_SHORT);
    const peerClient = (args: string[], extraEnv: Record<string, string> = {}) => result(inNs(NS_B, args, extraEnv), 'perSec');
    // Steady state: 2 s of the same load first, not counted. A fresh client's SMC-R rate climbs
    // for about 2.5 s from its start (V8 compiling node:http's and SMC-R's JavaScript; the
    // datagrams per 250 ms of one run's capture: ~600 in the first second, ~9,000 from 2.5 s).
    const httpRun = (smcr: boolean, cold = false) => peerClient([...(smcr ? ['--import', AUTO] : []), PEER, '--api', 'net', '--test', 'http', '--host', ADDR_HTTP, '--port', String(smcr ? httpSmcr.port : httpTcp.port), '--seconds', String(SECONDS), '--warmup-seconds', cold ? '0' : '2'],
      smcr ? { SOFTRDMA_SMCR_DISCOVERY_WAIT_MS: '1000' } : {});
    const shortRun = (smcr: boolean, learn = false, cold = false) => peerClient([PEER, '--api', smcr ? 'smc' : 'net', '--test', 'shortconn', '--host', ADDR_SHORT, '--port', String(smcr ? short.port : short.netPort), '--seconds', String(SECONDS), '--warmup-seconds', cold ? '0' : String(SHORT_WARMUP)],
      { SOFTRDMA_SMCR_DISCOVERY_WAIT_MS: '1000', SOFTRDMA_SMC_LEARN: learn ? '1' : '0' });
    const httpRates = { smcr: [] as number[], tcp: [] as number[] };
    const httpColdRates = { smcr: [] as number[], tcp: [] as number[] };
    const shortRates = { smcr: [] as number[], tcp: [] as number[] };
    const shortColdRates = { smcr: [] as number[], tcp: [] as number[] };
    const learnedRates = { smcr: [] as number[], tcp: [] as number[] };
    const bulk = { smcr: [] as number[], tcp: [] as number[], perf: [] as number[] };
    const pp = { smcr: [] as number[], tcp: [] as number[], floor: [] as number[] };
    const bulkCold = { smcr: [] as number[], tcp: [] as number[] };
    const ppCold = { smcr: [] as number[], tcp: [] as number[] };
    const modes = new Set<string>();
    // A run whose SMC-R side did not run SMC-R (discovery too slow, a fallback) measured TCP: it
    // must not be counted as SMC-R's. Stop, saying so, rather than print a wrong median.
    const requireSmcr = (row: string, seen: unknown): void => {
      const list = Array.isArray(seen) ? seen.map(String) : [String(seen)];
      const other = list.filter((m) => m !== 'SMCR');
      if (other.length) throw new Error(`${row}: the SMC-R side ran ${other.join(', ')}, not SMC-R; not counted`);
    };
    /** The SMC-R client's counters of the last run: per MiB (bulk), per round trip (ping-pong), per request (http). */
    const counts: Record<string, unknown> = {};
    for (let i = 0; i < RUNS; i++) {
      const all: Array<[string, () => Promise<void>]> = [
        ['bulk', async () => { const r = await client('bulk', 'smcr'); requireSmcr('bulk', r.mode); modes.add(String(r.mode)); bulk.smcr.push(r.mibPerSec as number); counts.bulk = r.perMiB; }],
        ['bulk', async () => { bulk.tcp.push((await client('bulk', 'tcp')).mibPerSec as number); }],
        ['bulk', async () => { bulk.perf.push(await perftest()); }],
        ['pingpong', async () => { const r = await client('pingpong', 'smcr'); requireSmcr('pingpong', r.mode); modes.add(String(r.mode)); pp.smcr.push(r.medianUs as number); counts.pingpong = { ...(r.perRoundTrip as object), busyCpuPeriods: r.busyCpuPeriods }; }],
        ['pingpong', async () => { pp.tcp.push((await client('pingpong', 'tcp')).medianUs as number); }],
        ['pingpong', async () => { pp.floor.push(await floor()); }],
        ['bulk-cold', async () => { const r = await client('bulk', 'smcr', true); requireSmcr('bulk-cold', r.mode); modes.add(String(r.mode)); bulkCold.smcr.push(r.mibPerSec as number); }],
        ['bulk-cold', async () => { bulkCold.tcp.push((await client('bulk', 'tcp', true)).mibPerSec as number); }],
        ['pingpong-cold', async () => { const r = await client('pingpong', 'smcr', true); requireSmcr('pingpong-cold', r.mode); modes.add(String(r.mode)); ppCold.smcr.push(r.medianUs as number); }],
        ['pingpong-cold', async () => { ppCold.tcp.push((await client('pingpong', 'tcp', true)).medianUs as number); }],
        ['http', async () => { const r = await httpRun(true); requireSmcr('http', r.modes); for (const m of r.modes as string[]) modes.add(`http ${m}`); httpRates.smcr.push(r.perSec as number); counts.http = r.perRequest; }],
        ['http', async () => { httpRates.tcp.push((await httpRun(false)).perSec as number); }],
        ['http-cold', async () => { const r = await httpRun(true, true); requireSmcr('http-cold', r.modes); httpColdRates.smcr.push(r.perSec as number); }],
        ['http-cold', async () => { httpColdRates.tcp.push((await httpRun(false, true)).perSec as number); }],
        ['shortconn', async () => { const r = await shortRun(true); requireSmcr('shortconn', r.modes); for (const m of r.modes as string[]) modes.add(`shortconn ${m}`); shortRates.smcr.push(r.perSec as number); }],
        ['shortconn-tcp', async () => { shortRates.tcp.push((await shortRun(false)).perSec as number); }],
        ['shortconn-cold', async () => { const r = await shortRun(true, false, true); requireSmcr('shortconn-cold', r.modes); shortColdRates.smcr.push(r.perSec as number); }],
        ['shortconn-cold', async () => { shortColdRates.tcp.push((await shortRun(false, false, true)).perSec as number); }],
        ['learned', async () => { learnedRates.smcr.push((await shortRun(true, true)).perSec as number); }],
      ];
      // The learned row is paired with the plain short-connection row's node:net figure.
      const steps = all.filter(([t]) => (t === 'shortconn-tcp' ? ONLY.includes('shortconn') || ONLY.includes('learned') : ONLY.includes(t))).map(([, f]) => f);
      // Alternate the order, so warm-up and drift favour no side.
      if (i % 2 === 1) steps.reverse();
      for (const s of steps) await s();
    }
    const pairRatio = (a: number[], b: number[]) => median(a.map((x, k) => x / b[k]!));
    const bulkRatio = pairRatio(bulk.smcr, bulk.perf);
    const ppRatio = pairRatio(pp.smcr, pp.tcp);
    // Paired with the same run's node:net figure.
    learnedRates.tcp = [...shortRates.tcp];
    const spread = (a: number[], b: number[]) => { const xs = a.map((x, k) => x / b[k]!); return `${Math.min(...xs).toFixed(2)}-${Math.max(...xs).toFixed(2)}`; };
    // A test left out by --only has no figures (its row is not printed).
    const med = (xs: number[]) => (xs.length ? median(xs) : NaN);
    /** A rate row (higher is better) against node:net's figure of the same runs. */
    const rateRow = (test: string, metric: string, unit: string, method: string, rates: { smcr: number[]; tcp: number[] }, target: number | undefined) => {
      const ratio = pairRatio(rates.smcr, rates.tcp);
      return { test, metric, smcr: med(rates.smcr), baseline: med(rates.tcp), unit, digits: 0, method, ratio, tcp: med(rates.tcp), tcpNote: '', spread: spread(rates.smcr, rates.tcp), runs: rates, ...verdict(ratio, true, target) };
    };
    const allRows = [
      { test: 'bulk', metric: 'bulk 64 KiB one way', smcr: med(bulk.smcr), baseline: med(bulk.perf), unit: 'MiB/s', digits: 1, method: 'perftest write_bw 64 KiB', ratio: bulkRatio, tcp: med(bulk.tcp), tcpNote: `${med(bulk.tcp).toFixed(1)} MiB/s`, spread: spread(bulk.smcr, bulk.perf), runs: bulk, ...verdict(bulkRatio, true, 0.8) },
      rateRow('bulk-cold', 'bulk 64 KiB one way, a fresh client process', 'MiB/s', 'node:net, same veth, a fresh client process', bulkCold, undefined),
      { test: 'pingpong', metric: 'pingpong 14 B median', smcr: med(pp.smcr), baseline: med(pp.tcp), unit: 'us', digits: 1, method: 'node:net, same veth', ratio: ppRatio, tcp: med(pp.tcp), tcpNote: `${med(pp.tcp).toFixed(1)} us`, spread: spread(pp.smcr, pp.tcp), runs: pp, floorUs: med(pp.floor), floorToTcp: pp.floor.length ? pairRatio(pp.floor, pp.tcp) : NaN, ...verdict(ppRatio, false, 0.8) },
      { test: 'pingpong-cold', metric: 'pingpong 14 B median, first 1000 of a fresh client', smcr: med(ppCold.smcr), baseline: med(ppCold.tcp), unit: 'us', digits: 1, method: 'node:net, same veth, a fresh client process', ratio: pairRatio(ppCold.smcr, ppCold.tcp), tcp: med(ppCold.tcp), tcpNote: '', spread: spread(ppCold.smcr, ppCold.tcp), runs: ppCold, ...verdict(pairRatio(ppCold.smcr, ppCold.tcp), false, undefined) },
      rateRow('http', 'http keep-alive, 8 in flight, steady', 'req/s', 'plain node:http both ends', httpRates, 1.0),
      rateRow('http-cold', 'the same, a fresh client process', 'req/s', 'plain node:http both ends', httpColdRates, undefined),
      rateRow('shortconn', 'short connections', 'conn/s', 'node:net both ends', shortRates, 0.8),
      rateRow('shortconn-cold', 'the same, a fresh client process', 'conn/s', 'node:net both ends', shortColdRates, undefined),
      rateRow('learned', 'short connections, learned', 'conn/s', 'node:net both ends', learnedRates, undefined),
    ];
    const rows = allRows.filter((r) => ONLY.includes(r.test)).map(({ test: _t, digits: _d, tcpNote: _n, spread: _s, ...r }) => r);
    if (json) {
      console.log(JSON.stringify({ runs: RUNS, seconds: SECONDS, iters: ITERS, cpus: os.cpus().length, node: process.version, icrc: crc32Implementation, smcrModes: [...modes], rows, smcrClientCounters: counts }, null, 2));
    } else {
      const head = ['metric', 'SMC-R', 'baseline', 'unit', 'baseline method', 'SMC-R/baseline', 'runs', 'target', 'met', 'TCP'];
      console.log(formatTable([head, ...allRows.filter((r) => ONLY.includes(r.test)).map((r) =>
        [r.metric, r.smcr.toFixed(r.digits), r.baseline.toFixed(r.digits), r.unit, r.method, r.ratio.toFixed(2), r.spread, r.target, r.met === undefined ? '-' : r.met ? 'yes' : 'NO', r.tcpNote])]));
      if (ONLY.includes('pingpong')) {
        console.log(`\npingpong floor: ${med(pp.floor).toFixed(1)} us, ${pairRatio(pp.floor, pp.tcp).toFixed(2)}x TCP's round trip (runs ${spread(pp.floor, pp.tcp)}); SMC-R's is ${pairRatio(pp.smcr, pp.floor).toFixed(2)}x the floor. ` +
          `The floor (bench/udp-floor.ts): raw UDP carrying an SMC-R message's datagrams each way (${SMCR_MESSAGE_DATAGRAMS.join(' and ')} bytes), both ends spinning on recv, one sendmmsg a message, no ACKs, no event loop: no user-space SMC-R over this veth can do a round trip in less.`);
      }
      console.log('\nbaselines, each its own process in the same namespaces as the SMC-R side:');
      console.log(`  bulk: softrdma perftest write_bw -s ${CHUNK} -D ${SECONDS + 2} -f 1 between two more rxe devices on the same addresses (the ${SECONDS} s after 1 s of warm-up, as the SMC-R side's); TCP: the SMC-R client program with node:net, setNoDelay(true), the same 64 KiB writes`);
      console.log('  pingpong: the same client and server programs with node:net (net.connect / net.createServer), setNoDelay(true) on both ends, one 14-byte message each way');
      console.log(`  fresh-process bulk and ping-pong: a new client process (SMC-R or node:net), its first connection counted from when it is up: ${SECONDS} s of 64 KiB writes, or the median of its first 1000 round trips (the server one process for all runs)`);
      console.log('  http: node:http keep-alive, 8 requests in flight, on both ends without the preload (src/tools/smc-peer.ts); steady: the 3 s after 2 s of the same load; fresh: a new client process counted from its first request (the servers are one process each for all runs: warm after the first run)');
      console.log(`  short connections: connect, 14-byte echo, end, with node:net on both ends (setNoDelay(true)), tcp_tw_reuse in the client's namespace for both sides; steady: the ${SECONDS} s after ${SHORT_WARMUP} s of the same (both sides); fresh: a new client process counted from its first connection (the server warm after the first run); learned: a default client, which sends a peer's short connections to TCP after 8 (no target: mostly TCP)`);
      console.log('  SMC-R clients wait up to 1 s for discovery\'s first answer (SOFTRDMA_SMCR_DISCOVERY_WAIT_MS=1000; by default about one round trip), so that their connections are SMC-R');
      console.log(`\nmedians of ${RUNS} runs (ratio: the median of the runs' pair ratios; runs: their range); SMC-R mode ${[...modes].join('+')}; ` +
        `SMC-R client per MiB ${JSON.stringify(counts.bulk)}, per round trip ${JSON.stringify(counts.pingpong)}, per http request ${JSON.stringify(counts.http)}; two network namespaces joined by veth, each side its own process and rxe device; rxe's ICRC: ${describeCrc32()}; ${os.cpus().length} CPUs, node ${process.version}`);
    }
  } finally {
    srv.kill('SIGTERM');
    // The smc-peer servers end when their stdin does (and then write their CPU profiles).
    for (const c of children) c.stdin?.end();
    await new Promise((r) => setTimeout(r, 500));
    for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
    tearDown();
  }
}
