// handshake-review-5.test.ts's process for 'smc' listeners that throw, in a process that handles
// uncaught exceptions (as a server may): what the application wrote and ended during the
// handshake, and the bytes that came with the settle, must still go where node:net would send
// them. Prints one JSON line and exits. Modes:
//   smcd    client writes and ends while its SMC-D handshake is under way, its 'smc' listener throws
//   tcp     the same against a server that does not take SMC (the client settles TCP at 'connect')
//   banner  an SMC server that writes first, both 'smc' listeners throw: the client gets the banner

import { once } from 'node:events';
import type net from 'node:net';

process.env.SOFTRDMA_SMC_LEARN = '0';
const smc = await import('../../src/smc/index.js');
smc.setSmcLearning(false);

const mode = process.argv[2];
const thrown: string[] = [];
process.on('uncaughtException', (e) => { thrown.push(e.message); });
const events: string[] = [];
const out = (o: Record<string, unknown>) => { process.stdout.write(`${JSON.stringify({ ...o, thrown, events })}\n`); process.exit(0); };
setTimeout(() => out({ fail: 'the scenario did not end within 5 s' }), 5000).unref();
const boom = (who: string) => () => { throw new Error(`${who} smc listener`); };
const code = (e?: Error | null) => (e as NodeJS.ErrnoException | null | undefined)?.code ?? 'ok';

let serverGot: string | undefined;
const server = smc.createServer({ smc: mode !== 'tcp', smcHandshakeTimeout: 500 }, (s: net.Socket) => {
  s.on('error', () => {});
  if (mode === 'banner') {
    s.once('smc', boom('server'));
    s.write('banner', (e) => events.push(`server write ${code(e)}`));
    s.end();
    return;
  }
  let d = '';
  s.on('data', (x: Buffer) => { d += x.toString(); });
  s.on('end', () => { serverGot = d; s.end(); });
});
server.listen(0, '127.0.0.1');
await once(server, 'listening');
const c = smc.connect({ port: (server.address() as net.AddressInfo).port, host: '127.0.0.1' });
c.on('error', (e: NodeJS.ErrnoException) => events.push(`client error ${e.code}`));
c.once('smc', boom('client'));
let clientGot = '';
c.on('data', (x: Buffer) => { clientGot += x.toString(); });
if (mode !== 'banner') {
  c.write('hello', (e) => events.push(`client write ${code(e)}`));
  c.end(() => events.push('client end'));
}
await once(c, 'end');
await once(c, 'close');
out({ mode: smc.getSmcInfo(c).mode, serverGot, clientGot });
