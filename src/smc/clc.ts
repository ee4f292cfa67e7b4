// CLC (connection layer control) messages, exchanged over the TCP connection before the data
// moves to shared memory or RDMA. Byte layouts are RFC 7609's as Linux net/smc sends them
// (smc_clc.h), so Wireshark's SMC dissector decodes them. The first half of this file is the
// SMC-D version 1 codec the handshake uses (encodeProposal, decodeClc, ...); the second half
// ("SMC-R and CLC version 2") is the general codec: SMC-R Proposal/Accept/Confirm, the v2 areas
// Linux 6.x sends for a RoCEv2 device, and v2 Declines (docs/smc.md, "SMC-R wire").

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
  // The rest of Linux 6.12's table (smc_clc.h lines 33-68), SMC-R's and v2's reasons among them.
  TIMEOUT_AL: 0x02020000,
  NOSMCRDEV: 0x03030002,
  NOISM2SUPP: 0x03030003,
  NOV2EXT: 0x03030004,
  NOV2DEXT: 0x03030005,
  NOSEID: 0x03030006,
  NOSMCD2DEV: 0x03030007,
  NOUEID: 0x03030008,
  RELEASEERR: 0x03030009,
  MAXCONNERR: 0x0303000a,
  MAXLINKERR: 0x0303000b,
  GETVLANERR: 0x03080000,
  ISMVLANERR: 0x03090000,
  NOACTLINK: 0x030a0000,
  NOSRVLINK: 0x030b0000,
  NOROUTE: 0x030e0000,
  NOINDIRECT: 0x030f0000,
  ERR_RTOK: 0x09990001,
  ERR_RDYLNK: 0x09990002,
  ERR_REGBUF: 0x09990003,
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
  /** The wire field that was wrong (Linux's struct member name), where one field was. */
  readonly field: string | undefined;
  constructor(readonly reason: number, message: string, field?: string) {
    super('EPROTO', message);
    this.name = 'ClcError';
    this.field = field;
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
  // A Decline's trailer is not checked, as Linux (smc_clc_msg_hdr_valid) and decodeSmcClc.
  if (h.type !== CLC_DECLINE && !b.subarray(len - 4).equals(b.subarray(0, 4))) throw new ClcError(DECLINE.SYNCERR, 'CLC trailer eyecatcher does not match');
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
      // The length by version, as decodeSmcClc and Linux's smc_clc_msg_decl_valid: a peer that
      // speaks CLC v2 declines in 44 bytes, also on the SMC-D path.
      const want = h.version >= SMC_CLC_V2 ? DECLINE_V2_LEN : DECLINE_LEN;
      if (len !== want) throw new ClcError(DECLINE.SYNCERR, `version ${h.version} decline must be ${want} bytes, got ${len}`);
      return {
        type: CLC_DECLINE, version: h.version, outOfSync: h.flag, peerId: Buffer.from(b.subarray(8, 16)),
        diagnosis: b.readUInt32BE(16), eyecatcher: h.eyecatcher,
      };
    }
  }
}

// ---------------------------------------------------------------------------------------------
// SMC-R and CLC version 2, as Linux 6.12 speaks them (net/smc/smc_clc.h, smc_clc.c). Pure
// codecs: every decoder checks every length and count against the message before it reads, and
// fails with a ClcError naming the field (Linux's struct member) and the Decline reason to answer
// with; nothing else is thrown for any input. Encoders throw RangeError for values that do not fit
// their field (a programming error, not a peer's).
// ---------------------------------------------------------------------------------------------

export const SMC_CLC_V1 = 1;
export const SMC_CLC_V2 = 2;
/** smc.h SMC_RELEASE: Linux 6.12 speaks release 1 of v2 (v2.1: max_conns, max_links, feature mask). */
export const SMC_RELEASE = 1;
/** smc_clc.h SMC_FIRST_CONTACT_MASK: bit 1 of typev2, i.e. 0x08 of the header's last byte. */
const FIRST_CONTACT_MASK = 0b10;
export const CLC_OS_ZOS = 1;
export const CLC_OS_LINUX = 2;
export const CLC_OS_AIX = 3;

export const SMC_MAX_EID_LEN = 32;
export const SMC_MAX_HOSTNAME_LEN = 32;
export const SMC_GID_LEN = 16;
export const SMC_MAC_LEN = 6;
export const SMC_SYSTEMID_LEN = 8;
/** Most user EIDs a Proposal may carry (smc_clc.h SMC_CLC_MAX_UEID; Linux configures at most 4). */
export const SMC_CLC_MAX_UEID = 8;
/** Most ISM GID/CHID entries in a Proposal's SMC-Dv2 extension (SMCD_CLC_MAX_V2_GID_ENTRIES). */
export const SMCD_CLC_MAX_V2_GID_ENTRIES = 8;
/** Most GIDs in a Confirm's GID list (smc_core.h GID_LIST_SIZE). */
export const SMC_CLC_MAX_GID_LIST = 2;

export const SMCR_ACCEPT_CONFIRM_LEN = 68; // smc_clc.c SMCR_CLC_ACCEPT_CONFIRM_LEN
export const SMCR_ACCEPT_CONFIRM_V2_LEN = 108; // SMCR_CLC_ACCEPT_CONFIRM_LEN_V2
export const DECLINE_V2_LEN = 44; // sizeof(struct smc_clc_msg_decline_v2)
const SMC_AREA_LEN = 40; // struct smc_clc_msg_smcd
const V2_EXT_LEN = 40; // struct smc_clc_v2_extension_fixed
const SMCD_V2_EXT_LEN = 48; // struct smc_clc_smcd_v2_extension_fixed
const GIDCHID_LEN = 10; // struct smc_clc_smcd_gid_chid
/** struct smc_clc_first_contact_ext (release 0) and smc_clc_first_contact_ext_v2x (release 1). */
export const FCE_LEN = 36;
export const FCE_V2X_LEN = 52;
const GID_EXT_HDR_LEN = 4; // struct smc_clc_fce_gid_ext

/** The longest CLC message of this codec: a Proposal with every area full (smc_clc_msg_proposal_area). */
export const CLC_V2_MAX_LEN = PROPOSAL_BASE_LEN + SMC_AREA_LEN + PREFIX_AREA_LEN + MAX_V6_PREFIXES * IPV6_PREFIX_LEN
  + V2_EXT_LEN + SMC_CLC_MAX_UEID * SMC_MAX_EID_LEN + SMCD_V2_EXT_LEN + SMCD_CLC_MAX_V2_GID_ENTRIES * GIDCHID_LEN + CLC_TRAILER_LEN;

export function smcrIndicated(t: number): boolean { return t === SMC_TYPE_R || t === SMC_TYPE_B; }
export function smcdIndicated(t: number): boolean { return t === SMC_TYPE_D || t === SMC_TYPE_B; }

/** The IP prefix area (smc_clc_msg_proposal_prefix and its IPv6 prefixes). */
export interface ClcPrefix {
  /** IPv4 subnet of the outgoing interface (network address); 0.0.0.0 for IPv6. */
  subnet: string;
  prefixLength: number;
  ipv6Prefixes: Ipv6Prefix[];
}

export interface IsmGidChid { gid: bigint; chid: number }

/** struct smc_clc_v2_extension (+ user EIDs) and, when SMC-Dv2 is offered, smc_clc_smcd_v2_extension. */
export interface ClcV2Extension {
  /** smc_clc_v2_flag.release (4 bits). */
  release: number;
  /** smc_clc_v2_flag.seid: the system EID is offered (SMC-Dv2 on s390 only). */
  seid: boolean;
  /** The RoCEv2 GID of the device offered for SMC-Rv2 (IPv4-mapped in Linux); zeros without SMC-Rv2. */
  roceGid: Buffer;
  maxConns: number;
  maxLinks: number;
  featureMask: number;
  /** User EIDs, each exactly 32 characters (Linux pads with blanks). */
  userEids: string[];
  /** SMC-Dv2 extension: present exactly when the Proposal's typev2 indicates SMC-D. */
  smcd: { systemEid: string; gidChids: IsmGidChid[] } | null;
}

/** A CLC Proposal of any version and type (smc_clc_msg_proposal_area as Linux 6.12 sends it). */
export interface SmcProposal {
  type: typeof CLC_PROPOSAL;
  version: number;
  /** SMC types offered at v1 and (version >= 2) at v2: SMC_TYPE_R, _D, _N or _B. */
  typeV1: number;
  typeV2: number;
  /** smc_clc_msg_local: the client's system ID, preferred (v1 RoCE) GID and MAC. */
  peerId: Buffer;
  gid: Buffer;
  mac: Buffer;
  /** smc_clc_msg_smcd.ism: the native ISM GID and CHID (0 unless SMC-D is offered). */
  ismGid: bigint;
  ismChid: number;
  /**
   * softrdma's SMC-D proof (peer-proof.ts) in the SMC-D area's reserved bytes 24-39, as
   * encodeProposal puts it: present exactly when typeV1 offers SMC-D (all zeros from a peer that
   * sent none, Linux among them).
   */
  proof: Buffer | null;
  /** Present exactly when typeV1 is not SMC_TYPE_N. */
  prefix: ClcPrefix | null;
  /** Present exactly when version >= 2 and typeV2 is not SMC_TYPE_N. */
  v2: ClcV2Extension | null;
}

/** struct smc_clc_first_contact_ext(_v2x). */
export interface FirstContactExt {
  /** v2_direct: the peers share a subnet (no gateway between the RoCEv2 GIDs). */
  v2Direct: boolean;
  osType: number;
  release: number;
  /** 32 characters (Linux: the nodename, blank-padded). */
  hostname: string;
  /** The v2.1 part (52-byte form); null for the 36-byte release-0 form. */
  v2x: { maxConns: number; maxLinks: number; featureMask: number; vendorExpOptions: number } | null;
}

/** An SMC-R Accept or Confirm (smc_clc_msg_accept_confirm with smcr_clc_msg_accept_confirm r0/r1). */
export interface SmcrAcceptConfirm {
  type: typeof CLC_ACCEPT | typeof CLC_CONFIRM;
  version: number;
  firstContact: boolean;
  peerId: Buffer;
  gid: Buffer;
  mac: Buffer;
  /** 24-bit QP number of the sender's link QP. */
  qpn: number;
  rmbRkey: number;
  /** Index of the RMBE in the RMB (Linux: always 1). */
  rmbeIndex: number;
  rmbeAlertToken: number;
  /** RMBE size, compressed: 16 KiB << rmbeSize. */
  rmbeSize: number;
  /** IB MTU enum (1 = 256 ... 5 = 4096). */
  qpMtu: number;
  rmbDmaAddr: bigint;
  /** 24-bit initial PSN of the sender's link QP. */
  psn: number;
  /** v2: the negotiated EID (32 characters; all NUL when none). null in v1. */
  eid: string | null;
  /** v2 first contact only. */
  fce: FirstContactExt | null;
  /** v2 first-contact Confirm only: the client's GIDs for further links (smc_clc_fce_gid_ext). */
  gidList: Buffer[] | null;
}

/** A Decline of either version (smc_clc_msg_decline / _v2). */
export interface SmcDecline {
  type: typeof CLC_DECLINE;
  version: number;
  /** typev2's first-contact bit: Linux sets it when declining with SYNCERR (out of sync). */
  outOfSync: boolean;
  peerId: Buffer;
  diagnosis: number;
  osType: number;
  /** v2 only: four more diagnosis codes (empty in v1). */
  diagnosisV2: number[];
  eyecatcher: 'SMCR' | 'SMCD';
}

/** Every CLC message this codec decodes; SMC-D v1 Accept/Confirm keep the shape of AcceptConfirm. */
export type SmcClcMessage = SmcProposal | SmcrAcceptConfirm | AcceptConfirm | SmcDecline;

function need(cond: boolean, field: string, msg: string, reason: number = DECLINE.SYNCERR): asserts cond {
  if (!cond) throw new ClcError(reason, `${field}: ${msg}`, field);
}

function fixedBytes(b: Buffer | undefined, len: number, what: string): Buffer {
  if (b === undefined) return Buffer.alloc(len);
  if (b.length !== len) throw new RangeError(`${what} must be ${len} bytes, got ${b.length}`);
  return b;
}

/** A 32-character text field (EID, host name): latin1, padded with blanks to 32 characters. */
function textField(s: string, what: string, pad = ' '): Buffer {
  const b = Buffer.from(s, 'latin1');
  if (b.length > 32) throw new RangeError(`${what} is longer than 32 bytes`);
  return Buffer.concat([b, Buffer.alloc(32 - b.length, pad)]);
}

function intField(v: number, bits: number, what: string): number {
  if (!Number.isInteger(v) || v < 0 || v >= 2 ** bits) throw new RangeError(`${what} must be a ${bits}-bit unsigned integer, got ${v}`);
  return v;
}

function hdrByte(version: number, typeV2: number, typeV1: number): number {
  return (intField(version, 4, 'version') << 4) | (intField(typeV2, 2, 'typev2') << 2) | intField(typeV1, 2, 'typev1');
}

function prefixAreaLen(p: ClcPrefix | null): number {
  return p ? PREFIX_AREA_LEN + p.ipv6Prefixes.length * IPV6_PREFIX_LEN : 0;
}

function v2ExtLen(v2: ClcV2Extension | null): number {
  if (!v2) return 0;
  return V2_EXT_LEN + v2.userEids.length * SMC_MAX_EID_LEN + (v2.smcd ? SMCD_V2_EXT_LEN + v2.smcd.gidChids.length * GIDCHID_LEN : 0);
}

/**
 * Encode a Proposal. Version 2 is laid out as Linux 6.12's smc_clc_send_proposal (smc_clc.c
 * 846-1044): header, smc_clc_msg_local, iparea_offset, the 40-byte SMC-D area (always), the
 * prefix area (when typeV1 is not N), the v2 extension with its user EIDs and, when SMC-Dv2 is
 * offered, the SMC-Dv2 extension with its GID/CHID list. Version 1 is RFC 7609's: the SMC-D area
 * only when SMC-D is offered (iparea_offset 40, else 0), then the prefix area.
 */
export function encodeSmcProposal(p: Omit<SmcProposal, 'type'>): Buffer {
  const v2 = p.version >= SMC_CLC_V2;
  if (v2 && (p.typeV1 === SMC_TYPE_N) !== (p.prefix === null)) throw new RangeError('prefix must be given exactly when typeV1 is not N');
  if (!v2 && (p.typeV1 === SMC_TYPE_N || !p.prefix)) throw new RangeError('a version 1 proposal offers SMC-R or SMC-D and carries the prefix area');
  const typeV2 = v2 ? p.typeV2 : 0;
  const hasV2 = v2 && typeV2 !== SMC_TYPE_N;
  if (hasV2 !== (p.v2 !== null)) throw new RangeError('v2 must be given exactly when version >= 2 and typeV2 is not N');
  if (p.v2 && (p.v2.smcd !== null) !== smcdIndicated(typeV2)) throw new RangeError('v2.smcd must be given exactly when typeV2 offers SMC-D');
  if ((p.proof !== null) !== smcdIndicated(p.typeV1)) throw new RangeError('proof must be given exactly when typeV1 offers SMC-D');
  if (p.prefix && p.prefix.ipv6Prefixes.length > MAX_V6_PREFIXES) throw new RangeError(`at most ${MAX_V6_PREFIXES} IPv6 prefixes`);
  if (p.v2 && p.v2.userEids.length > SMC_CLC_MAX_UEID) throw new RangeError(`at most ${SMC_CLC_MAX_UEID} user EIDs`);
  if (p.v2?.smcd && p.v2.smcd.gidChids.length > SMCD_CLC_MAX_V2_GID_ENTRIES) throw new RangeError(`at most ${SMCD_CLC_MAX_V2_GID_ENTRIES} ISM GID/CHID entries`);
  const smcArea = v2 || smcdIndicated(p.typeV1);
  const len = PROPOSAL_BASE_LEN + (smcArea ? SMC_AREA_LEN : 0) + prefixAreaLen(p.prefix) + v2ExtLen(p.v2) + CLC_TRAILER_LEN;
  const b = Buffer.alloc(len);
  EYECATCHER_R.copy(b, 0);
  b[4] = CLC_PROPOSAL;
  b.writeUInt16BE(len, 5);
  b[7] = hdrByte(p.version, typeV2, p.typeV1);
  fixedBytes(p.peerId, SMC_SYSTEMID_LEN, 'peerId').copy(b, 8);
  fixedBytes(p.gid, SMC_GID_LEN, 'gid').copy(b, 16);
  fixedBytes(p.mac, SMC_MAC_LEN, 'mac').copy(b, 32);
  b.writeUInt16BE(p.prefix && smcArea ? SMC_AREA_LEN : 0, 38); // iparea_offset
  let off = PROPOSAL_BASE_LEN;
  if (smcArea) {
    b.writeBigUInt64BE(BigInt.asUintN(64, p.ismGid), off);
    b.writeUInt16BE(intField(p.ismChid, 16, 'ismChid'), off + 8);
    if (p.proof) fixedBytes(p.proof, SMCD_PROOF_LEN, 'proof').copy(b, off + SMCD_PROOF_OFF);
    // v2_ext_offset: from the end of this field to the v2 extension (smc_clc.c 933-939).
    if (p.v2) b.writeUInt16BE(SMC_AREA_LEN - 12 + prefixAreaLen(p.prefix), off + 10);
    off += SMC_AREA_LEN;
  }
  if (p.prefix) {
    ipv4Bytes(p.prefix.subnet).copy(b, off);
    b[off + 4] = intField(p.prefix.prefixLength, 8, 'prefixLength');
    b[off + 7] = p.prefix.ipv6Prefixes.length;
    off += PREFIX_AREA_LEN;
    for (const pf of p.prefix.ipv6Prefixes) {
      ipv6Bytes(pf.prefix).copy(b, off);
      b[off + 16] = intField(pf.length, 8, 'ipv6 prefix length');
      off += IPV6_PREFIX_LEN;
    }
  }
  if (p.v2) {
    const x = p.v2;
    b[off] = x.userEids.length;
    b[off + 1] = x.smcd ? x.smcd.gidChids.length : 0;
    b[off + 3] = (intField(x.release, 4, 'release') << 4) | (x.seid ? 1 : 0);
    // smcd_v2_ext_offset: from the end of this field to the SMC-Dv2 extension (smc_clc.c 959-962).
    if (x.smcd) b.writeUInt16BE(V2_EXT_LEN - 8 + x.userEids.length * SMC_MAX_EID_LEN, off + 6);
    fixedBytes(x.roceGid, SMC_GID_LEN, 'roceGid').copy(b, off + 8);
    b[off + 24] = intField(x.maxConns, 8, 'maxConns');
    b[off + 25] = intField(x.maxLinks, 8, 'maxLinks');
    b.writeUInt16BE(intField(x.featureMask, 16, 'featureMask'), off + 26);
    off += V2_EXT_LEN;
    for (const e of x.userEids) { textField(e, 'user EID').copy(b, off); off += SMC_MAX_EID_LEN; }
    if (x.smcd) {
      textField(x.smcd.systemEid, 'system EID', '\0').copy(b, off);
      off += SMCD_V2_EXT_LEN;
      for (const g of x.smcd.gidChids) {
        b.writeBigUInt64BE(BigInt.asUintN(64, g.gid), off);
        b.writeUInt16BE(intField(g.chid, 16, 'chid'), off + 8);
        off += GIDCHID_LEN;
      }
    }
  }
  EYECATCHER_R.copy(b, off);
  return b;
}

function encodeFce(f: FirstContactExt): Buffer {
  // Linux reads the form from the release (smc_clc_clnt_v2x_features_validate): keep them together.
  if ((f.v2x !== null) !== (f.release >= 1)) throw new RangeError(`fce: v2x must be given exactly from release 1 on (release ${f.release})`);
  // Release 0 is the 36-byte form and 16 reserved bytes (Linux 6.1's smc_clc_fce_gid_ext opens
  // with reserved[16]; 6.12 sends the 52-byte form for every SMC-R release): the GID list
  // starts 52 bytes after the extension either way.
  const b = Buffer.alloc(FCE_V2X_LEN);
  b[0] = f.v2Direct ? 0x80 : 0;
  b[1] = (intField(f.osType, 4, 'osType') << 4) | intField(f.release, 4, 'release');
  textField(f.hostname, 'hostname').copy(b, 4);
  if (f.v2x) {
    b[36] = intField(f.v2x.maxConns, 8, 'maxConns');
    b[37] = intField(f.v2x.maxLinks, 8, 'maxLinks');
    b.writeUInt16BE(intField(f.v2x.featureMask, 16, 'featureMask'), 38);
    b.writeUInt32BE(intField(f.v2x.vendorExpOptions, 32, 'vendorExpOptions'), 40);
  }
  return b;
}

/**
 * Encode an SMC-R Accept or Confirm as smcr_clc_prep_confirm_accept (smc_clc.c 1091-1152) lays it
 * out: 68 bytes in v1; in v2 108 bytes (r1: the negotiated EID), then on first contact the
 * first-contact extension and, in a Confirm, the GID list.
 */
export function encodeSmcrAcceptConfirm(m: SmcrAcceptConfirm): Buffer {
  const v2 = m.version >= SMC_CLC_V2;
  if (!v2 && (m.eid !== null || m.fce !== null || m.gidList !== null)) throw new RangeError('a version 1 accept/confirm has no eid, fce or gidList');
  if (v2 && m.eid === null) throw new RangeError('a version 2 accept/confirm carries an eid');
  if (v2 && (m.fce !== null) !== m.firstContact) throw new RangeError('fce must be given exactly on first contact');
  const wantGids = v2 && m.firstContact && m.type === CLC_CONFIRM;
  if (wantGids !== (m.gidList !== null)) throw new RangeError('gidList must be given exactly in a first-contact v2 confirm');
  if (m.gidList && m.gidList.length > 255) throw new RangeError('at most 255 GIDs');
  const fce = m.fce ? encodeFce(m.fce) : Buffer.alloc(0);
  const gids = m.gidList ? GID_EXT_HDR_LEN + m.gidList.length * SMC_GID_LEN : 0;
  const len = (v2 ? SMCR_ACCEPT_CONFIRM_V2_LEN : SMCR_ACCEPT_CONFIRM_LEN) + fce.length + gids;
  const b = Buffer.alloc(len);
  EYECATCHER_R.copy(b, 0);
  b[4] = m.type;
  b.writeUInt16BE(len, 5);
  b[7] = hdrByte(m.version, m.firstContact ? FIRST_CONTACT_MASK : 0, SMC_TYPE_R);
  fixedBytes(m.peerId, SMC_SYSTEMID_LEN, 'peerId').copy(b, 8);
  fixedBytes(m.gid, SMC_GID_LEN, 'gid').copy(b, 16);
  fixedBytes(m.mac, SMC_MAC_LEN, 'mac').copy(b, 32);
  b.writeUIntBE(intField(m.qpn, 24, 'qpn'), 38, 3);
  b.writeUInt32BE(intField(m.rmbRkey, 32, 'rmbRkey'), 41);
  b[45] = intField(m.rmbeIndex, 8, 'rmbeIndex');
  b.writeUInt32BE(intField(m.rmbeAlertToken, 32, 'rmbeAlertToken'), 46);
  b[50] = (intField(m.rmbeSize, 4, 'rmbeSize') << 4) | intField(m.qpMtu, 4, 'qpMtu');
  b.writeBigUInt64BE(BigInt.asUintN(64, m.rmbDmaAddr), 52);
  b.writeUIntBE(intField(m.psn, 24, 'psn'), 61, 3);
  let off = 64;
  if (v2) {
    textField(m.eid!, 'eid', '\0').copy(b, off);
    off += SMC_MAX_EID_LEN + 8;
    fce.copy(b, off);
    off += fce.length;
    if (m.gidList) {
      b[off] = m.gidList.length;
      off += GID_EXT_HDR_LEN;
      for (const g of m.gidList) { fixedBytes(g, SMC_GID_LEN, 'gidList entry').copy(b, off); off += SMC_GID_LEN; }
    }
  }
  EYECATCHER_R.copy(b, off);
  return b;
}

/**
 * Encode a Decline as smc_clc_send_decline (smc_clc.c 804-843): 28 bytes in v1, 44 in v2 (four
 * more diagnosis words), os_type only in v2, the out-of-sync bit in typev2.
 */
export function encodeSmcDecline(m: Omit<SmcDecline, 'type' | 'eyecatcher'> & { eyecatcher?: 'SMCR' | 'SMCD' }): Buffer {
  const v2 = m.version >= SMC_CLC_V2;
  if (m.diagnosisV2.length !== (v2 ? 4 : 0)) throw new RangeError(`diagnosisV2 has ${v2 ? 4 : 0} entries in version ${m.version}`);
  const len = v2 ? DECLINE_V2_LEN : DECLINE_LEN;
  const b = Buffer.alloc(len);
  const eye = m.eyecatcher === 'SMCD' ? EYECATCHER_D : EYECATCHER_R;
  eye.copy(b, 0);
  b[4] = CLC_DECLINE;
  b.writeUInt16BE(len, 5);
  b[7] = hdrByte(m.version, m.outOfSync ? FIRST_CONTACT_MASK : 0, 0);
  fixedBytes(m.peerId, SMC_SYSTEMID_LEN, 'peerId').copy(b, 8);
  b.writeUInt32BE(intField(m.diagnosis, 32, 'diagnosis'), 16);
  b[20] = intField(m.osType, 4, 'osType') << 4;
  m.diagnosisV2.forEach((d, i) => b.writeUInt32BE(intField(d, 32, 'diagnosisV2'), 24 + 4 * i));
  eye.copy(b, len - CLC_TRAILER_LEN);
  return b;
}

/**
 * The length of the CLC message (any version) at the start of b, or 0 if more bytes are
 * needed; throws ClcError(SYNCERR) for anything that is not a CLC header.
 */
export function clcFrameLengthAny(b: Buffer): number {
  if (b.length < CLC_HDR_LEN) {
    if (!mayBeClc(b)) throw new ClcError(DECLINE.SYNCERR, 'eyecatcher: no CLC eyecatcher', 'eyecatcher');
    return 0;
  }
  const eye = b.subarray(0, 4);
  need(eye.equals(EYECATCHER_R) || eye.equals(EYECATCHER_D), 'eyecatcher', 'no CLC eyecatcher');
  need(b[4]! >= CLC_PROPOSAL && b[4]! <= CLC_DECLINE, 'type', `unknown CLC message type ${b[4]}`);
  const len = b.readUInt16BE(5);
  need(len >= CLC_HDR_LEN + CLC_TRAILER_LEN && len <= CLC_V2_MAX_LEN, 'length', `CLC length ${len} out of range`);
  return b.length >= len ? len : 0;
}

const latin1 = (b: Buffer, off: number, n: number): string => b.toString('latin1', off, off + n);

function decodePrefix(b: Buffer, off: number, end: number): { prefix: ClcPrefix; len: number } {
  need(off + PREFIX_AREA_LEN <= end, 'outgoing_subnet', 'prefix area beyond the message');
  const n6 = b[off + 7]!;
  need(n6 <= MAX_V6_PREFIXES, 'ipv6_prefixes_cnt', `${n6} IPv6 prefixes (at most ${MAX_V6_PREFIXES})`);
  const len = PREFIX_AREA_LEN + n6 * IPV6_PREFIX_LEN;
  need(off + len <= end, 'ipv6_prefixes_cnt', `${n6} IPv6 prefixes do not fit the message`);
  const ipv6Prefixes: Ipv6Prefix[] = [];
  for (let i = 0; i < n6; i++) {
    const o = off + PREFIX_AREA_LEN + i * IPV6_PREFIX_LEN;
    ipv6Prefixes.push({ prefix: bytesToV6(b.subarray(o, o + 16)), length: b[o + 16]! });
  }
  return { prefix: { subnet: [...b.subarray(off, off + 4)].join('.'), prefixLength: b[off + 4]!, ipv6Prefixes }, len };
}

function decodeProposalAny(b: Buffer, len: number, version: number, typeV2raw: number, typeV1: number): SmcProposal {
  const v2 = version >= SMC_CLC_V2;
  const typeV2 = v2 ? typeV2raw : SMC_TYPE_N;
  const end = len - CLC_TRAILER_LEN;
  need(len >= PROPOSAL_BASE_LEN + CLC_TRAILER_LEN, 'length', `proposal of ${len} bytes is too short`);
  const ipOff = b.readUInt16BE(38);
  if (!v2) need(typeV1 !== SMC_TYPE_N, 'typev1', 'a version 1 proposal offers neither SMC-R nor SMC-D');
  // Linux takes iparea_offset up to sizeof(smc_clc_msg_smcd) (smc_clc.h smc_clc_proposal_get_prefix)
  // and requires exactly that when SMC-D is offered (smc_get_clc_msg_smcd); only 0 and 40 are sent.
  need(ipOff === 0 || ipOff === SMC_AREA_LEN, 'iparea_offset', `${ipOff} (0 or ${SMC_AREA_LEN})`);
  need(!smcdIndicated(typeV1) || ipOff === SMC_AREA_LEN, 'iparea_offset', `${ipOff} with SMC-D offered (must be ${SMC_AREA_LEN})`);
  need(!v2 || typeV1 === SMC_TYPE_N || ipOff === SMC_AREA_LEN, 'iparea_offset', `${ipOff} in a version 2 proposal with a prefix area`);
  const smcArea = v2 || ipOff === SMC_AREA_LEN;
  let off = PROPOSAL_BASE_LEN;
  let ismGid = 0n, ismChid = 0, v2ExtOff = 0;
  if (smcArea) {
    need(off + SMC_AREA_LEN <= end, 'pclc_smcd', 'SMC-D area beyond the message');
    ismGid = b.readBigUInt64BE(off);
    ismChid = b.readUInt16BE(off + 8);
    v2ExtOff = b.readUInt16BE(off + 10);
    off += SMC_AREA_LEN;
  }
  let prefix: ClcPrefix | null = null;
  if (typeV1 !== SMC_TYPE_N) {
    const p = decodePrefix(b, off, end);
    prefix = p.prefix;
    off += p.len;
  }
  let ext: ClcV2Extension | null = null;
  if (v2 && typeV2 !== SMC_TYPE_N) {
    need(v2ExtOff === off - (PROPOSAL_BASE_LEN + 12), 'v2_ext_offset', `${v2ExtOff} does not point behind the prefix area (${off - PROPOSAL_BASE_LEN - 12})`, DECLINE.NOV2EXT);
    need(off + V2_EXT_LEN <= end, 'v2_ext', 'v2 extension beyond the message', DECLINE.NOV2EXT);
    const eidCnt = b[off]!, gidCnt = b[off + 1]!;
    need(eidCnt <= SMC_CLC_MAX_UEID, 'eid_cnt', `${eidCnt} user EIDs (at most ${SMC_CLC_MAX_UEID})`);
    const smcd = smcdIndicated(typeV2);
    need(!smcd || gidCnt <= SMCD_CLC_MAX_V2_GID_ENTRIES, 'ism_gid_cnt', `${gidCnt} ISM GIDs (at most ${SMCD_CLC_MAX_V2_GID_ENTRIES})`);
    const flag = b[off + 3]!;
    const smcdExtOff = b.readUInt16BE(off + 6);
    const roceGid = Buffer.from(b.subarray(off + 8, off + 24));
    const maxConns = b[off + 24]!, maxLinks = b[off + 25]!, featureMask = b.readUInt16BE(off + 26);
    off += V2_EXT_LEN;
    need(off + eidCnt * SMC_MAX_EID_LEN <= end, 'eid_cnt', `${eidCnt} user EIDs do not fit the message`);
    const userEids: string[] = [];
    for (let i = 0; i < eidCnt; i++) { userEids.push(latin1(b, off, SMC_MAX_EID_LEN)); off += SMC_MAX_EID_LEN; }
    let smcdExt: ClcV2Extension['smcd'] = null;
    if (smcd) {
      need(smcdExtOff === V2_EXT_LEN - 8 + eidCnt * SMC_MAX_EID_LEN, 'smcd_v2_ext_offset', `${smcdExtOff} does not point behind the user EIDs`, DECLINE.NOV2DEXT);
      need(off + SMCD_V2_EXT_LEN + gidCnt * GIDCHID_LEN <= end, 'ism_gid_cnt', 'SMC-Dv2 extension beyond the message', DECLINE.NOV2DEXT);
      const systemEid = latin1(b, off, SMC_MAX_EID_LEN);
      off += SMCD_V2_EXT_LEN;
      const gidChids: IsmGidChid[] = [];
      for (let i = 0; i < gidCnt; i++) { gidChids.push({ gid: b.readBigUInt64BE(off), chid: b.readUInt16BE(off + 8) }); off += GIDCHID_LEN; }
      smcdExt = { systemEid, gidChids };
    }
    ext = { release: flag >> 4, seid: (flag & 1) !== 0, roceGid, maxConns, maxLinks, featureMask, userEids, smcd: smcdExt };
  }
  need(off === end, 'length', `proposal length ${len} does not match its areas (${off + CLC_TRAILER_LEN})`);
  return {
    type: CLC_PROPOSAL, version, typeV1, typeV2,
    peerId: Buffer.from(b.subarray(8, 16)), gid: Buffer.from(b.subarray(16, 32)), mac: Buffer.from(b.subarray(32, 38)),
    ismGid, ismChid, prefix, v2: ext,
    proof: smcdIndicated(typeV1) ? Buffer.from(b.subarray(PROPOSAL_BASE_LEN + SMCD_PROOF_OFF, PROPOSAL_BASE_LEN + SMCD_PROOF_OFF + SMCD_PROOF_LEN)) : null,
  };
}

function decodeFce(b: Buffer, off: number, long: boolean): FirstContactExt {
  return {
    v2Direct: (b[off]! & 0x80) !== 0, osType: b[off + 1]! >> 4, release: b[off + 1]! & 0xf, hostname: latin1(b, off + 4, SMC_MAX_HOSTNAME_LEN),
    v2x: long ? { maxConns: b[off + 36]!, maxLinks: b[off + 37]!, featureMask: b.readUInt16BE(off + 38), vendorExpOptions: b.readUInt32BE(off + 40) } : null,
  };
}

function decodeSmcrAcceptConfirm(b: Buffer, len: number, type: SmcrAcceptConfirm['type'], version: number, typeV2: number): SmcrAcceptConfirm {
  const v2 = version >= SMC_CLC_V2;
  // smc_clc_msg_acc_conf_valid (smc_clc.c 399-421): exactly 68 bytes in v1, at least 108 in v2.
  if (v2) need(len >= SMCR_ACCEPT_CONFIRM_V2_LEN, 'length', `SMC-Rv2 accept/confirm of ${len} bytes (at least ${SMCR_ACCEPT_CONFIRM_V2_LEN})`);
  else need(len === SMCR_ACCEPT_CONFIRM_LEN, 'length', `SMC-R accept/confirm of ${len} bytes (must be ${SMCR_ACCEPT_CONFIRM_LEN})`);
  const firstContact = (typeV2 & FIRST_CONTACT_MASK) !== 0;
  const m: SmcrAcceptConfirm = {
    type, version, firstContact,
    peerId: Buffer.from(b.subarray(8, 16)), gid: Buffer.from(b.subarray(16, 32)), mac: Buffer.from(b.subarray(32, 38)),
    qpn: b.readUIntBE(38, 3), rmbRkey: b.readUInt32BE(41), rmbeIndex: b[45]!, rmbeAlertToken: b.readUInt32BE(46),
    rmbeSize: b[50]! >> 4, qpMtu: b[50]! & 0xf, rmbDmaAddr: b.readBigUInt64BE(52), psn: b.readUIntBE(61, 3),
    eid: null, fce: null, gidList: null,
  };
  if (!v2) return m;
  m.eid = latin1(b, 64, SMC_MAX_EID_LEN);
  const rest = len - SMCR_ACCEPT_CONFIRM_V2_LEN; // bytes between r1 and the trailer
  const base = SMCR_ACCEPT_CONFIRM_V2_LEN - CLC_TRAILER_LEN;
  // As Linux, bytes beyond what the message needs are ignored (smc_clc_msg_acc_conf_valid
  // checks only the 108-byte minimum; a later release or another OS may send more).
  if (!firstContact) return m;
  // The extension sits right after r1 (smc_get_clc_first_contact_ext); its release says whether
  // the v2x fields are there (from release 1, SMC v2.1, as smc_clc_clnt_v2x_features_validate
  // reads it). For SMC-R the GID list of a Confirm starts 52 bytes after the extension in every
  // release: 6.12 sends the 52-byte form always (smc_clc_fill_fce_v2x), 6.1 the 36-byte form and
  // then 16 reserved bytes (the start of its smc_clc_fce_gid_ext). A release-0 Accept needs only 36.
  need(rest >= 2, 'length', `${rest} bytes after r1: no first-contact extension`);
  const release = b[base + 1]! & 0xf;
  const fceLen = release >= 1 ? FCE_V2X_LEN : FCE_LEN;
  need(rest >= fceLen, 'length', `${rest} bytes after r1: a first-contact extension of release ${release} needs ${fceLen}`);
  const gidOff = FCE_V2X_LEN;
  if (type === CLC_CONFIRM) {
    need(rest >= gidOff + GID_EXT_HDR_LEN, 'gid_cnt', `${rest} bytes after r1: no GID list 52 bytes after the first-contact extension`);
    const n = b[base + gidOff]!;
    need(rest >= gidOff + GID_EXT_HDR_LEN + n * SMC_GID_LEN, 'gid_cnt', `${n} GIDs do not fit in the ${rest - gidOff - GID_EXT_HDR_LEN} bytes after the first-contact extension`);
  }
  m.fce = decodeFce(b, base, release >= 1);
  if (type === CLC_CONFIRM) {
    const n = b[base + gidOff]!;
    need(n <= SMC_CLC_MAX_GID_LIST, 'gid_cnt', `${n} GIDs (at most ${SMC_CLC_MAX_GID_LIST})`);
    const gidList: Buffer[] = [];
    for (let i = 0, o = base + gidOff + GID_EXT_HDR_LEN; i < n; i++, o += SMC_GID_LEN) gidList.push(Buffer.from(b.subarray(o, o + SMC_GID_LEN)));
    m.gidList = gidList;
  }
  return m;
}

/**
 * Decode one whole CLC message of any version and type (as framed by clcFrameLengthAny). Checks as
 * Linux's smc_clc_msg_hdr_valid (smc_clc.c 469-509) does and more: both eyecatchers, every length
 * and count; a Decline's trailer is not checked (Linux does not either). SMC-D v1 Accept/Confirm
 * decode to decodeClc's AcceptConfirm; SMC-Dv2 Accept/Confirm are refused (VERSMISMAT).
 */
export function decodeSmcClc(b: Buffer): SmcClcMessage {
  const len = clcFrameLengthAny(b);
  need(len !== 0 && len === b.length, 'length', `CLC message of ${len} bytes in ${b.length}`);
  const type = b[4]!;
  const version = b[7]! >> 4, typeV2 = (b[7]! >> 2) & 3, typeV1 = b[7]! & 3;
  need(version >= SMC_CLC_V1, 'version', `CLC version ${version}`, DECLINE.VERSMISMAT);
  const trl = b.subarray(len - 4);
  if (type !== CLC_DECLINE) need(trl.equals(EYECATCHER_R) || trl.equals(EYECATCHER_D), 'trl', 'trailer is no eyecatcher');
  switch (type) {
    case CLC_PROPOSAL:
      return decodeProposalAny(b, len, version, typeV2, typeV1);
    case CLC_ACCEPT:
    case CLC_CONFIRM: {
      need(typeV1 === SMC_TYPE_R || typeV1 === SMC_TYPE_D, 'typev1', `accept/confirm of SMC type ${typeV1}`, DECLINE.MODEUNSUPP);
      if (typeV1 === SMC_TYPE_R) return decodeSmcrAcceptConfirm(b, len, type, version, typeV2);
      need(version === SMC_CLC_V1, 'version', 'SMC-Dv2 accept/confirm is not decoded here', DECLINE.VERSMISMAT);
      need(len === SMCD_ACCEPT_CONFIRM_LEN, 'length', `SMC-D accept/confirm must be ${SMCD_ACCEPT_CONFIRM_LEN} bytes, got ${len}`);
      return {
        type, version, firstContact: (typeV2 & FIRST_CONTACT_MASK) !== 0,
        gid: b.readBigUInt64BE(8), token: b.readBigUInt64BE(16), dmbeIndex: b[24]!, dmbeSize: b[25]! >> 4, linkId: b.readUInt32BE(28),
      };
    }
    default: {
      const v2 = version >= SMC_CLC_V2;
      // smc_clc_msg_decl_valid (smc_clc.c 424-437): 28 bytes in v1, 44 in v2.
      need(len === (v2 ? DECLINE_V2_LEN : DECLINE_LEN), 'length', `version ${version} decline must be ${v2 ? DECLINE_V2_LEN : DECLINE_LEN} bytes, got ${len}`);
      return {
        type: CLC_DECLINE, version, outOfSync: (typeV2 & FIRST_CONTACT_MASK) !== 0, peerId: Buffer.from(b.subarray(8, 16)),
        diagnosis: b.readUInt32BE(16), osType: b[20]! >> 4,
        diagnosisV2: v2 ? [0, 1, 2, 3].map((i) => b.readUInt32BE(24 + 4 * i)) : [],
        eyecatcher: b[3] === 0xc4 ? 'SMCD' : 'SMCR',
      };
    }
  }
}

/**
 * Is this a user EID Linux would take (smc_clc_ueid_valid, smc_clc.c 58-80, with the kernel's
 * Latin-1 ctype table, lib/ctype.c)? At most 32 bytes, blank-padded to 32 on the wire; after the
 * trailing white space is cut, every character an upper-case letter (A-Z and Latin-1's), a
 * digit, '.' or '-', the first not '.' or '-'. A Linux server matches UEIDs byte for byte.
 */
export function ueidValid(eid: string): boolean {
  const b = Buffer.from(eid, 'latin1');
  if (b.length > SMC_MAX_EID_LEN || b.toString('latin1') !== eid) return false;
  const space = (c: number) => c === 32 || (c >= 9 && c <= 13) || c === 160;
  const upperOrDigit = (c: number) => (c >= 0x41 && c <= 0x5a) || (c >= 0x30 && c <= 0x39) || (c >= 192 && c <= 222 && c !== 215);
  let end = b.length;
  while (end > 0 && space(b[end - 1]!)) end--;
  if (end === 0 || !upperOrDigit(b[0]!)) return false;
  for (let i = 1; i < end; i++) if (!upperOrDigit(b[i]!) && b[i] !== 0x2e && b[i] !== 0x2d) return false;
  return true;
}
