// SMC-R LLC messages (src/smc/wire/llc.ts) against vectors assembled by hand from Linux 6.12's
// structs (net/smc/smc_llc.c 24-195), round trips, and every way Linux drops a message.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { LLC_DEL, LLC_TYPES_ACCEPTED, decodeLlc, encodeLlc, type LlcMessage } from '../../src/smc/wire/llc.js';
import { SmcrWireError } from '../../src/smc/wire/error.js';

const hex = (...parts: string[]): Buffer => Buffer.from(parts.join(''), 'hex');
const mac = hex('020000000001');
const gid = hex('00000000000000000000ffff0a000001');
const gid2 = hex('00000000000000000000ffff0a000101');

function vector(m: LlcMessage, ...parts: string[]): void {
  const want = hex(...parts);
  assert.equal(encodeLlc(m).toString('hex'), want.toString('hex'));
  assert.deepEqual(decodeLlc(want), m);
}

describe('LLC layouts (hand-assembled from smc_llc.c)', () => {
  it('CONFIRM_LINK v1 request, as smc_llc_send_confirm_link sends it at first contact', () => {
    vector({ kind: 'CONFIRM_LINK', version: 1, response: false, noRmbeEyec: true, senderMac: mac, senderGid: gid, senderQpn: 0x11, linkNum: 1, linkUid: hex('0a0b0c0d'), maxLinks: 2, maxConns: 0 },
      '01', '2c', '00', '03', // type, length 44, reserved, flags SMC_LLC_FLAG_NO_RMBE_EYEC
      '020000000001', '00000000000000000000ffff0a000001', '000011', '01', '0a0b0c0d', // sender_mac, sender_gid, sender_qp_num, link_num, link_uid
      '02', '00', '00'.repeat(8)); // max_links, max_conns (set only in v2 release 1), reserved
  });

  it('CONFIRM_LINK v2 response: type 0x21, length_v2 44 in host (little-endian) order', () => {
    vector({ kind: 'CONFIRM_LINK', version: 2, response: true, noRmbeEyec: true, senderMac: mac, senderGid: gid, senderQpn: 0x12, linkNum: 1, linkUid: hex('01020304'), maxLinks: 2, maxConns: 255 },
      '21', '2c00', '83', '020000000001', '00000000000000000000ffff0a000001', '000012', '01', '01020304', '02', 'ff', '00'.repeat(8));
  });

  it('ADD_LINK v1 reject response: ADD_LNK_REJ and reason NO_ALT_PATH in byte 2', () => {
    vector({ kind: 'ADD_LINK', version: 1, response: true, rejected: true, rejReason: 1, senderMac: mac, senderGid: gid, senderQpn: 0, linkNum: 0, qpMtu: 0, initialPsn: 0, v2ext: null },
      '02', '2c', '01', 'c0', '020000000001', '0000', '00000000000000000000ffff0a000001', '000000', '00', '00', '000000', '00'.repeat(8));
  });

  it('ADD_LINK v2 request with the v2 extension and one rkey pair (88 bytes)', () => {
    vector({
      kind: 'ADD_LINK', version: 2, response: false, rejected: false, rejReason: 0, senderMac: mac, senderGid: gid2, senderQpn: 0x13, linkNum: 2, qpMtu: 3, initialPsn: 0x123456,
      v2ext: { v2Direct: true, clientTargetGid: gid, rkeys: [{ rmbKey: 0x100, rmbKeyNew: 0x200, rmbVaddrNew: 0x7f0000001000n }] },
    },
    '22', '5800', '00', //                     type 0x22, length_v2 88 (LE), reserved flags
    '020000000001', '0000', '00000000000000000000ffff0a000101', '000013', '02', // sender_mac, reserved2, sender_gid, sender_qp_num, link_num
    '03', '123456', '00'.repeat(8), //          reserved3 | qp_mtu, initial_psn, reserved
    '80', '00', '00000000000000000000ffff0a000001', '00'.repeat(8), '0100', // ext: v2_direct, reserved2, client_target_gid, reserved3, num_rkeys (u16 host order)
    '00000100', '00000200', '00007f0000001000'); // rt[0]: rmb_key, rmb_key_new, rmb_vaddr_new
  });

  it('ADD_LINK_CONT: link, rkeys still to send, two pairs', () => {
    vector({ kind: 'ADD_LINK_CONT', version: 1, response: true, linkNum: 2, numRkeys: 3, rkeys: [
      { rmbKey: 1, rmbKeyNew: 2, rmbVaddrNew: 3n }, { rmbKey: 4, rmbKeyNew: 5, rmbVaddrNew: 6n }] },
    '03', '2c', '00', '80', '02', '03', '0000', '00000001', '00000002', '0000000000000003', '00000004', '00000005', '0000000000000006', '00000000');
  });

  it('DELETE_LINK: all links, orderly, reason OP_INIT_TERM', () => {
    vector({ kind: 'DELETE_LINK', version: 1, response: false, all: true, orderly: true, linkNum: 0, reason: LLC_DEL.OP_INIT_TERM },
      '04', '2c', '00', '60', '00', '00020000', '00'.repeat(35));
  });

  it('REQ_ADD_LINK v2 with two GIDs (60 bytes); v2 DELETE_RKEY with ten rkeys (48 bytes)', () => {
    vector({ kind: 'REQ_ADD_LINK', version: 2, response: false, gids: [gid, gid2] },
      '25', '3c00', '00', '00'.repeat(20), '02', '000000', '00000000000000000000ffff0a000001', '00000000000000000000ffff0a000101');
    const rkeys = Array.from({ length: 10 }, (_, i) => 0x1000 + i);
    vector({ kind: 'DELETE_RKEY', version: 2, response: false, negative: false, numRkeys: 10, errMask: 0, rkeys },
      '29', '3000', '00', '0a', '00', '0000', ...rkeys.map((k) => k.toString(16).padStart(8, '0')));
  });

  it('CONFIRM_RKEY: the rkey for this link in rtoken[0] (count of the others in its first byte), one other link', () => {
    vector({ kind: 'CONFIRM_RKEY', version: 1, response: false, negative: false, retry: false, numRkeys: 1, rmbKey: 0xaabbccdd, rmbVaddr: 0x7f0000002000n,
      others: [{ linkId: 2, rmbKey: 0x11223344, rmbVaddr: 0x7f0000003000n }] },
    '06', '2c', '00', '00', '01', 'aabbccdd', '00007f0000002000', '02', '11223344', '00007f0000003000', '00'.repeat(13), '00');
  });

  it('CONFIRM_RKEY_CONT (RFC 7609; Linux ignores it) and DELETE_RKEY v1 negative response', () => {
    vector({ kind: 'CONFIRM_RKEY_CONT', version: 1, response: false, negative: false, retry: false, numRkeys: 1, rtokens: [{ linkId: 3, rmbKey: 9, rmbVaddr: 10n }] },
      '08', '2c', '00', '00', '01', '03', '00000009', '000000000000000a', '00'.repeat(26));
    vector({ kind: 'DELETE_RKEY', version: 1, response: true, negative: true, numRkeys: 2, errMask: 0x40, rkeys: [0x100, 0x200] },
      '09', '2c', '00', 'a0', '02', '40', '0000', '00000100', '00000200', '00'.repeat(24), '00000000');
  });

  it('TEST_LINK response echoes the user data', () => {
    vector({ kind: 'TEST_LINK', version: 1, response: true, userData: hex('000102030405060708090a0b0c0d0e0f') },
      '07', '2c', '00', '80', '000102030405060708090a0b0c0d0e0f', '00'.repeat(24));
  });
});

const u = (bits: number) => fc.integer({ min: 0, max: 2 ** bits - 1 });
const buf = (n: number) => fc.uint8Array({ minLength: n, maxLength: n }).map((a) => Buffer.from(a));
const u64 = fc.bigInt({ min: 0n, max: (1n << 64n) - 1n });
const pair = fc.record({ rmbKey: u(32), rmbKeyNew: u(32), rmbVaddrNew: u64 }).map((p) => ({ ...p }));
const rtoken = fc.record({ linkId: u(8), rmbKey: u(32), rmbVaddr: u64 }).map((t) => ({ ...t }));
const ver = fc.constantFrom<1 | 2>(1, 2);

const arbLlc: fc.Arbitrary<LlcMessage> = fc.oneof(
  fc.record({ version: ver, response: fc.boolean(), noRmbeEyec: fc.boolean(), senderMac: buf(6), senderGid: buf(16), senderQpn: u(24), linkNum: u(8), linkUid: buf(4), maxLinks: u(8), maxConns: u(8) })
    .map((r) => ({ kind: 'CONFIRM_LINK' as const, ...r })),
  fc.record({ version: ver, response: fc.boolean(), rejected: fc.boolean(), rejReason: u(4), senderMac: buf(6), senderGid: buf(16), senderQpn: u(24), linkNum: u(8), qpMtu: u(4), initialPsn: u(24),
    ext: fc.option(fc.record({ v2Direct: fc.boolean(), clientTargetGid: buf(16), rkeys: fc.array(pair, { maxLength: 5 }) }).map((e) => ({ ...e }))) })
    .map(({ ext, ...r }) => ({ kind: 'ADD_LINK' as const, ...r, rejReason: r.version === 1 ? r.rejReason : 0, v2ext: r.version === 2 ? ext : null })),
  fc.record({ response: fc.boolean(), linkNum: u(8), numRkeys: u(8), rkeys: fc.array(pair, { minLength: 2, maxLength: 2 }) })
    .map((r) => ({ kind: 'ADD_LINK_CONT' as const, version: 1 as const, ...r, rkeys: r.rkeys.slice(0, Math.min(r.numRkeys, 2)) })),
  fc.record({ version: ver, response: fc.boolean(), all: fc.boolean(), orderly: fc.boolean(), linkNum: u(8), reason: u(32) }).map((r) => ({ kind: 'DELETE_LINK' as const, ...r })),
  fc.record({ response: fc.boolean(), gids: fc.array(buf(16), { maxLength: 4 }) }).map((r) => ({ kind: 'REQ_ADD_LINK' as const, version: 2 as const, ...r })),
  fc.record({ version: ver, response: fc.boolean(), negative: fc.boolean(), retry: fc.boolean(), numRkeys: u(8), rmbKey: u(32), rmbVaddr: u64, others: fc.array(rtoken, { minLength: 2, maxLength: 2 }) })
    .map((r) => ({ kind: 'CONFIRM_RKEY' as const, ...r, others: r.others.slice(0, Math.min(r.numRkeys, 2)) })),
  fc.record({ response: fc.boolean(), negative: fc.boolean(), retry: fc.boolean(), numRkeys: u(8), rtokens: fc.array(rtoken, { minLength: 3, maxLength: 3 }) })
    .map((r) => ({ kind: 'CONFIRM_RKEY_CONT' as const, version: 1 as const, ...r, rtokens: r.rtokens.slice(0, Math.min(r.numRkeys, 3)) })),
  fc.record({ version: ver, response: fc.boolean(), negative: fc.boolean(), errMask: u(8), rkeys: fc.array(u(32), { maxLength: 20 }), extra: u(8) })
    .map(({ extra, ...r }) => {
      const numRkeys = r.version === 1 ? (r.rkeys.length >= 8 ? Math.max(8, extra) : r.rkeys.length) : r.rkeys.length;
      return { kind: 'DELETE_RKEY' as const, ...r, numRkeys, rkeys: r.rkeys.slice(0, Math.min(numRkeys, 8, r.rkeys.length)).concat(r.version === 2 ? r.rkeys.slice(8) : []) };
    }),
  fc.record({ version: ver, response: fc.boolean(), userData: buf(16) }).map((r) => ({ kind: 'TEST_LINK' as const, ...r })),
);

describe('LLC round trips and what Linux drops (property)', () => {
  it('decode(encode(m)) is m', () => {
    fc.assert(fc.property(arbLlc, (m) => assert.deepEqual(decodeLlc(encodeLlc(m)), m)));
  });

  it('any bytes decode or throw SmcrWireError naming a field', () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 200 }), fc.constantFrom(...LLC_TYPES_ACCEPTED), fc.boolean(), (a, t, framed) => {
      const b = Buffer.from(a);
      if (framed && b.length >= 2) { b[0] = t; b[1] = 44; }
      try { decodeLlc(b); } catch (e) { assert.ok(e instanceof SmcrWireError && e.field, String(e)); }
    }), { numRuns: 3000 });
    fc.assert(fc.property(arbLlc, fc.nat(), fc.array(fc.tuple(fc.nat(), u(8)), { maxLength: 4 }), (m, cut, edits) => {
      const b = encodeLlc(m);
      for (const [at, v] of edits) b[at % b.length] = v;
      try { decodeLlc(b.subarray(0, cut % (b.length + 1))); } catch (e) { assert.ok(e instanceof SmcrWireError, String(e)); }
    }));
  });

  it('drops as Linux does: unregistered types, short messages, wrong v1 length, v2 length under 44, counts beyond the message', () => {
    const fails = (b: Buffer, field: string) => assert.throws(() => decodeLlc(b), (e: unknown) => e instanceof SmcrWireError && e.field === field, field);
    const ok = encodeLlc({ kind: 'TEST_LINK', version: 1, response: false, userData: Buffer.alloc(16) });
    for (const t of [0x00, 0x05, 0x0a, 0x23, 0x28, 0x11, 0x80, 0x8a, 0xfe, 0xff]) { const b = Buffer.from(ok); b[0] = t; fails(b, 'type'); }
    fails(ok.subarray(0, 43), 'length');
    const l = Buffer.from(ok); l[1] = 40; fails(l, 'length');
    const v2 = encodeLlc({ kind: 'TEST_LINK', version: 2, response: false, userData: Buffer.alloc(16) }); v2.writeUInt16LE(43, 1); fails(v2, 'length_v2');
    const big = Buffer.from(v2); big.writeUInt16BE(44, 1); assert.equal(decodeLlc(big).kind, 'TEST_LINK'); // big-endian 44 reads as 11264 >= 44, as in Linux
    const req = encodeLlc({ kind: 'REQ_ADD_LINK', version: 2, response: false, gids: [gid, gid2] }); req[24] = 3; fails(req, 'gid_cnt');
    const add = encodeLlc({ kind: 'ADD_LINK', version: 2, response: false, rejected: false, rejReason: 0, senderMac: mac, senderGid: gid, senderQpn: 1, linkNum: 2, qpMtu: 3, initialPsn: 4,
      v2ext: { v2Direct: true, clientTargetGid: gid, rkeys: [{ rmbKey: 1, rmbKeyNew: 2, rmbVaddrNew: 3n }] } });
    const a2 = Buffer.from(add); a2.writeUInt16LE(2, 70); fails(a2, 'num_rkeys');
    fails(add.subarray(0, 60), 'v2_ext');
    assert.throws(() => encodeLlc({ kind: 'ADD_LINK_CONT', version: 2, response: false, linkNum: 1, numRkeys: 0, rkeys: [] } as unknown as LlcMessage), RangeError);
  });
});
