// One end of smcr-auto-device.test.ts, run as its own process in a network namespace, with no
// rxe device of its own: `smcr: true` must bring one up. Prints JSON lines the test waits on.
//
//   node smcr-auto-peer.js server --bind A --port P [--wildcard PORT]
//       softrdma/smc echo servers with smcr: true on A:P (and 0.0.0.0:PORT); prints `ready`
//       once its SIDR listens are up, with the devices it has.
//   node smcr-auto-peer.js client --bind B --peer A --port P --n N [--bytes B]
//       N sequential connections with smcr: true; each writes B bytes (64 KiB), reads the echo, ends, and
//       reports its mode and reasons; then `done` with the devices and counters.
//   node smcr-auto-peer.js holder --bind B
//       binds UDP 4791 on B (what another process's device would hold) and stays.

import dgram from 'node:dgram';
import { randomBytes } from 'node:crypto';
import { parseArgs } from 'node:util';
import { getDeviceList } from '../../src/verbs/api.js';
import * as smc from '../../src/smc/index.js';
import { smcrListenCount, smcrDiscoveryCounters } from '../../src/smc/smcr/discovery.js';
import { smcrAutoDeviceCounters } from '../../src/smc/smcr/auto-device.js';

const { positionals, values } = parseArgs({
  allowPositionals: true,
  options: { bind: { type: 'string' }, peer: { type: 'string' }, port: { type: 'string' }, wildcard: { type: 'string' }, n: { type: 'string', default: '1' }, bytes: { type: 'string', default: '65536' } },
});
const out = (o: Record<string, unknown>) => process.stdout.write(`${JSON.stringify(o)}\n`);
const devices = () => getDeviceList().map((d) => ({ name: d.name, driver: d.driver }));

const role = positionals[0];
if (role === 'server') {
  const listens = [{ port: Number(values.port), host: values.bind }];
  if (values.wildcard) listens.push({ port: Number(values.wildcard), host: '0.0.0.0' });
  for (const l of listens) {
    const server = smc.createServer({ smcr: true }, (s) => {
      s.pipe(s);
      s.on('error', () => undefined);
      s.once('data', () => out({ server: 'conn', port: l.port, mode: smc.getSmcInfo(s).mode }));
    });
    server.listen(l.port, l.host, () => out({ listening: l.port }));
  }
  // The devices come up after listen(): ready once every listen is on one.
  const wait = setInterval(() => {
    if (smcrListenCount() < listens.length) return;
    clearInterval(wait);
    out({ ready: true, devices: devices(), auto: smcrAutoDeviceCounters() });
  }, 5);
} else if (role === 'holder') {
  const u = dgram.createSocket('udp4');
  u.bind(4791, values.bind, () => out({ holding: true }));
} else {
  const one = () => new Promise<Record<string, unknown>>((resolve, reject) => {
    const data = randomBytes(Number(values.bytes));
    const got: Buffer[] = [];
    let n = 0;
    const sock = smc.connect({ host: values.peer!, port: Number(values.port), localAddress: values.bind!, smcr: true });
    sock.on('error', reject);
    sock.on('connect', () => sock.write(data));
    sock.on('data', (d: Buffer) => { got.push(d); n += d.length; if (n >= data.length) sock.end(); });
    sock.on('close', () => {
      const info = smc.getSmcInfo(sock);
      resolve({ client: 'echo', ok: Buffer.concat(got).equals(data), mode: info.mode, reason: info.fallbackReason, cause: info.fallbackCause });
    });
  });
  for (let i = 0; i < Number(values.n); i++) out(await one());
  out({ done: true, devices: devices(), auto: smcrAutoDeviceCounters(), discovery: smcrDiscoveryCounters() });
}
