// Big-endian header accessors for RoCEv2 packets (the UDP payload: BTH ... ICRC).
// Offsets come from the opcode table, so each accessor is a fixed-offset read.

import { BTH_BYTES, ICRC_BYTES, OPCODES, Op, type OpcodeInfo } from './opcodes.js';

export const BTH_TVER = 0;
export const DEFAULT_PKEY = 0xffff;

/** Why a packet failed to parse; each reason has its own drop counter. */
export type ParseError = 'short' | 'opcode' | 'tver' | 'length' | 'pad';

export interface Packet {
  buf: Buffer;
  opcode: number;
  info: OpcodeInfo;
  mask: number;
  se: boolean;
  mig: boolean;
  padCount: number;
  pkey: number;
  destQp: number;
  ackReq: boolean;
  psn: number;
  payloadOffset: number;
  payloadLength: number;
}

/** Parse the BTH and check lengths. The ICRC is checked separately (it needs the IP/UDP header). */
export function parsePacket(buf: Buffer): Packet | ParseError {
  if (buf.length < BTH_BYTES + ICRC_BYTES) return 'short';
  const opcode = buf[0]!;
  const info = OPCODES[opcode];
  if (!info) return 'opcode';
  const b1 = buf[1]!;
  if ((b1 & 0x0f) !== BTH_TVER) return 'tver';
  const padCount = (b1 >> 4) & 3;
  const payloadOffset = info.length;
  const payloadLength = buf.length - payloadOffset - padCount - ICRC_BYTES;
  if (payloadLength < 0) return 'length';
  if (!(info.mask & Op.PAYLOAD) && (payloadLength !== 0 || padCount !== 0)) return 'length';
  // Only the last (or only) packet of a message may be padded; middle/first packets are full MTU.
  if (padCount !== 0 && !(info.mask & Op.END)) return 'pad';
  return {
    buf,
    opcode,
    info,
    mask: info.mask,
    se: (b1 & 0x80) !== 0,
    mig: (b1 & 0x40) !== 0,
    padCount,
    pkey: buf.readUInt16BE(2),
    destQp: buf.readUInt32BE(4) & 0xffffff,
    ackReq: (buf[8]! & 0x80) !== 0,
    psn: buf.readUInt32BE(8) & 0xffffff,
    payloadOffset,
    payloadLength,
  };
}

export interface BthFields {
  opcode: number;
  se?: boolean;
  mig?: boolean;
  padCount: number;
  pkey?: number;
  destQp: number;
  ackReq: boolean;
  psn: number;
}

export function writeBth(buf: Buffer, f: BthFields): void {
  buf[0] = f.opcode;
  buf[1] = (f.se ? 0x80 : 0) | (f.mig ? 0x40 : 0) | ((f.padCount & 3) << 4) | BTH_TVER;
  buf.writeUInt16BE(f.pkey ?? DEFAULT_PKEY, 2);
  buf.writeUInt32BE(f.destQp & 0xffffff, 4); // F, B and resv8a are zero
  buf.writeUInt32BE(((f.ackReq ? 0x80 : 0) << 24 >>> 0) + (f.psn & 0xffffff), 8);
}

// u64 fields: JS numbers are exact below 2^53; a larger VA cannot name any softrdma MR,
// so it decodes to NaN and fails every bounds check instead of aliasing a smaller address.
export function readU64(buf: Buffer, off: number): number {
  const hi = buf.readUInt32BE(off);
  if (hi > 0x1fffff) return Number.NaN;
  return hi * 0x100000000 + buf.readUInt32BE(off + 4);
}

export function writeU64(buf: Buffer, off: number, v: number | bigint): void {
  if (typeof v === 'bigint') {
    buf.writeBigUInt64BE(v, off);
    return;
  }
  buf.writeUInt32BE(Math.floor(v / 0x100000000) >>> 0, off);
  buf.writeUInt32BE(v >>> 0, off + 4);
}

export const reth = {
  va: (p: Packet) => readU64(p.buf, p.info.reth),
  rkey: (p: Packet) => p.buf.readUInt32BE(p.info.reth + 8),
  len: (p: Packet) => p.buf.readUInt32BE(p.info.reth + 12),
  write(buf: Buffer, off: number, va: number | bigint, rkey: number, len: number) {
    writeU64(buf, off, va);
    buf.writeUInt32BE(rkey >>> 0, off + 8);
    buf.writeUInt32BE(len >>> 0, off + 12);
  },
};

export const aeth = {
  syndrome: (p: Packet) => p.buf[p.info.aeth]!,
  msn: (p: Packet) => p.buf.readUInt32BE(p.info.aeth) & 0xffffff,
  write(buf: Buffer, off: number, syndrome: number, msn: number) {
    buf.writeUInt32BE(((syndrome & 0xff) * 0x1000000 + (msn & 0xffffff)) >>> 0, off);
  },
};

export const atmeth = {
  va: (p: Packet) => readU64(p.buf, p.info.atmeth),
  rkey: (p: Packet) => p.buf.readUInt32BE(p.info.atmeth + 8),
  swapAdd: (p: Packet) => p.buf.readBigUInt64BE(p.info.atmeth + 12),
  compare: (p: Packet) => p.buf.readBigUInt64BE(p.info.atmeth + 20),
  write(buf: Buffer, off: number, va: number | bigint, rkey: number, swapAdd: bigint, compare: bigint) {
    writeU64(buf, off, va);
    buf.writeUInt32BE(rkey >>> 0, off + 8);
    buf.writeBigUInt64BE(BigInt.asUintN(64, swapAdd), off + 12);
    buf.writeBigUInt64BE(BigInt.asUintN(64, compare), off + 20);
  },
};

export const atmack = {
  orig: (p: Packet) => p.buf.readBigUInt64BE(p.info.atmack),
  write(buf: Buffer, off: number, orig: bigint) {
    buf.writeBigUInt64BE(orig, off);
  },
};

export const immdt = {
  get: (p: Packet) => p.buf.readUInt32BE(p.info.immdt),
  write(buf: Buffer, off: number, imm: number) {
    buf.writeUInt32BE(imm >>> 0, off);
  },
};

export const ieth = {
  rkey: (p: Packet) => p.buf.readUInt32BE(p.info.ieth),
  write(buf: Buffer, off: number, rkey: number) {
    buf.writeUInt32BE(rkey >>> 0, off);
  },
};

export const deth = {
  qkey: (p: Packet) => p.buf.readUInt32BE(p.info.deth),
  srcQp: (p: Packet) => p.buf.readUInt32BE(p.info.deth + 4) & 0xffffff,
  write(buf: Buffer, off: number, qkey: number, srcQp: number) {
    buf.writeUInt32BE(qkey >>> 0, off);
    buf.writeUInt32BE(srcQp & 0xffffff, off + 4);
  },
};

export const enum AethSyndrome {
  ACK = 0x00,
  RNR_NAK = 0x20,
  NAK = 0x60,
  TYPE_MASK = 0x60,
}

export const enum NakCode {
  PSN_SEQ_ERROR = 0,
  INVALID_REQUEST = 1,
  REMOTE_ACCESS_ERROR = 2,
  REMOTE_OPERATIONAL_ERROR = 3,
  INVALID_RD_REQUEST = 4,
}

/** Linux rxe advertises no end-to-end credit limit: ACK syndrome 0x1f. */
export const ACK_SYNDROME_NO_CREDIT_LIMIT = 0x1f;
