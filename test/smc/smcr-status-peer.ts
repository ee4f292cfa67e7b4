// One end of smcr-status.test.ts, run as its own process inside a network namespace: an rxe
// device on its address and one SMC-R connection (`smcr`), held open so that smcss and
// linkgroup can look at it from outside. Prints JSON lines: getSmcInfo() and smcTotals() once
// the connection settled, then `echoed` once 5 bytes went there and back. Runs until killed.
//
//   node smcr-status-peer.js server --bind A --port P --name DEV
//   node smcr-status-peer.js client --bind B --peer A --port P --name DEV

import { parseArgs } from 'node:util';
import type net from 'node:net';
import { createRxeDevice } from '../../src/index.js';
import * as smc from '../../src/smc/index.js';

const { positionals, values } = parseArgs({
  allowPositionals: true,
  options: { bind: { type: 'string' }, peer: { type: 'string' }, port: { type: 'string' }, name: { type: 'string' } },
});
const out = (o: Record<string, unknown>) => process.stdout.write(`${JSON.stringify(o)}\n`);

const device = await createRxeDevice({ address: values.bind!, port: 4791, name: values.name! });
const settled = (sock: net.Socket, info: smc.SmcInfo) => out({ settled: true, info, totals: smc.smcTotals(), localPort: sock.localPort, peerPort: sock.remotePort });

if (positionals[0] === 'server') {
  const server = smc.createServer({ smcr: true }, (sock) => {
    sock.on('error', (e) => out({ error: e.message }));
    sock.once('smc', (info: smc.SmcInfo) => settled(sock, info));
    sock.pipe(sock);
  });
  server.listen(Number(values.port), values.bind, () => out({ listening: true }));
} else {
  const sock = smc.connect({ host: values.peer!, port: Number(values.port), localAddress: values.bind!, smcr: { device, discovery: false } });
  sock.on('error', (e) => out({ error: e.message }));
  sock.once('smc', (info: smc.SmcInfo) => {
    settled(sock, info);
    sock.write('hello');
  });
  sock.once('data', (d: Buffer) => out({ echoed: d.toString() }));
}
