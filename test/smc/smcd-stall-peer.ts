// One end of the SMC-D stall tests (smcd-peer-death, smcd-lost-ring), run as its own process.
// Prints JSON lines.
//
//   node smcd-stall-peer.js halfclose PORT [MS]
//                                            connect, end() at once, stop reading; with MS, read
//                                            again after MS ms and print the bytes at the end;
//                                            run until killed
//   node smcd-stall-peer.js upload PORT N [--api net] [--no-end]
//                                            connect, and once the server's end came, write N
//                                            bytes (64 KiB writes, waiting for 'drain'), then
//                                            end() unless --no-end; print what was sent at exit
//   node smcd-stall-peer.js echo             an echo server; prints its port, runs until killed

import net from 'node:net';
import { parseArgs } from 'node:util';
import * as smc from '../../src/smc/index.js';

const { positionals, values } = parseArgs({
  allowPositionals: true,
  options: { api: { type: 'string', default: 'smc' }, 'no-end': { type: 'boolean' } },
});
const out = (o: Record<string, unknown>) => process.stdout.write(`${JSON.stringify(o)}\n`);
const api = values.api === 'net' ? net : smc;
smc.setSmcLearning(false);
const [role, port, arg] = positionals;

if (role === 'halfclose') {
  const s = smc.connect({ port: Number(port), host: '127.0.0.1', allowHalfOpen: true });
  s.on('error', (e) => out({ error: (e as NodeJS.ErrnoException).code }));
  s.once('smc', (info: smc.SmcInfo) => {
    s.end('req');
    s.pause();
    out({ ready: true, mode: info.mode });
    if (arg !== undefined) setTimeout(() => s.resume(), Number(arg));
  });
  let received = 0;
  s.on('data', (d: Buffer) => { received += d.length; });
  s.on('end', () => out({ received }));
  setInterval(() => {}, 1000);
} else if (role === 'upload') {
  const total = Number(arg);
  let sent = 0;
  const s = api.connect({ port: Number(port), host: '127.0.0.1', allowHalfOpen: true });
  s.on('error', (e) => out({ error: (e as NodeJS.ErrnoException).code }));
  s.on('end', async () => {
    const buf = Buffer.alloc(Math.min(64 << 10, total), 'u');
    while (sent < total) {
      const chunk = buf.subarray(0, Math.min(buf.length, total - sent));
      sent += chunk.length;
      if (!s.write(chunk)) await new Promise((r) => s.once('drain', r));
    }
    if (!values['no-end']) s.end(() => out({ finished: sent }));
  });
  s.resume();
  s.write('hi');
  process.on('exit', () => out({ exit: true, sent, writableLength: s.writableLength, mode: smc.getSmcInfo(s).mode }));
} else if (role === 'echo') {
  const server = smc.createServer((s) => {
    s.on('error', (e) => out({ error: (e as NodeJS.ErrnoException).code }));
    s.pipe(s);
  });
  server.listen(0, '127.0.0.1', () => out({ port: (server.address() as net.AddressInfo).port, pid: process.pid }));
} else {
  throw new Error(`unknown role ${role}`);
}
