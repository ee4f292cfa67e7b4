// IB CM messages (IBTA vol. 1 ch. 12.6, tables 106-120) with the layouts Linux encodes in
// include/rdma/ibta_vol1_c12.h: each message is a table of (name, byte, bit, width) fields
// counted from the start of the MAD's class data (byte 24 of the MAD). Values and names of
// the enums follow include/rdma/ib_cm.h and drivers/infiniband/core/cm_msgs.h.

import {
  decodeFields, encodeFields, mem, u64, uint, type FieldLoc, type FieldsOf,
} from './bits.js';
import {
  MAD_DATA_SIZE, MAD_HEADER_SIZE, MGMT_BASE_VERSION, MadMethod, MgmtClass, decodeMad, encodeMad, err, ok,
  type MadHeader, type Result,
} from './mad.js';

/** CM class version (IB_CM_CLASS_VERSION, IBTA 1.2). */
export const CM_CLASS_VERSION = 2;

/** Attribute ids of the CM messages (CM_*_ATTR_ID). LAP/APR exist but Linux ignores them on RoCE. */
export const CmAttrId = {
  REQ: 0x0010,
  MRA: 0x0011,
  REJ: 0x0012,
  REP: 0x0013,
  RTU: 0x0014,
  DREQ: 0x0015,
  DREP: 0x0016,
  SIDR_REQ: 0x0017,
  SIDR_REP: 0x0018,
  LAP: 0x0019,
  APR: 0x001a,
} as const;

/** Private data and information field sizes (enum ib_cm_data_size). */
export const CmDataSize = {
  REQ_PRIVATE_DATA: 92,
  MRA_PRIVATE_DATA: 222,
  REJ_PRIVATE_DATA: 148,
  REP_PRIVATE_DATA: 196,
  RTU_PRIVATE_DATA: 224,
  DREQ_PRIVATE_DATA: 220,
  DREP_PRIVATE_DATA: 224,
  REJ_ARI_LENGTH: 72,
  LAP_PRIVATE_DATA: 168,
  APR_PRIVATE_DATA: 148,
  APR_INFO_LENGTH: 72,
  SIDR_REQ_PRIVATE_DATA: 216,
  SIDR_REP_PRIVATE_DATA: 136,
  SIDR_REP_INFO_LENGTH: 72,
} as const;

/** Which message a REJ rejects or an MRA acknowledges (enum cm_msg_response). */
export const CmMsgResponse = { REQ: 0, REP: 1, OTHER: 2 } as const;

/** REJ reasons (enum ib_cm_rej_reason), with Linux's names. */
export const RejReason = {
  NO_QP: 1,
  NO_EEC: 2,
  NO_RESOURCES: 3,
  TIMEOUT: 4,
  UNSUPPORTED: 5,
  INVALID_COMM_ID: 6,
  INVALID_COMM_INSTANCE: 7,
  INVALID_SERVICE_ID: 8,
  INVALID_TRANSPORT_TYPE: 9,
  STALE_CONN: 10,
  RDC_NOT_EXIST: 11,
  INVALID_GID: 12,
  INVALID_LID: 13,
  INVALID_SL: 14,
  INVALID_TRAFFIC_CLASS: 15,
  INVALID_HOP_LIMIT: 16,
  INVALID_PACKET_RATE: 17,
  INVALID_ALT_GID: 18,
  INVALID_ALT_LID: 19,
  INVALID_ALT_SL: 20,
  INVALID_ALT_TRAFFIC_CLASS: 21,
  INVALID_ALT_HOP_LIMIT: 22,
  INVALID_ALT_PACKET_RATE: 23,
  PORT_CM_REDIRECT: 24,
  PORT_REDIRECT: 25,
  INVALID_MTU: 26,
  INSUFFICIENT_RESP_RESOURCES: 27,
  CONSUMER_DEFINED: 28,
  INVALID_RNR_RETRY: 29,
  DUPLICATE_LOCAL_COMM_ID: 30,
  INVALID_CLASS_VERSION: 31,
  INVALID_FLOW_LABEL: 32,
  INVALID_ALT_FLOW_LABEL: 33,
  VENDOR_OPTION_NOT_SUPPORTED: 35,
} as const;
export type RejReasonName = keyof typeof RejReason;

const rejNames = new Map<number, string>(Object.entries(RejReason).map(([k, v]) => [v, `IB_CM_REJ_${k}`]));
/** 'IB_CM_REJ_STALE_CONN', or 'unrecognized reason (n)'. */
export const rejReasonName = (reason: number) => rejNames.get(reason) ?? `unrecognized reason (${reason})`;

/** SIDR_REP status (enum ib_cm_sidr_status). */
export const SidrStatus = {
  SUCCESS: 0,
  UNSUPPORTED: 1,
  REJECT: 2,
  NO_QP: 3,
  REDIRECT: 4,
  UNSUPPORTED_VERSION: 5,
} as const;
const sidrNames = new Map<number, string>(Object.entries(SidrStatus).map(([k, v]) => [v, `IB_SIDR_${k}`]));
export const sidrStatusName = (s: number) => sidrNames.get(s) ?? `unrecognized status (${s})`;

/** REQ transport service type (2 bits; 3 means "see the extended transport type", XRC = 1 there). */
export const TransportServiceType = { RC: 0, UC: 1, RD: 2, EXTENDED: 3 } as const;
export const EXTENDED_TRANSPORT_XRC = 1;

/** The LID Linux puts in a REQ's path when the path is routed (hop limit > 1), as RoCEv2 is. */
export const LID_PERMISSIVE = 0xffff;

/** IB MTU codes (enum ib_mtu): the REQ's path MTU field. */
export const IbMtu = { 256: 1, 512: 2, 1024: 3, 2048: 4, 4096: 5 } as const;

// ---- layouts (byte offsets from the start of the CM data, ibta_vol1_c12.h) ----

const pathFields = <P extends string>(p: P, at: number) => [
  uint(`${p}LocalLid`, at, 16),
  uint(`${p}RemoteLid`, at + 2, 16),
  mem(`${p}LocalGid`, at + 4, 16),
  mem(`${p}RemoteGid`, at + 20, 16),
  uint(`${p}FlowLabel`, at + 36, 20),
  uint(`${p}PacketRate`, at + 39, 6, 2),
  uint(`${p}TrafficClass`, at + 40, 8),
  uint(`${p}HopLimit`, at + 41, 8),
  uint(`${p}Sl`, at + 42, 4),
  uint(`${p}SubnetLocal`, at + 42, 1, 4),
  uint(`${p}LocalAckTimeout`, at + 43, 5),
] as const;

/** Table 106, REQ. */
export const REQ_LAYOUT = [
  uint('localCommId', 0, 32),
  u64('serviceId', 8),
  u64('localCaGuid', 16),
  uint('localQkey', 28, 32),
  uint('localQpn', 32, 24),
  uint('responderResources', 35, 8),
  uint('localEecn', 36, 24),
  uint('initiatorDepth', 39, 8),
  uint('remoteEecn', 40, 24),
  uint('remoteCmResponseTimeout', 43, 5),
  uint('transportServiceType', 43, 2, 5),
  uint('endToEndFlowControl', 43, 1, 7),
  uint('startingPsn', 44, 24),
  uint('localCmResponseTimeout', 47, 5),
  uint('retryCount', 47, 3, 5),
  uint('partitionKey', 48, 16),
  uint('pathMtu', 50, 4),
  uint('rdcExists', 50, 1, 4),
  uint('rnrRetryCount', 50, 3, 5),
  uint('maxCmRetries', 51, 4),
  uint('srq', 51, 1, 4),
  uint('extendedTransportType', 51, 3, 5),
  ...pathFields('primary', 52),
  ...pathFields('alternate', 96),
  uint('sapSupported', 139, 1, 5),
  mem('privateData', 140, CmDataSize.REQ_PRIVATE_DATA),
] as const;

/** Table 107, MRA. */
export const MRA_LAYOUT = [
  uint('localCommId', 0, 32),
  uint('remoteCommId', 4, 32),
  uint('messageMraed', 8, 2),
  uint('serviceTimeout', 9, 5),
  mem('privateData', 10, CmDataSize.MRA_PRIVATE_DATA),
] as const;

/** Table 108, REJ. */
export const REJ_LAYOUT = [
  uint('localCommId', 0, 32),
  uint('remoteCommId', 4, 32),
  uint('messageRejected', 8, 2),
  uint('rejectedInfoLength', 9, 7),
  uint('reason', 10, 16),
  mem('ari', 12, CmDataSize.REJ_ARI_LENGTH),
  mem('privateData', 84, CmDataSize.REJ_PRIVATE_DATA),
] as const;

/** Table 110, REP. */
export const REP_LAYOUT = [
  uint('localCommId', 0, 32),
  uint('remoteCommId', 4, 32),
  uint('localQkey', 8, 32),
  uint('localQpn', 12, 24),
  uint('localEecn', 16, 24),
  uint('startingPsn', 20, 24),
  uint('responderResources', 24, 8),
  uint('initiatorDepth', 25, 8),
  uint('targetAckDelay', 26, 5),
  uint('failoverAccepted', 26, 2, 5),
  uint('endToEndFlowControl', 26, 1, 7),
  uint('rnrRetryCount', 27, 3),
  uint('srq', 27, 1, 3),
  u64('localCaGuid', 28),
  mem('privateData', 36, CmDataSize.REP_PRIVATE_DATA),
] as const;

/** Table 111, RTU. */
export const RTU_LAYOUT = [
  uint('localCommId', 0, 32),
  uint('remoteCommId', 4, 32),
  mem('privateData', 8, CmDataSize.RTU_PRIVATE_DATA),
] as const;

/** Table 112, DREQ. */
export const DREQ_LAYOUT = [
  uint('localCommId', 0, 32),
  uint('remoteCommId', 4, 32),
  uint('remoteQpnEecn', 8, 24),
  mem('privateData', 12, CmDataSize.DREQ_PRIVATE_DATA),
] as const;

/** Table 113, DREP. */
export const DREP_LAYOUT = [
  uint('localCommId', 0, 32),
  uint('remoteCommId', 4, 32),
  mem('privateData', 8, CmDataSize.DREP_PRIVATE_DATA),
] as const;

/** Table 119, SIDR_REQ. */
export const SIDR_REQ_LAYOUT = [
  uint('requestId', 0, 32),
  uint('partitionKey', 4, 16),
  u64('serviceId', 8),
  mem('privateData', 16, CmDataSize.SIDR_REQ_PRIVATE_DATA),
] as const;

/** Table 120, SIDR_REP. */
export const SIDR_REP_LAYOUT = [
  uint('requestId', 0, 32),
  uint('status', 4, 8),
  uint('additionalInfoLength', 5, 8),
  uint('qpn', 8, 24),
  u64('serviceId', 12),
  uint('qkey', 20, 32),
  mem('additionalInfo', 24, CmDataSize.SIDR_REP_INFO_LENGTH),
  mem('privateData', 96, CmDataSize.SIDR_REP_PRIVATE_DATA),
] as const;

export const CM_LAYOUTS = {
  REQ: REQ_LAYOUT,
  MRA: MRA_LAYOUT,
  REJ: REJ_LAYOUT,
  REP: REP_LAYOUT,
  RTU: RTU_LAYOUT,
  DREQ: DREQ_LAYOUT,
  DREP: DREP_LAYOUT,
  SIDR_REQ: SIDR_REQ_LAYOUT,
  SIDR_REP: SIDR_REP_LAYOUT,
} as const;

export type CmKind = keyof typeof CM_LAYOUTS;
export const CM_KINDS = Object.keys(CM_LAYOUTS) as CmKind[];

export type CmReq = FieldsOf<typeof REQ_LAYOUT>;
export type CmMra = FieldsOf<typeof MRA_LAYOUT>;
export type CmRej = FieldsOf<typeof REJ_LAYOUT>;
export type CmRep = FieldsOf<typeof REP_LAYOUT>;
export type CmRtu = FieldsOf<typeof RTU_LAYOUT>;
export type CmDreq = FieldsOf<typeof DREQ_LAYOUT>;
export type CmDrep = FieldsOf<typeof DREP_LAYOUT>;
export type CmSidrReq = FieldsOf<typeof SIDR_REQ_LAYOUT>;
export type CmSidrRep = FieldsOf<typeof SIDR_REP_LAYOUT>;

/** The fields of one kind of message. */
export type CmFields<K extends CmKind> = FieldsOf<(typeof CM_LAYOUTS)[K]>;
/** A CM message: its kind and its fields. */
export type CmMessageOf<K extends CmKind> = { kind: K } & CmFields<K>;
export type CmMessage = { [K in CmKind]: CmMessageOf<K> }[CmKind];

const kindByAttr = new Map<number, CmKind>(CM_KINDS.map((k) => [CmAttrId[k], k]));
export const cmKindOfAttr = (attrId: number): CmKind | undefined => kindByAttr.get(attrId);

/** A received CM MAD: the MAD header (tid, ...) and the message. */
export interface CmMad {
  header: MadHeader;
  msg: CmMessage;
}

/** The header Linux's cm_format_mad_hdr writes: base 1, class CM, class version 2, method SEND. */
export function cmMadHeader(attrId: number, tid: bigint): MadHeader {
  return {
    baseVersion: MGMT_BASE_VERSION, mgmtClass: MgmtClass.CM, classVersion: CM_CLASS_VERSION, method: MadMethod.SEND,
    status: 0, classSpecific: 0, tid, attrId, resv: 0, attrMod: 0,
  };
}

/** Encode the fields of one message into its 232 bytes of CM data. */
export function encodeCmData<K extends CmKind>(kind: K, fields: CmFields<K>): Buffer {
  const data = Buffer.alloc(MAD_DATA_SIZE);
  encodeFields(CM_LAYOUTS[kind] as (typeof CM_LAYOUTS)[CmKind], fields as never, data);
  return data;
}

/** Encode a whole 256-byte CM MAD. `header` overrides cmMadHeader's fields (tests, replies to odd peers). */
export function encodeCmMad(msg: CmMessage, tid: bigint, header: Partial<MadHeader> = {}): Buffer {
  // The fields go straight into the MAD's data area (zeroed); `kind` is not a field of any layout.
  const mad = encodeMad({ ...cmMadHeader(CmAttrId[msg.kind], tid), ...header });
  encodeFields(CM_LAYOUTS[msg.kind] as (typeof CM_LAYOUTS)[CmKind], msg as never, mad, MAD_HEADER_SIZE);
  return mad;
}

/**
 * One object per kind with every field (kind first, then the table's order), made by
 * JSON.parse so that V8 gives it a fixed shape: a decoded message starts as a copy of it. An
 * object that gets its fields one by one under computed names turns into a hash table after
 * a dozen, and every later read, spread and encode of the message paid for that.
 */
const TEMPLATES = Object.fromEntries(CM_KINDS.map((k) => [k, JSON.parse(JSON.stringify({
  kind: k, ...Object.fromEntries((CM_LAYOUTS[k] as readonly FieldLoc[]).map((f) => [f.name, f.kind === 'uint' ? 0 : null])),
})) as object])) as Record<CmKind, object>;

/** Decode the fields of one kind of message from its CM data (no checks). */
export function decodeCmData<K extends CmKind>(kind: K, data: Uint8Array): CmMessageOf<K> {
  return decodeFields(CM_LAYOUTS[kind], data, 0, { ...TEMPLATES[kind] }) as unknown as CmMessageOf<K>;
}

/**
 * Decode a CM MAD. Refuses (with the field named) what Linux's CM would not act on: another
 * length or base version, another class, class version or method (the CM agent registers
 * SEND only), an attribute id it does not handle (LAP and APR included: Linux ignores them on
 * RoCE), an MRA naming message type 3 (cm_acquire_mraed_id matches nothing for it).
 */
export function decodeCmMad(buf: Uint8Array): Result<CmMad> {
  const mad = decodeMad(buf);
  if (!mad.ok) return mad;
  const { header, data } = mad.value;
  if (header.mgmtClass !== MgmtClass.CM) return err('mgmtClass', `expected ${MgmtClass.CM} (CM)`, header.mgmtClass);
  if (header.classVersion !== CM_CLASS_VERSION) return err('classVersion', `expected ${CM_CLASS_VERSION}`, header.classVersion);
  if (header.method !== MadMethod.SEND) return err('method', `CM messages use SEND (${MadMethod.SEND})`, header.method);
  const kind = cmKindOfAttr(header.attrId);
  if (kind === undefined) return err('attrId', 'not a CM message this CM handles', header.attrId);
  const msg = decodeCmData(kind, data) as CmMessage;
  const bad = checkCm(msg);
  return bad ? { ok: false, error: bad } : ok({ header, msg });
}

function checkCm(m: CmMessage) {
  switch (m.kind) {
    case 'MRA':
      if (m.messageMraed > CmMsgResponse.OTHER) return { field: 'messageMraed', reason: 'message type 3 is reserved', value: m.messageMraed };
      return undefined;
    // A REJ's message type 3 and info lengths over 72 (a REJ's ARI, a SIDR_REP's additional
    // information) are taken, as cm.c takes them: cm_acquire_rejected_id routes any type other
    // than REQ by both comm ids, cm_format_rej_event and cm_format_sidr_rep_event copy the
    // lengths unchecked (rejAri and the field's 72 bytes bound what is read).
    default:
      return undefined;
  }
}

/** The QP type a REQ asks for, as cm_req_get_qp_type reads it: 'RC', 'UC', 'XRC' or undefined. */
export function reqQpType(req: Pick<CmReq, 'transportServiceType' | 'extendedTransportType'>): 'RC' | 'UC' | 'XRC' | undefined {
  switch (req.transportServiceType) {
    case TransportServiceType.RC: return 'RC';
    case TransportServiceType.UC: return 'UC';
    case TransportServiceType.EXTENDED: return req.extendedTransportType === EXTENDED_TRANSPORT_XRC ? 'XRC' : undefined;
    default: return undefined;
  }
}

/** The REJ's additional rejection information, cut to its declared length. */
export const rejAri = (rej: Pick<CmRej, 'ari' | 'rejectedInfoLength'>) => rej.ari.subarray(0, rej.rejectedInfoLength);

/** A message of `kind` with every field zero (numbers 0n/0, byte strings zero-filled). */
export function blankCm<K extends CmKind>(kind: K): CmMessageOf<K> {
  // Every message this side sends starts here: a copy of the kind's blank, decoded once, with
  // fresh zeroed byte fields of its own (as decoding a zeroed MAD gave, without the 232-byte
  // buffer and the bit-field walk per message).
  let b = blanks.get(kind);
  if (!b) {
    const msg = decodeCmData(kind, Buffer.alloc(MAD_DATA_SIZE)) as Record<string, unknown>;
    const bytes = (CM_LAYOUTS[kind] as readonly { name: string; kind: string; width: number }[]).filter((f) => f.kind === 'bytes').map((f) => [f.name, f.width / 8] as const);
    b = { msg, bytes };
    blanks.set(kind, b);
  }
  const out = { ...b.msg };
  for (const [name, len] of b.bytes) out[name] = Buffer.allocUnsafe(len).fill(0);
  return out as CmMessageOf<K>;
}
const blanks = new Map<CmKind, { msg: Record<string, unknown>; bytes: ReadonlyArray<readonly [string, number]> }>();

/** Byte offset in the MAD of a CM field (for tests and dissector cross-checks). */
export function cmFieldMadOffset(kind: CmKind, name: string): number | undefined {
  const f = (CM_LAYOUTS[kind] as readonly { name: string; byte: number }[]).find((x) => x.name === name);
  return f ? MAD_HEADER_SIZE + f.byte : undefined;
}
