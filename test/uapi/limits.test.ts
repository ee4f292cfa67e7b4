// Limits are enforced and memory is bounded: every object-count limit a device advertises
// (max_pd, max_cq, max_ah, max_srq, max_qp, max_mr, max_mw) is refused naming the limit one
// object past it, with Linux rxe's errno (EINVAL from its pools, ENOMEM for an MR, whose pool
// allocates: rxe_pool.c), after the call's own argument checks (rxe adds an object to its pool
// after checking them), counted per device across contexts and freed by destroy and by context
// close; sizes past the device's maxima are EINVAL naming the attribute; and queues created
// at the maximum sizes cost nothing until they are filled, so creating many of them cannot
// exhaust the heap.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import {
  Access, QpType, SendFlags, VerbsError, WcStatus, WrOpcode, connectQp, createRxeDevice, RXE_DEFAULT_LIMITS,
  type Context, type CQ, type PD,
} from '../../src/index.js';
import { RxeCq } from '../../src/providers/rxe/cq.js';
import { Ring } from '../../src/providers/rxe/ring.js';
import type { WorkCompletion } from '../../src/abi/types.js';
import { waitCompletions } from '../helpers/pair.js';

const err = (fn: () => unknown): VerbsError => {
  try { fn(); } catch (e) { assert.ok(e instanceof VerbsError, String(e)); return e; }
  throw new Error('no error');
};

/** Create with `make` until refused: the refusal must be rxe's errno naming `limit` and `max`. */
function exhaust<T>(object: string, method: string, limit: string, max: number, make: (i: number) => T): T[] {
  const errno = object === 'MR' ? 'ENOMEM' : 'EINVAL';
  const made: T[] = [];
  for (;;) {
    let e: unknown;
    try { made.push(make(made.length)); } catch (x) { e = x; }
    if (e === undefined) {
      if (made.length > max) assert.fail(`${object}.${method}: ${made.length} created, past ${limit} (${max})`);
      continue;
    }
    assert.ok(e instanceof VerbsError, String(e));
    assert.equal(e.code, errno, e.message);
    assert.equal(e.message, `${errno}: ${object}.${method}: device limit ${limit} (${max}) reached`);
    return made;
  }
}

const LIMITS = { maxPd: 12, maxCq: 10, maxAh: 9, maxSrq: 8, maxQp: 7, maxMr: 11, maxMw: 6 };

test("each object-count limit is refused with rxe's errno naming it, per device across contexts; destroy and close free the count", async () => {
  const dev = await createRxeDevice({ address: '127.0.0.2', port: 0, limits: LIMITS });
  try {
    const c1 = dev.open(), c2 = dev.open();
    const attr = c1.queryDevice();
    assert.deepEqual(
      [attr.maxPd, attr.maxCq, attr.maxAh, attr.maxSrq, attr.maxQp, attr.maxMr, attr.maxMw],
      [LIMITS.maxPd, LIMITS.maxCq, LIMITS.maxAh, LIMITS.maxSrq, LIMITS.maxQp, LIMITS.maxMr, LIMITS.maxMw],
    );
    const gid = c1.queryGid();
    // One PD and one CQ in each context; then the two contexts take turns, so only a
    // per-device count stops them at the limit.
    const base = [c1, c2].map((ctx) => ({ ctx, pd: ctx.allocPd(), cq: ctx.createCq(attr.maxCqe) }));
    const side = (i: number) => base[i % 2]!;

    const pds = exhaust('PD', 'ALLOC', 'max_pd', LIMITS.maxPd, (i) => side(i).ctx.allocPd());
    assert.equal(pds.length + 2, LIMITS.maxPd);
    const cqs = exhaust('CQ', 'CREATE', 'max_cq', LIMITS.maxCq, (i) => side(i).ctx.createCq(attr.maxCqe));
    assert.equal(cqs.length + 2, LIMITS.maxCq);
    const ahs = exhaust('AH', 'CREATE', 'max_ah', LIMITS.maxAh, (i) => side(i).pd.createAh({ grh: { dgid: gid } }));
    assert.equal(ahs.length, LIMITS.maxAh);
    const srqs = exhaust('SRQ', 'CREATE', 'max_srq', LIMITS.maxSrq, (i) => side(i).pd.createSrq({ maxWr: attr.maxSrqWr, maxSge: attr.maxSrqSge }));
    assert.equal(srqs.length, LIMITS.maxSrq);
    const cap = { maxSendWr: attr.maxQpWr, maxRecvWr: attr.maxQpWr, maxSendSge: attr.maxSge, maxRecvSge: attr.maxSge };
    const qps = exhaust('QP', 'CREATE', 'max_qp', LIMITS.maxQp, (i) => side(i).pd.createQp({ qpType: QpType.RC, sendCq: side(i).cq, recvCq: side(i).cq, cap }));
    assert.equal(qps.length, LIMITS.maxQp);
    const mrs = exhaust('MR', 'REG', 'max_mr', LIMITS.maxMr, (i) => side(i).pd.regMr(Buffer.alloc(64), Access.LOCAL_WRITE));
    assert.equal(mrs.length, LIMITS.maxMr);
    const mws = exhaust('MW', 'ALLOC', 'max_mw', LIMITS.maxMw, (i) => side(i).pd.allocMw(2));
    assert.equal(mws.length, LIMITS.maxMw);

    // Destroying one frees its place, for either context; the next past the limit is refused again.
    pds[0]!.dealloc();
    side(1).ctx.allocPd();
    assert.equal(err(() => c1.allocPd()).code, 'EINVAL');
    cqs[1]!.destroy();
    c1.createCq(1);
    assert.equal(err(() => c2.createCq(1)).code, 'EINVAL');
    mws[0]!.dealloc();
    mrs[0]!.dereg();
    base[0]!.pd.allocMw(1);
    base[0]!.pd.regMr(Buffer.alloc(8), 0);
    assert.equal(err(() => base[0]!.pd.allocMw(1)).message, `EINVAL: MW.ALLOC: device limit max_mw (${LIMITS.maxMw}) reached`);
    assert.equal(err(() => base[0]!.pd.regMr(Buffer.alloc(8), 0)).message, `ENOMEM: MR.REG: device limit max_mr (${LIMITS.maxMr}) reached`);
    // At the limit, a call with a bad argument is refused for the argument, as rxe checks
    // arguments before its pool: an MR asking REMOTE_WRITE without LOCAL_WRITE, a CQ too big.
    assert.match(err(() => base[0]!.pd.regMr(Buffer.alloc(8), Access.REMOTE_WRITE)).message, /^EINVAL: MR\.REG attribute 'access_flags'/);
    assert.match(err(() => c1.createCq(attr.maxCqe + 1)).message, /^EINVAL: CQ\.CREATE attribute 'cqe'/);

    // Closing a context frees everything it held: the other context can fill up to the limit again.
    const census2 = c2.census();
    c2.close();
    const morePds = exhaust('PD', 'ALLOC', 'max_pd', LIMITS.maxPd, () => c1.allocPd());
    assert.equal(morePds.length, census2.PD);
    const moreQps = exhaust('QP', 'CREATE', 'max_qp', LIMITS.maxQp, () => base[0]!.pd.createQp({ qpType: QpType.RC, sendCq: base[0]!.cq, recvCq: base[0]!.cq, cap }));
    assert.equal(moreQps.length, census2.QP);

    // Healthy afterwards: free two QPs and move data through a new pair (the device talks to itself).
    moreQps.pop()!.destroy();
    moreQps.pop()!.destroy();
    await loopbackWrite(c1, base[0]!.pd, base[0]!.cq);
  } finally {
    await dev.close();
  }
});

/** A connected RC pair on one device; a WRITE lands byte-exact and completes. */
async function loopbackWrite(ctx: Context, pd: PD, cq: CQ): Promise<void> {
  const cap = { maxSendWr: 16, maxRecvWr: 16 };
  const qa = pd.createQp({ qpType: QpType.RC, sendCq: cq, recvCq: cq, cap });
  const qb = pd.createQp({ qpType: QpType.RC, sendCq: cq, recvCq: cq, cap });
  const gid = ctx.queryGid();
  connectQp(qa, { qpn: qb.qpn, gid, psn: 5 }, { psn: 9, minRnrTimer: 1, timeout: 10 });
  connectQp(qb, { qpn: qa.qpn, gid, psn: 9 }, { psn: 5, minRnrTimer: 1, timeout: 10 });
  const src = randomBytes(10_000), dst = Buffer.alloc(10_000);
  const smr = pd.regMr(src, 0);
  const dmr = pd.regMr(dst, Access.LOCAL_WRITE | Access.REMOTE_WRITE);
  qa.postSend({ wrId: 1, opcode: WrOpcode.RDMA_WRITE, sendFlags: SendFlags.SIGNALED, sgList: [smr.sge()], rdma: { remoteAddr: dmr.addr, rkey: dmr.rkey } });
  const [wc] = await waitCompletions(cq, 1);
  assert.deepEqual([wc!.wrId, wc!.status], [1, WcStatus.SUCCESS]);
  assert.ok(dst.equals(src));
}

test('real default limits: max_cq CQs at max_cqe and max_srq SRQs at max_srq_wr, twice, without exhausting the heap', async () => {
  const dev = await createRxeDevice({ address: '127.0.0.2', port: 0 });
  try {
    const ctx = dev.open();
    const attr = ctx.queryDevice();
    assert.equal(attr.maxCq, RXE_DEFAULT_LIMITS.maxCq);
    assert.equal(attr.maxSrq, RXE_DEFAULT_LIMITS.maxSrq);
    const pd = ctx.allocPd();
    for (let round = 0; round < 2; round++) {
      // Preallocated, these would be 16384 × 2 MiB and 16384 × 128 KiB of slots.
      const cqs: CQ[] = exhaust('CQ', 'CREATE', 'max_cq', attr.maxCq, () => ctx.createCq(attr.maxCqe));
      assert.equal(cqs.length, attr.maxCq);
      const srqs = exhaust('SRQ', 'CREATE', 'max_srq', attr.maxSrq, () => pd.createSrq({ maxWr: attr.maxSrqWr, maxSge: attr.maxSrqSge }));
      assert.equal(srqs.length, attr.maxSrq);
      // Max-size QPs too (up to a few hundred: each has a UDP source port of its own).
      const cap = { maxSendWr: attr.maxQpWr, maxRecvWr: attr.maxQpWr, maxSendSge: attr.maxSge, maxRecvSge: attr.maxSge };
      const qps = Array.from({ length: 200 }, (_, i) => pd.createQp({ qpType: QpType.RC, sendCq: cqs[i]!, recvCq: cqs[i]!, cap }));
      for (const q of qps) q.destroy();
      for (const s of srqs) s.destroy();
      for (const c of cqs) c.destroy();
    }
    // A full-size queue really holds its size: an SRQ takes max_srq_wr receives, then is full.
    const srq = pd.createSrq({ maxWr: attr.maxSrqWr, maxSge: 1 });
    for (let i = 0; i < attr.maxSrqWr; i++) srq.postRecv({ wrId: i, sgList: [] });
    assert.equal(err(() => srq.postRecv({ wrId: -1, sgList: [] })).code, 'ENOMEM');
    assert.equal(srq.query().maxWr, attr.maxSrqWr);
    // And the process is healthy: data still moves.
    const cq = ctx.createCq(64);
    await loopbackWrite(ctx, pd, cq);
  } finally {
    await dev.close();
  }
});

test('sizes past the device maxima are EINVAL naming the attribute and the limit', async () => {
  const dev = await createRxeDevice({ address: '127.0.0.2', port: 0, limits: { maxCqe: 100, maxQpWr: 50, maxSge: 4, maxSrqWr: 30, maxSrqSge: 3 } });
  try {
    const ctx = dev.open();
    const pd = ctx.allocPd();
    let e = err(() => ctx.createCq(101));
    assert.equal(e.message, "EINVAL: CQ.CREATE attribute 'cqe': 101 exceeds the device's max_cqe (100)");
    const cq = ctx.createCq(100);
    e = err(() => cq.resize(101));
    assert.equal(e.message, "EINVAL: CQ.RESIZE attribute 'cqe': 101 exceeds the device's max_cqe (100)");
    const qp = (cap: object) => pd.createQp({ qpType: QpType.RC, sendCq: cq, recvCq: cq, cap: { maxSendWr: 1, maxRecvWr: 1, ...cap } });
    assert.equal(err(() => qp({ maxSendWr: 51 })).message, "EINVAL: QP.CREATE attribute 'cap.max_send_wr': 51 exceeds the device's max_qp_wr (50)");
    assert.equal(err(() => qp({ maxRecvWr: 51 })).message, "EINVAL: QP.CREATE attribute 'cap.max_recv_wr': 51 exceeds the device's max_qp_wr (50)");
    assert.equal(err(() => qp({ maxSendSge: 5 })).message, "EINVAL: QP.CREATE attribute 'cap.max_send_sge': 5 exceeds the device's max_sge (4)");
    assert.equal(err(() => qp({ maxRecvSge: 5 })).message, "EINVAL: QP.CREATE attribute 'cap.max_recv_sge': 5 exceeds the device's max_sge (4)");
    assert.equal(err(() => qp({ maxInlineData: 1025 })).message, "EINVAL: QP.CREATE attribute 'cap.max_inline_data': 1025 exceeds the device's max_inline_data (1024)");
    assert.equal(err(() => pd.createSrq({ maxWr: 31, maxSge: 1 })).message, "EINVAL: SRQ.CREATE attribute 'max_wr': 31 exceeds the device's max_srq_wr (30)");
    assert.equal(err(() => pd.createSrq({ maxWr: 1, maxSge: 4 })).message, "EINVAL: SRQ.CREATE attribute 'max_sge': 4 exceeds the device's max_srq_sge (3)");
    // At the maxima everything is accepted, and a full queue is ENOMEM on post.
    const q = qp({ maxSendWr: 50, maxRecvWr: 50, maxSendSge: 4, maxRecvSge: 4 });
    connectQp(q, { qpn: q.qpn, gid: ctx.queryGid(), psn: 0 }, { psn: 0 });
    for (let i = 0; i < 50; i++) q.postRecv({ wrId: i, sgList: [] });
    assert.equal(err(() => q.postRecv({ wrId: 50, sgList: [] })).code, 'ENOMEM');
    pd.createSrq({ maxWr: 30, maxSge: 3 });
  } finally {
    await dev.close();
  }
});

test('limits given to a device are validated', async () => {
  for (const limits of [{ maxPd: 0 }, { maxPd: 1.5 }, { maxCq: RXE_DEFAULT_LIMITS.maxCq + 1 }, { maxBogus: 3 }, { maxQp: '4' }]) {
    await assert.rejects(createRxeDevice({ address: '127.0.0.2', port: 0, limits: limits as never }), (e: unknown) => {
      assert.ok(e instanceof VerbsError);
      assert.equal(e.code, 'EINVAL');
      assert.match(e.message, /limits/);
      return true;
    });
  }
});

test('a CQ grows on demand and still overflows exactly past cqe (CQ_ERR for each completion lost, as rxe_cq_post; nothing lost before it)', () => {
  const wc = (i: number) => ({ wrId: i, status: 0, opcode: 0, vendorErr: 0, byteLen: 0, qpNum: 1, srcQp: 0, wcFlags: 0, pkeyIndex: 0, slid: 0, sl: 0, dlidPathBits: 0 }) as WorkCompletion;
  let overflows = 0;
  const cq = new RxeCq(1000, () => overflows++);
  // Interleave pushes and polls so the ring wraps while it grows.
  let next = 0, expect = 0;
  for (let round = 0; round < 20; round++) {
    for (let i = 0; i < 37 * round && cq.count < 1000; i++) cq.push(wc(next++), false);
    for (const c of cq.poll(11 * round)) assert.equal(c.wrId, expect++);
  }
  while (cq.count < 1000) assert.equal(cq.push(wc(next++), false), true);
  assert.equal(overflows, 0);
  assert.equal(cq.push(wc(next++), false), false, 'not queued (rxe_cq_post: -EBUSY)');
  cq.push(wc(next++), false);
  assert.equal(overflows, 2, 'a CQ_ERR for each completion the full CQ lost');
  const rest = cq.poll(5000);
  assert.equal(rest.length, 1000);
  rest.forEach((c) => assert.equal(c.wrId, expect++));
  // Resize keeps the order and the bound.
  const cq2 = new RxeCq(40, () => overflows++);
  for (let i = 0; i < 30; i++) cq2.push(wc(i), false);
  cq2.poll(10);
  assert.throws(() => cq2.resize(19, 31), (e: unknown) => (e as { code?: string; attr?: string }).code === 'EINVAL' && (e as { attr?: string }).attr === 'cqe');
  cq2.resize(25, 25);
  assert.equal(cq2.cqe, 25);
  for (let i = 30; i < 35; i++) cq2.push(wc(i), false);
  assert.equal(overflows, 2);
  cq2.push(wc(35), false);
  assert.equal(overflows, 3);
  assert.deepEqual(cq2.poll(100).map((c) => c.wrId), Array.from({ length: 25 }, (_, i) => i + 10));
});

test('Ring: lazily sized, FIFO through growth and wrap-around, bounded by its capacity', () => {
  const r = new Ring<number>(100_000);
  assert.ok(r.allocated <= 16, 'nothing preallocated for the capacity');
  let pushed = 0, shifted = 0;
  for (let round = 0; round < 50; round++) {
    for (let i = 0; i < 300; i++) r.push(pushed++);
    for (let i = 0; i < 250; i++) assert.equal(r.shift(), shifted++);
    assert.equal(r.at(0), shifted);
    assert.equal(r.at(r.length - 1), pushed - 1);
    assert.equal(r.at(r.length), undefined);
  }
  assert.ok(r.allocated < 2 * r.length + 32, `${r.allocated} slots for ${r.length} entries`);
  const small = new Ring<number>(5);
  for (let i = 0; i < 5; i++) small.push(i);
  assert.ok(small.full);
  assert.throws(() => small.push(5), RangeError);
  assert.deepEqual(small.clear(), [0, 1, 2, 3, 4]);
  // A 0-entry ring (a QP's empty send or receive queue) is always full.
  const none = new Ring<number>(0);
  assert.deepEqual([none.capacity, none.full], [0, true]);
  assert.throws(() => none.push(0), RangeError);
});
