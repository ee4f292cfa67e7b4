// What a software device implements. Core code (the object methods in objects/) validates
// every call before it reaches these operations, so a provider checks only what is its own.

import type { DriverRegistrar } from './registry.js';
import type { AhAttr, AsyncEvent, DeviceAttr, GidEntry, PortAttr, QpAttrFull, QpAttrValues, QpInitAttr, RecvWr, SendWr, SrqAttrValues, WorkCompletion } from '../abi/types.js';

export interface ProviderDevice {
  readonly name: string;
  /** The provider's name, e.g. 'rxe'; core code never branches on it. */
  readonly driver: string;
  queryDevice(): DeviceAttr;
  queryPort(port: number): PortAttr;
  gidTable(port: number): GidEntry[];
  queryPkey(port: number, index: number): number;
  openContext(onEvent: (ev: AsyncEvent) => void): ProviderContext;
  /** Driver-namespace methods and objects. */
  registerDriverMethods?(r: DriverRegistrar): void;
  /** Whether the device's sockets keep the process alive (socket.ref()/unref()); default on. */
  setKeepAlive?(on: boolean): void;
  /**
   * QP1 of a port, the GSI, for the device's one MAD layer (in Linux the kernel's MAD layer
   * owns it; users never create a GSI QP). EBUSY while it is open, EINVAL for a port the
   * device lacks. Optional: a device without management datagrams has none.
   */
  openGsi?(port: number): ProviderGsi;
}

/** Where a MAD goes: the remote port (its GID; on RoCEv2 an IP address) and QP. */
export interface GsiDest {
  /** The destination GID (16 bytes; IPv4-mapped for IPv4). */
  dgid: Uint8Array;
  /** The remote QP: 1 (its GSI) unless a MAD class redirected us to another UD QP. */
  dqpn?: number;
  /** Q_Key for a remote QP other than 1; QP1 always gets the GSI Q_Key. */
  qkey?: number;
}

/** Who sent a received MAD: what the CM needs to answer and to build the reverse path. */
export interface GsiSource {
  /** The sender's GID and IP address. */
  sgid: Buffer;
  address: string;
  /** The GID it was sent to (ours). */
  dgid: Buffer;
  /** The sender's QP (DETH source QP): 1 for a GSI. */
  srcQp: number;
  /** Index of the packet's P_Key in our table (one entry, 0xffff). */
  pkeyIndex: number;
  /** The UDP source port (RoCEv2 flow entropy; not an identity). */
  udpSourcePort: number;
  /**
   * GRH fields (IPv4 TOS / IPv6 traffic class, flow label, TTL / hop limit): undefined where
   * the device cannot see them (a UDP socket is not given the IP header).
   */
  trafficClass: number | undefined;
  flowLabel: number | undefined;
  hopLimit: number | undefined;
}

/** A port's QP1: sends and receives 256-byte MADs as UD SENDs with the GSI Q_Key. */
export interface ProviderGsi {
  readonly port: number;
  /** The local GID the MADs leave from. */
  readonly gid: Buffer;
  /** Post one MAD (exactly 256 bytes); EINVAL for another size or an unreachable GID. */
  send(mad: Uint8Array, dest: GsiDest): void;
  /** Each MAD that passed the GSI's checks (Q_Key, size), with its sender. */
  onMad: ((mad: Buffer, src: GsiSource) => void) | undefined;
  /** Hand the MADs posted so far to the network now, if sends are batched (at process exit). */
  flush?(): void;
  /** Give QP1 back: no more receives; the device may hand it out again. */
  close(): void;
}

export interface ProviderMr {
  readonly lkey: number;
  readonly rkey: number;
  readonly iova: number;
  readonly length: number;
  readonly access: number;
  /** Memory windows currently bound to this MR: non-zero makes dereg EBUSY. */
  readonly boundMwCount: number;
}

export interface ProviderMw {
  readonly rkey: number;
  readonly type: number;
}

export interface ProviderCq {
  readonly cqe: number;
  /** Up to max completions, oldest first: in `into` when given (emptied first, and returned), else in a new array. */
  poll(max: number, into?: WorkCompletion[]): WorkCompletion[];
  reqNotify(solicitedOnly: boolean): void;
  /** Called by the provider when an armed CQ gets a completion. */
  onNotify: (() => void) | undefined;
  /**
   * While set, called by the provider after each completion it queues, whatever the CQ's
   * notification state (the verbs API's `cq.next()` waiters); called once more with `true`
   * when the CQ is destroyed.
   */
  onCompletion?: ((destroyed: boolean) => void) | undefined;
  /**
   * Whether polling this CQ while it is empty, again and without a turn of the event loop, can
   * bring completions in now (a provider that reads its transport when polled: rxe's busy
   * polling). Absent: never.
   */
  readonly canSpin?: boolean;
}

export interface ProviderSrq {
  postRecv(wr: RecvWr): void;
  query(): SrqAttrValues;
}

export interface ProviderQp {
  readonly qpn: number;
  readonly qpType: number;
  readonly state: number;
  postSend(wr: SendWr): void;
  postRecv(wr: RecvWr): void;
  query(): QpAttrFull;
}

export interface ProviderContext {
  allocPd(): object;
  deallocPd(pd: object): void;
  regMr(pd: object, mem: Uint8Array, iova: number | undefined, access: number): ProviderMr;
  reregMr(mr: ProviderMr, change: { pd?: object; mem?: Uint8Array; iova?: number; access?: number }): void;
  deregMr(mr: ProviderMr): void;
  allocMw(pd: object, type: number): ProviderMw;
  deallocMw(mw: ProviderMw): void;
  createCq(cqe: number): ProviderCq;
  resizeCq(cq: ProviderCq, cqe: number): void;
  destroyCq(cq: ProviderCq): void;
  createAh(pd: object, attr: AhAttr): object;
  destroyAh(ah: object): void;
  createSrq(pd: object, attr: SrqAttrValues): ProviderSrq;
  modifySrq(srq: ProviderSrq, attr: Partial<SrqAttrValues>, mask: number): void;
  destroySrq(srq: ProviderSrq): void;
  createQp(pd: object, init: QpInitAttr): ProviderQp;
  /** Already checked against the IBTA transition table. */
  modifyQp(qp: ProviderQp, attr: QpAttrValues, mask: number): void;
  destroyQp(qp: ProviderQp): void;
  close(): void;
}
