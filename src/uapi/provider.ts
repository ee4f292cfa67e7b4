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
  poll(max: number): WorkCompletion[];
  reqNotify(solicitedOnly: boolean): void;
  /** Called by the provider when an armed CQ gets a completion. */
  onNotify: (() => void) | undefined;
  /**
   * While set, called by the provider after each completion it queues, whatever the CQ's
   * notification state (the verbs API's `cq.next()` waiters); called once more with `true`
   * when the CQ is destroyed.
   */
  onCompletion?: ((destroyed: boolean) => void) | undefined;
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
