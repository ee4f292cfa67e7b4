// UDP GRO on the receive side: a run sent as one GSO send may arrive as one datagram, and
// the segment size must be recovered from the packets (wire/gro.ts). Property tests over the
// runs a sender may batch and over single packets of every shape, then the whole path across
// processes.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { OPCODES, Op, OpCode } from '../../src/providers/rxe/wire/opcodes.js';
import { endsRun, groSegmentSize, joinsRun } from '../../src/providers/rxe/wire/gro.js';
import { assertRunsArrivedWhole, writeBwCounters } from '../helpers/write-bw.js';

const MTUS = [256, 512, 1024, 2048, 4096];

/** A packet: headers of the opcode's length (BTH filled in), payload, pad, 4 ICRC bytes. */
function packet(opcode: number, qpn: number, psn: number, payload: number, fill: number): Buffer {
  const info = OPCODES[opcode]!;
  const pad = (4 - (payload % 4)) % 4;
  const b = Buffer.alloc(info.length + payload + pad + 4, fill);
  b[0] = opcode;
  b[1] = (pad << 4) | 0; // TVer 0
  b.writeUInt16BE(0xffff, 2);
  b.writeUInt32BE(qpn & 0xffffff, 4);
  b.writeUInt32BE(psn & 0xffffff, 8);
  // An ONLY packet's RETH says how much it carries (a FIRST's, at least that much).
  if (info.reth >= 0) b.writeUInt32BE(payload, info.reth + 12);
  return b;
}

// Heads a sender batches with payload, and the opcode of equal size that follows each.
const PAYLOAD_RUNS: Array<[number, number]> = [
  [OpCode.RC_SEND_FIRST, OpCode.RC_SEND_MIDDLE],
  [OpCode.RC_SEND_MIDDLE, OpCode.RC_SEND_MIDDLE],
  [OpCode.RC_RDMA_WRITE_MIDDLE, OpCode.RC_RDMA_WRITE_MIDDLE],
  [OpCode.RC_RDMA_READ_RESPONSE_MIDDLE, OpCode.RC_RDMA_READ_RESPONSE_MIDDLE],
  [OpCode.UC_SEND_FIRST, OpCode.UC_SEND_MIDDLE],
  [OpCode.UC_RDMA_WRITE_MIDDLE, OpCode.UC_RDMA_WRITE_MIDDLE],
];
// The last packet of a run may be a full-MTU LAST of the same size.
const LAST_OF: Record<number, number> = {
  [OpCode.RC_SEND_MIDDLE]: OpCode.RC_SEND_LAST,
  [OpCode.RC_RDMA_WRITE_MIDDLE]: OpCode.RC_RDMA_WRITE_LAST,
  [OpCode.RC_RDMA_READ_RESPONSE_MIDDLE]: OpCode.RC_RDMA_READ_RESPONSE_LAST,
  [OpCode.UC_SEND_MIDDLE]: OpCode.UC_SEND_LAST,
  [OpCode.UC_RDMA_WRITE_MIDDLE]: OpCode.UC_RDMA_WRITE_LAST,
};

describe('UDP GRO datagrams', () => {
  it('a run of full-MTU packets of one QP is cut where the sender put its packets (property)', () => {
    fc.assert(fc.property(
      fc.constantFrom(...PAYLOAD_RUNS), fc.constantFrom(...MTUS), fc.integer({ min: 2, max: 15 }),
      fc.integer({ min: 0, max: 0xffffff }), fc.integer({ min: 0, max: 0xffffff }), fc.boolean(), fc.integer({ min: 0, max: 255 }),
      ([head, follow], mtu, n, qpn, psn0, endsWithLast, fill) => {
        const pkts = [packet(head, qpn, psn0, mtu, fill)];
        for (let k = 1; k < n; k++) {
          const op = k === n - 1 && endsWithLast ? LAST_OF[follow]! : follow;
          pkts.push(packet(op, qpn, psn0 + k, mtu, fill));
        }
        for (let k = 1; k < n; k++) assert.ok(joinsRun(pkts[0]!, pkts[k]!, k), `packet ${k} joins the run`);
        const s = groSegmentSize(Buffer.concat(pkts));
        assert.equal(s, pkts[0]!.length);
      }));
  });

  it('a run of packets without payload is cut by the head\'s fixed size', () => {
    for (const op of [OpCode.RC_ACKNOWLEDGE, OpCode.RC_ATOMIC_ACKNOWLEDGE, OpCode.RC_RDMA_READ_REQUEST]) {
      const pkts = [0, 1, 2, 3].map((k) => packet(op, 0x11 + k, 100 * k, 0, 0));
      assert.ok(joinsRun(pkts[0]!, pkts[2]!, 2));
      assert.equal(groSegmentSize(Buffer.concat(pkts)), OPCODES[op]!.length + 4);
      assert.equal(groSegmentSize(pkts[0]!), 0, 'one packet is one packet');
    }
  });

  it('a single packet of any shape is left whole (property)', () => {
    const codes = Object.keys(OPCODES).map(Number).filter((c) => OPCODES[c]);
    fc.assert(fc.property(
      fc.constantFrom(...codes), fc.constantFrom(...MTUS), fc.integer({ min: 0, max: 4096 }),
      fc.integer({ min: 0, max: 0xffffff }), fc.integer({ min: 0, max: 0xffffff }), fc.integer({ min: 0, max: 255 }),
      (op, mtu, len, qpn, psn, fill) => {
        const info = OPCODES[op]!;
        const payload = !(info.mask & Op.PAYLOAD) ? 0 : info.mask & Op.END ? Math.min(len, mtu) : mtu;
        const p = packet(op, qpn, psn, payload, fill);
        assert.equal(groSegmentSize(p), 0);
        assert.equal(groSegmentSize(p, p.length), 0, 'even given its own length as the path MTU');
      }));
  });

  it('a run may end with a shorter packet of the same QP: SMC-R\'s data WRITE and its CDC SEND (property)', () => {
    fc.assert(fc.property(
      fc.integer({ min: 28, max: 4096 }), fc.integer({ min: 0, max: 0xffffff }), fc.integer({ min: 0, max: 0xffffff }), fc.integer({ min: 0, max: 255 }),
      (len, qpn, psn, fill) => {
        const write = packet(OpCode.RC_RDMA_WRITE_ONLY, qpn, psn, len, fill);
        const cdc = packet(OpCode.RC_SEND_ONLY, qpn, psn + 1, 44, fill);
        assert.ok(endsRun(write, write.length, cdc, 1));
        assert.equal(groSegmentSize(Buffer.concat([write, cdc])), write.length, `a ${len}-byte WRITE then the SEND`);
        assert.equal(groSegmentSize(write), 0, 'the WRITE alone is one packet');
      }));
    // Behind a run of full-MTU packets too: the message's SEND after a 3-packet WRITE run.
    const mids = [0, 1, 2].map((k) => packet(OpCode.RC_RDMA_WRITE_MIDDLE, 9, 100 + k, 1024, 0));
    const send = packet(OpCode.RC_SEND_ONLY, 9, 103, 44, 0);
    assert.ok(endsRun(mids[0]!, mids[0]!.length, send, 3));
    assert.equal(groSegmentSize(Buffer.concat([...mids, send])), mids[0]!.length);
  });

  it('a short tail that the receiver could not find is not batched', () => {
    const write = packet(OpCode.RC_RDMA_WRITE_ONLY, 5, 10, 100, 0);
    assert.equal(endsRun(write, write.length, packet(OpCode.RC_SEND_ONLY, 6, 11, 44, 0), 1), false, 'another QP');
    assert.equal(endsRun(write, write.length, packet(OpCode.RC_SEND_ONLY, 5, 12, 44, 0), 1), false, 'not the next PSN');
    const send = packet(OpCode.RC_SEND_ONLY, 5, 10, 100, 0);
    assert.equal(endsRun(send, send.length, packet(OpCode.RC_SEND_ONLY, 5, 11, 44, 0), 1), false, 'a SEND ONLY says nothing of its size');
    const lying = Buffer.from(write);
    lying.writeUInt32BE(96, OPCODES[OpCode.RC_RDMA_WRITE_ONLY]!.reth + 12);
    assert.equal(endsRun(lying, lying.length, packet(OpCode.RC_SEND_ONLY, 5, 11, 44, 0), 1), false, 'a RETH length that is not the packet\'s');
  });

  it('a sender does not batch what the receiver could not cut again', () => {
    const a = packet(OpCode.RC_SEND_ONLY, 5, 10, 100, 0);
    const b = packet(OpCode.RC_SEND_ONLY, 5, 11, 100, 0);
    assert.equal(joinsRun(a, b, 1), false, 'ONLY packets may carry any payload size');
    const m = packet(OpCode.RC_SEND_MIDDLE, 5, 10, 1024, 0);
    assert.equal(joinsRun(m, packet(OpCode.RC_SEND_MIDDLE, 6, 11, 1024, 0), 1), false, 'another QP');
    assert.equal(joinsRun(m, packet(OpCode.RC_SEND_MIDDLE, 5, 13, 1024, 0), 1), false, 'not the next PSN');
    assert.equal(joinsRun(packet(OpCode.RC_SEND_MIDDLE, 5, 0xffffff, 1024, 0), packet(OpCode.RC_SEND_MIDDLE, 5, 0, 1024, 0), 1), true, 'PSNs wrap');
    // Two packets that do not form a run (another QP) stay one datagram, which then fails its
    // checks as one packet; the same two with the next PSN of one QP are cut.
    const first = packet(OpCode.RC_SEND_FIRST, 7, 50, 1024, 0);
    assert.equal(groSegmentSize(Buffer.concat([first, packet(OpCode.RC_SEND_MIDDLE, 8, 51, 1024, 0)])), 0);
    assert.equal(groSegmentSize(Buffer.concat([first, packet(OpCode.RC_SEND_MIDDLE, 7, 51, 1024, 0)])), first.length);
  });

  it('64 KiB RDMA WRITEs across processes: every GSO run arrives whole and is cut into valid packets', async () => {
    const { got, sent } = await writeBwCounters({ iters: 200 });
    assertRunsArrivedWhole(got, sent, 150);
  });
});
