// One end of smcr-blocked-writer.test.ts, run as its own process in a network namespace, with no
// rxe device of its own: `smcr: true` brings one up (unref()'d, so it keeps nothing alive).
// Prints JSON lines the test waits on.
//
//   node smcr-blocked-writer-peer.js server --bind A --port P [--buffer B] [--pause MS] [--stall]
//       an allowHalfOpen softrdma/smc server with an RMB of B bytes (the ring the client writes
//       into). Per connection: at the first data it end()s (half-closes), then reads slowly
//       (pause, resume after MS ms, per chunk) or, with --stall, not at all. Prints `ready`,
//       `conn` (mode), and the bytes received and the events once the connection closed.
//   node smcr-blocked-writer-peer.js client --bind B --peer A --port P --bytes N [--api net] [--no-end]
//       connect (allowHalfOpen), write 'hi', and once the server's end came, write N bytes
//       (64 KiB writes, waiting for 'drain'), then end() (not with --no-end: the process is to
//       exit on its own once the last write is in the peer's buffer). Nothing else keeps its event loop
//       alive. Prints `waiting` at the first write that has to wait, `finished` when end()'s
//       callback runs, errors (with the time), and at exit what was sent, what is queued and how
//       many SMC-R writers still hold the event loop.

import net from 'node:net';
import { parseArgs } from 'node:util';
import * as smc from '../../src/smc/index.js';
import { smcrListenCount } from '../../src/smc/smcr/discovery.js';
import * as smcrConnection from '../../src/smc/smcr/connection.js';

const { positionals, values } = parseArgs({
  allowPositionals: true,
  options: {
    bind: { type: 'string' }, peer: { type: 'string' }, port: { type: 'string' }, bytes: { type: 'string' },
    buffer: { type: 'string', default: String(64 << 10) }, pause: { type: 'string', default: '5' },
    stall: { type: 'boolean' }, api: { type: 'string', default: 'smc' }, 'no-end': { type: 'boolean' },
  },
});
const out = (o: Record<string, unknown>) => process.stdout.write(`${JSON.stringify(o)}\n`);
smc.setSmcLearning(false);

const role = positionals[0];
if (role === 'server') {
  const pause = Number(values.pause);
  const server = smc.createServer({ smcr: true, allowHalfOpen: true, smcBufferSize: Number(values.buffer) }, (s) => {
    const events: string[] = [];
    let received = 0;
    let first = true;
    s.on('end', () => { events.push('end'); s.destroy(); });
    s.on('error', (e: NodeJS.ErrnoException) => events.push(`error:${e.code}`));
    s.on('close', () => { events.push('close'); out({ server: 'closed', received, events, mode: smc.getSmcInfo(s).mode }); });
    s.on('data', (d: Buffer) => {
      if (first) {
        first = false;
        out({ server: 'conn', mode: smc.getSmcInfo(s).mode });
        s.end();
        if (values.stall) s.pause();
        return;
      }
      received += d.length;
      s.pause();
      setTimeout(() => s.resume(), pause);
    });
  });
  server.listen(Number(values.port), values.bind, () => out({ listening: Number(values.port) }));
  // The device comes up after listen(): ready once the SMC-R listen is on it.
  const wait = setInterval(() => {
    if (smcrListenCount() < 1) return;
    clearInterval(wait);
    out({ ready: true, pid: process.pid });
  }, 5);
} else if (role === 'client') {
  const total = Number(values.bytes);
  let sent = 0;
  let finished = false;
  const opts = { host: values.peer!, port: Number(values.port), localAddress: values.bind!, allowHalfOpen: true };
  const s = values.api === 'net' ? net.connect(opts) : smc.connect({ ...opts, smcr: true });
  s.on('error', (e: NodeJS.ErrnoException) => out({ error: e.code, message: e.message, at: Date.now() }));
  s.on('end', async () => {
    out({ client: 'end', mode: smc.getSmcInfo(s).mode });
    const buf = Buffer.alloc(64 << 10, 'u');
    let told = false;
    while (sent < total && !s.destroyed) {
      const chunk = buf.subarray(0, Math.min(buf.length, total - sent));
      sent += chunk.length;
      if (!s.write(chunk)) {
        if (!told) { told = true; out({ waiting: true, sent, at: Date.now() }); }
        await new Promise<void>((r) => {
          const go = () => { s.off('drain', go); s.off('close', go); r(); };
          s.on('drain', go);
          s.on('close', go);
        });
      }
    }
    if (!s.destroyed && !values['no-end']) s.end(() => { finished = true; out({ finished: sent }); });
  });
  s.resume();
  s.write('hi');
  // The writers holding the event loop (none once the write is done or failed); a copy without the hold has no count.
  const waitingWriters = (smcrConnection as { smcrWaitingWriters?: () => number }).smcrWaitingWriters;
  process.on('exit', () => {
    const mode = smc.getSmcInfo(s).mode;
    out({
      exit: true, sent, finished, writableLength: s.writableLength, destroyed: s.destroyed, mode,
      ...(mode === 'SMCR' ? { waitingWriters: waitingWriters?.() ?? 'none' } : {}),
    });
  });
} else {
  throw new Error(`unknown role ${role}`);
}
