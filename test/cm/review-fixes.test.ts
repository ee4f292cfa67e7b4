// Fixes from a review of the CM, each with the case that showed the bug: a client restarted on
// its address meeting its dead self's connection at the server (every device handed out QPN
// 0x11 first), an MRA that lengthened every later wait of the connection, one throwing DEVICE_REMOVAL handler keeping
// the removal from the other ids; and the channel delivering an event both to a waiting next()
// and to the listeners, as docs/cm.md now says (softrdma's rping relies on it).

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { QpType, createRxeDevice, rxeOf, type Device } from '../../src/index.js';
import { EventChannel, createEventChannel, createId, type RdmaCmEvent, type RdmaCmEventType, type RdmaCmId } from '../../src/cm/index.js';
import { cmStep, newConn, passiveFromReq, type CmInput, type CmStep } from '../../src/cm/cm-state.js';
import { CmMsgResponse, blankCm, type CmMessageOf } from '../../src/cm/wire/cm-messages.js';
import { FIRST_QPN } from '../../src/providers/rxe/device.js';
import { twoDevices } from '../helpers/pair.js';
import { resolvedTo, withQp } from '../helpers/cm-pair.js';
import { jsonLines, run, runNode } from '../helpers/procs.js';

const QUICK = { packetLifeTime: 1 } as const; // time-wait of a few ms instead of 2 s
const CONNECT_OUTCOMES: RdmaCmEventType[] = ['ESTABLISHED', 'REJECTED', 'UNREACHABLE', 'CONNECT_ERROR', 'CONNECT_RESPONSE'];


describe('QPNs start anywhere in the pool', () => {
  it('the first QP of each new device has a QPN from 0x11 to 0xfffffe, not the same one every time', async () => {
    const firsts: number[] = [];
    for (let i = 0; i < 3; i++) {
      const dev = await createRxeDevice({ address: '127.0.0.2', port: 0 });
      try {
        const ctx = dev.open();
        const cq = ctx.createCq(4);
        const qp = ctx.allocPd().createQp({ qpType: QpType.UD, sendCq: cq, recvCq: cq, cap: { maxSendWr: 1, maxRecvWr: 1, maxSendSge: 1, maxRecvSge: 1 } });
        firsts.push(qp.qpn);
        ctx.close();
      } finally {
        await dev.close();
      }
    }
    for (const q of firsts) assert.ok(q >= FIRST_QPN && q <= 0xfffffe, `QPN 0x${q.toString(16)}`);
    // Three equal draws from 16.7 million values: once in 2^48 runs.
    assert.ok(new Set(firsts).size > 1, `first QPNs ${firsts.map((q) => q.toString(16))}`);
  });

  it('a client that died without a word and came back on its address connects (no REJ(STALE_CONN))', async () => {
    const { a, b } = await twoDevices();
    const sch = createEventChannel(), cch1 = createEventChannel(), cch2 = createEventChannel();
    let again: Device | undefined;
    try {
      const l = createId(sch, 'tcp', QUICK);
      l.bindAddr('127.0.0.3', 0);
      l.listen();
      sch.on('CONNECT_REQUEST', (e: RdmaCmEvent) => { withQp(e.id); e.id.accept(); });
      const connectOnce = async (ch: EventChannel) => {
        const c = await resolvedTo(ch, l, QUICK);
        withQp(c);
        c.connect();
        return { qpn: c.qp!.qpn, e: await ch.next(CONNECT_OUTCOMES, 5000, c) };
      };
      const first = await connectOnce(cch1);
      assert.equal(first.e.event, 'ESTABLISHED');
      // As after SIGKILL: the device goes, its agent leaves QP1 sending nothing; the server
      // still holds the connection (the client's CA GUID and QPN).
      await a.close();
      again = await createRxeDevice({ address: '127.0.0.2', port: rxeOf(b).port });
      const second = await connectOnce(cch2);
      assert.equal(second.e.event, 'ESTABLISHED', `${second.e.event} ${second.e.reason ?? ''}: QPN 0x${second.qpn.toString(16)}, the dead one's 0x${first.qpn.toString(16)}`);
    } finally {
      for (const ch of [sch, cch1, cch2]) ch.close();
      await again?.close();
      await a.close();
      await b.close();
    }
  });
});

describe('an MRA lengthens the wait of the message it answers, not the connection\'s', () => {
  const timerMs = (s: CmStep) => s.actions.flatMap((x) => (x.type === 'timer_start' && x.timer === 'retry' ? [x.ms] : []));
  const mra = (messageMraed: number, localCommId: number, remoteCommId: number): CmInput =>
    ({ type: 'recv', tid: 1n, msg: { ...blankCm('MRA'), localCommId, remoteCommId, messageMraed, serviceTimeout: 24 } });

  it('active: the REQ and its resends wait the MRA\'s 67,584 ms, the DREQ later 6,144 ms again (cm_mra_handler, ib_modify_mad)', () => {
    const { kind: _k, localCommId: _l, ...blank } = blankCm('REQ');
    let s = cmStep(newConn({ localId: 0x1111, localCaGuid: 1n, hiTid: 1 }), {
      type: 'send_req', req: { ...blank, localQpn: 5, remoteCmResponseTimeout: 20, maxCmRetries: 15 }, packetLifeTime: 18,
    });
    assert.deepEqual(timerMs(s), [6144]); // 2 × 1024 + 4096
    s = cmStep(s.conn, mra(CmMsgResponse.REQ, 0x2222, 0x1111)); // e.g. Linux's CMA_CM_MRA_SETTING 24
    assert.deepEqual(timerMs(s), [65536 + 2048]);
    s = cmStep(s.conn, { type: 'retry_timeout' });
    assert.deepEqual([s.actions[0]?.type, timerMs(s)], ['send', [67584]], 'the REQ\'s resend waits as long');
    s = cmStep(s.conn, { type: 'recv', tid: 1n, msg: { ...blankCm('REP'), localCommId: 0x2222, remoteCommId: 0x1111, localQpn: 9, targetAckDelay: 15 } });
    s = cmStep(s.conn, { type: 'send_rtu' });
    assert.equal(s.conn.state, 'ESTABLISHED');
    s = cmStep(s.conn, { type: 'send_dreq' });
    assert.deepEqual([s.conn.state, timerMs(s), s.conn.timeoutMs], ['DREQ_SENT', [6144], 6144]);
    s = cmStep(s.conn, { type: 'retry_timeout' });
    assert.deepEqual(timerMs(s), [6144], 'and so does its resend');
  });

  it('passive: the REP waits the MRA\'s time, the DREQ later the REQ\'s local CM response timeout', () => {
    const req: CmMessageOf<'REQ'> = {
      ...blankCm('REQ'), localCommId: 0x3333, localCaGuid: 2n, localQpn: 7, localCmResponseTimeout: 20, remoteCmResponseTimeout: 20,
      maxCmRetries: 15, primaryLocalAckTimeout: 19,
    };
    let s = passiveFromReq({ localId: 0x4444, localCaGuid: 3n }, req, 5n);
    const { kind: _k, localCommId: _l, remoteCommId: _r, ...rep } = blankCm('REP');
    s = cmStep(s.conn, { type: 'send_rep', rep: { ...rep, localQpn: 8 } });
    assert.deepEqual(timerMs(s), [4096]);
    s = cmStep(s.conn, mra(CmMsgResponse.REP, 0x3333, 0x4444));
    assert.deepEqual([s.conn.state, timerMs(s)], ['MRA_REP_RCVD', [65536 + 2048]]);
    s = cmStep(s.conn, { type: 'recv', tid: 5n, msg: { ...blankCm('RTU'), localCommId: 0x3333, remoteCommId: 0x4444 } });
    s = cmStep(s.conn, { type: 'send_dreq' });
    assert.deepEqual([s.conn.state, timerMs(s)], ['DREQ_SENT', [4096]]);
  });
});

it('a DEVICE_REMOVAL handler that throws: every id still hears it, each exception comes out uncaught, close() resolves', async () => {
  const p = runNode(fileURLToPath(new URL('./review-removal-peer.js', import.meta.url)), []);
  assert.equal(await p.exit(20_000), 0, p.stdout + p.stderr);
  const [r] = jsonLines(p.stdout);
  assert.deepEqual(r, {
    heard: 3, states: ['device-removal', 'device-removal', 'device-removal'],
    uncaught: ['handler bug 1', 'handler bug 2', 'handler bug 3'],
  });
});

describe('the event channel: a waiting next() and the listeners both get an event (docs/cm.md)', () => {
  it('taken by next() and heard by the listener; heard only: not queued; neither: queued for next()', async () => {
    const ch = new EventChannel();
    const id = { destroyId() {} } as unknown as RdmaCmId;
    ch.adopt(id);
    const heard: string[] = [];
    const listener = (e: RdmaCmEvent) => heard.push(e.event);
    ch.on('event', listener);
    const waiting = ch.next('ESTABLISHED', 5000);
    ch.deliver({ event: 'ESTABLISHED', id, status: 0 });
    assert.equal((await waiting).event, 'ESTABLISHED');
    assert.deepEqual(heard, ['ESTABLISHED']);
    ch.deliver({ event: 'DISCONNECTED', id, status: 0 });
    await assert.rejects(ch.next('DISCONNECTED', 20), { code: 'ETIMEDOUT' });
    ch.off('event', listener);
    ch.deliver({ event: 'TIMEWAIT_EXIT', id, status: 0 });
    assert.equal((await ch.next('TIMEWAIT_EXIT', 20)).event, 'TIMEWAIT_EXIT');
    assert.deepEqual(heard, ['ESTABLISHED', 'DISCONNECTED']);
    ch.close();
  });

  it('softrdma rping relies on it: the client waits for its DISCONNECTED with next() and reports it from its listener', async () => {
    const s = run(['rping', '-s', '-a', '127.0.0.2', '-p', '0', '--udp-port', '0']);
    const [, port, udp] = await s.waitFor(/listening: port (\d+), RoCE UDP port (\d+)/);
    const c = run(['rping', '-c', '-a', '127.0.0.2', '-I', '127.0.0.3', '-p', port!, '--udp-port', udp!, '-C', '2']);
    const [cc, sc] = await Promise.all([c.exit(), s.exit()]);
    assert.equal(cc, 0, c.stderr);
    assert.equal(sc, 0, s.stderr);
    assert.match(c.stderr, /client DISCONNECT EVENT/);
  });
});
