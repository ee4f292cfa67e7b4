// Error messages name the attribute at fault once (in the site prefix), in one naming style:
// libibverbs' and the uapi's snake_case names (cap.max_send_wr, path_mtu, sg_list), never the
// JavaScript field names (cap.maxSendWr, pathMtu, sgList).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Access, Attr, M, Obj, QpAttr, QpState, QpType, SendFlags, SrqAttr, VerbsError, WrOpcode } from '../../src/index.js';
import { makePair } from '../helpers/pair.js';
import { caught } from '../helpers/uapi.js';

test('every error names its attribute once, snake_case', async () => {
  const { a, close } = await makePair(QpType.RC, { cap: { maxSendSge: 1, maxRecvSge: 1, maxInlineData: 8 } });
  try {
    const { ctx, pd, cq, qp } = a;
    const mr = pd.regMr(Buffer.alloc(4096), Access.LOCAL_WRITE);
    const fresh = pd.createQp({ qpType: QpType.RC, sendCq: cq, recvCq: cq, cap: { maxSendWr: 1, maxRecvWr: 1 } });
    const cases: Array<[string, () => unknown]> = [
      ['access_flags', () => pd.regMr(Buffer.alloc(8), Access.REMOTE_WRITE)],
      ['cqe', () => ctx.createCq(1 << 30)],
      ['cap.max_send_wr', () => pd.createQp({ qpType: QpType.RC, sendCq: cq, recvCq: cq, cap: { maxSendWr: ctx.queryDevice().maxQpWr + 1, maxRecvWr: 1 } })],
      ['cap.max_recv_wr', () => pd.createQp({ qpType: QpType.RC, sendCq: cq, recvCq: cq, cap: { maxSendWr: 1 } } as never)],
      ['cap.max_send_sge', () => pd.createQp({ qpType: QpType.RC, sendCq: cq, recvCq: cq, cap: { maxSendWr: 1, maxRecvWr: 1, maxSendSge: -1 } })],
      ['port_num', () => fresh.modify({ qpState: QpState.INIT, pkeyIndex: 0, portNum: 2, qpAccessFlags: 0 }, QpAttr.STATE | QpAttr.PKEY_INDEX | QpAttr.PORT | QpAttr.ACCESS_FLAGS)],
      ['pkey_index', () => fresh.modify({ qpState: QpState.INIT, pkeyIndex: 7, portNum: 1, qpAccessFlags: 0 }, QpAttr.STATE | QpAttr.PKEY_INDEX | QpAttr.PORT | QpAttr.ACCESS_FLAGS)],
      ['qp_access_flags', () => fresh.modify({ qpState: QpState.INIT, pkeyIndex: 0, portNum: 1, qpAccessFlags: 1 << 12 }, QpAttr.STATE | QpAttr.PKEY_INDEX | QpAttr.PORT | QpAttr.ACCESS_FLAGS)],
      ['sg_list', () => qp.postSend({ wrId: 1, opcode: WrOpcode.SEND, sgList: [mr.sge(0, 1), mr.sge(1, 1)] })],
      // max_inline_data 8 with one SGE is 16 (rxe sizes a send WQE for max(16 * max_send_sge, max_inline_data)).
      ['send_flags', () => qp.postSend({ wrId: 1, opcode: WrOpcode.SEND, sendFlags: SendFlags.INLINE, sgList: [mr.sge(0, 17)] })],
      ['rdma', () => qp.postSend({ wrId: 1, opcode: WrOpcode.RDMA_WRITE, sgList: [mr.sge(0, 1)] })],
      ['sg_list', () => qp.postRecv({ wrId: 1, sgList: [mr.sge(0, 1), mr.sge(1, 1)] })],
      ['max_wr', () => pd.createSrq({ maxWr: 1 << 30, maxSge: 1 })],
      ['ah_attr', () => pd.createAh({ grh: { dgid: new Uint8Array(4) } })],
    ];
    for (const [attr, fn] of cases) {
      const e = caught(fn);
      assert.equal(e.attr, attr, e.message);
      assert.match(attr, /^[a-z0-9_.]+$/);
      const named = e.message.split(`'${attr}'`).length - 1;
      assert.equal(named, 1, `names '${attr}' once: ${e.message}`);
      const bare = attr.split('.').pop()!;
      const mentions = e.message.match(new RegExp(`\\b${bare}\\b`, 'g'))?.length ?? 0;
      assert.equal(mentions, 1, `mentions ${bare} once: ${e.message}`);
      assert.doesNotMatch(e.message, /\b[a-z]+[A-Z][A-Za-z]*\b/, `no camelCase field names: ${e.message}`);
    }
  } finally {
    await close();
  }
});

test('a flag word must be a u32 integer: 2**32 + bits, NaN, fractions and negatives are EINVAL naming it', async () => {
  const { a, close } = await makePair(QpType.RC);
  try {
    const { ctx, pd, cq } = a;
    const fresh = pd.createQp({ qpType: QpType.RC, sendCq: cq, recvCq: cq, cap: { maxSendWr: 1, maxRecvWr: 1 } });
    const srq = pd.createSrq({ maxWr: 4, maxSge: 1 });
    const mr = pd.regMr(Buffer.alloc(8), Access.LOCAL_WRITE);
    const INIT = QpAttr.STATE | QpAttr.PKEY_INDEX | QpAttr.PORT | QpAttr.ACCESS_FLAGS;
    const toInit = { qpState: QpState.INIT, pkeyIndex: 0, portNum: 1 };
    for (const bad of [2 ** 32 + Access.LOCAL_WRITE, 2 ** 32, 1.5, NaN, -1, Infinity]) {
      const cases: Array<[string, () => unknown]> = [
        ['access_flags', () => pd.regMr(Buffer.alloc(8), bad)],
        ['access_flags', () => mr.rereg({ access: bad })],
        ['qp_access_flags', () => fresh.modify({ ...toInit, qpAccessFlags: bad }, INIT)],
        ['attr_mask', () => fresh.modify({ ...toInit, qpAccessFlags: 0 }, bad)],
        ['attr_mask', () => srq.modify({ srqLimit: 1 }, bad)],
        ['flags', () => ctx.invoke(Obj.MR, M.MR.REREG, { [Attr.MR.REREG.HANDLE]: mr.handle, [Attr.MR.REREG.FLAGS]: bad, [Attr.MR.REREG.ACCESS_FLAGS]: Access.LOCAL_WRITE })],
      ];
      for (const [attr, fn] of cases) {
        const e = caught(fn);
        assert.deepEqual([e.code, e.attr], ['EINVAL', attr], `${String(bad)}: ${e.message}`);
      }
    }
    // Cut to 32 bits these are valid: a mask of 2**32 + INIT would have moved the QP.
    const e = caught(() => fresh.modify({ ...toInit, qpAccessFlags: 0 }, 2 ** 32 + INIT));
    assert.deepEqual([e.code, e.attr], ['EINVAL', 'attr_mask']);
    assert.equal(fresh.state, QpState.RESET);
    assert.equal(mr.access, Access.LOCAL_WRITE);
  } finally {
    await close();
  }
});

test('a wrong argument shape is EINVAL naming the argument, never a TypeError', async () => {
  const { a, close } = await makePair(QpType.RC);
  try {
    const { ctx, pd, cq } = a;
    const srq = pd.createSrq({ maxWr: 4, maxSge: 1 });
    const mr = pd.regMr(Buffer.alloc(8), 0);
    const ch = ctx.createCompChannel();
    const before = ctx.census();
    const cases: Array<[string, string, () => unknown]> = [
      ['CQ.CREATE', 'opts', () => ctx.createCq(4, null as never)],
      ['MR.REG', 'opts', () => pd.regMr(Buffer.alloc(8), 0, null as never)],
      ['SRQ.CREATE', 'attr', () => pd.createSrq(undefined as never)],
      ['QP.CREATE', 'init', () => pd.createQp(undefined as never)],
      ['QP.CREATE', 'init', () => pd.createQp(7 as never)],
      ['MR.REREG', 'change', () => mr.rereg(undefined as never)],
      ['SRQ.MODIFY', 'attr', () => srq.modify(undefined as never, SrqAttr.LIMIT)],
    ];
    for (const [where, attr, fn] of cases) {
      const e = caught(fn);
      assert.deepEqual([e.code, `${e.object}.${e.method}`, e.attr], ['EINVAL', where, attr], e.message);
      assert.match(e.message, new RegExp(`^EINVAL: ${where.replace('.', '\\.')} attribute '${attr}': must be an object`));
    }
    // The waits reject the same way.
    for (const [where, attr, p] of [['COMP_CHANNEL.GET_CQ_EVENT', 'opts', () => ch.getCqEvent(null as never)], ['CQ.NEXT', 'opts', () => cq.next(null as never)]] as const) {
      await assert.rejects(p(), (e: unknown) => e instanceof VerbsError && e.code === 'EINVAL' && `${e.object}.${e.method}` === where && e.attr === attr);
    }
    assert.deepEqual(ctx.census(), before, 'nothing made');
  } finally {
    await close();
  }
});

test("a bad value as messages show it: quoted strings, bigints with n, and what an object is (not String()'s [object Object])", async () => {
  const { shown } = await import('../../src/abi/errors.js');
  assert.equal(shown('x'), "'x'");
  assert.equal(shown(5n), '5n');
  assert.equal(shown(null), 'null');
  assert.equal(shown(undefined), 'undefined');
  assert.equal(shown({}), 'an object');
  assert.equal(shown(Object.create(null)), 'an object');
  assert.equal(shown([1, 2]), 'an array');
  assert.equal(shown(new Date(0)), 'a Date');
  assert.equal(shown(new ArrayBuffer(1)), 'an ArrayBuffer');
  assert.equal(shown(function named() {}), 'function named');
});
