// The CM agent on two softrdma devices (127.0.0.2 and 127.0.0.3, one process): REQ, REP, RTU,
// ESTABLISHED, DREQ, DREP and time-wait through real QP1s and timers; a REQ nobody listens for
// gets REJ(INVALID_SERVICE_ID) as Linux's cm_match_req answers it; what QP1 and the MAD layer
// cannot take is counted and dropped (another Q_Key, another size, another base version, a
// class or version nobody registered, a CM attribute this CM does not handle), and a GET
// nobody takes is answered GetResp(UNSUPPORTED_METHOD_ATTRIB) as mad.c does.

import assert from 'node:assert/strict';
import { once } from 'node:events';
import { describe, it } from 'node:test';
import { createRxeDevice, rxeOf } from '../../src/index.js';
import { CmAgent, type CmAgentEvent } from '../../src/cm/agent.js';
import { MadLayer, type MadRecv } from '../../src/cm/mad-layer.js';
import { RXE_LOCAL_CA_ACK_DELAY, cmAckTimeout } from '../../src/cm/cm-state.js';
import { RejReason, blankCm, cmMadHeader, encodeCmMad, type CmMessageOf } from '../../src/cm/wire/cm-messages.js';
import {
  CMA_CM_RESPONSE_TIMEOUT, CMA_IBOE_PACKET_LIFETIME, CMA_MAX_CM_RETRIES, PortSpace, cmaReqPrivateData, roceGid, serviceIdFor,
} from '../../src/cm/wire/cma-header.js';
import { MadMethod, MadStatus, MgmtClass, encodeMad } from '../../src/cm/wire/mad.js';
import { twoDevices as two, waitFor } from '../helpers/pair.js';
import { udToQp1 } from '../helpers/qp1-packet.js';

const SID = serviceIdFor(PortSpace.TCP, 7174);


/**
 * The REQ an RDMA CM client on rxe sends (cma_connect_ib's fields, as in the 6.1 capture).
 * `quick`: a packet life and ACK timeout of ~0, so time-wait lasts a millisecond, not 2 s.
 */
function rdmaCmReq(o: { serviceId?: bigint; qpn: number; quick?: boolean }): Omit<CmMessageOf<'REQ'>, 'localCommId' | 'kind'> {
  const { kind: _k, localCommId: _l, ...blank } = blankCm('REQ');
  return {
    ...blank, serviceId: o.serviceId ?? SID, localCaGuid: 0n, localQpn: o.qpn, responderResources: 1, initiatorDepth: 1,
    remoteCmResponseTimeout: CMA_CM_RESPONSE_TIMEOUT, localCmResponseTimeout: CMA_CM_RESPONSE_TIMEOUT, startingPsn: 0x1f6598,
    retryCount: 7, rnrRetryCount: 7, maxCmRetries: CMA_MAX_CM_RETRIES, partitionKey: 0xffff, pathMtu: 3,
    primaryLocalLid: 0xffff, primaryRemoteLid: 0xffff, primaryLocalGid: roceGid('127.0.0.2'), primaryRemoteGid: roceGid('127.0.0.3'),
    primaryHopLimit: 64, primaryLocalAckTimeout: o.quick ? 1 : cmAckTimeout(RXE_LOCAL_CA_ACK_DELAY, CMA_IBOE_PACKET_LIFETIME),
    privateData: cmaReqPrivateData({ ipVersion: 4, srcPort: 40000, srcAddr: '127.0.0.2', dstAddr: '127.0.0.3' }),
  };
}

function rep(qpn: number, quick = false): Omit<CmMessageOf<'REP'>, 'localCommId' | 'remoteCommId' | 'kind'> {
  const { kind: _k, localCommId: _l, remoteCommId: _r, ...blank } = blankCm('REP');
  return { ...blank, localQpn: qpn, startingPsn: 0x123, responderResources: 1, initiatorDepth: 1, targetAckDelay: quick ? 0 : RXE_LOCAL_CA_ACK_DELAY, rnrRetryCount: 7 };
}

describe('two CM agents over QP1', () => {
  it('REQ → REP → RTU: ESTABLISHED on both; DREQ → DREP: time-wait, then TIMEWAIT_EXIT on both', async () => {
    const { a, b, close } = await two();
    const A = new CmAgent(a), B = new CmAgent(b);
    try {
      const evA: CmAgentEvent[] = [], evB: CmAgentEvent[] = [];
      const listenId = B.listen(SID);
      B.on('event', (e: CmAgentEvent) => {
        evB.push(e);
        if (e.event === 'REQ_RECEIVED') B.call(e.localId, { type: 'send_rep', rep: rep(0x22, true) });
        if (e.event === 'DREQ_RECEIVED') B.call(e.localId, { type: 'send_drep' });
      });
      A.on('event', (e: CmAgentEvent) => {
        evA.push(e);
        if (e.event === 'REP_RECEIVED') A.call(e.localId, { type: 'send_rtu' });
      });
      const established = Promise.all([once(A, 'established'), once(B, 'established')]);
      const id = A.connect({ dgid: B.gid, req: rdmaCmReq({ qpn: 0x11, quick: true }), packetLifeTime: 0 });
      assert.equal(A.state(id), 'REQ_SENT');
      const [[ea], [eb]] = await established;
      assert.equal(ea, id);
      assert.equal(A.state(id), 'ESTABLISHED');
      assert.equal(B.state(eb as number), 'ESTABLISHED');
      const req = evB[0]!;
      assert.equal(req.event, 'REQ_RECEIVED');
      assert.equal(req.listenId, listenId);
      assert.deepEqual(req.source!.sgid, A.gid);
      assert.equal(req.source!.srcQp, 1);
      const m = req.msg!;
      assert.ok(m.kind === 'REQ');
      assert.equal(m.localQpn, 0x11);
      assert.equal(m.localCaGuid, a.nodeGuid); // filled in by the agent, as cm_format_req does
      // each side knows the other: comm ids, QPNs, CA GUIDs (the node GUIDs)
      const ca = A.conn(id)!, cb = B.conn(eb as number)!;
      assert.deepEqual([ca.remoteId, cb.remoteId], [cb.localId, ca.localId]);
      assert.deepEqual([ca.remoteQpn, cb.remoteQpn], [0x22, 0x11]);
      assert.deepEqual([ca.remoteCaGuid, cb.remoteCaGuid], [b.nodeGuid, a.nodeGuid]);

      const exits = Promise.all([once(A, 'timewait-exit'), once(B, 'timewait-exit')]);
      A.call(id, { type: 'send_dreq' });
      await exits;
      assert.deepEqual(evA.map((e) => e.event), ['REP_RECEIVED', 'DREP_RECEIVED', 'TIMEWAIT_EXIT']);
      assert.deepEqual(evB.map((e) => e.event), ['REQ_RECEIVED', 'RTU_RECEIVED', 'DREQ_RECEIVED', 'TIMEWAIT_EXIT']);
      assert.deepEqual([A.state(id), B.state(eb as number)], ['IDLE', 'IDLE']);
      const nz = (r: Record<string, number>) => Object.fromEntries(Object.entries(r).filter(([, v]) => v));
      assert.deepEqual(nz(A.counters.tx_msgs), { REQ: 1, RTU: 1, DREQ: 1 });
      assert.deepEqual(nz(B.counters.tx_msgs), { REP: 1, DREP: 1 });
      assert.deepEqual(nz(B.counters.rx_msgs), { REQ: 1, RTU: 1, DREQ: 1 });
      assert.equal(rxeOf(a).counters.gsi_sent_mads, 3);
      assert.equal(rxeOf(b).counters.gsi_rcvd_mads, 3);
      // both ids can go now without a word on the wire
      A.call(id, { type: 'destroy' });
      B.call(eb as number, { type: 'destroy' });
      assert.equal(A.state(id), undefined);
      assert.equal(rxeOf(a).counters.gsi_sent_mads, 3);
    } finally {
      A.close();
      B.close();
      await close();
    }
  });

  it('a REQ for a service id nobody listens on: REJ(INVALID_SERVICE_ID = 8) naming our comm id, the id back in IDLE', async () => {
    const { a, b, close } = await two();
    const A = new CmAgent(a), B = new CmAgent(b);
    try {
      B.listen(SID);
      const rejected = once(A, 'rejected');
      const id = A.connect({ dgid: B.gid, req: rdmaCmReq({ qpn: 0x11, serviceId: serviceIdFor(PortSpace.TCP, 7175) }), packetLifeTime: CMA_IBOE_PACKET_LIFETIME });
      const [r] = await rejected as [{ localId: number; reason: number; reasonName: string; msg: CmMessageOf<'REJ'> }];
      assert.equal(r.localId, id);
      assert.equal(r.reason, RejReason.INVALID_SERVICE_ID);
      assert.equal(r.reason, 8);
      assert.equal(r.reasonName, 'IB_CM_REJ_INVALID_SERVICE_ID');
      assert.deepEqual([r.msg.localCommId, r.msg.remoteCommId, r.msg.messageRejected], [0, id, 0]);
      assert.equal(A.state(id), 'IDLE');
      assert.equal(A.conn(id)!.retryTimer, false);
      assert.equal(B.counters.rx_no_listener, 1);
      assert.equal(B.counters.tx_msgs.REJ, 1);
      assert.equal(B.table.size, 1); // only the listener: nothing was created for the REQ
    } finally {
      A.close();
      B.close();
      await close();
    }
  });
});

describe('timers', () => {
  it('time-waits of two lengths, many at once: each ends after its own length, in the order they began, and nothing is left', async () => {
    const { a, b, close } = await two();
    const A = new CmAgent(a), B = new CmAgent(b);
    try {
      B.listen(SID);
      let qpn = 0x200; // a QPN per connection: the same one twice is a stale connection (REJ)
      B.on('event', (e: CmAgentEvent) => {
        if (e.event === 'REQ_RECEIVED') B.call(e.localId, { type: 'send_rep', rep: rep(qpn++, true) });
        if (e.event === 'DREQ_RECEIVED') B.call(e.localId, { type: 'send_drep' });
      });
      // The REQ's ACK timeout t gives a time-wait of cm_convert_to_ms(t) = 2^(t - 8) ms: 64 and 128.
      const lengthOf = new Map<number, number>();
      // When each DREQ left, when its DREP's event came, the end the agent set for the
      // time-wait (read at that event: the time-wait begins as the DREP is handled, before its
      // event is emitted), and when TIMEWAIT_EXIT came.
      const sent = new Map<number, number>(), began = new Map<number, number>();
      const endOf = new Map<number, number>(), ended = new Map<number, number>();
      const order: number[] = [];
      const inner = A as unknown as { timewaitEnds: Map<number, number>; timewaitQueues: Map<number, { ids: number[]; timer: unknown }> };
      A.on('event', (e: CmAgentEvent) => {
        if (e.event === 'REP_RECEIVED') A.call(e.localId, { type: 'send_rtu' });
        if (e.event === 'DREP_RECEIVED') { began.set(e.localId, performance.now()); endOf.set(e.localId, inner.timewaitEnds.get(e.localId)!); }
        if (e.event === 'TIMEWAIT_EXIT') { ended.set(e.localId, performance.now()); order.push(e.localId); }
      });
      const ids: number[] = [];
      for (let i = 0; i < 20; i++) {
        const ack = i % 2 ? 15 : 14;
        const id = A.connect({ dgid: B.gid, req: { ...rdmaCmReq({ qpn: 0x100 + i }), primaryLocalAckTimeout: ack }, packetLifeTime: ack - 1 });
        lengthOf.set(id, 2 ** (ack - 8));
        ids.push(id);
      }
      await waitFor('all established', () => ids.every((id) => A.state(id) === 'ESTABLISHED'));
      for (const id of ids) {
        sent.set(id, performance.now());
        A.call(id, { type: 'send_dreq' });
        await waitFor('DREP', () => began.has(id)); // one after another: distinct starts
      }
      await waitFor('every time-wait over', () => ended.size === ids.length, 5_000);
      // Exact comparisons on one clock: a preemption between the time-wait's start and its
      // event (seen on a loaded CI machine: 1.8 ms) must not read as a short time-wait.
      for (const id of ids) {
        const len = lengthOf.get(id)!, end = endOf.get(id)!, start = end - len;
        assert.ok(start >= sent.get(id)! && start <= began.get(id)!, `time-wait of ${len} ms: its end ${end.toFixed(1)} is its length after a start between the DREQ (${sent.get(id)!.toFixed(1)}) and the DREP's event (${began.get(id)!.toFixed(1)})`);
        assert.ok(ended.get(id)! >= end, `time-wait of ${len} ms ended at ${ended.get(id)!.toFixed(1)}, before its end ${end.toFixed(1)}`);
        assert.ok(ended.get(id)! - start < len + 1000, `time-wait of ${len} ms took ${(ended.get(id)! - start).toFixed(1)} ms`);
      }
      for (const len of [64, 128]) {
        const mine = order.filter((id) => lengthOf.get(id) === len);
        assert.deepEqual(mine, ids.filter((id) => lengthOf.get(id) === len), `the ${len} ms time-waits ended in the order they began`);
      }
      assert.equal(inner.timewaitEnds.size, 0);
      for (const q of inner.timewaitQueues.values()) assert.deepEqual([q.ids.length, q.timer], [0, undefined]);
    } finally {
      A.close();
      B.close();
      await close();
    }
  });

  it('an unanswered REQ is resent max_cm_retries times on the retry timer, then REQ_ERROR and IDLE', async () => {
    const { a, b, close } = await two(); // b holds no QP1: its device drops the REQs (unknown QP)
    const A = new CmAgent(a);
    try {
      const events: CmAgentEvent[] = [];
      A.on('event', (e: CmAgentEvent) => events.push(e));
      // 2 × 1 ms packet life + 1 ms response timeout per try, 2 retries
      const req = { ...rdmaCmReq({ qpn: 0x11 }), remoteCmResponseTimeout: 0, maxCmRetries: 2 };
      const id = A.connect({ dgid: roceGid('127.0.0.3'), req, packetLifeTime: 0 });
      assert.equal(A.conn(id)!.timeoutMs, 3);
      await waitFor('REQ_ERROR', () => events.length === 1);
      assert.equal(events[0]!.event, 'REQ_ERROR');
      assert.equal(A.state(id), 'IDLE');
      assert.deepEqual([A.counters.tx_msgs.REQ, A.counters.tx_retries.REQ], [3, 2]);
      await waitFor('three drops at b', () => rxeOf(b).counters.unknown_qp_drops === 3);
    } finally {
      A.close();
      await close();
    }
  });
});

describe('what QP1 and the MAD layer cannot take: counted, dropped or answered, never thrown', () => {
  it('another Q_Key or size at QP1; another base version; an SMP class; a class or version nobody registered; a CM attribute this CM does not handle; a GET answered', async () => {
    const { a, b, close } = await two();
    const A = new CmAgent(a), B = new CmAgent(b);
    try {
      const lb = MadLayer.of(b), la = MadLayer.of(a);
      const rb = rxeOf(b).counters;
      const listenId = B.listen(SID);
      const dreq = encodeCmMad({ ...blankCm('DREQ'), localCommId: 5, remoteCommId: 6 }, 0x77n);

      // rxe's checks (rxe_recv.c check_keys, the MAD size)
      rxeOf(a).link.send(udToQp1(dreq, 0x80010001), '127.0.0.3');
      rxeOf(a).link.send(udToQp1(dreq.subarray(0, 200), 0x80010000), '127.0.0.3');
      await waitFor('rxe drops', () => rb.gsi_qkey_drops === 1 && rb.gsi_malformed_drops === 1);

      // mad.c's validate_mad and agent matching
      const bad = Buffer.from(dreq);
      bad[0] = 2; // base version
      la.send(bad, { dgid: B.gid });
      const smp = encodeMad({ ...cmMadHeader(0x10, 1n), mgmtClass: MgmtClass.SUBN_LID_ROUTED, method: MadMethod.GET });
      la.send(smp, { dgid: B.gid });
      await waitFor('invalid drops', () => lb.counters.invalid_drops === 2);
      la.send(encodeCmMad({ ...blankCm('DREQ') }, 1n, { classVersion: 1 }), { dgid: B.gid }); // no agent for CM v1
      // validate_mad: a CM attribute other than ClassPortInfo by any method but SEND is invalid (a GET is not answered)
      la.send(encodeCmMad({ ...blankCm('DREQ') }, 1n, { method: MadMethod.REPORT }), { dgid: B.gid });
      la.send(encodeCmMad({ ...blankCm('DREQ') }, 1n, { method: MadMethod.GET }), { dgid: B.gid });
      await waitFor('unclaimed and invalid', () => lb.counters.unclaimed_drops === 1 && lb.counters.invalid_drops === 4);
      assert.equal(lb.counters.unsupported_answered, 0);
      // CM class, version 2, SEND: the agent's, but LAP (0x19) is not a message this CM handles
      la.send(encodeMad({ ...cmMadHeader(0x19, 1n) }), { dgid: B.gid });
      await waitFor('malformed CM', () => B.counters.rx_malformed === 1);
      // a DREQ for nobody: cm_issue_drep answers it anyway (to the sender)
      la.send(dreq, { dgid: B.gid });
      await waitFor('DREP for nobody', () => A.counters.rx_msgs.DREP === 1);
      assert.equal(B.counters.rx_unexpected, 1);
      assert.equal(A.counters.rx_unexpected, 1); // the DREP matches nothing at A either

      // a GET of a class nobody here registered: GetResp(UNSUPPORTED_METHOD_ATTRIB), back to the test's agent by its TID
      const got: MadRecv[] = [];
      const perf = la.register({ mgmtClass: MgmtClass.PERF_MGMT, classVersion: 1, methods: [MadMethod.GET], onMad: (r) => got.push(r) });
      const tid = (BigInt(perf.hiTid) << 32n) | 0x1234n;
      perf.send(encodeMad({ ...cmMadHeader(0x12, tid), mgmtClass: MgmtClass.PERF_MGMT, classVersion: 1, method: MadMethod.GET }), { dgid: B.gid });
      await waitFor('GetResp', () => got.length === 1);
      const h = got[0]!.mad.header;
      assert.deepEqual([h.method, h.status, h.tid, h.mgmtClass, h.attrId], [MadMethod.GET_RESP, MadStatus.UNSUPPORTED_METHOD_ATTRIB, tid, MgmtClass.PERF_MGMT, 0x12]);
      assert.equal(lb.counters.unsupported_answered, 1);
      // a response nobody here started
      la.send(encodeMad({ ...cmMadHeader(0x12, 0x7777_0000_0001n), mgmtClass: MgmtClass.PERF_MGMT, method: MadMethod.GET_RESP }), { dgid: B.gid });
      await waitFor('unmatched response', () => lb.counters.unmatched_response_drops === 1);
      // ib_response_mad: a TrapRepress, and a Baseboard Management GET whose AttributeModifier
      // has the response bit, are responses (routed by TID: dropped here), never answered
      la.send(encodeMad({ ...cmMadHeader(0x12, 0x7777_0000_0002n), mgmtClass: MgmtClass.BM, classVersion: 1, method: MadMethod.GET, attrMod: 1 }), { dgid: B.gid });
      la.send(encodeMad({ ...cmMadHeader(0x12, 0x7777_0000_0003n), mgmtClass: MgmtClass.PERF_MGMT, classVersion: 1, method: MadMethod.TRAP_REPRESS }), { dgid: B.gid });
      await waitFor('two more unmatched responses', () => lb.counters.unmatched_response_drops === 3);
      assert.equal(lb.counters.unsupported_answered, 1);
      perf.unregister();

      // none of it disturbed B: a real REQ still connects to its listener
      const seen = once(B, 'event');
      A.connect({ dgid: B.gid, req: rdmaCmReq({ qpn: 0x11 }), packetLifeTime: CMA_IBOE_PACKET_LIFETIME });
      const [e] = await seen as [CmAgentEvent];
      assert.deepEqual([e.event, e.listenId], ['REQ_RECEIVED', listenId]);
      assert.equal(rb.malformed_drops, 0);
    } finally {
      A.close();
      B.close();
      await close();
    }
  });

  it('the MAD layer gives QP1 back with its last agent; the device can open it again', async () => {
    const dev = await createRxeDevice({ address: '127.0.0.2', port: 0 });
    try {
      const A = new CmAgent(dev);
      assert.throws(() => dev.openGsi(), { code: 'EBUSY' });
      A.listen(SID);
      assert.throws(() => A.listen(SID), { code: 'EBUSY' }); // ib_cm_listen: -EBUSY when cm_insert_listen finds one
      A.close();
      A.close();
      assert.throws(() => A.listen(SID), { code: 'EINVAL' });
      dev.openGsi().close();
      const A2 = new CmAgent(dev);
      A2.close();
    } finally {
      await dev.close();
    }
  });
});
