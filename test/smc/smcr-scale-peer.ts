// One end of smcr-scale.test.ts, run as its own process in a network namespace with no rxe
// device of its own (`smcr: true` brings one up). Prints JSON lines the test waits on.
//
//   node smcr-scale-peer.js server --bind A --port P
//       a softrdma/smc echo server with smcr: true and 64 KiB buffers.
//   node smcr-scale-peer.js client --bind B --peer A --port P --test bulk|many [--mib N] [--conns N]
//       bulk: one connection, N MiB out and echoed back, hashed both ways (sha256);
//       many: N connections at once, each 64 KiB echoed; reports the link groups while all
//       are open (SMC-R packs them into one group, up to 255 connections).

import { createHash } from 'node:crypto';
import { parseArgs } from 'node:util';
import * as smc from '../../src/smc/index.js';
import { SmcrLinkGroup } from '../../src/smc/smcr/lgr.js';
import { pattern } from '../helpers/pattern.js';

const { positionals, values } = parseArgs({
  allowPositionals: true,
  options: {
    bind: { type: 'string' }, peer: { type: 'string' }, port: { type: 'string' }, test: { type: 'string' },
    mib: { type: 'string', default: '256' }, conns: { type: 'string', default: '200' },
  },
});
const out = (o: Record<string, unknown>) => process.stdout.write(`${JSON.stringify(o)}\n`);
const sha = () => createHash('sha256');
const opts = { smcr: true, smcBufferSize: 64 * 1024 } as const;

if (positionals[0] === 'server') {
  smc.createServer(opts, (s) => { s.pipe(s); s.on('error', () => undefined); }).listen(Number(values.port), values.bind, () => out({ listening: true }));
} else {
  const connect = () => new Promise<smc.Socket>((resolve, reject) => {
    const s = smc.connect({ host: values.peer!, port: Number(values.port), localAddress: values.bind!, ...opts });
    s.once('error', reject);
    s.once('smc', () => resolve(s));
  });
  /** Send n bytes of a seeded pattern in 256 KiB writes; resolve with the sha256 of what came back once n bytes did. */
  const echo = (s: smc.Socket, n: number, seed: number) => new Promise<{ sent: string; got: string }>((resolve, reject) => {
    const hIn = sha(), hOut = sha();
    let got = 0;
    s.on('error', reject);
    s.on('data', (d: Buffer) => { hIn.update(d); got += d.length; if (got >= n) resolve({ sent: hOut.digest('hex'), got: hIn.digest('hex') }); });
    const chunk = 256 * 1024;
    let off = 0;
    const pump = () => {
      while (off < n) {
        const b = pattern(Math.min(chunk, n - off), seed + off);
        hOut.update(b);
        off += b.length;
        if (!s.write(b)) return void s.once('drain', pump);
      }
    };
    pump();
  });
  if (values.test === 'bulk') {
    const n = Number(values.mib) << 20;
    const s = await connect();
    const t0 = performance.now();
    const r = await echo(s, n, 1);
    const ms = performance.now() - t0;
    const info = smc.getSmcInfo(s);
    s.end();
    out({ client: 'bulk', mode: info.mode, bytes: n, ok: r.sent === r.got, ms: Math.round(ms), smcBytesSent: info.smcBytesSent });
  } else {
    const count = Number(values.conns);
    const socks = await Promise.all(Array.from({ length: count }, connect));
    const modes = socks.map((s) => smc.getSmcInfo(s).mode);
    const groups = SmcrLinkGroup.list().map((g) => g.conns.size);
    const rs = await Promise.all(socks.map((s, i) => echo(s, 64 * 1024, 1000 + i)));
    for (const s of socks) s.end();
    out({ client: 'many', modes: [...new Set(modes)], smcr: modes.filter((m) => m === 'SMCR').length, groups, ok: rs.every((r) => r.sent === r.got) });
  }
  process.exit(0);
}
