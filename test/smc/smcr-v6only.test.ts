// An IPv6-only '::' SMC server with SMC-R (an IPv6 review's finding): SMC-R runs over IPv4 only,
// so such a listener must not answer SMC-R discovery for its port. It did, as a wildcard over
// the host's IPv4 devices, and an IPv4 client then sent its Proposal to whatever held the port
// for IPv4: here a plain node:net server, which got CLC bytes ahead of the application's.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import net from 'node:net';
import { testRuntimeDir } from '../helpers/runtime-dir.js';

testRuntimeDir('smcr-v6only');
process.env.SOFTRDMA_SMC_LEARN = '0';
const smc = await import('../../src/smc/index.js');
const { createRxeDevice } = await import('../../src/index.js');
smc.setSmcLearning(false);

async function until(what: string, cond: () => boolean, ms = 10_000): Promise<void> {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > ms) throw new Error(`no ${what} within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

test("a plain IPv4 server beside an ipv6Only '::' SMC-R listener on the same port gets only the application's bytes", async (t) => {
  const V4 = '127.0.0.5';
  const dev = await createRxeDevice({ address: V4, port: 0 });
  t.after(() => dev.close());
  const s6 = smc.createServer({ smcr: { device: dev } }, (s) => { s.on('error', () => {}); s.pipe(s); });
  s6.listen({ port: 0, host: '::', ipv6Only: true });
  await once(s6, 'listening');
  t.after(() => s6.close());
  const port = (s6.address() as net.AddressInfo).port;
  let got = Buffer.alloc(0);
  const plain = net.createServer((s) => { s.on('error', () => {}); s.on('data', (d: Buffer) => { got = Buffer.concat([got, d]); }); });
  plain.listen(port, '0.0.0.0');
  await once(plain, 'listening');
  t.after(() => plain.close());
  // Twice: the first connection may go TCP while its discovery query is out; the second reads the answer.
  for (let i = 0; i < 2; i++) {
    got = Buffer.alloc(0);
    const c = smc.connect({ host: V4, port, localAddress: V4, smcr: { device: dev } });
    c.on('error', () => {});
    await once(c, 'connect');
    c.write('app');
    await until('the client settled and the plain server read 3 bytes', () => !smc.getSmcInfo(c).pending && got.length >= 3);
    assert.equal(got.toString('latin1'), 'app', `connection ${i + 1}: ${got.subarray(0, 8).toString('hex')} (CLC: e2d4c3d9)`);
    assert.equal(smc.getSmcInfo(c).mode, 'TCP');
    c.destroy();
  }
});
