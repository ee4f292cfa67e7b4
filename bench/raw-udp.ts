// The raw node:dgram baselines the rxe benchmarks are compared with, run as their own
// processes. Written as a careful Node programmer would for the same job: connected sockets
// (`socket.connect`, so no per-datagram address lookup), 8 MiB socket buffers, datagrams of
// rxe's packet payload size, and as many sends in flight as libuv takes (`--window`).
//
//   node raw-udp.js sink  --bind A --port P [--warmup-ms W]     prints {bytes, secs, MBps, datagrams}
//   node raw-udp.js blast --bind B --port P --to A --size 4096 (--count N | --duration-ms D) [--window 256]
//   node raw-udp.js echo  --bind A --port P
//   node raw-udp.js ping  --bind B --port P --to A (--iters N | --duration-ms D) [--warmup-ms W]
//                                                              prints {rtt_avg_us, rtt_typical_us, rtt_p99_us, ...}
//
// The sink counts goodput from the first datagram after --warmup-ms (0: from the first one)
// until the blaster's end marker, so a steady-state run leaves the warm-up out, as perftest -D does.

import dgram from 'node:dgram';
import { once } from 'node:events';
import { parseArgs } from 'node:util';

const { positionals, values } = parseArgs({
  allowPositionals: true,
  options: {
    bind: { type: 'string' }, port: { type: 'string' }, to: { type: 'string' },
    size: { type: 'string', default: '4096' }, count: { type: 'string' }, iters: { type: 'string' },
    'duration-ms': { type: 'string' }, 'warmup-ms': { type: 'string', default: '0' }, window: { type: 'string', default: '256' },
    'idle-ms': { type: 'string', default: '1000' },
  },
});
const mode = positionals[0];
const port = Number(values.port);
const warmupNs = Number(values['warmup-ms']) * 1e6;
const sock = dgram.createSocket({ type: 'udp4', recvBufferSize: 8 << 20, sendBufferSize: 8 << 20 });
await new Promise<void>((r) => sock.bind({ address: values.bind!, port, exclusive: true }, r));
const ready = () => process.stdout.write(JSON.stringify({ ready: true }) + '\n');
const now = () => Number(process.hrtime.bigint());
const END = Buffer.from([0]);

async function connectTo(): Promise<void> {
  // A connected socket hears the ICMP 'port unreachable' of a peer that has finished and
  // closed (after the end marker) as ECONNREFUSED on its next read: expected, not a failure.
  sock.on('error', (err: NodeJS.ErrnoException) => { if (err.code !== 'ECONNREFUSED') throw err; });
  sock.connect(port, values.to!);
  await once(sock, 'connect');
}

if (mode === 'sink') {
  // Counts until the blaster's end marker (a 1-byte datagram) or an idle gap.
  let bytes = 0, n = 0, first = 0, last = 0, start = 0;
  let idle: NodeJS.Timeout | undefined;
  const idleMs = Number(values['idle-ms']);
  const finish = () => {
    const secs = (last - first) / 1e9;
    // first_ns, on the host's monotonic clock (hrtime), for a caller that times the whole run
    // from its own start of the blaster.
    process.stdout.write(JSON.stringify({ bytes, datagrams: n, secs, MBps: secs > 0 ? bytes / secs / (1 << 20) : 0, first_ns: first }) + '\n');
    sock.close();
  };
  sock.on('message', (m) => {
    const t = now();
    if (m.length === 1) { clearTimeout(idle); finish(); return; }
    start ||= t;
    if (t - start < warmupNs) return;
    if (!n) first = t;
    else bytes += m.length; // the first counted datagram opens the window: bytes after it
    n++; last = t;
    // One timer, pushed back per datagram (refresh: no timer made and cancelled per datagram on
    // the side that is the bottleneck).
    if (idle) idle.refresh();
    else idle = setTimeout(finish, idleMs);
  });
  ready();
} else if (mode === 'blast') {
  await connectTo();
  const size = Number(values.size), window = Number(values.window);
  const count = values.count ? Number(values.count) : Infinity;
  const until = values['duration-ms'] ? now() + Number(values['duration-ms']) * 1e6 : Infinity;
  const payload = Buffer.alloc(size, 0x5a);
  let sent = 0, acked = 0, stop = false;
  await new Promise<void>((done) => {
    const onSent = () => {
      acked++;
      if (stop && acked === sent) done();
      else pump();
    };
    const pump = () => {
      while (!stop && sent - acked < window) {
        if (sent >= count || ((sent & 63) === 0 && now() >= until)) { stop = true; if (acked === sent) done(); return; }
        sent++;
        sock.send(payload, onSent);
      }
    };
    pump();
  });
  for (let i = 0; i < 3; i++) sock.send(END);
  setTimeout(() => sock.close(), 50);
} else if (mode === 'echo') {
  // Answers whoever pinged (the first datagram's sender), then stays connected to it.
  let connected = false;
  sock.on('message', (m, r) => {
    if (m.length === 1) { sock.close(); return; }
    if (!connected) {
      connected = true;
      sock.connect(r.port, r.address, () => sock.send(m));
      return;
    }
    sock.send(m);
  });
  ready();
} else if (mode === 'ping') {
  await connectTo();
  const iters = values.iters ? Number(values.iters) : Infinity;
  const until = values['duration-ms'] ? now() + Number(values['duration-ms']) * 1e6 : Infinity;
  const msg = Buffer.from([1, 2]);
  const samples: number[] = [];
  const begin = now();
  let t0 = 0, rounds = 0, doneNs = 0;
  await new Promise<void>((done) => {
    sock.on('message', () => {
      const t = now();
      if (t - begin >= warmupNs) samples.push((t - t0) / 1e3);
      rounds++;
      if (samples.length >= iters || t >= until) { doneNs = t; return done(); }
      t0 = now();
      sock.send(msg);
    });
    t0 = now();
    sock.send(msg);
  });
  let stats: { rtt_avg_us: number; rtt_typical_us: number; rtt_p99_us: number };
  if (values.iters) {
    // A counted run (--iters, as perftest -n) gets perftest's statistics, as the rxe side's
    // (print_report_lat: the two largest samples left out, the mean and median of the rest,
    // p99 = delta[ceil(m * 0.99)]).
    // (Loaded here, after the run: the cold rows time this process from its start.)
    const { latResult } = await import('../src/tools/perftest/report.js');
    const r = latResult('raw UDP ping', msg.length, Float64Array.from(samples));
    stats = { rtt_avg_us: r.t_avg_us, rtt_typical_us: r.t_typical_us, rtt_p99_us: r.p99_us };
  } else {
    // A timed run (-D) keeps every sample, as perftest's -D mean does.
    samples.sort((a, b) => a - b);
    const n = samples.length;
    stats = {
      rtt_avg_us: samples.reduce((a, b) => a + b, 0) / n,
      rtt_typical_us: n % 2 === 0 ? (samples[n / 2 - 1]! + samples[n / 2]!) / 2 : samples[(n - 1) / 2]!,
      rtt_p99_us: samples[Math.min(n - 1, Math.ceil(0.99 * n) - 1)]!,
    };
  }
  process.stdout.write(JSON.stringify({ iterations: samples.length, rounds, ...stats, done_ns: doneNs }) + '\n');
  sock.send(END, () => sock.close());
} else {
  console.error('usage: raw-udp.js sink|blast|echo|ping ...');
  process.exit(2);
}
