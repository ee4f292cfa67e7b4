// SMC-D writes that wait for room in the peer's ring after the peer's end() was read. TCP tells
// nothing more then (libuv reads no further, and SMC-D never writes there), so:
// - a peer killed meanwhile must still be noticed: node:net's write fails (EPIPE); ours ends
//   in ECONNRESET, as a peer that died with data of ours unread does elsewhere (close.ts);
// - the waiting write must keep the process alive, as node:net's pending write does, or the
//   process exits mid-upload and the peer sees a clean end of a truncated stream;
// - and a live peer that only stops reading for a while is no dead one.
// The peers are processes of their own (smcd-stall-peer.ts): death and exit are per process.

import assert from 'node:assert/strict';
import { once } from 'node:events';
import type net from 'node:net';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { jsonLines, runNode, type Proc } from '../helpers/procs.js';
import { testRuntimeDir } from '../helpers/runtime-dir.js';
import { recordEvents } from '../helpers/socket-events.js';
import type { ServerOptions } from '../../src/smc/index.js';

testRuntimeDir('smcd-peer-death');
const smc = await import('../../src/smc/index.js');
smc.setSmcLearning(false);

const PEER = fileURLToPath(new URL('./smcd-stall-peer.js', import.meta.url));

/** p, or a rejection naming what did not happen within ms. */
function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => { timer = setTimeout(() => reject(new Error(`no ${what} within ${ms} ms`)), ms); });
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}

/** An SMC listener on 127.0.0.1 with handler; closed when the test ends. */
async function listen(t: { after(fn: () => void): void }, opts: ServerOptions, handler: (s: net.Socket) => void): Promise<number> {
  const server = smc.createServer(opts, handler);
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.after(() => server.close());
  return (server.address() as net.AddressInfo).port;
}

function peer(t: { after(fn: () => void): void }, args: string[]): Proc {
  const p = runNode(PEER, args);
  t.after(() => { if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill('SIGKILL'); });
  return p;
}

/** Write 64 KiB chunks (waiting for 'drain') until the socket closes. */
async function writeUntilClosed(s: net.Socket): Promise<void> {
  const buf = Buffer.alloc(64 << 10, 'w');
  while (!s.destroyed) {
    if (!s.write(buf)) await new Promise((r) => { s.once('drain', r); s.once('close', r); });
  }
}

test('a peer killed after its end(): the write waiting for its ring fails (ECONNRESET) and the socket closes', async (t) => {
  let rec: ReturnType<typeof recordEvents> | undefined;
  let sock: net.Socket | undefined;
  let onEnd!: () => void;
  const ended = new Promise<void>((resolve) => { onEnd = resolve; });
  const port = await listen(t, { allowHalfOpen: true }, (s) => {
    sock = s;
    rec = recordEvents(s);
    s.resume();
    s.on('end', () => { onEnd(); void writeUntilClosed(s); });
  });
  const p = peer(t, ['halfclose', String(port)]);
  await p.waitFor(/"ready":true/);
  await within(ended, 10_000, "the server's 'end'");
  assert.equal(smc.getSmcInfo(sock!).mode, 'SMCD');
  // The server writes more than the peer's ring holds: a write waits for the peer.
  await within(new Promise<void>((r) => { const c = () => (sock!.writableLength > 0 ? r() : setTimeout(c, 1)); c(); }), 10_000, 'a waiting write');
  p.child.kill('SIGKILL');
  await within(rec!.closed, 10_000, "'close' after the peer was killed");
  assert.deepEqual(rec!.events, ['end', 'error:ECONNRESET', 'close']);
});

test('a live peer that stops reading after its end(): the waiting write is not failed, and completes when it reads again', async (t) => {
  const total = 8 << 20;
  let rec: ReturnType<typeof recordEvents> | undefined;
  let wrote: Promise<void> | undefined;
  const port = await listen(t, { allowHalfOpen: true }, (s) => {
    rec = recordEvents(s);
    s.resume();
    s.on('end', () => { wrote = new Promise((r) => s.end(Buffer.alloc(total, 'w'), r)); });
  });
  // It reads again after 1.5 s: the waiting writer has looked for its process meanwhile.
  const p = peer(t, ['halfclose', String(port), '1500']);
  const got = await p.waitUntil((out) => jsonLines(out).find((l) => 'received' in l), 'received', 20_000);
  assert.equal(got.received, total);
  await within(wrote!, 10_000, 'the write callback');
  await within(rec!.closed, 10_000, "'close'");
  assert.deepEqual(rec!.events, ['end', 'close']);
});

test('a writer whose peer half-closed and reads slowly: its process stays until the upload is done', async (t) => {
  const total = 4 << 20;
  let received = 0;
  let serverSaw: Promise<string[]> | undefined;
  // A small ring and a slow reader: the writer waits, asleep, again and again.
  const port = await listen(t, { allowHalfOpen: true, smcBufferSize: 64 << 10 }, (s) => {
    const rec = recordEvents(s);
    serverSaw = rec.closed.then(() => rec.events);
    let first = true;
    s.on('data', (d: Buffer) => {
      if (first) { first = false; s.end(); return; }
      received += d.length;
      s.pause();
      setTimeout(() => s.resume(), 5);
    });
    s.on('end', () => s.destroy());
  });
  const p = peer(t, ['upload', String(port), String(total)]);
  assert.equal(await p.exit(30_000), 0, p.stdout + p.stderr);
  const lines = jsonLines(p.stdout);
  assert.deepEqual(lines.find((l) => 'exit' in l), { exit: true, sent: total, writableLength: 0, mode: 'SMCD' }, p.stdout);
  assert.ok(lines.some((l) => l.finished === total), `the upload did not finish: ${p.stdout}`);
  assert.deepEqual(await within(serverSaw!, 10_000, "the server's 'close'"), ['end', 'close']);
  assert.equal(received, total);
});

for (const api of ['net', 'smc']) {
  test(`a writer whose peer half-closed, with nothing left to write, exits on its own (${api})`, async (t) => {
    const port = await listen(t, { allowHalfOpen: true }, (s) => {
      s.on('error', () => {});
      s.once('data', () => s.end());
      s.resume();
    });
    const p = peer(t, ['upload', String(port), String(16 << 10), '--api', api, '--no-end']);
    assert.equal(await p.exit(10_000), 0, p.stdout + p.stderr);
    assert.deepEqual(jsonLines(p.stdout).find((l) => 'exit' in l), { exit: true, sent: 16 << 10, writableLength: 0, mode: api === 'net' ? 'TCP' : 'SMCD' }, p.stdout);
  });
}
