// socket.setTimeout() around one large SMC-D write that the peer drains slowly: node:net's
// _onTimeout holds 'timeout' back while the write queue shrinks, so a write making steady
// progress is activity; one making none still times out.

import assert from 'node:assert/strict';
import { once } from 'node:events';
import type net from 'node:net';
import { test } from 'node:test';
import { testRuntimeDir } from '../helpers/runtime-dir.js';
import type { SmcInfo } from '../../src/smc/index.js';

testRuntimeDir('smcd-write-timeout');
const smc = await import('../../src/smc/index.js');
smc.setSmcLearning(false);

/** A client connected over SMC-D to a server whose sockets get onServer; closed when the test ends. */
async function pair(t: { after(fn: () => void): void }, onServer: (s: net.Socket) => void): Promise<net.Socket> {
  // A 64 KiB ring: a 2 MiB write goes in 32 or more parts, each when the reader made room.
  const server = smc.createServer({ smcBufferSize: 64 << 10 }, (s) => { s.on('error', () => {}); onServer(s); });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const c = smc.connect({ port: (server.address() as net.AddressInfo).port, host: '127.0.0.1' });
  t.after(() => { c.destroy(); server.close(); });
  c.on('error', () => {});
  const [info] = await once(c, 'smc') as [SmcInfo];
  assert.equal(info.mode, 'SMCD');
  return c;
}

test('one large write the peer drains slowly but steadily: no \'timeout\'', async (t) => {
  // Each read is followed by a 20 ms pause: progress every 20 ms or so, the timeout 300 ms.
  const c = await pair(t, (s) => s.on('data', () => { s.pause(); setTimeout(() => s.resume(), 20); }));
  let timeouts = 0;
  c.setTimeout(300, () => { timeouts++; });
  const t0 = performance.now();
  await new Promise((resolve) => c.write(Buffer.alloc(2 << 20), resolve));
  const ms = performance.now() - t0;
  assert.ok(ms > 400, `the write took only ${ms} ms: it did not outlast the timeout`);
  assert.equal(timeouts, 0);
});

test('one large write the peer does not drain: \'timeout\' comes', async (t) => {
  const c = await pair(t, (s) => s.pause());
  c.setTimeout(200);
  c.write(Buffer.alloc(2 << 20));
  const late = setTimeout(() => c.destroy(new Error('no timeout within 5 s')), 5000);
  t.after(() => clearTimeout(late));
  await once(c, 'timeout');
});

test('an empty write into a full ring waits for nothing: no write_blocked, no writer holding the process', async (t) => {
  const c = await pair(t, (s) => s.pause());
  const { kSmc } = await import('../../src/smc/state.js');
  const conn = (c as unknown as Record<symbol, { conn: { write(d: Uint8Array): number; writeSpace: number; writerWaits: boolean } }>)[kSmc]!.conn;
  // Fill the peer's ring exactly, then the empty write.
  assert.equal(conn.write(new Uint8Array(conn.writeSpace)) > 0, true);
  assert.equal(conn.writeSpace, 0);
  assert.equal(conn.writerWaits, false, 'a write that took everything waits for nothing');
  assert.equal(conn.write(new Uint8Array(0)), 0);
  assert.equal(conn.writerWaits, false, 'nor does an empty one');
});
