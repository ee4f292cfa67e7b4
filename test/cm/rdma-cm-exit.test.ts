// A softrdma process that exits with rdma_cm ids alive takes its connections down as a Linux
// process's exit does (ucma_close → rdma_destroy_id → cm_destroy_id): the peer hears at once.
// The other process is rdma-cm-exit-peer.ts on 127.0.0.2, this one is on 127.0.0.3 (one RoCE
// UDP port). Each case would wait out the QP's retries, the DREQ's or the REQ's without the
// exit sweep; here the event comes within BOUND_MS of telling the peer to go.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { createRxeDevice, rxeOf } from '../../src/index.js';
import { createEventChannel, createId, RejReason, type EventChannel, type RdmaCmId } from '../../src/cm/index.js';
import { cmDevices } from '../../src/cm/rdma-cm/cm-device.js';
import { ports } from '../../src/cm/rdma-cm/addresses.js';
import { jsonLines, runNode, type Proc } from '../helpers/procs.js';

const PEER = fileURLToPath(new URL('./rdma-cm-exit-peer.js', import.meta.url));
const OPTS = { packetLifeTime: 1, cmResponseTimeout: 16, maxCmRetries: 3 } as const;
/** Far below anything else that would end these connections (a REQ try of ~4 s, a DREQ never sent). */
const BOUND_MS = 1000;

async function waitClean(ms = 10_000) {
  const deadline = Date.now() + ms;
  for (;;) {
    try {
      for (const d of cmDevices()) assert.deepEqual(d.census(), { commIds: 0, ids: 0, agentConnections: 0 }, `device ${d.address}`);
      assert.equal(ports.size, 0, 'bound ports');
      return;
    } catch (err) { if (Date.now() > deadline) throw err; }
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** Tell the peer how to end; the event `types` for `id` must follow within BOUND_MS. */
async function endAndExpect(p: Proc, how: string, ch: EventChannel, id: RdmaCmId, types: Parameters<EventChannel['next']>[0]) {
  const t0 = performance.now();
  p.child.stdin!.write(how + '\n');
  const e = await ch.next(types, BOUND_MS, id);
  const ms = performance.now() - t0;
  const code = await p.exit(10_000);
  const atExit = jsonLines(p.stdout).find((l) => 'atExit' in l) as { atExit: Record<string, number> } | undefined;
  assert.ok(atExit, p.stdout + p.stderr);
  return { e, ms, code, atExit: atExit.atExit };
}

/** A server here, the peer a client that connects (and establishes, unless `hold`). */
async function withClient(how: string, hold: boolean) {
  const d = await createRxeDevice({ address: '127.0.0.3', port: 0 });
  const ch = createEventChannel();
  try {
    const l = createId(ch, 'tcp', OPTS);
    l.bindAddr('127.0.0.3', 0);
    l.listen();
    const client = runNode(PEER, ['client', '127.0.0.2', String(rxeOf(d).port), '127.0.0.3', String(l.localAddr!.port)], { stdin: 'pipe' });
    try {
      const req = await ch.next('CONNECT_REQUEST', 20_000);
      const s = req.id;
      if (!hold) {
        const ctx = s.verbs!;
        const pd = ctx.allocPd(), cq = ctx.createCq(8);
        s.createQp(pd, { sendCq: cq, recvCq: cq, cap: { maxSendWr: 2, maxRecvWr: 2, maxSendSge: 1, maxRecvSge: 1 } });
        s.accept();
        await ch.next('ESTABLISHED', 10_000, s);
        await client.waitFor(/"established":true/, 10_000);
      } else {
        await client.waitFor(/"requested":true/, 10_000);
      }
      const r = await endAndExpect(client, how, ch, s, hold ? ['REJECTED', 'DISCONNECTED', 'UNREACHABLE'] : ['DISCONNECTED', 'REJECTED', 'UNREACHABLE']);
      s.destroyId();
      l.destroyId();
      await waitClean();
      return r;
    } finally {
      if (client.child.exitCode === null) client.child.kill('SIGKILL');
    }
  } finally {
    ch.close();
    await d.close();
  }
}

describe('a process that exits with rdma_cm ids alive', () => {
  it('process.exit(0) after ESTABLISHED: its DREQ, the server DISCONNECTED at once', async (t) => {
    const r = await withClient('exit', false);
    assert.equal(r.e.event, 'DISCONNECTED');
    assert.equal(r.e.status, 0); // a DREQ came, not the DREQ's timeout (-110)
    assert.equal(r.code, 0);
    assert.deepEqual(r.atExit, { runs: 1, ids: 1, connections: 0, errors: 0 });
    t.diagnostic(`DISCONNECTED ${r.ms.toFixed(0)} ms after the exit was asked for`);
  });

  it('an uncaught exception after ESTABLISHED: the same', async (t) => {
    const r = await withClient('throw', false);
    assert.equal(r.e.event, 'DISCONNECTED');
    assert.equal(r.e.status, 0);
    assert.equal(r.code, 1);
    assert.deepEqual(r.atExit, { runs: 1, ids: 1, connections: 0, errors: 0 });
    t.diagnostic(`DISCONNECTED ${r.ms.toFixed(0)} ms after the throw was asked for`);
  });

  it('the program running out of work (device unref\'d) after ESTABLISHED: the same', async () => {
    const r = await withClient('end', false);
    assert.equal(r.e.event, 'DISCONNECTED');
    assert.equal(r.code, 0);
    assert.deepEqual(r.atExit, { runs: 1, ids: 1, connections: 0, errors: 0 });
  });

  it('a client that exits while its REQ waits on our unanswered CONNECT_REQUEST: REJECTED, reason TIMEOUT (cm_destroy_id in REQ_SENT)', async (t) => {
    const r = await withClient('exit', true);
    // cma_ib_handler: the new id is RDMA_CM_CONNECT, so a REJ on it is RDMA_CM_EVENT_REJECTED with the reason
    assert.equal(r.e.event, 'REJECTED');
    assert.equal(r.e.status, RejReason.TIMEOUT);
    assert.deepEqual(r.atExit, { runs: 1, ids: 1, connections: 0, errors: 0 });
    t.diagnostic(`REJECTED ${r.ms.toFixed(0)} ms after the exit was asked for`);
  });

  it('a listener that exits holding our REQ unanswered: REJECTED, CONSUMER_DEFINED (cm_destroy_id in REQ_RCVD), not UNREACHABLE after the resends', async (t) => {
    const hang = runNode(PEER, ['hang', '127.0.0.2', '0'], { stdin: 'pipe' });
    const [, port, udp] = await hang.waitFor(/"listening":(\d+),"udpPort":(\d+)/, 20_000);
    const d = await createRxeDevice({ address: '127.0.0.3', port: Number(udp) });
    const ch = createEventChannel();
    try {
      const ctx = d.open();
      // REQ timeout 2·ms(1) + ms(20) ≈ 4.2 s a try: UNREACHABLE would take about 17 s
      const id = createId(ch, 'tcp', { packetLifeTime: 1, cmResponseTimeout: 20, maxCmRetries: 3 });
      id.resolveAddr({ address: '127.0.0.2', port: Number(port) }, '127.0.0.3');
      await ch.next('ADDR_RESOLVED', 5000, id);
      id.resolveRoute();
      await ch.next('ROUTE_RESOLVED', 5000, id);
      const pd = ctx.allocPd(), cq = ctx.createCq(4);
      id.createQp(pd, { sendCq: cq, recvCq: cq, cap: { maxSendWr: 1, maxRecvWr: 1 } });
      id.connect();
      await hang.waitFor(/"request":true/, 10_000);
      const r = await endAndExpect(hang, 'exit', ch, id, ['REJECTED', 'UNREACHABLE', 'ESTABLISHED']);
      assert.equal(r.e.event, 'REJECTED');
      assert.equal(r.e.status, RejReason.CONSUMER_DEFINED);
      // the listener and the request's new id
      assert.deepEqual(r.atExit, { runs: 1, ids: 2, connections: 0, errors: 0 });
      t.diagnostic(`REJECTED ${r.ms.toFixed(0)} ms after the exit was asked for`);
      id.destroyId();
      await waitClean();
    } finally {
      if (hang.child.exitCode === null) hang.child.kill('SIGKILL');
      ch.close();
      await d.close();
    }
  });
});
