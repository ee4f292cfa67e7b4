// The device socket read with recvmmsg into reused memory (mmsg-receiver.ts): packets are
// views of one native area rather than a buffer per datagram; GRO runs are cut by the
// kernel's segment size; node:dgram's path stays for worker threads, the device option
// recvmmsg: false and SOFTRDMA_RXE_RECVMMSG=0, and both paths move the same data.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import net from 'node:net';
import { describe, it } from 'node:test';
import { Worker } from 'node:worker_threads';
import fc from 'fast-check';
import { Access, SendFlags, WrOpcode, rxeOf } from '../../src/index.js';
import { ipv6String } from '../../src/abi/inet.js';
import { mmsgAvailable } from '../../src/providers/rxe/mmsg-receiver.js';
import { makePair, waitCompletions } from '../helpers/pair.js';
import { assertRunsArrivedWhole, writeBwCounters } from '../helpers/write-bw.js';

const WORKER = `
const { parentPort, workerData } = require('node:worker_threads');
import(workerData.index).then(async ({ createRxeDevice, rxeOf }) => {
  const dev = await createRxeDevice({ address: '127.0.0.2', port: 0 });
  const counters = rxeOf(dev).counters;
  const recvmmsg = counters.recvmmsg_batches;
  await dev.close();
  parentPort.postMessage({ recvmmsg, ok: true });
}).catch((e) => parentPort.postMessage({ error: String(e) }));
`;

describe('rxe receive through recvmmsg', () => {
  it('is available on this platform\'s main thread', () => {
    assert.equal(mmsgAvailable(), process.platform === 'linux' && (process.arch === 'x64' || process.arch === 'arm64'));
  });

  it('hands every packet over as a view of one reused area, and the data arrive intact', { skip: !mmsgAvailable() }, async () => {
    const p = await makePair(undefined, { device: { recvmmsg: true } });
    try {
      const link = rxeOf(p.b.dev).link;
      const areas = new Set<ArrayBufferLike>();
      let packets = 0;
      const inner = link.onPacket;
      link.onPacket = (pkt, from, port, seg) => { areas.add(pkt.buffer); packets++; inner(pkt, from, port, seg); };
      const size = 256 << 10;
      const src = Buffer.alloc(size);
      for (let i = 0; i < size; i += 4) src.writeUInt32LE((i * 2654435761) >>> 0, i);
      const dst = Buffer.alloc(size);
      const smr = p.a.pd.regMr(src, Access.LOCAL_WRITE);
      const dmr = p.b.pd.regMr(dst, Access.LOCAL_WRITE | Access.REMOTE_WRITE);
      const rounds = 16;
      for (let r = 0; r < rounds; r++) {
        p.a.qp.postSend({ wrId: BigInt(r), opcode: WrOpcode.RDMA_WRITE, sendFlags: SendFlags.SIGNALED, sgList: [smr.sge()], rdma: { remoteAddr: dmr.addr, rkey: dmr.rkey } });
      }
      const wcs = await waitCompletions(p.a.cq, rounds, 20_000);
      assert.ok(wcs.every((w) => w.status === 0), JSON.stringify(wcs.filter((w) => w.status !== 0)));
      assert.ok(dst.equals(src), 'the written bytes');
      assert.ok(packets >= (rounds * size) / 4096, `packets: ${packets}`);
      assert.equal(areas.size, 1, 'every packet a view of the one area');
      const c = rxeOf(p.b.dev).counters;
      assert.ok(c.recvmmsg_batches > 0 && c.recvmmsg_batches <= c.rcvd_pkts, `batches ${c.recvmmsg_batches}, packets ${c.rcvd_pkts}`);
      assert.equal(c.recv_err, 0);
    } finally {
      await p.close();
    }
  });

  it('cuts GRO runs by the kernel\'s segment size, as node:dgram\'s path does by the packets (across processes)', { skip: !mmsgAvailable() }, async () => {
    const mm = await writeBwCounters({ iters: 300, qps: 4, env: { SOFTRDMA_RXE_RECVMMSG: '1' } });
    const dg = await writeBwCounters({ iters: 300, qps: 4, env: { SOFTRDMA_RXE_RECVMMSG: '0' } });
    assert.ok(mm.got.recvmmsg_batches! > 0, 'read with recvmmsg');
    assert.equal(dg.got.recvmmsg_batches ?? 0, 0, 'read with node:dgram');
    for (const { got, sent } of [mm, dg]) assertRunsArrivedWhole(got, sent, 200);
  });

  it('the device option recvmmsg: false keeps node:dgram\'s path, with the same result', async () => {
    const p = await makePair(undefined, { device: { recvmmsg: false } });
    try {
      const src = p.a.pd.regMr(Buffer.alloc(8192, 0x5a), Access.LOCAL_WRITE);
      const dstBuf = Buffer.alloc(8192);
      const dst = p.b.pd.regMr(dstBuf, Access.LOCAL_WRITE | Access.REMOTE_WRITE);
      p.a.qp.postSend({ wrId: 1n, opcode: WrOpcode.RDMA_WRITE, sendFlags: SendFlags.SIGNALED, sgList: [src.sge()], rdma: { remoteAddr: dst.addr, rkey: dst.rkey } });
      const [wc] = await waitCompletions(p.a.cq, 1);
      assert.equal(wc!.status, 0);
      assert.ok(dstBuf.every((x) => x === 0x5a));
      assert.equal(rxeOf(p.b.dev).counters.recvmmsg_batches, 0);
      assert.ok(rxeOf(p.b.dev).counters.rcvd_pkts > 0);
    } finally {
      await p.close();
    }
  });

  it('a process that opened and closed a device exits by itself (libuv and koffi let go of the poll handle and its callbacks)', async () => {
    // koffi 2.12 deadlocked in Node 24.14+'s teardown after any registered callback: the
    // process printed its last line and never exited.
    const index = new URL('../../src/index.js', import.meta.url).href;
    const code = `const { createRxeDevice, rxeOf } = await import(${JSON.stringify(index)});
      const d = await createRxeDevice({ address: '127.0.0.2', port: 0 });
      const reading = rxeOf(d).counters.recvmmsg_batches >= 0;
      await d.close();
      console.log(JSON.stringify({ closed: reading }));`;
    const child = spawn(process.execPath, ['--input-type=module', '-e', code], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => { out += d.toString(); });
    const exited = await Promise.race([
      new Promise<number | null>((r) => child.on('exit', (c) => r(c))),
      new Promise<'hung'>((r) => setTimeout(() => r('hung'), 15_000).unref()),
    ]);
    if (exited === 'hung') child.kill('SIGKILL');
    assert.match(out, /"closed":true/);
    assert.equal(exited, 0, 'exited with 0 by itself');
  });

  it('a device in a worker thread reads with node:dgram (libuv\'s default loop is the main thread\'s)', async () => {
    const index = new URL('../../src/index.js', import.meta.url).href;
    const w = new Worker(WORKER, { eval: true, workerData: { index } });
    const msg = await new Promise<{ recvmmsg?: number; ok?: boolean; error?: string }>((resolve, reject) => {
      w.once('message', resolve);
      w.once('error', reject);
    });
    await w.terminate();
    assert.equal(msg.error, undefined);
    assert.equal(msg.ok, true);
    assert.equal(msg.recvmmsg, 0);
  });

  it('writes a sender\'s IPv6 address as inet_ntop does, which is how node:dgram reports it (property)', () => {
    fc.assert(fc.property(fc.uint8Array({ minLength: 16, maxLength: 16 }), fc.constantFrom('any', 'mapped', 'compat', 'zeros'), (raw, shape) => {
      const b = Buffer.from(raw);
      if (shape !== 'any') b.fill(0, 0, 10);
      if (shape === 'mapped') b.fill(0xff, 10, 12);
      if (shape === 'compat') b.fill(0, 10, 12);
      if (shape === 'zeros') b.fill(0, 4, 12);
      const full = Array.from({ length: 8 }, (_, i) => b.readUInt16BE(i * 2).toString(16)).join(':');
      // net.SocketAddress parses and prints through libuv's inet_pton / inet_ntop, as dgram's rinfo.
      assert.equal(ipv6String(b), new net.SocketAddress({ address: full, family: 'ipv6' }).address);
    }), { numRuns: 2000 });
  });
});
