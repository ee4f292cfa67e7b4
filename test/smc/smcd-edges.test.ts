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

/**
 * A client whose socket resets as the server's first CLC answer reaches it: the reset a client
 * process that exits mid-handshake causes (its kernel holds our CLC bytes unread when it
 * closes). The server's application wrote nothing, so over TCP that close would have been a
 * FIN: its socket ends ('end', 'close' without error) instead of failing with ECONNRESET (a
 * server with no 'error' listener died of it: Node's test-https-agent-unref-socket).
 */
async function resetOnFirstAnswer(serverOpts: Parameters<typeof smc.createServer>[0]): Promise<{ events: string[]; mode: string }> {
  const events: string[] = [];
  let serverSide: Parameters<typeof smc.getSmcInfo>[0] | undefined;
  let closed!: () => void;
  const done = new Promise<void>((r) => { closed = r; });
  const server = smc.createServer(serverOpts, (s) => {
    serverSide = s;
    s.on('data', (d: Buffer) => events.push(`data ${d.length}`));
    s.on('end', () => events.push('end'));
    s.on('error', (e: NodeJS.ErrnoException) => events.push(`error ${e.code}`));
    s.on('close', (hadError: boolean) => { events.push(`close ${hadError}`); closed(); });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const c = smc.connect({ port: (server.address() as AddressInfo).port, host: '127.0.0.1' });
  c.on('error', () => {});
  // The first bytes the client's handle reads are the server's answer: reset instead of reading them.
  let reset = false;
  (c as unknown as { push: (chunk: unknown) => boolean }).push = function (this: typeof c, chunk: unknown): boolean {
    if (!reset && chunk !== null) {
      reset = true;
      this.resetAndDestroy();
      return true;
    }
    return Object.getPrototypeOf(this).push.call(this, chunk);
  };
  try {
    const bound = setTimeout(() => closed(), 5000);
    await done;
    clearTimeout(bound);
    assert.ok(reset, 'the client read no answer from the server');
    return { events, mode: serverSide ? smc.getSmcInfo(serverSide).mode : 'none' };
  } finally {
    c.destroy();
    server.close();
  }
}

test('a client that resets with the server\'s Accept unread (mid-handshake): the server\'s socket ends as on a FIN, no error', async () => {
  const r = await resetOnFirstAnswer({});
  assert.deepEqual(r.events, ['end', 'close false']);
  assert.equal(r.mode, 'TCP');
});

test('a client that resets with the server\'s Decline unread: the server\'s socket, settled on TCP, ends as on a FIN', async () => {
  const r = await resetOnFirstAnswer({ smcPolicy: () => false });
  assert.deepEqual(r.events, ['end', 'close false']);
  assert.equal(r.mode, 'TCP');
});

test('a reset before the server wrote anything is still an error, as on node:net (a plain client that connects and resets)', async () => {
  const net = await import('node:net');
  const run = async (make: typeof net.createServer): Promise<string[]> => {
    const events: string[] = [];
    let closed!: () => void;
    const done = new Promise<void>((r) => { closed = r; });
    const server = make((s) => {
      s.on('end', () => events.push('end'));
      s.on('error', (e: NodeJS.ErrnoException) => events.push(`error ${e.code}`));
      s.on('close', (hadError: boolean) => { events.push(`close ${hadError}`); closed(); });
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const c = net.connect((server.address() as AddressInfo).port, '127.0.0.1');
    c.on('error', () => {});
    c.on('connect', () => c.resetAndDestroy());
    try {
      const bound = setTimeout(() => closed(), 5000);
      await done;
      clearTimeout(bound);
      return events;
    } finally {
      c.destroy();
      server.close();
    }
  };
  const plain = await run(net.createServer);
  assert.deepEqual(plain, ['error ECONNRESET', 'close true']);
  assert.deepEqual(await run(smc.createServer as typeof net.createServer), plain);
});
