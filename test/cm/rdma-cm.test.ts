// The rdma_cm API (softrdma/cm) in one process: two devices on 127.0.0.2 and 127.0.0.3 (and
// one device on ::1 talking to itself for IPv6). Resolve, route, connect/accept with private
// data both ways, the QP driven to RTS by the CM (a SEND and an RDMA READ across it), the
// PSNs as Linux sets them, disconnect and time-wait; reject with private data; no listener;
// UD through SIDR; argument and state errors that change nothing; several ids on one device;
// destroy at every stage frees everything; DEVICE_REMOVAL.

import assert from 'node:assert/strict';
import os from 'node:os';
import { describe, it } from 'node:test';
import { Access, QpState, SendFlags, WcOpcode, WcStatus, WrOpcode, createRxeDevice, type CQ, type Device, type PD } from '../../src/index.js';
import {
  createEventChannel, createId, RDMA_UDP_QKEY, RejReason, type EventChannel, type RdmaCmEvent, type RdmaCmId,
} from '../../src/cm/index.js';
import { cmDevices } from '../../src/cm/rdma-cm/cm-device.js';
import { ports } from '../../src/cm/rdma-cm/addresses.js';
import { twoDevices, waitCompletions, waitFor } from '../helpers/pair.js';
import { onTwoDevices } from '../helpers/cm-pair.js';

const WC = (w: unknown) => JSON.stringify(w, (_k, v: unknown) => (typeof v === 'bigint' ? String(v) : v));
const QUICK = { packetLifeTime: 1 } as const; // time-wait of a few ms instead of 2 s

interface Res { pd: PD; cq: CQ }
function resources(id: RdmaCmId): Res {
  const pd = id.verbs!.allocPd();
  const cq = id.verbs!.createCq(64);
  id.createQp(pd, { sendCq: cq, recvCq: cq, cap: { maxSendWr: 16, maxRecvWr: 16, maxSendSge: 1, maxRecvSge: 1 } });
  return { pd, cq };
}
function free(r: Res) {
  r.cq.destroy();
  r.pd.dealloc();
}

/** A listener on `address:port`; returns its id and the channel. */
function listener(ch: EventChannel, address: string, opts: Parameters<typeof createId>[2] = {}) {
  const l = createId(ch, 'tcp', { context: 'the listener', ...QUICK, ...opts });
  l.bindAddr(address, 0);
  l.listen(8);
  return l;
}

async function resolved(ch: EventChannel, dst: string, port: number, src?: string, ps: 'tcp' | 'udp' = 'tcp', opts = {}) {
  const id = createId(ch, ps, { ...QUICK, ...opts });
  id.resolveAddr({ address: dst, port }, src, 1000);
  assert.equal((await ch.next(['ADDR_RESOLVED', 'ADDR_ERROR'], 5000, id)).event, 'ADDR_RESOLVED');
  id.resolveRoute(1000);
  assert.equal((await ch.next(['ROUTE_RESOLVED', 'ROUTE_ERROR'], 5000, id)).event, 'ROUTE_RESOLVED');
  return id;
}

/** CM MADs sent by every CM device so far. */
function sentMads(): number {
  return cmDevices().reduce((n, d) => n + Object.values(d.agent.counters.tx_msgs).reduce((a, b) => a + b, 0), 0);
}

function nothingLeft() {
  for (const d of cmDevices()) assert.deepEqual(d.census(), { commIds: 0, ids: 0, agentConnections: 0 }, `device ${d.address}`);
  assert.equal(ports.size, 0, 'bound ports');
}

/** Connect a client on `a` to a listener on `b`, both with QPs; returns both ids after ESTABLISHED. */
async function establish(sch: EventChannel, cch: EventChannel, l: RdmaCmId, dst: string, src: string) {
  const c = await resolved(cch, dst, l.localAddr!.port, src);
  const cr = resources(c);
  c.connect({ privateData: Buffer.from('hello from the client'), responderResources: 1, initiatorDepth: 1 });
  const req = await sch.next('CONNECT_REQUEST', 5000);
  const s = req.id;
  const sr = resources(s);
  s.accept({ privateData: Buffer.from('welcome') });
  const [ce, se] = await Promise.all([cch.next(['ESTABLISHED', 'REJECTED', 'UNREACHABLE', 'CONNECT_ERROR'], 5000, c), sch.next('ESTABLISHED', 5000, s)]);
  return { c, s, cr, sr, req, ce, se };
}

describe('rdma_cm: RC between two devices', () => {
  it('resolve, connect, accept with private data both ways, SEND and RDMA READ over the QPs, disconnect, time-wait, destroy: nothing left', async () => {
    await onTwoDevices(async ({ a, b, sch, cch }) => {
      const l = listener(sch, '127.0.0.3');
      assert.equal(l.state, 'listen');
      const { c, s, cr, sr, req, ce, se } = await establish(sch, cch, l, '127.0.0.3', '127.0.0.2');
      // the request: a new id with the listener's context, the client's private data and addresses
      assert.equal(req.listenId, l);
      assert.equal(s.context, 'the listener');
      assert.equal(req.conn!.privateData.length, 56); // the REQ's 92 bytes less the header, zero-padded, as Linux delivers it
      assert.equal(req.conn!.privateData.subarray(0, 21).toString(), 'hello from the client');
      assert.equal(req.conn!.qpNum, c.qp!.qpn);
      assert.deepEqual([req.conn!.responderResources, req.conn!.initiatorDepth, req.conn!.retryCount, req.conn!.rnrRetryCount], [1, 1, 7, 7]);
      assert.deepEqual(s.remoteAddr, { address: '127.0.0.2', port: c.localAddr!.port, family: 4 });
      assert.deepEqual(s.localAddr, { address: '127.0.0.3', port: l.localAddr!.port, family: 4 });
      assert.equal(c.device, a);
      assert.equal(s.device, b);
      // established both ways, the server's private data on the client
      assert.equal(ce.event, 'ESTABLISHED');
      assert.equal(ce.conn!.privateData.length, 196);
      assert.equal(ce.conn!.privateData.subarray(0, 7).toString(), 'welcome');
      assert.equal(ce.conn!.qpNum, s.qp!.qpn);
      assert.equal(se.event, 'ESTABLISHED');
      // QPs in RTS with each other's numbers; each sends from the PSN the other advertised
      const cq = c.qp!.query(), sq = s.qp!.query();
      assert.equal(c.qp!.state, QpState.RTS);
      assert.equal(s.qp!.state, QpState.RTS);
      assert.equal(cq.destQpNum, s.qp!.qpn);
      assert.equal(sq.destQpNum, c.qp!.qpn);
      assert.equal(cq.sqPsn, sq.rqPsn);
      assert.equal(sq.sqPsn, cq.rqPsn);
      // a SEND server → client, an RDMA READ server ← client (the client's QP grants REMOTE_READ)
      const msg = Buffer.from('ping over the CM');
      const smr = sr.pd.regMr(Buffer.from(msg), Access.LOCAL_WRITE);
      const rbuf = Buffer.alloc(64);
      const cmr = cr.pd.regMr(rbuf, Access.LOCAL_WRITE | Access.REMOTE_READ | Access.REMOTE_WRITE);
      c.qp!.postRecv({ wrId: 2n, sgList: [cmr.sge(0, 64)] });
      s.qp!.postSend({ wrId: 3n, opcode: WrOpcode.SEND, sendFlags: SendFlags.SIGNALED, sgList: [smr.sge()] });
      const cw = await waitCompletions(cr.cq, 1);
      assert.ok(cw.every((w) => w.status === WcStatus.SUCCESS), WC(cw));
      assert.equal(rbuf.subarray(0, msg.length).toString(), msg.toString());
      const dst = Buffer.alloc(msg.length);
      const dmr = sr.pd.regMr(dst, Access.LOCAL_WRITE);
      s.qp!.postSend({ wrId: 5n, opcode: WrOpcode.RDMA_READ, sendFlags: SendFlags.SIGNALED, sgList: [dmr.sge()], rdma: { remoteAddr: cmr.addr, rkey: cmr.rkey } });
      const sw = await waitCompletions(sr.cq, 2);
      assert.ok(sw.every((w) => w.status === WcStatus.SUCCESS), WC(sw));
      assert.equal(sw[1]!.opcode, WcOpcode.RDMA_READ);
      assert.equal(dst.toString(), msg.toString());
      // disconnect: DISCONNECTED on both, the QPs in ERR, then TIMEWAIT_EXIT on both
      c.disconnect();
      assert.equal(c.qp!.state, QpState.ERR);
      const sd = await sch.next('DISCONNECTED', 5000, s);
      assert.equal(sd.status, 0);
      s.disconnect(); // the DREP
      await Promise.all([cch.next('DISCONNECTED', 5000, c), cch.next('TIMEWAIT_EXIT', 5000, c), sch.next('TIMEWAIT_EXIT', 5000, s)]);
      for (const m of [smr, cmr, dmr]) m.dereg();
      c.destroyId();
      s.destroyId();
      free(cr);
      free(sr);
      l.destroyId();
      assert.equal(c.state, 'destroyed');
      nothingLeft();
      assert.throws(() => c.connect(), { code: 'EBADF' });
    });
  });

  it('reject with private data: REJECTED, reason CONSUMER_DEFINED (28), the data received; the QP in ERR', async () => {
    await onTwoDevices(async ({ sch, cch }) => {
      const l = listener(sch, '127.0.0.3');
      const c = await resolved(cch, '127.0.0.3', l.localAddr!.port, '127.0.0.2');
      const cr = resources(c);
      c.connect({ privateData: Buffer.from('let me in') });
      const req = await sch.next('CONNECT_REQUEST', 5000);
      assert.throws(() => req.id.reject(Buffer.alloc(149)), { code: 'EINVAL', message: /privateData is 149 bytes, at most 148/ });
      assert.equal(req.id.state, 'connect-request');
      req.id.reject(Buffer.from('not today'));
      const ev = await cch.next(['REJECTED', 'ESTABLISHED', 'UNREACHABLE'], 5000, c);
      assert.equal(ev.event, 'REJECTED');
      assert.equal(ev.status, RejReason.CONSUMER_DEFINED);
      assert.equal(ev.reason, 'IB_CM_REJ_CONSUMER_DEFINED');
      assert.equal(ev.conn!.privateData.subarray(0, 9).toString(), 'not today');
      assert.equal(c.qp!.state, QpState.ERR);
      req.id.destroyId();
      c.destroyId();
      free(cr);
      l.destroyId();
      nothingLeft();
    });
  });

  it('no listener on the port: REJECTED with reason INVALID_SERVICE_ID (8)', async () => {
    const { close } = await twoDevices();
    const cch = createEventChannel();
    try {
      const c = await resolved(cch, '127.0.0.3', 7175, '127.0.0.2');
      const cr = resources(c);
      c.connect();
      const ev = await cch.next(['REJECTED', 'ESTABLISHED', 'UNREACHABLE'], 5000, c);
      assert.equal(ev.event, 'REJECTED');
      assert.equal(ev.status, RejReason.INVALID_SERVICE_ID);
      c.destroyId();
      free(cr);
      nothingLeft();
    } finally {
      cch.close();
      await close();
    }
  });

  it('an unanswered REQ: UNREACHABLE (-ETIMEDOUT) after the retries of a short CM timeout', async () => {
    const dev = await createRxeDevice({ address: '127.0.0.2', port: 0 });
    const cch = createEventChannel();
    try {
      // 127.0.0.9 has no device: the REQ and its 2 resends go nowhere (2·ms(1) + ms(8) = 3 ms each)
      const c = await resolved(cch, '127.0.0.9', 7174, '127.0.0.2', 'tcp', { cmResponseTimeout: 8, maxCmRetries: 2 });
      const cr = resources(c);
      const t0 = Date.now();
      c.connect();
      const ev = await cch.next(['REJECTED', 'ESTABLISHED', 'UNREACHABLE'], 5000, c);
      assert.equal(ev.event, 'UNREACHABLE');
      assert.equal(ev.status, -110);
      const agent = cmDevices().find((d) => d.device === dev)!.agent;
      assert.equal(agent.counters.tx_msgs.REQ, 3, 'the REQ and its 2 resends');
      assert.ok(Date.now() - t0 < 4000);
      c.destroyId();
      free(cr);
      nothingLeft();
    } finally {
      cch.close();
      await dev.close();
    }
  });

  it('a QP that cannot go to RTR at the REP: CONNECT_ERROR here, REJECTED (CONSUMER_DEFINED) at the server', async () => {
    await onTwoDevices(async ({ sch, cch }) => {
      const l = listener(sch, '127.0.0.3');
      const c = await resolved(cch, '127.0.0.3', l.localAddr!.port, '127.0.0.2');
      const cr = resources(c);
      c.connect();
      const req = await sch.next('CONNECT_REQUEST', 5000);
      c.qp!.modify({ qpState: QpState.ERR }, 1); // QpAttr.STATE: from ERR there is no way to RTR
      const sr = resources(req.id);
      req.id.accept();
      const ce = await cch.next(['ESTABLISHED', 'CONNECT_ERROR'], 5000, c);
      assert.equal(ce.event, 'CONNECT_ERROR');
      assert.equal(ce.status, -22);
      const se = await sch.next(['ESTABLISHED', 'REJECTED'], 5000, req.id);
      assert.equal(se.event, 'REJECTED');
      assert.equal(se.status, RejReason.CONSUMER_DEFINED);
      assert.equal(req.id.qp!.state, QpState.ERR);
      for (const id of [c, req.id, l]) id.destroyId();
      free(cr);
      free(sr);
      await waitEmpty();
    });
  });

  it('a connect without a QP: CONNECT_RESPONSE with the peer QPN, then establish() sends the RTU', async () => {
    await onTwoDevices(async ({ sch, cch }) => {
      const l = listener(sch, '127.0.0.3');
      const c = await resolved(cch, '127.0.0.3', l.localAddr!.port, '127.0.0.2');
      assert.throws(() => c.connect(), { code: 'EINVAL', message: /needs a QP/ });
      c.connect({ qpNum: 0x1234 });
      const req = await sch.next('CONNECT_REQUEST', 5000);
      assert.equal(req.conn!.qpNum, 0x1234);
      req.id.accept({ qpNum: 0x4321 });
      const resp = await cch.next(['CONNECT_RESPONSE', 'REJECTED'], 5000, c);
      assert.equal(resp.event, 'CONNECT_RESPONSE');
      assert.equal(resp.conn!.qpNum, 0x4321);
      // As rdma_disconnect: no DREQ before the RTU (ib_send_cm_dreq fails), no DREP owed: nothing
      // is sent, and establish() still can.
      const sentBefore = sentMads();
      c.disconnect();
      assert.equal(sentMads(), sentBefore);
      c.establish();
      await sch.next('ESTABLISHED', 5000, req.id);
      c.destroyId(); // DREQ; the server's id sees DISCONNECTED
      await sch.next('DISCONNECTED', 5000, req.id);
      req.id.destroyId(); // owes the DREP: destroy sends it
      l.destroyId();
      await waitEmpty();
    });
  });
});

/** Destroyed ids in time-wait leave the agent's table when it ends (a few ms with QUICK). */
async function waitEmpty(ms = 5000) {
  const deadline = Date.now() + ms;
  for (;;) {
    try { nothingLeft(); return; } catch (err) { if (Date.now() > deadline) throw err; }
    await new Promise((r) => setTimeout(r, 5));
  }
}

describe('rdma_cm: IPv6, UD, several ids, errors', () => {
  /** One device on `address` talking to itself: connect, accept, established, disconnect, all freed. */
  async function selfConnect(address: string): Promise<void> {
    const dev = await createRxeDevice({ address, port: 0 });
    const sch = createEventChannel(), cch = createEventChannel();
    try {
      const l = listener(sch, address);
      const { c, s, cr, sr, req, ce } = await establish(sch, cch, l, address, address);
      assert.equal(ce.event, 'ESTABLISHED');
      assert.equal(req.conn!.privateData.subarray(0, 21).toString(), 'hello from the client');
      assert.equal(s.remoteAddr!.family, 6);
      assert.deepEqual(c.route!.dgid, c.route!.sgid);
      s.disconnect();
      await cch.next('DISCONNECTED', 5000, c);
      c.disconnect();
      await Promise.all([sch.next('DISCONNECTED', 5000, s), sch.next('TIMEWAIT_EXIT', 5000, s), cch.next('TIMEWAIT_EXIT', 5000, c)]);
      for (const id of [c, s, l]) id.destroyId();
      free(cr);
      free(sr);
      nothingLeft();
    } finally {
      sch.close();
      cch.close();
      await dev.close();
    }
  }

  it('IPv6 (::1, one device talking to itself): connect, accept, established, disconnect', () => selfConnect('::1'));

  // rping -a fe80::...%eth0: the zone names the interface; the GID and the cma header have none.
  const linkLocal = Object.entries(os.networkInterfaces()).flatMap(([name, list]) => (list ?? [])
    .filter((i) => i.family === 'IPv6' && i.address.startsWith('fe80:') && !i.internal).map((i) => `${i.address}%${name}`))[0];
  it('IPv6 link-local with a zone (one device talking to itself): bind, listen, connect, established', { skip: linkLocal ? false : 'no link-local IPv6 address on this host' }, () => selfConnect(linkLocal!));

  it('UD through SIDR: the SIDR_REP brings the QPN and RDMA_UDP_QKEY; a datagram goes through; a SIDR reject is UNREACHABLE', async () => {
    await onTwoDevices(async ({ sch, cch }) => {
      const l = createId(sch, 'udp', QUICK);
      l.bindAddr('127.0.0.3', 0);
      l.listen();
      const c = await resolved(cch, '127.0.0.3', l.localAddr!.port, '127.0.0.2', 'udp');
      const cr = resources(c);
      assert.equal(c.qp!.state, QpState.RTS);
      c.connect({ privateData: Buffer.from('sidr please') });
      const req = await sch.next('CONNECT_REQUEST', 5000);
      assert.equal(req.ud!.privateData.subarray(0, 11).toString(), 'sidr please');
      const sr = resources(req.id);
      const rbuf = Buffer.alloc(40 + 64);
      const rmr = sr.pd.regMr(rbuf, Access.LOCAL_WRITE);
      req.id.qp!.postRecv({ wrId: 7n, sgList: [rmr.sge()] });
      req.id.accept({ privateData: Buffer.from('here') });
      const ev = await cch.next(['ESTABLISHED', 'UNREACHABLE'], 5000, c);
      assert.equal(ev.event, 'ESTABLISHED');
      assert.equal(ev.ud!.qpNum, req.id.qp!.qpn);
      assert.equal(ev.ud!.qkey, RDMA_UDP_QKEY);
      assert.equal(ev.ud!.privateData.subarray(0, 4).toString(), 'here');
      const ah = cr.pd.createAh({ grh: { dgid: ev.ud!.dgid, hopLimit: ev.ud!.hopLimit }, isGlobal: true, portNum: 1 });
      const smr = cr.pd.regMr(Buffer.from('a datagram'), Access.LOCAL_WRITE);
      c.qp!.postSend({ wrId: 8n, opcode: WrOpcode.SEND, sendFlags: SendFlags.SIGNALED, sgList: [smr.sge()], ud: { ah, remoteQpn: ev.ud!.qpNum, remoteQkey: ev.ud!.qkey } });
      const [wc] = await waitCompletions(sr.cq, 1);
      assert.equal(wc!.status, WcStatus.SUCCESS);
      assert.equal(rbuf.subarray(40, 50).toString(), 'a datagram');
      // a second requester, rejected
      const c2 = await resolved(cch, '127.0.0.3', l.localAddr!.port, '127.0.0.2', 'udp');
      c2.connect({ qpNum: 0x99 });
      const req2 = await sch.next('CONNECT_REQUEST', 5000);
      req2.id.reject(Buffer.from('no'));
      const ev2 = await cch.next(['ESTABLISHED', 'UNREACHABLE'], 5000, c2);
      assert.equal(ev2.event, 'UNREACHABLE');
      assert.equal(ev2.reason, 'IB_SIDR_REJECT');
      ah.destroy();
      smr.dereg();
      rmr.dereg();
      for (const id of [c, c2, req.id, req2.id, l]) id.destroyId();
      free(cr);
      free(sr);
      nothingLeft();
    });
  });

  it('several ids on one device at once, to two listeners; every event names its own id', async () => {
    await onTwoDevices(async ({ sch, cch }) => {
      const l1 = listener(sch, '127.0.0.3'), l2 = listener(sch, '127.0.0.3');
      const accepted: RdmaCmEvent[] = [];
      sch.on('CONNECT_REQUEST', (e: RdmaCmEvent) => { accepted.push(e); e.id.accept({ qpNum: 0x100 + accepted.length, privateData: Buffer.from([e.listenId === l1 ? 1 : 2]) }); });
      const ids: RdmaCmId[] = [];
      for (let i = 0; i < 8; i++) {
        const c = await resolved(cch, '127.0.0.3', (i % 2 ? l2 : l1).localAddr!.port, '127.0.0.2');
        c.connect({ qpNum: 0x200 + i });
        ids.push(c);
      }
      const evs = await Promise.all(ids.map((c) => cch.next(['CONNECT_RESPONSE', 'REJECTED'], 5000, c)));
      evs.forEach((e, i) => {
        assert.equal(e.event, 'CONNECT_RESPONSE');
        assert.equal(e.conn!.privateData[0], i % 2 ? 2 : 1);
      });
      assert.equal(new Set(accepted.map((e) => e.id)).size, 8);
      for (const c of ids) c.destroyId();
      for (const e of accepted) e.id.destroyId();
      l1.destroyId();
      l2.destroyId();
      await waitEmpty();
    });
  });

  it('10% of all packets lost both ways (the devices\' fault hook): 20 connections still connect and disconnect, retried by the CM', async () => {
    const { a, b, close } = await twoDevices();
    let seed = 7;
    const random = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
    for (const d of [a, b]) (d.provider as unknown as { faults: object }).faults = { drop: 0.1, random };
    const sch = createEventChannel(), cch = createEventChannel();
    const opts = { packetLifeTime: 1, cmResponseTimeout: 14 }; // a resend every 66 ms, 15 of them
    try {
      const l = listener(sch, '127.0.0.3', opts);
      const server: RdmaCmId[] = [];
      sch.on('CONNECT_REQUEST', (e: RdmaCmEvent) => { server.push(e.id); e.id.accept({ qpNum: 0x300 + server.length }); });
      sch.on('DISCONNECTED', (e: RdmaCmEvent) => { try { e.id.disconnect(); } catch { /* ours */ } });
      const ids = await Promise.all(Array.from({ length: 20 }, async (_, i) => {
        const c = await resolved(cch, '127.0.0.3', l.localAddr!.port, '127.0.0.2', 'tcp', opts);
        c.connect({ qpNum: 0x400 + i });
        const e = await cch.next(['CONNECT_RESPONSE', 'REJECTED', 'UNREACHABLE'], 20_000, c);
        assert.equal(e.event, 'CONNECT_RESPONSE', `${i}: ${e.event}`);
        c.establish();
        return c;
      }));
      for (const c of ids) c.disconnect();
      await Promise.all(ids.map((c) => cch.next('DISCONNECTED', 20_000, c)));
      const drops = [a, b].map((d) => (d.provider as unknown as { counters: { fault_dropped: number } }).counters.fault_dropped);
      assert.ok(drops[0]! + drops[1]! > 0, 'packets were dropped');
      for (const c of ids) c.destroyId();
      for (const s of server) s.destroyId();
      l.destroyId();
      await waitEmpty(20_000);
    } finally {
      sch.close();
      cch.close();
      await close();
    }
  });

  it('argument and state errors throw SoftrdmaError naming the field, and change nothing', async () => {
    const { a, close } = await twoDevices();
    const ch = createEventChannel();
    try {
      assert.throws(() => createId(ch, 'sctp' as 'tcp'), { code: 'EINVAL', message: /portSpace/ });
      assert.throws(() => createId(ch, 'tcp', { maxCmRetries: 16 }), { code: 'EINVAL', message: /maxCmRetries/ });
      const id = createId(ch, 'tcp');
      assert.throws(() => id.bindAddr('10.99.99.99'), { code: 'EADDRNOTAVAIL', message: /address 10.99.99.99/ });
      assert.throws(() => id.bindAddr('not an address'), { code: 'EINVAL', message: /address must be/ });
      assert.throws(() => id.bindAddr('127.0.0.2', 70000), { code: 'EINVAL', message: /port/ });
      assert.equal(id.state, 'idle');
      assert.throws(() => id.resolveAddr({ address: '127.0.0.3', port: 0 }), { code: 'EINVAL', message: /dst port/ });
      assert.throws(() => id.resolveAddr({ address: '127.0.0.3', port: 1 }, '::1'), { code: 'EINVAL', message: /different families/ });
      assert.throws(() => id.resolveAddr({ address: '127.0.0.3', port: 1 }, '127.0.0.2', -1), { code: 'EINVAL', message: /timeoutMs/ });
      assert.throws(() => id.resolveRoute(), { code: 'EINVAL', message: /resolveRoute in state idle/ });
      assert.throws(() => id.connect(), { code: 'EINVAL', message: /connect in state idle/ });
      assert.throws(() => id.accept(), { code: 'EINVAL', message: /accept in state idle/ });
      assert.equal(ports.size, 0);
      id.bindAddr('127.0.0.2', 0);
      const other = createId(ch, 'tcp');
      assert.throws(() => other.bindAddr('127.0.0.2', id.localAddr!.port), { code: 'EADDRINUSE' });
      other.bindAddr('127.0.0.2', id.localAddr!.port === 40000 ? 40001 : 40000);
      // a PD of another device
      const ctx = a.open();
      const pd = ctx.allocPd();
      const cq = ctx.createCq(4);
      const b3 = createId(ch, 'tcp');
      b3.bindAddr('127.0.0.3');
      assert.throws(() => b3.createQp(pd, { sendCq: cq, recvCq: cq, cap: { maxSendWr: 1, maxRecvWr: 1 } }), { code: 'EINVAL', message: /pd is not of a context on/ });
      assert.equal(b3.qp, undefined);
      const qp = id.createQp(pd, { sendCq: cq, recvCq: cq, cap: { maxSendWr: 1, maxRecvWr: 1 } });
      assert.equal(qp.state, QpState.INIT);
      assert.throws(() => id.createQp(pd, { sendCq: cq, recvCq: cq, cap: { maxSendWr: 1, maxRecvWr: 1 } }), { code: 'EINVAL', message: /already has QP/ });
      id.resolveAddr({ address: '127.0.0.3', port: 5 });
      await ch.next('ADDR_RESOLVED', 5000, id);
      id.resolveRoute();
      await ch.next('ROUTE_RESOLVED', 5000, id);
      assert.throws(() => id.connect({ privateData: Buffer.alloc(57) }), { code: 'EINVAL', message: /privateData is 57 bytes, at most 56/ });
      assert.throws(() => id.connect({ retryCount: 256 }), { code: 'EINVAL', message: /retryCount/ });
      assert.equal(id.state, 'route-resolved');
      for (const x of [id, other, b3]) x.destroyId();
      cq.destroy();
      pd.dealloc();
      ctx.close();
      nothingLeft();
      // no device for the destination's family: ADDR_ERROR, and the id is still usable
      const v6 = createId(ch, 'tcp');
      v6.resolveAddr({ address: 'fd00::9', port: 1 });
      assert.equal((await ch.next(['ADDR_RESOLVED', 'ADDR_ERROR'], 5000, v6)).event, 'ADDR_ERROR');
      assert.equal(v6.state, 'idle');
      v6.destroyId();
      nothingLeft();
    } finally {
      ch.close();
      await close();
    }
  });

  it('a device closing: DEVICE_REMOVAL for the ids on it', async () => {
    const dev: Device = await createRxeDevice({ address: '127.0.0.2', port: 0 });
    const ch = createEventChannel();
    const l = listener(ch, '127.0.0.2');
    await dev.close();
    const ev = await ch.next('DEVICE_REMOVAL', 5000, l);
    assert.equal(ev.status, -19);
    l.destroyId();
    ch.close();
    assert.equal(cmDevices().length, 0);
    assert.equal(ports.size, 0);
  });

  it('the event channel is an async iterator', async () => {
    const dev = await createRxeDevice({ address: '127.0.0.2', port: 0 });
    const ch = createEventChannel();
    try {
      const id = createId(ch, 'tcp');
      id.resolveAddr({ address: '127.0.0.2', port: 9 });
      for await (const e of ch) {
        if (e.event === 'ADDR_RESOLVED') id.resolveRoute();
        if (e.event === 'ROUTE_RESOLVED') break;
      }
      assert.equal(id.state, 'route-resolved');
      id.destroyId();
      nothingLeft();
    } finally {
      ch.close();
      await dev.close();
    }
  });
});

describe('rdma_cm: races and clean-up (as Linux cma.c and ucma do them)', () => {
  it('both ends disconnect in the same tick: each gets DISCONNECTED once, then TIMEWAIT_EXIT', async () => {
    await onTwoDevices(async ({ sch, cch }) => {
      const l = listener(sch, '127.0.0.3');
      const { c, s, cr, sr } = await establish(sch, cch, l, '127.0.0.3', '127.0.0.2');
      const seen: string[] = [];
      for (const [ch, id, who] of [[cch, c, 'c'], [sch, s, 's']] as const) ch.on('event', (e: RdmaCmEvent) => { if (e.id === id) seen.push(`${who}:${e.event}`); });
      c.disconnect();
      s.disconnect();
      const both = (ev: string) => waitFor(`${ev} on both: ${seen.join(' ')}`, () => seen.includes(`c:${ev}`) && seen.includes(`s:${ev}`), 5000);
      await both('DISCONNECTED');
      // Each side's CM sits in DREQ_RCVD: the DREP is owed, and disconnect() (or destroyId) sends it.
      c.disconnect();
      s.disconnect();
      await both('TIMEWAIT_EXIT');
      assert.deepEqual(seen.filter((x) => x.endsWith('DISCONNECTED')).sort(), ['c:DISCONNECTED', 's:DISCONNECTED']);
      for (const id of [c, s]) id.destroyId();
      free(cr);
      free(sr);
      l.destroyId();
      await waitEmpty();
    });
  });

  it('a listener destroyed with a CONNECT_REQUEST still queued: the new id goes too, and the client is REJECTED, not left to time out', async () => {
    await onTwoDevices(async ({ sch, cch }) => {
      const l = listener(sch, '127.0.0.3');
      const c = await resolved(cch, '127.0.0.3', l.localAddr!.port, '127.0.0.2');
      const cr = resources(c);
      c.connect();
      // Wait until the server has made the new id (it is queued on sch: nobody takes it).
      await waitFor('the request on the server', () => cmDevices().some((d) => d.address === '127.0.0.3' && d.census().ids === 2), 5000);
      l.destroyId();
      const e = await cch.next(['REJECTED', 'UNREACHABLE', 'ESTABLISHED'], 5000, c);
      assert.equal(e.event, 'REJECTED');
      assert.equal(e.status, RejReason.CONSUMER_DEFINED);
      await assert.rejects(sch.next('CONNECT_REQUEST', 50), { code: 'ETIMEDOUT' }, 'the queued request went with its listener');
      c.destroyId();
      free(cr);
      await waitEmpty();
    });
  });

  it('closing a channel destroys its ids (ucma_close), and a next() for a destroyed id fails with EBADF', async () => {
    await onTwoDevices(async ({ sch, cch }) => {
      const l = listener(sch, '127.0.0.3');
      const waiting = sch.next('CONNECT_REQUEST', Infinity, l);
      const c = await resolved(cch, '127.0.0.3', l.localAddr!.port, '127.0.0.2');
      l.destroyId();
      await assert.rejects(waiting, { code: 'EBADF' });
      const l2 = listener(sch, '127.0.0.3');
      c.destroyId();
      const c2 = await resolved(cch, '127.0.0.3', l2.localAddr!.port, '127.0.0.2');
      const cr = resources(c2);
      c2.connect();
      await waitFor('the request on the server', () => cmDevices().some((d) => d.address === '127.0.0.3' && d.census().ids === 2), 5000);
      sch.close(); // the listener and the queued new id are destroyed: REJ
      assert.equal(l2.state, 'destroyed');
      assert.equal((await cch.next(['REJECTED', 'UNREACHABLE', 'ESTABLISHED'], 5000, c2)).event, 'REJECTED');
      assert.throws(() => createId(sch, 'tcp'), { code: 'EBADF' });
      c2.destroyId();
      free(cr);
      await waitEmpty();
    });
  });

  it('a wildcard listener on two devices: one device closing takes only its listen, silently; the other still accepts', async () => {
    const { a, b, close } = await twoDevices();
    const ch = createEventChannel(), cch = createEventChannel();
    try {
      const l = createId(ch, 'tcp', QUICK);
      l.bindAddr('0.0.0.0', 0);
      l.listen();
      assert.equal(l.verbs, undefined, 'a wildcard listener is on no device');
      const events: string[] = [];
      ch.on('DEVICE_REMOVAL', (e: RdmaCmEvent) => events.push(`${e.id === l ? 'listener' : 'other'}`));
      await a.close();
      // b's device: a client on b connects to the listener's b side
      const c = await resolved(cch, '127.0.0.3', l.localAddr!.port, '127.0.0.3');
      c.connect({ qpNum: 0x77 });
      const req = await ch.next('CONNECT_REQUEST', 5000);
      assert.equal(req.listenId, l);
      assert.equal(req.id.device, b);
      req.id.reject();
      assert.equal((await cch.next(['REJECTED', 'UNREACHABLE'], 5000, c)).event, 'REJECTED');
      assert.deepEqual(events, [], 'no DEVICE_REMOVAL for a wildcard listener');
      for (const id of [c, req.id, l]) id.destroyId();
      await waitEmpty();
    } finally {
      ch.close();
      cch.close();
      await close();
    }
  });

  it('closing id.verbs closes the application\'s PDs on it, not the device: the CM carries on with a new context', async () => {
    await onTwoDevices(async ({ sch, cch }) => {
      const l = listener(sch, '127.0.0.3');
      const c = await resolved(cch, '127.0.0.3', l.localAddr!.port, '127.0.0.2');
      const old = c.verbs!;
      old.close();
      assert.notEqual(c.verbs, old);
      assert.equal(c.state, 'route-resolved');
      const { c: c2, s, cr, sr } = await establish(sch, cch, l, '127.0.0.3', '127.0.0.2');
      assert.equal(c2.qp!.state, QpState.RTS);
      for (const id of [c, c2, s]) id.destroyId();
      free(cr);
      free(sr);
      l.destroyId();
      await waitEmpty();
    });
  });

  it('a request the client gives up on: its id gets REJECTED (REJ TIMEOUT), and the listener goes on taking requests', async () => {
    await onTwoDevices(async ({ sch, cch }) => {
      const l = createId(sch, 'tcp', QUICK);
      l.bindAddr('127.0.0.3', 0);
      l.listen(1);
      const c = await resolved(cch, '127.0.0.3', l.localAddr!.port, '127.0.0.2');
      c.connect({ qpNum: 0x55 });
      const req = await sch.next('CONNECT_REQUEST', 5000);
      c.destroyId(); // REJ(TIMEOUT) from REQ_SENT
      assert.equal((await sch.next('REJECTED', 5000, req.id)).event, 'REJECTED');
      // The listener goes on (its backlog slot was given back when next() took the event).
      const c2 = await resolved(cch, '127.0.0.3', l.localAddr!.port, '127.0.0.2');
      c2.connect({ qpNum: 0x56 });
      const req2 = await sch.next('CONNECT_REQUEST', 5000);
      req2.id.reject();
      await cch.next('REJECTED', 5000, c2);
      for (const id of [req.id, req2.id, c2, l]) id.destroyId();
      await waitEmpty();
    });
  });
});
