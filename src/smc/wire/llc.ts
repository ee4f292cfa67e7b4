// SMC-R LLC (link layer control) messages, SENDs on a link's RC QP, as Linux 6.12 lays them out
// (net/smc/smc_llc.c 22-195, smc_llc.h 18-60). Version 1 messages are 44 bytes:
//   0  type: llc_version << 4 | llc_type (smc.h struct smc_wr_rx_hdr; v1 types 0x01-0x09)
//   1  length 44
//   2  add_link_rej_rsn in the low nibble (ADD_LINK only), else reserved
//   3  flags: 0x80 response, then per type
//   4  40 bytes of the message
// Version 2 link groups (SMC-Rv2) send the types with llc_version 2 (0x21, 0x22, 0x24-0x27, 0x29)
// and a 16-bit length in bytes 1-2 which Linux stores in host order (smc_llc.c 440:
// `hdr->length_v2 = len`), so little-endian from x86; receivers only check it is >= 44
// (smc_llc.c 2100). ADD_LINK, REQ_ADD_LINK and DELETE_RKEY may be longer than 44 in v2 (sent from
// the 8 KiB v2 buffer). ADD_LINK_CONT is always sent as version 1 (smc_llc.c 878-879).
//
// What Linux does with a message it cannot take: a first byte no handler is registered for
// (smc_llc.c 2290-2355: the types above; not 0x05, 0x23, 0x28) is dropped by smc_wr_rx_demultiplex
// (smc_wr.c 443-446); fewer than 44 bytes, a v1 length other than 44 or a v2 length under 44 are
// dropped by smc_llc_rx_handler (smc_llc.c 2094-2101). Nothing is answered and nothing is counted.
// decodeLlc throws SmcrWireError naming the field in each of these cases; the caller drops (and may
// count) the message as Linux drops it.

import { SmcrWireError, bytes, need, uint } from './error.js';

export const LLC_MSG_LEN = 44;
export const LLC = {
  CONFIRM_LINK: 0x01,
  ADD_LINK: 0x02,
  ADD_LINK_CONT: 0x03,
  DELETE_LINK: 0x04,
  REQ_ADD_LINK: 0x05,
  CONFIRM_RKEY: 0x06,
  TEST_LINK: 0x07,
  CONFIRM_RKEY_CONT: 0x08,
  DELETE_RKEY: 0x09,
} as const;
export type LlcKind = keyof typeof LLC;

/** First bytes Linux 6.12 registers a handler for (smc_llc.c 2290-2355); anything else is dropped. */
export const LLC_TYPES_ACCEPTED: readonly number[] = [0x01, 0x02, 0x03, 0x04, 0x06, 0x07, 0x08, 0x09, 0x21, 0x22, 0x24, 0x25, 0x26, 0x27, 0x29];

export const LLC_FLAG_RESP = 0x80;
/** CONFIRM_LINK: Linux always sets these two bits (SMC_LLC_FLAG_NO_RMBE_EYEC). */
export const LLC_FLAG_NO_RMBE_EYEC = 0x03;
export const LLC_FLAG_ADD_LNK_REJ = 0x40;
export const LLC_REJ_RSN_NO_ALT_PATH = 1;
export const LLC_FLAG_DEL_LINK_ALL = 0x40;
export const LLC_FLAG_DEL_LINK_ORDERLY = 0x20;
export const LLC_FLAG_RKEY_NEG = 0x20;
export const LLC_FLAG_RKEY_RETRY = 0x10;

/** DELETE_LINK reason codes (smc_llc.h 52-60). */
export const LLC_DEL = {
  LOST_PATH: 0x00010000,
  OP_INIT_TERM: 0x00020000,
  PROG_INIT_TERM: 0x00030000,
  PROT_VIOL: 0x00040000,
  NO_ASYM_NEEDED: 0x00050000,
  NOLNK: 0x00100000,
  NOLGR: 0x00200000,
} as const;

/** How long Linux waits for LLC answers (smc_llc.h 20-22), in ms. */
export const LLC_WAIT_FIRST_MS = 5000;
export const LLC_WAIT_MS = 2000;
export const LLC_TESTLINK_DEFAULT_MS = 30000;

interface LlcBase { version: 1 | 2; response: boolean }

export interface LlcConfirmLink extends LlcBase {
  kind: 'CONFIRM_LINK';
  noRmbeEyec: boolean;
  senderMac: Buffer;
  senderGid: Buffer;
  senderQpn: number;
  linkNum: number;
  /** 4 bytes (SMC_LGR_ID_SIZE). */
  linkUid: Buffer;
  maxLinks: number;
  maxConns: number;
}

/** rkey of a buffer on the existing link, its rkey and address on the new link (smc_llc_msg_add_link_cont_rt). */
export interface LlcRkeyPair { rmbKey: number; rmbKeyNew: number; rmbVaddrNew: bigint }

export interface LlcAddLink extends LlcBase {
  kind: 'ADD_LINK';
  rejected: boolean;
  /** v1 only: in v2 byte 2 is the length's high byte (Linux's reason is overwritten, smc_llc.c 936-938). */
  rejReason: number;
  senderMac: Buffer;
  senderGid: Buffer;
  senderQpn: number;
  linkNum: number;
  qpMtu: number;
  initialPsn: number;
  /** v2 only, when the message is longer than 44 bytes (smc_llc_msg_add_link_v2_ext). */
  v2ext: { v2Direct: boolean; clientTargetGid: Buffer; rkeys: LlcRkeyPair[] } | null;
}

export interface LlcAddLinkCont extends LlcBase {
  kind: 'ADD_LINK_CONT';
  linkNum: number;
  /** Rkeys still to send, these included (Linux's num_rkeys_todo); min(numRkeys, 2) pairs are read. */
  numRkeys: number;
  rkeys: LlcRkeyPair[];
}

export interface LlcDeleteLink extends LlcBase {
  kind: 'DELETE_LINK';
  all: boolean;
  orderly: boolean;
  linkNum: number;
  reason: number;
}

export interface LlcReqAddLink extends LlcBase {
  kind: 'REQ_ADD_LINK';
  /** The requester's GIDs for a new link (v2 only; Linux answers with none). */
  gids: Buffer[];
}

/** An rtoken: the link it is for, and the buffer's rkey and address on that link (smc_rmb_rtoken). */
export interface LlcRtoken { linkId: number; rmbKey: number; rmbVaddr: bigint }

export interface LlcConfirmRkey extends LlcBase {
  kind: 'CONFIRM_RKEY';
  negative: boolean;
  retry: boolean;
  /** rtoken[0].num_rkeys: how many rtokens follow for other links; Linux refuses more than 3 and reads at most 2. */
  numRkeys: number;
  /** The buffer's rkey and address on the link the message came on. */
  rmbKey: number;
  rmbVaddr: bigint;
  /** min(numRkeys, 2) rtokens for the other links. */
  others: LlcRtoken[];
}

export interface LlcConfirmRkeyCont extends LlcBase {
  kind: 'CONFIRM_RKEY_CONT';
  negative: boolean;
  retry: boolean;
  numRkeys: number;
  /** min(numRkeys, 3) rtokens (RFC 7609 layout; Linux ignores this message). */
  rtokens: LlcRtoken[];
}

export interface LlcDeleteRkey extends LlcBase {
  kind: 'DELETE_RKEY';
  negative: boolean;
  numRkeys: number;
  /** v1: the bit mask of rkeys that failed (0x80 = first); v2: how many failed (num_inval_rkeys). */
  errMask: number;
  /** v1: min(numRkeys, 8) rkeys; v2: numRkeys rkeys (the message grows past 44 bytes beyond 9). */
  rkeys: number[];
}

export interface LlcTestLink extends LlcBase {
  kind: 'TEST_LINK';
  userData: Buffer;
}

export type LlcMessage = LlcConfirmLink | LlcAddLink | LlcAddLinkCont | LlcDeleteLink | LlcReqAddLink | LlcConfirmRkey | LlcConfirmRkeyCont | LlcDeleteRkey | LlcTestLink;

const ADD_LINK_V2_EXT_LEN = 28;
const RT_PAIR_LEN = 16;
const RTOKEN_LEN = 13;
const REQ_ADD_LINK_HDR_LEN = 28;

function writeRtoken(b: Buffer, off: number, t: LlcRtoken): void {
  b[off] = uint(t.linkId, 8, 'linkId');
  b.writeUInt32BE(uint(t.rmbKey, 32, 'rmbKey'), off + 1);
  b.writeBigUInt64BE(BigInt.asUintN(64, t.rmbVaddr), off + 5);
}
const readRtoken = (b: Buffer, off: number): LlcRtoken => ({ linkId: b[off]!, rmbKey: b.readUInt32BE(off + 1), rmbVaddr: b.readBigUInt64BE(off + 5) });

function writePair(b: Buffer, off: number, p: LlcRkeyPair): void {
  b.writeUInt32BE(uint(p.rmbKey, 32, 'rmbKey'), off);
  b.writeUInt32BE(uint(p.rmbKeyNew, 32, 'rmbKeyNew'), off + 4);
  b.writeBigUInt64BE(BigInt.asUintN(64, p.rmbVaddrNew), off + 8);
}
const readPair = (b: Buffer, off: number): LlcRkeyPair => ({ rmbKey: b.readUInt32BE(off), rmbKeyNew: b.readUInt32BE(off + 4), rmbVaddrNew: b.readBigUInt64BE(off + 8) });

function count(n: number, entries: number, cap: number, what: string): void {
  if (entries !== Math.min(n, cap)) throw new RangeError(`${what}: ${entries} entries for a count of ${n} (must be ${Math.min(n, cap)})`);
}

function msgLen(m: LlcMessage): number {
  if (m.version !== 2) return LLC_MSG_LEN;
  switch (m.kind) {
    case 'ADD_LINK': return m.v2ext ? LLC_MSG_LEN + ADD_LINK_V2_EXT_LEN + m.v2ext.rkeys.length * RT_PAIR_LEN : LLC_MSG_LEN;
    case 'REQ_ADD_LINK': return Math.max(LLC_MSG_LEN, REQ_ADD_LINK_HDR_LEN + m.gids.length * 16);
    case 'DELETE_RKEY': return Math.max(LLC_MSG_LEN, 8 + m.rkeys.length * 4);
    default: return LLC_MSG_LEN;
  }
}

/** Encode an LLC message (a fresh Buffer of its length: 44 bytes, or more for the v2 forms above). */
export function encodeLlc(m: LlcMessage): Buffer {
  if (m.version !== 1 && m.version !== 2) throw new RangeError(`LLC version ${String(m.version)}`);
  if (m.version === 2 && m.kind === 'ADD_LINK_CONT') throw new RangeError('ADD_LINK_CONT is always version 1 (smc_llc.c 878-879)');
  if (m.version === 1 && m.kind === 'REQ_ADD_LINK') throw new RangeError('REQ_ADD_LINK exists only in version 2 (Linux drops 0x05)');
  if (m.version === 2 && m.kind === 'CONFIRM_RKEY_CONT') throw new RangeError('Linux has no version 2 CONFIRM_RKEY_CONT (0x28 is dropped)');
  const len = msgLen(m);
  const b = Buffer.alloc(len);
  b[0] = (m.version === 2 ? 0x20 : 0) | LLC[m.kind]; // llc_version is 0 in v1 (smc_llc.c 442)
  if (m.version === 2) b.writeUInt16LE(len, 1);
  else b[1] = LLC_MSG_LEN;
  let flags = m.response ? LLC_FLAG_RESP : 0;
  switch (m.kind) {
    case 'CONFIRM_LINK':
      if (m.noRmbeEyec) flags |= LLC_FLAG_NO_RMBE_EYEC;
      bytes(m.senderMac, 6, 'senderMac').copy(b, 4);
      bytes(m.senderGid, 16, 'senderGid').copy(b, 10);
      b.writeUIntBE(uint(m.senderQpn, 24, 'senderQpn'), 26, 3);
      b[29] = uint(m.linkNum, 8, 'linkNum');
      bytes(m.linkUid, 4, 'linkUid').copy(b, 30);
      b[34] = uint(m.maxLinks, 8, 'maxLinks');
      b[35] = uint(m.maxConns, 8, 'maxConns');
      break;
    case 'ADD_LINK':
      if (m.rejected) flags |= LLC_FLAG_ADD_LNK_REJ;
      if (m.version === 1) b[2] = uint(m.rejReason, 4, 'rejReason');
      else if (m.rejReason !== 0) throw new RangeError('no reject reason in a version 2 ADD_LINK');
      if (m.version === 1 && m.v2ext) throw new RangeError('v2ext in a version 1 ADD_LINK');
      bytes(m.senderMac, 6, 'senderMac').copy(b, 4);
      bytes(m.senderGid, 16, 'senderGid').copy(b, 12);
      b.writeUIntBE(uint(m.senderQpn, 24, 'senderQpn'), 28, 3);
      b[31] = uint(m.linkNum, 8, 'linkNum');
      b[32] = uint(m.qpMtu, 4, 'qpMtu');
      b.writeUIntBE(uint(m.initialPsn, 24, 'initialPsn'), 33, 3);
      if (m.v2ext) {
        if (m.v2ext.rkeys.length > 255) throw new RangeError('at most 255 rkeys (SMC_LLC_RKEYS_PER_MSG_V2)');
        b[44] = m.v2ext.v2Direct ? 0x80 : 0;
        bytes(m.v2ext.clientTargetGid, 16, 'clientTargetGid').copy(b, 46);
        b.writeUInt16LE(m.v2ext.rkeys.length, 70); // u16 num_rkeys in host order, as x86 Linux sends it
        m.v2ext.rkeys.forEach((p, i) => writePair(b, 72 + i * RT_PAIR_LEN, p));
      }
      break;
    case 'ADD_LINK_CONT':
      count(m.numRkeys, m.rkeys.length, 2, 'rkeys');
      b[4] = uint(m.linkNum, 8, 'linkNum');
      b[5] = uint(m.numRkeys, 8, 'numRkeys');
      m.rkeys.forEach((p, i) => writePair(b, 8 + i * RT_PAIR_LEN, p));
      break;
    case 'DELETE_LINK':
      if (m.all) flags |= LLC_FLAG_DEL_LINK_ALL;
      if (m.orderly) flags |= LLC_FLAG_DEL_LINK_ORDERLY;
      b[4] = uint(m.linkNum, 8, 'linkNum');
      b.writeUInt32BE(uint(m.reason, 32, 'reason'), 5);
      break;
    case 'REQ_ADD_LINK':
      if (m.gids.length > 255) throw new RangeError('at most 255 GIDs');
      b[24] = m.gids.length;
      m.gids.forEach((g, i) => bytes(g, 16, 'gid').copy(b, REQ_ADD_LINK_HDR_LEN + i * 16));
      break;
    case 'CONFIRM_RKEY':
      if (m.negative) flags |= LLC_FLAG_RKEY_NEG;
      if (m.retry) flags |= LLC_FLAG_RKEY_RETRY;
      count(m.numRkeys, m.others.length, 2, 'others');
      writeRtoken(b, 4, { linkId: m.numRkeys, rmbKey: m.rmbKey, rmbVaddr: m.rmbVaddr });
      m.others.forEach((t, i) => writeRtoken(b, 4 + (i + 1) * RTOKEN_LEN, t));
      break;
    case 'CONFIRM_RKEY_CONT':
      if (m.negative) flags |= LLC_FLAG_RKEY_NEG;
      if (m.retry) flags |= LLC_FLAG_RKEY_RETRY;
      count(m.numRkeys, m.rtokens.length, 3, 'rtokens');
      b[4] = uint(m.numRkeys, 8, 'numRkeys');
      m.rtokens.forEach((t, i) => writeRtoken(b, 5 + i * RTOKEN_LEN, t));
      break;
    case 'DELETE_RKEY':
      if (m.negative) flags |= LLC_FLAG_RKEY_NEG;
      if (m.version === 1) count(m.numRkeys, m.rkeys.length, 8, 'rkeys');
      else count(m.numRkeys, m.rkeys.length, 255, 'rkeys');
      b[4] = uint(m.numRkeys, 8, 'numRkeys');
      b[5] = uint(m.errMask, 8, 'errMask');
      m.rkeys.forEach((k, i) => b.writeUInt32BE(uint(k, 32, 'rkey'), 8 + i * 4));
      break;
    case 'TEST_LINK':
      bytes(m.userData, 16, 'userData').copy(b, 4);
      break;
  }
  b[3] = flags;
  return b;
}

const KIND_OF = new Map<number, LlcKind>(Object.entries(LLC).map(([k, v]) => [v, k as LlcKind]));

/** Decode a received LLC message (the SEND's payload, `b.length` being the completion's byte_len). */
export function decodeLlc(b: Buffer): LlcMessage {
  need(b.length >= LLC_MSG_LEN, 'length', `${b.length} bytes (at least ${LLC_MSG_LEN}; smc_llc.c 2094)`);
  need(LLC_TYPES_ACCEPTED.includes(b[0]!), 'type', `0x${b[0]!.toString(16).padStart(2, '0')} has no LLC handler in Linux (dropped)`);
  const version = (b[0]! >> 4) as 0 | 2;
  const kind = KIND_OF.get(b[0]! & 0xf)!;
  if (version === 0) need(b[1] === LLC_MSG_LEN, 'length', `v1 length byte ${b[1]} (must be 44)`);
  else need(b.readUInt16LE(1) >= LLC_MSG_LEN, 'length_v2', `${b.readUInt16LE(1)} (at least 44)`);
  const v: 1 | 2 = version === 0 ? 1 : 2;
  const flags = b[3]!;
  const response = (flags & LLC_FLAG_RESP) !== 0;
  switch (kind) {
    case 'CONFIRM_LINK':
      return {
        kind, version: v, response, noRmbeEyec: (flags & LLC_FLAG_NO_RMBE_EYEC) === LLC_FLAG_NO_RMBE_EYEC,
        senderMac: Buffer.from(b.subarray(4, 10)), senderGid: Buffer.from(b.subarray(10, 26)), senderQpn: b.readUIntBE(26, 3),
        linkNum: b[29]!, linkUid: Buffer.from(b.subarray(30, 34)), maxLinks: b[34]!, maxConns: b[35]!,
      };
    case 'ADD_LINK': {
      let v2ext: LlcAddLink['v2ext'] = null;
      if (v === 2 && b.length > LLC_MSG_LEN) {
        need(b.length >= LLC_MSG_LEN + ADD_LINK_V2_EXT_LEN, 'v2_ext', `${b.length - LLC_MSG_LEN} bytes after the message (at least ${ADD_LINK_V2_EXT_LEN})`);
        const n = b.readUInt16LE(70);
        need(n <= 255, 'num_rkeys', `${n} (at most 255, SMC_LLC_RKEYS_PER_MSG_V2)`);
        need(b.length >= LLC_MSG_LEN + ADD_LINK_V2_EXT_LEN + n * RT_PAIR_LEN, 'num_rkeys', `${n} rkey pairs do not fit ${b.length} bytes`);
        v2ext = {
          v2Direct: (b[44]! & 0x80) !== 0, clientTargetGid: Buffer.from(b.subarray(46, 62)),
          rkeys: Array.from({ length: n }, (_, i) => readPair(b, 72 + i * RT_PAIR_LEN)),
        };
      }
      return {
        kind, version: v, response, rejected: (flags & LLC_FLAG_ADD_LNK_REJ) !== 0, rejReason: v === 1 ? b[2]! & 0xf : 0,
        senderMac: Buffer.from(b.subarray(4, 10)), senderGid: Buffer.from(b.subarray(12, 28)), senderQpn: b.readUIntBE(28, 3),
        linkNum: b[31]!, qpMtu: b[32]! & 0xf, initialPsn: b.readUIntBE(33, 3), v2ext,
      };
    }
    case 'ADD_LINK_CONT': {
      const n = b[5]!;
      return { kind, version: v, response, linkNum: b[4]!, numRkeys: n, rkeys: Array.from({ length: Math.min(n, 2) }, (_, i) => readPair(b, 8 + i * RT_PAIR_LEN)) };
    }
    case 'DELETE_LINK':
      return {
        kind, version: v, response, all: (flags & LLC_FLAG_DEL_LINK_ALL) !== 0, orderly: (flags & LLC_FLAG_DEL_LINK_ORDERLY) !== 0,
        linkNum: b[4]!, reason: b.readUInt32BE(5),
      };
    case 'REQ_ADD_LINK': {
      const n = b[24]!;
      need(b.length >= REQ_ADD_LINK_HDR_LEN + n * 16, 'gid_cnt', `${n} GIDs do not fit ${b.length} bytes`);
      return { kind, version: v, response, gids: Array.from({ length: n }, (_, i) => Buffer.from(b.subarray(REQ_ADD_LINK_HDR_LEN + i * 16, REQ_ADD_LINK_HDR_LEN + (i + 1) * 16))) };
    }
    case 'CONFIRM_RKEY': {
      const first = readRtoken(b, 4);
      return {
        kind, version: v, response, negative: (flags & LLC_FLAG_RKEY_NEG) !== 0, retry: (flags & LLC_FLAG_RKEY_RETRY) !== 0,
        numRkeys: first.linkId, rmbKey: first.rmbKey, rmbVaddr: first.rmbVaddr,
        others: Array.from({ length: Math.min(first.linkId, 2) }, (_, i) => readRtoken(b, 4 + (i + 1) * RTOKEN_LEN)),
      };
    }
    case 'CONFIRM_RKEY_CONT': {
      const n = b[4]!;
      return {
        kind, version: v, response, negative: (flags & LLC_FLAG_RKEY_NEG) !== 0, retry: (flags & LLC_FLAG_RKEY_RETRY) !== 0,
        numRkeys: n, rtokens: Array.from({ length: Math.min(n, 3) }, (_, i) => readRtoken(b, 5 + i * RTOKEN_LEN)),
      };
    }
    case 'DELETE_RKEY': {
      const n = b[4]!;
      const read = v === 1 ? Math.min(n, 8) : n;
      need(b.length >= 8 + read * 4, 'num_rkeys', `${n} rkeys do not fit ${b.length} bytes`);
      return {
        kind, version: v, response, negative: (flags & LLC_FLAG_RKEY_NEG) !== 0, numRkeys: n, errMask: b[5]!,
        rkeys: Array.from({ length: read }, (_, i) => b.readUInt32BE(8 + i * 4)),
      };
    }
    case 'TEST_LINK':
      return { kind, version: v, response, userData: Buffer.from(b.subarray(4, 20)) };
  }
  throw new SmcrWireError('type', 'unreachable');
}
