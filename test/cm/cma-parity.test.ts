// Where softrdma's rdma_cm and IB CM parted from Linux (cma.c, ucma.c, cm.c) and rdma-core's
// librdmacm, each with the case that showed it: the listen backlog (ucma's: only events the
// application has not read count; a REQ beyond it is dropped without a REJ so its resend gets
// in later; out-of-range backlogs are max_backlog), wildcard sources and destinations in
// resolveAddr, the family of a bound id, port conflicts with a wildcard (cma_check_port), a
// source given for a bound id, accept's srq without a QP, disconnect on a UDP id, next() with a
// timeout Node cannot keep, ib_cm_listen's EBUSY and mask, a DREQ in time-wait naming another QP,
// a SIDR_REP's Q_Key (cma_set_qkey), and connect's and accept's 255 and retry counts above 7.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { QpState, createRxeDevice, type CQ, type PD } from '../../src/index.js';
import {
  createEventChannel, createId, type EventChannel, type RdmaCmEvent, type RdmaCmEventType, type RdmaCmId,
} from '../../src/cm/index.js';
import { CmDevice, cmDevices, type CmIdSink } from '../../src/cm/rdma-cm/cm-device.js';
import { PortTable, ports } from '../../src/cm/rdma-cm/addresses.js';
import { cmStep, newConn, type CmConn } from '../../src/cm/cm-state.js';
import { CmTable } from '../../src/cm/cm-table.js';
import { blankCm } from '../../src/cm/wire/cm-messages.js';
import { PortSpace, serviceIdFor } from '../../src/cm/wire/cma-header.js';
import { waitFor } from '../helpers/pair.js';
import { onTwoDevices } from '../helpers/cm-pair.js';

const QUICK = { packetLifeTime: 1 } as const; // time-wait of a few ms instead of 2 s
const OUTCOMES: RdmaCmEventType[] = ['ESTABLISHED', 'REJECTED', 'UNREACHABLE', 'CONNECT_ERROR', 'CONNECT_RESPONSE'];

interface Res { pd: PD; cq: CQ }
function withQp(id: RdmaCmId): Res {
  const pd = id.verbs!.allocPd();
  const cq = id.verbs!.createCq(16);
  id.createQp(pd, { sendCq: cq, recvCq: cq, cap: { maxSendWr: 4, maxRecvWr: 4, maxSendSge: 1, maxRecvSge: 1 } });
  return { pd, cq };
}

async function resolved(ch: EventChannel, dst: { address: string; port: number }, src?: string | { address: string; port?: number }, opts = {}, ps: 'tcp' | 'udp' = 'tcp') {
  const id = createId(ch, ps, { ...QUICK, ...opts });
  id.resolveAddr(dst, src);
  assert.equal((await ch.next(['ADDR_RESOLVED', 'ADDR_ERROR'], 5000, id)).event, 'ADDR_RESOLVED');
  id.resolveRoute();
  await ch.next('ROUTE_RESOLVED', 5000, id);
  return id;
}

function tcpListener(ch: EventChannel, address: string, backlog?: number): RdmaCmId {
  const l = createId(ch, 'tcp', QUICK);
  l.bindAddr(address, 0);
  l.listen(backlog);
  return l;
}

const backlogOf = (l: RdmaCmId) => (l as unknown as { backlog: number }).backlog;
const pendingOf = (l: RdmaCmId) => (l as unknown as { pending: number }).pending;
const cmOn = (address: string) => cmDevices().find((d) => d.address === address)!;

describe('the listen backlog, as ucma\'s', () => {
  it('a CONNECT_REQUEST the application has taken leaves the backlog: with listen(1), a second client gets its CONNECT_REQUEST while the first is unanswered', async () => {
    await onTwoDevices(async ({ sch, cch }) => {
      const l = tcpListener(sch, '127.0.0.3', 1);
      const port = l.localAddr!.port;
      const c1 = await resolved(cch, { address: '127.0.0.3', port }, '127.0.0.2');
      c1.connect({ qpNum: 0x61 });
      const r1 = await sch.next('CONNECT_REQUEST', 5000);
      assert.equal(pendingOf(l), 0, 'taken by next(): the slot is back');
      const c2 = await resolved(cch, { address: '127.0.0.3', port }, '127.0.0.2');
      c2.connect({ qpNum: 0x62 });
      const got = await Promise.race([sch.next('CONNECT_REQUEST', 5000), cch.next(OUTCOMES, 5000, c2)]);
      assert.equal(got.event, 'CONNECT_REQUEST', `client 2 got ${got.event} ${got.reason ?? ''}`);
      assert.equal(got.listenId, l);
      assert.equal(r1.id.state, 'connect-request');
      for (const id of [r1.id, got.id, c1, c2, l]) id.destroyId();
    });
  });

  it('a full backlog (events not read) drops a REQ without a REJ; its resend connects once the application reads the queue', async () => {
    await onTwoDevices(async ({ sch, cch }) => {
      const l = tcpListener(sch, '127.0.0.3', 2);
      const port = l.localAddr!.port;
      const server = cmOn('127.0.0.3').agent;
      const newReqs = () => server.counters.rx_msgs.REQ - server.counters.rx_duplicates.REQ;
      // Nobody reads sch: both requests wait in the channel, the backlog is full.
      for (const qpNum of [0x71, 0x72]) (await resolved(cch, { address: '127.0.0.3', port }, '127.0.0.2')).connect({ qpNum });
      await waitFor('two requests queued', () => pendingOf(l) === 2, 5000);
      // A client resending every 2 + 64 ms, 15 times: about a second before it gives up.
      const c3 = await resolved(cch, { address: '127.0.0.3', port }, '127.0.0.2', { cmResponseTimeout: 14, maxCmRetries: 15 });
      const c3r = withQp(c3);
      let c3Event: RdmaCmEvent | undefined;
      cch.on('event', (e: RdmaCmEvent) => { if (e.id === c3) c3Event = e; });
      const rejBefore = server.counters.tx_msgs.REJ;
      c3.connect();
      await waitFor('two of client 3\'s REQs dropped', () => newReqs() >= 4 || c3Event, 5000);
      assert.equal(c3Event, undefined, `client 3 heard ${c3Event?.event} ${c3Event?.reason ?? ''}`);
      assert.equal(server.counters.tx_msgs.REJ, rejBefore, 'no REJ for a dropped REQ');
      assert.equal(pendingOf(l), 2);
      // The application reads the queue: the slots are back, the next resend is a new request.
      const queued = [await sch.next('CONNECT_REQUEST', 100), await sch.next('CONNECT_REQUEST', 100)];
      assert.equal(pendingOf(l), 0);
      const r3 = await sch.next('CONNECT_REQUEST', 5000);
      assert.equal(r3.conn!.qpNum, c3.qp!.qpn);
      const s3r = withQp(r3.id);
      r3.id.accept();
      assert.equal((await cch.next(OUTCOMES, 5000, c3)).event, 'ESTABLISHED');
      await sch.next('ESTABLISHED', 5000, r3.id);
      for (const id of [c3, r3.id, ...queued.map((e) => e.id), l]) id.destroyId();
      for (const r of [c3r, s3r]) { r.cq.destroy(); r.pd.dealloc(); }
    });
  });

  it('listen(backlog): <= 0 or above 1024 is 1024 (ucma_listen\'s max_backlog); a non-integer is EINVAL naming it', async () => {
    await onTwoDevices(async ({ sch }) => {
      for (const [asked, got] of [[-1, 1024], [0, 1024], [100000, 1024], [1024, 1024], [5, 5]] as const) {
        const l = tcpListener(sch, '127.0.0.3', asked);
        assert.equal(backlogOf(l), got, `listen(${asked})`);
        l.destroyId();
      }
      const l = createId(sch, 'tcp');
      l.bindAddr('127.0.0.3');
      assert.throws(() => l.listen(1.5), { code: 'EINVAL', message: /backlog/ });
      assert.equal(l.state, 'addr-bound');
      l.destroyId();
      assert.equal(ports.size, 0);
    });
  });
});

describe('resolveAddr\'s addresses, as cma.c\'s', () => {
  it('a wildcard src: the device by the destination, its port bound on the wildcard, its family checked', async () => {
    await onTwoDevices(async ({ cch }) => {
      const c = await resolved(cch, { address: '127.0.0.3', port: 9 }, '0.0.0.0');
      assert.equal(c.localAddr!.family, 4);
      assert.ok(c.device);
      const c2 = await resolved(cch, { address: '127.0.0.3', port: 9 }, { address: '0.0.0.0', port: 20123 });
      assert.equal(c2.localAddr!.port, 20123);
      // bound on the wildcard: another id cannot take that port on any address (cma_check_port)
      const other = createId(cch, 'tcp');
      assert.throws(() => other.bindAddr('127.0.0.2', 20123), { code: 'EADDRNOTAVAIL' });
      const v6 = createId(cch, 'tcp');
      assert.throws(() => v6.resolveAddr({ address: '127.0.0.3', port: 9 }, '::'), { code: 'EINVAL', message: /different families/ });
      assert.equal(v6.state, 'idle');
      for (const id of [c, c2, other, v6]) id.destroyId();
      assert.equal(ports.size, 0);
    });
  });

  it('an id bound to :: does not resolve an IPv4 destination (EINVAL, resolve_prepare_src); one bound to 0.0.0.0 does', async () => {
    await onTwoDevices(async ({ cch }) => {
      const id = createId(cch, 'tcp');
      id.bindAddr('::');
      assert.throws(() => id.resolveAddr({ address: '127.0.0.3', port: 9 }), { code: 'EINVAL', message: /bound address :: and dst 127.0.0.3 are of different families/ });
      assert.equal(id.state, 'addr-bound');
      const v4 = createId(cch, 'tcp', QUICK);
      v4.bindAddr('0.0.0.0');
      v4.resolveAddr({ address: '127.0.0.3', port: 9 });
      assert.equal((await cch.next(['ADDR_RESOLVED', 'ADDR_ERROR'], 5000, v4)).event, 'ADDR_RESOLVED');
      for (const x of [id, v4]) x.destroyId();
    });
  });

  it('a src given for an id already bound is ignored (resolve_prepare_src), not EINVAL', async () => {
    await onTwoDevices(async ({ a, cch }) => {
      const id = createId(cch, 'tcp', QUICK);
      id.bindAddr('127.0.0.2');
      id.resolveAddr({ address: '127.0.0.3', port: 9 }, '127.0.0.3');
      assert.equal((await cch.next(['ADDR_RESOLVED', 'ADDR_ERROR'], 5000, id)).event, 'ADDR_RESOLVED');
      assert.equal(id.localAddr!.address, '127.0.0.2');
      assert.equal(id.device, a);
      id.destroyId();
    });
  });

  it('a wildcard destination is loopback: the device\'s own address and GID (cma_resolve_loopback); a connection to a listener there works', async () => {
    await onTwoDevices(async ({ sch, cch }) => {
      const l = tcpListener(sch, '127.0.0.3');
      const port = l.localAddr!.port;
      const c = createId(cch, 'tcp', QUICK);
      c.bindAddr('127.0.0.3');
      const c2 = await resolved(cch, { address: '0.0.0.0', port }); // unbound: a device of the family
      assert.equal(c2.remoteAddr!.address, c2.localAddr!.address);
      assert.deepEqual(c2.route!.dgid, c2.route!.sgid);
      c2.destroyId();
      c.resolveAddr({ address: '0.0.0.0', port });
      await cch.next('ADDR_RESOLVED', 5000, c);
      c.resolveRoute();
      await cch.next('ROUTE_RESOLVED', 5000, c);
      assert.deepEqual(c.remoteAddr, { address: '127.0.0.3', port, family: 4 });
      assert.deepEqual(c.route!.dgid, c.route!.sgid);
      const cr = withQp(c);
      c.connect();
      const req = await sch.next('CONNECT_REQUEST', 5000);
      const sr = withQp(req.id);
      req.id.accept();
      assert.equal((await cch.next(OUTCOMES, 5000, c)).event, 'ESTABLISHED');
      await sch.next('ESTABLISHED', 5000, req.id);
      for (const id of [c, req.id, l]) id.destroyId();
      for (const r of [cr, sr]) { r.cq.destroy(); r.pd.dealloc(); }
    });
  });
});

describe('ports: conflicts with a wildcard (cma_check_port)', () => {
  it('a wildcard and any address on one port: EADDRNOTAVAIL both ways; the same address twice: EADDRINUSE; two addresses share it', () => {
    const t = new PortTable();
    t.bind(2, '0.0.0.0', 5000);
    assert.throws(() => t.bind(2, '10.0.0.1', 5000), { code: 'EADDRNOTAVAIL', message: /port 5000 is bound to 0\.0\.0\.0 already; 10\.0\.0\.1 cannot share it/ });
    assert.throws(() => t.bind(2, '::', 5000), { code: 'EADDRNOTAVAIL', message: /bound to 0\.0\.0\.0 already; :: cannot/ });
    t.bind(2, '10.0.0.1', 5001);
    assert.throws(() => t.bind(2, '0.0.0.0', 5001), { code: 'EADDRNOTAVAIL', message: /port 5001 is bound to 10\.0\.0\.1 already; 0\.0\.0\.0 cannot share it/ });
    assert.throws(() => t.bind(2, '10.0.0.1', 5001), { code: 'EADDRINUSE' });
    t.bind(2, '10.0.0.2', 5001);
    t.bind(3, '10.0.0.1', 5001); // another port space
    assert.equal(t.size, 4);
  });
});

describe('AFONLY (rdma_set_option RDMA_OPTION_ID_AFONLY, an IPv6 review\'s finding)', () => {
  it('ports: a :: id with afonly shares a port with 0.0.0.0 (always afonly); without it, not', () => {
    const t = new PortTable();
    t.bind(2, '0.0.0.0', 5000);
    t.bind(2, '::', 5000, true);
    assert.throws(() => t.bind(2, '::1', 5000, true), { code: 'EADDRNOTAVAIL' }, 'the :: wildcard holds the port for IPv6');
    t.bind(2, '10.0.0.1', 5001);
    t.bind(2, '::', 5001, true);
    assert.throws(() => t.bind(2, '::', 5002, false) && t.bind(2, '0.0.0.0', 5002), { code: 'EADDRNOTAVAIL' });
  });

  it("a '::' listener with afonly takes IPv6 clients only (IPv4 is refused, as with no listener), and shares its port with a '0.0.0.0' one", async () => {
    const v6 = await createRxeDevice({ address: '::1', port: 0 });
    try {
      await onTwoDevices(async ({ sch, cch }) => {
        const l6 = createId(sch, 'tcp', QUICK);
        l6.setOption('afonly', true);
        l6.bindAddr('::', 0);
        l6.listen();
        const port = l6.localAddr!.port;
        assert.throws(() => l6.setOption('afonly', false), { code: 'EINVAL', message: /before the id is more than bound/ });
        assert.throws(() => createId(sch, 'tcp').setOption('tos' as 'afonly', true), { code: 'ENOSYS' });
        // An IPv4 client: refused (the header names IPv4), as by a port nobody listens on.
        const c4 = await resolved(cch, { address: '127.0.0.3', port }, '127.0.0.2');
        const r4 = withQp(c4);
        c4.connect();
        const e4 = await cch.next(OUTCOMES, 5000, c4);
        assert.equal(e4.event, 'REJECTED');
        // An IPv6 one connects.
        const c6 = await resolved(cch, { address: '::1', port }, '::1');
        const r6 = withQp(c6);
        c6.connect();
        const req = await sch.next('CONNECT_REQUEST', 5000);
        const sr = withQp(req.id);
        req.id.accept();
        assert.equal((await cch.next(OUTCOMES, 5000, c6)).event, 'ESTABLISHED');
        await sch.next('ESTABLISHED', 5000, req.id);
        // 0.0.0.0 on the same port: an IPv4 listener beside it.
        const l4 = createId(sch, 'tcp', QUICK);
        l4.bindAddr('0.0.0.0', port);
        l4.listen();
        for (const id of [c4, c6, req.id, l6, l4]) id.destroyId();
        for (const r of [r4, r6, sr]) { r.cq.destroy(); r.pd.dealloc(); }
      });
    } finally {
      await v6.close();
    }
  });
});

describe('accept, disconnect and the channel, as librdmacm\'s', () => {
  it('accept without a QP on the id: param.srq goes into the REP (rdma_accept: id_priv->srq = conn_param->srq)', async () => {
    await onTwoDevices(async ({ sch, cch }) => {
      const l = tcpListener(sch, '127.0.0.3');
      const c = await resolved(cch, { address: '127.0.0.3', port: l.localAddr!.port }, '127.0.0.2');
      c.connect({ qpNum: 0x81 });
      const req = await sch.next('CONNECT_REQUEST', 5000);
      req.id.accept({ qpNum: 0x82, srq: 1 });
      const e = await cch.next(OUTCOMES, 5000, c);
      assert.equal(e.event, 'CONNECT_RESPONSE');
      assert.equal(e.conn!.qpNum, 0x82);
      assert.equal(e.conn!.srq, 1);
      for (const id of [c, req.id, l]) id.destroyId();
    });
  });

  it('disconnect on a UDP id after SIDR: no error, its QP in ERR', async () => {
    await onTwoDevices(async ({ sch, cch }) => {
      const l = createId(sch, 'udp', QUICK);
      l.bindAddr('127.0.0.3', 0);
      l.listen();
      const c = await resolved(cch, { address: '127.0.0.3', port: l.localAddr!.port }, '127.0.0.2', {}, 'udp');
      const cr = withQp(c);
      c.connect();
      const req = await sch.next('CONNECT_REQUEST', 5000);
      req.id.accept({ qpNum: 0x91 });
      assert.equal((await cch.next(OUTCOMES, 5000, c)).event, 'ESTABLISHED');
      c.disconnect();
      assert.equal(c.qp!.state, QpState.ERR);
      req.id.disconnect(); // the passive side too (no QP: nothing to move)
      const idle = createId(cch, 'udp');
      assert.throws(() => idle.disconnect(), { code: 'EINVAL', message: /no connection/ });
      for (const id of [c, req.id, l, idle]) id.destroyId();
      cr.cq.destroy();
      cr.pd.dealloc();
    });
  });

  it('disconnect on a listener: a no-op on one bound to a device\'s address (it has an ib cm_id), EINVAL on a wildcard one', async () => {
    await onTwoDevices(async ({ sch }) => {
      const l = createId(sch, 'tcp', QUICK);
      l.bindAddr('127.0.0.3', 0);
      l.listen();
      l.disconnect();
      assert.equal(l.state, 'listen');
      const w = createId(sch, 'tcp', QUICK);
      w.bindAddr('0.0.0.0', 0);
      w.listen();
      assert.throws(() => w.disconnect(), { code: 'EINVAL', message: /no connection/ });
      for (const id of [l, w]) id.destroyId();
    });
  });

  it('next() with a timeout above 2^31 - 1 ms waits without one (Node would fire it at once)', async () => {
    const ch = createEventChannel();
    const p = ch.next('ESTABLISHED', 2 ** 31);
    const outcome = await Promise.race([p.then(() => 'event', (err: Error) => err.message), new Promise((r) => setTimeout(() => r('still waiting'), 50))]);
    assert.equal(outcome, 'still waiting');
    ch.close();
    await assert.rejects(p, { code: 'EBADF' });
  });
});

describe('connection parameters, as cma_connect_ib, cma_accept_ib and librdmacm take them', () => {
  it('responderResources / initiatorDepth 255: connect the device\'s most, accept what the peer asked; retry counts above 7 are 7; above 255 EINVAL', async () => {
    await onTwoDevices(async ({ sch, cch }) => {
      const l = tcpListener(sch, '127.0.0.3');
      const c = await resolved(cch, { address: '127.0.0.3', port: l.localAddr!.port }, '127.0.0.2');
      const dev = c.verbs!.queryDevice();
      assert.throws(() => c.connect({ qpNum: 0xa1, retryCount: 256 }), { code: 'EINVAL', message: /retryCount/ });
      assert.throws(() => c.connect({ qpNum: 0xa1, responderResources: dev.maxQpRdAtom + 1 === 255 ? 256 : dev.maxQpRdAtom + 1 }), { code: 'EINVAL', message: /responderResources/ });
      c.connect({ qpNum: 0xa1, responderResources: 255, initiatorDepth: 255, retryCount: 9, rnrRetryCount: 200 });
      const req = await sch.next('CONNECT_REQUEST', 5000);
      // the peer's view: our responder resources are its initiator depth
      assert.deepEqual([req.conn!.initiatorDepth, req.conn!.responderResources], [dev.maxQpRdAtom, dev.maxQpInitRdAtom]);
      assert.deepEqual([req.conn!.retryCount, req.conn!.rnrRetryCount], [7, 7]);
      const sdev = req.id.verbs!.queryDevice();
      req.id.accept({ qpNum: 0xa2, responderResources: 255, initiatorDepth: 255, rnrRetryCount: 8 });
      const e = await cch.next(OUTCOMES, 5000, c);
      assert.equal(e.event, 'CONNECT_RESPONSE');
      assert.deepEqual([e.conn!.initiatorDepth, e.conn!.responderResources, e.conn!.rnrRetryCount],
        [Math.min(dev.maxQpInitRdAtom, sdev.maxQpRdAtom), Math.min(dev.maxQpRdAtom, sdev.maxQpInitRdAtom), 7]);
      for (const id of [c, req.id, l]) id.destroyId();
    });
  });

  it('a SIDR_REP with another Q_Key than the QP createQp made: ADDR_ERROR -EINVAL (cma_set_qkey); without a QP the id takes it', async () => {
    await onTwoDevices(async ({ b, cch }) => {
      const port = 7301;
      const server = CmDevice.of(b);
      const lid = server.agent.listen(serviceIdFor(PortSpace.UDP, port));
      const sink: CmIdSink = {
        onCmEvent: (e) => server.agent.call(e.localId, {
          type: 'send_sidr_rep', rep: { status: 0, additionalInfoLength: 0, qpn: 0x55, qkey: 0x1111, additionalInfo: Buffer.alloc(0), privateData: Buffer.alloc(0) },
        }),
        onDeviceRemoval: () => undefined,
      };
      server.own(lid, sink);
      const c = await resolved(cch, { address: '127.0.0.3', port }, '127.0.0.2', {}, 'udp');
      const cr = withQp(c);
      c.connect();
      const e = await cch.next(['ESTABLISHED', 'UNREACHABLE', 'ADDR_ERROR'], 5000, c);
      assert.deepEqual([e.event, e.status], ['ADDR_ERROR', -22]);
      const c2 = await resolved(cch, { address: '127.0.0.3', port }, '127.0.0.2', {}, 'udp');
      c2.connect();
      const e2 = await cch.next(['ESTABLISHED', 'UNREACHABLE', 'ADDR_ERROR'], 5000, c2);
      assert.deepEqual([e2.event, e2.ud?.qkey, e2.ud?.qpNum], ['ESTABLISHED', 0x1111, 0x55]);
      for (const id of [c, c2]) id.destroyId();
      server.agent.call(lid, { type: 'destroy' });
      server.disown(lid);
      cr.cq.destroy();
      cr.pd.dealloc();
    });
  });
});

describe('the IB CM, as cm.c', () => {
  it('ib_cm_listen: EBUSY for a service id another listener covers, the id masked first', () => {
    const t = new CmTable({ localCaGuid: 1n });
    const a = t.create(), b = t.create(), c = t.create(), d = t.create();
    assert.equal(t.listen(a.localId, 0x1200n, 0xff00n).error, undefined);
    assert.equal(t.listen(b.localId, 0x1200n).error, 'EBUSY');
    // 0x12ff is covered by both (0x12xx and 0x..ff): cm_insert_listen compares the masked ids
    assert.equal(t.listen(c.localId, 0x34ffn, 0x00ffn).error, 'EBUSY');
    assert.equal(t.get(c.localId)!.state, 'IDLE');
    assert.equal(t.listen(d.localId, 0x3400n, 0xff00n).error, undefined);
  });

  it('in time-wait, a DREQ naming another QP is dropped, one naming ours gets the DREP again (cm_dreq_handler)', () => {
    const c: CmConn = { ...newConn({ localId: 0x10, localCaGuid: 1n }), state: 'TIMEWAIT', remoteId: 0x20, localQpn: 0x33, remoteQpn: 0x44, timewaitTimer: true };
    const dreq = (qpn: number) => ({ type: 'recv' as const, tid: 9n, msg: { ...blankCm('DREQ'), localCommId: 0x20, remoteCommId: 0x10, remoteQpnEecn: qpn } });
    const other = cmStep(c, dreq(0x34));
    assert.deepEqual(other.actions, []);
    assert.equal(other.dropped, 'unexpected');
    const ours = cmStep(c, dreq(0x33));
    assert.deepEqual(ours.actions.map((x) => x.type === 'send' && x.msg.kind), ['DREP']);
  });
});
