// The raw node:dgram baselines the rxe benchmarks are compared with, run as their own
// processes: a blaster/sink pair moving fixed-size datagrams (goodput counted at the sink),
// and a 2-byte ping-pong. Each prints one JSON line with its figures.
//
//   node raw-udp.js sink  --bind A --port P            (prints {bytes, secs, MBps, datagrams})
//   node raw-udp.js blast --bind B --port P --to A --size 4096 --count N
//   node raw-udp.js echo  --bind A --port P
//   node raw-udp.js ping  --bind B --port P --to A --iters N   (prints {rtt_us...})

import dgram from 'node:dgram';
import { parseArgs } from 'node:util';

const { positionals, values } = parseArgs({
  allowPositionals: true,
  options: {
    bind: { type: 'string' }, port: { type: 'string' }, to: { type: 'string' },
    size: { type: 'string', default: '4096' }, count: { type: 'string', default: '100000' }, iters: { type: 'string', default: '10000' },
    'idle-ms': { type: 'string', default: '300' },
  },
});
const mode = positionals[0];
const port = Number(values.port);
const sock = dgram.createSocket({ type: 'udp4', recvBufferSize: 8 << 20, sendBufferSize: 8 << 20 });
await new Promise<void>((r) => sock.bind({ address: values.bind!, port, exclusive: true }, r));
const ready = () => process.stdout.write(JSON.stringify({ ready: true }) + '\n');

if (mode === 'sink') {
  // Counts until the blaster's end marker (a 1-byte datagram) or an idle gap.
  let bytes = 0, n = 0, first = 0, last = 0;
  let idle: NodeJS.Timeout | undefined;
  const finish = () => {
    const secs = (last - first) / 1e9;
    process.stdout.write(JSON.stringify({ bytes, datagrams: n, secs, MBps: secs > 0 ? bytes / secs / (1 << 20) : 0 }) + '\n');
    sock.close();
  };
  sock.on('message', (m) => {
    const t = Number(process.hrtime.bigint());
    if (m.length === 1) { clearTimeout(idle); finish(); return; }
    if (!n) first = t;
    n++; bytes += m.length; last = t;
    clearTimeout(idle);
    idle = setTimeout(finish, Number(values['idle-ms']));
  });
  ready();
} else if (mode === 'blast') {
  const size = Number(values.size), count = Number(values.count);
  const payload = Buffer.alloc(size, 0x5a);
  let sent = 0, acked = 0;
  // At most 64 sends queued in libuv at once: as fast as the socket takes them.
  await new Promise<void>((done) => {
    const pump = () => {
      while (sent < count && sent - acked < 64) {
        sent++;
        sock.send(payload, port, values.to!, () => { acked++; if (acked === count) done(); else pump(); });
      }
    };
    pump();
  });
  for (let i = 0; i < 3; i++) sock.send(Buffer.from([0]), port, values.to!);
  setTimeout(() => sock.close(), 50);
} else if (mode === 'echo') {
  sock.on('message', (m, r) => {
    if (m.length === 1) { sock.close(); return; }
    sock.send(m, r.port, r.address);
  });
  ready();
} else if (mode === 'ping') {
  const iters = Number(values.iters);
  const msg = Buffer.from([1, 2]);
  const samples: number[] = [];
  let t0 = 0n;
  await new Promise<void>((done) => {
    sock.on('message', () => {
      samples.push(Number(process.hrtime.bigint() - t0) / 1e3);
      if (samples.length === iters) return done();
      t0 = process.hrtime.bigint();
      sock.send(msg, port, values.to!);
    });
    t0 = process.hrtime.bigint();
    sock.send(msg, port, values.to!);
  });
  samples.sort((a, b) => a - b);
  const avg = samples.reduce((a, b) => a + b, 0) / samples.length;
  process.stdout.write(JSON.stringify({ iterations: iters, rtt_avg_us: avg, rtt_typical_us: samples[samples.length >> 1] }) + '\n');
  sock.send(Buffer.from([0]), port, values.to!, () => sock.close());
} else {
  console.error('usage: raw-udp.js sink|blast|echo|ping ...');
  process.exit(2);
}
