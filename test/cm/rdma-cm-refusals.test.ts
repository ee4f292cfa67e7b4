// Requests a listener must refuse, and calls an application must not get wrong: each answered
// as Linux's CM answers it (REJ, SIDR_REP(REJECT)) with nothing left waiting in the agent's
// table, and misuse refused with a typed error. Requests are sent at agent level (the MADs a
// hostile or mismatched peer would send) from one rxe device to another in this process.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SoftrdmaError } from '../../src/abi/errors.js';
import { QpAttr, QpState } from '../../src/index.js';
import { createEventChannel, createId, type RdmaCmEvent } from '../../src/cm/index.js';
import type { CmAgentEvent } from '../../src/cm/agent.js';
import { CmDevice } from '../../src/cm/rdma-cm/cm-device.js';
import { formatReq } from '../../src/cm/rdma-cm/cm-fields.js';
import { PortSpace, cmaReqPrivateData, roceGid, serviceIdFor } from '../../src/cm/wire/cma-header.js';
import { RejReason, SidrStatus, TransportServiceType } from '../../src/cm/wire/cm-messages.js';
import { registerSmcrListener, smcrServiceId } from '../../src/smc/smcr/discovery.js';
import { twoDevices, waitFor } from '../helpers/pair.js';

const PORT = 7000;
const header = (ipVersion: 4 | 6 = 4, dstAddr = '127.0.0.3') => cmaReqPrivateData({ ipVersion, srcPort: 1234, srcAddr: ipVersion === 4 ? '127.0.0.2' : '::ffff:127.0.0.2', dstAddr });

function req(o: { serviceId: bigint; mtu?: number; privateData?: Buffer; qpn?: number }) {
  const path = { sgid: roceGid('127.0.0.2'), dgid: roceGid('127.0.0.3'), mtu: o.mtu ?? 3, flowLabel: 0, hopLimit: 64, trafficClass: 0, packetLifeTime: 1 };
  return formatReq({
    serviceId: o.serviceId, qpNum: o.qpn ?? 99, responderResources: 1, initiatorDepth: 1, flowControl: 0, startingPsn: 5, retryCount: 7, rnrRetryCount: 7, srq: 0,
    path, timing: { cmResponseTimeout: 20, maxCmRetries: 1, packetLifeTime: 1 }, privateData: o.privateData ?? header(),
  });
}

/** Two devices, a listener of `ps` on 127.0.0.3:PORT (or `address`), and the client device's agent events. */
async function setUp(ps: 'tcp' | 'udp', address = '127.0.0.3') {
  const { a, b, close } = await twoDevices();
  const ch = createEventChannel();
  const listener = createId(ch, ps);
  listener.bindAddr(address, PORT);
  listener.listen(8);
  const requests: RdmaCmEvent[] = [];
  ch.on('CONNECT_REQUEST', (e: RdmaCmEvent) => requests.push(e));
  const client = CmDevice.of(a).agent;
  const answers: CmAgentEvent[] = [];
  client.on('event', (e: CmAgentEvent) => answers.push(e));
  const server = CmDevice.of(b).agent;
  return {
    ch, requests, client, answers, server,
    done: async () => {
      for (const c of [...client.table.connections()]) client.call(c.localId, { type: 'destroy' });
      ch.close();
      await close();
    },
  };
}

/** Nothing waits in the server's table but the listener. */
const onlyListener = (server: CmDevice['agent']) => [...server.table.connections()].every((c) => c.state === 'LISTEN' || c.state === 'IDLE' || c.state === 'TIMEWAIT');

test('a SIDR_REQ to a TCP listener gets SIDR_REP(REJECT), with no CONNECT_REQUEST (cma_ib_check_req_qp_type)', async () => {
  const s = await setUp('tcp');
  try {
    s.client.sidrRequest({ dgid: roceGid('127.0.0.3'), req: { partitionKey: 0xffff, serviceId: serviceIdFor(PortSpace.TCP, PORT), privateData: header() }, timeoutMs: 2000, maxRetries: 1 });
    const rep = await waitFor('the SIDR_REP', () => s.answers.find((e) => e.event === 'SIDR_REP_RECEIVED'));
    assert.equal((rep.msg as { status: number }).status, SidrStatus.REJECT);
    assert.equal(s.requests.length, 0);
    assert.ok(onlyListener(s.server));
  } finally { await s.done(); }
});

test('a REQ to a UDP listener, a REQ for a UC QP, a REQ with path MTU 0 and an IPv6 header to an IPv4 listener (0.0.0.0 too: afonly) get REJ(CONSUMER_DEFINED), with no CONNECT_REQUEST', async () => {
  for (const [what, ps, make, address] of [
    ['REQ to a UDP listener', 'udp', () => req({ serviceId: serviceIdFor(PortSpace.UDP, PORT) })],
    ['REQ for UC', 'tcp', () => ({ ...req({ serviceId: serviceIdFor(PortSpace.TCP, PORT) }), transportServiceType: TransportServiceType.UC })],
    ['REQ with path MTU 0', 'tcp', () => req({ serviceId: serviceIdFor(PortSpace.TCP, PORT), mtu: 0 })],
    ['REQ with an IPv6 header to an IPv4 listener', 'tcp', () => req({ serviceId: serviceIdFor(PortSpace.TCP, PORT), privateData: header(6, '::ffff:127.0.0.3') })],
    ['REQ with an IPv6 header to a 0.0.0.0 listener', 'tcp', () => req({ serviceId: serviceIdFor(PortSpace.TCP, PORT), privateData: header(6, 'fd00::3') }), '0.0.0.0'],
  ] as const) {
    const s = await setUp(ps, address);
    try {
      s.client.connect({ dgid: roceGid('127.0.0.3'), req: make(), packetLifeTime: 1 });
      const rej = await waitFor(`the REJ (${what})`, () => s.answers.find((e) => e.event === 'REJ_RECEIVED'));
      assert.equal((rej.msg as { reason: number }).reason, RejReason.CONSUMER_DEFINED, what);
      assert.equal(s.requests.length, 0, what);
      assert.ok(onlyListener(s.server), what);
    } finally { await s.done(); }
  }
});

test('an accept whose QP cannot reach RTR rejects the request (rdma_accept), so the peer is not left waiting', async () => {
  const s = await setUp('tcp');
  try {
    s.client.connect({ dgid: roceGid('127.0.0.3'), req: req({ serviceId: serviceIdFor(PortSpace.TCP, PORT) }), packetLifeTime: 1 });
    const e = await waitFor('CONNECT_REQUEST', () => s.requests[0]);
    const pd = e.id.verbs!.allocPd();
    const cq = e.id.verbs!.createCq(16);
    const qp = e.id.createQp(pd, { sendCq: cq, recvCq: cq, cap: { maxSendWr: 4, maxRecvWr: 4 } });
    qp.modify({ qpState: QpState.ERR }, QpAttr.STATE); // ERR -> RTR is not a transition
    assert.throws(() => e.id.accept(), (err: unknown) => err instanceof SoftrdmaError);
    const rej = await waitFor('the REJ', () => s.answers.find((x) => x.event === 'REJ_RECEIVED'));
    assert.equal((rej.msg as { reason: number }).reason, RejReason.CONSUMER_DEFINED);
    assert.equal(qp.state, QpState.ERR);
    e.id.destroyId();
  } finally { await s.done(); }
});

test('an SMC-R discovery listener refuses a REQ (REJ) and keeps nothing of it', async () => {
  const { a, b, close } = await twoDevices();
  const h = registerSmcrListener('127.0.0.3', PORT, b);
  const client = CmDevice.of(a).agent;
  const server = CmDevice.of(b).agent;
  const answers: CmAgentEvent[] = [];
  client.on('event', (e: CmAgentEvent) => answers.push(e));
  try {
    for (let i = 0; i < 5; i++) client.connect({ dgid: roceGid('127.0.0.3'), req: req({ serviceId: smcrServiceId(PORT), qpn: 100 + i, privateData: Buffer.alloc(36) }), packetLifeTime: 1 });
    await waitFor('five REJs', () => answers.filter((e) => e.event === 'REJ_RECEIVED').length === 5);
    assert.ok(onlyListener(server), `left in the table: ${[...server.table.connections()].map((c) => c.state).join(', ')}`);
  } finally {
    h.remove();
    for (const c of [...client.table.connections()]) client.call(c.localId, { type: 'destroy' });
    await close();
  }
});

test('device removal reaches a sink that only owns comm ids (SMC-R discovery queries), once', async () => {
  const { a, close } = await twoDevices();
  try {
    const cm = CmDevice.of(a);
    const id = cm.agent.sidrRequest({ dgid: roceGid('127.0.0.9'), req: { partitionKey: 0xffff, serviceId: 0x1234n, privateData: Buffer.alloc(0) }, timeoutMs: 60_000, maxRetries: 1 });
    let removals = 0;
    cm.own(id, { onCmEvent: () => {}, onDeviceRemoval: () => { removals++; } });
    await a.close();
    assert.equal(removals, 1);
  } finally { await close(); }
});

test('misuse: next() for a destroyed id fails at once with EBADF; createQp without attributes and connect(null) are EINVAL', async () => {
  const { close } = await twoDevices();
  const ch = createEventChannel();
  try {
    const id = createId(ch, 'tcp');
    id.bindAddr('127.0.0.2', 0);
    const pd = id.verbs!.allocPd();
    assert.throws(() => id.createQp(pd, undefined as never), (e: unknown) => e instanceof SoftrdmaError && e.code === 'EINVAL');
    assert.equal(id.qp, undefined);
    id.destroyId();
    const t0 = Date.now();
    await assert.rejects(ch.next(undefined, 10_000, id), (e: unknown) => e instanceof SoftrdmaError && e.code === 'EBADF');
    assert.ok(Date.now() - t0 < 1000);
    pd.dealloc();
    const c = createId(ch, 'tcp');
    c.resolveAddr({ address: '127.0.0.3', port: PORT }, '127.0.0.2', 1000);
    await ch.next('ADDR_RESOLVED', 5000, c);
    c.resolveRoute(1000);
    await ch.next('ROUTE_RESOLVED', 5000, c);
    assert.throws(() => c.connect(null as never), (e: unknown) => e instanceof SoftrdmaError && e.code === 'EINVAL');
    c.destroyId();
  } finally {
    ch.close();
    await close();
  }
});
