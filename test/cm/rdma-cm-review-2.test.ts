// Fixes from a second review of the rdma_cm API, each with the cases that showed the bug:
// a wildcard listener that never covered a device created after listen() (Linux's cma_add_one
// makes every id on listen_any_list listen there), and a device created after the last createId
// left without a CM agent; reject() refused for our own REQ before its REP (the active side
// abandoning a connect), for a REP (active side, after CONNECT_RESPONSE) and
// for our own REP before its RTU (passive side), which rdma_reject / ib_send_cm_rej allow;
// next(type, ms, listener) that never saw the listener's CONNECT_REQUEST (rdma_get_request);
// and bad arguments that threw TypeErrors or waited for ever instead of EINVAL.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { QpState, createRxeDevice, rxeOf, type Device } from '../../src/index.js';
import { createEventChannel, createId, RejReason, type EventChannel, type RdmaCmEvent, type RdmaCmEventType, type RdmaCmId } from '../../src/cm/index.js';
import { cmDevices } from '../../src/cm/rdma-cm/cm-device.js';
import { ports } from '../../src/cm/rdma-cm/addresses.js';
import { twoDevices, waitFor } from '../helpers/pair.js';
import { onTwoDevices, resolvedTo, withQp } from '../helpers/cm-pair.js';

const QUICK = { packetLifeTime: 1 } as const; // time-wait of a few ms instead of 2 s
/** A client that resends its REQ every ~64 ms, 15 times: a REQ that meets a device before its CM agent is resent. */
const RESENDING = { ...QUICK, cmResponseTimeout: 14, maxCmRetries: 15 } as const;
const OUTCOMES: RdmaCmEventType[] = ['ESTABLISHED', 'REJECTED', 'UNREACHABLE', 'CONNECT_ERROR', 'CONNECT_RESPONSE'];

function nothingLeft() {
  for (const d of cmDevices()) assert.deepEqual(d.census(), { commIds: 0, ids: 0, agentConnections: 0 }, `device ${d.address}`);
  assert.equal(ports.size, 0, 'bound ports');
}

const waitEmpty = () => waitFor('nothing left in the CM', () => { try { nothingLeft(); return true; } catch { return false; } }, 5000).then(nothingLeft, nothingLeft);

/** An id of `ch` resolved towards `dst:port` from `src`. */
async function resolved(ch: EventChannel, dst: string, port: number, src: string, opts: Parameters<typeof createId>[2] = QUICK): Promise<RdmaCmId> {
  const id = createId(ch, 'tcp', opts);
  id.resolveAddr({ address: dst, port }, src);
  assert.equal((await ch.next(['ADDR_RESOLVED', 'ADDR_ERROR'], 5000, id)).event, 'ADDR_RESOLVED');
  id.resolveRoute();
  assert.equal((await ch.next(['ROUTE_RESOLVED', 'ROUTE_ERROR'], 5000, id)).event, 'ROUTE_RESOLVED');
  return id;
}

/** Another device on the port `a` uses (the devices of one test send to one port number). */
function deviceBeside(a: Device, address: string): Promise<Device> {
  return createRxeDevice({ address, port: rxeOf(a).port });
}

/**
 * The client's REQ reaches `l`: its CONNECT_REQUEST, or a failure naming what the client got
 * instead (heard from a listener, so no waiting next() is left behind to take a later event).
 */
async function requestAt(sch: EventChannel, cch: EventChannel, l: RdmaCmId, c: RdmaCmId): Promise<RdmaCmEvent> {
  let heard: ((e: RdmaCmEvent) => void) | undefined;
  const failed = new Promise<never>((_resolve, reject) => {
    heard = (e) => { if (e.id === c) reject(new Error(`the client got ${e.event} (status ${e.status}) instead of reaching the listener`)); };
    cch.on('event', heard);
  });
  try {
    const req = await Promise.race([sch.next('CONNECT_REQUEST', 5000), failed]);
    assert.equal(req.listenId, l);
    return req;
  } finally {
    cch.off('event', heard!);
  }
}

describe('a wildcard listener follows the devices (cma_add_one → cma_listen_on_dev)', () => {
  it('takes a request on a device created after listen(), announced by a later createId', async () => {
    const a = await createRxeDevice({ address: '127.0.0.2', port: 0 });
    const sch = createEventChannel(), cch = createEventChannel();
    let b: Device | undefined;
    try {
      const l = createId(sch, 'tcp', QUICK);
      l.bindAddr('0.0.0.0', 0);
      l.listen(8);
      b = await deviceBeside(a, '127.0.0.3');
      const c = await resolved(cch, '127.0.0.3', l.localAddr!.port, '127.0.0.2');
      withQp(c);
      c.connect();
      const req = await requestAt(sch, cch, l, c);
      assert.equal(req.listenId, l);
      assert.equal(req.id.device, b, 'the request came in on the new device');
      withQp(req.id);
      req.id.accept();
      const [ce, se] = await Promise.all([cch.next(OUTCOMES, 5000, c), sch.next('ESTABLISHED', 5000, req.id)]);
      assert.equal(ce.event, 'ESTABLISHED');
      assert.equal(se.event, 'ESTABLISHED');
      for (const id of [c, req.id, l]) id.destroyId();
      await waitEmpty();
    } finally {
      sch.close();
      cch.close();
      await a.close();
      await b?.close();
    }
  });

  it('a device no id touches gets its CM agent and the listen (announced by the verbs layer); closed, its listen goes silently; made again, it is listened on again', async () => {
    const a = await createRxeDevice({ address: '127.0.0.2', port: 0 });
    const sch = createEventChannel(), cch = createEventChannel();
    const later: Device[] = [];
    try {
      const l = createId(sch, 'tcp', QUICK);
      l.bindAddr('0.0.0.0', 0);
      l.listen(8);
      const heard: string[] = [];
      sch.on('DEVICE_REMOVAL', (e: RdmaCmEvent) => heard.push(e.id === l ? 'listener' : 'other'));
      for (let round = 0; round < 2; round++) {
        // The client is made and resolved (on a) before the device exists: no createId, no
        // resolveAddr touches it afterwards, so only the verbs layer's announcement brings it to the CM.
        const c = await resolved(cch, '127.0.0.4', l.localAddr!.port, '127.0.0.2', RESENDING);
        withQp(c);
        const d = await deviceBeside(a, '127.0.0.4');
        later.push(d);
        c.connect();
        const req = await requestAt(sch, cch, l, c);
        assert.equal(req.id.device, d, `round ${round}: the request came in on the device made after listen()`);
        req.id.reject(Buffer.from('seen'));
        const rej = await cch.next(OUTCOMES, 5000, c);
        assert.equal(rej.event, 'REJECTED');
        assert.equal(rej.status, RejReason.CONSUMER_DEFINED);
        for (const id of [c, req.id]) id.destroyId();
        // What is left on the new device is the listener's listen.
        const onD = () => cmDevices().find((x) => x.device === d)?.census();
        await waitFor('only the listen left on the new device', () => JSON.stringify(onD()) === JSON.stringify({ commIds: 1, ids: 1, agentConnections: 1 }), 5000);
        await d.close();
        assert.equal(cmDevices().some((x) => x.device === d), false, 'the closed device left the CM');
      }
      assert.deepEqual(heard, [], 'no DEVICE_REMOVAL for a wildcard listener');
      assert.equal(l.state, 'listen');
      l.destroyId();
      await waitEmpty();
    } finally {
      sch.close();
      cch.close();
      await a.close();
      for (const d of later) await d.close();
    }
  });
});

describe('reject() of a response (rdma_reject, ib_send_cm_rej)', () => {
  it('the active side rejects the REP after CONNECT_RESPONSE: the server gets REJECTED (28) with the data; nothing more for the client', async () => {
    await onTwoDevices(async ({ sch, cch }) => {
      const l = createId(sch, 'tcp', QUICK);
      l.bindAddr('127.0.0.3', 0);
      l.listen(8);
      const c = await resolvedTo(cch, l, QUICK);
      c.connect({ qpNum: 0x123 });
      const req = await sch.next('CONNECT_REQUEST', 5000);
      const s = req.id;
      s.accept({ qpNum: 0x456 });
      assert.equal((await cch.next(OUTCOMES, 5000, c)).event, 'CONNECT_RESPONSE');
      assert.throws(() => c.reject(Buffer.alloc(149)), { code: 'EINVAL', message: /privateData is 149 bytes, at most 148/ });
      assert.equal(c.state, 'connect', 'a refused reject changed nothing');
      c.reject(Buffer.from('bad REP data'));
      assert.equal(c.state, 'rejected');
      const se = await sch.next(['REJECTED', 'ESTABLISHED', 'UNREACHABLE'], 5000, s);
      assert.equal(se.event, 'REJECTED');
      assert.equal(se.status, RejReason.CONSUMER_DEFINED);
      assert.equal(se.reason, 'IB_CM_REJ_CONSUMER_DEFINED');
      assert.equal(se.conn!.privateData.subarray(0, 12).toString(), 'bad REP data');
      assert.throws(() => c.establish(), { code: 'EINVAL' }, 'a rejected response cannot be established');
      // The client's CM went back to IDLE (cm_reset_to_idle): no event follows for it.
      await assert.rejects(cch.next(undefined, 50, c), { code: 'ETIMEDOUT' });
      for (const id of [c, s, l]) id.destroyId();
      await waitEmpty();
    });
  });

  it('the active side abandons its connect before the REP (REQ_SENT): a REJ (28) the server cannot match, as Linux; the REQ is not resent; the server\'s REP goes unanswered', async () => {
    await onTwoDevices(async ({ sch, cch }) => {
      const l = createId(sch, 'tcp', QUICK);
      l.bindAddr('127.0.0.3', 0);
      l.listen(8);
      // The REQ would be resent every ~64 ms: a resend after the reject would be a new request.
      const c = await resolvedTo(cch, l, RESENDING);
      c.connect({ qpNum: 0x125 });
      const s = (await sch.next('CONNECT_REQUEST', 5000)).id;
      assert.throws(() => c.reject(Buffer.alloc(149)), { code: 'EINVAL', message: /privateData is 149 bytes, at most 148/ });
      c.reject(Buffer.from('never mind'));
      assert.equal(c.state, 'rejected');
      assert.throws(() => c.reject(), { code: 'EINVAL' }, 'nothing left to reject');
      // cm_format_rej in REQ_SENT: message rejected "other", remote comm id 0 (no REP yet), so
      // the server's CM finds no id for it (cm_acquire_rejected_id) and drops it. Its id is
      // still a request: accept() sends a REP, which the client's CM (IDLE) drops, and after the
      // REP's resends (the client's response timeout, ~64 ms, 15 times) the server's id is
      // UNREACHABLE (-ETIMEDOUT). No REQ came again in the meantime.
      s.accept({ qpNum: 0x457 });
      const se = await sch.next(['REJECTED', 'ESTABLISHED', 'UNREACHABLE', 'CONNECT_REQUEST'], 5000);
      assert.equal(se.id, s, `${se.event} for another id`);
      assert.equal(se.event, 'UNREACHABLE');
      assert.equal(se.status, -110);
      await assert.rejects(cch.next(undefined, 0, c), { code: 'ETIMEDOUT' }, 'the client heard nothing');
      for (const id of [c, s, l]) id.destroyId();
      await waitEmpty();
    });
  });

  it('the passive side rejects after accept, before the RTU: the client gets REJECTED (28) with the data; the QP to ERR; no TIMEWAIT_EXIT for the server', async () => {
    await onTwoDevices(async ({ b, sch, cch }) => {
      const l = createId(sch, 'tcp', QUICK);
      l.bindAddr('127.0.0.3', 0);
      l.listen(8);
      const c = await resolvedTo(cch, l, QUICK);
      c.connect({ qpNum: 0x124 }); // no QP: the client answers the REP only with establish()
      const s = (await sch.next('CONNECT_REQUEST', 5000)).id;
      withQp(s);
      s.accept();
      assert.equal(s.qp!.state, QpState.RTS);
      assert.equal((await cch.next(OUTCOMES, 5000, c)).event, 'CONNECT_RESPONSE');
      const agent = cmDevices().find((d) => d.device === b)!.agent;
      const timewaitOver = new Promise<void>((resolve) => agent.once('timewait-exit', () => resolve()));
      s.reject(Buffer.from('changed my mind'));
      assert.equal(s.state, 'rejected');
      assert.equal(s.qp!.state, QpState.ERR);
      const ce = await cch.next(OUTCOMES, 5000, c);
      assert.equal(ce.event, 'REJECTED');
      assert.equal(ce.status, RejReason.CONSUMER_DEFINED);
      assert.equal(ce.conn!.privateData.subarray(0, 15).toString(), 'changed my mind');
      // The server's CM went into time-wait (cm_enter_timewait); its end is no event for the id
      // (cma_ib_handler passes TIMEWAIT_EXIT only after DISCONNECTED).
      await timewaitOver;
      await assert.rejects(sch.next(undefined, 0, s), { code: 'ETIMEDOUT' });
      assert.throws(() => s.reject(), { code: 'EINVAL' }, 'nothing left to reject');
      for (const id of [c, s, l]) id.destroyId();
      await waitEmpty();
    });
  });
});

describe('next(type, ms, listener) is rdma_get_request for that listener', () => {
  it('a waiting next() and a queued request: each listener gets its own CONNECT_REQUEST', async () => {
    await onTwoDevices(async ({ sch, cch }) => {
      const l1 = createId(sch, 'tcp', QUICK);
      l1.bindAddr('127.0.0.3', 0);
      l1.listen(8);
      const l2 = createId(sch, 'tcp', QUICK);
      l2.bindAddr('127.0.0.3', 0);
      l2.listen(8);
      // waiting first
      const waiting = sch.next('CONNECT_REQUEST', 5000, l2);
      const c2 = await resolvedTo(cch, l2, QUICK);
      withQp(c2);
      c2.connect();
      const r2 = await waiting;
      assert.equal(r2.listenId, l2);
      assert.notEqual(r2.id, l2);
      // queued: l1's request comes first and waits on the channel; next() for l2 passes it by
      const c1 = await resolvedTo(cch, l1, QUICK);
      withQp(c1);
      c1.connect();
      await waitFor('l1\'s request on the server', () => cmDevices().some((d) => d.address === '127.0.0.3' && d.census().ids === 4), 5000);
      const c3 = await resolvedTo(cch, l2, QUICK);
      withQp(c3);
      c3.connect();
      const r3 = await sch.next('CONNECT_REQUEST', 5000, l2);
      assert.equal(r3.listenId, l2);
      assert.equal(r3.conn!.qpNum, c3.qp!.qpn);
      const r1 = await sch.next('CONNECT_REQUEST', 5000, l1);
      assert.equal(r1.listenId, l1);
      assert.equal(r1.conn!.qpNum, c1.qp!.qpn);
      // the new id's own events still match by the new id
      withQp(r1.id);
      r1.id.accept();
      assert.equal((await sch.next('ESTABLISHED', 5000, r1.id)).id, r1.id);
      for (const r of [r1, r2, r3]) r.id.destroyId();
      for (const id of [c1, c2, c3, l1, l2]) id.destroyId();
      await waitEmpty();
    });
  });
});

describe('bad arguments are EINVAL naming them, never a TypeError or an endless wait', () => {
  it('createId, resolveAddr\'s src, next()\'s types and timeout', { timeout: 10_000 }, async () => {
    const { close } = await twoDevices();
    const ch = createEventChannel();
    try {
      const call = createId as (...args: unknown[]) => RdmaCmId;
      assert.throws(() => call(ch, 'tcp', null), { name: 'SoftrdmaError', code: 'EINVAL', message: /opts must be an object/ });
      assert.throws(() => call(ch, 'tcp', 5), { code: 'EINVAL', message: /opts/ });
      assert.throws(() => call(null, 'tcp'), { name: 'SoftrdmaError', code: 'EINVAL', message: /channel must be an EventChannel/ });
      assert.throws(() => call(undefined, 'tcp'), { code: 'EINVAL', message: /channel/ });
      assert.throws(() => call({}, 'tcp'), { code: 'EINVAL', message: /channel/ });
      const id = createId(ch, 'tcp');
      const resolve = id.resolveAddr.bind(id) as (...args: unknown[]) => void;
      assert.throws(() => resolve({ address: '127.0.0.3', port: 1 }, null), { name: 'SoftrdmaError', code: 'EINVAL', message: /src must be/ });
      assert.throws(() => resolve({ address: '127.0.0.3', port: 1 }, 7), { code: 'EINVAL', message: /src must be/ });
      assert.throws(() => resolve({ address: '127.0.0.3', port: 1 }, { address: null }), { code: 'EINVAL', message: /src must be an IPv4 or IPv6 address/ });
      assert.throws(() => resolve({ address: '127.0.0.3', port: 1 }, { address: '127.0.0.2', port: 'x' }), { code: 'EINVAL', message: /src port/ });
      assert.equal(id.state, 'idle', 'the refused calls changed nothing');
      const next = ch.next.bind(ch) as (...args: unknown[]) => Promise<RdmaCmEvent>;
      await assert.rejects(next('ADDR_RESOLVED', 'soon'), { name: 'SoftrdmaError', code: 'EINVAL', message: /timeoutMs/ });
      await assert.rejects(next('ADDR_RESOLVED', Number.NaN), { code: 'EINVAL', message: /timeoutMs/ });
      await assert.rejects(next('ADDR_RESOLVED', -1), { code: 'EINVAL', message: /timeoutMs/ });
      await assert.rejects(next('ADDR_RESOLVD', 100), { name: 'SoftrdmaError', code: 'EINVAL', message: /"ADDR_RESOLVD" is not an event type/ });
      await assert.rejects(next(['ESTABLISHED', 'NOPE'], 100), { code: 'EINVAL', message: /"NOPE"/ });
      await assert.rejects(next(42, 100), { code: 'EINVAL', message: /42 is not an event type/ });
      // what stays valid: 0 looks at the queue only; no types means any event
      await assert.rejects(next('ADDR_RESOLVED', 0), { code: 'ETIMEDOUT' });
      id.resolveAddr({ address: '127.0.0.3', port: 1 }, '127.0.0.2');
      assert.equal((await next(undefined, 5000, id)).event, 'ADDR_RESOLVED');
      id.destroyId();
    } finally {
      ch.close();
      await close();
    }
  });
});
