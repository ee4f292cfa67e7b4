// The work-request opcode table (wire/wr-opcodes.ts) against the packet opcode table and
// against the rules it replaced: the QP types each WR opcode was allowed on, its completion
// opcode, and the BTH opcode of every packet position (the hex arithmetic of the old pickOpcode).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { QpType, WcOpcode, WrOpcode } from '../../src/abi/enums.js';
import { OPCODES, Op } from '../../src/providers/rxe/wire/opcodes.js';
import { WR_OPCODES, WrFlag, packetOpcode, packetOpcodesOf, wrOpcodeInfo } from '../../src/providers/rxe/wire/wr-opcodes.js';

const W = WrOpcode;
const ALLOWED: Record<number, number[]> = {
  [QpType.RC]: [W.SEND, W.SEND_WITH_IMM, W.SEND_WITH_INV, W.RDMA_WRITE, W.RDMA_WRITE_WITH_IMM, W.RDMA_READ, W.ATOMIC_CMP_AND_SWP, W.ATOMIC_FETCH_AND_ADD, W.LOCAL_INV, W.BIND_MW],
  [QpType.UC]: [W.SEND, W.SEND_WITH_IMM, W.RDMA_WRITE, W.RDMA_WRITE_WITH_IMM, W.LOCAL_INV, W.BIND_MW],
  [QpType.UD]: [W.SEND, W.SEND_WITH_IMM],
};
const WC: Record<number, number> = {
  [W.SEND]: WcOpcode.SEND, [W.SEND_WITH_IMM]: WcOpcode.SEND, [W.SEND_WITH_INV]: WcOpcode.SEND,
  [W.RDMA_WRITE]: WcOpcode.RDMA_WRITE, [W.RDMA_WRITE_WITH_IMM]: WcOpcode.RDMA_WRITE, [W.RDMA_READ]: WcOpcode.RDMA_READ,
  [W.ATOMIC_CMP_AND_SWP]: WcOpcode.COMP_SWAP, [W.ATOMIC_FETCH_AND_ADD]: WcOpcode.FETCH_ADD, [W.LOCAL_INV]: WcOpcode.LOCAL_INV, [W.BIND_MW]: WcOpcode.BIND_MW,
};

/** The opcode the requester chose before the table existed (same inputs, same answer). */
function oldPick(qpType: number, op: number, k: number, npkts: number): number {
  if (qpType === QpType.UD) return op === W.SEND_WITH_IMM ? 0x65 : 0x64;
  const base = qpType === QpType.UC ? 0x20 : 0;
  if (op === W.RDMA_READ) return 0x0c;
  if (op === W.ATOMIC_CMP_AND_SWP) return 0x13;
  if (op === W.ATOMIC_FETCH_AND_ADD) return 0x14;
  const only = npkts === 1, first = k === 0, last = k === npkts - 1;
  if (op === W.RDMA_WRITE || op === W.RDMA_WRITE_WITH_IMM) {
    const imm = op === W.RDMA_WRITE_WITH_IMM;
    return base + (only ? (imm ? 0x0b : 0x0a) : first ? 0x06 : last ? (imm ? 0x09 : 0x08) : 0x07);
  }
  if (op === W.SEND_WITH_INV) return only ? 0x17 : first ? 0x00 : last ? 0x16 : 0x01;
  const imm = op === W.SEND_WITH_IMM;
  return base + (only ? (imm ? 0x05 : 0x04) : first ? 0x00 : last ? (imm ? 0x03 : 0x02) : 0x01);
}

const QP_TYPES = [QpType.RC, QpType.UC, QpType.UD];
const ALL_WR = Object.values(WrOpcode);

test('each QP type allows the WR opcodes it did, and each WR opcode completes with its WC opcode', () => {
  for (const t of QP_TYPES) {
    assert.deepEqual(ALL_WR.filter((op) => packetOpcodesOf(op, t) !== undefined).sort(), [...ALLOWED[t]!].sort(), `QP type ${t}`);
  }
  for (const op of ALL_WR) assert.equal(wrOpcodeInfo(op)!.wcOpcode, WC[op], `WR opcode ${op}`);
  for (const bad of [-1, 10, 1.5, NaN, 'constructor' as unknown as number]) {
    assert.equal(wrOpcodeInfo(bad), undefined);
    assert.equal(packetOpcodesOf(bad, QpType.RC), undefined);
  }
  assert.equal(packetOpcodesOf(W.SEND, 99), undefined, 'an unknown QP type allows nothing');
});

test('every packet position gets the opcode the old arithmetic gave', () => {
  for (const t of QP_TYPES) {
    for (const op of ALLOWED[t]!) {
      if (wrOpcodeInfo(op)!.mask & WrFlag.LOCAL_OP) continue;
      const ops = packetOpcodesOf(op, t)!;
      for (const npkts of t === QpType.UD ? [1] : [1, 2, 3, 5]) {
        for (let k = 0; k < npkts; k++) assert.equal(packetOpcode(ops, k, npkts), oldPick(t, op, k, npkts), `type ${t} WR ${op} packet ${k}/${npkts}`);
      }
    }
  }
});

test('the WR flags agree with the packet opcodes they produce', () => {
  const transport: Record<number, number> = { [QpType.RC]: Op.RC, [QpType.UC]: Op.UC, [QpType.UD]: Op.UD };
  for (const [op, info] of WR_OPCODES.entries()) {
    if (!info) continue;
    for (const t of QP_TYPES) {
      const ops = packetOpcodesOf(op, t);
      if (!ops) continue;
      if (info.mask & WrFlag.LOCAL_OP) { assert.equal(ops.only, -1, `${info.name} sends nothing`); continue; }
      const single = ops.first === ops.only;
      for (const [pos, code] of Object.entries(ops)) {
        const m = OPCODES[code]!.mask;
        assert.ok(m & Op.REQ && m & transport[t]!, `${info.name} ${pos} on type ${t} is a request of that transport`);
        if (!single) {
          assert.equal(Boolean(m & Op.START), pos === 'first' || pos === 'only', `${info.name} ${pos} START`);
          assert.equal(Boolean(m & Op.END), pos === 'last' || pos === 'only', `${info.name} ${pos} END`);
        }
        assert.equal(Boolean(m & Op.WRITE), Boolean(info.mask & WrFlag.WRITE), `${info.name} ${pos} WRITE`);
        assert.equal(Boolean(m & Op.READ), Boolean(info.mask & WrFlag.READ), `${info.name} ${pos} READ`);
        assert.equal(Boolean(m & Op.ATOMIC), Boolean(info.mask & WrFlag.ATOMIC), `${info.name} ${pos} ATOMIC`);
        // A WRITE_WITH_IMM's last packet consumes a receive WQE too; a plain send's every packet does.
        if (info.mask & WrFlag.SEND) assert.ok(m & Op.SEND, `${info.name} ${pos} SEND`);
      }
      assert.equal(Boolean(info.mask & WrFlag.INLINE), Boolean(info.mask & (WrFlag.SEND | WrFlag.WRITE)), `${info.name}: sends and writes may be inline`);
    }
  }
});
