// An SMC (or plain node:net) test server, run as its own process. The first byte a client
// sends picks the service: 'E' echo; 'B' count and hash until end, then reply count (u64 BE)
// and sha256; 'S' the same, reading slowly (pauses) to exercise backpressure.
// --banner writes a greeting first (a server-first protocol). Every event is a JSON line.

import { createHash } from 'node:crypto';
import net from 'node:net';
import { parseArgs } from 'node:util';
import * as smc from '../../src/smc/index.js';

const { values } = parseArgs({ options: { api: { type: 'string', default: 'smc' }, banner: { type: 'boolean' }, buffer: { type: 'string' } } });
const log = (o: object) => process.stdout.write(`${JSON.stringify(o)}\n`);
let seq = 0;

function handle(sock: net.Socket): void {
  const id = ++seq;
  sock.on('smc', (i: smc.SmcInfo) => log({ event: 'smc', id, ...i }));
  sock.on('error', (e: NodeJS.ErrnoException) => log({ event: 'error', id, code: e.code, message: e.message }));
  sock.on('close', () => log({ event: 'close', id, mode: smc.getSmcInfo(sock).mode, bytesRead: sock.bytesRead, bytesWritten: sock.bytesWritten }));
  if (values.banner) sock.write('220 softrdma test server ready\r\n');
  sock.once('data', (chunk: Buffer) => {
    const kind = String.fromCharCode(chunk[0]!);
    const rest = chunk.subarray(1);
    if (kind === 'E') {
      if (rest.length) sock.write(rest);
      sock.pipe(sock);
      return;
    }
    let n = rest.length;
    const h = createHash('sha256').update(rest);
    if (kind === 'S') {
      let sinceStall = n;
      sock.on('data', (d: Buffer) => {
        n += d.length; sinceStall += d.length; h.update(d);
        if (sinceStall >= 1 << 20) { sinceStall = 0; sock.pause(); setTimeout(() => sock.resume(), 20); }
      });
    } else {
      sock.on('data', (d: Buffer) => { n += d.length; h.update(d); });
    }
    sock.on('end', () => {
      const out = Buffer.alloc(8);
      out.writeBigUInt64BE(BigInt(n));
      log({ event: 'received', id, bytes: n });
      sock.end(Buffer.concat([out, h.digest()]));
    });
  });
}

const opts = values.buffer ? { smcBufferSize: Number(values.buffer) } : {};
const server = values.api === 'net' ? net.createServer(handle) : smc.createServer(opts, handle);
server.listen(0, '127.0.0.1', () => log({ event: 'listening', port: (server.address() as net.AddressInfo).port, pid: process.pid }));
process.stdin.resume();
process.stdin.on('end', () => { server.close(); setTimeout(() => process.exit(0), 50); });
