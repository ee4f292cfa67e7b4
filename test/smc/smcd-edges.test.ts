// SMC-D at the edges of a connection's life. An SMC-D server whose handshake timer runs out
// after its Accept went out: the client goes to
// SMC-D as it sends its Confirm, so the server must not fall back to TCP then (the client's
// data would go into a DMB nobody reads, ours to a TCP stream nobody reads). Here the Confirm is
// in the kernel when the timer fires (one process, the event loop blocked past the timeout
// right after the client settled: libuv runs timers before it reads): the server reads it and
// both ends are SMC-D, data flowing. And a socket destroyed from a process's 'exit' listener.

import assert from 'node:assert/strict';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { runNode } from '../helpers/procs.js';
import { testRuntimeDir } from '../helpers/runtime-dir.js';

testRuntimeDir('smcd-edges');
const smc = await import('../../src/smc/index.js');
const { kSmc: kSmcSym } = await import('../../src/smc/state.js');
smc.setSmcLearning(false);

/** Busy-wait: the event loop does nothing else meanwhile. */
function block(ms: number): void {
  const t0 = performance.now();
  while (performance.now() - t0 < ms) { /* blocked */ }
}

test('a server timer that runs out with the Confirm unread: the server reads it after the poll and settles on SMC-D', async (t) => {
  const got: Buffer[] = [];
  let serverSide: Parameters<typeof smc.getSmcInfo>[0] | undefined;
  const server = smc.createServer({ smcHandshakeTimeout: 20 }, (s) => {
    serverSide = s;
    s.on('data', (d: Buffer) => got.push(d));
    s.on('error', () => {});
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const c = smc.connect({ port: (server.address() as AddressInfo).port, host: '127.0.0.1' });
  t.after(() => { c.destroy(); server.close(); });
  c.on('error', () => {});
  const [info] = await once(c, 'smc') as [ReturnType<typeof smc.getSmcInfo>];
  // The client sent its Confirm as it settled; keep the server from reading it until its
  // 20 ms handshake timer has run out.
  block(100);
  assert.equal(info.mode, 'SMCD');
  c.write('hello');
  const t0 = Date.now();
  while (Buffer.concat(got).toString() !== 'hello') {
    if (Date.now() - t0 > 5000) throw new Error(`the server got ${JSON.stringify(Buffer.concat(got).toString())}, mode ${serverSide && smc.getSmcInfo(serverSide).mode}`);
    await new Promise((r) => setTimeout(r, 5));
  }
  assert.equal(smc.getSmcInfo(serverSide!).mode, 'SMCD');
});

test('an SMC-D socket destroyed by an exit listener after the device\'s: no crash, exit 0', async () => {
  const p = runNode(fileURLToPath(new URL('../helpers/smc-exit-destroy.js', import.meta.url)), []);
  assert.equal(await p.exit(20_000), 0, p.stdout + p.stderr);
  assert.match(p.stdout, /client SMCD\ndestroyed in exit\n/);
});

test('an SMC-D \'data\' handler that throws: uncaughtException, and the writes after it still arrive', async () => {
  const p = runNode(fileURLToPath(new URL('../helpers/smc-throwing-handler.js', import.meta.url)), []);
  assert.equal(await p.exit(20_000), 0, p.stdout + p.stderr);
  assert.match(p.stdout, /client SMCD\n/);
  assert.match(p.stdout, /uncaught: application bug\n/);
  assert.match(p.stdout, /server got abc\n/);
});

test('a TLS server with SMC and a client that never speaks: tlsClientError ERR_TLS_HANDSHAKE_TIMEOUT after handshakeTimeout, as node:tls', async (t) => {
  const tls = await import('node:tls');
  const net = await import('node:net');
  const srv = tls.createServer({ handshakeTimeout: 200 });
  smc.enableSmcOnServer(srv, (await import('../../src/smc/options.js')).resolveSmcOptions({}));
  const errors: string[] = [];
  srv.on('tlsClientError', (e: NodeJS.ErrnoException) => errors.push(e.code ?? e.message));
  srv.listen(0, '127.0.0.1');
  await once(srv, 'listening');
  const c = net.connect((srv.address() as AddressInfo).port, '127.0.0.1');
  c.on('error', () => {});
  t.after(() => { c.destroy(); srv.close(); });
  const t0 = Date.now();
  while (errors.length === 0) {
    if (Date.now() - t0 > 5000) throw new Error('no tlsClientError');
    await new Promise((r) => setTimeout(r, 10));
  }
  assert.deepEqual(errors, ['ERR_TLS_HANDSHAKE_TIMEOUT']);
});

test('a socket\'s idle timeout does not fire while the SMC handshake is under way, and fires once it settled and the connection is idle', async (t) => {
  const timeouts: string[] = [];
  let gotTimeout!: () => void;
  const settledTimeout = new Promise<void>((r) => { gotTimeout = r; });
  const server = smc.createServer((s) => {
    s.setTimeout(5);
    s.on('timeout', () => {
      const info = smc.getSmcInfo(s);
      timeouts.push(info.pending ? `during the handshake ${(s as unknown as Record<symbol, { phase: string; clcIn: number; clcOut: number }>)[kSmcSym]!.phase}` : info.mode);
      if (!info.pending) gotTimeout();
    });
    s.on('error', () => {});
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const c = smc.connect({ port: (server.address() as AddressInfo).port, host: '127.0.0.1' });
  c.on('error', () => {});
  t.after(() => { c.destroy(); server.close(); });
  // The server's Accept reaches the client: hold the event loop for six of the server's timeout
  // periods before the client answers with its Confirm, the server waiting in between.
  let held = false;
  (c as unknown as { push: (chunk: unknown) => boolean }).push = function (this: typeof c, chunk: unknown): boolean {
    if (!held && chunk !== null) {
      held = true;
      block(30);
    }
    return Object.getPrototypeOf(this).push.call(this, chunk);
  };
  const [info] = await once(c, 'smc') as [ReturnType<typeof smc.getSmcInfo>];
  assert.equal(info.mode, 'SMCD');
  assert.ok(held, 'the client read the server\'s answer');
  const bound = setTimeout(() => gotTimeout(), 5000);
  await settledTimeout;
  clearTimeout(bound);
  // Before the Proposal is read the server is idle as over TCP (a slow loop may time it out
  // there); while its Accept waits for the Confirm it is not.
  assert.deepEqual(timeouts.filter((x) => x !== 'during the handshake srv-wait'), ['SMCD']);
});

test('a client\'s timeout set at \'connect\' still fires on time when the listener never answers its Proposal (its process stuck)', async (t) => {
  const p = runNode(fileURLToPath(new URL('../helpers/smc-stuck-listener.js', import.meta.url)), [], { stdin: 'pipe' });
  t.after(async () => { p.child.stdin?.end(); await p.exit(10_000).catch(() => p.child.kill('SIGKILL')); });
  const [, port] = await p.waitFor(/\{"port":(\d+)\}/);
  const c = smc.connect({ port: Number(port), host: '127.0.0.1' });
  c.on('error', () => {});
  t.after(() => c.destroy());
  await once(c, 'connect');
  assert.equal(smc.getSmcInfo(c).pending, true, 'the Proposal is out, unanswered');
  const t0 = performance.now();
  c.setTimeout(100);
  const timedOut = await Promise.race([once(c, 'timeout').then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), 1500))]);
  assert.ok(timedOut, 'no timeout within 1.5 s (the handshake timer is 2 s)');
  assert.ok(performance.now() - t0 < 1000, `timed out after ${(performance.now() - t0).toFixed(0)} ms`);
});
