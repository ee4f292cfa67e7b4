// Plain-data shapes of verbs: work requests, completions and attributes. They mirror
// libibverbs' structs with camelCase names.

import type { MtuValue } from './enums.js';
import type { RemoteAddr } from './remote-addr.js';

export type WrId = number | bigint;

export interface Sge {
  /** Virtual address inside a registered MR (mr.addr + offset). */
  addr: number;
  length: number;
  lkey: number;
}

export interface GlobalRoute {
  dgid: Uint8Array;
  sgidIndex?: number;
  hopLimit?: number;
  trafficClass?: number;
  flowLabel?: number;
}

export interface AhAttr {
  grh: GlobalRoute;
  portNum?: number;
  sl?: number;
  isGlobal?: boolean;
}

export interface MwBindInfo {
  mr: { lkey: number } | undefined;
  addr: number;
  length: number;
  mwAccessFlags: number;
}

export interface SendWr {
  wrId: WrId;
  opcode: number;
  sendFlags?: number;
  sgList?: Sge[];
  /** Immediate data (host order u32, sent big-endian). */
  immData?: number;
  invalidateRkey?: number;
  /**
   * The peer's virtual address (ibv_send_wr's u64 remote_addr): a number up to 2^53 - 1, or a
   * bigint for any 64-bit address (a kernel peer's, such as Linux SMC-R's RMBs at
   * 0xffff8880...; a number that large has lost its low bits, so post_send refuses it).
   */
  rdma?: { remoteAddr: RemoteAddr; rkey: number };
  atomic?: { remoteAddr: RemoteAddr; rkey: number; compareAdd: bigint; swap?: bigint };
  ud?: { ah: unknown; remoteQpn: number; remoteQkey: number };
  bindMw?: { mw: unknown; rkey: number; bindInfo: MwBindInfo };
}

export interface RecvWr {
  wrId: WrId;
  sgList?: Sge[];
}

export interface WorkCompletion {
  wrId: WrId;
  status: number;
  opcode: number;
  vendorErr: number;
  byteLen: number;
  immData?: number;
  invalidatedRkey?: number;
  qpNum: number;
  srcQp: number;
  wcFlags: number;
  pkeyIndex: number;
  slid: number;
  sl: number;
  dlidPathBits: number;
}

export interface QpCap {
  maxSendWr: number;
  maxRecvWr: number;
  maxSendSge: number;
  maxRecvSge: number;
  maxInlineData: number;
}

/**
 * The capacities createQp takes: maxSendWr always; maxRecvWr unless the QP receives through
 * an SRQ; SGEs default to 1 and inline data to 0. A queue may have 0 entries (posting to it
 * fails as to a full one). The QP's `cap` has the values it got: with an SRQ, no receive
 * capacities (0; the SRQ has them).
 */
export interface QpCapInit {
  maxSendWr: number;
  maxRecvWr?: number;
  maxSendSge?: number;
  maxRecvSge?: number;
  maxInlineData?: number;
}

export interface QpInitAttr {
  qpType: number;
  sendCq: unknown;
  recvCq: unknown;
  srq?: unknown;
  cap: QpCap;
  sqSigAll?: boolean;
}

export interface QpAttrValues {
  qpState?: number;
  curQpState?: number;
  enSqdAsyncNotify?: boolean;
  qpAccessFlags?: number;
  pkeyIndex?: number;
  portNum?: number;
  qkey?: number;
  ahAttr?: AhAttr;
  /** An Mtu enum value (Mtu.MTU_1024 is 3), as ibv_qp_attr's path_mtu. */
  pathMtu?: MtuValue;
  timeout?: number;
  retryCnt?: number;
  rnrRetry?: number;
  rqPsn?: number;
  maxRdAtomic?: number;
  minRnrTimer?: number;
  sqPsn?: number;
  maxDestRdAtomic?: number;
  pathMigState?: number;
  cap?: QpCap;
  destQpNum?: number;
}

export interface QpAttrFull extends Required<Omit<QpAttrValues, 'ahAttr' | 'curQpState' | 'enSqdAsyncNotify'>> {
  ahAttr: AhAttr | undefined;
  sqDraining: boolean;
}

export interface SrqAttrValues {
  maxWr: number;
  maxSge: number;
  srqLimit: number;
}

export interface DeviceAttr {
  fwVer: string;
  nodeGuid: bigint;
  sysImageGuid: bigint;
  maxMrSize: number;
  pageSizeCap: number;
  vendorId: number;
  vendorPartId: number;
  hwVer: number;
  maxQp: number;
  maxQpWr: number;
  deviceCapFlags: number;
  maxSge: number;
  maxCq: number;
  maxCqe: number;
  maxMr: number;
  maxPd: number;
  maxQpRdAtom: number;
  maxQpInitRdAtom: number;
  maxMw: number;
  maxAh: number;
  maxSrq: number;
  maxSrqWr: number;
  maxSrqSge: number;
  maxInlineData: number;
  atomicCap: 'NONE' | 'HCA' | 'GLOB';
  physPortCnt: number;
}

export interface PortAttr {
  state: number;
  maxMtu: MtuValue;
  activeMtu: MtuValue;
  gidTblLen: number;
  portCapFlags: number;
  maxMsgSz: number;
  pkeyTblLen: number;
  lid: number;
  smLid: number;
  linkLayer: 'Ethernet';
  activeWidth: number;
  activeSpeed: number;
  physState: number;
}

export interface GidEntry {
  index: number;
  gid: Uint8Array;
  type: 'RoCE v2';
  /** The IP address the GID stands for. */
  address: string;
}

export interface AsyncEvent {
  type: number;
  /** The object the event is about (a QP, CQ, SRQ or port number). */
  element: unknown;
}
