// smcr-review-datapath.test.ts's process for an application callback that throws: an SMC-R echo
// server whose 'data' handler throws once, in a process that handles uncaught exceptions (as a
// server may). Two connections in one link group: the first one's data makes the handler
// throw; the second must still echo (the link's completion handling goes on), and the
// exception must still reach 'uncaughtException'. Prints one JSON line and exits.

import type net from 'node:net';
import { once } from 'node:events';
import { listenBehindRelay } from '../helpers/tcp-relay.js';

process.env.SOFTRDMA_SMC_LEARN = '0';
const smc = await import('../../src/smc/index.js');
const { SmcrLinkGroup } = await import('../../src/smc/smcr/lgr.js');
const { twoDevices } = await import('../helpers/pair.js');

const thrown: string[] = [];
process.on('uncaughtException', (e) => { thrown.push(e.message); });
const out = (o: Record<string, unknown>) => { process.stdout.write(`${JSON.stringify(o)}\n`); process.exit(0); };
setTimeout(() => out({ fail: 'the scenario did not end within 15 s', thrown }), 15_000).unref();

const { a, b } = await twoDevices();
let first = true;
const server = smc.createServer({ smcr: { device: b } }, (s) => {
  s.on('error', () => {});
  s.on('data', (d: Buffer) => {
    if (first && d.toString().includes('boom')) {
      first = false;
      throw new Error('application bug in a data handler');
    }
  });
  s.pipe(s);
});
// A plain TCP relay: the server's own port would give a local client SMC-D.
const relay = await listenBehindRelay(server, '127.0.0.3', '127.0.0.2');

const connect = async () => {
  const s = smc.connect({ host: '127.0.0.3', port: (relay.address() as net.AddressInfo).port, localAddress: '127.0.0.2', smcr: { device: a, discovery: false } });
  s.on('error', () => {});
  const [info] = await once(s, 'smc') as [{ mode: string }];
  return { s, mode: info.mode };
};
const echo = (s: net.Socket, line: string, ms: number) => new Promise<string>((resolve) => {
  let got = '';
  const t = setTimeout(() => resolve(`no echo of ${JSON.stringify(line)} within ${ms} ms`), ms);
  s.on('data', (d: Buffer) => { got += d.toString(); if (got.includes(line)) { clearTimeout(t); resolve('ok'); } });
  s.write(line);
});

const c1 = await connect();
const c2 = await connect();
const before = [await echo(c1.s, 'one\n', 3000), await echo(c2.s, 'two\n', 3000)];
c1.s.write('boom\n');
await new Promise((r) => setTimeout(r, 200));
const after = await echo(c2.s, 'after\n', 3000);
const again = await echo(c1.s, 'again\n', 3000);
const g = SmcrLinkGroup.list().find((x) => x.role === 'server');
out({ modes: [c1.mode, c2.mode], before, after, again, thrown, serverLinkDown: g?.link.isDown ?? null, serverConns: g?.conns.size ?? 0 });
