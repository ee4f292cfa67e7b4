// node:net parity of SMC sockets around the handshake, across processes where the peer's view
// matters: writes held by the handshake and a destroy() right after them, clients paused at
// 'connect' (the handshake must still read the server's answer, and the pause must hold), the
// byte counters of a server socket closed during the handshake, and smcss's list after an
// accepted handle changed owners.

import assert from 'node:assert/strict';
import { once } from 'node:events';
import net from 'node:net';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { waitFor } from '../helpers/pair.js';
import { jsonLines, runNode, type Proc } from '../helpers/procs.js';
import { testRuntimeDir } from '../helpers/runtime-dir.js';

const runtime = testRuntimeDir('socket-parity-2');
const smc = await import('../../src/smc/index.js');
const { smcState } = await import('../../src/smc/state.js');
// About the handshake itself, on every connection: learning off (it has its own test).
smc.setSmcLearning(false);
const SERVER = fileURLToPath(new URL('../helpers/smc-test-server.js', import.meta.url));
const STALLED = fileURLToPath(new URL('../helpers/smc-stalled-client.js', import.meta.url));

interface Srv { proc: Proc; port: number; stop(): Promise<void> }

/** smc-test-server in its own process ('B': counts what a connection sent until its end; 'E': echo). */
async function server(api: 'smc' | 'net'): Promise<Srv> {
  const proc = runNode(SERVER, ['--api', api], { stdin: 'pipe', env: { SOFTRDMA_RUNTIME_DIR: runtime } });
  const m = await proc.waitFor(/"port":(\d+)/);
  return { proc, port: Number(m[1]), stop: async () => { proc.child.stdin!.end(); await proc.exit(10_000); } };
}

/** The server's events for connection `id`, once it closed. */
async function closedConnection(p: Proc, id: number): Promise<Record<string, unknown>[]> {
  const mine = () => jsonLines(p.stdout).filter((e) => e.id === id);
  await p.waitUntil(() => (mine().some((e) => e.event === 'close') ? true : undefined), `connection ${id} closing`, 10_000);
  return mine();
}

function bounded<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let t: NodeJS.Timeout;
  return Promise.race([p, new Promise<T>((_, rej) => { t = setTimeout(() => rej(new Error(`${what}: not within ${ms} ms`)), ms); })])
    .finally(() => clearTimeout(t));
}

/** Whether a call of c.destroy() is under way: node:net never runs a write's callback inside it. */
function watchDestroy(c: net.Socket): () => boolean {
  let inside = false;
  const destroy = c.destroy.bind(c);
  c.destroy = (err?: Error) => {
    inside = true;
    try { return destroy(err); } finally { inside = false; }
  };
  return () => inside;
}

describe('destroy() right after a write the handshake holds', () => {
  let srv: Srv;
  let plain: Srv;
  let conns = 0;
  let plainConns = 0;
  before(async () => { [srv, plain] = await Promise.all([server('smc'), server('net')]); });
  after(async () => { await Promise.all([srv.stop(), plain.stop()]); });

  // Each: what the client does, given its socket, and the callback's error code over node:net
  // (end()'s callback waits for 'finish', which a destroyed stream never emits). The server must
  // get 'hello' and an orderly end, as over node:net, where the bytes reached the kernel at write().
  const cases: Array<[string, (c: net.Socket, cb: (err?: Error | null) => void) => void, string | undefined]> = [
    ['write(data, cb) then destroy() in the connect listener', (c, cb) => c.on('connect', () => { c.write('Bhello', cb); c.destroy(); }), undefined],
    ['end(data, cb) then destroy() in the connect listener', (c, cb) => c.on('connect', () => { c.end('Bhello', cb); c.destroy(); }), 'ERR_STREAM_DESTROYED'],
    ['write(data, cb) while connecting, destroy() in the connect listener', (c, cb) => { c.write('Bhello', cb); c.on('connect', () => c.destroy()); }, undefined],
  ];
  for (const [name, act, code] of cases) {
    it(`${name}: the SMC server gets the bytes over TCP, the callback as node:net's (after destroy() returned)`, async () => {
      const c = smc.connect({ port: srv.port, host: '127.0.0.1' });
      c.on('error', () => {});
      const inDestroy = watchDestroy(c);
      const wrote = new Promise<Error | null | undefined>((res) => act(c, (err) => {
        assert.equal(inDestroy(), false, 'the callback ran inside destroy()');
        res(err);
      }));
      const id = ++conns;
      const ev = await closedConnection(srv.proc, id);
      assert.deepEqual(ev.filter((e) => e.event === 'received').map((e) => e.bytes), [5], JSON.stringify(ev));
      assert.equal(ev.filter((e) => e.event === 'error').length, 0, JSON.stringify(ev));
      const smcEv = ev.find((e) => e.event === 'smc')!;
      assert.equal(smcEv.mode, 'TCP'); // the client declined: the server fell back
      assert.ok(smcEv.peerDeclineReason !== undefined, JSON.stringify(smcEv));
      const err = await bounded(wrote, 5000, 'the callback');
      assert.equal((err as NodeJS.ErrnoException | null | undefined)?.code, code, `callback: ${err?.message}`);
    });
  }

  it('two writes in the connect listener, then destroy(): both go out, the second queued behind the held one (SMC listener and plain one)', async () => {
    for (const [target, n] of [[srv, ++conns], [plain, ++plainConns]] as const) {
      const c = smc.connect({ port: target.port, host: '127.0.0.1' });
      c.on('error', () => {});
      const cbs: Array<Promise<Error | null | undefined>> = [];
      const inDestroy = watchDestroy(c);
      const later = (res: (err?: Error | null) => void) => (err?: Error | null) => res(inDestroy() ? new Error('the callback ran inside destroy()') : err);
      c.on('connect', () => {
        cbs.push(new Promise((res) => c.write('Bhello', later(res))));
        cbs.push(new Promise((res) => c.write('world', later(res))));
        c.destroy();
      });
      const ev = await closedConnection(target.proc, n);
      const got = ev.filter((e) => e.event === 'received').reduce((a, e) => a + (e.bytes as number), 0);
      assert.equal(got, 10, JSON.stringify(ev));
      for (const cb of await bounded(Promise.all(cbs), 5000, 'the write callbacks')) assert.ok(!cb, `callback: ${cb?.message}`);
    }
  });

  it('write while connecting to a plain listener, destroy() in the connect listener: the bytes go out (the flush waited for a tick)', async () => {
    const c = smc.connect({ port: plain.port, host: '127.0.0.1' });
    c.on('error', () => {});
    const wrote = new Promise<Error | null | undefined>((res) => c.write('Bhello', res));
    c.on('connect', () => c.destroy());
    const ev = await closedConnection(plain.proc, ++plainConns);
    assert.deepEqual(ev.filter((e) => e.event === 'received').map((e) => e.bytes), [5], JSON.stringify(ev));
    assert.ok(!(await bounded(wrote, 5000, 'the write callback')));
    assert.equal(smc.getSmcInfo(c).fallbackCause, 'peer is not an SMC listener');
  });
});

describe('a server socket closed holding the first bytes of what may be a Proposal', () => {
  it('a write it held goes out before its FIN, as over node:net (the bytes were the client\'s data)', async () => {
    let sock!: net.Socket;
    const srv = smc.createServer((s) => { sock = s; s.on('error', () => {}); });
    srv.listen(0, '127.0.0.1');
    await once(srv, 'listening');
    // A plain client whose first byte is the CLC eyecatcher's.
    const c = net.connect((srv.address() as net.AddressInfo).port, '127.0.0.1');
    c.on('error', () => {});
    const got: Buffer[] = [];
    c.on('data', (d: Buffer) => got.push(d));
    c.write(Buffer.from([0xe2]));
    await waitFor('the byte held by the server', () => sock && (smcState(sock)?.clc?.length ?? 0) > 0, 5000);
    const wrote = new Promise<Error | null | undefined>((res) => sock.write('late', res));
    sock.destroy();
    await bounded(once(c, 'end'), 5000, 'the client\'s end');
    assert.equal(Buffer.concat(got).toString(), 'late');
    assert.ok(!(await bounded(wrote, 5000, 'the write callback')));
    c.destroy();
    srv.close();
  });
});

describe('a server socket closed while its Accept is unanswered', () => {
  /**
   * A connection whose client (another process) stalls right after its Proposal: the server's
   * socket stays in srv-accepting until the test is done with it.
   */
  async function heldInAccept(): Promise<{ sock: net.Socket; done(): Promise<void> }> {
    const srv = smc.createServer();
    srv.listen(0, '127.0.0.1');
    await once(srv, 'listening');
    const accepted = once(srv, 'connection') as Promise<[net.Socket]>;
    const client = runNode(STALLED, ['--port', String((srv.address() as net.AddressInfo).port)], { stdin: 'pipe', env: { SOFTRDMA_RUNTIME_DIR: runtime } });
    const [sock] = await bounded(accepted, 10_000, 'the connection');
    sock.on('error', () => {});
    await client.waitFor(/"event":"proposed","pending":true/);
    await waitFor('the server in srv-accepting', () => smcState(sock)?.phase === 'srv-accepting', 5000);
    return {
      sock,
      done: async () => {
        client.child.stdin!.end('go\n');
        await client.exit(10_000);
        srv.close();
      },
    };
  }

  it('a write it held fails (its bytes were never sent) instead of succeeding', async () => {
    const { sock, done } = await heldInAccept();
    try {
      const wrote = new Promise<Error | null | undefined>((res) => sock.write('late', res));
      sock.destroy();
      const err = await bounded(wrote, 5000, 'the write callback');
      assert.equal((err as NodeJS.ErrnoException | undefined)?.code, 'ERR_STREAM_DESTROYED');
    } finally {
      await done();
    }
  });

  it('bytesRead and bytesWritten stay 0 after destroy() (the CLC bytes are no application bytes)', async () => {
    const { sock, done } = await heldInAccept();
    try {
      assert.deepEqual([sock.bytesRead, sock.bytesWritten], [0, 0]);
      sock.destroy();
      assert.deepEqual([sock.bytesRead, sock.bytesWritten], [0, 0]);
      await bounded(once(sock, 'close'), 5000, 'close');
      assert.deepEqual([sock.bytesRead, sock.bytesWritten], [0, 0]);
    } finally {
      await done();
    }
  });
});

describe('a client paused at connect', () => {
  let srv: Srv;
  let conns = 0;
  let declining: net.Server;
  before(async () => {
    srv = await server('smc');
    // An SMC listener that declines every Proposal, and echoes.
    declining = smc.createServer({ smcPolicy: () => false }, (s) => { s.on('error', () => {}); s.pipe(s); });
    declining.listen(0, '127.0.0.1');
    await once(declining, 'listening');
  });
  after(async () => {
    await srv.stop();
    declining.close();
  });

  // A handshake timeout far beyond the bounds below: a handshake that waits for it fails them.
  const opts = (port: number, o: object = {}) => ({ port, host: '127.0.0.1', smcHandshakeTimeout: 60_000, ...o });

  for (const when of ['in its connect listener', 'before connecting']) {
    it(`paused ${when}: SMC-D at once, nothing emitted until resume(), then the echo; an orderly close`, async () => {
      const c = smc.connect(opts(srv.port));
      c.on('error', () => {});
      const data: Buffer[] = [];
      if (when === 'before connecting') c.pause();
      c.on('connect', () => { if (when !== 'before connecting') c.pause(); c.write('Ehello'); });
      const [info] = await bounded(once(c, 'smc'), 5000, 'the handshake') as [{ mode: string }];
      assert.equal(info.mode, 'SMCD');
      c.on('data', (d: Buffer) => data.push(d));
      await waitFor('the echo in the paused stream', () => c.readableLength >= 5, 5000);
      assert.equal(data.length, 0, 'data emitted while paused');
      assert.ok(c.isPaused());
      c.resume();
      await waitFor('the echo', () => Buffer.concat(data).length >= 5, 5000);
      assert.equal(Buffer.concat(data).toString(), 'hello');
      c.destroy();
      const ev = await closedConnection(srv.proc, ++conns);
      assert.equal(ev.filter((e) => e.event === 'error').length, 0, JSON.stringify(ev));
    });
  }

  it('an onread client paused in its connect listener: SMC-D at once, no callback until resume()', async () => {
    const got: Buffer[] = [];
    const buffer = Buffer.alloc(1024);
    const c = smc.connect(opts(srv.port, { onread: { buffer, callback: (n: number, b: Buffer) => { got.push(Buffer.from(b.subarray(0, n))); return true; } } }));
    c.on('error', () => {});
    c.on('connect', () => { c.pause(); c.write('Ehello'); });
    const [info] = await bounded(once(c, 'smc'), 5000, 'the handshake') as [{ mode: string }];
    assert.equal(info.mode, 'SMCD');
    await waitFor('the echo in the ring', () => (smcState(c)?.conn?.unreadNow() ?? 0) >= 5, 5000);
    assert.equal(got.length, 0, 'callback called while paused');
    c.resume();
    await waitFor('the echo', () => Buffer.concat(got).length >= 5, 5000);
    assert.equal(Buffer.concat(got).toString(), 'hello');
    c.destroy();
    const ev = await closedConnection(srv.proc, ++conns);
    assert.equal(ev.filter((e) => e.event === 'error').length, 0, JSON.stringify(ev));
  });

  // [onread, a 'data' listener before connecting]: node:net's handle reads in the second case
  // only (the listener asked for data before the pause), and a paused stream emits nothing.
  for (const [onread, dataFirst] of [[false, false], [false, true], [true, false]]) {
    it(`paused in its connect listener, declined${onread ? ', onread' : ''}${dataFirst ? ', data listener first' : ''}: TCP at once, the handle read as node:net's, nothing emitted until resume()`, async () => {
      const port = (declining.address() as net.AddressInfo).port;
      const got: Buffer[] = [];
      const o = onread ? { onread: { buffer: Buffer.alloc(1024), callback: (n: number, b: Buffer) => { got.push(Buffer.from(b.subarray(0, n))); return true; } } } : {};
      const connectPaused = (c: net.Socket) => {
        c.on('error', () => {});
        if (dataFirst) c.on('data', (d: Buffer) => got.push(d));
        c.on('connect', () => { c.pause(); c.write('hello'); });
      };
      const reading = (s: net.Socket) => (s as unknown as { _handle: { reading?: boolean } | null })._handle?.reading === true;
      // node:net's own state for the same client, for comparison.
      const ref = net.connect({ port, host: '127.0.0.1', ...o });
      connectPaused(ref);
      await once(ref, 'connect');
      const nodeReading = reading(ref);
      assert.equal(nodeReading, dataFirst);
      ref.destroy();
      got.length = 0;

      const c = smc.connect(opts(port, o));
      connectPaused(c);
      const [info] = await bounded(once(c, 'smc'), 5000, 'the handshake') as [{ mode: string; fallbackCause: string }];
      assert.equal(info.mode, 'TCP');
      assert.match(info.fallbackCause, /peer declined/);
      assert.equal(reading(c), nodeReading);
      if (dataFirst) await waitFor('the echo in the paused stream', () => c.readableLength >= 5, 5000);
      assert.equal(got.length, 0);
      if (!dataFirst) c.on('data', (d: Buffer) => got.push(d));
      c.resume();
      await waitFor('the echo', () => Buffer.concat(got).length >= 5, 5000);
      assert.equal(Buffer.concat(got).toString(), 'hello');
      c.destroy();
    });
  }
});

describe('smcss after an accepted handle changed owners during the handshake', () => {
  it('lists the new owner while it is open, and neither socket once it closed', async () => {
    const live = (globalThis as unknown as Record<symbol, { live: Set<net.Socket> }>)[Symbol.for('softrdma.smc.status')]!.live;
    const replaced: net.Socket[] = [];
    const owners: net.Socket[] = [];
    let listedWhileOpen = 0;
    const srv = smc.createServer((s) => {
      replaced.push(s);
      // As Node's own tests do: a new Socket on the accepted handle, before the Proposal is read.
      const n = new net.Socket({ handle: (s as unknown as { _handle: object })._handle, readable: true, writable: true } as net.SocketConstructorOpts);
      owners.push(n);
      n.on('error', () => {});
      n.on('data', (d) => { if (live.has(n) && !live.has(s)) listedWhileOpen++; n.end(d); });
    });
    srv.listen(0, '127.0.0.1');
    await once(srv, 'listening');
    const port = (srv.address() as net.AddressInfo).port;
    for (let i = 0; i < 3; i++) {
      const c = smc.connect(port, '127.0.0.1');
      c.on('error', () => {});
      c.end('x');
      c.resume();
      await bounded(once(c, 'close'), 5000, 'client close');
    }
    await waitFor('the new owners closed', () => owners.length === 3 && owners.every((n) => n.destroyed), 5000);
    srv.close();
    assert.equal(listedWhileOpen, 3);
    assert.deepEqual([...replaced, ...owners].filter((x) => live.has(x)).length, 0);
    assert.equal(smc.getSmcInfo(owners[0]!).mode, 'SMCD');
  });
});

describe('onread after the handshake', () => {
  it('a callback that returns false on the bytes that came with the last CLC message stops delivery until resume(), \'end\' included, as node:net', async () => {
    let finished!: Promise<unknown>;
    const srv = smc.createServer((s) => {
      s.on('error', () => {});
      // A server that speaks first: its banner may share a TCP read with its Decline.
      s.write('220 banner\r\n');
      setTimeout(() => { finished = once(s, 'finish'); s.end('more data after the banner'); }, 50);
    });
    srv.listen(0, '127.0.0.1');
    await once(srv, 'listening');
    let first = true;
    let resumed = false;
    const calls: string[] = [];
    const c = smc.connect({
      port: (srv.address() as net.AddressInfo).port, host: '127.0.0.1',
      onread: { buffer: Buffer.alloc(64), callback: (n: number, b: Buffer) => {
        calls.push(`${resumed ? 'after' : 'before'}: ${b.toString('latin1', 0, n)}`);
        if (first) { first = false; return false; }
        return true;
      } },
    });
    c.on('error', () => {});
    c.on('end', () => calls.push(`end ${resumed ? 'after' : 'before'}`));
    await waitFor('the server\'s end sent', () => finished !== undefined, 5000);
    await finished;
    await new Promise((r) => setTimeout(r, 100)); // what the server sent has arrived
    resumed = true;
    c.resume();
    await bounded(once(c, 'close'), 5000, 'the client\'s close');
    srv.close();
    assert.deepEqual(calls, ['before: 220 banner\r\n', 'after: more data after the banner', 'end after']);
  });
});
