// The uapi's own rules, on a provider with no network (test/helpers/fake-provider.ts):
// handles and their lifetimes, EBUSY on a parent with children, context close destroying
// children before parents, per-device limits, and the dispatcher's checks of declared
// inputs and outputs.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { A, Access, Attr, Device, M, Obj, DRIVER_NS, QpState, QpType, VerbsError } from '../../src/index.js';
import { mandatory, out, uint } from '../../src/uapi/attrs.js';
import { UapiInternalError } from '../../src/uapi/errors.js';
import type { CompChannelImpl } from '../../src/uapi/objects/index.js';
import type { DriverRegistrar } from '../../src/uapi/registry.js';
import type { MethodContext } from '../../src/uapi/spec.js';
import { FakeDevice, type FakeLimits, type FakeMr } from '../helpers/fake-provider.js';

const err = (fn: () => unknown): VerbsError => {
  try { fn(); } catch (e) { assert.ok(e instanceof VerbsError, String(e)); return e; }
  throw new Error('no error');
};

/** A Device over a fresh FakeDevice; `use` runs with it open, and it is closed after. */
async function withFake(use: (dev: Device, fake: FakeDevice) => void | Promise<void>, limits: FakeLimits = {}, driver?: (r: DriverRegistrar) => void) {
  const fake = new FakeDevice(limits, driver);
  const dev = new Device(fake);
  try {
    await use(dev, fake);
  } finally {
    await dev.close();
  }
}

test('fake provider: handles count up, are never reused, and a stale or mistyped handle names nothing', () => withFake((dev) => {
  const ctx = dev.open();
  const pd = ctx.allocPd();
  const cq = ctx.createCq(8);
  assert.ok(cq.handle > pd.handle);
  pd.dealloc();
  const pd2 = ctx.allocPd();
  assert.ok(pd2.handle > cq.handle, 'a freed handle is not given out again');
  let e = err(() => pd.dealloc());
  assert.equal(e.message, `ENOENT: PD.DEALLOC attribute 'pd_handle': no live object with handle ${pd.handle}`);
  e = err(() => ctx.invoke(Obj.PD, M.PD.DEALLOC, { [Attr.PD.DEALLOC.HANDLE]: cq.handle }));
  assert.equal(e.message, `EINVAL: PD.DEALLOC attribute 'pd_handle': handle ${cq.handle} is a CQ, not a PD`);
  e = err(() => ctx.invoke(Obj.PD, M.PD.DEALLOC, { [Attr.PD.DEALLOC.HANDLE]: 'x' }));
  assert.equal(e.message, "EINVAL: PD.DEALLOC attribute 'pd_handle': a handle must be an integer");
  assert.deepEqual(ctx.census(), { CQ: 1, PD: 1 });
}));

test('fake provider: a parent with live children is EBUSY until they go; MR.REREG moves the PD hold', () => withFake((dev, fake) => {
  const ctx = dev.open();
  const pd = ctx.allocPd();
  const channel = ctx.createCompChannel();
  const cq = ctx.createCq(8, { channel });
  const srq = pd.createSrq({ maxWr: 4, maxSge: 1 });
  const qp = pd.createQp({ qpType: QpType.RC, sendCq: cq, recvCq: cq, srq, cap: { maxSendWr: 4 } });
  const mr = pd.regMr(new Uint8Array(64), Access.LOCAL_WRITE);
  const busy = (fn: () => unknown) => err(fn).code;
  assert.equal(busy(() => pd.dealloc()), 'EBUSY');
  assert.equal(busy(() => cq.destroy()), 'EBUSY');
  assert.equal(busy(() => srq.destroy()), 'EBUSY');
  assert.equal(busy(() => channel.destroy()), 'EBUSY');
  assert.equal(err(() => pd.dealloc()).message, `EBUSY: PD.DEALLOC attribute 'pd_handle': PD ${pd.handle} is in use by 3 other object(s)`);
  qp.destroy();
  srq.destroy();
  cq.destroy();
  channel.destroy();
  // A provider's own reason (bound memory windows) carries its errno: rxe_dereg_mr's EINVAL; REREG's is EBUSY.
  const impl = ctx.impl<FakeMr>(mr.handle);
  impl.boundMwCount = 1;
  assert.equal(err(() => mr.dereg()).message, `EINVAL: MR.DEREG attribute 'mr_handle': MR has 1 memory window(s) bound`);
  assert.equal(err(() => mr.rereg({ access: 0 })).message, `EBUSY: MR.REREG attribute 'mr_handle': MR has 1 memory window(s) bound`);
  impl.boundMwCount = 0;
  const pd2 = ctx.allocPd();
  mr.rereg({ pd: pd2 });
  pd.dealloc(); // the MR's hold moved to pd2
  assert.equal(busy(() => pd2.dealloc()), 'EBUSY');
  mr.dereg();
  pd2.dealloc();
  assert.equal(ctx.uapi.objectCount, 0);
  // Nothing reached the provider for a refused destroy.
  const ops = fake.takeCalls().filter((c) => /^(dealloc|destroy|dereg)/.test(c)).map((c) => c.split(' ')[0]);
  assert.deepEqual(ops, ['destroyQp', 'destroySrq', 'destroyCq', 'deallocPd', 'deregMr', 'deallocPd']);
}));

test('fake provider: closing a context destroys every object, each child before its parents', () => withFake((dev, fake) => {
  const ctx = dev.open();
  const pd = ctx.allocPd();
  const channel = ctx.createCompChannel();
  const cq = ctx.createCq(8, { channel });
  const srq = pd.createSrq({ maxWr: 4, maxSge: 1 });
  const qp = pd.createQp({ qpType: QpType.UD, sendCq: cq, recvCq: cq, srq, cap: { maxSendWr: 4 } });
  const ah = pd.createAh({ grh: { dgid: ctx.queryGid() } });
  const mw = pd.allocMw(2);
  const mr = pd.regMr(new Uint8Array(64), Access.LOCAL_WRITE);
  // A parent made after the others (a second PD) goes after its own child, whatever the order.
  const late = ctx.allocPd();
  const lateMr = late.regMr(new Uint8Array(8), 0);
  const parentOf: Array<[{ handle: number }, { handle: number }]> = [
    [qp, cq], [qp, srq], [qp, pd], [srq, pd], [ah, pd], [mw, pd], [mr, pd], [lateMr, late],
  ];
  const impls = new Map(parentOf.flat().map((w) => [w, ctx.impl<object>(w.handle)]));
  fake.takeCalls();
  // The channel is the uapi's own object: note how many provider calls came before it closed.
  let channelClosedAfter = -1;
  ctx.impl<CompChannelImpl>(channel.handle).once('close', () => { channelClosedAfter = fake.calls.length; });
  let channelClosed = false;
  const waiting = channel.getCqEvent().catch((e: VerbsError) => { channelClosed = e.code === 'EBADF'; });
  ctx.close();
  // Nine provider objects (the channel is the uapi's own), each destroyed once, then the context.
  const calls = [...fake.calls];
  const seen = fake.takeCalls().join(', ');
  assert.equal(calls.length, 10, seen);
  assert.equal(calls.at(-1)!.op, 'closeContext');
  const when = (w: { handle: number }) => calls.findIndex((c) => c.obj === impls.get(w));
  for (const [child, parent] of parentOf) {
    assert.ok(when(child) >= 0 && when(child) < when(parent), `handle ${child.handle} before ${parent.handle}: ${seen}`);
  }
  assert.ok(channelClosedAfter > when(cq), 'the CQ goes before its channel');
  assert.equal(ctx.uapi.objectCount, 0);
  // A closed context takes no more calls, and closing again does nothing.
  assert.equal(err(() => ctx.allocPd()).message, 'EBADF: PD.ALLOC: the context is closed');
  ctx.close();
  return waiting.then(() => assert.ok(channelClosed, 'a waiter on a destroyed channel is rejected'));
}));

test('fake provider: a destroy the provider fails leaves the object live; a close goes on past it and reports it', () => withFake((dev, fake) => {
  const ctx = dev.open();
  const pd = ctx.allocPd();
  const mr = pd.regMr(new Uint8Array(64), Access.LOCAL_WRITE);
  fake.failNext = 'deregMr';
  assert.throws(() => mr.dereg(), /fake deregMr failed/);
  // As uverbs keeps a uobject whose destroy failed: the handle still works and still pins the PD.
  assert.deepEqual(ctx.census(), { MR: 1, PD: 1 });
  assert.equal(err(() => pd.dealloc()).code, 'EBUSY');
  mr.dereg();
  pd.dealloc();
  assert.equal(ctx.uapi.objectCount, 0);

  // At close, a failing destroy does not stop the rest: everything goes, the provider context
  // is closed, and the first failure comes out of close().
  const other = dev.open();
  const pd2 = other.allocPd();
  pd2.regMr(new Uint8Array(8), 0);
  other.createCq(4);
  fake.takeCalls();
  fake.failNext = 'deregMr';
  assert.throws(() => other.close(), /fake deregMr failed/);
  assert.deepEqual(fake.takeCalls().map((c) => c.split(' ')[0]), ['destroyCq', 'deallocPd', 'closeContext']);
  assert.equal(other.uapi.objectCount, 0);
  assert.equal(err(() => other.allocPd()).code, 'EBADF');

  // A device close goes on past a context that fails to close, and reports it after.
  const third = dev.open();
  third.allocPd();
  fake.failNext = 'deallocPd';
  const fourth = dev.open();
  fourth.createCq(4);
  fake.takeCalls();
  return dev.close().then(() => assert.fail('close should report the failure'), (e: Error) => {
    assert.match(e.message, /fake deallocPd failed/);
    assert.deepEqual(fake.takeCalls().map((c) => c.split(' ')[0]).sort(), ['closeContext', 'closeContext', 'closeContext', 'destroyCq'].sort());
  });
}));

test('fake provider: object-count limits are per device, across contexts, freed by destroy and close', () => withFake((dev) => {
  const c1 = dev.open(), c2 = dev.open();
  const pds = [c1.allocPd(), c2.allocPd(), c1.allocPd()];
  assert.equal(err(() => c2.allocPd()).message, 'EINVAL: PD.ALLOC: device limit max_pd (3) reached');
  pds[0]!.dealloc();
  const again = c2.allocPd();
  assert.equal(err(() => c1.allocPd()).code, 'EINVAL');
  c2.close(); // frees `again` and pds[1]
  c1.allocPd();
  c1.allocPd();
  assert.equal(err(() => c1.allocPd()).code, 'EINVAL');
  assert.ok(again.handle > 0);
  // Sizes past the device's maxima are EINVAL naming the attribute and the limit.
  assert.equal(err(() => c1.createCq(33)).message, "EINVAL: CQ.CREATE attribute 'cqe': 33 exceeds the device's max_cqe (32)");
}, { maxPd: 3, maxCqe: 32 }));

test('fake provider: per-method outputs come back under their RESP_ ids; the old flat ids still work as inputs', () => withFake((dev) => {
  const ctx = dev.open();
  const pd = ctx.allocPd();
  const a = Attr.MR.REG;
  const mrOut = ctx.invoke(Obj.MR, M.MR.REG, { [a.PD_HANDLE]: pd.handle, [a.MEMORY]: new Uint8Array(16), [a.ACCESS_FLAGS]: Access.LOCAL_WRITE | Access.REMOTE_WRITE, [a.IOVA]: 0x4000 });
  assert.equal(mrOut[a.RESP_IOVA], 0x4000);
  assert.equal(typeof mrOut[a.RESP_LKEY], 'number');
  assert.notEqual(mrOut[a.RESP_RKEY], 0);
  assert.equal(typeof mrOut[a.HANDLE], 'number');
  assert.deepEqual(Object.keys(mrOut).map(Number).sort((x, y) => x - y), [a.HANDLE, a.RESP_LKEY, a.RESP_RKEY, a.RESP_IOVA]);
  // Code written against the deprecated flat table A gives the same inputs.
  const legacy = ctx.invoke(Obj.MR, M.MR.REG, { [A.PD]: pd.handle, [A.MEM]: new Uint8Array(16), [A.ACCESS]: 0 });
  assert.equal(typeof legacy[A.HANDLE], 'number');
  const cqOut = ctx.invoke(Obj.CQ, M.CQ.CREATE, { [Attr.CQ.CREATE.CQE]: 5 });
  assert.equal(cqOut[Attr.CQ.CREATE.RESP_CQE], 5);
  const cq = cqOut[Attr.CQ.CREATE.HANDLE] as number;
  const resized = ctx.invoke(Obj.CQ, M.CQ.RESIZE, { [Attr.CQ.RESIZE.HANDLE]: cq, [Attr.CQ.RESIZE.CQE]: 9 });
  assert.equal(resized[Attr.CQ.RESIZE.RESP_CQE], 9);
  const q = Attr.QP.CREATE;
  const qpOut = ctx.invoke(Obj.QP, M.QP.CREATE, { [q.PD_HANDLE]: pd.handle, [q.QP_TYPE]: QpType.RC, [q.SEND_CQ]: cq, [q.RECV_CQ]: cq, [q.CAP]: { maxSendWr: 2, maxRecvWr: 3 } });
  assert.deepEqual(qpOut[q.RESP_CAP], { maxSendWr: 2, maxRecvWr: 3, maxSendSge: 1, maxRecvSge: 1, maxInlineData: 0 });
  assert.equal(typeof qpOut[q.RESP_QP_NUM], 'number');
  const qp = qpOut[q.HANDLE] as number;
  assert.equal((ctx.invoke(Obj.QP, M.QP.QUERY, { [Attr.QP.QUERY.HANDLE]: qp })[Attr.QP.QUERY.RESP_ATTR] as { qpState: number }).qpState, QpState.RESET);
  assert.equal(ctx.invoke(Obj.DEVICE, M.DEVICE.QUERY_PKEY, { [Attr.DEVICE.QUERY_PKEY.PORT_NUM]: 1, [Attr.DEVICE.QUERY_PKEY.INDEX]: 0 })[Attr.DEVICE.QUERY_PKEY.RESP_PKEY], 0xffff);
}));

test('fake provider: an output id given as an input is EINVAL naming the attribute', () => withFake((dev) => {
  const ctx = dev.open();
  const pd = ctx.allocPd();
  const a = Attr.MR.REG;
  const base = { [a.PD_HANDLE]: pd.handle, [a.MEMORY]: new Uint8Array(16), [a.ACCESS_FLAGS]: 0 };
  assert.equal(err(() => ctx.invoke(Obj.MR, M.MR.REG, { ...base, [a.RESP_LKEY]: 1 })).message, "EINVAL: MR.REG attribute 'lkey': is an output and cannot be given");
  assert.equal(err(() => ctx.invoke(Obj.MR, M.MR.REG, { ...base, [a.RESP_IOVA]: 1 })).message, "EINVAL: MR.REG attribute 'resp_iova': is an output and cannot be given");
  assert.equal(err(() => ctx.invoke(Obj.MR, M.MR.REG, { ...base, [a.HANDLE]: 1 })).message, "EINVAL: MR.REG attribute 'mr_handle': is an output and cannot be given");
  assert.equal(err(() => ctx.invoke(Obj.CQ, M.CQ.CREATE, { [Attr.CQ.CREATE.CQE]: 4, [Attr.CQ.CREATE.RESP_CQE]: 4 })).attr, 'resp_cqe');
}));

test('fake provider: a method that sets, returns or reads an attribute it does not declare is an internal error', () => {
  const X = DRIVER_NS | 1, Y = DRIVER_NS | 2;
  const READ = { n: mandatory(uint(X, 'n')) };
  const OTHER = { m: uint(Y, 'm'), res: out<number>(Y, 'res') };
  const driver = (r: DriverRegistrar) => {
    r.defineMethod(Obj.DEVICE, { id: DRIVER_NS | 0, name: 'RETURNS_UNDECLARED', attrs: Object.values(READ), handler: () => ({ out: { 7: 1 } }) });
    r.defineMethod(Obj.DEVICE, { id: DRIVER_NS | 1, name: 'RETURNS_AN_INPUT', attrs: Object.values(READ), handler: () => ({ out: { [X]: 1 } }) });
    r.defineMethod(Obj.DEVICE, { id: DRIVER_NS | 2, name: 'SETS_UNDECLARED', attrs: Object.values(READ), handler: (ctx) => ctx.set(OTHER.res, 1) });
    r.defineMethod(Obj.DEVICE, { id: DRIVER_NS | 3, name: 'READS_UNDECLARED', attrs: Object.values(READ), handler: (ctx) => { ctx.get(OTHER.m); } });
    r.defineMethod(Obj.DEVICE, { id: DRIVER_NS | 4, name: 'FINE', attrs: Object.values(READ), handler: (ctx) => { ctx.get(READ.n); } });
  };
  return withFake((dev) => {
    const ctx = dev.open();
    const internal = (method: number, message: RegExp) => assert.throws(() => ctx.invoke(Obj.DEVICE, method, { [X]: 1 }), (e: unknown) => e instanceof UapiInternalError && message.test(e.message));
    internal(DRIVER_NS | 0, /^softrdma internal error: DEVICE\.RETURNS_UNDECLARED returned attribute id 7, which it does not declare as an output$/);
    internal(DRIVER_NS | 1, /RETURNS_AN_INPUT returned attribute id 4097, which it does not declare as an output/);
    internal(DRIVER_NS | 2, /SETS_UNDECLARED sets attribute 'res' \(id 4098\), which it does not declare/);
    internal(DRIVER_NS | 3, /READS_UNDECLARED reads attribute 'm' \(id 4098\), which it does not declare/);
    assert.deepEqual(ctx.invoke(Obj.DEVICE, DRIVER_NS | 4, { [X]: 1 }), {});
  }, {}, driver);
});

test('typed getters: the declared type is what a handler gets, and a wrong one does not compile', () => {
  const SPEC = { n: mandatory(uint(1, 'n')), maybe: uint(2, 'maybe'), res: out<number>(3, 'res') };
  // Type checks only (this test is compiled; the function is never called).
  const handler = (ctx: MethodContext) => {
    const n: number = ctx.get(SPEC.n);
    // @ts-expect-error an optional attribute may be absent
    const m: number = ctx.get(SPEC.maybe);
    const ok: number | undefined = ctx.get(SPEC.maybe);
    // @ts-expect-error an output takes its declared type
    ctx.set(SPEC.res, 'one');
    // @ts-expect-error an output is not read
    ctx.get(SPEC.res);
    ctx.set(SPEC.res, n + (m ?? 0) + (ok ?? 0));
  };
  assert.equal(typeof handler, 'function');
});
