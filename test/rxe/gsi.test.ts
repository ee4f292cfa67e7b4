// QP1 (the GSI) on rxe: QPNs 0 and 1 are never handed out, one owner at a time, 256-byte MADs
// as UD SEND-only packets with the GSI Q_Key both ways (the header bytes Linux rxe sends, the
// ICRC, QP1's UDP source port), the sender's GID and QP on receive, and everything QP1 cannot
// take counted and dropped without a throw: another Q_Key, another size, another transport,
// a port with no GSI open, a consumer that throws.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { fileURLToPath } from 'node:url';
import { createRxeDevice, rxeOf, QpType } from '../../src/index.js';
import type { GsiSource } from '../../src/verbs/api.js';
import { FIRST_QPN } from '../../src/providers/rxe/device.js';
import { GSI_QKEY, GSI_QPN } from '../../src/providers/rxe/gsi.js';
import { deth, parsePacket, writeBth } from '../../src/providers/rxe/wire/headers.js';
import { IcrcFlow } from '../../src/providers/rxe/wire/icrc.js';
import { BTH_BYTES, ICRC_BYTES, OPCODES, OpCode } from '../../src/providers/rxe/wire/opcodes.js';
import { initialSourcePort } from '../../src/providers/rxe/wire/udp-sport.js';
import { ipv4Bytes, ipv6Bytes } from '../../src/abi/inet.js';
import { twoDevices as two, waitFor } from '../helpers/pair.js';


const madOf = (tag: number) => { const m = Buffer.alloc(256); m[0] = 1; m[1] = 7; m[2] = 2; m[3] = 3; m.writeUInt32BE(tag, 252); return m; };

/** A UD packet for QP1 built with the rxe wire encoders (ICRC room at the end; the link seals it). */
function crafted(o: { opcode?: number; qkey?: number; payload?: number; destQp?: number; srcQp?: number }): Buffer {
  const len = o.payload ?? 256;
  const pad = (4 - (len & 3)) & 3;
  const opcode = o.opcode ?? OpCode.UD_SEND_ONLY;
  const hdr = OPCODES[opcode]!.length; // with an immediate, 4 more
  const buf = Buffer.alloc(hdr + len + pad + ICRC_BYTES);
  writeBth(buf, { opcode, padCount: pad, destQp: o.destQp ?? GSI_QPN, ackReq: false, psn: 0 });
  deth.write(buf, BTH_BYTES, o.qkey ?? GSI_QKEY, o.srcQp ?? GSI_QPN);
  if (len >= 256) madOf(0xfeed).copy(buf, hdr);
  return buf;
}

test('QPNs: never 0, 1 or the multicast QPN, also after the 24-bit space wraps', async () => {
  const dev = await createRxeDevice({ address: '127.0.0.2', port: 0 });
  try {
    const ctx = dev.open();
    const pd = ctx.allocPd();
    const cq = ctx.createCq(16);
    const cap = { maxSendWr: 1, maxRecvWr: 1, maxSendSge: 1, maxRecvSge: 1 };
    // A device starts at a random QPN (device.ts); start this one at the bottom of the pool.
    (rxeOf(dev) as unknown as { nextQpn: number }).nextQpn = FIRST_QPN;
    const first = pd.createQp({ qpType: QpType.UD, sendCq: cq, recvCq: cq, cap });
    assert.equal(first.qpn, FIRST_QPN);
    (rxeOf(dev) as unknown as { nextQpn: number }).nextQpn = 0xfffffd; // the pool ends at 0xfffffe (LAST_QPN)
    const qpns = [0, 1, 2].map(() => pd.createQp({ qpType: QpType.UD, sendCq: cq, recvCq: cq, cap }).qpn);
    assert.deepEqual(qpns, [0xfffffd, 0xfffffe, FIRST_QPN + 1]); // no 0xffffff; 0x11 is taken: the next free one
    ctx.close();
  } finally {
    await dev.close();
  }
});

test('openGsi: port 1 only, one owner at a time, free again after close, ENODEV after the device closes', async () => {
  const dev = await createRxeDevice({ address: '127.0.0.2', port: 0 });
  const g = dev.openGsi();
  assert.equal(g.port, 1);
  assert.deepEqual(g.gid, Buffer.from('00000000000000000000ffff7f000002', 'hex'));
  assert.throws(() => dev.openGsi(), { code: 'EBUSY' });
  assert.throws(() => dev.openGsi(2), { code: 'EINVAL' });
  g.close();
  g.close(); // idempotent
  const g2 = dev.openGsi(1);
  assert.throws(() => g.send(madOf(1), { dgid: g2.gid }), { code: 'EINVAL' }); // the closed handle stays closed
  await dev.close();
  assert.throws(() => g2.send(madOf(1), { dgid: g2.gid }), { code: 'EINVAL' });
  assert.throws(() => dev.openGsi(), { code: 'ENODEV' });
});

test('send: EINVAL for a MAD of another size or a GID of the other family', async () => {
  const dev = await createRxeDevice({ address: '127.0.0.2', port: 0 });
  try {
    const g = dev.openGsi();
    assert.throws(() => g.send(Buffer.alloc(255), { dgid: g.gid }), { code: 'EINVAL', message: /256 bytes, got 255/ });
    assert.throws(() => g.send(Buffer.alloc(257), { dgid: g.gid }), { code: 'EINVAL' });
    assert.throws(() => g.send(madOf(1), { dgid: Buffer.from('fd770000000000000000000000000001', 'hex') }), { code: 'EINVAL', message: /IPv4/ });
    assert.throws(() => g.send(madOf(1), { dgid: Buffer.alloc(4) }), { code: 'EINVAL' });
    assert.equal(rxeOf(dev).counters.gsi_sent_mads, 0);
  } finally {
    await dev.close();
  }
});

test('the packet: UD SEND-only to QP1, P_Key 0xffff, no SE/M/pad, AckReq (as rxe_req.c), PSN from 0, DETH GSI Q_Key and source QP 1, ICRC, QP1\'s source port', async () => {
  const dev = await createRxeDevice({ address: '127.0.0.2', port: 0 });
  try {
    const link = rxeOf(dev).link;
    const sent: Array<{ pkt: Buffer; to: string; sport: number }> = [];
    link.transmit = (pkt, to, sport) => { sent.push({ pkt: Buffer.from(pkt), to, sport }); };
    const g = dev.openGsi();
    const dgid = Buffer.from('00000000000000000000ffff7f000003', 'hex');
    g.send(madOf(1), { dgid });
    g.send(madOf(2), { dgid });
    assert.equal(sent.length, 2);
    for (const [i, { pkt, to, sport }] of sent.entries()) {
      assert.equal(to, '127.0.0.3');
      assert.equal(pkt.length, 12 + 8 + 256 + 4);
      assert.equal(pkt.subarray(0, 12).toString('hex'), `6400ffff00000001800000${i.toString(16).padStart(2, '0')}`);
      assert.equal(pkt.subarray(12, 20).toString('hex'), '8001000000000001');
      assert.deepEqual(pkt.subarray(20, 276), madOf(i + 1));
      // 0xC000 + hash_32(1, 14) unless per-QP source ports are off
      const want = link.poolSize === 0 ? link.port : initialSourcePort(1);
      assert.equal(sport, want);
      assert.equal(initialSourcePort(1), 55410);
      const flow = new IcrcFlow(4, ipv4Bytes('127.0.0.2'), ipv4Bytes('127.0.0.3'), sport, link.port);
      assert.equal(pkt.readUInt32LE(pkt.length - 4), flow.compute(pkt));
      const p = parsePacket(pkt);
      assert.ok(typeof p !== 'string');
      assert.deepEqual([p.opcode, p.se, p.mig, p.padCount, p.pkey, p.destQp, p.ackReq, p.psn, p.payloadLength], [0x64, false, false, 0, 0xffff, 1, true, i, 256]);
    }
  } finally {
    await dev.close();
  }
});

/** The RoCEv2 packets (UDP payloads) of a classic pcap, with their UDP ports and IP version. */
function capturedRoce(file: string): Array<{ ipVersion: 4 | 6; sport: number; payload: Buffer }> {
  const d = fs.readFileSync(file);
  const out: Array<{ ipVersion: 4 | 6; sport: number; payload: Buffer }> = [];
  for (let off = 24; off < d.length;) {
    const incl = d.readUInt32LE(off + 8);
    const pkt = d.subarray(off + 16, off + 16 + incl);
    off += 16 + incl;
    const v4 = pkt.readUInt16BE(12) === 0x0800;
    const ip = pkt.subarray(14);
    const udp = v4 ? ip.subarray((ip[0]! & 15) * 4) : ip.subarray(40);
    out.push({ ipVersion: v4 ? 4 : 6, sport: udp.readUInt16BE(0), payload: udp.subarray(8, udp.readUInt16BE(4)) });
  }
  return out;
}

const CAPTURE = fileURLToPath(new URL('../../../test/cm/fixtures/rping-req-6.1.pcap', import.meta.url));

test('byte for byte as Linux 6.1 rxe: the captured CM MADs (rping -c, IPv4 then IPv6) sent again from a fresh QP1', { skip: !fs.existsSync(CAPTURE) && 'test/cm/fixtures/rping-req-6.1.pcap is not here' }, async () => {
  const frames = capturedRoce(CAPTURE);
  assert.equal(frames.length, 6);
  const dev = await createRxeDevice({ address: '127.0.0.2', port: 0 });
  try {
    const sent: Buffer[] = [];
    rxeOf(dev).link.transmit = (pkt) => { sent.push(Buffer.from(pkt)); };
    const g = dev.openGsi();
    // the kernel's QP1 sent these six as its first packets since boot: PSN 0..5 across both families
    for (const f of frames) g.send(f.payload.subarray(20, 276), { dgid: Buffer.from('00000000000000000000ffff7f000003', 'hex') });
    for (const [i, f] of frames.entries()) {
      assert.equal(f.sport, initialSourcePort(1), `frame ${i}: QP1's source port`);
      assert.equal(f.payload.length, 280);
      assert.deepEqual(sent[i]!.subarray(0, 276), f.payload.subarray(0, 276), `frame ${i}: BTH, DETH and MAD`);
      if (f.ipVersion === 6) {
        // IPv6 has no Identification field: the whole ICRC is predictable, and must match
        const flow = new IcrcFlow(6, ipv6Bytes('fd77::2'), ipv6Bytes('fd77::1'), f.sport, 4791);
        assert.equal(flow.compute(sent[i]!), f.payload.readUInt32LE(276), `frame ${i}: ICRC`);
      }
    }
  } finally {
    await dev.close();
  }
});

test('two devices: a MAD each way with the sender\'s GID, QP and port; counters', async () => {
  const { a, b, close } = await two();
  try {
    const ga = a.openGsi(), gb = b.openGsi();
    const atA: Array<[Buffer, GsiSource]> = [], atB: Array<[Buffer, GsiSource]> = [];
    ga.onMad = (m, s) => atA.push([m, s]);
    gb.onMad = (m, s) => atB.push([m, s]);
    ga.send(madOf(0xa), { dgid: gb.gid });
    const [[m, src]] = await waitFor('the MAD at B', () => atB.length === 1 && atB);
    assert.deepEqual(m, madOf(0xa));
    assert.deepEqual(src.sgid, ga.gid);
    assert.deepEqual(src.dgid, gb.gid);
    assert.equal(src.address, '127.0.0.2');
    assert.equal(src.srcQp, 1);
    assert.equal(src.pkeyIndex, 0);
    if (rxeOf(a).link.poolSize > 0) assert.equal(src.udpSourcePort, initialSourcePort(1));
    assert.deepEqual([src.trafficClass, src.flowLabel, src.hopLimit], [undefined, undefined, undefined]); // a UDP socket does not see them
    // answer the sender where it said it is
    gb.send(madOf(0xb), { dgid: src.sgid, dqpn: src.srcQp });
    const [[m2, src2]] = await waitFor('the answer at A', () => atA.length === 1 && atA);
    assert.deepEqual(m2, madOf(0xb));
    assert.deepEqual(src2.sgid, gb.gid);
    assert.equal(rxeOf(a).counters.gsi_sent_mads, 1);
    assert.equal(rxeOf(b).counters.gsi_rcvd_mads, 1);
    assert.equal(rxeOf(a).counters.gsi_rcvd_mads, 1);
  } finally {
    await close();
  }
});

test('drops, counted, never thrown: wrong Q_Key, not 256 bytes, not UD, no GSI open, a consumer that throws', async () => {
  const { a, b, close } = await two();
  try {
    const gb = b.openGsi();
    const got: Buffer[] = [];
    gb.onMad = (m) => got.push(m);
    const link = rxeOf(a).link;
    const cb = rxeOf(b).counters;
    const to = '127.0.0.3';
    link.send(crafted({ qkey: 0x80010001 }), to);
    link.send(crafted({ qkey: 0 }), to);
    link.send(crafted({ payload: 255 }), to);
    link.send(crafted({ payload: 260 }), to);
    link.send(crafted({ payload: 0 }), to);
    link.send(crafted({ opcode: OpCode.UC_SEND_ONLY }), to); // a MAD over UC: QP1 is UD
    // an RC SEND-only has no DETH: a MAD's worth of payload, still not for QP1
    const rc = Buffer.alloc(BTH_BYTES + 256 + ICRC_BYTES);
    writeBth(rc, { opcode: OpCode.RC_SEND_ONLY, padCount: 0, destQp: 1, ackReq: true, psn: 0 });
    link.send(rc, to);
    await waitFor('7 drops', () => cb.gsi_qkey_drops + cb.gsi_malformed_drops === 7);
    assert.deepEqual([cb.gsi_qkey_drops, cb.gsi_malformed_drops, cb.gsi_rcvd_mads], [2, 5, 0]);
    // a good one still passes, with immediate data too (ignored, as the MAD layer does)
    link.send(crafted({}), to);
    link.send(crafted({ opcode: OpCode.UD_SEND_ONLY_WITH_IMMEDIATE }), to);
    await waitFor('two MADs', () => got.length === 2);
    assert.equal(got[0]!.readUInt32BE(252), 0xfeed);
    // a throwing consumer is counted apart and the device carries on
    gb.onMad = () => { throw new Error('consumer bug'); };
    link.send(crafted({}), to);
    await waitFor('the handler error', () => cb.gsi_handler_errors === 1);
    // nobody holds QP1: unknown QP, as for any QPN without a QP
    gb.close();
    const before = cb.unknown_qp_drops;
    link.send(crafted({}), to);
    await waitFor('unknown QP', () => cb.unknown_qp_drops === before + 1);
    assert.equal(cb.malformed_drops, 0);
    assert.equal(cb.icrc_errors, 0);
  } finally {
    await close();
  }
});
