// node:net's onread option ({ buffer, callback }: reads go into a buffer the application
// supplies, no 'data' events) on SMC sockets: over SMC-D (the transport copies from the ring
// into that buffer) and over a TCP fallback whose CLC messages pass through the same read
// path. Compared with node:net's own behaviour where it has one.

import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import net from 'node:net';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { jsonLines, runNode, type Proc } from '../helpers/procs.js';
import { testRuntimeDir } from '../helpers/runtime-dir.js';

const runtime = testRuntimeDir('onread-test');
process.env.SOFTRDMA_RUNTIME_DIR ??= runtime;
const smc = await import('../../src/smc/index.js');
const { sliceGc } = await import('../../src/smc/slice-memory.js');
smc.setSmcLearning(false);
const SERVER = fileURLToPath(new URL('../helpers/smc-test-server.js', import.meta.url));
const AUTO = pathToFileURL(fileURLToPath(new URL('../../src/smc/auto.js', import.meta.url))).href;

type OnreadBuffer = Uint8Array | (() => Uint8Array);
interface Received { sha: string; bytes: number; calls: number; maxRead: number; dataEvents: number; wrongBuffer: number }

/** An echo server in another process (the test server's 'E' service). */
async function echoServer(api: 'smc' | 'net'): Promise<{ proc: Proc; port: number; stop(): Promise<void> }> {
  const proc = runNode(SERVER, ['--api', api], { stdin: 'pipe', env: { SOFTRDMA_RUNTIME_DIR: runtime } });
  const m = await proc.waitFor(/"port":(\d+)/);
  return { proc, port: Number(m[1]), stop: async () => { proc.child.stdin!.end(); await proc.exit(10_000); } };
}

/**
 * Connect with onread, write `total` random bytes to the echo service and read them back
 * through the callback. `onCall` may return false (stop) and arrange a resume().
 */
async function echoThroughOnread(connect: (o: object) => net.Socket, buffer: OnreadBuffer, total: number,
  onCall?: (s: net.Socket, n: number) => boolean | undefined): Promise<Received & { mode: string; sentSha: string }> {
  const h = createHash('sha256');
  const r: Received = { sha: '', bytes: 0, calls: 0, maxRead: 0, dataEvents: 0, wrongBuffer: 0 };
  let expected: Uint8Array | undefined = typeof buffer === 'function' ? undefined : buffer;
  const supply = typeof buffer === 'function' ? () => (expected = buffer()) : buffer;
  let done!: () => void;
  const finished = new Promise<void>((res) => { done = res; });
  let s!: net.Socket;
  const callback = (n: number, buf: Uint8Array): boolean | undefined => {
    if (expected !== undefined && buf !== expected) r.wrongBuffer++;
    r.calls++;
    r.bytes += n;
    r.maxRead = Math.max(r.maxRead, n);
    h.update(buf.subarray(0, n));
    if (r.bytes > total) throw new Error('more bytes than were sent');
    const go = onCall?.(s, n);
    if (r.bytes === total) done();
    return go;
  };
  s = connect({ onread: { buffer: supply, callback } });
  s.on('data', () => { r.dataEvents++; });
  await once(s, 'connect');
  const out = createHash('sha256');
  s.write('E');
  const chunk = randomBytes(256 * 1024);
  for (let sent = 0; sent < total; sent += chunk.length) {
    const c = chunk.subarray(0, Math.min(chunk.length, total - sent));
    out.update(c);
    if (!s.write(c)) await once(s, 'drain');
  }
  await finished;
  const mode = smc.getSmcInfo(s).mode;
  s.destroy();
  r.sha = h.digest('hex');
  return { ...r, mode, sentSha: out.digest('hex') };
}

const MiB = 1 << 20;

describe('onread', () => {
  let smcSrv: Awaited<ReturnType<typeof echoServer>>;
  let declining: net.Server;
  let decliningPort = 0;
  before(async () => {
    smcSrv = await echoServer('smc');
    // An SMC listener that declines every Proposal: the client's CLC bytes come through onread.
    declining = smc.createServer({ smcPolicy: () => false }, (c) => { c.on('error', () => {}); c.once('data', (d: Buffer) => { c.write(d.subarray(1)); c.pipe(c); }); });
    await new Promise<void>((res) => declining.listen(0, '127.0.0.1', res));
    decliningPort = (declining.address() as net.AddressInfo).port;
  });
  after(async () => {
    await smcSrv.stop();
    declining.close();
  });

  const smcConnect = (port: () => number) => (o: object) => smc.connect({ port: port(), host: '127.0.0.1', ...o });

  for (const size of [4096, MiB]) {
    it(`SMC-D: 64 MiB exact, in order, into a ${size / 1024} KiB buffer, no 'data' events`, async () => {
      const buf = Buffer.alloc(size);
      const r = await echoThroughOnread(smcConnect(() => smcSrv.port), buf, 64 * MiB);
      assert.equal(r.mode, 'SMCD');
      assert.equal(r.bytes, 64 * MiB);
      assert.equal(r.sha, r.sentSha);
      assert.equal(r.dataEvents, 0);
      assert.equal(r.wrongBuffer, 0);
      assert.ok(r.maxRead <= size);
      if (size === 4096) assert.ok(r.calls >= 64 * MiB / size);
    });

    it(`TCP fallback after a Decline: 64 MiB exact into a ${size / 1024} KiB buffer, no 'data' events`, async () => {
      const buf = new Uint8Array(size);
      const r = await echoThroughOnread(smcConnect(() => decliningPort), buf, 64 * MiB);
      assert.equal(r.mode, 'TCP');
      assert.equal(r.sha, r.sentSha);
      assert.equal(r.dataEvents, 0);
      assert.equal(r.wrongBuffer, 0);
      assert.ok(r.maxRead <= size);
    });
  }

  for (const [name, port] of [['SMC-D', () => smcSrv.port], ['TCP fallback', () => decliningPort]] as const) {
    for (const how of ['resume()', 'read(0)'] as const) it(`${name}: a callback returning false stops reading until ${how}`, async () => {
      let stops = 0;
      let stoppedAt = -1;
      let calledWhileStopped = 0;
      let got = 0;
      const r = await echoThroughOnread(smcConnect(port), Buffer.alloc(64 * 1024), 8 * MiB, (s, n) => {
        if (stoppedAt >= 0) calledWhileStopped++;
        got += n;
        if (got >= (stops + 1) * MiB && stops < 4) {
          stops++;
          stoppedAt = got;
          setTimeout(() => { stoppedAt = -1; if (how === 'resume()') s.resume(); else s.read(0); }, 50);
          return false;
        }
        return undefined;
      });
      assert.equal(r.sha, r.sentSha);
      assert.equal(stops, 4);
      assert.equal(calledWhileStopped, 0);
    });

    it(`${name}: onread.buffer as a function: each read goes into the buffer it returned last`, async () => {
      let made = 0;
      const r = await echoThroughOnread(smcConnect(port), () => { made++; return Buffer.alloc(8192 + (made % 3) * 4096); }, 4 * MiB);
      assert.equal(r.sha, r.sentSha);
      assert.equal(r.wrongBuffer, 0);
      assert.ok(made >= r.calls, `${made} buffers for ${r.calls} reads`);
      assert.ok(r.maxRead <= 16384);
    });

    it(`${name}: pause() and resume() as node:net's`, async () => {
      let paused = false;
      let calledWhilePaused = 0;
      let got = 0;
      let pauses = 0;
      const r = await echoThroughOnread(smcConnect(port), Buffer.alloc(32 * 1024), 4 * MiB, (s, n) => {
        if (paused) calledWhilePaused++;
        got += n;
        if (got >= (pauses + 1) * MiB && pauses < 2) {
          pauses++;
          s.pause();
          paused = true;
          setTimeout(() => { paused = false; s.resume(); }, 30);
        }
        return undefined;
      });
      assert.equal(r.sha, r.sentSha);
      assert.equal(calledWhilePaused, 0);
    });
  }

  /**
   * The events an onread client sees when the server writes, then ends: the same sequence as
   * with node:net on both sides. allowHalfOpen false, so the client ends in turn.
   */
  async function endSequence(connect: (o: object) => net.Socket, port: number, stopFirst: boolean): Promise<string[]> {
    const seq: string[] = [];
    let bytes = 0;
    let stopped = false;
    const s = connect({
      port, host: '127.0.0.1',
      onread: {
        buffer: Buffer.alloc(1024), callback: (n: number) => {
          bytes += n;
          if (bytes === 3000 && stopFirst && !stopped) {
            stopped = true;
            seq.push('stop');
            setTimeout(() => { seq.push('resume'); s.resume(); }, 100);
            return false;
          }
          return undefined;
        },
      },
    });
    s.on('data', () => seq.push('data'));
    s.write('x'); // a server that wrote first would commit the connection to TCP
    for (const e of ['end', 'finish', 'close']) s.on(e, () => seq.push(`${e}:${bytes}:${s.readableEnded}`));
    s.on('error', (e) => seq.push(`error:${(e as NodeJS.ErrnoException).code}`));
    await once(s, 'close');
    return seq;
  }

  it("SMC-D's 'data' slices are told to slice-memory.ts (a fresh process's scavenges), onread's reads are not", async () => {
    const before = sliceGc.bytes;
    const r = await echoThroughOnread(smcConnect(() => smcSrv.port), Buffer.alloc(MiB), 16 * MiB);
    assert.deepEqual([r.mode, r.bytes, sliceGc.bytes - before], ['SMCD', 16 * MiB, 0]);
    const s = smcConnect(() => smcSrv.port)({});
    await once(s, 'connect');
    let got = 0;
    const all = new Promise<void>((res) => s.on('data', (d: Buffer) => { got += d.length; if (got === 16 * MiB) res(); }));
    s.write('E');
    const chunk = Buffer.alloc(MiB, 1);
    for (let i = 0; i < 16; i++) if (!s.write(chunk)) await once(s, 'drain');
    await all;
    assert.equal(smc.getSmcInfo(s).mode, 'SMCD');
    s.destroy();
    assert.equal(sliceGc.bytes - before, 16 * MiB);
  });

  it('end and close come as over node:net, also after a callback stopped reading', async () => {
    // Servers that answer a client's first byte with 3000 bytes and end: node:net and SMC.
    const onConn = (c: net.Socket) => { c.on('error', () => {}); c.once('data', () => c.end(Buffer.alloc(3000, 0x61))); };
    const plain = net.createServer(onConn);
    const smcd = smc.createServer(onConn);
    await Promise.all([plain, smcd].map((srv) => new Promise<void>((res) => srv.listen(0, '127.0.0.1', res))));
    const p = (srv: net.Server) => (srv.address() as net.AddressInfo).port;
    try {
      for (const stopFirst of [false, true]) {
        const want = await endSequence((o) => net.connect(o as net.NetConnectOpts), p(plain), stopFirst);
        assert.ok(want.some((e) => e.startsWith('end:3000')), JSON.stringify(want));
        const smcSeq: string[] = [];
        const s = await endSequence((o) => {
          const sock = smc.connect(o as net.NetConnectOpts);
          sock.on('smc', (i: { mode: string }) => smcSeq.push(i.mode));
          return sock;
        }, p(smcd), stopFirst);
        assert.deepEqual(smcSeq, ['SMCD']);
        assert.deepEqual(s, want);
        const fb = await endSequence((o) => smc.connect({ ...(o as net.NetConnectOpts), smc: false }), p(plain), stopFirst);
        assert.deepEqual(fb, want);
      }
    } finally {
      plain.close();
      smcd.close();
    }
  });

  it('onread.buffer as a function is asked once at connect and once per read, as node:net (its own test counts them)', async () => {
    const onConn = (c: net.Socket) => { c.on('error', () => {}); c.once('data', () => c.end('hello world')); };
    const servers = { net: net.createServer(onConn), smcd: smc.createServer(onConn), declining: smc.createServer({ smcPolicy: () => false }, onConn) };
    await Promise.all(Object.values(servers).map((srv) => new Promise<void>((res) => srv.listen(0, '127.0.0.1', res))));
    const port = (srv: net.Server) => (srv.address() as net.AddressInfo).port;
    const run = async (connect: (o: net.NetConnectOpts) => net.Socket, srv: net.Server) => {
      const pool = [Buffer.alloc(2), Buffer.alloc(2), Buffer.alloc(2)];
      let idx = -1;
      let usage = 0;
      let calls = 0;
      const got: Buffer[] = [];
      const s = connect({
        port: port(srv), host: '127.0.0.1',
        onread: {
          buffer: () => { usage++; idx = (idx + 1) % pool.length; return pool[idx]!; },
          callback: (n: number, buf: Uint8Array) => { calls++; assert.equal(buf, pool[idx]); got.push(Buffer.from(buf.subarray(0, n))); return true; },
        },
      });
      s.on('data', () => assert.fail('data event'));
      s.write('x');
      await once(s, 'end');
      const mode = smc.getSmcInfo(s).mode;
      s.destroy();
      return { text: Buffer.concat(got).toString(), calls, usage, mode };
    };
    try {
      const plain = await run((o) => net.connect(o), servers.net);
      assert.deepEqual(plain, { text: 'hello world', calls: 6, usage: 7, mode: 'TCP' });
      assert.deepEqual(await run((o) => smc.connect(o), servers.smcd), { ...plain, mode: 'SMCD' });
      assert.deepEqual(await run((o) => smc.connect(o), servers.declining), plain);
    } finally {
      for (const srv of Object.values(servers)) srv.close();
    }
  });

  it('new Socket({ onread }) and net.connect under the preload read over SMC-D', async () => {
    const viaCtor = await echoThroughOnread((o) => new smc.Socket(o as net.SocketConstructorOpts).connect(smcSrv.port, '127.0.0.1'), Buffer.alloc(4096), 4 * MiB);
    assert.equal(viaCtor.mode, 'SMCD');
    assert.equal(viaCtor.sha, viaCtor.sentSha);
    assert.equal(viaCtor.dataEvents, 0);
    // Under the preload, in another process: node:net's own connect with onread.
    const code = `import net from 'node:net'; import { createHash } from 'node:crypto';
      import { getSmcInfo } from '${pathToFileURL(fileURLToPath(new URL('../../src/smc/index.js', import.meta.url))).href}';
      const h = createHash('sha256'); const sent = createHash('sha256'); let n = 0; let data = 0;
      const total = 8 << 20;
      const s = net.connect({ port: ${smcSrv.port}, host: '127.0.0.1', onread: { buffer: Buffer.alloc(16384), callback: (k, b) => {
        h.update(b.subarray(0, k)); n += k;
        if (n === total) { console.log(JSON.stringify({ mode: getSmcInfo(s).mode, ok: h.digest('hex') === sent.digest('hex'), data })); s.destroy(); }
      } } });
      s.on('data', () => data++);
      s.on('connect', async () => {
        s.write('E');
        const c = Buffer.alloc(1 << 20, 7);
        for (let i = 0; i < total; i += c.length) { sent.update(c); if (!s.write(c)) await new Promise((r) => s.once('drain', r)); }
      });`;
    const p = runNode(code, [], { env: { SOFTRDMA_RUNTIME_DIR: runtime, SOFTRDMA_SMC_LEARN: '0' }, execArgv: ['--import', AUTO, '--input-type=module', '-e'] });
    assert.equal(await p.exit(30_000), 0, p.stderr);
    const out = jsonLines(p.stdout).at(-1)!;
    assert.deepEqual(out, { mode: 'SMCD', ok: true, data: 0 });
  });
});
