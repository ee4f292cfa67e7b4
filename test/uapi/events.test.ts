// Completion-channel and async events follow the kernel's rules for who gets an event and
// what happens to the events of a destroyed object: uverbs hands each completion event to one
// reader, and destroying a CQ or QP takes its queued events with it (ib_uverbs_release_ucq,
// ib_uverbs_release_uevent), so nothing arrives about an object after destroy returns.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { QpAttr, QpState, QpType, type AsyncEventInfo, type CompChannel, type CQ, type PD } from '../../src/index.js';
import { withDevice } from '../helpers/uapi.js';

const INIT_MASK = QpAttr.STATE | QpAttr.PKEY_INDEX | QpAttr.PORT | QpAttr.ACCESS_FLAGS;
const toInit = { qpState: QpState.INIT, pkeyIndex: 0, portNum: 1, qpAccessFlags: 0 };
const turn = () => new Promise((r) => setImmediate(r));

/** A QP in INIT on `cq` with `n` receives posted: taking it to ERR flushes n completions at once. */
function flushable(pd: PD, cq: CQ, n: number) {
  const qp = pd.createQp({ qpType: QpType.RC, sendCq: cq, recvCq: cq, cap: { maxSendWr: 1, maxRecvWr: n } });
  qp.modify(toInit, INIT_MASK);
  for (let i = 0; i < n; i++) qp.postRecv({ wrId: i, sgList: [] });
  return qp;
}

/** What getCqEvent yields within `ms`, or 'nothing' (the wait is then aborted, not left behind). */
async function nextEvent(ch: CompChannel, ms = 50): Promise<CQ | 'nothing'> {
  const ac = new AbortController();
  const t = setTimeout(() => ac.abort('nothing'), ms);
  try {
    return await ch.getCqEvent({ signal: ac.signal });
  } catch (e) {
    if (e === 'nothing') return e;
    throw e;
  } finally {
    clearTimeout(t);
  }
}

test('a destroyed CQ leaves no event on its channel: neither one still being raised nor one queued', async () => {
  await withDevice(async (ctx, pd) => {
    const ch = ctx.createCompChannel();
    // Raised but not yet delivered: the CQ goes between the completion and its event.
    const cq1 = ctx.createCq(4, { channel: ch });
    const qp1 = flushable(pd, cq1, 1);
    cq1.reqNotify();
    qp1.modify({ qpState: QpState.ERR }, QpAttr.STATE);
    qp1.destroy();
    cq1.destroy();
    await turn();
    assert.equal(await nextEvent(ch), 'nothing', 'no event for a CQ destroyed before its event was delivered');
    // Delivered to the channel and waiting there: destroy takes it off.
    const cq2 = ctx.createCq(4, { channel: ch });
    const qp2 = flushable(pd, cq2, 1);
    cq2.reqNotify();
    qp2.modify({ qpState: QpState.ERR }, QpAttr.STATE);
    await turn();
    qp2.destroy();
    cq2.destroy();
    assert.equal(await nextEvent(ch), 'nothing', 'no queued event left for a destroyed CQ');
    // The channel still works, for the CQs it still has.
    const cq3 = ctx.createCq(4, { channel: ch });
    const qp3 = flushable(pd, cq3, 1);
    cq3.reqNotify();
    qp3.modify({ qpState: QpState.ERR }, QpAttr.STATE);
    assert.equal(await nextEvent(ch, 5000), cq3);
    qp3.destroy();
    cq3.destroy();
    ch.destroy();
  });
});

test('two getCqEvent waiters on one channel: each event goes to exactly one, in call order; none resolves empty', async () => {
  await withDevice(async (ctx, pd) => {
    const ch = ctx.createCompChannel();
    const cq = ctx.createCq(16, { channel: ch });
    const results: Array<CQ | undefined> = [];
    const w1 = ch.getCqEvent().then((c) => { results.push(c); return c; });
    const w2 = ch.getCqEvent().then((c) => { results.push(c); return c; });
    cq.reqNotify();
    const qp = flushable(pd, cq, 1);
    qp.modify({ qpState: QpState.ERR }, QpAttr.STATE); // one completion, one event
    assert.equal(await w1, cq);
    await new Promise((r) => setTimeout(r, 30));
    assert.deepEqual(results, [cq], 'the second waiter still waits');
    // The next event is the second waiter's.
    cq.reqNotify();
    qp.postRecv({ wrId: 9, sgList: [] }); // flushed at once in ERR
    assert.equal(await w2, cq);
    assert.deepEqual(results, [cq, cq]);
    // A listener gets what no waiter waits for; a waiter comes before it.
    const heard: CQ[] = [];
    const stop = ch.onCqEvent((c) => heard.push(c));
    const w3 = ch.getCqEvent();
    cq.reqNotify();
    qp.postRecv({ wrId: 10, sgList: [] });
    assert.equal(await w3, cq);
    assert.deepEqual(heard, []);
    cq.reqNotify();
    qp.postRecv({ wrId: 11, sgList: [] });
    await turn();
    assert.deepEqual(heard, [cq]);
    stop();
    qp.destroy();
    cq.destroy();
    ch.destroy();
  });
});

test('async events of a QP or CQ destroyed before they are delivered are dropped', async () => {
  await withDevice(async (ctx, pd) => {
    const events: AsyncEventInfo[] = [];
    ctx.on('async-event', (e: AsyncEventInfo) => { if (e.name !== 'PORT_ACTIVE') events.push(e); });
    // LAST_WQE_REACHED of a QP on an SRQ that goes to ERR, then is destroyed at once.
    const cq = ctx.createCq(16);
    const srq = pd.createSrq({ maxWr: 4, maxSge: 1 });
    const qp = pd.createQp({ qpType: QpType.RC, sendCq: cq, recvCq: cq, srq, cap: { maxSendWr: 1 } });
    qp.modify(toInit, INIT_MASK);
    qp.modify({ qpState: QpState.ERR }, QpAttr.STATE);
    qp.destroy();
    // CQ_ERR of a CQ that overflows, then is destroyed at once.
    const small = ctx.createCq(1);
    const q2 = flushable(pd, small, 3);
    q2.modify({ qpState: QpState.ERR }, QpAttr.STATE);
    q2.destroy();
    small.destroy();
    await turn();
    assert.deepEqual(events.map((e) => e.name), []);
    // Not destroyed, the same events arrive.
    const qp3 = pd.createQp({ qpType: QpType.RC, sendCq: cq, recvCq: cq, srq, cap: { maxSendWr: 1 } });
    qp3.modify(toInit, INIT_MASK);
    qp3.modify({ qpState: QpState.ERR }, QpAttr.STATE);
    await turn();
    assert.deepEqual(events.map((e) => [e.name, e.qp]), [['QP_LAST_WQE_REACHED', qp3]]);
    qp3.destroy();
  });
});

test('every completion that finds the CQ full raises CQ_ERR (rxe_cq_post), not just the first', async () => {
  await withDevice(async (ctx, pd) => {
    const names: string[] = [];
    ctx.on('async-event', (e: AsyncEventInfo) => { if (e.cq) names.push(e.name); });
    const cq = ctx.createCq(1);
    const qp = flushable(pd, cq, 3);
    qp.modify({ qpState: QpState.ERR }, QpAttr.STATE); // 1 queued, 2 lost
    await turn();
    assert.deepEqual(names, ['CQ_ERR', 'CQ_ERR']);
    assert.equal(cq.poll(4).length, 1);
    qp.postRecv({ wrId: 5, sgList: [] }); // room again: flushed and queued, no error
    qp.postRecv({ wrId: 6, sgList: [] }); // full again: one more CQ_ERR
    await turn();
    assert.deepEqual(names, ['CQ_ERR', 'CQ_ERR', 'CQ_ERR']);
    qp.destroy();
  });
});
