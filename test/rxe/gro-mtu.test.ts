// node:dgram's receive path under UDP GRO (worker threads, recvmmsg: false): the kernel's
// segment size is not passed on, and a run of FIRST or MIDDLE packets is cut by the receiving
// QP's path MTU (wire/gro.ts), never by reading payload bytes as headers: a single packet is
// never cut, and a run whose short tail makes it as long as one packet of a larger MTU is.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { OPCODES, OpCode } from '../../src/providers/rxe/wire/opcodes.js';
import { openHarness } from '../helpers/rxe-harness.js';

/** A packet of `opcode` to `qpn` with `payload` bytes (BTH filled in, pad, 4 ICRC bytes). */
function packet(opcode: number, qpn: number, psn: number, payload: number): Buffer {
  const info = OPCODES[opcode]!;
  const pad = (4 - (payload % 4)) % 4;
  const b = Buffer.alloc(info.length + payload + pad + 4, 0x33);
  b[0] = opcode;
  b[1] = pad << 4;
  b.writeUInt16BE(0xffff, 2);
  b.writeUInt32BE(qpn & 0xffffff, 4);
  b.writeUInt32BE(psn & 0xffffff, 8);
  if (info.reth >= 0) b.writeUInt32BE(payload, info.reth + 12);
  return b;
}

test('node:dgram\'s path cuts a GRO run of FIRST/MIDDLE packets by the QP\'s path MTU, and leaves single packets whole', async (t) => {
  const h = await openHarness(); // an RC QP with path MTU 1024
  t.after(() => h.close());
  const link = h.rxe.link as unknown as {
    deliver(msg: Buffer, address: string, port: number, groSegment: number): void;
    onPacket: (pkt: Buffer, from: string, fromPort: number, segment: number) => void;
  };
  const got: number[][] = [];
  link.onPacket = (pkt, _from, _port, segment) => got.push([pkt.length, segment]);
  const arrive = (...pkts: Buffer[]) => {
    got.length = 0;
    link.deliver(Buffer.concat(pkts), '127.0.0.3', 4791, -1); // -1: node:dgram's path, no segment size given
    return got.slice();
  };
  const qpn = h.rq.qpn;
  // A WRITE of 3056 bytes at MTU 1024: its MIDDLE and its 1008-byte LAST leave as one GSO send
  // of 1040 + 1024 bytes, as long as one MIDDLE packet at MTU 2048.
  assert.deepEqual(arrive(packet(OpCode.RC_RDMA_WRITE_MIDDLE, qpn, 11, 1024), packet(OpCode.RC_RDMA_WRITE_LAST, qpn, 12, 1008)), [[1040, 0], [1024, 1]]);
  // A plain run of MIDDLE packets.
  const mids = [20, 21, 22].map((k) => packet(OpCode.RC_SEND_MIDDLE, qpn, k, 1024));
  assert.deepEqual(arrive(...mids), [[1040, 0], [1040, 1], [1040, 2]]);
  // One 4 KiB MIDDLE packet (of a QP this device does not have) whose payload holds, 1 KiB in,
  // what looks like the same QP's next BTH: one packet, also right after a run cut at 1040.
  const single = packet(OpCode.RC_SEND_MIDDLE, 0x77, 30, 4096);
  packet(OpCode.RC_SEND_MIDDLE, 0x77, 31, 0).copy(single, 1040, 0, 12);
  assert.deepEqual(arrive(single), [[single.length, 0]]);
  assert.equal(h.rxe.counters.gro_datagrams, 2);
});
