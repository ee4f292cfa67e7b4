// A capture built from softrdma's SMC-R codecs must decode in Wireshark's SMC dissector: CLC
// messages (v1 and v2 Proposal, Accept, Confirm, Decline) on a TCP connection, and v1 LLC and CDC
// messages as the payloads of RoCEv2 RC SEND-only packets (with correct ICRCs). The frames are
// made here, deterministically, and must equal test/smc/fixtures/smcr-wire.pcap byte for byte
// (SOFTRDMA_WRITE_FIXTURES=1 writes it anew); tshark -V then reads that file. The tshark part is
// skipped, saying why, without tshark.

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, it } from 'node:test';
import { crc32 } from 'node:zlib';
import {
  CLC_ACCEPT, CLC_CONFIRM, DECLINE, SMC_TYPE_B, SMC_TYPE_D, SMC_TYPE_N, SMC_TYPE_R, encodeSmcDecline, encodeSmcProposal, encodeSmcrAcceptConfirm,
  type SmcrAcceptConfirm,
} from '../../src/smc/clc.js';
import { encodeSmcrCdc } from '../../src/smc/wire/cdc-r.js';
import { LLC_DEL, encodeLlc } from '../../src/smc/wire/llc.js';
import { icrcOf, readFields } from '../helpers/capture.js';

const FIXTURE = fileURLToPath(new URL('../../../test/smc/fixtures/smcr-wire.pcap', import.meta.url));

const hex = (s: string): Buffer => Buffer.from(s, 'hex');
const MAC_A = hex('020000000001'), MAC_B = hex('020000000002');
const IP_A = hex('0a000001'), IP_B = hex('0a000002');
const GID_A = hex('00000000000000000000ffff0a000001'), GID_B = hex('00000000000000000000ffff0a000002');
const PEER_A = hex('a1a2020000000001'), PEER_B = hex('b1b2020000000002');
const UEID = 'SOFTRDMA-TEST-EID'.padEnd(32, ' ');

function ipv4(src: Buffer, dst: Buffer, proto: number, payload: Buffer, id: number): Buffer {
  const h = Buffer.alloc(20);
  h[0] = 0x45; h.writeUInt16BE(20 + payload.length, 2); h.writeUInt16BE(id, 4); h.writeUInt16BE(0x4000, 6); h[8] = 64; h[9] = proto;
  src.copy(h, 12); dst.copy(h, 16);
  let s = 0;
  for (let i = 0; i < 20; i += 2) s += h.readUInt16BE(i);
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  h.writeUInt16BE(~s & 0xffff, 10);
  return Buffer.concat([h, payload]);
}

function eth(src: Buffer, dst: Buffer, ip: Buffer): Buffer {
  return Buffer.concat([dst, src, hex('0800'), ip]);
}

/** One side of a TCP connection: its sequence numbers advance with what it sends. */
class TcpSide {
  seq: number;
  constructor(readonly mac: Buffer, readonly ip: Buffer, readonly port: number, isn: number) { this.seq = isn; }
  segment(to: TcpSide, flags: number, data: Buffer = Buffer.alloc(0)): Buffer {
    const t = Buffer.alloc(20);
    t.writeUInt16BE(this.port, 0); t.writeUInt16BE(to.port, 2); t.writeUInt32BE(this.seq >>> 0, 4);
    t.writeUInt32BE(flags & 0x10 ? to.seq >>> 0 : 0, 8); t[12] = 5 << 4; t[13] = flags; t.writeUInt16BE(65535, 14);
    const seg = Buffer.concat([t, data]);
    const pseudo = Buffer.concat([this.ip, to.ip, hex('0006'), Buffer.from([seg.length >> 8, seg.length & 0xff])]);
    const all = Buffer.concat([pseudo, seg, seg.length % 2 ? Buffer.alloc(1) : Buffer.alloc(0)]);
    let s = 0;
    for (let i = 0; i < all.length; i += 2) s += all.readUInt16BE(i);
    while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
    seg.writeUInt16BE(~s & 0xffff, 16);
    this.seq += data.length + (flags & 0x03 ? 1 : 0); // SYN and FIN count one
    return eth(this.mac, to.mac, ipv4(this.ip, to.ip, 6, seg, 0));
  }
}

/** A RoCEv2 RC SEND-only packet carrying payload, as Linux rxe sends it (UDP checksum 0, IPv4 id 0, DF). */
function roceSend(from: 'A' | 'B', destQp: number, psn: number, payload: Buffer): Buffer {
  const bth = Buffer.alloc(12);
  bth[0] = 0x04; // RC SEND_ONLY
  bth.writeUInt16BE(0xffff, 2); // P_Key
  bth.writeUIntBE(destQp, 5, 3);
  bth[8] = 0x80; // AckReq
  bth.writeUIntBE(psn, 9, 3);
  const ib = Buffer.concat([bth, payload, Buffer.alloc(4)]);
  const udp = Buffer.alloc(8);
  udp.writeUInt16BE(0xc000 + destQp, 0); udp.writeUInt16BE(4791, 2); udp.writeUInt16BE(8 + ib.length, 4);
  const [src, dst, smac, dmac] = from === 'A' ? [IP_A, IP_B, MAC_A, MAC_B] : [IP_B, IP_A, MAC_B, MAC_A];
  const ip = ipv4(src, dst, 17, Buffer.concat([udp, ib]), 0);
  ip.writeUInt32LE(icrcOf(ip).got, ip.length - 4);
  return eth(smac, dmac, ip);
}

function pcap(frames: Buffer[]): Buffer {
  const g = Buffer.alloc(24);
  g.writeUInt32LE(0xa1b2c3d4, 0); g.writeUInt16LE(2, 4); g.writeUInt16LE(4, 6); g.writeUInt32LE(65535, 16); g.writeUInt32LE(1, 20);
  const recs = frames.map((f, i) => {
    const h = Buffer.alloc(16);
    h.writeUInt32LE(1_764_720_000 + i, 0); h.writeUInt32LE(f.length, 8); h.writeUInt32LE(f.length, 12);
    return Buffer.concat([h, f]);
  });
  return Buffer.concat([g, ...recs]);
}

const r0 = { peerId: PEER_B, gid: GID_B, mac: MAC_B, qpn: 0x000012, rmbRkey: 0x00001234, rmbeIndex: 1, rmbeAlertToken: 0x00000101, rmbeSize: 4, qpMtu: 3, rmbDmaAddr: 0x7f0012340000n, psn: 0xabcdef };
const fce = { v2Direct: true, osType: 2, release: 1, hostname: 'host-b'.padEnd(32, ' '), v2x: { maxConns: 255, maxLinks: 2, featureMask: 1, vendorExpOptions: 0 } };

/** The capture: CLC v2 then v1 on two TCP connections, then LLC and CDC messages over RoCEv2. */
export function buildCapture(): { file: Buffer; clc: string[]; roce: string[] } {
  const frames: Buffer[] = [];
  const clc: string[] = [];
  const roce: string[] = [];
  const conn = (port: number, msgs: Array<[from: 'A' | 'B', what: string, b: Buffer]>) => {
    const a = new TcpSide(MAC_A, IP_A, port, 0x1000), b = new TcpSide(MAC_B, IP_B, 12345, 0x8000);
    frames.push(a.segment(b, 0x02), b.segment(a, 0x12), a.segment(b, 0x10));
    for (const [from, what, m] of msgs) {
      frames.push(from === 'A' ? a.segment(b, 0x18, m) : b.segment(a, 0x18, m));
      clc.push(what);
    }
  };
  const acceptV2: SmcrAcceptConfirm = { type: CLC_ACCEPT, version: 2, firstContact: true, ...r0, eid: UEID, fce, gidList: null };
  const confirmV2: SmcrAcceptConfirm = { type: CLC_CONFIRM, version: 2, firstContact: true, ...r0, peerId: PEER_A, gid: GID_A, mac: MAC_A, qpn: 0x11, rmbeAlertToken: 0x202, psn: 0x123456,
    eid: UEID, fce: { ...fce, hostname: 'host-a'.padEnd(32, ' ') }, gidList: [GID_A] };
  conn(40000, [
    ['A', 'proposal v2 (typev1 D, typev2 R)', encodeSmcProposal({ version: 2, typeV1: SMC_TYPE_D, typeV2: SMC_TYPE_R, peerId: PEER_A, gid: GID_A, mac: MAC_A, ismGid: 0x1122334455667788n, ismChid: 0xffff, proof: Buffer.alloc(16),
      prefix: { subnet: '10.0.0.0', prefixLength: 24, ipv6Prefixes: [] },
      v2: { release: 1, seid: false, roceGid: GID_A, maxConns: 255, maxLinks: 2, featureMask: 1, userEids: [UEID], smcd: null } })],
    ['B', 'accept v2', encodeSmcrAcceptConfirm(acceptV2)],
    ['A', 'confirm v2', encodeSmcrAcceptConfirm(confirmV2)],
  ]);
  conn(40001, [
    ['A', 'proposal v2 (typev1 N, typev2 R)', encodeSmcProposal({ version: 2, typeV1: SMC_TYPE_N, typeV2: SMC_TYPE_R, peerId: Buffer.alloc(8), gid: Buffer.alloc(16), mac: Buffer.alloc(6), ismGid: 0n, ismChid: 0, proof: null,
      prefix: null, v2: { release: 1, seid: false, roceGid: GID_A, maxConns: 255, maxLinks: 2, featureMask: 1, userEids: [UEID], smcd: null } })],
    ['B', 'decline v2', encodeSmcDecline({ version: 2, outOfSync: false, peerId: PEER_B, diagnosis: DECLINE.NOSMCRDEV, osType: 2, diagnosisV2: [DECLINE.NOUEID, 0, 0, 0] })],
  ]);
  conn(40002, [
    ['A', 'proposal v1 (type B)', encodeSmcProposal({ version: 1, typeV1: SMC_TYPE_B, typeV2: SMC_TYPE_N, peerId: PEER_A, gid: GID_A, mac: MAC_A, ismGid: 5n, ismChid: 7, proof: Buffer.alloc(16),
      prefix: { subnet: '10.0.0.0', prefixLength: 24, ipv6Prefixes: [] }, v2: null })],
    ['B', 'accept v1', encodeSmcrAcceptConfirm({ type: CLC_ACCEPT, version: 1, firstContact: true, ...r0, eid: null, fce: null, gidList: null })],
    ['A', 'confirm v1', encodeSmcrAcceptConfirm({ type: CLC_CONFIRM, version: 1, firstContact: true, ...r0, peerId: PEER_A, gid: GID_A, mac: MAC_A, qpn: 0x11, eid: null, fce: null, gidList: null })],
    ['B', 'decline v1', encodeSmcDecline({ version: 1, outOfSync: true, peerId: PEER_B, diagnosis: DECLINE.SYNCERR, osType: 0, diagnosisV2: [] })],
  ]);
  let psnA = 0x123456, psnB = 0xabcdef;
  const send = (from: 'A' | 'B', what: string, payload: Buffer) => {
    frames.push(roceSend(from, from === 'A' ? 0x12 : 0x11, from === 'A' ? psnA++ : psnB++, payload));
    roce.push(what);
  };
  const cl = { noRmbeEyec: true, linkNum: 1, linkUid: hex('0a0b0c0d'), maxLinks: 2, maxConns: 0 };
  send('B', 'CONFIRM_LINK', encodeLlc({ kind: 'CONFIRM_LINK', version: 1, response: false, senderMac: MAC_B, senderGid: GID_B, senderQpn: 0x12, ...cl }));
  send('A', 'CONFIRM_LINK resp', encodeLlc({ kind: 'CONFIRM_LINK', version: 1, response: true, senderMac: MAC_A, senderGid: GID_A, senderQpn: 0x11, ...cl }));
  send('B', 'ADD_LINK', encodeLlc({ kind: 'ADD_LINK', version: 1, response: false, rejected: false, rejReason: 0, senderMac: MAC_B, senderGid: GID_B, senderQpn: 0x14, linkNum: 2, qpMtu: 3, initialPsn: 0x222222, v2ext: null }));
  send('A', 'ADD_LINK_CONT', encodeLlc({ kind: 'ADD_LINK_CONT', version: 1, response: true, linkNum: 2, numRkeys: 1, rkeys: [{ rmbKey: 0x1234, rmbKeyNew: 0x5678, rmbVaddrNew: 0x7f0000001000n }] }));
  send('B', 'CONFIRM_RKEY', encodeLlc({ kind: 'CONFIRM_RKEY', version: 1, response: false, negative: false, retry: false, numRkeys: 1, rmbKey: 0x2345, rmbVaddr: 0x7f0000002000n,
    others: [{ linkId: 2, rmbKey: 0x3456, rmbVaddr: 0x7f0000003000n }] }));
  send('A', 'DELETE_RKEY', encodeLlc({ kind: 'DELETE_RKEY', version: 1, response: false, negative: false, numRkeys: 1, errMask: 0, rkeys: [0x2345] }));
  send('B', 'TEST_LINK', encodeLlc({ kind: 'TEST_LINK', version: 1, response: false, userData: Buffer.alloc(16) }));
  send('A', 'TEST_LINK resp', encodeLlc({ kind: 'TEST_LINK', version: 1, response: true, userData: Buffer.alloc(16) }));
  send('A', 'CDC', encodeSmcrCdc({ seqno: 1, token: 0x101, prod: { wrap: 0, count: 4096 }, cons: { wrap: 0, count: 0 }, writeBlocked: false, urgDataPending: false, urgDataPresent: false,
    consCursUpdReq: false, failoverValidation: false, peerDoneWriting: false, peerConnClosed: false, peerConnAbort: false }));
  send('B', 'CDC', encodeSmcrCdc({ seqno: 7, token: 0x202, prod: { wrap: 1, count: 16 }, cons: { wrap: 0, count: 4096 }, writeBlocked: true, urgDataPending: false, urgDataPresent: false,
    consCursUpdReq: true, failoverValidation: false, peerDoneWriting: true, peerConnClosed: false, peerConnAbort: false }));
  send('B', 'DELETE_LINK', encodeLlc({ kind: 'DELETE_LINK', version: 1, response: false, all: true, orderly: true, linkNum: 0, reason: LLC_DEL.PROG_INIT_TERM }));
  send('A', 'TEST_LINK v2', encodeLlc({ kind: 'TEST_LINK', version: 2, response: false, userData: Buffer.alloc(16) }));
  return { file: pcap(frames), clc, roce };
}

function tsharkMissing(): string | undefined {
  try { execFileSync('tshark', ['-v'], { stdio: 'ignore' }); return undefined; } catch { return 'tshark is not installed'; }
}

describe('SMC-R wire capture (test/smc/fixtures/smcr-wire.pcap)', () => {
  const built = buildCapture();
  if (process.env.SOFTRDMA_WRITE_FIXTURES === '1') fs.writeFileSync(FIXTURE, built.file);

  it('the fixture is what the codecs encode today, with every RoCEv2 ICRC right', () => {
    assert.ok(fs.readFileSync(FIXTURE).equals(built.file), 'fixture differs from the codecs (SOFTRDMA_WRITE_FIXTURES=1 rewrites it)');
    assert.equal(crc32(built.file) >>> 0, crc32(fs.readFileSync(FIXTURE)) >>> 0);
  });

  it('tshark decodes every CLC and 44-byte LLC/CDC message, with no malformed packet', { skip: tsharkMissing() }, () => {
    const malformed = readFields(FIXTURE, '_ws.malformed || _ws.expert.severity >= "warning" && !tcp', ['frame.number', '_ws.expert.message']);
    assert.deepEqual(malformed, [], `malformed or warned: ${JSON.stringify(malformed)}`);
    const clcRows = readFields(FIXTURE, 'smc.clc_msg', ['frame.number', 'smc.clc_msg']);
    assert.deepEqual(clcRows.map((r) => r[1]), ['1', '2', '3', '1', '4', '1', '2', '3', '4'], `CLC as tshark sees it: ${JSON.stringify(clcRows)}`);
    const llcRows = readFields(FIXTURE, 'smc.llc_msg', ['frame.number', 'smc.llc_msg']);
    // v1 LLC and CDC only: Wireshark's heuristic takes 44-byte payloads whose first byte is 0x01-0x09 or 0xFE (the v2 TEST_LINK, 0x27, is plain payload).
    assert.deepEqual(llcRows.map((r) => Number(r[1])), [1, 1, 2, 3, 6, 9, 7, 7, 254, 254, 4], `LLC/CDC as tshark sees it: ${JSON.stringify(llcRows)}`);
    const fields = (filter: string, f: string[]) => readFields(FIXTURE, filter, f)[0];
    // Fields we set, as Wireshark reads them back.
    assert.deepEqual(fields('smc.clc_msg == 2 && smc.proposal.smc.version == 1', ['smc.accept.server.qp.number', 'smc.accept.server.rmb.rkey', 'smc.accept.server.rmb.element.alert.token',
      'smc.accept.rmb.buffer.size', 'smc.accept.qp.mtu.value', 'smc.accept.server.rmb.virtual.address', 'smc.accept.initial.psn', 'smc.accept.server.preferred.gid', 'smc.accept.server.preferred.mac']),
    ['0x000012', '0x00001234', '0x00000101', '4', '3', '0x00007f0012340000', '0xabcdef', '::ffff:10.0.0.2', '02:00:00:00:00:02']);
    assert.deepEqual(fields('smc.clc_msg == 3 && smc.initial.psn == 0x123456', ['smc.confirm.client.qp.number', 'smc.client.gid', 'smc.confirm.client.mac', 'smc.confirm.client.rmb.rkey']),
      ['0x000011', '::ffff:10.0.0.1', '02:00:00:00:00:01', '0x00001234']);
    assert.deepEqual(fields('smc.clc_msg == 4 && smc.decline.smc.version == 2', ['smc.peer.diag.info', 'smc.decline.os.type']), ['0x03030002,0x03030008,0x00000000,0x00000000,0x00000000', '2']); // tshark shows the four v2 diagnosis words after the first
    assert.deepEqual(fields('smc.clc_msg == 1 && smc.proposal.smcv2.type == 0 && smc.proposal.smc.type == 1', ['smc.proposal.ism.gid', 'smc.outgoing.interface.subnet.mask', 'smc.proposal.eid', 'smc.proposal.rocev2.gid.ipv4']),
      ['0x1122334455667788', '10.0.0.0', UEID, '10.0.0.1']);
    assert.deepEqual(fields('smc.llc_msg == 254 && smc.rmbe.ctrl.seqno == 7', ['smc.rmbe.ctrl.alert.token', 'smc.rmbe.ctrl.prod.wrap.seq', 'smc.rmbe.ctrl.peer.prod.curs',
      'smc.rmbe.ctrl.write.blocked', 'smc.rmbe.ctrl.cons.update.requested', 'smc.rmbe.ctrl.peer.sending.done']), ['0x00000202', '0x0001,0x0000', '0x00000010,0x00001000', '1', '1', '1']);
    // (tshark 4.0 files the consumer cursor under the producer's field names: prod, then cons.)
    assert.deepEqual(fields('smc.llc_msg == 1 && smc.confirm.link.response == 1', ['smc.confirm.link.sender.qp.number', 'smc.confirm.link.number', 'smc.confirm.link.sender.link.userid', 'smc.confirm.link.max.links']),
      ['0x000011', '0x01', '0x0a0b0c0d', '0x02']);
    assert.deepEqual(fields('smc.llc_msg == 4', ['smc.delete.link.all', 'smc.delete.link.orderly', 'smc.delete.link.reason.code']), ['1', '1', '0x00030000']);
  });
});
