// node:net behaviours that Node's own test-net-* cases check and that the SMC layer has to
// keep while a handshake holds the application's first writes (found by running those cases
// under the preload: test/conformance/node-net.ts).

import assert from 'node:assert/strict';
import { once } from 'node:events';
import { fork } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath, pathToFileURL } from 'node:url';
import * as smc from '../../src/smc/index.js';
import { jsonLines, runNode } from '../helpers/procs.js';
import { testRuntimeDir } from '../helpers/runtime-dir.js';

const runtime = testRuntimeDir('netcompat-test');
const AUTO = pathToFileURL(fileURLToPath(new URL('../../src/smc/auto.js', import.meta.url))).href;

/** An echo server for one test; everything it and the test's sockets hold is closed afterwards, pass or fail. */
async function withEchoServer(body: (port: number, sockets: net.Socket[]) => Promise<void>): Promise<void> {
  const accepted = new Set<net.Socket>();
  const server = smc.createServer((s) => { accepted.add(s); s.pipe(s); });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const sockets: net.Socket[] = [];
  try {
    await body((server.address() as net.AddressInfo).port, sockets);
  } finally {
    for (const s of [...sockets, ...accepted]) s.destroy();
    server.close();
  }
}

function bounded<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let t: NodeJS.Timeout;
  return Promise.race([p, new Promise<T>((_, rej) => { t = setTimeout(() => rej(new Error(`timed out waiting for ${what}`)), ms); })])
    .finally(() => clearTimeout(t));
}


describe('node:net behaviour around the SMC handshake', () => {

  it('bytesWritten counts writes made before the connection settled, in bytes, once', async () => {
    await withEchoServer(async (port, sockets) => {
      const c = smc.connect(port, '127.0.0.1');
      sockets.push(c);
      c.cork();
      c.write('one');
      c.write(Buffer.from('twø'));
      c.uncork();
      assert.equal(c.bytesWritten, 3 + 4); // as node:net counts its queued (pending) data
      await bounded(once(c, 'smc'), 10_000, 'the handshake');
      assert.equal(smc.getSmcInfo(c).mode, 'SMCD');
      c.end('!');
      let got = '';
      c.setEncoding('utf8').on('data', (d: string) => { got += d; });
      await bounded(once(c, 'end'), 10_000, 'end');
      assert.equal(got, 'onetwø!');
      assert.equal(c.bytesWritten, 3 + 4 + 1);
    });
  });

  it('a socket that connects again after failed connects keeps no listener per attempt (as node:net)', async () => {
    const c = new smc.Socket();
    c.on('error', () => {});
    const base = c.listenerCount('connect');
    for (let i = 0; i < 5; i++) {
      const closed = new Promise((r) => c.once('close', r));
      c.connect(1, '127.0.0.1'); // nobody listens on port 1: ECONNREFUSED
      await bounded(closed, 10_000, 'the failed connect');
    }
    assert.equal(c.listenerCount('connect'), base);
  });

  it('bytesWritten while a large write waits on a reader that does not read: each byte once (written or queued)', async () => {
    const accepted = new Set<net.Socket>();
    const server = smc.createServer((s) => { accepted.add(s); s.pause(); });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const c = smc.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
    try {
      await bounded(once(c, 'smc'), 10_000, 'the handshake');
      assert.equal(smc.getSmcInfo(c).mode, 'SMCD');
      c.write(Buffer.alloc(4 << 20)); // far more than the peer's DMB holds
      c.write('øø'); // queued behind it: 4 bytes, 2 characters
      await new Promise((r) => setImmediate(r));
      assert.ok(c.writableLength > 0, 'the write is blocked');
      assert.equal(c.bytesWritten, (4 << 20) + 4);
    } finally {
      c.destroy();
      for (const s of accepted) s.destroy();
      server.close();
    }
  });

  it('a write queued before the connection fails with ERR_SOCKET_CLOSED_BEFORE_CONNECTION on destroy, and emits no error', async () => {
    await withEchoServer(async (port, sockets) => {
      const c = new smc.Socket();
      sockets.push(c);
      c.on('connect', () => assert.fail('connected after destroy'));
      c.on('error', (e) => assert.fail(`unexpected error event: ${e.message}`));
      c.connect({ port, host: '127.0.0.1' });
      assert.ok(c.connecting);
      const err = await bounded(new Promise<NodeJS.ErrnoException>((resolve) => {
        c.write('foo', (e) => resolve(e as NodeJS.ErrnoException));
        c.destroy();
      }), 5_000, 'the write callback');
      assert.equal(err.code, 'ERR_SOCKET_CLOSED_BEFORE_CONNECTION');
    });
  });

  it('a closed SMC client socket can connect again, with a fresh SMC-D handshake', async () => {
    await withEchoServer(async (port, sockets) => {
      const c = new smc.Socket();
      sockets.push(c);
      for (let round = 0; round < 3; round++) {
        c.connect(port, '127.0.0.1');
        const [info] = await bounded(once(c, 'smc'), 10_000, `round ${round} handshake`) as [smc.SmcInfo];
        assert.equal(info.mode, 'SMCD', `round ${round}`);
        let got = '';
        c.setEncoding('utf8').on('data', (d: string) => { got += d; });
        c.end(`round ${round}`);
        await bounded(once(c, 'close'), 10_000, `round ${round} close`);
        c.removeAllListeners('data');
        assert.equal(got, `round ${round}`);
      }
    });
  });
});

describe('smcTotals', () => {
  it('counts each end by how it settled, naming the cause where no CLC reason applies', async () => {
    await withEchoServer(async (port, sockets) => {
      const before = smc.smcTotals();
      const c = smc.connect({ port, host: '127.0.0.1', smc: false });
      sockets.push(c);
      c.end('x');
      c.resume();
      await bounded(once(c, 'close'), 10_000, 'close');
      const after = smc.smcTotals();
      const delta = (k: string) => (after.fallbackReasons[k] ?? 0) - (before.fallbackReasons[k] ?? 0);
      assert.equal(delta('disabled'), 1, JSON.stringify(after));
      assert.equal(delta(smc.declineName(smc.DECLINE.PEERNOSMC)), 1, JSON.stringify(after));
      assert.equal(after.tcp - before.tcp, 2);
      assert.equal(after.smcd - before.smcd, 0);
    });
  });
});

describe('the preload and Unix sockets', () => {
  it('leaves Unix-socket servers and clients plain, and counts only TCP connections', async () => {
    // One TCP connection (SMC-D, two ends) and one Unix-socket connection in a preloaded process.
    const script = `
      import net from 'node:net';
      import { once } from 'node:events';
      import { smcTotals, Socket } from ${JSON.stringify(new URL('../../src/smc/index.js', import.meta.url).href)};
      const pipe = process.argv[2];
      const results = {};
      for (const where of [{ port: 0, host: '127.0.0.1' }, { path: pipe }]) {
        let accepted;
        const srv = net.createServer((s) => { accepted = s; s.pipe(s); });
        srv.listen(where);
        await once(srv, 'listening');
        const addr = srv.address();
        const c = net.connect(typeof addr === 'string' ? { path: addr } : { port: addr.port, host: '127.0.0.1' });
        c.end('ping');
        let got = '';
        c.setEncoding('utf8').on('data', (d) => { got += d; });
        await once(c, 'close');
        results[where.path ? 'unix' : 'tcp'] = { got, client: c instanceof Socket, server: accepted instanceof Socket };
        srv.close();
      }
      console.log(JSON.stringify({ ...results, totals: smcTotals() }));
    `;
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'softrdma-unix-'));
    const file = path.join(dir, 'unix.mjs');
    fs.writeFileSync(file, script);
    try {
      const p = runNode(file, [path.join(dir, 'sock')], { env: { SOFTRDMA_RUNTIME_DIR: runtime }, execArgv: ['--import', AUTO] });
      assert.equal(await p.exit(30_000), 0, p.stderr);
      const r = jsonLines(p.stdout).at(-1)! as Record<string, { got: string; client: boolean; server: boolean }> & { totals: smc.SmcTotals };
      assert.deepEqual(r.tcp, { got: 'ping', client: true, server: true });
      assert.deepEqual(r.unix, { got: 'ping', client: false, server: false });
      assert.deepEqual(r.totals, { smcd: 2, smcr: 0, tcp: 0, failed: 0, fallbackReasons: {} });
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('accepted sockets', () => {
  it('are smc.Socket instances with every member Socket overrides, their node:net prototype untouched', async () => {
    const sockets: net.Socket[] = [];
    const server = smc.createServer();
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    try {
      const accepted = once(server, 'connection') as Promise<[net.Socket]>;
      const c = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
      sockets.push(c);
      const [sock] = await bounded(accepted, 5000, 'the connection');
      sockets.push(sock);
      // No prototype swap (it slowed node's stream code for every later connection).
      assert.equal(Object.getPrototypeOf(sock), net.Socket.prototype);
      assert.ok(sock instanceof smc.Socket);
      // Every method Socket overrides is on the socket, so none can be forgotten; the byte
      // counters are node's own until the counts differ (no CLC byte passed here).
      const proto = smc.Socket.prototype as unknown as Record<string, unknown>;
      for (const name of Object.getOwnPropertyNames(proto).filter((n) => n !== 'constructor')) {
        const want = Object.getOwnPropertyDescriptor(proto, name)!;
        const got = Object.getOwnPropertyDescriptor(sock, name);
        if ('value' in want) {
          assert.ok(got, `${name} is missing on an accepted socket`);
          assert.equal(got.value, want.value, name);
        } else {
          assert.equal(got, undefined, `${name} defined on a socket that carried no CLC byte`);
        }
      }
      // instanceof stays exact for everything else.
      class Sub extends smc.Socket {}
      assert.equal(sock instanceof Sub, false);
      assert.ok(new Sub() instanceof Sub);
      assert.ok(new Sub() instanceof smc.Socket);
      assert.equal(new net.Socket() instanceof smc.Socket, false);
      // And it still behaves: a plain client's bytes arrive, counted as TCP bytes.
      c.write('hello');
      const [d] = await bounded(once(sock, 'data') as Promise<[Buffer]>, 5000, 'data');
      assert.equal(d.toString(), 'hello');
      assert.equal(sock.bytesRead, 5);
      assert.equal(smc.getSmcInfo(sock).mode, 'TCP');
    } finally {
      for (const s of sockets) s.destroy();
      server.close();
    }
  });

  it('count only application bytes after a declined Proposal, and over SMC-D', async () => {
    const sockets: net.Socket[] = [];
    let allow = false;
    const server = smc.createServer({ smcPolicy: () => allow }, (s) => { sockets.push(s); s.pipe(s); });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const port = (server.address() as net.AddressInfo).port;
    const accept = () => once(server, 'connection') as Promise<[net.Socket]>;
    try {
      for (const mode of ['TCP', 'SMCD']) {
        allow = mode === 'SMCD';
        const accepted = accept();
        const c = smc.connect(port, '127.0.0.1');
        sockets.push(c);
        const [sock] = await bounded(accepted, 5000, 'the connection');
        c.write('hello');
        let got = '';
        const echoed = new Promise<void>((r) => c.setEncoding('utf8').on('data', (d: string) => { got += d; if (got === 'hello') r(); }));
        await bounded(echoed, 5000, 'the echo');
        assert.equal(smc.getSmcInfo(sock).mode, mode);
        assert.equal(smc.getSmcInfo(c).mode, mode);
        // The Proposal, the Decline (TCP) or the Accept and Confirm (SMCD) are not counted.
        assert.equal(sock.bytesRead, 5, `${mode} server bytesRead`);
        assert.equal(sock.bytesWritten, 5, `${mode} server bytesWritten`);
        assert.equal(c.bytesRead, 5, `${mode} client bytesRead`);
        assert.equal(c.bytesWritten, 5, `${mode} client bytesWritten`);
        assert.ok(Object.getOwnPropertyDescriptor(sock, 'bytesRead'), 'the accepted socket got the SMC counters');
      }
    } finally {
      for (const s of sockets) s.destroy();
      server.close();
    }
  });
});

describe('a half-sent CLC frame', () => {
  // A server holds its own writes while the first bytes might still become a Proposal; the
  // handshake timer bounds that wait, then the bytes are the client's data.
  const cases: Array<[string, Buffer]> = [
    ['one byte of the eyecatcher', Buffer.from([0xe2])],
    ['a header that promises more than comes', Buffer.from([0xe2, 0xd4, 0xc3, 0xc4, 0x01, 0x00, 0x40, 0x10, 0x01, 0x02])],
  ];
  for (const [what, bytes] of cases) {
    it(`${what}: after the handshake timeout the server gets it as data and its held write goes out`, async () => {
      const got: Buffer[] = [];
      const server = smc.createServer({ smcHandshakeTimeout: 300 }, (s) => {
        s.on('data', (d: Buffer) => got.push(d));
        // Written while the first bytes are held: it waits for the handshake to settle.
        setTimeout(() => s.write('late hello'), 50);
      });
      server.listen(0, '127.0.0.1');
      await once(server, 'listening');
      const c = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
      try {
        await once(c, 'connect');
        c.write(bytes);
        const t0 = Date.now();
        const [reply] = await bounded(once(c, 'data'), 5000, 'the held write') as [Buffer];
        assert.equal(reply.toString(), 'late hello');
        assert.ok(Date.now() - t0 >= 200, 'not before the handshake timeout');
        await bounded((async () => { while (Buffer.concat(got).length < bytes.length) await new Promise((r) => setTimeout(r, 10)); })(), 2000, 'the bytes as data');
        assert.deepEqual(Buffer.concat(got), bytes);
        // And the connection is plain TCP from there on.
        c.write('more');
        await bounded((async () => { while (!Buffer.concat(got).toString('latin1').endsWith('more')) await new Promise((r) => setTimeout(r, 10)); })(), 2000, 'later data');
      } finally {
        c.destroy();
        server.close();
      }
    });
  }
});

describe('an accepted handle wrapped in a new net.Socket during the handshake', () => {
  it('the new socket carries the handshake on: it sees only application data, over SMC-D', async () => {
    let wrapper: net.Socket | undefined;
    const server = smc.createServer((s) => {
      // Before the Proposal has been read: the new Socket takes the handle's reads over.
      wrapper = new net.Socket({ handle: (s as unknown as { _handle: object })._handle } as net.SocketConstructorOpts);
      wrapper.pipe(wrapper);
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const c = smc.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
    try {
      c.write('hello');
      let got = '';
      c.setEncoding('utf8').on('data', (d: string) => { got += d; });
      await bounded((async () => { while (got.length < 5) await new Promise((r) => setTimeout(r, 5)); })(), 5000, 'the echo');
      assert.equal(got, 'hello');
      assert.equal(smc.getSmcInfo(c).mode, 'SMCD');
      assert.equal(smc.getSmcInfo(wrapper!).mode, 'SMCD');
    } finally {
      c.destroy();
      wrapper?.destroy();
      server.close();
    }
  });
});

describe('a server socket destroyed during the handshake', () => {
  it("emits 'close' with hadError false, as node:net's, and keeps its byte counts", async () => {
    const closed = new Promise<{ args: unknown[]; bytesRead: number }>((resolve) => {
      const server = smc.createServer((s) => {
        s.on('close', (...args: unknown[]) => { server.close(); resolve({ args, bytesRead: s.bytesRead }); });
        s.destroy();
      });
      server.listen(0, '127.0.0.1', () => {
        const c = smc.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
        c.on('error', () => {});
        c.resume();
      });
    });
    const { args, bytesRead } = await bounded(closed, 5000, "the server socket's close");
    assert.deepEqual(args, [false]);
    assert.equal(bytesRead, 0);
  });
});

describe('an accepted handle wrapped twice during the handshake', () => {
  it('only the last owner is listed (the first one it replaced is not kept)', async () => {
    const live = (globalThis as unknown as Record<symbol, { live: Set<net.Socket> }>)[Symbol.for('softrdma.smc.status')]!.live;
    let first: net.Socket | undefined;
    let second: net.Socket | undefined;
    const server = smc.createServer((s) => {
      const handle = (s as unknown as { _handle: object })._handle;
      first = new net.Socket({ handle } as net.SocketConstructorOpts);
      second = new net.Socket({ handle } as net.SocketConstructorOpts);
      second.pipe(second);
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const c = smc.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
    try {
      c.write('hi');
      await bounded(once(c, 'data'), 5000, 'the echo');
      assert.equal(smc.getSmcInfo(second!).mode, 'SMCD');
      assert.ok(live.has(second!), 'the last owner is listed');
      assert.ok(!live.has(first!), 'the owner it replaced is not');
    } finally {
      c.destroy();
      first?.destroy();
      second?.destroy();
      server.close();
    }
  });
});

describe('a pauseOnConnect server passing its connections to another process', () => {
  it('is plain TCP: the child process (no softrdma) reads exactly the client\'s bytes, no CLC', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'smc-handoff-'));
    const childFile = path.join(dir, 'child.cjs');
    // Reads everything the client sends until its end, reports it, answers and closes.
    fs.writeFileSync(childFile, `process.on('message', (m, sock) => {
      const parts = [];
      sock.on('data', (d) => parts.push(d));
      sock.on('end', () => { process.send(Buffer.concat(parts).toString('base64')); sock.end('bye'); });
      sock.resume();
    });`);
    const child = fork(childFile, [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    const server = smc.createServer({ pauseOnConnect: true }, (s) => { child.send('socket', s); });
    try {
      server.listen(0, '127.0.0.1');
      await once(server, 'listening');
      const got = bounded(once(child, 'message'), 10_000, "the child's report");
      const c = smc.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
      c.on('error', () => {});
      let answer = '';
      c.setEncoding('utf8').on('data', (d: string) => { answer += d; });
      c.end('hello from the client');
      const [b64] = await got as [string];
      assert.equal(Buffer.from(b64, 'base64').toString('latin1'), 'hello from the client');
      await bounded(once(c, 'close'), 5000, "the client's close");
      assert.equal(answer, 'bye');
      assert.equal(smc.getSmcInfo(c).mode, 'TCP');
    } finally {
      server.close();
      child.kill();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('destroy() in an \'smc\' listener', () => {
  it('sends the writes made before the connection settled on SMC-D (over node:net they reached the kernel at connect)', async () => {
    const got: Buffer[] = [];
    let ended: () => void;
    const serverDone = new Promise<void>((r) => { ended = r; });
    const server = smc.createServer((s) => {
      s.on('data', (d: Buffer) => got.push(d));
      s.on('error', () => {});
      s.on('close', () => ended());
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    try {
      const c = smc.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
      const results: Array<string | undefined> = [];
      c.write('hello ', (err) => results.push(err ? (err as NodeJS.ErrnoException).code : 'ok'));
      c.write('world', (err) => results.push(err ? (err as NodeJS.ErrnoException).code : 'ok'));
      let mode = '';
      c.on('smc', (info: { mode: string }) => { mode = info.mode; c.destroy(); });
      await bounded(serverDone, 5000, "the server's close");
      assert.equal(mode, 'SMCD');
      assert.equal(Buffer.concat(got).toString(), 'hello world');
      assert.deepEqual(results, ['ok', 'ok']);
    } finally {
      server.close();
    }
  });
});
