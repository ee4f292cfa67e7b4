// softrdma/smc across real processes: SMC-D between SMC peers, plain TCP with plain peers,
// the close paths, backpressure, peer death, many connections, hostile CLC input, and no
// shared-memory residue afterwards. The server is always another process.

import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { waitFor } from '../helpers/pair.js';
import { jsonLines, runNode, type Proc } from '../helpers/procs.js';
import type { SmcInfo } from '../../src/smc/index.js';
import { testRuntimeDir } from '../helpers/runtime-dir.js';
import { procStatFields } from '../../src/ism/runtime-dir.js';

const runtime = testRuntimeDir('smc-test');
const smc = await import('../../src/smc/index.js');
// These tests are about SMC-D itself, over many short connections to one server: without
// this, the learned handshake control would send most of them to TCP (it has its own test).
smc.setSmcLearning(false);
const { clearDiscoveryCache } = await import('../../src/smc/discovery.js');
const { smcState } = await import('../../src/smc/state.js');
const SERVER = fileURLToPath(new URL('../helpers/smc-test-server.js', import.meta.url));
const PEER = fileURLToPath(new URL('../../src/tools/smc-peer.js', import.meta.url));
const shmBefore = new Set(fs.readdirSync('/dev/shm'));

interface Srv { proc: Proc; port: number; stop(): Promise<void> }

async function server(args: string[] = []): Promise<Srv> {
  const proc = runNode(SERVER, args, { stdin: 'pipe', env: { SOFTRDMA_RUNTIME_DIR: runtime } });
  const m = await proc.waitFor(/"port":(\d+)/);
  return { proc, port: Number(m[1]), stop: async () => { proc.child.stdin!.end(); await proc.exit(10_000); } };
}

function events(p: Proc, name: string): Record<string, unknown>[] {
  return jsonLines(p.stdout).filter((e) => e.event === name);
}

/** Wait until the process printed `count` events of this name (counted, not matched by a regex). */
function eventCount(p: Proc, name: string, count: number, ms = 10_000): Promise<true> {
  return p.waitUntil(() => (events(p, name).length >= count ? true : undefined), `${count} "${name}" events`, ms);
}

async function connect(port: number, opts: Record<string, unknown> = {}): Promise<InstanceType<typeof smc.Socket>> {
  const s = smc.connect({ port, host: '127.0.0.1', ...opts });
  await once(s, 'connect');
  return s;
}

function settled(s: net.Socket): Promise<SmcInfo> {
  const i = smc.getSmcInfo(s);
  return i.pending ? once(s, 'smc').then(([x]) => x as SmcInfo) : Promise.resolve(i);
}

/** Send `total` bytes with write/drain, return sha256 of what was sent. */
async function sendAll(s: net.Socket, total: number, chunk = 65536): Promise<string> {
  const h = createHash('sha256');
  const buf = randomBytes(chunk);
  for (let sent = 0; sent < total; sent += chunk) {
    const b = total - sent < chunk ? buf.subarray(0, total - sent) : buf;
    h.update(b);
    if (!s.write(b)) await once(s, 'drain');
  }
  return h.digest('hex');
}

function collect(s: net.Socket): Promise<Buffer> {
  const parts: Buffer[] = [];
  s.on('data', (d: Buffer) => parts.push(d));
  return Promise.race([
    once(s, 'end').then(() => Buffer.concat(parts)),
    once(s, 'error').then(([e]) => { throw e; }),
  ]);
}

function bounded<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let t: NodeJS.Timeout;
  return Promise.race([p, new Promise<T>((_, rej) => { t = setTimeout(() => rej(new Error(`${what}: not within ${ms} ms`)), ms); })]).finally(() => clearTimeout(t));
}

describe('SMC sockets across processes', () => {
  let srv: Srv;
  before(async () => { srv = await server(); });
  after(async () => { await srv.stop(); });

  it('carries 256 MiB both ways over SMC-D, byte-exact', async () => {
    const s = await connect(srv.port);
    s.write('E');
    const echoed = createHash('sha256');
    let got = 0;
    s.on('data', (d: Buffer) => { echoed.update(d); got += d.length; });
    const ended = once(s, 'end');
    const sent = await sendAll(s, 256 << 20);
    s.end();
    await bounded(ended, 60_000, 'echo end');
    assert.equal(got, 256 << 20);
    assert.equal(echoed.digest('hex'), sent);
    const info = smc.getSmcInfo(s);
    assert.equal(info.mode, 'SMCD');
    assert.equal(info.smcBytesSent, (256 << 20) + 1);
    assert.equal(s.bytesRead, 256 << 20);
  });

  it('an idle SMC-D connection costs no CPU on either side (the receivers sleep on the doorbell)', async (t) => {
    const s = await connect(srv.port);
    s.on('error', () => {}); // a failed assertion below leaves the echo server to reset it
    t.after(() => s.destroy());
    s.write('E');
    // Traffic first, so both pollers have been spinning; then the line goes quiet.
    for (let i = 0; i < 200; i++) {
      const back = once(s, 'data');
      s.write(`ping ${i}`);
      await bounded(back, 5000, 'echo');
    }
    assert.equal(smc.getSmcInfo(s).mode, 'SMCD');
    const cpuOf = (pid: number) => {
      const f = procStatFields(pid);
      return (Number(f[11]) + Number(f[12])) * 10; // fields 14-15, utime + stime, in ms at USER_HZ 100
    };
    const server0 = cpuOf(srv.proc.child.pid!);
    const self0 = process.cpuUsage();
    // The measurement is the quiet second itself: a connection still polling would burn most
    // of it (a spinning side uses 300-1000 ms of CPU here, even on a loaded machine).
    await new Promise((r) => setTimeout(r, 1000));
    const self = process.cpuUsage(self0);
    const serverMs = cpuOf(srv.proc.child.pid!) - server0;
    const selfMs = (self.user + self.system) / 1000;
    assert.ok(serverMs < 150, `the server used ${serverMs} ms of CPU in an idle second`);
    assert.ok(selfMs < 150, `the client used ${selfMs.toFixed(0)} ms of CPU in an idle second`);
    // And it still works after sleeping: the doorbell wakes the other side.
    const back = once(s, 'data');
    s.write('after the quiet');
    assert.equal(String((await bounded(back, 5000, 'echo after idle'))[0]), 'after the quiet');
  });

  it('half-close: end() reaches the peer as end, and the peer can still answer', async () => {
    const s = await connect(srv.port);
    const reply = collect(s);
    s.write('B');
    const h = await sendAll(s, 3_000_000, 10_000);
    s.end();
    const r = await bounded(reply, 20_000, 'reply');
    assert.equal(smc.getSmcInfo(s).mode, 'SMCD');
    assert.equal(r.length, 40);
    assert.equal(r.readBigUInt64BE(0), 3_000_000n);
    assert.equal(r.subarray(8).toString('hex'), h);
  });

  it('backpressure: a slow reader makes write() return false and drain later, no data lost', async () => {
    const s = await connect(srv.port, { smcBufferSize: 16384 });
    const reply = collect(s);
    s.write('S');
    let falses = 0;
    const buf = randomBytes(65536);
    const h = createHash('sha256');
    for (let i = 0; i < 128; i++) { h.update(buf); if (!s.write(buf)) { falses++; await once(s, 'drain'); } }
    s.end();
    const r = await bounded(reply, 30_000, 'slow reply');
    assert.ok(falses > 0, 'write() never returned false');
    assert.equal(r.readBigUInt64BE(0), 128n * 65536n);
    assert.equal(r.subarray(8).toString('hex'), h.digest('hex'));
  });

  it('destroy() with data left unread aborts, as close(2) does on TCP: the peer gets ECONNRESET (or EPIPE if its write sees it first)', async () => {
    const s = await connect(srv.port);
    s.write('E');
    await once(s, 'smc');
    // The echo comes back faster than it is read: the stream stops taking it at its high-water
    // mark, and the rest stays unread in the ring.
    s.write(Buffer.alloc(4 << 20));
    // Unread means in the ring: bytes the stream already took are the application's, as bytes
    // libuv read are for a TCP socket, whose close(2) sends a FIN when its kernel queue is empty.
    // So wait for the stream to be full (it takes nothing more) and the ring to hold some.
    await waitFor('the echo filling the stream and reaching the ring', () =>
      s.readableLength >= s.readableHighWaterMark && (smcState(s)?.conn?.unreadNow() ?? 0) > 0);
    const before = events(srv.proc, 'error').length;
    s.destroy();
    await eventCount(srv.proc, 'error', before + 1, 5000);
    // The server is echoing when the abort comes: as over TCP, whichever of its read and its
    // write meets the reset first names the error (node:net reports 'read ECONNRESET' or
    // 'write EPIPE' for a reset peer alike); seen EPIPE about one run in ten on Node 22.
    assert.match(String(events(srv.proc, 'error').at(-1)!.code), /^(ECONNRESET|EPIPE)$/);
  });

  it('destroy() with nothing unread closes in order, as close(2) does on TCP: the peer gets end, no error', async () => {
    const s = await connect(srv.port);
    s.write('E');
    await once(s, 'smc');
    s.write('ping');
    await once(s, 'data');
    const errors = events(srv.proc, 'error').length;
    const closes = events(srv.proc, 'close').length;
    s.destroy();
    await eventCount(srv.proc, 'close', closes + 1, 5000);
    assert.equal(events(srv.proc, 'error').length, errors);
  });

  it('500 concurrent connections, each SMC-D and echoing its own bytes', async () => {
    const conns = await Promise.all(Array.from({ length: 500 }, async (_, i) => {
      const s = await connect(srv.port);
      const data = Buffer.alloc(1024, i & 0xff);
      const got = collect(s);
      s.end(Buffer.concat([Buffer.from('E'), data]));
      return { s, data, got };
    }));
    for (const [i, c] of conns.entries()) {
      assert.deepEqual(await bounded(c.got, 30_000, 'echo'), c.data);
      const info = smc.getSmcInfo(c.s);
      // (Seen once in CI with the machine loaded by other test runs: one of the 500 went TCP.)
      assert.equal(info.mode, 'SMCD', `connection ${i}: ${info.fallbackCause} (reason ${info.fallbackReason})`);
    }
  });

  it('reuses DMBs between connections to the same peer, and each reuse starts clean', async () => {
    const { poolStats } = await import('../../src/smc/dmb-pool.js');
    const { defaultIsmDevice } = await import('../../src/ism/device.js');
    const reusedBefore = poolStats().reused;
    const attachBefore = defaultIsmDevice().stats.attachReused;
    const closesBefore = events(srv.proc, 'close').length;
    const rounds = 40;
    for (let i = 0; i < rounds; i++) {
      const s = await connect(srv.port);
      const closed = once(s, 'close');
      if (i % 10 === 9) {
        // An aborted connection in between: its DMBs must not come back dirty either.
        s.write('E');
        await settled(s);
        s.destroy();
      } else {
        // Sizes that leave the cursors of one connection far from where the next one starts.
        const data = randomBytes(1 + ((i * 7919) % 200_000));
        const got = collect(s);
        s.end(Buffer.concat([Buffer.from('E'), data]));
        assert.ok((await bounded(got, 10_000, `echo ${i}`)).equals(data), `connection ${i} echoed other bytes`);
        assert.equal(smc.getSmcInfo(s).mode, 'SMCD');
        assert.equal(smc.getSmcInfo(s).smcBytesReceived, data.length);
      }
      await bounded(closed, 10_000, `close ${i}`);
      // Both ends closed before the next connection: each end's DMB is back in its pool.
      await eventCount(srv.proc, 'close', closesBefore + i + 1);
    }
    // Every connection after the first reuses the client's DMB and finds the server's mapped.
    const reused = poolStats().reused - reusedBefore;
    const attached = defaultIsmDevice().stats.attachReused - attachBefore;
    assert.ok(reused >= rounds - 2, `the client reused ${reused} of its DMBs in ${rounds} connections`);
    assert.ok(attached >= rounds - 2, `the server's DMBs were found mapped ${attached} times in ${rounds} connections`);
  });

  it('a server killed with SIGKILL mid-transfer is reported as ECONNRESET within 2 s', async () => {
    const victim = await server();
    const s = await connect(victim.port);
    s.write('B');
    await settled(s);
    const err = once(s, 'error');
    void sendAll(s, 1 << 30).catch(() => {});
    // Mid-transfer: more than one DMB's worth has crossed, so the server has been reading.
    await waitFor('2 MiB over SMC-D', () => smc.getSmcInfo(s).smcBytesSent > 2 << 20);
    const t0 = Date.now();
    victim.proc.child.kill('SIGKILL');
    const [e] = (await bounded(err, 2000, 'error after SIGKILL')) as [NodeJS.ErrnoException];
    assert.equal(e.code, 'ECONNRESET');
    assert.ok(Date.now() - t0 < 2000);
    await victim.proc.exit(5000).catch(() => {});
  });
});

describe('fallback to TCP', () => {
  it('SMC client to a plain node:net server: TCP, PEERNOSMC, byte-exact, no stray bytes', async () => {
    const plain = await server(['--api', 'net']);
    try {
      const s = await connect(plain.port);
      const info = await settled(s);
      assert.equal(info.mode, 'TCP');
      assert.equal(info.fallbackReason, smc.DECLINE.PEERNOSMC);
      const reply = collect(s);
      s.write('B');
      const h = await sendAll(s, 1_000_000, 4096);
      s.end();
      const r = await bounded(reply, 10_000, 'reply');
      assert.equal(r.readBigUInt64BE(0), 1_000_001n - 1n);
      assert.equal(r.subarray(8).toString('hex'), h);
      assert.equal(s.bytesWritten, 1_000_001);
      await plain.proc.waitFor(/"event":"received","id":\d+,"bytes":1000000/);
    } finally {
      await plain.stop();
    }
  });

  it('a fallback to a plain server on loopback costs no getsockname (unless a localAddress was given) and no getpeername', async () => {
    // Whether SMC-R could be tried depends on the local address; between loopback addresses no
    // device is brought up, so without an rxe device on loopback that is known without asking.
    // The peer's address (a getpeername for a host name) is needed only where a peer on the
    // port was learned.
    const plain = net.createServer((c) => c.resume());
    plain.listen(0, '127.0.0.1');
    await once(plain, 'listening');
    const { port } = plain.address() as net.AddressInfo;
    const sockets: net.Socket[] = [];
    try {
      const cases = [[{ host: '127.0.0.1' }, 0], [{ host: '127.0.0.1', localAddress: '127.0.0.1' }, 1], [{ host: 'localhost', family: 4 }, 1]] as const;
      for (const [opts, calls] of cases) {
        const s = smc.connect({ port, ...opts });
        sockets.push(s);
        type Fn = (out: object) => number;
        const h = (s as unknown as { _handle: { getsockname: Fn; getpeername: Fn } })._handle;
        const count = { getsockname: 0, getpeername: 0 };
        for (const name of ['getsockname', 'getpeername'] as const) {
          const orig = h[name];
          h[name] = function (this: unknown, out: object) { count[name]++; return orig.call(this, out); };
        }
        await once(s, 'connect'); // the SMC decision ran first (its listener is prepended)
        assert.deepEqual(count, { getsockname: calls, getpeername: 0 }, `system calls with ${JSON.stringify(opts)}`);
        const info = smc.getSmcInfo(s);
        assert.equal(info.mode, 'TCP');
        assert.equal(info.fallbackReason, smc.DECLINE.PEERNOSMC);
      }
    } finally {
      for (const s of sockets) s.destroy();
      plain.close();
    }
  });

  it('plain node:net client to an SMC server: TCP on the server, byte-exact', async () => {
    const srv = await server();
    try {
      const s = net.connect(srv.port, '127.0.0.1');
      await once(s, 'connect');
      const reply = collect(s);
      s.end(Buffer.from('Ehello plain world'));
      assert.equal((await bounded(reply, 10_000, 'echo')).toString(), 'hello plain world');
      await srv.proc.waitFor(/"event":"smc".*"mode":"TCP".*"fallbackCause":"peer did not propose SMC"/);
    } finally {
      await srv.stop();
    }
  });

  it('a server that writes first commits the connection to TCP; the client sees only the banner', async () => {
    const srv = await server(['--banner']);
    try {
      const s = await connect(srv.port);
      const first = await bounded(once(s, 'data'), 10_000, 'banner');
      assert.equal((first[0] as Buffer).toString(), '220 softrdma test server ready\r\n');
      const info = smc.getSmcInfo(s);
      assert.equal(info.mode, 'TCP');
      assert.equal(info.fallbackCause, 'server wrote first');
      const rest = collect(s);
      s.end('Eping');
      assert.equal((await bounded(rest, 10_000, 'echo')).toString(), 'ping');
    } finally {
      await srv.stop();
    }
  });

  it('smc: false and a refusing policy keep the connection plain TCP', async () => {
    const srv = await server();
    try {
      const a = await connect(srv.port, { smc: false });
      assert.equal((await settled(a)).fallbackCause, 'disabled');
      const b = await connect(srv.port, { smcPolicy: () => false });
      assert.equal((await settled(b)).fallbackCause, 'policy');
      for (const s of [a, b]) {
        const r = collect(s);
        s.end('Eok');
        assert.equal((await bounded(r, 10_000, 'echo')).toString(), 'ok');
      }
    } finally {
      await srv.stop();
    }
  });
});

describe('hostile CLC input', () => {
  async function raw(port: number, bytes: Buffer, endAfter = true): Promise<Buffer> {
    const s = net.connect(port, '127.0.0.1');
    await once(s, 'connect');
    const got = collect(s).catch(() => Buffer.alloc(0));
    s.write(bytes);
    if (endAfter) s.end();
    return bounded(got, 10_000, 'raw reply');
  }

  it('a proposal with a broken body gets a Decline, a truncated one and garbage close cleanly, and the server lives on', async () => {
    const srv = await server();
    try {
      const { encodeProposal, localSystemId } = await import('../../src/smc/clc.js');
      const good = encodeProposal({ version: 1, path: 1, peerId: localSystemId(), smcdGid: 0x1234n, chid: 0xffff, subnet: '127.0.0.0', prefixLength: 8, ipv6Prefixes: [] });
      const broken = Buffer.from(good);
      broken[38] = 0x7f; // iparea_offset nonsense
      const r1 = await raw(srv.port, broken);
      assert.equal(r1.subarray(0, 4).toString('hex'), 'e2d4c3c4');
      assert.equal(r1[4], 4, 'expected a Decline');
      assert.equal(r1.readUInt32BE(16), 0x04000000);
      // Proposal from a GID that no local device has: declined as NOSMCDDEV.
      const r2 = await raw(srv.port, good);
      assert.equal(r2[4], 4);
      assert.equal(r2.readUInt32BE(16), 0x03030001);
      await raw(srv.port, good.subarray(0, 30));
      await raw(srv.port, Buffer.concat([good.subarray(0, 7), randomBytes(200)]));
      for (let i = 0; i < 50; i++) {
        const m = Buffer.from(good);
        m[8 + (i % (m.length - 8))] ^= 1 + (i % 255);
        await raw(srv.port, m);
      }
      // Still serving SMC-D.
      const s = await connect(srv.port);
      const r = collect(s);
      s.end('Ealive');
      assert.equal((await bounded(r, 10_000, 'echo')).toString(), 'alive');
      assert.equal(smc.getSmcInfo(s).mode, 'SMCD');
      assert.equal(events(srv.proc, 'fatal').length, 0);
    } finally {
      await srv.stop();
    }
  });
});

describe('the runtime directory removed under live processes', () => {
  it('connections fall back to TCP meanwhile, nothing throws, and SMC-D comes back once the entries are written again', async () => {
    const srv = await server();
    try {
      const echo = async () => {
        const s = await connect(srv.port);
        const info = await bounded(settled(s), 5000, 'settle');
        s.write('Ehello');
        const got = await bounded(new Promise<string>((resolve) => s.once('data', (d: Buffer) => resolve(d.toString()))), 5000, 'echo');
        s.destroy();
        return { mode: info.mode, got };
      };
      assert.deepEqual(await echo(), { mode: 'SMCD', got: 'hello' });
      fs.rmSync(runtime, { recursive: true, force: true });
      clearDiscoveryCache();
      // The listener is unknown now: plain TCP, and still the echo. (Unless the server's 2 s
      // check wrote its entry back between the removal and the connect, as it may on a
      // loaded machine: then SMC-D is right, and the entry says so.)
      const listeners = path.join(runtime, 'listeners');
      const listed = () => fs.existsSync(listeners) && fs.readdirSync(listeners).some((n) => n.startsWith(`${srv.port}.`));
      const meanwhile = await echo();
      assert.deepEqual(meanwhile, { mode: listed() && meanwhile.mode === 'SMCD' ? 'SMCD' : 'TCP', got: 'hello' });
      // The server writes its listener entry back within its 2 s check; the ism devices of
      // both processes write theirs when they next take part in a handshake.
      await bounded((async () => {
        while (!listed()) await new Promise((r) => setTimeout(r, 20));
      })(), 5000, 'listener entry written again');
      clearDiscoveryCache();
      assert.deepEqual(await echo(), { mode: 'SMCD', got: 'hello' });
      // A new client process has never mapped the server's ism device: it finds it only
      // through the device entry, which the server wrote again when it took the Proposal.
      const fresh = runNode(PEER, ['client', '--api', 'smc', '--test', 'pingpong', '--iters', '20', `--port=${srv.port}`], { env: { SOFTRDMA_RUNTIME_DIR: runtime } });
      assert.equal(await fresh.exit(20_000), 0, fresh.stderr);
      assert.equal(jsonLines(fresh.stdout)[0]!.mode, 'SMCD', fresh.stdout);
      assert.equal(fs.statSync(runtime).mode & 0o777, 0o700, 'made again owner-only');
      // destroy() resets each connection; nothing else may have gone wrong in the server.
      assert.deepEqual(events(srv.proc, 'error').filter((e) => e.code !== 'ECONNRESET'), []);
      assert.equal(srv.proc.child.exitCode, null, 'the server lives');
    } finally {
      await srv.stop();
    }
  });
});

describe('residue', () => {
  it('leaves nothing in /dev/shm', () => {
    const now = fs.readdirSync('/dev/shm').filter((n) => !shmBefore.has(n));
    assert.deepEqual(now, []);
  });
});
