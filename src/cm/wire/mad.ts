// Management Datagrams (IBTA vol. 1 ch. 13.4; Linux include/rdma/ib_mad.h): 256 bytes on QP1,
// a 24-byte common header followed by 232 bytes of class-specific data. Decoding returns a
// result naming the offending field; it never throws on hostile bytes.

import { POW2 } from './bits.js';

export const MAD_SIZE = 256;
export const MAD_HEADER_SIZE = 24;
export const MAD_DATA_SIZE = 232;

/** Management base version (IB_MGMT_BASE_VERSION). OPA's 0x80 is not spoken here. */
export const MGMT_BASE_VERSION = 1;

/** Management classes (IB_MGMT_CLASS_*). */
export const MgmtClass = {
  SUBN_LID_ROUTED: 0x01,
  SUBN_ADM: 0x03,
  PERF_MGMT: 0x04,
  BM: 0x05,
  DEVICE_MGMT: 0x06,
  CM: 0x07,
  SNMP: 0x08,
  SUBN_DIRECTED_ROUTE: 0x81,
} as const;

/** Methods (IB_MGMT_METHOD_*); a response has bit 0x80 set. */
export const MadMethod = {
  GET: 0x01,
  SET: 0x02,
  SEND: 0x03,
  TRAP: 0x05,
  REPORT: 0x06,
  TRAP_REPRESS: 0x07,
  GET_RESP: 0x81,
  REPORT_RESP: 0x86,
  RESP: 0x80,
} as const;

/** MAD status bits (IB_MGMT_MAD_STATUS_*). */
export const MadStatus = {
  SUCCESS: 0x0000,
  BUSY: 0x0001,
  REDIRECT_REQD: 0x0002,
  BAD_VERSION: 0x0004,
  UNSUPPORTED_METHOD: 0x0008,
  UNSUPPORTED_METHOD_ATTRIB: 0x000c,
  INVALID_ATTRIB_VALUE: 0x001c,
} as const;

/** The attribute every class has (IB_MGMT_CLASSPORTINFO_ATTR_ID). */
export const CLASS_PORT_INFO_ATTR_ID = 0x0001;

/** GSI: the QP number and Q_Key CM MADs travel on (IB_QP1, IB_QP1_QKEY), default P_Key. */
export const GSI_QPN = 1;
export const GSI_QKEY = 0x80010000;
export const DEFAULT_PKEY = 0xffff;

export interface MadHeader {
  baseVersion: number;
  mgmtClass: number;
  classVersion: number;
  method: number;
  status: number;
  classSpecific: number;
  /** Transaction id: 64 bits, echoed by responses. */
  tid: bigint;
  attrId: number;
  /** The 16 reserved bits after the attribute id (kept so decode/encode round-trips). */
  resv: number;
  attrMod: number;
}

export interface Mad {
  header: MadHeader;
  /** The 232 class-specific bytes (a view into the decoded buffer). */
  data: Buffer;
}

/** What went wrong in a decode: the field, why, and the value seen (if one). */
export interface WireError {
  field: string;
  reason: string;
  value?: number | bigint;
}

export type Result<T, E = WireError> = { ok: true; value: T } | { ok: false; error: E };
export const ok = <T>(value: T): { ok: true; value: T } => ({ ok: true, value });
export const err = (field: string, reason: string, value?: number | bigint): { ok: false; error: WireError } =>
  ({ ok: false, error: value === undefined ? { field, reason } : { field, reason, value } });

export function decodeMadHeader(b: Buffer): MadHeader {
  return {
    baseVersion: b[0]!,
    mgmtClass: b[1]!,
    classVersion: b[2]!,
    method: b[3]!,
    status: b.readUInt16BE(4),
    classSpecific: b.readUInt16BE(6),
    tid: b.readBigUInt64BE(8),
    attrId: b.readUInt16BE(16),
    resv: b.readUInt16BE(18),
    attrMod: b.readUInt32BE(20),
  };
}

/**
 * Decode a 256-byte MAD. Checks only what every class shares: the length and the base version
 * (a MAD of another base version has another layout). Class-level checks are the class codec's.
 */
export function decodeMad(buf: Uint8Array): Result<Mad> {
  if (!(buf instanceof Uint8Array)) return err('length', 'not a byte buffer');
  if (buf.length !== MAD_SIZE) return err('length', `a MAD is ${MAD_SIZE} bytes`, buf.length);
  const b = Buffer.from(buf.buffer, buf.byteOffset, buf.length);
  const header = decodeMadHeader(b);
  if (header.baseVersion !== MGMT_BASE_VERSION) return err('baseVersion', `expected ${MGMT_BASE_VERSION}`, header.baseVersion);
  return ok({ header, data: b.subarray(MAD_HEADER_SIZE) });
}

function checkUint(name: string, v: number, bits: number): void {
  if (!Number.isInteger(v) || v < 0 || v > POW2[bits]! - 1) throw new RangeError(`${name}: ${v} does not fit ${bits} bits`);
}

/** Encode a MAD: the header, then `data` (up to 232 bytes, zero-padded). */
/** The header's number fields and their widths (one table, not one per MAD encoded). */
const HEADER_WIDTHS = [['baseVersion', 8], ['mgmtClass', 8], ['classVersion', 8], ['method', 8], ['status', 16],
  ['classSpecific', 16], ['attrId', 16], ['resv', 16], ['attrMod', 32]] as const;
const NO_DATA = new Uint8Array(0);

export function encodeMad(header: MadHeader, data: Uint8Array = NO_DATA): Buffer {
  if (data.length > MAD_DATA_SIZE) throw new RangeError(`MAD data: ${data.length} bytes, at most ${MAD_DATA_SIZE}`);
  for (const [n, bits] of HEADER_WIDTHS) checkUint(n, header[n], bits);
  if (header.tid < 0n || header.tid > 0xffff_ffff_ffff_ffffn) throw new RangeError(`tid: ${header.tid} is not 64-bit unsigned`);
  const b = Buffer.alloc(MAD_SIZE);
  b[0] = header.baseVersion;
  b[1] = header.mgmtClass;
  b[2] = header.classVersion;
  b[3] = header.method;
  b.writeUInt16BE(header.status, 4);
  b.writeUInt16BE(header.classSpecific, 6);
  b.writeBigUInt64BE(header.tid, 8);
  b.writeUInt16BE(header.attrId, 16);
  b.writeUInt16BE(header.resv, 18);
  b.writeUInt32BE(header.attrMod, 20);
  b.set(data, MAD_HEADER_SIZE);
  return b;
}

/** Whether a method is a response (ib_response_mad's test for most classes). */
export const isResponseMethod = (method: number) => (method & MadMethod.RESP) !== 0;

/** IB_BM_ATTR_MOD_RESP: a Baseboard Management MAD with this AttributeModifier bit is a response. */
const BM_ATTR_MOD_RESP = 1;

/**
 * Whether a MAD is a response, routed by its TID to the agent that sent the request (mad.c's
 * ib_response_mad): the response bit, a TrapRepress, or a Baseboard Management MAD whose
 * AttributeModifier says so.
 */
export function isResponseMad(h: { method: number; mgmtClass: number; attrMod: number }): boolean {
  return isResponseMethod(h.method) || h.method === MadMethod.TRAP_REPRESS || (h.mgmtClass === MgmtClass.BM && (h.attrMod & BM_ATTR_MOD_RESP) !== 0);
}
