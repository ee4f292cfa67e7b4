// The uapi's locks and aborts, as uverbs' (a review's findings): a call holds the objects it
// names for its whole run (shared to read, exclusive to change or destroy: rdma_core.c's
// uverbs_try_lock_object), so a call made from inside it (a getter on an attribute's value, a
// listener) cannot destroy or change them (EBUSY); an object a method made is destroyed again
// when the method fails afterwards (rdma_alloc_abort_uobject); a negative handle is EINVAL.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Attr, Device, M, Obj, DRIVER_NS, QpAttr, QpState, QpType, VerbsError, createRxeDevice } from '../../src/index.js';
import { newHandle, out } from '../../src/uapi/attrs.js';
import type { DriverRegistrar } from '../../src/uapi/registry.js';
import { FakeDevice } from '../helpers/fake-provider.js';

const code = (fn: () => unknown): string => {
  try { fn(); return 'ok'; } catch (e) { assert.ok(e instanceof VerbsError, String(e)); return e.code; }
};

test('a call made from inside another cannot destroy what the outer call names (EBUSY); afterwards it can', async () => {
  const dev = await createRxeDevice({ address: '127.0.0.2', port: 0 });
  try {
    const ctx = dev.open();
    const pd = ctx.allocPd();
    // QP.CREATE reads the send CQ; a getter on cap destroys it while the QP is being made.
    const sendCq = ctx.createCq(8), recvCq = ctx.createCq(8);
    let inner = '';
    const cap = { get maxSendWr() { inner = code(() => sendCq.destroy()); return 4; }, maxRecvWr: 4 };
    const qp = pd.createQp({ qpType: QpType.RC, sendCq, recvCq, cap });
    assert.equal(inner, 'EBUSY');
    assert.deepEqual(ctx.census(), { PD: 1, CQ: 2, QP: 1 });
    // The lock went with the call: the QP holds the CQ now (EBUSY for that reason), and once
    // the QP is gone the CQ goes.
    assert.equal(code(() => sendCq.destroy()), 'EBUSY');
    qp.destroy();
    sendCq.destroy();

    // AH.CREATE through the raw uapi: the PD is deallocated while ah_attr is read.
    const pd2 = ctx.allocPd();
    const gid = ctx.queryGid();
    let inner2 = '';
    const av = { get grh() { inner2 = code(() => pd2.dealloc()); return { dgid: gid }; } };
    ctx.invoke(Obj.AH, M.AH.CREATE, { [Attr.AH.CREATE.PD_HANDLE]: pd2.handle, [Attr.AH.CREATE.AH_ATTR]: av });
    assert.equal(inner2, 'EBUSY');
    assert.equal(ctx.census().PD, 2);

    // QP.MODIFY changes the QP (exclusive): a QUERY from inside it is EBUSY too, and a second
    // MODIFY; reads of the same object at once are fine (two CQ handles naming one CQ).
    const q2 = pd.createQp({ qpType: QpType.RC, sendCq: recvCq, recvCq, cap: { maxSendWr: 1, maxRecvWr: 1 } });
    let nested: string[] = [];
    const attr = { get qpState() { nested = [code(() => q2.query()), code(() => q2.modify({ qpState: QpState.RESET }, QpAttr.STATE)), code(() => q2.destroy())]; return QpState.INIT; }, pkeyIndex: 0, portNum: 1, qpAccessFlags: 0 };
    q2.modify(attr, QpAttr.STATE | QpAttr.PKEY_INDEX | QpAttr.PORT | QpAttr.ACCESS_FLAGS);
    assert.deepEqual(nested, ['EBUSY', 'EBUSY', 'EBUSY']);
    assert.equal(q2.query().qpState, QpState.INIT);
    q2.destroy();
    ctx.close();
  } finally {
    await dev.close();
  }
});

test('a negative handle is EINVAL (uverbs: no handle at all), a handle never given ENOENT', async () => {
  const dev = await createRxeDevice({ address: '127.0.0.2', port: 0 });
  try {
    const ctx = dev.open();
    assert.equal(code(() => ctx.invoke(Obj.PD, M.PD.DEALLOC, { [Attr.PD.DEALLOC.HANDLE]: -1 })), 'EINVAL');
    assert.equal(code(() => ctx.invoke(Obj.PD, M.PD.DEALLOC, { [Attr.PD.DEALLOC.HANDLE]: 999 })), 'ENOENT');
    ctx.close();
  } finally {
    await dev.close();
  }
});

test('an object a method made is destroyed when the method fails afterwards: in the handler (ctx.made), or in the checks after it', async () => {
  const NEW = newHandle(0, 'cq_handle', Obj.CQ);
  const RESP = out(DRIVER_NS | 1, 'resp');
  const driver = (r: DriverRegistrar) => {
    // Makes a CQ, says so, then fails a step of its own.
    r.defineMethod(Obj.CQ, { id: DRIVER_NS | 0, name: 'CREATE_THEN_FAIL', attrs: [NEW, RESP], handler: (ctx) => {
      ctx.made(ctx.context.provider.createCq(4));
      ctx.hold({}); // EINVAL: not an object of this context
      return {};
    } });
    // Makes a CQ and returns an output it does not declare: the dispatcher's check fails.
    r.defineMethod(Obj.CQ, { id: DRIVER_NS | 1, name: 'CREATE_BAD_OUTPUT', attrs: [NEW, RESP], handler: (ctx) => ({ created: ctx.context.provider.createCq(4), out: { 77: 1 } }) });
  };
  const fake = new FakeDevice({}, driver);
  const dev = new Device(fake);
  try {
    const ctx = dev.open();
    fake.takeCalls();
    assert.equal(code(() => ctx.invoke(Obj.CQ, DRIVER_NS | 0, [])), 'EINVAL');
    assert.throws(() => ctx.invoke(Obj.CQ, DRIVER_NS | 1, []), /does not declare as an output/);
    const calls = fake.takeCalls().map((c) => c.split(' ')[0]);
    assert.deepEqual(calls, ['createCq', 'destroyCq', 'createCq', 'destroyCq']);
    assert.deepEqual(ctx.census(), {});
    ctx.close();
  } finally {
    await dev.close();
  }
});
