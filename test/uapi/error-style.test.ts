// Error messages name the attribute at fault once (in the site prefix), in one naming style:
// libibverbs' and the uapi's snake_case names (cap.max_send_wr, path_mtu, sg_list), never the
// JavaScript field names (cap.maxSendWr, pathMtu, sgList).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Access, QpAttr, QpState, QpType, SendFlags, VerbsError, WrOpcode } from '../../src/index.js';
import { makePair } from '../helpers/pair.js';

function caught(fn: () => unknown): VerbsError {
  try {
    fn();
  } catch (e) {
    assert.ok(e instanceof VerbsError, `not a VerbsError: ${String(e)}`);
    return e;
  }
  assert.fail('did not throw');
}

test('every error names its attribute once, snake_case', async () => {
  const { a, close } = await makePair(QpType.RC, { cap: { maxSendSge: 1, maxRecvSge: 1, maxInlineData: 8 } });
  try {
    const { ctx, pd, cq, qp } = a;
    const mr = pd.regMr(Buffer.alloc(4096), Access.LOCAL_WRITE);
    const fresh = pd.createQp({ qpType: QpType.RC, sendCq: cq, recvCq: cq, cap: { maxSendWr: 1, maxRecvWr: 1 } });
    const cases: Array<[string, () => unknown]> = [
      ['access_flags', () => pd.regMr(Buffer.alloc(8), Access.REMOTE_WRITE)],
      ['cqe', () => ctx.createCq(1 << 30)],
      ['cap.max_send_wr', () => pd.createQp({ qpType: QpType.RC, sendCq: cq, recvCq: cq, cap: { maxSendWr: 0, maxRecvWr: 1 } })],
      ['cap.max_recv_wr', () => pd.createQp({ qpType: QpType.RC, sendCq: cq, recvCq: cq, cap: { maxSendWr: 1 } } as never)],
      ['cap.max_send_sge', () => pd.createQp({ qpType: QpType.RC, sendCq: cq, recvCq: cq, cap: { maxSendWr: 1, maxRecvWr: 1, maxSendSge: -1 } })],
      ['port_num', () => fresh.modify({ qpState: QpState.INIT, pkeyIndex: 0, portNum: 2, qpAccessFlags: 0 }, QpAttr.STATE | QpAttr.PKEY_INDEX | QpAttr.PORT | QpAttr.ACCESS_FLAGS)],
      ['pkey_index', () => fresh.modify({ qpState: QpState.INIT, pkeyIndex: 7, portNum: 1, qpAccessFlags: 0 }, QpAttr.STATE | QpAttr.PKEY_INDEX | QpAttr.PORT | QpAttr.ACCESS_FLAGS)],
      ['qp_access_flags', () => fresh.modify({ qpState: QpState.INIT, pkeyIndex: 0, portNum: 1, qpAccessFlags: 1 << 12 }, QpAttr.STATE | QpAttr.PKEY_INDEX | QpAttr.PORT | QpAttr.ACCESS_FLAGS)],
      ['sg_list', () => qp.postSend({ wrId: 1, opcode: WrOpcode.SEND, sgList: [mr.sge(0, 1), mr.sge(1, 1)] })],
      ['send_flags', () => qp.postSend({ wrId: 1, opcode: WrOpcode.SEND, sendFlags: SendFlags.INLINE, sgList: [mr.sge(0, 9)] })],
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
