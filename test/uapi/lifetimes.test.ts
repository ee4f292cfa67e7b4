import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { Access, QpAttr, QpState, QpType, VerbsError, createRxeDevice, Obj, M, A, DRIVER_NS } from '../../src/index.js';
import { checkTransition, requiredAttrs, optionalAttrs, isValidTransition } from '../../src/uapi/qp-transitions.js';

const code = (fn: () => unknown) => { try { fn(); } catch (e) { assert.ok(e instanceof VerbsError, String(e)); return e.code; } return 'no error'; };

test('a parent with live children is EBUSY; closing the context frees everything', async () => {
  const dev = await createRxeDevice({ address: '127.0.0.2', port: 0 });
  try {
    const ctx = dev.open();
    const pd = ctx.allocPd();
    const cq = ctx.createCq(16);
    const mr = pd.regMr(Buffer.alloc(4096), Access.LOCAL_WRITE | Access.MW_BIND);
    const qp = pd.createQp({ qpType: QpType.RC, sendCq: cq, recvCq: cq, cap: { maxSendWr: 4, maxRecvWr: 4 } });
    assert.equal(code(() => pd.dealloc()), 'EBUSY');
    assert.equal(code(() => cq.destroy()), 'EBUSY');
    qp.destroy();
    cq.destroy();
    assert.equal(code(() => pd.dealloc()), 'EBUSY'); // the MR still holds it
    const pd2 = ctx.allocPd();
    mr.rereg({ pd: pd2 });
    pd.dealloc(); // the hold moved to pd2
    assert.equal(code(() => pd2.dealloc()), 'EBUSY');
    // A destroyed handle names nothing, and handles are never reused.
    assert.equal(code(() => pd.dealloc()), 'ENOENT');
    const again = ctx.allocPd();
    assert.ok(again.handle > pd2.handle);
    ctx.createCompChannel();
    pd2.createAh({ grh: { dgid: ctx.queryGid() } });
    pd2.allocMw(2);
    pd2.createSrq({ maxWr: 4, maxSge: 1 });
    assert.ok(ctx.uapi.objectCount > 5);
    ctx.close();
    assert.equal(ctx.uapi.objectCount, 0);
  } finally {
    await dev.close();
  }
});

test('the dispatcher names the object, method and attribute at fault', async () => {
  const dev = await createRxeDevice({ address: '127.0.0.2', port: 0 });
  try {
    const ctx = dev.open();
    const pd = ctx.allocPd();
    const err = (fn: () => unknown) => { try { fn(); } catch (e) { return e as VerbsError; } throw new Error('no error'); };
    let e = err(() => pd.regMr(Buffer.alloc(16), Access.REMOTE_WRITE));
    assert.equal(e.code, 'EINVAL');
    assert.match(e.message, /MR\.REG attribute 'access_flags'.*LOCAL_WRITE/);
    e = err(() => pd.regMr(Buffer.alloc(16), 1 << 9));
    assert.match(e.message, /unknown flag bits 0x200/);
    e = err(() => ctx.invoke(Obj.MR, M.MR.REG, { [A.PD]: pd.handle, [A.ACCESS]: 0 }));
    assert.equal(e.code, 'EINVAL');
    assert.equal(e.attr, 'memory');
    e = err(() => ctx.invoke(Obj.PD, M.PD.ALLOC, [{ id: 99, value: 1, mandatory: true }]));
    assert.equal(e.code, 'EPROTONOSUPPORT');
    assert.doesNotThrow(() => ctx.invoke(Obj.PD, M.PD.ALLOC, [{ id: 99, value: 1, mandatory: false }]));
    const cq = ctx.createCq(4);
    e = err(() => ctx.invoke(Obj.PD, M.PD.DEALLOC, { [A.HANDLE]: cq.handle }));
    assert.equal(e.code, 'EINVAL');
    assert.match(e.message, /is a CQ, not a PD/);
    e = err(() => ctx.invoke(Obj.QP, 77, {}));
    assert.equal(e.code, 'EPROTONOSUPPORT');
    e = err(() => ctx.createCq(0));
    assert.equal(e.attr, 'cqe');
    e = err(() => pd.createQp({ qpType: 9, sendCq: cq, recvCq: cq, cap: { maxSendWr: 1, maxRecvWr: 1 } }));
    assert.equal(e.attr, 'qp_type');
    // A failed create leaves nothing behind.
    const before = ctx.uapi.objectCount;
    assert.equal(code(() => pd.createQp({ qpType: QpType.RC, sendCq: cq, recvCq: cq, cap: { maxSendWr: 1e9, maxRecvWr: 1 } })), 'EINVAL');
    assert.equal(ctx.uapi.objectCount, before);
    cq.destroy();
    assert.equal(code(() => pd.dealloc()), 'no error');
  } finally {
    await dev.close();
  }
});

test('a provider may only register in its driver namespace', async () => {
  const { createRegistry } = await import('../../src/uapi/objects/index.js');
  const r = createRegistry();
  assert.throws(() => r.driver().defineMethod(Obj.QP, { id: 5, name: 'X', attrs: [], handler: () => {} }), /driver namespace/);
  assert.doesNotThrow(() => r.driver().defineMethod(Obj.QP, { id: DRIVER_NS | 5, name: 'X', attrs: [], handler: () => {} }));
  assert.throws(() => r.defineMethod(Obj.QP, { id: M.QP.CREATE, name: 'again', attrs: [], handler: () => {} }), /already defined/);
});

test('modify_qp follows the IBTA table: exactly required ∪ optional, per transition and type', () => {
  const states = [0, 1, 2, 3, 4, 5, 6];
  const types = [QpType.RC, QpType.UC, QpType.UD];
  fc.assert(fc.property(fc.constantFrom(...types), fc.constantFrom(...states), fc.constantFrom(...states), fc.integer({ min: 0, max: (1 << 21) - 1 }), (t, cur, next, rnd) => {
    const mask = (rnd | QpAttr.STATE) & ~QpAttr.CUR_STATE;
    const r = checkTransition(t, cur, next, mask);
    if (!isValidTransition(cur, next)) return assert.equal(r.ok, false);
    const req = requiredAttrs(t, cur, next), opt = optionalAttrs(t, cur, next);
    const expectOk = (mask & req) === req && (mask & ~(req | opt | QpAttr.STATE)) === 0;
    assert.equal(r.ok, expectOk);
    // The minimal call always passes.
    assert.equal(checkTransition(t, cur, next, req | QpAttr.STATE).ok, true);
  }), { numRuns: 2000 });
  const rcRtr = requiredAttrs(QpType.RC, QpState.INIT, QpState.RTR);
  assert.equal(rcRtr, QpAttr.AV | QpAttr.PATH_MTU | QpAttr.DEST_QPN | QpAttr.RQ_PSN | QpAttr.MAX_DEST_RD_ATOMIC | QpAttr.MIN_RNR_TIMER);
  assert.equal(requiredAttrs(QpType.RC, QpState.RTR, QpState.RTS), QpAttr.TIMEOUT | QpAttr.RETRY_CNT | QpAttr.RNR_RETRY | QpAttr.SQ_PSN | QpAttr.MAX_QP_RD_ATOMIC);
  assert.equal(isValidTransition(QpState.RESET, QpState.RTS), false);
});

test('modify_qp through the API rejects missing and extra attributes with their names', async () => {
  const dev = await createRxeDevice({ address: '127.0.0.2', port: 0 });
  try {
    const ctx = dev.open();
    const pd = ctx.allocPd();
    const cq = ctx.createCq(4);
    const qp = pd.createQp({ qpType: QpType.RC, sendCq: cq, recvCq: cq, cap: { maxSendWr: 1, maxRecvWr: 1 } });
    assert.throws(() => qp.modify({ qpState: QpState.INIT, pkeyIndex: 0, portNum: 1 }, QpAttr.STATE | QpAttr.PKEY_INDEX | QpAttr.PORT), /requires ACCESS_FLAGS/);
    assert.throws(() => qp.modify({ qpState: QpState.INIT, pkeyIndex: 0, portNum: 1, qpAccessFlags: 0, qkey: 1 }, QpAttr.STATE | QpAttr.PKEY_INDEX | QpAttr.PORT | QpAttr.ACCESS_FLAGS | QpAttr.QKEY), /does not allow QKEY/);
    assert.throws(() => qp.modify({ qpState: QpState.RTS }, QpAttr.STATE), /RESET->RTS is not a valid transition/);
    assert.throws(() => qp.modify({ qpState: QpState.INIT, pkeyIndex: 0, portNum: 2, qpAccessFlags: 0 }, QpAttr.STATE | QpAttr.PKEY_INDEX | QpAttr.PORT | QpAttr.ACCESS_FLAGS), /attribute 'port_num'/);
    assert.equal(qp.state, QpState.RESET); // nothing half-done
    qp.modify({ qpState: QpState.INIT, pkeyIndex: 0, portNum: 1, qpAccessFlags: 0 }, QpAttr.STATE | QpAttr.PKEY_INDEX | QpAttr.PORT | QpAttr.ACCESS_FLAGS);
    assert.equal(qp.query().qpState, QpState.INIT);
  } finally {
    await dev.close();
  }
});
