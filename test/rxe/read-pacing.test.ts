// The responder answers a long RDMA READ a turn of the event loop at a time (responder.ts
// READ_BUDGET), as Linux rxe's read_reply sends one response per run of its task, instead of
// building the whole read at once: requests behind it wait for its last response, a repeat of
// the READ moves its cursor back rather than adding another copy of the read, and a READ
// or WRITE longer than 2^31 is refused as Linux's check_length refuses it.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setImmediate as turn } from 'node:timers/promises';
import { QpState, SendFlags, WcStatus, WrOpcode, Access, rxeOf } from '../../src/index.js';
import { NakCode, reth } from '../../src/providers/rxe/wire/headers.js';
import { OpCode } from '../../src/providers/rxe/wire/opcodes.js';
import * as responder from '../../src/providers/rxe/responder.js';
import { MTU, RQ_PSN, describe, openHarness, packet, readRequestOf, sendOnlyOf, type Harness, type Sent } from '../helpers/rxe-harness.js';
import { makePair, waitCompletions } from '../helpers/pair.js';

const rpsn = (k: number) => (RQ_PSN + k) & 0xffffff;
/** responder.ts READ_BUDGET (read through the namespace so this file also runs against a build without it). */
const READ_BUDGET = (responder as { READ_BUDGET?: number }).READ_BUDGET ?? 64;

/** Take what the QP sends, turn by turn, until a turn sends nothing (at most `turns` turns); each turn's count. */
async function drain(h: Harness, turns = 200): Promise<{ sent: Sent[]; perTurn: number[] }> {
  const sent: Sent[] = [];
  const perTurn: number[] = [];
  for (let i = 0; i < turns; i++) {
    await turn();
    const got = h.take();
    if (got.length === 0) break;
    perTurn.push(got.length);
    sent.push(...got);
  }
  return { sent, perTurn };
}

function pattern(n: number): Buffer {
  const b = Buffer.allocUnsafe(n);
  for (let i = 0; i < n; i++) b[i] = (i * 131 + (i >> 10)) & 0xff;
  return b;
}

test('a long READ is answered a turn\'s worth at a time, in PSN order, with the memory\'s bytes', async (t) => {
  const h = await openHarness();
  t.after(() => h.close());
  const npkts = 1000;
  const len = npkts * MTU - 100;
  const src = h.mr(len);
  pattern(len).copy(src.buf);
  h.feed(readRequestOf(h, rpsn(0), src.addr, src.rkey, len));
  const first = h.take();
  assert.equal(first.length, READ_BUDGET, 'the datagram that asked is answered with one turn\'s worth');
  assert.equal(h.qp.query().rqPsn, rpsn(npkts), 'the READ takes its PSNs at once');
  const { sent, perTurn } = await drain(h);
  assert.ok(perTurn.every((n) => n <= READ_BUDGET), `at most ${READ_BUDGET} responses a turn: ${perTurn.join(',')}`);
  const all = [...first, ...sent];
  assert.equal(all.length, npkts);
  assert.deepEqual(all.map((s) => s.pkt.psn), Array.from({ length: npkts }, (_, k) => rpsn(k)));
  assert.deepEqual([all[0]!.pkt.opcode, all[1]!.pkt.opcode, all[npkts - 2]!.pkt.opcode, all[npkts - 1]!.pkt.opcode], [
    OpCode.RC_RDMA_READ_RESPONSE_FIRST, OpCode.RC_RDMA_READ_RESPONSE_MIDDLE, OpCode.RC_RDMA_READ_RESPONSE_MIDDLE, OpCode.RC_RDMA_READ_RESPONSE_LAST,
  ]);
  const data = Buffer.concat(all.map((s) => s.pkt.buf.subarray(s.pkt.payloadOffset, s.pkt.payloadOffset + s.pkt.payloadLength)));
  assert.ok(data.equals(src.buf), 'the responses carry the MR\'s bytes');
});

test('requests behind a long READ wait for its last response; a repeat of the READ restarts its cursor instead of adding a copy', async (t) => {
  const h = await openHarness();
  t.after(() => h.close());
  const npkts = 300;
  const len = npkts * MTU;
  const src = h.mr(len);
  const buf = h.mr(64);
  h.qp.postRecv({ wrId: 1, sgList: [buf.sge()] });
  h.feed(readRequestOf(h, rpsn(0), src.addr, src.rkey, len));
  assert.equal(h.take().length, READ_BUDGET);
  // The SEND behind the READ: its ACK would acknowledge the READ's PSNs (an implicit NAK at
  // the requester) if it passed the READ's responses; it waits.
  h.feed(sendOnlyOf(h, rpsn(npkts), Buffer.from('behind')));
  assert.deepEqual(h.take(), []);
  assert.deepEqual(h.poll(), [], 'the SEND is executed after the READ');
  // The requester saw responses up to rpsn(9) and asks for the rest again.
  h.feed(readRequestOf(h, rpsn(10), src.addr + 10 * MTU, src.rkey, len - 10 * MTU));
  assert.deepEqual(h.take(), [], 'the read already answered turn by turn goes on from there on its next turn');
  const { sent } = await drain(h);
  const reads = sent.filter((s) => s.pkt.opcode !== OpCode.RC_ACKNOWLEDGE);
  assert.deepEqual(reads.map((s) => s.pkt.psn), Array.from({ length: npkts - 10 }, (_, k) => rpsn(10 + k)), 'each PSN from the repeat on, once');
  assert.equal(reads[0]!.pkt.opcode, OpCode.RC_RDMA_READ_RESPONSE_MIDDLE);
  assert.equal(reads.at(-1)!.pkt.opcode, OpCode.RC_RDMA_READ_RESPONSE_LAST);
  assert.deepEqual(sent.slice(reads.length).map(describe), [`RC_ACKNOWLEDGE 0x${rpsn(npkts).toString(16)} ACK`], 'then the SEND\'s ACK');
  assert.deepEqual(h.poll().map((wc) => [wc.wrId, wc.status, wc.byteLen]), [[1, WcStatus.SUCCESS, 6]]);
  assert.equal(h.rq.counters.duplicates, 1);
});

test('a repeat of a READ must ask for the same memory: another rkey, or a range past it, is dropped', async (t) => {
  const h = await openHarness();
  t.after(() => h.close());
  const src = h.mr(4 * MTU);
  h.feed(readRequestOf(h, rpsn(0), src.addr, src.rkey, 4 * MTU));
  assert.equal(h.take().length, 4);
  h.feed(readRequestOf(h, rpsn(1), src.addr + MTU, (src.rkey ^ 0x100) >>> 0, 3 * MTU));
  h.feed(readRequestOf(h, rpsn(1), src.addr + MTU, src.rkey, 4 * MTU));
  h.feed(readRequestOf(h, rpsn(3), src.addr + MTU, src.rkey, 2 * MTU)); // would end past the READ's PSNs
  assert.deepEqual(h.take(), []);
  h.feed(readRequestOf(h, rpsn(2), src.addr + 2 * MTU, src.rkey, 2 * MTU));
  assert.deepEqual(h.take().map(describe), [`RC_RDMA_READ_RESPONSE_MIDDLE 0x${rpsn(2).toString(16)}`, `RC_RDMA_READ_RESPONSE_LAST 0x${rpsn(3).toString(16)} ACK`]);
  assert.equal(h.qp.query().qpState, QpState.RTS);
});

test('an MR deregistered while its READ is answered ends the read with a remote access error NAK', async (t) => {
  const h = await openHarness();
  t.after(() => h.close());
  const src = h.mr(200 * MTU);
  h.feed(readRequestOf(h, rpsn(0), src.addr, src.rkey, 200 * MTU));
  assert.equal(h.take().length, READ_BUDGET);
  src.mr.dereg();
  const { sent } = await drain(h);
  assert.deepEqual(sent.map(describe), [`RC_ACKNOWLEDGE 0x${rpsn(READ_BUDGET).toString(16)} NAK ${NakCode.REMOTE_ACCESS_ERROR}`]);
  assert.equal(h.qp.query().qpState, QpState.ERR);
});

test('a READ or WRITE longer than 2^31 bytes is an invalid request (Linux check_length), not a remote access error', async () => {
  for (const op of ['READ', 'WRITE']) {
    const h = await openHarness();
    try {
      const mem = h.mr(4096);
      h.feed(op === 'READ'
        ? readRequestOf(h, rpsn(0), mem.addr, mem.rkey, 0x80000001)
        : packet(h.rq.qpn, OpCode.RC_RDMA_WRITE_FIRST, rpsn(0), { payload: Buffer.alloc(MTU), fill: (b, i) => reth.write(b, i.reth, mem.addr, mem.rkey, 0x80000001) }));
      assert.deepEqual(h.take().map(describe), [`RC_ACKNOWLEDGE 0x${rpsn(0).toString(16)} NAK ${NakCode.INVALID_REQUEST}`], op);
      assert.equal(h.qp.query().qpState, QpState.ERR);
    } finally {
      await h.close();
    }
  }
});

test('a 16 MiB READ between two devices: at most a timeout or two on a busy machine, not a flood of replays', async () => {
  const { a, b, close } = await makePair(undefined, { timeout: 14, retryCnt: 2 });
  try {
    const size = 16 << 20;
    const src = pattern(size), dst = Buffer.alloc(size);
    const rmr = b.pd.regMr(src, Access.LOCAL_WRITE | Access.REMOTE_READ);
    const lmr = a.pd.regMr(dst, Access.LOCAL_WRITE);
    const sentBefore = rxeOf(b.dev).counters.sent_pkts;
    a.qp.postSend({ wrId: 1, opcode: WrOpcode.RDMA_READ, sendFlags: SendFlags.SIGNALED, sgList: [lmr.sge()], rdma: { remoteAddr: rmr.addr, rkey: rmr.rkey } });
    const [wc] = await waitCompletions(a.cq, 1, 30_000);
    assert.equal(wc!.status, WcStatus.SUCCESS);
    assert.ok(dst.equals(src));
    const qc = rxeOf(a.dev).qps.get(a.qp.qpn)!.counters;
    // On a quiet machine none (every response once); under load a receive buffer may overflow
    // once or twice. Unpaced, the responder's queue overflowed it four times and more.
    assert.ok(qc.timeouts <= 2, `${qc.timeouts} timeouts`);
    const needed = size / rxeOf(b.dev).qps.get(b.qp.qpn)!.mtu;
    const sent = rxeOf(b.dev).counters.sent_pkts - sentBefore;
    assert.ok(sent >= needed && sent <= (1 + qc.timeouts) * needed, `${sent} responses sent for ${needed} with ${qc.timeouts} timeouts`);
  } finally {
    await close();
  }
});
