// The rdma_cm events (enum rdma_cm_event_type, the names without RDMA_CM_EVENT_) and what
// each carries (struct rdma_cm_event: status, and the connection or UD parameters).

import type { RdmaCmId } from './cm-id.js';

export type RdmaCmEventType =
  | 'ADDR_RESOLVED' | 'ADDR_ERROR' | 'ROUTE_RESOLVED' | 'ROUTE_ERROR'
  | 'CONNECT_REQUEST' | 'CONNECT_RESPONSE' | 'CONNECT_ERROR' | 'UNREACHABLE' | 'REJECTED'
  | 'ESTABLISHED' | 'DISCONNECTED' | 'DEVICE_REMOVAL' | 'TIMEWAIT_EXIT';

/** enum rdma_cm_event_type's values, for logs that print numbers as librdmacm's do. */
export const RDMA_CM_EVENT: Readonly<Record<RdmaCmEventType, number>> = Object.freeze({
  ADDR_RESOLVED: 0, ADDR_ERROR: 1, ROUTE_RESOLVED: 2, ROUTE_ERROR: 3, CONNECT_REQUEST: 4, CONNECT_RESPONSE: 5,
  CONNECT_ERROR: 6, UNREACHABLE: 7, REJECTED: 8, ESTABLISHED: 9, DISCONNECTED: 10, DEVICE_REMOVAL: 11, TIMEWAIT_EXIT: 15,
});

/** The connection parameters an event carries (struct rdma_conn_param), as the peer sent them. */
export interface ConnEventParam {
  privateData: Buffer;
  /** What the peer asks of us: its initiator depth is our responder resources (cm.c swaps them on receipt). */
  responderResources: number;
  initiatorDepth: number;
  flowControl: number;
  retryCount: number;
  rnrRetryCount: number;
  srq: number;
  /** The peer's QP number. */
  qpNum: number;
}

/** struct rdma_ud_param: where to send UD datagrams to the peer's QP. */
export interface UdEventParam {
  privateData: Buffer;
  /** The peer's GID (IPv4-mapped for IPv4) and the path's hop limit and flow label (for an AH). */
  dgid: Buffer;
  hopLimit: number;
  flowLabel: number;
  trafficClass: number;
  qpNum: number;
  qkey: number;
}

export interface RdmaCmEvent {
  event: RdmaCmEventType;
  /** The id the event is about (for CONNECT_REQUEST: the new id). */
  id: RdmaCmId;
  /** CONNECT_REQUEST: the listening id it arrived on. */
  listenId?: RdmaCmId;
  /**
   * 0, or what Linux puts there: a negative errno (-ETIMEDOUT -110, -ECONNREFUSED -111,
   * -EADDRNOTAVAIL -99, -ENODEV -19, -EINVAL -22), the REJ reason for REJECTED, the SIDR status
   * for a SIDR UNREACHABLE.
   */
  status: number;
  /** REJECTED: the reason's name (IB_CM_REJ_CONSUMER_DEFINED, ...); UNREACHABLE after a SIDR_REP: the SIDR status name. */
  reason?: string;
  /** Connected port spaces (TCP): CONNECT_REQUEST, CONNECT_RESPONSE, ESTABLISHED, REJECTED, DISCONNECTED. */
  conn?: ConnEventParam;
  /** UDP port space: CONNECT_REQUEST (the requester's private data), ESTABLISHED (the resolved QP). */
  ud?: UdEventParam;
}

/** Negative errno values as the kernel reports them in event.status. */
export const ERRNO = { ETIMEDOUT: -110, ECONNREFUSED: -111, EADDRNOTAVAIL: -99, ENODEV: -19, EINVAL: -22, ECONNRESET: -104 } as const;
