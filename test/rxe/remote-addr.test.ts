// Remote addresses are u64 (ibv_send_wr's remote_addr): a bigint reaches the wire exactly,
// above 2^53 too (a kernel peer's buffers, such as Linux SMC-R's RMBs at 0xffff8880...), and a
// number that has already lost bits is refused with EINVAL naming the field.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SendFlags, WrOpcode } from '../../src/index.js';
import { remoteAddr, remoteAddrPlus } from '../../src/abi/remote-addr.js';
import { openHarness } from '../helpers/rxe-harness.js';

const KERNEL_ADDR = 0xffff88803e100064n; // not a multiple of 2048: a number would read ...100000 or ...100800

test('an RDMA WRITE and an RDMA READ to a bigint address above 2^53 carry it exactly in the RETH', async (t) => {
  const h = await openHarness();
  t.after(() => h.close());
  const m = h.mr(4096, 1);
  h.qp.postSend({ wrId: 1, opcode: WrOpcode.RDMA_WRITE, sendFlags: SendFlags.SIGNALED, sgList: [m.mr.sge(0, 100)], rdma: { remoteAddr: KERNEL_ADDR, rkey: 0x1234 } });
  h.qp.postSend({ wrId: 2, opcode: WrOpcode.RDMA_READ, sendFlags: SendFlags.SIGNALED, sgList: [m.mr.sge(0, 3000)], rdma: { remoteAddr: KERNEL_ADDR + 8n, rkey: 0x1234 } });
  const sent = h.take();
  assert.equal(sent.length, 2);
  const va = (i: number) => sent[i]!.pkt.buf.readBigUInt64BE(sent[i]!.pkt.info.reth);
  assert.equal(va(0).toString(16), KERNEL_ADDR.toString(16));
  assert.equal(va(1).toString(16), (KERNEL_ADDR + 8n).toString(16));
});

test('post_send refuses a remote address that is not a u64, naming rdma or atomic', async (t) => {
  const h = await openHarness();
  t.after(() => h.close());
  const m = h.mr(64);
  const write = (remoteAddr: number | bigint) => () => h.qp.postSend({ wrId: 1, opcode: WrOpcode.RDMA_WRITE, sgList: [m.mr.sge(0, 8)], rdma: { remoteAddr, rkey: 1 } });
  for (const bad of [2 ** 60, -8, 1.5, Number.NaN, -1n, 1n << 64n]) {
    assert.throws(write(bad), (e: { code?: string; attr?: string; message: string }) => e.code === 'EINVAL' && /rdma\.remoteAddr must be a u64/.test(e.message), String(bad));
  }
  const atomic = (addr: bigint) => () => h.qp.postSend({ wrId: 2, opcode: WrOpcode.ATOMIC_FETCH_AND_ADD, sgList: [m.mr.sge(0, 8)], atomic: { remoteAddr: addr, rkey: 1, compareAdd: 1n } });
  assert.throws(atomic(KERNEL_ADDR), /atomic remote address must be 8-byte aligned/);
  assert.doesNotThrow(atomic(KERNEL_ADDR & ~7n));
  assert.equal(h.take().length, 1, 'only the valid atomic went out');
});

test('remoteAddr keeps a number while offsets stay exact, a bigint beyond', () => {
  assert.equal(remoteAddr(0x7f00_0000_1000n), 0x7f00_0000_1000);
  assert.equal(typeof remoteAddr(KERNEL_ADDR), 'bigint');
  assert.equal(typeof remoteAddr(BigInt(Number.MAX_SAFE_INTEGER)), 'bigint', 'a number there would lose offsets added to it');
  assert.equal(remoteAddrPlus(KERNEL_ADDR, 1500), KERNEL_ADDR + 1500n);
  assert.equal(remoteAddrPlus(4096, 100), 4196);
});
