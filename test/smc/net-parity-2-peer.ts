// The other process of net-parity-2.test.ts: an SMC client whose process life is the point.
// Prints JSON lines.
//
//   node net-parity-2-peer.js paused PORT (pause|onread) [--api net]
//       connect, write 'go', and stop reading at the first data (pause(), or an onread callback
//       that returns false); print {stopped, mode}, and {exited} when the process exits. With
//       nothing else to do the process exits, as node:net's: backpressure stopped its handle.
//   node net-parity-2-peer.js flood PORT N
//       connect with an onread callback that stops at once (what the server writes stays
//       unread in our ring), write N bytes, print {written, mode} once they are in the server's
//       buffer, then wait to be killed.

import net from 'node:net';
import { parseArgs } from 'node:util';
import * as smc from '../../src/smc/index.js';

const { positionals, values } = parseArgs({ allowPositionals: true, options: { api: { type: 'string', default: 'smc' } } });
const out = (o: Record<string, unknown>) => process.stdout.write(`${JSON.stringify(o)}\n`);
const api = values.api === 'net' ? net : smc;
smc.setSmcLearning(false);
const [role, port, arg] = positionals;
const mode = (s: net.Socket) => (api === net ? 'TCP' : smc.getSmcInfo(s).mode);

if (role === 'paused') {
  let c: net.Socket;
  if (arg === 'onread') {
    let stopped = false;
    c = api.connect({
      port: Number(port), host: '127.0.0.1',
      onread: { buffer: Buffer.alloc(64 << 10), callback: () => { if (!stopped) { stopped = true; out({ stopped: true, mode: mode(c) }); } return false; } },
    });
  } else {
    c = api.connect(Number(port), '127.0.0.1');
    c.once('data', () => {
      c.pause();
      out({ stopped: true, mode: mode(c) });
    });
  }
  c.on('error', (e: NodeJS.ErrnoException) => out({ error: e.code }));
  c.write('go');
  process.on('exit', () => out({ exited: true }));
} else if (role === 'flood') {
  const c = smc.connect({ port: Number(port), host: '127.0.0.1', onread: { buffer: Buffer.alloc(16 << 10), callback: () => false } });
  c.on('error', (e: NodeJS.ErrnoException) => out({ error: e.code }));
  c.once('smc', () => {
    c.write(Buffer.alloc(Number(arg), 'f'), () => out({ written: Number(arg), mode: mode(c) }));
  });
  setInterval(() => {}, 1000);
} else {
  throw new Error(`unknown role ${role}`);
}
