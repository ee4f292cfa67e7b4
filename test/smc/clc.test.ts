// CLC and CDC codecs: fixed layouts (Linux smc_clc.h / smc_cdc.h, SMC-D v1), round trips and
// hostile input that must end in a ClcError, never another exception.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import {
  ClcError, CLC_ACCEPT, CLC_CONFIRM, CLC_DECLINE, CLC_PROPOSAL, DECLINE, clcFrameLength, compressBufSize, decodeClc, declineName,
  encodeAcceptConfirm, encodeDecline, encodeProposal, encodeSmcDecline, uncompressBufSize,
} from '../../src/smc/clc.js';
import { packCursor, unpackCursor } from '../../src/smc/cdc.js';

const peerId = Buffer.from('0102030405060708', 'hex');

describe('CLC layouts', () => {
  it('SMC-D v1 proposal: 92 bytes, header, iparea_offset 40, ISM GID and CHID, prefix area, trailer', () => {
    const b = encodeProposal({ version: 1, path: 1, peerId, smcdGid: 0x1122334455667788n, chid: 0xffff, subnet: '127.0.0.0', prefixLength: 8, ipv6Prefixes: [] });
    assert.equal(b.toString('hex'),
      'e2d4c3d9' + '01' + '005c' + '11' + '0102030405060708' + '00'.repeat(16) + '00'.repeat(6) + '0028'
      + '1122334455667788' + 'ffff' + '00'.repeat(30)
      + '7f000000' + '08' + '0000' + '00'
      + 'e2d4c3d9');
  });

  it('SMC-D accept: 48 bytes, SMCD eyecatchers, first-contact flag, token, size class in the high nibble', () => {
    const b = encodeAcceptConfirm({ type: CLC_ACCEPT, version: 1, firstContact: true, gid: 0xa1n, token: 0xb2n, dmbeIndex: 0, dmbeSize: 4, linkId: 7 });
    assert.equal(b.toString('hex'),
      'e2d4c3c4' + '02' + '0030' + '19' + '00000000000000a1' + '00000000000000b2' + '00' + '40' + '0000' + '00000007'
      + '00'.repeat(12) + 'e2d4c3c4');
  });

  it('decline: 28 bytes, reason code at offset 16', () => {
    const b = encodeDecline({ diagnosis: DECLINE.PEERNOSMC, smcd: true });
    assert.equal(b.length, 28);
    assert.equal(b.subarray(0, 8).toString('hex'), 'e2d4c3c4' + '04' + '001c' + '10');
    assert.equal(b.readUInt32BE(16), 0x03010000);
    assert.equal(declineName(0x03010000), 'SMC_CLC_DECL_PEERNOSMC (0x03010000)');
  });

  it('v2 decline: 44 bytes decode on the SMC-D path, the trailer unchecked; the length goes by version (smc_clc_msg_decl_valid)', () => {
    const b = encodeSmcDecline({ version: 2, outOfSync: false, peerId, diagnosis: DECLINE.TIMEOUT_CL, osType: 2, diagnosisV2: [1, 2, 3, 4], eyecatcher: 'SMCD' });
    assert.equal(b.toString('hex'),
      'e2d4c3c4' + '04' + '002c' + '20' + '0102030405060708' + '02010000' + '20000000'
      + '00000001' + '00000002' + '00000003' + '00000004' + 'e2d4c3c4');
    assert.deepEqual(decodeClc(b), { type: CLC_DECLINE, version: 2, outOfSync: false, peerId, diagnosis: DECLINE.TIMEOUT_CL, eyecatcher: 'SMCD' });
    const badTrailer = Buffer.from(b);
    badTrailer.fill(0, 40);
    assert.equal((decodeClc(badTrailer) as { diagnosis: number }).diagnosis, DECLINE.TIMEOUT_CL);
    const v1Long = Buffer.from(b);
    v1Long[7] = 0x10; // version 1 in 44 bytes
    assert.throws(() => decodeClc(v1Long), (e: unknown) => e instanceof ClcError && e.reason === DECLINE.SYNCERR);
    const v2Short = encodeDecline({ diagnosis: 1, smcd: true });
    v2Short[7] = 0x20; // version 2 in 28 bytes
    assert.throws(() => decodeClc(v2Short), (e: unknown) => e instanceof ClcError && e.reason === DECLINE.SYNCERR);
  });

  it('buffer size classes are 16 KiB << n', () => {
    assert.deepEqual([16384, 32768, 65536, 262144, 1 << 20].map(compressBufSize), [0, 1, 2, 4, 6]);
    for (let c = 0; c < 16; c++) assert.equal(compressBufSize(uncompressBufSize(c)), c);
  });
});

describe('CLC round trips and hostile input (property)', () => {
  const u64 = fc.bigInt({ min: 0n, max: (1n << 64n) - 1n });
  it('proposal, accept/confirm and decline decode to what was encoded', () => {
    fc.assert(fc.property(u64, fc.integer({ min: 0, max: 0xffff }), fc.integer({ min: 0, max: 32 }),
      fc.array(fc.record({ prefix: fc.constant('fe80:0:0:0:0:0:0:0'), length: fc.integer({ min: 0, max: 128 }) }), { maxLength: 8 }),
      (gid, chid, plen, v6) => {
        const p = decodeClc(encodeProposal({ version: 1, path: 1, peerId, smcdGid: gid, chid, subnet: '10.1.0.0', prefixLength: plen, ipv6Prefixes: v6 }));
        assert.equal(p.type, CLC_PROPOSAL);
        if (p.type !== CLC_PROPOSAL) return;
        assert.equal(p.smcdGid, gid); assert.equal(p.chid, chid); assert.equal(p.prefixLength, plen);
        assert.deepEqual(p.ipv6Prefixes, v6.map((x) => ({ ...x }))); assert.equal(p.subnet, '10.1.0.0');
      }));
    fc.assert(fc.property(fc.constantFrom(CLC_ACCEPT, CLC_CONFIRM), fc.boolean(), u64, u64, fc.integer({ min: 0, max: 15 }), fc.integer({ min: 0, max: 0xffffffff }),
      (type, first, gid, token, size, link) => {
        const m = { type, version: 1, firstContact: first, gid, token, dmbeIndex: 0, dmbeSize: size, linkId: link } as const;
        assert.deepEqual(decodeClc(encodeAcceptConfirm(m)), m);
      }));
    fc.assert(fc.property(fc.integer({ min: 0, max: 0xffffffff }), (d) => {
      const m = decodeClc(encodeDecline({ diagnosis: d }));
      assert.equal(m.type, CLC_DECLINE);
      if (m.type === CLC_DECLINE) assert.equal(m.diagnosis, d);
    }));
  });

  it('any mutation or truncation either decodes or throws ClcError', () => {
    const valid = [
      encodeProposal({ version: 1, path: 1, peerId, smcdGid: 5n, chid: 1, subnet: '127.0.0.0', prefixLength: 8, ipv6Prefixes: [{ prefix: '::', length: 0 }] }),
      encodeAcceptConfirm({ type: CLC_CONFIRM, version: 1, firstContact: false, gid: 1n, token: 2n, dmbeIndex: 0, dmbeSize: 4, linkId: 0 }),
      encodeDecline({ diagnosis: 1 }),
    ];
    fc.assert(fc.property(fc.constantFrom(...valid), fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { maxLength: 6 }), fc.nat(), (msg, edits, cut) => {
      const b = Buffer.from(msg);
      for (const [at, v] of edits) b[at % b.length] = v;
      const t = b.subarray(0, cut % (b.length + 1));
      try {
        const n = clcFrameLength(t);
        if (n > 0 && n <= t.length) decodeClc(t.subarray(0, n));
      } catch (e) {
        assert.ok(e instanceof ClcError, `unexpected ${(e as Error).name}: ${(e as Error).message}`);
      }
    }), { numRuns: 20_000 });
  });
});

describe('SMC-D CDC cursor', () => {
  it('packs {wrap, count, flags} and back (property)', () => {
    fc.assert(fc.property(fc.integer({ min: 0, max: 0xffff }), fc.integer({ min: 0, max: 0xffffffff }), fc.integer({ min: 0, max: 255 }), fc.integer({ min: 0, max: 255 }),
      (wrap, count, pf, cf) => assert.deepEqual(unpackCursor(packCursor(wrap, count, pf, cf)), { wrap, count, prodFlags: pf, connFlags: cf })));
  });
  it('is laid out as Linux smcd_cdc_cursor in host (little-endian) order', () => {
    const b = Buffer.alloc(8);
    b.writeBigInt64LE(packCursor(0x0102, 0x03040506, 0x80, 0x20));
    assert.equal(b.toString('hex'), '0201' + '06050403' + '80' + '20');
  });
});
