// SMC-R: the peer's abort waits for a reader that is not reading, as over SMC-D
// (net-parity-2.test.ts) and node:net: a paused reader whose peer resets the connection after
// writing gets everything the peer wrote, then the end, when it reads again; before, the abort
// destroyed the socket at once (ECONNRESET) and the bytes in the RMB were lost. A reader that
// is reading gets them and then ECONNRESET. One process, no namespaces (smcr-relay-harness.ts).

import assert from 'node:assert/strict';
import type net from 'node:net';
import { test } from 'node:test';
import { testRuntimeDir } from '../helpers/runtime-dir.js';
import { readUntilClosed, recordEvents, type SocketEvents } from '../helpers/socket-events.js';
import type { SmcrConnection as Conn } from '../../src/smc/smcr/connection.js';

testRuntimeDir('smcr-abort-hold');
process.env.SOFTRDMA_SMC_LEARN = '0';
const { setup, settled, until, within } = await import('./smcr-relay-harness.js');
const { smcState } = await import('../../src/smc/state.js');

// More than a stream's buffer holds (16 KiB before Node 22, 64 KiB since), so the paused reader
// is stopped by backpressure, the case node:net holds a reset for: the TCP handle of a reader
// whose buffer still has room reads on, and over TCP it would get the reset at once.
const N = 200_000;

/** A paused client whose server writes N bytes once told ('x'), then does `after`: the client's socket and connection, the N bytes in. */
async function pausedWithData(t: Parameters<typeof setup>[0], after?: (s: net.Socket) => void) {
  const env = await setup(t, (s) => {
    s.once('data', () => s.write(Buffer.alloc(N, 7), () => after?.(s)));
  });
  const c = env.connect();
  assert.equal((await settled(c, 'the client settles')).mode, 'SMCR');
  c.pause();
  const rec = recordEvents(c);
  c.write('x');
  const conn = smcState(c)!.conn as Conn;
  await until(() => conn.unreadNow() + c.readableLength === N, 5000, 'all N bytes in the RMB or the stream');
  assert.ok(c.readableLength >= c.readableHighWaterMark, 'the reader is stopped by backpressure');
  return { c, conn, rec };
}

async function dataThenEnd(c: net.Socket, rec: SocketEvents, events: string[]): Promise<void> {
  // The abort is in; the socket waits for its reader (no timer: the abort has been handled).
  await new Promise((r) => setImmediate(r));
  assert.equal(c.destroyed, false, 'a paused reader is not destroyed by the abort');
  assert.deepEqual(rec.events, []);
  assert.equal(await readUntilClosed(c, rec), N);
  assert.deepEqual(rec.events, events);
}

test('resetAndDestroy() of the peer after it wrote: the paused reader gets the data, then the end (as SMC-D and Linux SMC)', async (t) => {
  const { c, conn, rec } = await pausedWithData(t, (s) => s.resetAndDestroy());
  await until(() => conn.peerAborted, 5000, "the server's abort at the client");
  await dataThenEnd(c, rec, ['end', 'close']);
});

test("the peer's TCP connection reset with no closing CDC (peerReset: its process died): held the same way", async (t) => {
  // The server's socket lets its connection go without a word on the link (a dead process
  // sends none): only what close.ts and data.ts do at a TCP reset tells the client.
  const { c, conn, rec } = await pausedWithData(t);
  conn.peerReset('the peer\'s TCP connection was reset without a closing CDC (process died?)');
  assert.equal(conn.peerAborted, true);
  await dataThenEnd(c, rec, ['end', 'close']);
});

test('a reader that is reading when the abort comes gets the data, then ECONNRESET (as node:net)', async (t) => {
  const env = await setup(t, (s) => { s.once('data', () => s.write(Buffer.alloc(N, 7), () => s.resetAndDestroy())); });
  const c = env.connect();
  assert.equal((await settled(c, 'the client settles')).mode, 'SMCR');
  const rec = recordEvents(c);
  let got = 0;
  c.on('data', (d: Buffer) => { got += d.length; });
  c.write('x');
  await within(rec.closed, 10_000, "the reader's close");
  assert.equal(got, N);
  assert.deepEqual(rec.events, ['error:ECONNRESET', 'close']);
});
