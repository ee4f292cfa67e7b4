// SMC-R and CLC v2 codecs (src/smc/clc.ts, second half) against byte vectors assembled by hand
// from Linux 6.12's structs (net/smc/smc_clc.h; each vector's comment maps bytes to members),
// round trips, and hostile input that must end in a ClcError naming a field, never another throw.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import {
  ClcError, CLC_ACCEPT, CLC_CONFIRM, CLC_DECLINE, CLC_PROPOSAL, CLC_V2_MAX_LEN, DECLINE, SMC_TYPE_B, SMC_TYPE_D, SMC_TYPE_N, SMC_TYPE_R,
  clcFrameLengthAny, decodeClc, decodeSmcClc, declineName, encodeAcceptConfirm, encodeProposal, encodeSmcDecline, encodeSmcProposal,
  encodeSmcrAcceptConfirm, ueidValid, type SmcProposal, type SmcrAcceptConfirm,
} from '../../src/smc/clc.js';

const hex = (...parts: string[]): Buffer => Buffer.from(parts.join('').replace(/\s+/g, ''), 'hex');
const peerId = hex('0102030405060708');
const gid = hex('00000000000000000000ffff0a000001'); // ::ffff:10.0.0.1, a RoCEv2 GID as rxe has it
const mac = hex('020000000001');
const ueid = 'SOFTRDMA-TEST-EID'.padEnd(32, ' ');
const host = 'host-a'.padEnd(32, ' ');

const acceptV1: SmcrAcceptConfirm = {
  type: CLC_ACCEPT, version: 1, firstContact: true, peerId, gid, mac, qpn: 0x11, rmbRkey: 0x12345678, rmbeIndex: 1,
  rmbeAlertToken: 0x101, rmbeSize: 4, qpMtu: 3, rmbDmaAddr: 0x7f0012340000n, psn: 0xabcdef, eid: null, fce: null, gidList: null,
};

describe('SMC-R CLC layouts (hand-assembled from smc_clc.h)', () => {
  it('v1 SMC-R accept: 68 bytes (smcr_clc_msg_accept_confirm)', () => {
    assert.equal(encodeSmcrAcceptConfirm(acceptV1).toString('hex'), hex(
      'e2d4c3d9', '02', '0044', '18', //     hdr: "SMCR", ACCEPT, length 68, version 1 | first contact (typev2 bit 1) | typev1 R
      '0102030405060708', //                 lcl.id_for_peer
      '00000000000000000000ffff0a000001', // lcl.gid
      '020000000001', //                     lcl.mac
      '000011', //                           qpn[3]                  (offset 38)
      '12345678', //                         rmb_rkey                (41)
      '01', //                               rmbe_idx                (45)
      '00000101', //                         rmbe_alert_token        (46)
      '43', //                               rmbe_size 4 (256 KiB) << 4 | qp_mtu 3 (1024)   (50)
      '00', //                               reserved
      '00007f0012340000', //                 rmb_dma_addr            (52)
      '00', //                               reserved2
      'abcdef', //                           psn[3]                  (61)
      'e2d4c3d9', //                         trl
    ).toString('hex'));
  });

  it('v2 SMC-R confirm at first contact: r1 EID, 52-byte first-contact extension (v2x), GID list', () => {
    const m: SmcrAcceptConfirm = {
      ...acceptV1, type: CLC_CONFIRM, version: 2, eid: ueid,
      fce: { v2Direct: true, osType: 2, release: 1, hostname: host, v2x: { maxConns: 255, maxLinks: 2, featureMask: 1, vendorExpOptions: 0 } },
      gidList: [gid],
    };
    const b = encodeSmcrAcceptConfirm(m);
    assert.equal(b.toString('hex'), hex(
      'e2d4c3d9', '03', '00b4', '28', //     CONFIRM, length 180, version 2 | first contact | typev1 R
      '0102030405060708', '00000000000000000000ffff0a000001', '020000000001',
      '000011', '12345678', '01', '00000101', '43', '00', '00007f0012340000', '00', 'abcdef', // r0 as in v1
      Buffer.from(ueid, 'latin1').toString('hex'), '00'.repeat(8), // r1: eid[32], reserved6[8]
      '80', '21', '0000', Buffer.from(host, 'latin1').toString('hex'), // fce: v2_direct, os_type 2 (Linux) << 4 | release 1, reserved2, hostname[32]
      'ff', '02', '0001', '00000000', '00'.repeat(8), // fce v2x: max_conns, max_links, feature_mask, vendor_exp_options, reserved4
      '01', '000000', '00000000000000000000ffff0a000001', // smc_clc_fce_gid_ext: gid_cnt 1, reserved, gid[0]
      'e2d4c3d9',
    ).toString('hex'));
    assert.deepEqual(decodeSmcClc(b), m);
  });

  it('v2 accept/confirm: the first-contact form follows its release, and bytes beyond the message are ignored, as Linux', () => {
    // Release 0: the 36-byte form without v2x fields, then 16 reserved bytes, then the GID list
    // (Linux 6.1's smc_clc_fce_gid_ext opens with reserved[16]; 6.12 sends 52 bytes for every
    // SMC-R release): a 6.1 Confirm's GID list is found where 6.1 put it.
    const old: SmcrAcceptConfirm = {
      ...acceptV1, type: CLC_CONFIRM, version: 2, eid: ueid,
      fce: { v2Direct: false, osType: 2, release: 0, hostname: host, v2x: null },
      gidList: [Buffer.from('00000000000000000000ffff01020304', 'hex'), gid],
    };
    const oldBytes = encodeSmcrAcceptConfirm(old);
    const fceAt = 104; // 108-byte v2 body (r0 + r1) minus the trailer
    assert.equal(oldBytes.subarray(fceAt, fceAt + 2).toString('hex'), '0020', 'release 0, os type 2');
    assert.ok(oldBytes.subarray(fceAt + 36, fceAt + 52).equals(Buffer.alloc(16)), '16 reserved bytes after the 36-byte form');
    assert.equal(oldBytes[fceAt + 52], 2, 'gid_cnt 52 bytes after the extension');
    assert.deepEqual(decodeSmcClc(oldBytes), old);
    // A 6.1-style Confirm with something other than zeros in the reserved bytes: the same list.
    const dirty = Buffer.from(oldBytes);
    dirty.fill(0xee, fceAt + 36, fceAt + 52);
    assert.deepEqual(decodeSmcClc(dirty), old);
    // Eight more bytes before the trailer (a later release's extension): decoded the same.
    for (const m of [old, { ...old, type: CLC_ACCEPT, gidList: null } as SmcrAcceptConfirm, { ...old, firstContact: false, fce: null, gidList: null } as SmcrAcceptConfirm]) {
      const b = encodeSmcrAcceptConfirm(m);
      const longer = Buffer.concat([b.subarray(0, b.length - 4), Buffer.alloc(8, 0xee), b.subarray(b.length - 4)]);
      longer.writeUInt16BE(longer.length, 5);
      assert.deepEqual(decodeSmcClc(longer), m);
    }
    // Too short for what the release says (a release-0 Accept needs the 36-byte form): refused, naming the length.
    const b = encodeSmcrAcceptConfirm({ ...old, type: CLC_ACCEPT, gidList: null });
    const cut = Buffer.concat([b.subarray(0, b.length - 4 - 20), b.subarray(b.length - 4)]);
    cut.writeUInt16BE(cut.length, 5);
    assert.throws(() => decodeSmcClc(cut), (e: unknown) => e instanceof ClcError && e.field === 'length');
  });

  it('v2 proposal as Linux 6.12 sends it for a RoCEv2-only device: typev1 N, typev2 R, no prefix area, one UEID', () => {
    const p: Omit<SmcProposal, 'type'> = {
      version: 2, typeV1: SMC_TYPE_N, typeV2: SMC_TYPE_R,
      // Linux fills smc_clc_msg_local only when SMC-Rv1 is offered (smc_clc.c 906-913): zeros here.
      peerId: Buffer.alloc(8), gid: Buffer.alloc(16), mac: Buffer.alloc(6), ismGid: 0n, ismChid: 0, proof: null, prefix: null,
      v2: { release: 1, seid: false, roceGid: gid, maxConns: 255, maxLinks: 2, featureMask: 1, userEids: [ueid], smcd: null },
    };
    const b = encodeSmcProposal(p);
    assert.equal(b.toString('hex'), hex(
      'e2d4c3d9', '01', '009c', '22', //     PROPOSAL, length 156, version 2 << 4 | typev2 R << 2 | typev1 N
      '00'.repeat(30), //                    lcl: id_for_peer, gid, mac (not filled without SMC-Rv1)
      '0000', //                             iparea_offset: 0 (no prefix area)
      '0000000000000000', '0000', '001c', '000000', '0000000000', '00'.repeat(20), // smc_clc_msg_smcd: ism gid, chid, v2_ext_offset 28, oui, exp options, reserved
      '01', '00', '00', '10', '0000', '0000', // v2 ext hdr: eid_cnt 1, ism_gid_cnt 0, reserved1, flag release 1 << 4 | seid 0, reserved2, smcd_v2_ext_offset 0
      '00000000000000000000ffff0a000001', // roce[16]: the RoCEv2 GID
      'ff', '02', '0001', '00'.repeat(12), // max_conns 255, max_links 2, feature_mask, reserved[12]
      Buffer.from(ueid, 'latin1').toString('hex'), // user_eids[0]
      'e2d4c3d9',
    ).toString('hex'));
    assert.deepEqual(decodeSmcClc(b), { type: CLC_PROPOSAL, ...p });
  });

  it("softrdma's combined offer: SMC-D v1 (typev1 D) and SMC-Rv2 (typev2 R) in one v2 proposal", () => {
    const p: Omit<SmcProposal, 'type'> = {
      version: 2, typeV1: SMC_TYPE_D, typeV2: SMC_TYPE_R, peerId, gid, mac, ismGid: 0x1122334455667788n, ismChid: 0xffff, proof: Buffer.alloc(16, 0xaa),
      prefix: { subnet: '10.0.0.0', prefixLength: 24, ipv6Prefixes: [] },
      v2: { release: 1, seid: false, roceGid: gid, maxConns: 255, maxLinks: 2, featureMask: 1, userEids: [ueid], smcd: null },
    };
    const b = encodeSmcProposal(p);
    assert.equal(b.toString('hex'), hex(
      'e2d4c3d9', '01', '00a4', '21', //     length 164, version 2 | typev2 R | typev1 D
      '0102030405060708', '00000000000000000000ffff0a000001', '020000000001',
      '0028', //                             iparea_offset 40
      '1122334455667788', 'ffff', '0024', '00'.repeat(12), 'aa'.repeat(16), // ism gid, chid, v2_ext_offset 36 (28 + 8-byte prefix area), oui, exp options, softrdma's proof in reserved[4..20]
      '0a000000', '18', '0000', '00', //     outgoing_subnet, prefix_len 24, reserved, ipv6_prefixes_cnt 0
      '01', '00', '00', '10', '0000', '0000', '00000000000000000000ffff0a000001', 'ff', '02', '0001', '00'.repeat(12),
      Buffer.from(ueid, 'latin1').toString('hex'),
      'e2d4c3d9',
    ).toString('hex'));
    assert.deepEqual(decodeSmcClc(b), { type: CLC_PROPOSAL, ...p });
  });

  it('v1 proposal of type B (RFC 7609 layout): SMC-R fields, SMC-D area, prefix area', () => {
    const p: Omit<SmcProposal, 'type'> = {
      version: 1, typeV1: SMC_TYPE_B, typeV2: SMC_TYPE_N, peerId, gid, mac, ismGid: 5n, ismChid: 7, proof: Buffer.alloc(16),
      prefix: { subnet: '10.0.0.0', prefixLength: 24, ipv6Prefixes: [{ prefix: 'fe80:0:0:0:0:0:0:0', length: 64 }] }, v2: null,
    };
    const b = encodeSmcProposal(p);
    assert.equal(b.toString('hex'), hex(
      'e2d4c3d9', '01', '006d', '13', //     length 109, version 1 | typev1 B
      '0102030405060708', '00000000000000000000ffff0a000001', '020000000001', '0028',
      '0000000000000005', '0007', '0000', '00'.repeat(28), // v1: no v2_ext_offset
      '0a000000', '18', '0000', '01', 'fe800000000000000000000000000000', '40',
      'e2d4c3d9',
    ).toString('hex'));
    assert.deepEqual(decodeSmcClc(b), { type: CLC_PROPOSAL, ...p });
  });

  it('v2 decline: 44 bytes, os_type, four more diagnosis words; v1 decline: 28 bytes, os_type 0 as Linux', () => {
    const b = encodeSmcDecline({ version: 2, outOfSync: true, peerId, diagnosis: DECLINE.NOSMCRDEV, osType: 2, diagnosisV2: [DECLINE.NOUEID, 0, 0, 0] });
    assert.equal(b.toString('hex'), hex(
      'e2d4c3d9', '04', '002c', '28', '0102030405060708', '03030002', '20', '000000', '03030008', '00000000', '00000000', '00000000', 'e2d4c3d9',
    ).toString('hex'));
    const v1 = encodeSmcDecline({ version: 1, outOfSync: false, peerId, diagnosis: DECLINE.SYNCERR, osType: 0, diagnosisV2: [] });
    assert.equal(v1.toString('hex'), hex('e2d4c3d9', '04', '001c', '10', '0102030405060708', '04000000', '00', '000000', 'e2d4c3d9').toString('hex'));
    assert.deepEqual(decodeSmcClc(b), { type: CLC_DECLINE, version: 2, outOfSync: true, peerId, diagnosis: 0x03030002, osType: 2, diagnosisV2: [0x03030008, 0, 0, 0], eyecatcher: 'SMCR' });
  });

  it('validates user EIDs as smc_clc_ueid_valid does', () => {
    for (const ok of [ueid, 'A', 'SOFTRDMA-SMCR', 'X.Y-Z0', '0'.repeat(32), 'A\t', 'Ä', 'A\u00a0']) assert.equal(ueidValid(ok), true, ok); // kernel ctype: Ä upper, NBSP space
    for (const bad of ['', ' ', 'lower', 'A B', '-A', '.A', 'A_B', 'A'.repeat(33), 'ä', '×', 'Aé', '\u0100']) assert.equal(ueidValid(bad), false, bad);
  });

  it("names every reason code of Linux 6.12's table", () => {
    const codes: Record<string, number> = {
      MEM: 0x01010000, TIMEOUT_CL: 0x02010000, TIMEOUT_AL: 0x02020000, CNFERR: 0x03000000, PEERNOSMC: 0x03010000, IPSEC: 0x03020000,
      NOSMCDEV: 0x03030000, NOSMCDDEV: 0x03030001, NOSMCRDEV: 0x03030002, NOISM2SUPP: 0x03030003, NOV2EXT: 0x03030004, NOV2DEXT: 0x03030005,
      NOSEID: 0x03030006, NOSMCD2DEV: 0x03030007, NOUEID: 0x03030008, RELEASEERR: 0x03030009, MAXCONNERR: 0x0303000a, MAXLINKERR: 0x0303000b,
      MODEUNSUPP: 0x03040000, RMBE_EC: 0x03050000, OPTUNSUPP: 0x03060000, DIFFPREFIX: 0x03070000, GETVLANERR: 0x03080000, ISMVLANERR: 0x03090000,
      NOACTLINK: 0x030a0000, NOSRVLINK: 0x030b0000, VERSMISMAT: 0x030c0000, MAX_DMB: 0x030d0000, NOROUTE: 0x030e0000, NOINDIRECT: 0x030f0000,
      SYNCERR: 0x04000000, PEERDECL: 0x05000000, INTERR: 0x09990000, ERR_RTOK: 0x09990001, ERR_RDYLNK: 0x09990002, ERR_REGBUF: 0x09990003,
    };
    assert.deepEqual({ ...DECLINE }, codes);
    for (const [k, v] of Object.entries(codes)) assert.match(declineName(v), new RegExp(`^SMC_CLC_DECL_${k} \\(`));
  });
});

describe('the SMC-D v1 codec is unchanged, and the general decoder reads it', () => {
  it('decodeSmcClc reads SMC-D v1 proposals and accepts/confirms as the handshake encodes them', () => {
    const prop = encodeProposal({ version: 1, path: SMC_TYPE_D, peerId, smcdGid: 0x1122334455667788n, chid: 0xffff, subnet: '127.0.0.0', prefixLength: 8, ipv6Prefixes: [], proof: Buffer.alloc(16, 0xaa) });
    const p = decodeSmcClc(prop);
    assert.equal(p.type, CLC_PROPOSAL);
    if (p.type === CLC_PROPOSAL && 'typeV1' in p) {
      assert.equal(p.typeV1, SMC_TYPE_D); assert.equal(p.ismGid, 0x1122334455667788n); assert.equal(p.ismChid, 0xffff);
      assert.deepEqual(p.prefix, { subnet: '127.0.0.0', prefixLength: 8, ipv6Prefixes: [] });
      assert.deepEqual(p.proof, Buffer.alloc(16, 0xaa));
    }
    const ac = { type: CLC_ACCEPT, version: 1, firstContact: true, gid: 0xa1n, token: 0xb2n, dmbeIndex: 0, dmbeSize: 4, linkId: 7 } as const;
    assert.deepEqual(decodeSmcClc(encodeAcceptConfirm(ac)), decodeClc(encodeAcceptConfirm(ac)));
  });

  it('the old decoder still refuses SMC-R accept/confirm (MODEUNSUPP), as the SMC-D handshake expects', () => {
    assert.throws(() => decodeClc(encodeSmcrAcceptConfirm(acceptV1)), (e: unknown) => e instanceof ClcError && e.reason === DECLINE.MODEUNSUPP);
  });
});

const buf = (n: number) => fc.uint8Array({ minLength: n, maxLength: n }).map((a) => Buffer.from(a));
const text32 = fc.string({ minLength: 32, maxLength: 32 }).map((s) => Buffer.from(s, 'latin1').toString('latin1')).filter((s) => s.length === 32 && Buffer.byteLength(s, 'latin1') === 32);
const u = (bits: number) => fc.integer({ min: 0, max: 2 ** bits - 1 });
const u64 = fc.bigInt({ min: 0n, max: (1n << 64n) - 1n });

const arbAcceptConfirm: fc.Arbitrary<SmcrAcceptConfirm> = fc.record({
  type: fc.constantFrom(CLC_ACCEPT, CLC_CONFIRM), version: fc.constantFrom(1, 2), firstContact: fc.boolean(),
  peerId: buf(8), gid: buf(16), mac: buf(6), qpn: u(24), rmbRkey: u(32), rmbeIndex: u(8), rmbeAlertToken: u(32), rmbeSize: u(4), qpMtu: u(4),
  rmbDmaAddr: u64, psn: u(24), eid: text32, fceLong: fc.boolean(), v2Direct: fc.boolean(), osType: u(4), release: u(4), hostname: text32,
  maxConns: u(8), maxLinks: u(8), featureMask: u(16), vendor: u(32), gids: fc.array(buf(16), { maxLength: 2 }),
}).map((r) => {
  const v2 = r.version === 2;
  // The form follows the release, as Linux reads it: v2x from release 1 on, 36 bytes before.
  const fce = v2 && r.firstContact ? { v2Direct: r.v2Direct, osType: r.osType, release: r.fceLong ? Math.max(1, r.release) : 0, hostname: r.hostname,
    v2x: r.fceLong ? { maxConns: r.maxConns, maxLinks: r.maxLinks, featureMask: r.featureMask, vendorExpOptions: r.vendor } : null } : null;
  return {
    type: r.type, version: r.version, firstContact: r.firstContact, peerId: r.peerId, gid: r.gid, mac: r.mac, qpn: r.qpn, rmbRkey: r.rmbRkey,
    rmbeIndex: r.rmbeIndex, rmbeAlertToken: r.rmbeAlertToken, rmbeSize: r.rmbeSize, qpMtu: r.qpMtu, rmbDmaAddr: r.rmbDmaAddr, psn: r.psn,
    eid: v2 ? r.eid : null, fce, gidList: v2 && r.firstContact && r.type === CLC_CONFIRM ? r.gids : null,
  };
});

const arbProposal: fc.Arbitrary<Omit<SmcProposal, 'type'>> = fc.record({
  version: fc.constantFrom(1, 2), typeV1: fc.constantFrom(SMC_TYPE_R, SMC_TYPE_D, SMC_TYPE_N, SMC_TYPE_B), typeV2: fc.constantFrom(SMC_TYPE_R, SMC_TYPE_D, SMC_TYPE_N, SMC_TYPE_B),
  peerId: buf(8), gid: buf(16), mac: buf(6), ismGid: u64, ismChid: u(16), subnet: fc.ipV4(), prefixLength: u(8),
  v6: fc.array(fc.record({ prefix: buf(16), length: u(8) }), { maxLength: 8 }), release: u(4), seid: fc.boolean(), roceGid: buf(16),
  maxConns: u(8), maxLinks: u(8), featureMask: u(16), eids: fc.array(text32, { maxLength: 8 }), systemEid: text32, proof: buf(16),
  gidChids: fc.array(fc.record({ gid: u64, chid: u(16) }), { maxLength: 8 }),
}).filter((r) => r.version === 2 || r.typeV1 !== SMC_TYPE_N).map((r) => {
  const v2 = r.version === 2;
  const typeV2 = v2 ? r.typeV2 : SMC_TYPE_N;
  const smcArea = v2 || r.typeV1 === SMC_TYPE_D || r.typeV1 === SMC_TYPE_B;
  const groups = (b: Buffer) => Array.from({ length: 8 }, (_, i) => b.readUInt16BE(2 * i).toString(16)).join(':');
  return {
    version: r.version, typeV1: r.typeV1, typeV2, peerId: r.peerId, gid: r.gid, mac: r.mac,
    ismGid: smcArea ? r.ismGid : 0n, ismChid: smcArea ? r.ismChid : 0, proof: r.typeV1 === SMC_TYPE_D || r.typeV1 === SMC_TYPE_B ? r.proof : null,
    prefix: r.typeV1 === SMC_TYPE_N ? null : { subnet: r.subnet, prefixLength: r.prefixLength, ipv6Prefixes: r.v6.map((x) => ({ prefix: groups(x.prefix), length: x.length })) },
    v2: v2 && typeV2 !== SMC_TYPE_N ? {
      release: r.release, seid: r.seid, roceGid: r.roceGid, maxConns: r.maxConns, maxLinks: r.maxLinks, featureMask: r.featureMask, userEids: r.eids,
      smcd: typeV2 === SMC_TYPE_D || typeV2 === SMC_TYPE_B ? { systemEid: r.systemEid, gidChids: r.gidChids.map((g) => ({ ...g })) } : null,
    } : null,
  };
});

describe('SMC-R CLC round trips and hostile input (property)', () => {
  it('decode(encode(m)) is m for accept/confirm, proposals and declines', () => {
    fc.assert(fc.property(arbAcceptConfirm, (m) => assert.deepEqual(decodeSmcClc(encodeSmcrAcceptConfirm(m)), m)));
    fc.assert(fc.property(arbProposal, (p) => {
      const b = encodeSmcProposal(p);
      assert.ok(b.length <= CLC_V2_MAX_LEN);
      assert.deepEqual(decodeSmcClc(b), { type: CLC_PROPOSAL, ...p });
    }));
    fc.assert(fc.property(fc.constantFrom(1, 2), fc.boolean(), buf(8), u(32), u(4), fc.array(u(32), { minLength: 4, maxLength: 4 }), fc.constantFrom<'SMCR' | 'SMCD'>('SMCR', 'SMCD'),
      (version, outOfSync, pid, diagnosis, osType, d2, eyecatcher) => {
        const m = { version, outOfSync, peerId: pid, diagnosis, osType, diagnosisV2: version === 2 ? d2 : [], eyecatcher };
        assert.deepEqual(decodeSmcClc(encodeSmcDecline(m)), { type: CLC_DECLINE, ...m });
      }));
  });

  it('mutated, truncated, extended or random bytes decode or throw ClcError with a field, nothing else', () => {
    const valid = fc.oneof(arbAcceptConfirm.map(encodeSmcrAcceptConfirm), arbProposal.map(encodeSmcProposal),
      fc.constant(encodeSmcDecline({ version: 2, outOfSync: false, peerId, diagnosis: 1, osType: 2, diagnosisV2: [0, 0, 0, 0] })));
    const check = (b: Buffer): void => {
      try {
        const n = clcFrameLengthAny(b);
        if (n > 0) decodeSmcClc(b.subarray(0, n));
      } catch (e) {
        assert.ok(e instanceof ClcError, `unexpected ${(e as Error).name}: ${(e as Error).message}`);
        assert.ok(e.field, `ClcError without a field: ${e.message}`);
      }
    };
    fc.assert(fc.property(valid, fc.array(fc.tuple(fc.nat(), u(8)), { maxLength: 6 }), fc.nat(), buf(3), (msg, edits, cut, extra) => {
      const b = Buffer.from(msg);
      for (const [at, v] of edits) b[at % b.length] = v;
      check(b.subarray(0, cut % (b.length + 1)));
      check(Buffer.concat([b, extra]));
      const longer = Buffer.concat([b, extra]);
      longer.writeUInt16BE(longer.length, 5); // a length that claims the extra bytes
      check(longer);
    }), { numRuns: 3000 });
    fc.assert(fc.property(fc.uint8Array({ maxLength: 700 }), (a) => {
      const b = Buffer.from(a);
      if (b.length >= 4) hex('e2d4c3d9').copy(b);
      check(b);
    }), { numRuns: 3000 });
  });

  it('refuses what Linux refuses, naming the field', () => {
    const fails = (b: Buffer, field: string, reason: number = DECLINE.SYNCERR) =>
      assert.throws(() => decodeSmcClc(b), (e: unknown) => e instanceof ClcError && e.field === field && e.reason === reason, field);
    const a = encodeSmcrAcceptConfirm(acceptV1);
    const long = Buffer.concat([a.subarray(0, 64), Buffer.alloc(4), a.subarray(64)]); long.writeUInt16BE(72, 5);
    fails(long, 'length'); // v1 SMC-R accept must be exactly 68 (smc_clc.c 407-408)
    const t = Buffer.from(a); t[7] = 0x12; fails(t, 'typev1', DECLINE.MODEUNSUPP); // type N accept
    const v0 = Buffer.from(a); v0[7] = 0x08; fails(v0, 'version', DECLINE.VERSMISMAT);
    const tr = Buffer.from(a); tr[67] = 0; fails(tr, 'trl');
    const p = encodeSmcProposal({ version: 2, typeV1: SMC_TYPE_N, typeV2: SMC_TYPE_R, peerId, gid, mac, ismGid: 0n, ismChid: 0, proof: null, prefix: null,
      v2: { release: 1, seid: false, roceGid: gid, maxConns: 255, maxLinks: 2, featureMask: 1, userEids: [ueid], smcd: null } });
    const eids = Buffer.from(p); eids[80] = 9; fails(eids, 'eid_cnt');
    const off = Buffer.from(p); off.writeUInt16BE(30, 50); fails(off, 'v2_ext_offset', DECLINE.NOV2EXT);
    const ipa = Buffer.from(p); ipa.writeUInt16BE(12, 38); fails(ipa, 'iparea_offset');
    assert.throws(() => clcFrameLengthAny(hex('e2d4c3d9', '05', '0010', '10')), (e: unknown) => e instanceof ClcError && e.field === 'type');
    assert.throws(() => clcFrameLengthAny(hex('e2d4c3d9', '01', 'ffff', '20')), (e: unknown) => e instanceof ClcError && e.field === 'length');
    assert.equal(clcFrameLengthAny(p.subarray(0, 20)), 0);
  });
});
