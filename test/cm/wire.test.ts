// CM wire codecs: the layout tables against the IBTA/Linux layouts (hand-built byte vectors),
// against a real Linux 6.1 capture (rping's REQ, retry and REJ over RoCEv2), round trips and
// hostile input (decode never throws, errors name the field).

import assert from 'node:assert/strict';
import fs from 'node:fs';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import fc from 'fast-check';
import { layoutEnd, overlaps, readBits, writeBits, type FieldLoc } from '../../src/cm/wire/bits.js';
import {
  CM_KINDS, CM_LAYOUTS, CmAttrId, CmDataSize, CmMsgResponse, RejReason, SidrStatus, blankCm, cmFieldMadOffset, decodeCmMad,
  encodeCmMad, rejAri, rejReasonName, reqQpType, sidrStatusName, type CmKind, type CmMessage, type CmMessageOf,
} from '../../src/cm/wire/cm-messages.js';
import {
  CMA_HDR_SIZE, PortSpace, RDMA_IB_IP_PS_TCP, RDMA_IB_IP_PS_UDP, cmaReqPrivateData, cmaRoceFlowLabel, cmaUserData, decodeCmaHeader,
  encodeCmaHeader, parseServiceId, roceGid, serviceIdFor,
} from '../../src/cm/wire/cma-header.js';
import { MAD_SIZE, MadMethod, decodeMad, encodeMad } from '../../src/cm/wire/mad.js';

const hex = (s: string) => Buffer.from(s.replace(/\s+/g, ''), 'hex');
/** A 32-bit value with its bytes reversed (a __be32 read by a little-endian host). */
const bswap32 = (v: number) => { const b = Buffer.alloc(4); b.writeUInt32BE(v >>> 0); return b.readUInt32LE(0); };

/** The RoCEv2 frames of a classic little-endian pcap: { ipVersion, bth, deth, mad }. */
function roceFrames(file: string) {
  const d = fs.readFileSync(fileURLToPath(new URL(`../../../test/cm/fixtures/${file}`, import.meta.url)));
  assert.equal(d.readUInt32LE(0), 0xa1b2c3d4);
  const out: { ipVersion: number; bth: Buffer; deth: Buffer; mad: Buffer; icrc: Buffer }[] = [];
  for (let off = 24; off < d.length;) {
    const incl = d.readUInt32LE(off + 8);
    const pkt = d.subarray(off + 16, off + 16 + incl);
    off += 16 + incl;
    const et = pkt.readUInt16BE(12);
    const ip = pkt.subarray(14);
    const udp = et === 0x0800 ? ip.subarray((ip[0]! & 15) * 4) : ip.subarray(40);
    assert.equal(udp.readUInt16BE(2), 4791);
    const p = udp.subarray(8);
    out.push({ ipVersion: et === 0x0800 ? 4 : 6, bth: p.subarray(0, 12), deth: p.subarray(12, 20), mad: p.subarray(20, 276), icrc: p.subarray(276) });
  }
  return out;
}

describe('bit fields', () => {
  it('Byte[Bit] positions: bit 0 is the most significant bit, fields run across bytes big-endian', () => {
    const b = Buffer.alloc(4);
    writeBits(b, 8 * 0 + 0, 20, 0xabcde); // a flow label at byte 0
    writeBits(b, 8 * 3 + 2, 6, 0x3f); // a packet rate at byte 3 bit 2
    assert.equal(b.toString('hex'), 'abcde03f');
    assert.equal(readBits(b, 0, 20), 0xabcde);
    assert.equal(readBits(b, 26, 6), 0x3f);
    writeBits(b, 0, 32, 0xffffffff);
    assert.equal(readBits(b, 0, 32), 0xffffffff);
  });

  it('readBits/writeBits (whole bytes at a time) agree with a bit-at-a-time reading of IBTA\'s notation (property)', () => {
    const refRead = (b: Uint8Array, pos: number, width: number) => {
      let v = 0;
      for (let i = 0; i < width; i++, pos++) v = v * 2 + ((b[pos >> 3]! >> (7 - (pos & 7))) & 1);
      return v;
    };
    fc.assert(fc.property(fc.uint8Array({ minLength: 8, maxLength: 8 }), fc.integer({ min: 0, max: 31 }), fc.integer({ min: 1, max: 32 }), fc.nat(), (bytes, pos, width, x) => {
      const b = Buffer.from(bytes);
      assert.equal(readBits(b, pos, width), refRead(b, pos, width));
      const v = x % 2 ** width;
      const before = Buffer.from(b);
      writeBits(b, pos, width, v);
      assert.equal(refRead(b, pos, width), v);
      for (let p = 0; p < 64; p++) {
        if (p >= pos && p < pos + width) continue;
        assert.equal(refRead(b, p, 1), refRead(before, p, 1), `bit ${p} outside the field changed`);
      }
    }), { numRuns: 2000 });
  });

  it('every message table: no overlapping fields, ends at byte 232, private data as ib_cm.h sizes it', () => {
    const pd: Record<CmKind, number> = {
      REQ: 92, MRA: 222, REJ: 148, REP: 196, RTU: 224, DREQ: 220, DREP: 224, SIDR_REQ: 216, SIDR_REP: 136,
    };
    for (const k of CM_KINDS) {
      const layout = CM_LAYOUTS[k] as readonly FieldLoc[];
      assert.deepEqual(overlaps(layout), [], k);
      assert.equal(layoutEnd(layout), 232, k);
      const p = layout.find((f) => f.name === 'privateData')!;
      assert.equal(p.width / 8, pd[k], k);
      assert.equal(p.byte + p.width / 8, 232, k);
    }
    assert.equal(CmDataSize.REJ_ARI_LENGTH, 72);
    assert.equal(CmDataSize.SIDR_REP_INFO_LENGTH, 72);
  });

  it('attribute ids 0x10..0x18 in ib_cm.h order', () => {
    assert.deepEqual(CM_KINDS.map((k) => CmAttrId[k]), [0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18]);
  });

  it('REQ field offsets in the MAD agree with Wireshark\'s dissector (flow label mask 0xfffff000 and rate 0x3f in the 32-bit word at 112)', () => {
    assert.equal(cmFieldMadOffset('REQ', 'primaryLocalGid'), 80);
    assert.equal(cmFieldMadOffset('REQ', 'primaryRemoteGid'), 96);
    assert.equal(cmFieldMadOffset('REQ', 'primaryFlowLabel'), 112);
    assert.equal(cmFieldMadOffset('REQ', 'privateData'), 164);
    assert.equal(cmFieldMadOffset('REP', 'privateData'), 60);
    assert.equal(cmFieldMadOffset('REJ', 'ari'), 36);
  });
});

describe('MAD header', () => {
  it('24 bytes: versions, method, status, class specific, 64-bit tid, attribute id, reserved, modifier', () => {
    const b = encodeMad({ baseVersion: 1, mgmtClass: 7, classVersion: 2, method: 3, status: 0x001c, classSpecific: 0xabcd, tid: 0x0102030405060708n, attrId: 0x10, resv: 0, attrMod: 0xdeadbeef });
    assert.equal(b.length, MAD_SIZE);
    assert.equal(b.subarray(0, 24).toString('hex'), '01070203' + '001c' + 'abcd' + '0102030405060708' + '0010' + '0000' + 'deadbeef');
    const m = decodeMad(b);
    assert.ok(m.ok);
    assert.equal(m.value.header.tid, 0x0102030405060708n);
    assert.equal(m.value.data.length, 232);
  });

  it('refuses with the field named: length, base version, class, class version, method, attribute', () => {
    const good = encodeCmMad({ ...blankCm('RTU'), localCommId: 1, remoteCommId: 2 }, 5n);
    const bad = (f: (b: Buffer) => Buffer | Uint8Array) => {
      const r = decodeCmMad(f(Buffer.from(good)));
      return r.ok ? 'ok' : r.error.field;
    };
    assert.equal(bad((b) => b), 'ok');
    assert.equal(bad((b) => b.subarray(0, 255)), 'length');
    assert.equal(bad((b) => Buffer.concat([b, Buffer.alloc(1)])), 'length');
    assert.equal(bad((b) => { b[0] = 0x80; return b; }), 'baseVersion');
    assert.equal(bad((b) => { b[1] = 3; return b; }), 'mgmtClass');
    assert.equal(bad((b) => { b[2] = 1; return b; }), 'classVersion');
    assert.equal(bad((b) => { b[3] = MadMethod.GET; return b; }), 'method');
    assert.equal(bad((b) => { b.writeUInt16BE(0x19, 16); return b; }), 'attrId'); // LAP
    assert.equal(bad((b) => { b.writeUInt16BE(0x01, 16); return b; }), 'attrId'); // ClassPortInfo
  });
});

describe('CM messages: byte vectors built from the IBTA tables', () => {
  it('blankCm: every field as a zeroed MAD decodes, with byte fields of its own (changing one changes no other blank)', () => {
    for (const kind of CM_KINDS) {
      const a = blankCm(kind), b = blankCm(kind);
      const fromZero = decodeCmMad(encodeCmMad(blankCm(kind), 0n));
      assert.ok(fromZero.ok);
      assert.deepEqual(a, fromZero.value.msg, kind);
      for (const [name, v] of Object.entries(a)) {
        if (!Buffer.isBuffer(v) || v.length === 0) continue;
        v.fill(0xab);
        assert.ok((b as unknown as Record<string, Buffer>)[name]!.every((x) => x === 0), `${kind}.${name} shared`);
        assert.ok((blankCm(kind) as unknown as Record<string, Buffer>)[name]!.every((x) => x === 0), `${kind}.${name} of the next blank`);
      }
    }
  });

  it('REQ: packed bytes 32..51 and the primary path', () => {
    const req = {
      ...blankCm('REQ'),
      localCommId: 0x11223344, serviceId: 0x0000000001061c06n, localCaGuid: 0x505400fffe770002n, localQkey: 0x80010000,
      localQpn: 0x123456, responderResources: 0x10, localEecn: 0, initiatorDepth: 0x04, remoteEecn: 0,
      remoteCmResponseTimeout: 20, transportServiceType: 1, endToEndFlowControl: 1,
      startingPsn: 0xabcdef, localCmResponseTimeout: 21, retryCount: 6, partitionKey: 0xffff,
      pathMtu: 3, rdcExists: 0, rnrRetryCount: 7, maxCmRetries: 15, srq: 1, extendedTransportType: 0,
      primaryLocalLid: 0xffff, primaryRemoteLid: 0xfffe, primaryLocalGid: roceGid('10.0.0.1'), primaryRemoteGid: roceGid('fd00::2'),
      primaryFlowLabel: 0xabcde, primaryPacketRate: 0x3f, primaryTrafficClass: 0x88, primaryHopLimit: 64,
      primarySl: 5, primarySubnetLocal: 1, primaryLocalAckTimeout: 19, sapSupported: 1,
      privateData: Buffer.from('cafe', 'hex'),
    } satisfies CmMessage;
    const b = encodeCmMad(req, 0x0000000244332211n);
    const d = b.subarray(24);
    assert.equal(d.subarray(0, 52).toString('hex'),
      '11223344' + '00000000' + '0000000001061c06' + '505400fffe770002' + '00000000' + '80010000'
      + '123456' + '10' + '000000' + '04' + '000000' + 'a3' // 20<<3 | UC<<1 | e2e
      + 'abcdef' + 'ae' // 21<<3 | 6
      + 'ffff' + '37' + 'f8'); // mtu 3, rdc 0, rnr 7 | retries 15, srq 1, ext 0
    assert.equal(d.subarray(52, 96).toString('hex'),
      'ffff' + 'fffe' + '00000000000000000000ffff0a000001' + 'fd000000000000000000000000000002'
      + 'abcde03f' + '88' + '40' + '58' + '98'); // SL 5 | subnet local; ack timeout 19 << 3
    assert.equal(d[139], 0x04); // SAP supported: byte 139 bit 5
    assert.equal(d.subarray(140, 142).toString('hex'), 'cafe');
    assert.equal(reqQpType(req), 'UC');
    const r = decodeCmMad(b);
    assert.ok(r.ok);
    assert.deepEqual(r.value.msg, { ...req, privateData: Buffer.concat([req.privateData, Buffer.alloc(90)]) });
  });

  it('MRA, REJ, REP, DREQ and SIDR_REP packed fields', () => {
    const mra = encodeCmMad({ ...blankCm('MRA'), localCommId: 1, remoteCommId: 2, messageMraed: CmMsgResponse.REP, serviceTimeout: 24 }, 1n).subarray(24);
    assert.equal(mra.subarray(0, 10).toString('hex'), '00000001' + '00000002' + '40' + 'c0');
    const rej = encodeCmMad({ ...blankCm('REJ'), localCommId: 0, remoteCommId: 7, messageRejected: CmMsgResponse.REQ, rejectedInfoLength: 8, reason: RejReason.INVALID_SERVICE_ID, ari: hex('0102030405060708') }, 1n).subarray(24);
    assert.equal(rej.subarray(0, 20).toString('hex'), '00000000' + '00000007' + '00' + '10' + '0008' + '0102030405060708');
    const rep = encodeCmMad({
      ...blankCm('REP'), localCommId: 3, remoteCommId: 4, localQkey: 0, localQpn: 0x12, localEecn: 0, startingPsn: 0x654321,
      responderResources: 1, initiatorDepth: 2, targetAckDelay: 15, failoverAccepted: 0, endToEndFlowControl: 1, rnrRetryCount: 7, srq: 1,
      localCaGuid: 0x0102030405060708n,
    }, 1n).subarray(24);
    assert.equal(rep.subarray(0, 36).toString('hex'),
      '00000003' + '00000004' + '00000000' + '00001200' + '00000000' + '65432100' + '01' + '02' + '79' + 'f0' + '0102030405060708');
    const dreq = encodeCmMad({ ...blankCm('DREQ'), localCommId: 5, remoteCommId: 6, remoteQpnEecn: 0xabcdef }, 1n).subarray(24);
    assert.equal(dreq.subarray(0, 12).toString('hex'), '00000005' + '00000006' + 'abcdef00');
    const srep = encodeCmMad({ ...blankCm('SIDR_REP'), requestId: 9, status: SidrStatus.NO_QP, additionalInfoLength: 2, qpn: 0x12345, serviceId: 0x1110007n, qkey: 0x01234567, additionalInfo: hex('aabb') }, 1n).subarray(24);
    assert.equal(srep.subarray(0, 26).toString('hex'), '00000009' + '03' + '02' + '0000' + '01234500' + '0000000001110007' + '01234567' + 'aabb');
  });

  it('an MRA for message type 3 is refused; a REJ of type 3 and info lengths over 72 are taken, as cm.c takes them', () => {
    const field = (m: CmMessage) => { const r = decodeCmMad(encodeCmMad(m, 1n)); return r.ok ? 'ok' : r.error.field; };
    assert.equal(field({ ...blankCm('MRA'), messageMraed: 3 }), 'messageMraed');
    assert.equal(field({ ...blankCm('REJ'), messageRejected: 3 }), 'ok');
    assert.equal(field({ ...blankCm('REJ'), rejectedInfoLength: 127 }), 'ok');
    assert.equal(field({ ...blankCm('SIDR_REP'), additionalInfoLength: 255 }), 'ok');
    // What is read of them stays within the field's 72 bytes.
    const r = decodeCmMad(encodeCmMad({ ...blankCm('REJ'), rejectedInfoLength: 100, ari: Buffer.alloc(72, 7) }, 1n));
    assert.ok(r.ok);
    assert.equal(rejAri(r.value.msg as CmMessageOf<'REJ'>).length, 72);
  });

  it('encode refuses values that do not fit, naming the field', () => {
    assert.throws(() => encodeCmMad({ ...blankCm('REQ'), localQpn: 1 << 24 }, 1n), /localQpn/);
    assert.throws(() => encodeCmMad({ ...blankCm('REQ'), privateData: Buffer.alloc(93) }, 1n), /privateData/);
    assert.throws(() => encodeCmMad({ ...blankCm('REP'), localCaGuid: -1n }, 1n), /localCaGuid/);
  });

  it('names: REJ reasons and SIDR statuses as Linux spells them', () => {
    assert.equal(RejReason.INVALID_SERVICE_ID, 8);
    assert.equal(RejReason.STALE_CONN, 10);
    assert.equal(RejReason.CONSUMER_DEFINED, 28);
    assert.equal(rejReasonName(28), 'IB_CM_REJ_CONSUMER_DEFINED');
    assert.equal(rejReasonName(34), 'unrecognized reason (34)');
    assert.equal(sidrStatusName(3), 'IB_SIDR_NO_QP');
  });
});

describe('a Linux 6.1 capture: rping -c over RoCEv2 (IPv4 and IPv6) against nobody', () => {
  const frames = roceFrames('rping-req-6.1.pcap');

  it('6 frames: UD SEND-only to QP1 with the GSI Q_Key, REQ, REQ retry, REJ; per address family', () => {
    assert.equal(frames.length, 6);
    for (const f of frames) {
      assert.equal(f.bth[0], 0x64); // UD SEND_ONLY
      assert.equal(f.bth.readUInt16BE(2), 0xffff);
      assert.equal(f.bth.readUInt32BE(4) & 0xffffff, 1); // destination QP1
      assert.equal(f.deth.readUInt32BE(0), 0x80010000);
      assert.equal(f.deth.readUInt32BE(4) & 0xffffff, 1); // source QP1
    }
    assert.deepEqual(frames.map((f) => f.ipVersion), [4, 4, 4, 6, 6, 6]);
    const kinds = frames.map((f) => { const r = decodeCmMad(f.mad); assert.ok(r.ok, JSON.stringify(!r.ok && r.error)); return r.value.msg.kind; });
    assert.deepEqual(kinds, ['REQ', 'REQ', 'REJ', 'REQ', 'REQ', 'REJ']);
    assert.deepEqual(frames[0]!.mad, frames[1]!.mad); // the retry is the same MAD
  });

  it('the REQ as cm_format_req and cma_connect_ib fill it for RoCEv2', () => {
    const r = decodeCmMad(frames[0]!.mad);
    assert.ok(r.ok && r.value.msg.kind === 'REQ');
    const { header, msg: q } = r.value;
    assert.deepEqual([header.baseVersion, header.mgmtClass, header.classVersion, header.method, header.attrId], [1, 7, 2, 3, 0x10]);
    // tid = the MAD agent's hi_tid << 32 | the local comm id as the little-endian host stores a
    // __be32 (the id is random per run: 0x8b385727 gave tid 0x2_2757388b in the first capture)
    assert.notEqual(q.localCommId, 0);
    assert.equal(header.tid, (2n << 32n) | BigInt(bswap32(q.localCommId)));
    assert.equal(bswap32(0x8b385727), 0x2757388b);
    assert.equal(q.serviceId, RDMA_IB_IP_PS_TCP | 7174n);
    assert.deepEqual(parseServiceId(q.serviceId), { ps: PortSpace.TCP, port: 7174 });
    assert.equal(q.localCaGuid, 0x505400fffe770002n); // the node GUID
    assert.equal(q.localQkey, 0);
    assert.equal(q.localQpn, 0x11);
    assert.deepEqual([q.responderResources, q.initiatorDepth], [1, 1]);
    assert.deepEqual([q.remoteCmResponseTimeout, q.localCmResponseTimeout, q.maxCmRetries], [20, 20, 15]); // CMA_CM_RESPONSE_TIMEOUT, CMA_MAX_CM_RETRIES
    assert.equal(reqQpType(q), 'RC');
    assert.equal(q.endToEndFlowControl, 0);
    assert.deepEqual([q.retryCount, q.rnrRetryCount, q.srq], [7, 7, 0]);
    assert.ok(q.startingPsn >= 0 && q.startingPsn < 1 << 24); // random per run (24 bits)
    assert.equal(q.partitionKey, 0xffff);
    assert.equal(q.pathMtu, 3); // IB_MTU_1024
    assert.deepEqual([q.primaryLocalLid, q.primaryRemoteLid], [0xffff, 0xffff]); // hop limit > 1: permissive LIDs
    assert.deepEqual(q.primaryLocalGid, roceGid('10.77.0.2'));
    assert.deepEqual(q.primaryRemoteGid, roceGid('10.77.0.1'));
    assert.deepEqual([q.primaryTrafficClass, q.primaryHopLimit, q.primarySl, q.primarySubnetLocal, q.primaryPacketRate], [0, 64, 0, 0, 0]);
    assert.equal(q.primaryLocalAckTimeout, 19); // cm_ack_timeout(rxe's ack delay 15, packet life 18)
    assert.ok(q.alternateLocalGid.every((x) => x === 0) && q.alternateLocalLid === 0);
    const h = decodeCmaHeader(q.privateData);
    assert.ok(h.ok);
    // the source port is the client's ephemeral port, different per run
    assert.deepEqual(h.value, { ipVersion: 4, srcPort: h.value.srcPort, srcAddr: '10.77.0.2', dstAddr: '10.77.0.1' });
    assert.ok(h.value.srcPort >= 1024);
    assert.equal(q.primaryFlowLabel, cmaRoceFlowLabel(h.value.srcPort, 7174));
    assert.equal(cmaRoceFlowLabel(46136, 7174), 0x5eece); // the first capture's pair
    // IPv4 in the cma_hdr: 12 zero bytes and the address, not the ::ffff: form the GIDs use
    assert.equal(q.privateData.subarray(4, 20).toString('hex'), '00'.repeat(12) + '0a4d0002');
    assert.deepEqual(encodeCmaHeader(h.value), q.privateData.subarray(0, CMA_HDR_SIZE));
    assert.ok(cmaUserData(q.privateData).every((x) => x === 0));
  });

  it('the IPv6 REQ: IPv6 GIDs and cma_hdr, flow label from the ports', () => {
    const r = decodeCmMad(frames[3]!.mad);
    assert.ok(r.ok && r.value.msg.kind === 'REQ');
    const q = r.value.msg;
    assert.equal(q.serviceId, RDMA_IB_IP_PS_TCP | 7175n);
    assert.deepEqual(q.primaryLocalGid, roceGid('fd77::2'));
    const h = decodeCmaHeader(q.privateData);
    assert.ok(h.ok);
    assert.deepEqual(h.value, { ipVersion: 6, srcPort: h.value.srcPort, srcAddr: 'fd77::2', dstAddr: 'fd77::1' });
    assert.equal(q.primaryFlowLabel, cmaRoceFlowLabel(h.value.srcPort, 7175));
  });

  it('the REJ Linux sends when the REQ_SENT id is destroyed: TIMEOUT, message OTHER, ARI = the 8-byte node GUID', () => {
    const r = decodeCmMad(frames[2]!.mad);
    assert.ok(r.ok && r.value.msg.kind === 'REJ');
    const j = r.value.msg;
    const req = decodeCmMad(frames[0]!.mad);
    assert.ok(req.ok && req.value.msg.kind === 'REQ');
    assert.equal(r.value.header.tid, req.value.header.tid); // the REQ's transaction
    assert.deepEqual([j.localCommId, j.remoteCommId], [req.value.msg.localCommId, 0]);
    assert.equal(j.messageRejected, CmMsgResponse.OTHER);
    assert.equal(j.reason, RejReason.TIMEOUT);
    assert.equal(rejAri(j).toString('hex'), '505400fffe770002');
  });

  it('every captured MAD re-encodes to the same 256 bytes', () => {
    for (const f of frames) {
      const r = decodeCmMad(f.mad);
      assert.ok(r.ok);
      assert.deepEqual(encodeCmMad(r.value.msg, r.value.header.tid), Buffer.from(f.mad));
    }
  });
});

describe('RDMA CM header and service ids', () => {
  it('service ids: (port space << 16) | port', () => {
    assert.equal(serviceIdFor(PortSpace.TCP, 7174), 0x0000000001061c06n);
    assert.equal(serviceIdFor(PortSpace.UDP, 1), RDMA_IB_IP_PS_UDP | 1n);
    assert.equal(serviceIdFor(PortSpace.IB, 0xffff), 0x00000000013fffffn);
    assert.equal(serviceIdFor(PortSpace.IPOIB, 5), 0x0000000000020005n);
    assert.equal(parseServiceId(0x0000000001070000n), undefined);
    assert.equal(parseServiceId(0x1000000001060001n), undefined);
  });

  it('header: 36 bytes; IPv6 addresses whole; refuses other versions', () => {
    const b = encodeCmaHeader({ ipVersion: 6, srcPort: 0x1234, srcAddr: 'fe80::1', dstAddr: '::ffff:10.0.0.1' });
    assert.equal(b.toString('hex'), '00' + '60' + '1234' + 'fe800000000000000000000000000001' + '00000000000000000000ffff0a000001');
    const d = decodeCmaHeader(b);
    assert.ok(d.ok);
    assert.deepEqual(d.value, { ipVersion: 6, srcPort: 0x1234, srcAddr: 'fe80::1', dstAddr: '::ffff:10.0.0.1' });
    const v = Buffer.from(b); v[0] = 1;
    assert.equal((decodeCmaHeader(v) as { error: { field: string } }).error.field, 'cmaVersion');
    v[0] = 0; v[1] = 0x50;
    assert.equal((decodeCmaHeader(v) as { error: { field: string } }).error.field, 'ipVersion');
    assert.equal((decodeCmaHeader(b.subarray(0, 35)) as { error: { field: string } }).error.field, 'length');
    assert.equal(cmaReqPrivateData({ ipVersion: 4, srcPort: 1, srcAddr: '1.2.3.4', dstAddr: '5.6.7.8' }, Buffer.alloc(56)).length, 92);
    assert.throws(() => cmaReqPrivateData({ ipVersion: 4, srcPort: 1, srcAddr: '1.2.3.4', dstAddr: '5.6.7.8' }, Buffer.alloc(57)), /56/);
  });
});

// ---- properties ----

/** An arbitrary valid message of a kind, field by field from its table. */
function arbMessage(kind: CmKind): fc.Arbitrary<CmMessage> {
  const rec: Record<string, fc.Arbitrary<unknown>> = { kind: fc.constant(kind) };
  for (const f of CM_LAYOUTS[kind] as readonly FieldLoc[]) {
    if (f.kind === 'uint') rec[f.name] = fc.integer({ min: 0, max: 2 ** f.width - 1 });
    else if (f.kind === 'u64') rec[f.name] = fc.bigInt({ min: 0n, max: (1n << 64n) - 1n });
    else rec[f.name] = fc.uint8Array({ minLength: f.width / 8, maxLength: f.width / 8 }).map((a) => Buffer.from(a));
  }
  if (kind === 'REJ') { rec.messageRejected = fc.integer({ min: 0, max: 2 }); rec.rejectedInfoLength = fc.integer({ min: 0, max: 72 }); }
  if (kind === 'MRA') rec.messageMraed = fc.integer({ min: 0, max: 2 });
  if (kind === 'SIDR_REP') rec.additionalInfoLength = fc.integer({ min: 0, max: 72 });
  return fc.record(rec).map((o) => ({ ...o })) as fc.Arbitrary<CmMessage>;
}
const arbAny = fc.oneof(...CM_KINDS.map(arbMessage));

describe('properties', () => {
  it('decode(encode(m)) == m for random valid messages of every kind', () => {
    fc.assert(fc.property(arbAny, fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }), (m, tid) => {
      const r = decodeCmMad(encodeCmMad(m, tid));
      assert.ok(r.ok);
      assert.equal(r.value.header.tid, tid);
      assert.deepEqual(r.value.msg, m);
    }), { numRuns: 500 });
  });

  it('decoding random bytes of any length never throws; 256-byte CM MADs decode or name a field', () => {
    const fields = new Set(['length', 'baseVersion', 'mgmtClass', 'classVersion', 'method', 'attrId', 'messageMraed', 'messageRejected', 'rejectedInfoLength', 'additionalInfoLength']);
    fc.assert(fc.property(fc.uint8Array({ minLength: 0, maxLength: 300 }), (a) => {
      const r = decodeCmMad(a);
      if (!r.ok) assert.ok(fields.has(r.error.field), r.error.field);
    }), { numRuns: 500 });
    fc.assert(fc.property(fc.uint8Array({ minLength: 232, maxLength: 232 }), fc.integer({ min: 0x10, max: 0x18 }), (data, attr) => {
      const b = encodeMad({ baseVersion: 1, mgmtClass: 7, classVersion: 2, method: 3, status: 0, classSpecific: 0, tid: 1n, attrId: attr, resv: 0, attrMod: 0 }, data);
      const r = decodeCmMad(b);
      if (!r.ok) assert.ok(fields.has(r.error.field), r.error.field);
      else assert.equal(CmAttrId[r.value.msg.kind], attr);
      decodeCmaHeader(data);
    }), { numRuns: 1000 });
  });
});
