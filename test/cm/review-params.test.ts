// rdma_cm parity with Linux's cm.c / cma.c and librdmacm, from a review: what the decoder takes
// (a REJ of message type 3, info lengths over 72), the passive QP's access and retransmission
// timeout through accept, and what each event carries.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Access } from '../../src/index.js';
import { createId, type EventChannel, type RdmaCmId } from '../../src/cm/index.js';
import { cmDevices } from '../../src/cm/rdma-cm/cm-device.js';
import { formatReq } from '../../src/cm/rdma-cm/cm-fields.js';
import { cmaReqPrivateData, serviceIdFor } from '../../src/cm/wire/cma-header.js';
import { CmAttrId, RejReason, blankCm, encodeCmMad } from '../../src/cm/wire/cm-messages.js';
import { onTwoDevices, resolvedTo, withQp } from '../helpers/cm-pair.js';

const QUICK = { packetLifeTime: 1 } as const;

/** The CM device of an address, with the internals these tests reach into. */
function cmDev(address: string) {
  const d = cmDevices().find((x) => x.address === address)!;
  return d as unknown as {
    gid: Buffer;
    agent: {
      counters: { rx_malformed: number };
      table: { connections(): Iterable<{ state: string; localId: number; remoteId: number }> };
      mad: { send(buf: Buffer, dest: { dgid: Uint8Array }): unknown };
      connect(o: unknown): number;
      call(id: number, a: unknown): void;
    };
  };
}

/** Rewrite the next MAD of attribute `attr` that the device at `address` sends. */
function patchNext(address: string, attr: number, f: (mad: Buffer) => void): void {
  const mad = cmDev(address).agent.mad;
  const send = mad.send;
  mad.send = (buf, dest) => {
    if (buf.readUInt16BE(16) === attr) { f(buf); mad.send = send; }
    return send.call(mad, buf, dest);
  };
}

function listener(ch: EventChannel, ps: 'tcp' | 'udp' = 'tcp'): RdmaCmId {
  const l = createId(ch, ps, QUICK);
  l.bindAddr('127.0.0.3', 0);
  l.listen(8);
  return l;
}

type Channels = { sch: EventChannel; cch: EventChannel };

/** A client id with a QP that connected to `l`, and the server's CONNECT_REQUEST for it. */
async function requested(t: Channels, l: RdmaCmId, param: Parameters<RdmaCmId['connect']>[0] = {}) {
  const c = await resolvedTo(t.cch, l, QUICK);
  withQp(c);
  c.connect(param);
  const req = await t.sch.next('CONNECT_REQUEST', 5000);
  return { c, req };
}

async function connected(t: Channels, l: RdmaCmId, param: Parameters<RdmaCmId['connect']>[0] = {}, accept: Parameters<RdmaCmId['accept']>[0] = {}) {
  const { c, req } = await requested(t, l, param);
  const s = req.id;
  withQp(s);
  s.accept(accept);
  const [ce, se] = await Promise.all([t.cch.next('ESTABLISHED', 5000, c), t.sch.next('ESTABLISHED', 5000, s)]);
  return { c, s, req, ce, se };
}

describe('the CM decoder takes what cm.c takes', () => {
  it('a REJ(TIMEOUT) whose ARI length says 100 rejects the passive id (REJECTED, reason TIMEOUT), not counted malformed', () => onTwoDevices(async (t) => {
    const l = listener(t.sch);
    const { c, req } = await requested(t, l);
    const before = cmDev('127.0.0.3').agent.counters.rx_malformed;
    // The client gives up while the server holds its REQ: REJ(TIMEOUT) with its GUID in the ARI.
    patchNext('127.0.0.2', CmAttrId.REJ, (b) => { b[24 + 9] = 100 << 1; });
    c.destroyId();
    const e = await t.sch.next('REJECTED', 5000, req.id);
    assert.equal(e.status, RejReason.TIMEOUT);
    assert.equal(cmDev('127.0.0.3').agent.counters.rx_malformed, before);
    req.id.destroyId();
    l.destroyId();
  }));

  it('a REJ naming message type 3 on an established connection ends it (REJECTED with its reason)', () => onTwoDevices(async (t) => {
    const l = listener(t.sch);
    const { c, s } = await connected(t, l);
    const client = cmDev('127.0.0.2');
    const conn = [...client.agent.table.connections()].find((x) => x.state === 'ESTABLISHED')!;
    const rej = { ...blankCm('REJ'), localCommId: conn.localId, remoteCommId: conn.remoteId, messageRejected: 3, reason: RejReason.CONSUMER_DEFINED };
    client.agent.mad.send(encodeCmMad(rej, 1n), { dgid: cmDev('127.0.0.3').gid });
    const e = await t.sch.next('REJECTED', 5000, s);
    assert.equal(e.status, RejReason.CONSUMER_DEFINED);
    c.destroyId();
    s.destroyId();
    l.destroyId();
  }));

  it('a SIDR_REP(SUCCESS) whose additional information length says 100 resolves the UD id', () => onTwoDevices(async (t) => {
    const l = listener(t.sch, 'udp');
    const c = createId(t.cch, 'udp', { ...QUICK, cmResponseTimeout: 8, maxCmRetries: 2 });
    c.resolveAddr({ address: '127.0.0.3', port: l.localAddr!.port }, '127.0.0.2');
    await t.cch.next('ADDR_RESOLVED', 5000, c);
    c.resolveRoute();
    await t.cch.next('ROUTE_RESOLVED', 5000, c);
    withQp(c);
    c.connect({});
    const req = await t.sch.next('CONNECT_REQUEST', 5000);
    withQp(req.id);
    patchNext('127.0.0.3', CmAttrId.SIDR_REP, (b) => { b[24 + 5] = 100; });
    req.id.accept({});
    const e = await t.cch.next(['ESTABLISHED', 'UNREACHABLE'], 5000, c);
    assert.equal(e.event, 'ESTABLISHED');
    assert.equal(e.ud!.qpNum, req.id.qp!.qpn);
    c.destroyId();
    req.id.destroyId();
    l.destroyId();
  }));
});

describe('the passive QP through accept, as cm_init_qp_init_attr / cm_init_qp_rts_attr', () => {
  const rw = (f: number) => f & (Access.REMOTE_WRITE | Access.REMOTE_READ | Access.REMOTE_ATOMIC);

  it('REMOTE_READ and REMOTE_ATOMIC follow the REQ\'s initiator depth, max_dest_rd_atomic the accept\'s responder resources', () => onTwoDevices(async (t) => {
    const l = listener(t.sch);
    for (const [initiatorDepth, responderResources, access] of [
      [0, 1, Access.REMOTE_WRITE],
      [1, 0, Access.REMOTE_WRITE | Access.REMOTE_READ | Access.REMOTE_ATOMIC],
    ] as const) {
      const { c, s } = await connected(t, l, { initiatorDepth, responderResources: 1 }, { responderResources });
      const q = s.qp!.query();
      assert.equal(rw(q.qpAccessFlags), access, `REQ initiator depth ${initiatorDepth}, accept responder resources ${responderResources}`);
      assert.equal(q.maxDestRdAtomic, responderResources);
      c.destroyId();
      s.destroyId();
    }
    l.destroyId();
  }));

  it('a REQ whose local ACK timeout is 0 still gives the passive QP a retransmission timer (timeout 1)', () => onTwoDevices(async (t) => {
    const l = listener(t.sch);
    const ca = cmDev('127.0.0.2'), sa = cmDev('127.0.0.3');
    const path = { sgid: ca.gid, dgid: sa.gid, mtu: 3, flowLabel: 0, hopLimit: 64, trafficClass: 0, packetLifeTime: 18 };
    const pdata = cmaReqPrivateData({ ipVersion: 4, srcPort: 40000, srcAddr: '127.0.0.2', dstAddr: '127.0.0.3' }, Buffer.alloc(0), Infinity);
    const req = formatReq({
      serviceId: serviceIdFor(0x0106, l.localAddr!.port), qpNum: 0x1234, responderResources: 1, initiatorDepth: 1, flowControl: 0,
      startingPsn: 1, retryCount: 7, rnrRetryCount: 7, srq: 0, path, timing: { cmResponseTimeout: 20, maxCmRetries: 1, packetLifeTime: 18 }, privateData: pdata,
    });
    req.primaryLocalAckTimeout = 0;
    const cid = ca.agent.connect({ dgid: sa.gid, req, packetLifeTime: 18 });
    const e = await t.sch.next('CONNECT_REQUEST', 5000);
    withQp(e.id);
    e.id.accept({});
    assert.equal(e.id.qp!.query().timeout, 1);
    e.id.destroyId();
    ca.agent.call(cid, { type: 'destroy' });
    l.destroyId();
  }));
});

describe('event parameters, as cma_ib_handler fills them in', () => {
  it('ESTABLISHED from the REP: retry count 0; from the RTU and DISCONNECTED: no private data', () => onTwoDevices(async (t) => {
    const l = listener(t.sch);
    const { c, s, req, ce, se } = await connected(t, l, { privateData: Buffer.from('hi'), retryCount: 5 }, { privateData: Buffer.from('welcome') });
    assert.equal(req.conn!.retryCount, 5, 'CONNECT_REQUEST: the REQ\'s retry count');
    assert.equal(ce.conn!.retryCount, 0, 'cma_set_rep_event_data leaves it 0');
    assert.equal(ce.conn!.privateData.subarray(0, 7).toString(), 'welcome');
    assert.equal(se.conn!.privateData.length, 0, 'an RTU\'s ESTABLISHED carries nothing');
    c.disconnect();
    const sd = await t.sch.next('DISCONNECTED', 5000, s);
    s.disconnect();
    const cd = await t.cch.next('DISCONNECTED', 5000, c);
    assert.equal(sd.conn?.privateData.length ?? 0, 0);
    assert.equal(cd.conn?.privateData.length ?? 0, 0);
    c.destroyId();
    s.destroyId();
    l.destroyId();
  }));

  it('CONNECT_ERROR (our QP cannot take the REP) carries the REP\'s parameters', () => onTwoDevices(async (t) => {
    const l = listener(t.sch);
    const { c, req } = await requested(t, l);
    c.qp!.modify({ qpState: 6 }, 1); // ERR: RTR will fail
    withQp(req.id);
    req.id.accept({ privateData: Buffer.from('welcome') });
    const e = await t.cch.next(['ESTABLISHED', 'CONNECT_ERROR'], 5000, c);
    assert.equal(e.event, 'CONNECT_ERROR');
    assert.equal(e.conn?.qpNum, req.id.qp!.qpn);
    assert.equal(e.conn?.privateData.subarray(0, 7).toString(), 'welcome');
    c.destroyId();
    req.id.destroyId();
    l.destroyId();
  }));
});
