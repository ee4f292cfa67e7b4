// CLC (connection layer control) messages, exchanged over the TCP connection before the data
// moves to shared memory. Byte layouts are RFC 7609's as Linux net/smc sends them for SMC-D
// version 1 (smc_clc.h), so Wireshark's SMC dissector decodes them.

import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import { ipv4Bytes, ipv6Bytes } from '../abi/inet.js';
import { SoftrdmaError } from '../abi/errors.js';

export const CLC_PROPOSAL = 1;
export const CLC_ACCEPT = 2;
export const CLC_CONFIRM = 3;
export const CLC_DECLINE = 4;

/** "SMCR" and "SMCD" in EBCDIC. */
export const EYECATCHER_R = Buffer.from([0xe2, 0xd4, 0xc3, 0xd9]);
export const EYECATCHER_D = Buffer.from([0xe2, 0xd4, 0xc3, 0xc4]);

export const SMC_TYPE_R = 0;
export const SMC_TYPE_D = 1;
export const SMC_TYPE_N = 2;
export const SMC_TYPE_B = 3;

export const CLC_HDR_LEN = 8;
export const CLC_TRAILER_LEN = 4;
const PROPOSAL_BASE_LEN = 40; // hdr + id_for_peer + gid + mac + iparea_offset, 4-aligned
const SMCD_AREA_LEN = 40; // smc_clc_msg_smcd
/**
 * softrdma's Proposal proof (src/smc/peer-proof.ts): 16 bytes at offset 24 of the SMC-D area,
 * inside smc_clc_msg_smcd's trailing reserved[20] (Linux ignores them; Wireshark's dissector
 * shows the GID of a v1 Proposal and skips the rest of the area, so decoding is unchanged).
 */
const SMCD_PROOF_OFF = 24;
export const SMCD_PROOF_LEN = 16;
const PREFIX_AREA_LEN = 8;
const IPV6_PREFIX_LEN = 17;
const MAX_V6_PREFIXES = 8;
export const SMCD_ACCEPT_CONFIRM_LEN = 48;
export const DECLINE_LEN = 28;
/** Nothing we accept is longer; a longer length field is a peer out of sync. */
export const CLC_MAX_LEN = PROPOSAL_BASE_LEN + SMCD_AREA_LEN + PREFIX_AREA_LEN + MAX_V6_PREFIXES * IPV6_PREFIX_LEN + CLC_TRAILER_LEN;

/** Decline reasons (SMC_CLC_DECL_*), with the values Linux uses. */
export const DECLINE = {
  MEM: 0x01010000,
  TIMEOUT_CL: 0x02010000,
  CNFERR: 0x03000000,
  PEERNOSMC: 0x03010000,
  IPSEC: 0x03020000,
  NOSMCDEV: 0x03030000,
  NOSMCDDEV: 0x03030001,
  MODEUNSUPP: 0x03040000,
  RMBE_EC: 0x03050000,
  OPTUNSUPP: 0x03060000,
  DIFFPREFIX: 0x03070000,
  VERSMISMAT: 0x030c0000,
  MAX_DMB: 0x030d0000,
  SYNCERR: 0x04000000,
  PEERDECL: 0x05000000,
  INTERR: 0x09990000,
} as const;

const DECLINE_NAMES = new Map<number, string>(Object.entries(DECLINE).map(([k, v]) => [v, `SMC_CLC_DECL_${k}`]));

/** "SMC_CLC_DECL_PEERNOSMC (0x03010000)". */
const declineNames = new Map<number, string>();
export function declineName(code: number): string {
  let s = declineNames.get(code >>> 0);
  if (s === undefined) {
    const hex = `0x${(code >>> 0).toString(16).padStart(8, '0')}`;
    const name = DECLINE_NAMES.get(code >>> 0);
    s = name ? `${name} (${hex})` : hex;
    // Counted per fallback connection; codes a peer makes up must not grow this without end.
    if (declineNames.size < 256) declineNames.set(code >>> 0, s);
  }
  return s;
}

/** A CLC message that cannot be taken: `reason` is the Decline code to answer it with. */
export class ClcError extends SoftrdmaError {
  constructor(readonly reason: number, message: string) {
    super('EPROTO', message);
    this.name = 'ClcError';
  }
}

let systemId: Buffer | undefined;
/** id_for_peer: 2 random bytes and 6 bytes naming this host, as Linux's local_systemid. */
export function localSystemId(): Buffer {
  if (!systemId) {
    let host = os.hostname();
    try { host = fs.readFileSync('/etc/machine-id', 'utf8').trim() || host; } catch { /* hostname will do */ }
    systemId = Buffer.concat([randomBytes(2), createHash('sha256').update(host).digest().subarray(0, 6)]);
  }
  return systemId;
}

export interface ClcHeader {
  type: number;
  length: number;
  version: number;
  /** First contact (Accept/Confirm) or out of sync (Decline). */
  flag: boolean;
  /** SMC type: SMC_TYPE_R, _D, _N or _B. */
  path: number;
  eyecatcher: 'SMCR' | 'SMCD';
}

export interface Ipv6Prefix { prefix: string; length: number }

export interface Proposal {
  type: typeof CLC_PROPOSAL;
  version: number;
  path: number;
  peerId: Buffer;
  smcdGid: bigint;
  chid: number;
  /** IPv4 subnet of the outgoing interface (network address) and its prefix length. */
  subnet: string;
  prefixLength: number;
  ipv6Prefixes: Ipv6Prefix[];
  /** SMC-D only: softrdma's proof that the sender owns smcdGid's device (zeros if none was sent). */
  proof?: Buffer;
}

export interface AcceptConfirm {
  type: typeof CLC_ACCEPT | typeof CLC_CONFIRM;
  version: number;
  firstContact: boolean;
  gid: bigint;
  token: bigint;
  dmbeIndex: number;
  /** DMB size, compressed: 16 KiB << dmbeSize. */
  dmbeSize: number;
  linkId: number;
}

export interface Decline {
  type: typeof CLC_DECLINE;
  version: number;
  outOfSync: boolean;
  peerId: Buffer;
  diagnosis: number;
  eyecatcher: 'SMCR' | 'SMCD';
}

export type ClcMessage = Proposal | AcceptConfirm | Decline;

/** Linux smc_compress_bufsize: the 4-bit size class of a buffer of 16 KiB << n. */
export function compressBufSize(size: number): number {
  const units = Math.floor((size - 1) / 16384);
  const c = units <= 0 ? 0 : Math.floor(Math.log2(units)) + 1;
  return Math.min(c, 15);
}

export function uncompressBufSize(c: number): number {
  return 16384 * 2 ** c;
}

function header(buf: Buffer, type: number, len: number, eye: Buffer, version: number, flag: boolean, path: number): void {
  eye.copy(buf, 0);
  buf[4] = type;
  buf.writeUInt16BE(len, 5);
  buf[7] = ((version & 0xf) << 4) | (flag ? 0x08 : 0) | (path & 0x3);
  eye.copy(buf, len - CLC_TRAILER_LEN);
}

/** Uncompressed groups, so a decoded prefix reads as it was written on the wire. */
function bytesToV6(b: Buffer): string {
  const g: string[] = [];
  for (let i = 0; i < 16; i += 2) g.push(b.readUInt16BE(i).toString(16));
  return g.join(':');
}

export function encodeProposal(p: Omit<Proposal, 'type'>): Buffer {
  if (p.ipv6Prefixes.length > MAX_V6_PREFIXES) throw new RangeError(`at most ${MAX_V6_PREFIXES} IPv6 prefixes`);
  const smcd = p.path === SMC_TYPE_D || p.path === SMC_TYPE_B;
  const len = PROPOSAL_BASE_LEN + (smcd ? SMCD_AREA_LEN : 0) + PREFIX_AREA_LEN + p.ipv6Prefixes.length * IPV6_PREFIX_LEN + CLC_TRAILER_LEN;
  const b = Buffer.alloc(len);
  header(b, CLC_PROPOSAL, len, EYECATCHER_R, p.version, false, p.path);
  p.peerId.copy(b, 8, 0, 8);
  // client preferred GID and MAC (SMC-R only) stay zero
  b.writeUInt16BE(smcd ? SMCD_AREA_LEN : 0, 38); // iparea_offset
  let off = PROPOSAL_BASE_LEN;
  if (smcd) {
    b.writeBigUInt64BE(p.smcdGid, off);
    b.writeUInt16BE(p.chid, off + 8);
    if (p.proof) p.proof.copy(b, off + SMCD_PROOF_OFF, 0, SMCD_PROOF_LEN);
    off += SMCD_AREA_LEN;
  }
  ipv4Bytes(p.subnet).copy(b, off);
  b[off + 4] = p.prefixLength;
  b[off + 7] = p.ipv6Prefixes.length;
  off += PREFIX_AREA_LEN;
  for (const pf of p.ipv6Prefixes) {
    ipv6Bytes(pf.prefix).copy(b, off);
    b[off + 16] = pf.length;
    off += IPV6_PREFIX_LEN;
  }
  return b;
}

export function encodeAcceptConfirm(m: Omit<AcceptConfirm, 'type'> & { type: AcceptConfirm['type'] }): Buffer {
  const b = Buffer.alloc(SMCD_ACCEPT_CONFIRM_LEN);
  header(b, m.type, SMCD_ACCEPT_CONFIRM_LEN, EYECATCHER_D, m.version, m.firstContact, SMC_TYPE_D);
  b.writeBigUInt64BE(m.gid, 8);
  b.writeBigUInt64BE(m.token, 16);
  b[24] = m.dmbeIndex;
  b[25] = (m.dmbeSize & 0xf) << 4;
  b.writeUInt32BE(m.linkId >>> 0, 28);
  return b;
}

export function encodeDecline(m: { version?: number; outOfSync?: boolean; diagnosis: number; smcd?: boolean }): Buffer {
  const b = Buffer.alloc(DECLINE_LEN);
  header(b, CLC_DECLINE, DECLINE_LEN, m.smcd ? EYECATCHER_D : EYECATCHER_R, m.version ?? 1, !!m.outOfSync, 0);
  localSystemId().copy(b, 8);
  b.writeUInt32BE(m.diagnosis >>> 0, 16);
  b[20] = 2 << 4; // OS type Linux, as our peers print it
  return b;
}

/** Does this prefix start like a CLC message? (true while too short to tell) */
export function mayBeClc(b: Buffer): boolean {
  const n = Math.min(b.length, 4);
  for (let i = 0; i < n; i++) {
    if (b[i] !== EYECATCHER_R[i] && b[i] !== EYECATCHER_D[i]) return false;
  }
  return true;
}

/**
 * The length of the CLC message at the start of b, or 0 if more bytes are needed.
 * Throws ClcError(SYNCERR) for anything that is not a CLC header we accept.
 */
export function clcFrameLength(b: Buffer): number {
  if (b.length < CLC_HDR_LEN) {
    if (!mayBeClc(b)) throw new ClcError(DECLINE.SYNCERR, 'no CLC eyecatcher');
    return 0;
  }
  const eye = b.subarray(0, 4);
  if (!eye.equals(EYECATCHER_R) && !eye.equals(EYECATCHER_D)) throw new ClcError(DECLINE.SYNCERR, 'no CLC eyecatcher');
  const type = b[4]!;
  if (type < CLC_PROPOSAL || type > CLC_DECLINE) throw new ClcError(DECLINE.SYNCERR, `unknown CLC message type ${type}`);
  const len = b.readUInt16BE(5);
  if (len < CLC_HDR_LEN + CLC_TRAILER_LEN || len > CLC_MAX_LEN) throw new ClcError(DECLINE.SYNCERR, `CLC length ${len} out of range`);
  return b.length >= len ? len : 0;
}

export function decodeHeader(b: Buffer): ClcHeader {
  return {
    type: b[4]!,
    length: b.readUInt16BE(5),
    version: b[7]! >> 4,
    flag: (b[7]! & 0x08) !== 0,
    path: b[7]! & 0x3,
    eyecatcher: b[3] === 0xc4 ? 'SMCD' : 'SMCR',
  };
}

/** Decode one whole CLC message (as framed by clcFrameLength); every field is checked. */
export function decodeClc(b: Buffer): ClcMessage {
  const len = clcFrameLength(b);
  if (len === 0 || len !== b.length) throw new ClcError(DECLINE.SYNCERR, `CLC message truncated (${b.length} bytes)`);
  const h = decodeHeader(b);
  if (!b.subarray(len - 4).equals(b.subarray(0, 4))) throw new ClcError(DECLINE.SYNCERR, 'CLC trailer eyecatcher does not match');
  if (h.version < 1) throw new ClcError(DECLINE.VERSMISMAT, `CLC version ${h.version}`);
  switch (h.type) {
    case CLC_PROPOSAL: {
      if (len < PROPOSAL_BASE_LEN + PREFIX_AREA_LEN + CLC_TRAILER_LEN) throw new ClcError(DECLINE.SYNCERR, `proposal of ${len} bytes is too short`);
      const ipOff = b.readUInt16BE(38);
      const smcd = h.path === SMC_TYPE_D || h.path === SMC_TYPE_B;
      if (smcd ? ipOff !== SMCD_AREA_LEN : ipOff > SMCD_AREA_LEN) throw new ClcError(DECLINE.SYNCERR, `proposal iparea_offset ${ipOff} is invalid`);
      const pfx = PROPOSAL_BASE_LEN + ipOff;
      if (pfx + PREFIX_AREA_LEN + CLC_TRAILER_LEN > len) throw new ClcError(DECLINE.SYNCERR, 'proposal prefix area beyond the message');
      const n6 = b[pfx + 7]!;
      if (n6 > MAX_V6_PREFIXES || pfx + PREFIX_AREA_LEN + n6 * IPV6_PREFIX_LEN + CLC_TRAILER_LEN !== len) {
        throw new ClcError(DECLINE.SYNCERR, `proposal with ${n6} IPv6 prefixes does not fit its length ${len}`);
      }
      const ipv6Prefixes: Ipv6Prefix[] = [];
      for (let i = 0; i < n6; i++) {
        const o = pfx + PREFIX_AREA_LEN + i * IPV6_PREFIX_LEN;
        ipv6Prefixes.push({ prefix: bytesToV6(b.subarray(o, o + 16)), length: b[o + 16]! });
      }
      return {
        type: CLC_PROPOSAL, version: h.version, path: h.path, peerId: Buffer.from(b.subarray(8, 16)),
        smcdGid: smcd ? b.readBigUInt64BE(PROPOSAL_BASE_LEN) : 0n,
        chid: smcd ? b.readUInt16BE(PROPOSAL_BASE_LEN + 8) : 0,
        ...(smcd ? { proof: Buffer.from(b.subarray(PROPOSAL_BASE_LEN + SMCD_PROOF_OFF, PROPOSAL_BASE_LEN + SMCD_PROOF_OFF + SMCD_PROOF_LEN)) } : {}),
        subnet: [...b.subarray(pfx, pfx + 4)].join('.'), prefixLength: b[pfx + 4]!, ipv6Prefixes,
      };
    }
    case CLC_ACCEPT:
    case CLC_CONFIRM: {
      if (h.path !== SMC_TYPE_D || h.eyecatcher !== 'SMCD') throw new ClcError(DECLINE.MODEUNSUPP, 'only SMC-D accept/confirm is supported');
      if (len !== SMCD_ACCEPT_CONFIRM_LEN) throw new ClcError(DECLINE.SYNCERR, `SMC-D accept/confirm must be ${SMCD_ACCEPT_CONFIRM_LEN} bytes, got ${len}`);
      return {
        type: h.type as AcceptConfirm['type'], version: h.version, firstContact: h.flag,
        gid: b.readBigUInt64BE(8), token: b.readBigUInt64BE(16), dmbeIndex: b[24]!, dmbeSize: b[25]! >> 4,
        linkId: b.readUInt32BE(28),
      };
    }
    default: {
      if (len !== DECLINE_LEN) throw new ClcError(DECLINE.SYNCERR, `decline must be ${DECLINE_LEN} bytes, got ${len}`);
      return {
        type: CLC_DECLINE, version: h.version, outOfSync: h.flag, peerId: Buffer.from(b.subarray(8, 16)),
        diagnosis: b.readUInt32BE(16), eyecatcher: h.eyecatcher,
      };
    }
  }
}
