// The SMC-R CDC message (src/smc/wire/cdc-r.ts) against a vector assembled by hand from Linux
// 6.12's struct smc_cdc_msg (net/smc/smc_cdc.h 41-51), round trips, and what Linux drops.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { SMCR_CDC_LEN, cdcSeqBefore, decodeSmcrCdc, encodeSmcrCdc, type SmcrCdc } from '../../src/smc/wire/cdc-r.js';
import { SmcrWireError } from '../../src/smc/wire/error.js';

const hex = (...parts: string[]): Buffer => Buffer.from(parts.join(''), 'hex');

const msg: SmcrCdc = {
  seqno: 0x0102, token: 0x0a0b0c0d, prod: { wrap: 3, count: 0x1000 }, cons: { wrap: 2, count: 0xff00 },
  writeBlocked: true, urgDataPending: false, urgDataPresent: false, consCursUpdReq: true, failoverValidation: false,
  peerDoneWriting: false, peerConnClosed: true, peerConnAbort: false,
};

describe('SMC-R CDC message', () => {
  it('is 44 big-endian bytes laid out as struct smc_cdc_msg', () => {
    assert.equal(encodeSmcrCdc(msg).toString('hex'), hex(
      'fe', //               common.type: SMC_CDC_MSG_TYPE
      '2c', //               len 44
      '0102', //             seqno
      '0a0b0c0d', //         token (the receiver's RMBE alert token)
      '0000', '0003', '00001000', // prod: reserved, wrap, count
      '0000', '0002', '0000ff00', // cons: reserved, wrap, count
      '90', //               prod_flags: write_blocked 0x80 | cons_curs_upd_req 0x10
      '40', //               conn_state_flags: peer_conn_closed 0x40
      '00'.repeat(18), //    reserved
    ).toString('hex'));
  });

  it('encodes into a given buffer at an offset, zeroing the reserved bytes', () => {
    const b = Buffer.alloc(60, 0xee);
    encodeSmcrCdc(msg, b, 8);
    assert.deepEqual(b.subarray(8, 52), encodeSmcrCdc(msg));
    assert.equal(b[7], 0xee); assert.equal(b[52], 0xee);
    assert.throws(() => encodeSmcrCdc(msg, b, 20), RangeError);
  });

  it('decode(encode(m)) is m (property)', () => {
    const u = (bits: number) => fc.integer({ min: 0, max: 2 ** bits - 1 });
    const cursor = fc.record({ wrap: u(16), count: u(32) }).map((c) => ({ ...c }));
    fc.assert(fc.property(fc.record({
      seqno: u(16), token: u(32), prod: cursor, cons: cursor, writeBlocked: fc.boolean(), urgDataPending: fc.boolean(), urgDataPresent: fc.boolean(),
      consCursUpdReq: fc.boolean(), failoverValidation: fc.boolean(), peerDoneWriting: fc.boolean(), peerConnClosed: fc.boolean(), peerConnAbort: fc.boolean(),
    }).map((m) => ({ ...m })), (m) => assert.deepEqual(decodeSmcrCdc(encodeSmcrCdc(m)), m)));
  });

  it('refuses what Linux drops (short, len byte not 44, not type 0xFE), reads only 44 bytes, ignores reserved bits', () => {
    const b = encodeSmcrCdc(msg);
    const fails = (x: Buffer, field: string) => assert.throws(() => decodeSmcrCdc(x), (e: unknown) => e instanceof SmcrWireError && e.field === field && e.code === 'EPROTO');
    fails(b.subarray(0, 25), 'length');
    assert.deepEqual(decodeSmcrCdc(b.subarray(0, 26)), msg); // smc_cdc.c 477: only the reserved tail may be missing
    const l = Buffer.from(b); l[1] = 43; fails(l, 'len');
    const t = Buffer.from(b); t[0] = 0x01; fails(t, 'type');
    assert.deepEqual(decodeSmcrCdc(Buffer.concat([b, Buffer.alloc(20, 0xff)])), msg);
    const r = Buffer.from(b); r[24]! |= 0x07; r[25]! |= 0x1f; r.writeUInt16BE(0xffff, 8); r.fill(0xff, 26);
    assert.deepEqual(decodeSmcrCdc(r), msg);
  });

  it('any bytes decode or throw SmcrWireError (property)', () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 64 }), fc.boolean(), (a, framed) => {
      const b = Buffer.from(a);
      if (framed && b.length >= 2) { b[0] = 0xfe; b[1] = SMCR_CDC_LEN; }
      try { decodeSmcrCdc(b); } catch (e) { assert.ok(e instanceof SmcrWireError, String(e)); }
    }));
  });

  it('orders sequence numbers as smc_cdc_before, across the 16-bit wrap', () => {
    assert.equal(cdcSeqBefore(1, 2), true);
    assert.equal(cdcSeqBefore(2, 1), false);
    assert.equal(cdcSeqBefore(0xffff, 0), true);
    assert.equal(cdcSeqBefore(0, 0xffff), false);
    assert.equal(cdcSeqBefore(5, 5), false);
    assert.equal(cdcSeqBefore(0x8001, 0), true); // (s16)0x8001 < 0
  });
});
