// TCP's close rule, kept over SMC-D: closing with nothing unread is an orderly close (the peer
// sees 'end'), closing with unread data is an abort (the peer sees ECONNRESET). Each sequence
// runs once over node:net and once over SMC-D, and both ends must see the same events.

import assert from 'node:assert/strict';
import { once } from 'node:events';
import net from 'node:net';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import * as smc from '../../src/smc/index.js';
import { CONN_ABORT, CONN_DONE_WRITING, PROD_WRITE_BLOCKED } from '../../src/smc/cdc.js';
import { smcState } from '../../src/smc/state.js';

// The close rule over SMC-D, over many short connections to one server: without this, the
// learned handshake control would send most of them to TCP (it has its own test).
smc.setSmcLearning(false);
import { waitFor } from '../helpers/pair.js';
import { runNode } from '../helpers/procs.js';
import { testRuntimeDir } from '../helpers/runtime-dir.js';

const runtime = testRuntimeDir('close-parity');

type Kind = 'net' | 'smc';

/** The events a socket emits, in order; a run of 'data' events counts once. */
function record(sock: net.Socket): string[] {
  const seen: string[] = [];
  const emit = sock.emit;
  sock.emit = function (this: net.Socket, ev: string | symbol, ...args: unknown[]): boolean {
    let name: string | undefined;
    if (ev === 'error') name = `error:${(args[0] as NodeJS.ErrnoException).code}`;
    else if (ev === 'data' || ev === 'end' || ev === 'finish' || ev === 'close') name = ev;
    if (name && !(name === 'data' && seen.at(-1) === 'data')) seen.push(name);
    return emit.apply(this, [ev, ...args] as Parameters<typeof emit>);
  } as typeof sock.emit;
  sock.on('error', () => {}); // recorded above; a server without a listener would crash on it
  return seen;
}

/** 'close', whatever errors come first (events.once would reject on 'error'). */
function closed(s: net.Socket): Promise<void> {
  const emitted = (s as unknown as { _readableState: { closeEmitted: boolean } })._readableState.closeEmitted;
  return emitted ? Promise.resolve() : new Promise((r) => s.once('close', () => r()));
}

function bounded<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let t: NodeJS.Timeout;
  return Promise.race([p, new Promise<T>((_, rej) => { t = setTimeout(() => rej(new Error(`${what}: not within ${ms} ms`)), ms); })])
    .finally(() => clearTimeout(t));
}

interface Ends { client: net.Socket; server: net.Socket }

/** A connected pair over node:net or over SMC-D (both ends settled), each end recorded. */
async function pair(kind: Kind): Promise<Ends & { events: { client: string[]; server: string[] }; close(): void }> {
  const srv = kind === 'net' ? net.createServer() : smc.createServer();
  srv.listen(0, '127.0.0.1');
  await once(srv, 'listening');
  const port = (srv.address() as net.AddressInfo).port;
  const accepted = once(srv, 'connection') as Promise<[net.Socket]>;
  const client = kind === 'net' ? net.connect(port, '127.0.0.1') : smc.connect(port, '127.0.0.1');
  const events = { client: record(client), server: [] as string[] };
  const [server] = await bounded(accepted, 5000, 'accept');
  events.server = record(server);
  if (kind === 'smc') {
    const settled = (s: net.Socket) => {
      const i = smc.getSmcInfo(s);
      return i.pending ? (once(s, 'smc') as Promise<[smc.SmcInfo]>).then(([x]) => x) : Promise.resolve(i);
    };
    const [a, b] = await bounded(Promise.all([settled(client), settled(server)]), 5000, 'SMC handshake');
    assert.equal(a.mode, 'SMCD', 'client mode');
    assert.equal(b.mode, 'SMCD', 'server mode');
  } else {
    await once(client, 'connect');
  }
  return { client, server, events, close: () => { client.destroy(); server.destroy(); srv.close(); } };
}

interface Scenario {
  name: string;
  run(e: Ends): void | Promise<void>;
}

const scenarios: Scenario[] = [
  {
    name: 'the client reads the whole reply, then destroy()',
    run({ client, server }) {
      server.on('data', () => server.write('reply'));
      client.on('data', () => client.destroy());
      client.write('req');
    },
  },
  {
    name: 'the server answers and end()s, the client reads to the end',
    run({ client, server }) {
      server.on('data', () => server.end('reply'));
      client.resume();
      client.write('req');
    },
  },
  {
    name: 'the server destroy()s once its reply is written',
    run({ client, server }) {
      server.on('data', () => server.write('reply', () => server.destroy()));
      client.resume();
      client.write('req');
    },
  },
  {
    name: 'the server destroy()s at once, having read nothing',
    run({ client, server }) {
      client.resume();
      server.destroy();
    },
  },
  {
    name: 'both ends destroy() at once after an exchange',
    run({ client, server }) {
      server.on('data', () => server.write('reply'));
      client.on('data', () => { client.destroy(); server.destroy(); });
      client.write('req');
    },
  },
  {
    name: 'half-close: the client end()s, the server answers and end()s',
    run({ client, server }) {
      server.resume();
      server.on('end', () => server.end('reply'));
      client.resume();
      client.end('req');
    },
  },
  {
    name: 'the client destroy()s with unread data: an abort',
    async run({ client, server }) {
      // More than the client's stream takes in before it stops reading: the rest stays unread
      // in the kernel (TCP) or the ring (SMC-D).
      server.on('data', () => server.write(Buffer.alloc(1 << 20)));
      client.write('req');
      await waitFor('the reply begins to arrive', () => client.readableLength > 0);
      client.destroy();
    },
  },
  {
    name: 'resetAndDestroy(): an abort',
    run({ client, server }) {
      server.on('data', () => server.write('reply'));
      client.on('data', () => client.resetAndDestroy());
      client.write('req');
    },
  },
  {
    name: 'the client destroy()s while a write is still queued, the server reads it all later',
    async run({ client, server }) {
      server.pause();
      const big = Buffer.alloc(8 << 20);
      client.write(big);
      await waitFor('a write held back', () => client.writableLength > 0);
      client.destroy();
      await closed(client);
      server.resume();
    },
  },
  {
    // A reader that closes while the writer still has most of a long write to send: over TCP
    // the bytes that keep coming draw a RST, and the writer gets ECONNRESET, not 'end'.
    name: 'the server destroy()s while the client is still writing 64 MiB: the client sees ECONNRESET',
    run({ client, server }) {
      let got = 0;
      let timer: NodeJS.Timeout | undefined;
      server.on('data', (d: Buffer) => {
        got += d.length;
        // Stop reading first: a fast host reads all 64 MiB within the 50 ms (then the close is
        // an orderly one, over TCP as over SMC-D), and the scenario is a close with data unread.
        if (got >= 1 << 20 && !timer) { server.pause(); timer = setTimeout(() => server.destroy(), 50); }
      });
      client.write(Buffer.alloc(64 << 20));
    },
  },
];

async function outcome(kind: Kind, sc: Scenario): Promise<{ client: string[]; server: string[] }> {
  const p = await pair(kind);
  try {
    await sc.run(p);
    await bounded(Promise.all([
      closed(p.client),
      closed(p.server),
    ]), 10_000, `${kind}: both ends closed (client ${p.events.client.join(',')}; server ${p.events.server.join(',')})`);
    // Let any error still on its way arrive.
    await new Promise((r) => setTimeout(r, 20));
    return p.events;
  } finally {
    p.close();
  }
}

describe('close parity with node:net (TCP close rule over SMC-D)', () => {
  void runtime;
  for (const sc of scenarios) {
    it(sc.name, async () => {
      const tcp = await outcome('net', sc);
      const overSmc = await outcome('smc', sc);
      assert.deepEqual(overSmc, tcp, `SMC-D ${JSON.stringify(overSmc)} vs node:net ${JSON.stringify(tcp)}`);
    });
  }

  it('a reader that closes while the writer waits for room aborts (TCP\'s RST): the writer gets ECONNRESET', async () => {
    const p = await pair('smc');
    try {
      const conn = smcState(p.client)!.conn!;
      let got = 0;
      let timer: NodeJS.Timeout | undefined;
      p.server.on('data', (d: Buffer) => {
        got += d.length;
        if (got >= 1 << 20 && !timer) { p.server.pause(); timer = setTimeout(() => p.server.destroy(), 50); }
      });
      let written: string | undefined;
      p.client.write(Buffer.alloc(64 << 20), (err) => { written = err ? String((err as NodeJS.ErrnoException).code) : 'ok'; });
      await bounded(Promise.all([closed(p.client), closed(p.server)]), 10_000, 'both ends closed');
      // The server's close was peer_conn_abort, not peer_conn_closed: the peer's write was blocked.
      assert.ok(conn.diag().peerConnFlags & CONN_ABORT, `the server's close flags: ${conn.diag().peerConnFlags}`);
      assert.ok(!p.events.client.includes('end'), `client: ${p.events.client.join(',')}`);
      assert.ok(p.events.client.includes('error:ECONNRESET'), `client: ${p.events.client.join(',')}`);
      // As over node:net: the write's callback comes (the socket was destroyed under it), but
      // nowhere near everything reached the server.
      assert.equal(written, 'ok');
      assert.ok(got < 64 << 20, `the server read ${got} bytes`);
    } finally {
      p.close();
    }
  });

  it('a peer_conn_closed that comes while a write waits for room fails the writer with ECONNRESET, not an end', async () => {
    // A peer that closes with peer_conn_closed though our write is blocked on it (Linux's
    // smc_close_active looks only at unread data): the rest of the write can never be read.
    // Linux's sender returns -ECONNRESET then (smc_tx_wait); TCP's gets the RST.
    const p = await pair('smc');
    try {
      p.server.pause();
      let written: string | undefined;
      p.client.write(Buffer.alloc(16 << 20), (err) => { written = err ? String((err as NodeJS.ErrnoException).code) : 'ok'; });
      const clientConn = smcState(p.client)!.conn!;
      await waitFor('the client\'s write blocked', () => (clientConn.diag().prodFlags & PROD_WRITE_BLOCKED) !== 0, 5000);
      smcState(p.server)!.conn!.closeOrderly();
      await bounded(closed(p.client), 10_000, `the client's close (${p.events.client.join(',')})`);
      assert.deepEqual(p.events.client, ['error:ECONNRESET', 'close']);
      assert.equal(written, 'ok');
    } finally {
      p.close();
    }
  });

  it('data after the end the reader already had (a Linux sender whose close stopped waiting): dropped and counted, no error, and the close is an abort', async () => {
    const srv = smc.createServer();
    srv.listen(0, '127.0.0.1');
    await once(srv, 'listening');
    const accepted = once(srv, 'connection') as Promise<[net.Socket]>;
    const client = smc.connect({ port: (srv.address() as net.AddressInfo).port, host: '127.0.0.1', allowHalfOpen: true });
    const events = record(client);
    const [server] = await bounded(accepted, 5000, 'accept');
    server.on('error', () => {});
    try {
      const settled = (x: net.Socket) => (smc.getSmcInfo(x).pending ? once(x, 'smc') : Promise.resolve());
      await bounded(Promise.all([settled(client), settled(server)]), 5000, 'SMC handshake');
      assert.equal(smc.getSmcInfo(server).mode, 'SMCD');
      const got: Buffer[] = [];
      client.on('data', (d: Buffer) => got.push(d));
      const conn = smcState(server)!.conn! as unknown as { connFlags: number; write(b: Uint8Array): number; closeWrite(): void; publish(): void; diag(): { peerConnFlags: number } };
      assert.equal(conn.write(Buffer.from('before')), 6);
      conn.closeWrite();
      await bounded(once(client, 'end'), 5000, 'the client\'s end');
      // What Linux's sender does with the rest of its buffer: written later, the CDC still
      // saying done writing (write() here refuses after closeWrite, so the flag goes off and on).
      conn.connFlags &= ~CONN_DONE_WRITING;
      assert.equal(conn.write(Buffer.from('late')), 4);
      conn.connFlags |= CONN_DONE_WRITING;
      conn.publish();
      await waitFor('the late bytes taken off the ring', () => smcState(client)!.lateBytes === 4, 5000);
      const clientConn = smcState(client)!.conn! as unknown as { diag(): { connFlags: number } };
      assert.equal(Buffer.concat(got).toString(), 'before');
      assert.equal(smc.getSmcInfo(client).lateBytesDropped, 4);
      client.end();
      await bounded(closed(client), 5000, `the client's close (${events.join(',')})`);
      assert.deepEqual(events, ['data', 'end', 'finish', 'close']);
      // Closed with bytes it never read, as Linux's smc_close_final: peer_conn_abort. Checked in
      // what the client wrote: the server, which ends on the client's end (allowHalfOpen off),
      // may close before its poller reads that last CDC, and then never sees it (CI, twice).
      assert.ok(clientConn.diag().connFlags & CONN_ABORT, `the client wrote flags ${clientConn.diag().connFlags}`);
    } finally {
      client.destroy();
      server.destroy();
      srv.close();
    }
  });

  it('200 request/reply exchanges closed by the client: the server never sees an error', async () => {
    const errors: string[] = [];
    let ended = 0;
    // A server with no 'error' listener, as many are: an abort would crash the process.
    let n = 0;
    const srv = smc.createServer((s) => {
      // Half the servers answer and end, half only answer: the client's destroy() closes both.
      const endsFirst = n++ % 2 === 0;
      s.on('data', (d) => (endsFirst ? s.end(d) : s.write(d)));
      s.on('end', () => ended++);
      s.on('error', (e: NodeJS.ErrnoException) => errors.push(String(e.code)));
    });
    srv.listen(0, '127.0.0.1');
    await once(srv, 'listening');
    const port = (srv.address() as net.AddressInfo).port;
    try {
      let smcd = 0;
      for (let i = 0; i < 200; i++) {
        const c = smc.connect(port, '127.0.0.1');
        c.write(`req ${i}`);
        const [d] = await bounded(once(c, 'data'), 5000, `reply ${i}`) as [Buffer];
        assert.equal(d.toString(), `req ${i}`);
        if (smc.getSmcInfo(c).mode === 'SMCD') smcd++;
        c.destroy();
        await closed(c);
      }
      await waitFor('every server socket ended', () => ended === 200, 10_000);
      assert.deepEqual(errors, []);
      assert.equal(smcd, 200);
    } finally {
      srv.close();
    }
  });
});

const EXITING = fileURLToPath(new URL('../helpers/exiting-client.js', import.meta.url));

/** A child connects, exchanges a message, then exits, leaving its received data read or not. */
function exitingClient(port: number, unread: boolean, api: Kind): ReturnType<typeof runNode> {
  return runNode(EXITING, ['--port', String(port), '--api', api, ...(unread ? ['--unread'] : [])], { stdin: 'pipe', env: { SOFTRDMA_RUNTIME_DIR: runtime } });
}

describe('process exit closes like TCP', () => {
  for (const unread of [false, true]) {
    it(unread ? 'a client process that exits with data unread: the server sees ECONNRESET' : 'a client process that exits with everything read: the server sees an orderly end', async () => {
      const results: Record<Kind, string[]> = { net: [], smc: [] };
      for (const kind of ['net', 'smc'] as const) {
        const srv = kind === 'net' ? net.createServer() : smc.createServer();
        srv.listen(0, '127.0.0.1');
        await once(srv, 'listening');
        const accepted = once(srv, 'connection') as Promise<[net.Socket]>;
        const child = exitingClient((srv.address() as net.AddressInfo).port, unread, kind);
        try {
          const [s] = await bounded(accepted, 10_000, 'accept');
          const seen = record(s);
          s.once('data', () => s.write(unread ? Buffer.alloc(1 << 20) : 'reply'));
          await child.waitFor(/got/, 10_000);
          if (kind === 'smc') assert.equal(smc.getSmcInfo(s).mode, 'SMCD');
          child.child.stdin!.write('x');
          assert.equal(await child.exit(10_000), 0);
          await waitFor(`${kind}: the server socket's 'close'`, () => seen.includes('close'), 5000);
          results[kind] = seen;
        } finally {
          srv.close();
          child.child.kill();
        }
      }
      assert.deepEqual(results.smc, results.net, `SMC-D ${results.smc.join(',')} vs node:net ${results.net.join(',')}`);
      assert.equal(results.net.some((e) => e.startsWith('error')), unread, `node:net: ${results.net.join(',')}`);
    });
  }
});
