// The rdma_cm API across two real processes (this one on 127.0.0.3, a peer process from
// rdma-cm-peer.ts on 127.0.0.2, one RoCE UDP port): connect/accept/disconnect storms (1,000 one
// after another, 100 at once) with every id, comm id and port freed on both sides; a reject
// with private data; a listener that dies while the REQ waits (UNREACHABLE within the CM
// timeout); a client that dies (the server's SEND fails, its disconnect's DREQ goes unanswered:
// DISCONNECTED with -ETIMEDOUT, TIMEWAIT_EXIT, everything freed).

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { Access, SendFlags, WcStatus, WrOpcode, createRxeDevice, rxeOf, type CQ, type PD } from '../../src/index.js';
import { createEventChannel, createId, RejReason, type EventChannel, type RdmaCmId } from '../../src/cm/index.js';
import { cmDevices } from '../../src/cm/rdma-cm/cm-device.js';
import { ports } from '../../src/cm/rdma-cm/addresses.js';
import { runNode, type Proc } from '../helpers/procs.js';
import { waitCompletions } from '../helpers/pair.js';

const PEER = fileURLToPath(new URL('./rdma-cm-peer.js', import.meta.url));
const OPTS = { packetLifeTime: 1, cmResponseTimeout: 16, maxCmRetries: 3 } as const;

async function peer(mode: string, extra: string[] = []): Promise<{ p: Proc; port: number; udpPort: number }> {
  const p = runNode(PEER, [mode, '127.0.0.2', '0', ...extra], { stdin: 'pipe' });
  const [, port, udp] = await p.waitFor(/"listening":(\d+),"udpPort":(\d+)/, 20_000);
  return { p, port: Number(port), udpPort: Number(udp) };
}

async function endPeer(p: Proc): Promise<Record<string, unknown>> {
  p.child.stdin!.end();
  assert.equal(await p.exit(20_000), 0, p.stderr);
  const last = p.stdout.split('\n').filter((l) => l.startsWith('{"census"')).pop();
  assert.ok(last, p.stdout);
  return JSON.parse(last) as Record<string, unknown>;
}

function clean() {
  for (const d of cmDevices()) assert.deepEqual(d.census(), { commIds: 0, ids: 0, agentConnections: 0 }, `device ${d.address}`);
  assert.equal(ports.size, 0, 'bound ports');
}
async function waitClean(ms = 10_000) {
  const deadline = Date.now() + ms;
  for (;;) {
    try { clean(); return; } catch (err) { if (Date.now() > deadline) throw err; }
    await new Promise((r) => setTimeout(r, 10));
  }
}

async function connectOne(ch: EventChannel, port: number, pd: PD, cq: CQ): Promise<RdmaCmId> {
  const id = createId(ch, 'tcp', OPTS);
  id.resolveAddr({ address: '127.0.0.2', port }, '127.0.0.3');
  await ch.next('ADDR_RESOLVED', 5000, id);
  id.resolveRoute();
  await ch.next('ROUTE_RESOLVED', 5000, id);
  id.createQp(pd, { sendCq: cq, recvCq: cq, cap: { maxSendWr: 2, maxRecvWr: 2, maxSendSge: 1, maxRecvSge: 1 } });
  id.connect();
  return id;
}

describe('rdma_cm across two processes', () => {
  it('1,000 connect/accept/disconnect one after another, then 100 at once: all freed on both sides', async (t) => {
    const server = await peer('server');
    const dev = await createRxeDevice({ address: '127.0.0.3', port: server.udpPort });
    const ch = createEventChannel();
    try {
      const ctx = dev.open();
      const pd = ctx.allocPd();
      const cq = ctx.createCq(4096);
      const t0 = performance.now();
      const N = 1000;
      for (let i = 0; i < N; i++) {
        const id = await connectOne(ch, server.port, pd, cq);
        const e = await ch.next(['ESTABLISHED', 'REJECTED', 'UNREACHABLE'], 10_000, id);
        assert.equal(e.event, 'ESTABLISHED', `connection ${i}: ${e.event} ${e.status}`);
        id.disconnect();
        await ch.next('DISCONNECTED', 10_000, id);
        id.destroyId(); // still in time-wait: the agent keeps the comm id until it ends
      }
      const seqMs = performance.now() - t0;
      const t1 = performance.now();
      const many = await Promise.all(Array.from({ length: 100 }, () => connectOne(ch, server.port, pd, cq)));
      const evs = await Promise.all(many.map((id) => ch.next(['ESTABLISHED', 'REJECTED', 'UNREACHABLE'], 20_000, id)));
      assert.deepEqual(evs.map((e) => e.event), Array(100).fill('ESTABLISHED'));
      for (const id of many) id.disconnect();
      await Promise.all(many.map((id) => ch.next('DISCONNECTED', 20_000, id)));
      for (const id of many) id.destroyId();
      const concMs = performance.now() - t1;
      await waitClean();
      // The server destroys each id at its TIMEWAIT_EXIT (~130 ms after the disconnect): ask until it has.
      const deadline = Date.now() + 10_000;
      for (let asked = 1; ; asked++) {
        server.p.child.stdin!.write('census\n');
        const lines = await server.p.waitUntil((out) => { const l = out.split('\n').filter((x) => x.startsWith('{"census"')); return l.length >= asked ? l : undefined; }, 'census', 5000);
        const c = JSON.parse(lines[asked - 1]!) as { timewait: number };
        if (c.timewait === N + 100 || Date.now() > deadline) break;
        await new Promise((r) => setTimeout(r, 20));
      }
      const c = await endPeer(server.p);
      assert.deepEqual(c.census, [{ commIds: 1, ids: 1, agentConnections: 1 }], JSON.stringify(c)); // its listener only
      assert.equal(c.live, 0);
      assert.equal(c.accepted, N + 100);
      assert.equal(c.disconnected, N + 100);
      assert.equal(c.timewait, N + 100);
      t.diagnostic(`storms: ${N} sequential connect/accept/disconnect in ${seqMs.toFixed(0)} ms (${(N / seqMs * 1000).toFixed(0)}/s), 100 concurrent in ${concMs.toFixed(0)} ms`);
    } finally {
      ch.close();
      if (server.p.child.exitCode === null) server.p.child.kill();
      await dev.close();
    }
  });

  it('a reject with private data across processes: REJECTED, CONSUMER_DEFINED, the data', async () => {
    const rej = await peer('server', ['reject']);
    const d = await createRxeDevice({ address: '127.0.0.3', port: rej.udpPort });
    const c2 = createEventChannel();
    try {
      const ctx = d.open();
      const id = await connectOne(c2, rej.port, ctx.allocPd(), ctx.createCq(4));
      const e = await c2.next(['ESTABLISHED', 'REJECTED', 'UNREACHABLE'], 10_000, id);
      assert.equal(e.event, 'REJECTED');
      assert.equal(e.status, RejReason.CONSUMER_DEFINED);
      assert.equal(e.conn!.privateData.subarray(0, 7).toString(), 'go away');
      id.destroyId();
      await endPeer(rej.p);
    } finally {
      c2.close();
      await d.close();
    }
  });

  it('a listener that dies while our REQ waits: UNREACHABLE (-ETIMEDOUT) within the CM timeout', async () => {
    const hang = await peer('hang');
    const d = await createRxeDevice({ address: '127.0.0.3', port: hang.udpPort });
    const c2 = createEventChannel();
    try {
      const ctx = d.open();
      const t0 = Date.now();
      // REQ timeout 2·ms(1) + ms(16) = 258 ms, 3 retries: about 1 s in all
      const id = createId(c2, 'tcp', { packetLifeTime: 1, cmResponseTimeout: 16, maxCmRetries: 3 });
      id.resolveAddr({ address: '127.0.0.2', port: hang.port }, '127.0.0.3');
      await c2.next('ADDR_RESOLVED', 5000, id);
      id.resolveRoute();
      await c2.next('ROUTE_RESOLVED', 5000, id);
      const pd2 = ctx.allocPd(), cq2 = ctx.createCq(4);
      id.createQp(pd2, { sendCq: cq2, recvCq: cq2, cap: { maxSendWr: 1, maxRecvWr: 1 } });
      id.connect();
      await hang.p.waitFor(/"request"/, 5000);
      hang.p.child.kill('SIGKILL');
      const e = await c2.next(['ESTABLISHED', 'REJECTED', 'UNREACHABLE'], 10_000, id);
      assert.equal(e.event, 'UNREACHABLE');
      assert.equal(e.status, -110);
      const took = Date.now() - t0;
      // Four tries of 258 ms (or 268 ms a try after the server's MRA, if a resent REQ reached it
      // before the kill), with room for a loaded machine.
      assert.ok(took < 4 * 268 + 4000, `${took} ms`);
      id.destroyId();
      await hang.p.exit(5000).catch(() => 0);
    } finally {
      c2.close();
      await d.close();
    }
  });

  it('a client that dies: the server\'s SEND fails, its DREQ goes unanswered: DISCONNECTED (-ETIMEDOUT), TIMEWAIT_EXIT, all freed', async () => {
    const d = await createRxeDevice({ address: '127.0.0.3', port: 0 });
    const c2 = createEventChannel();
    try {
      const l = createId(c2, 'tcp', OPTS);
      l.bindAddr('127.0.0.3', 0);
      l.listen();
      const client = runNode(PEER, ['client', '127.0.0.2', String(rxeOf(d).port), '127.0.0.3', String(l.localAddr!.port)]);
      const req = await c2.next('CONNECT_REQUEST', 20_000);
      const s = req.id;
      const ctx = s.verbs!;
      const pd2 = ctx.allocPd(), cq2 = ctx.createCq(8);
      s.createQp(pd2, { sendCq: cq2, recvCq: cq2, cap: { maxSendWr: 2, maxRecvWr: 2, maxSendSge: 1, maxRecvSge: 1 } });
      s.accept();
      await c2.next('ESTABLISHED', 10_000, s);
      await client.waitFor(/"established":true/, 10_000);
      client.child.kill('SIGKILL');
      await client.exit(5000).catch(() => 0);
      // the application notices: a SEND to the dead peer runs out of retries (ACK timeout 15: ~134 ms × 8)
      const mr = pd2.regMr(Buffer.from('anyone?'), Access.LOCAL_WRITE);
      s.qp!.postSend({ wrId: 1n, opcode: WrOpcode.SEND, sendFlags: SendFlags.SIGNALED, sgList: [mr.sge()] });
      const [wc] = await waitCompletions(cq2, 1, 10_000);
      assert.equal(wc!.status, WcStatus.RETRY_EXC_ERR);
      s.disconnect();
      const dis = await c2.next('DISCONNECTED', 10_000, s);
      assert.equal(dis.status, -110);
      await c2.next('TIMEWAIT_EXIT', 10_000, s);
      mr.dereg();
      s.destroyId();
      cq2.destroy();
      pd2.dealloc();
      l.destroyId();
      await waitClean();
    } finally {
      c2.close();
      await d.close();
    }
  });
});
