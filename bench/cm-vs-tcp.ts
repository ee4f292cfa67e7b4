// Connection setup through softrdma's rdma_cm (softrdma/cm) against node:net, between the same
// addresses (client 127.0.0.3, server 127.0.0.2) in the same run, each side in its own process
// (this file again, with --role). Prints each rate, the ratio and the target (rdma_cm
// ≥ 0.5× TCP's rate); --json prints the same as one JSON document. Medians of --runs runs
// (default 3); each run is a fresh client process, the two sides back to back, alternating
// which goes first.
//
// One rdma_cm connection, as a librdmacm client and server do it:
//   client: createId, resolveAddr (ADDR_RESOLVED), resolveRoute (ROUTE_RESOLVED), createQp (RC,
//           one PD and CQ for the process), connect (REQ; the server's REP moves the QP to RTS,
//           our RTU), ESTABLISHED, disconnect (DREQ), DISCONNECTED (the server's DREP),
//           destroyId (the QP with it).
//   server: CONNECT_REQUEST, createQp, accept (QP to RTS, REP), ESTABLISHED (RTU),
//           DISCONNECTED (the client's DREQ), destroyId (DREP, the QP).
// With --send 1 (the default) the connection is used once, as node:net's is usable once
// established: the server posts a receive before accept, and the client, at ESTABLISHED,
// posts one 16-byte SEND and waits for its completion (the server QP's ACK) before it
// disconnects. So each side's QP sends at least one packet.
// --send 0 measures the CM cycle alone (QPs that never send).
// Under the table: the steady rows' CPU time per connection, both processes together.
// Linux's CM timing (response timeout 20, 15 retries, packet life 18): ids stay in the agent's
// table for their time-wait after destroyId, as in Linux.
// The node:net baseline, the fastest straightforward code for the same job: the server
// (net.createServer) ends each socket as it accepts it; the client does
// net.connect({ host, port, localAddress }), setNoDelay(true) on 'connect', ends on the server's
// end (allowHalfOpen false) and waits for 'close' (FIN both ways: the connection fully closed)
// before the next. The server closes first so that TIME_WAIT stays on its side: a client that
// binds its local address (localAddress) and closes first leaves its ephemeral ports in
// TIME_WAIT, where bind() cannot reuse them, and slows down as they pile up (~30,000 ports).
//
//   sequential   one connection at a time: 5 s not counted, then 3 s counted (steady state)
//   32 in flight 32 loops of the same at once: 5 s not counted, then 3 s counted
// The warm-up is long because V8 is: the rdma_cm path's functions run once or twice a
// connection, so TurboFan reaches them only after thousands of connections (with 1 s of
// warm-up, 95 optimizing compiles of 1-33 ms each still fell in a sequential run's counted
// window, and the rate read 365 conn/s against 889 after 4 s). The cold row is the start.
//   cold         a fresh client process's first 200 connections, one at a time (the rxe
//                device made before, not counted; the CM agent, the PD, CQ and MR are made
//                by the first connection, counted; V8 still compiling)

import { spawn, type ChildProcess } from 'node:child_process';
import net from 'node:net';
import os from 'node:os';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import { Access, SendFlags, WcStatus, WrOpcode, createRxeDevice, rxeOf, type CQ, type MR, type PD, type WorkCompletion } from '../src/index.js';
import { createEventChannel, createId, type RdmaCmEvent, type RdmaCmEventType, type RdmaCmId } from '../src/cm/index.js';
import { formatTable } from '../src/tools/table.js';
import { benchOptions } from './options.js';
import { threadsMicros } from './proc-cpu.js';
import { median, verdict } from './stats.js';

const USAGE = 'usage: node dist/bench/cm-vs-tcp.js [--runs N] [--json] [--send 1|0] [--warmup SEC] [--seconds SEC]';
const { runs: RUNS, json, strings: s } = benchOptions(USAGE, {
  role: undefined, api: undefined, addr: undefined, dst: undefined, port: undefined, 'udp-port': undefined,
  mode: undefined, seconds: '3', warmup: '5', conns: '200', inflight: '32', send: '1', 'server-pid': undefined,
});
const SEND = s.send !== '0';
const SERVER_ADDR = '127.0.0.2';
const CLIENT_ADDR = '127.0.0.3';
const SELF = fileURLToPath(import.meta.url);
const say = (o: object) => process.stdout.write(JSON.stringify(o) + '\n');

// ---------------------------------------------------------------- the server processes

async function cmServer(addr: string): Promise<void> {
  const dev = await createRxeDevice({ address: addr, port: 0 });
  const ch = createEventChannel();
  const listener = createId(ch, 'tcp');
  listener.bindAddr(addr, 0);
  listener.listen(1024);
  const ctx = listener.verbs!;
  const pd = ctx.allocPd();
  const cq = ctx.createCq(4096);
  // One receive buffer for every connection's one SEND (its contents do not matter here).
  const rmr = pd.regMr(Buffer.alloc(64), Access.LOCAL_WRITE);
  // Receive completions (and the flushes of QPs that go to ERR) are taken and dropped.
  if (SEND) void (async () => { try { for await (const _ of cq) { /* dropped */ } } catch { /* the CQ is gone */ } })();
  let accepted = 0;
  ch.on('event', (e: RdmaCmEvent) => {
    if (e.id === listener) return;
    switch (e.event) {
      case 'CONNECT_REQUEST':
        e.id.createQp(pd, { sendCq: cq, recvCq: cq, cap: { maxSendWr: 4, maxRecvWr: 4, maxSendSge: 1, maxRecvSge: 1 } });
        if (SEND) e.id.qp!.postRecv({ wrId: 0n, sgList: [rmr.sge()] });
        e.id.accept();
        accepted++;
        return;
      case 'DISCONNECTED': case 'REJECTED': case 'UNREACHABLE': case 'CONNECT_ERROR':
        e.id.destroyId(); // the DREP for a DREQ, and the QP
        return;
      default:
    }
  });
  say({ port: listener.localAddr!.port, udpPort: rxeOf(dev).port, pid: process.pid });
  await waitStdinEnd();
  say({ accepted });
  listener.destroyId();
  ch.close();
  await dev.close();
}

async function netServer(addr: string): Promise<void> {
  const server = net.createServer((sock) => {
    sock.on('error', () => {});
    sock.end();
    sock.resume();
  });
  await new Promise<void>((r) => server.listen({ host: addr, port: 0 }, r));
  say({ port: (server.address() as net.AddressInfo).port, udpPort: 0, pid: process.pid });
  await waitStdinEnd();
  server.close();
}

function waitStdinEnd(): Promise<void> {
  return new Promise((r) => { process.stdin.on('end', r); process.stdin.resume(); });
}

// ---------------------------------------------------------------- the client processes

type OneConn = () => Promise<void>;

async function cmClient(addr: string, dst: string, port: number, udpPort: number): Promise<{ one: OneConn; close: () => Promise<void> }> {
  const dev = await createRxeDevice({ address: addr, port: udpPort });
  const ch = createEventChannel();
  // Events go to whoever waits for that id (one waiter per id at a time).
  const waiting = new Map<RdmaCmId, (e: RdmaCmEvent) => void>();
  ch.on('event', (e: RdmaCmEvent) => { const w = waiting.get(e.id); if (w) { waiting.delete(e.id); w(e); } });
  const next = (id: RdmaCmId, want: RdmaCmEventType) => new Promise<void>((resolve, reject) => {
    waiting.set(id, (e) => (e.event === want ? resolve() : reject(new Error(`expected ${want}, got ${e.event} (status ${e.status})`))));
  });
  let pd: PD | undefined;
  let cq: CQ | undefined;
  let smr: MR | undefined;
  // Send completions go to whoever waits for that work request id.
  const sent = new Map<WorkCompletion['wrId'], (wc: WorkCompletion) => void>();
  let nextWr = 1;
  const takeCompletions = async (q: CQ) => {
    try { for await (const wc of q) { const w = sent.get(wc.wrId); if (w) { sent.delete(wc.wrId); w(wc); } } } catch { /* the CQ is gone */ }
  };
  const one = async () => {
    const id = createId(ch, 'tcp');
    try {
      let p = next(id, 'ADDR_RESOLVED');
      id.resolveAddr({ address: dst, port }, addr);
      await p;
      p = next(id, 'ROUTE_RESOLVED');
      id.resolveRoute();
      await p;
      pd ??= id.verbs!.allocPd();
      if (!cq) {
        cq = id.verbs!.createCq(4096);
        smr = pd.regMr(Buffer.from('sixteen bytes...'), Access.LOCAL_WRITE);
        if (SEND) void takeCompletions(cq);
      }
      id.createQp(pd, { sendCq: cq, recvCq: cq, cap: { maxSendWr: 4, maxRecvWr: 4, maxSendSge: 1, maxRecvSge: 1 } });
      p = next(id, 'ESTABLISHED');
      id.connect();
      await p;
      if (SEND) {
        const wrId = nextWr++;
        const done = new Promise<WorkCompletion>((r) => sent.set(wrId, r));
        id.qp!.postSend({ wrId, opcode: WrOpcode.SEND, sendFlags: SendFlags.SIGNALED, sgList: [smr!.sge()] });
        const wc = await done;
        if (wc.status !== WcStatus.SUCCESS) throw new Error(`SEND completed with status ${wc.status}`);
      }
      p = next(id, 'DISCONNECTED');
      id.disconnect();
      await p;
    } finally {
      waiting.delete(id);
      id.destroyId();
    }
  };
  return { one, close: async () => { ch.close(); await dev.close(); } };
}

function netClient(addr: string, dst: string, port: number): { one: OneConn; close: () => Promise<void> } {
  const one = () => new Promise<void>((resolve, reject) => {
    const sock = net.connect({ host: dst, port, localAddress: addr });
    sock.on('connect', () => sock.setNoDelay(true));
    sock.on('error', reject);
    sock.on('close', () => resolve());
    sock.resume();
  });
  return { one, close: async () => {} };
}

async function client(): Promise<void> {
  const api = s.api!, mode = s.mode!;
  const port = Number(s.port), udpPort = Number(s['udp-port']);
  const t0 = performance.now();
  const c = api === 'cm' ? await cmClient(s.addr!, s.dst!, port, udpPort) : netClient(s.addr!, s.dst!, port);
  const setupMs = performance.now() - t0;
  if (mode === 'cold') {
    const n = Number(s.conns);
    const start = performance.now();
    for (let i = 0; i < n; i++) await c.one();
    const ms = performance.now() - start;
    await c.close();
    say({ perSec: (n * 1000) / ms, conns: n, ms, setupMs });
    return;
  }
  const loops = mode === 'concurrent' ? Number(s.inflight) : 1;
  const warmEnd = performance.now() + Number(s.warmup) * 1000;
  const end = warmEnd + Number(s.seconds) * 1000;
  // Both processes' CPU time over the counted seconds (the client's by process.cpuUsage, the
  // server's threads by /proc): on this machine a sequential connection's wall time is both
  // sides' CPU added up, and CPU time moves less than the rate from run to run.
  const serverPid = Number(s['server-pid']);
  let cpu0: { client: NodeJS.CpuUsage; server: number } | undefined;
  let cpu: { client: number; server: number } | undefined;
  const atWarmEnd = setTimeout(() => { cpu0 = { client: process.cpuUsage(), server: threadsMicros(serverPid) }; }, warmEnd - performance.now());
  const atEnd = setTimeout(() => {
    if (!cpu0) return;
    const c = process.cpuUsage(cpu0.client);
    cpu = { client: c.user + c.system, server: threadsMicros(serverPid) - cpu0.server };
  }, end - performance.now());
  let counted = 0;
  const loop = async () => {
    for (;;) {
      const t = performance.now();
      if (t >= end) return;
      await c.one();
      const done = performance.now();
      if (t >= warmEnd && done <= end) counted++;
    }
  };
  await Promise.all(Array.from({ length: loops }, loop));
  clearTimeout(atWarmEnd);
  clearTimeout(atEnd);
  await c.close();
  // Connections that started after the warm-up and ended within the counted seconds; CPU
  // microseconds per connection (connections in flight at either edge make it a little high).
  const perConn = cpu && counted > 0 ? { clientUs: cpu.client / counted, serverUs: cpu.server / counted } : {};
  say({ perSec: counted / Number(s.seconds), conns: counted, setupMs, ...perConn });
}

// ---------------------------------------------------------------- the driver

function cpuOf(cm: ClientResult, tcp: ClientResult): Cpu {
  const a = cm.clientUs! + cm.serverUs!, b = tcp.clientUs! + tcp.serverUs!;
  return { cm: a, tcp: b, ratio: a / b, cmClient: cm.clientUs!, cmServer: cm.serverUs!, tcpClient: tcp.clientUs!, tcpServer: tcp.serverUs! };
}

interface Peer { proc: ChildProcess; port: number; udpPort: number; pid: number; stop: () => Promise<void> }

/** CM_BENCH_PROF=DIR: a CPU profile of every process (node --cpu-prof), to see where a connection's time goes. */
const PROF = process.env.CM_BENCH_PROF ? ['--cpu-prof', '--cpu-prof-dir', process.env.CM_BENCH_PROF] : [];

function child(args: string[]): ChildProcess {
  return spawn(process.execPath, [...PROF, SELF, ...args], { stdio: ['pipe', 'pipe', 'inherit'] });
}

function firstLine(p: ChildProcess): Promise<Record<string, number>> {
  return new Promise((resolve, reject) => {
    const rl = readline.createInterface({ input: p.stdout! });
    rl.once('line', (l) => { rl.close(); resolve(JSON.parse(l) as Record<string, number>); });
    p.once('exit', (code) => reject(new Error(`${p.spawnargs.join(' ')} exited ${code} before a line`)));
  });
}

async function startServer(api: string): Promise<Peer> {
  const proc = child(['--role', 'server', '--api', api, '--addr', SERVER_ADDR, '--send', s.send!]);
  const l = await firstLine(proc);
  return {
    proc, port: l.port!, udpPort: l.udpPort!, pid: l.pid!,
    stop: async () => { proc.stdin!.end(); await new Promise((r) => proc.once('exit', r)); },
  };
}

interface ClientResult { perSec: number; clientUs?: number; serverUs?: number }

async function runClient(api: string, peer: Peer, mode: string): Promise<ClientResult> {
  const p = child(['--role', 'client', '--api', api, '--addr', CLIENT_ADDR, '--dst', SERVER_ADDR, '--port', String(peer.port),
    '--udp-port', String(peer.udpPort), '--server-pid', String(peer.pid), '--mode', mode, '--send', s.send!, '--seconds', s.seconds!, '--warmup', s.warmup!, '--conns', s.conns!, '--inflight', s.inflight!]);
  const line = await firstLine(p);
  await new Promise((r) => (p.exitCode !== null ? r(undefined) : p.once('exit', r)));
  if (p.exitCode !== 0) throw new Error(`client ${api} ${mode} exited ${p.exitCode}`);
  return line as unknown as ClientResult;
}

/** CPU microseconds per connection, both processes, and each side's share (steady rows). */
interface Cpu { cm: number; tcp: number; ratio: number; cmClient: number; cmServer: number; tcpClient: number; tcpServer: number }

interface Row { metric: string; cm: number; tcp: number; ratio: number; runs: Array<{ cm: number; tcp: number; ratio: number; cpu?: Cpu }>; target: string; met: boolean | undefined; cpu?: Cpu }

async function driver(): Promise<void> {
  const cmS = await startServer('cm');
  const netS = await startServer('net');
  const rows: Row[] = [];
  const modes: Array<[string, string, number | undefined]> = [
    ['sequential, steady state', 'sequential', 0.5],
    [`${s.inflight} in flight, steady state`, 'concurrent', 0.5],
    [`cold: first ${s.conns} of a fresh process, sequential`, 'cold', undefined],
  ];
  try {
    for (const [metric, mode, target] of modes) {
      const runs: Row['runs'] = [];
      for (let i = 0; i < RUNS; i++) {
        let a: ClientResult, b: ClientResult;
        if (i % 2 === 0) { a = await runClient('cm', cmS, mode); b = await runClient('net', netS, mode); } else { b = await runClient('net', netS, mode); a = await runClient('cm', cmS, mode); }
        const cpu = a.clientUs !== undefined && b.clientUs !== undefined ? cpuOf(a, b) : undefined;
        runs.push({ cm: a.perSec, tcp: b.perSec, ratio: a.perSec / b.perSec, ...(cpu ? { cpu } : {}) });
      }
      const ratio = median(runs.map((r) => r.ratio));
      const cpus = runs.flatMap((r) => (r.cpu ? [r.cpu] : []));
      const cpu = cpus.length > 0 ? Object.fromEntries(Object.keys(cpus[0]!).map((k) => [k, median(cpus.map((c) => c[k as keyof Cpu]))])) as unknown as Cpu : undefined;
      rows.push({ metric, cm: median(runs.map((r) => r.cm)), tcp: median(runs.map((r) => r.tcp)), ratio, runs, ...verdict(ratio, true, target), ...(cpu ? { cpu } : {}) });
    }
  } finally {
    await cmS.stop();
    await netS.stop();
  }
  const how = `rdma_cm: resolveAddr, resolveRoute, createQp, connect, accept, ESTABLISHED, ${SEND ? 'one 16-byte SEND and its completion (both QPs send), ' : 'no data (--send 0: QPs that never send), '}disconnect, DISCONNECTED, destroyId; ` +
    'node:net: connect, setNoDelay, no data (the rdma_cm side\'s SEND has no counterpart here: it counts against rdma_cm), the server ends first, the client ends on its end, close on both sides; each side in its own process, 127.0.0.3 -> 127.0.0.2';
  if (json) {
    console.log(JSON.stringify({ runs: RUNS, cpus: os.cpus().length, node: process.version, how, rows }, null, 2));
    return;
  }
  const head = ['metric', 'rdma_cm', 'node:net', 'unit', 'CM/TCP', 'runs', 'target', 'met'];
  const lines = rows.map((r) => {
    const xs = r.runs.map((x) => x.ratio);
    return [r.metric, r.cm.toFixed(0), r.tcp.toFixed(0), 'conn/s', r.ratio.toFixed(2), `${Math.min(...xs).toFixed(2)}-${Math.max(...xs).toFixed(2)}`, r.target, r.met === undefined ? '-' : r.met ? 'yes' : 'NO'];
  });
  console.log(formatTable([head, ...lines]));
  for (const r of rows) {
    if (!r.cpu) continue;
    const c = r.cpu;
    console.log(`${r.metric}: CPU per connection, both processes: rdma_cm ${c.cm.toFixed(0)} us (client ${c.cmClient.toFixed(0)} + server ${c.cmServer.toFixed(0)}), node:net ${c.tcp.toFixed(0)} us (${c.tcpClient.toFixed(0)} + ${c.tcpServer.toFixed(0)}); CM/TCP ${c.ratio.toFixed(2)} (medians)`);
  }
  console.log(`\nmedians of ${RUNS} runs (CM/TCP: the median of the runs' pair ratios; runs: their range); ${how}; ${os.cpus().length} CPUs, node ${process.version}`);
}

if (s.role === 'server') await (s.api === 'cm' ? cmServer(s.addr!) : netServer(s.addr!));
else if (s.role === 'client') await client();
else await driver();
