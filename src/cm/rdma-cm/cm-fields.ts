// The CM messages an rdma_cm id sends, field by field as Linux's cma.c fills them
// (cma_connect_ib → REQ, cma_accept_ib → REP, cma_send_sidr_rep → SIDR_REP), and the event
// parameters made from received ones (cma_set_rep_event_data, cma_ib_req_handler's
// conn param: cm.c swaps the peer's responder resources and initiator depth into ours).

import { RXE_LOCAL_CA_ACK_DELAY, cmAckTimeout } from '../cm-state.js';
import { LID_PERMISSIVE, TransportServiceType, blankCm, type CmFields, type CmMessageOf } from '../wire/cm-messages.js';
import { RDMA_UDP_QKEY } from '../wire/cma-header.js';
import type { ConnEventParam, UdEventParam } from './events.js';
import type { CmTiming } from './params.js';
import type { CmPath } from './qp-transitions.js';

export interface ReqFields {
  serviceId: bigint;
  qpNum: number;
  responderResources: number;
  initiatorDepth: number;
  flowControl: number;
  /** Our starting PSN: what the peer sends from. */
  startingPsn: number;
  retryCount: number;
  rnrRetryCount: number;
  srq: number;
  path: CmPath;
  timing: CmTiming;
  /** The RDMA CM header and the application's data. */
  privateData: Buffer;
}

/** cma_connect_ib's REQ: RC, the path's GIDs and flow label with permissive LIDs (RoCE is routed), the ACK timeout from rxe's ACK delay and the packet life. */
export function formatReq(f: ReqFields): Omit<CmMessageOf<'REQ'>, 'kind' | 'localCommId'> {
  const { kind: _k, localCommId: _l, ...blank } = blankCm('REQ');
  return {
    ...blank, serviceId: f.serviceId, localQpn: f.qpNum, responderResources: f.responderResources, initiatorDepth: f.initiatorDepth,
    remoteCmResponseTimeout: f.timing.cmResponseTimeout, localCmResponseTimeout: f.timing.cmResponseTimeout,
    transportServiceType: TransportServiceType.RC, endToEndFlowControl: f.flowControl, startingPsn: f.startingPsn, retryCount: f.retryCount,
    partitionKey: 0xffff, pathMtu: f.path.mtu, rnrRetryCount: f.rnrRetryCount, maxCmRetries: f.timing.maxCmRetries, srq: f.srq,
    primaryLocalLid: LID_PERMISSIVE, primaryRemoteLid: LID_PERMISSIVE, primaryLocalGid: f.path.sgid, primaryRemoteGid: f.path.dgid,
    primaryFlowLabel: f.path.flowLabel, primaryTrafficClass: f.path.trafficClass, primaryHopLimit: f.path.hopLimit,
    primaryLocalAckTimeout: cmAckTimeout(RXE_LOCAL_CA_ACK_DELAY, f.path.packetLifeTime), privateData: f.privateData,
  };
}

/** cma_accept_ib's REP: our QP and starting PSN, rxe's target ACK delay. */
export function formatRep(f: {
  qpNum: number; startingPsn: number; responderResources: number; initiatorDepth: number; rnrRetryCount: number; flowControl: number; srq: number; privateData: Buffer;
}): Omit<CmFields<'REP'>, 'localCommId' | 'remoteCommId'> {
  const { kind: _k, localCommId: _l, remoteCommId: _r, ...blank } = blankCm('REP');
  return {
    ...blank, localQpn: f.qpNum, startingPsn: f.startingPsn, responderResources: f.responderResources, initiatorDepth: f.initiatorDepth,
    targetAckDelay: RXE_LOCAL_CA_ACK_DELAY, rnrRetryCount: f.rnrRetryCount, endToEndFlowControl: f.flowControl, srq: f.srq, privateData: f.privateData,
  };
}

/** cma_send_sidr_rep: our QPN and RDMA_UDP_QKEY on success; nothing but the status and data on a reject. */
export function sidrRep(status: number, qpn: number, privateData: Buffer): Omit<CmFields<'SIDR_REP'>, 'requestId' | 'serviceId'> {
  const ok = status === 0;
  return { status, additionalInfoLength: 0, qpn: ok ? qpn : 0, qkey: ok ? RDMA_UDP_QKEY : 0, additionalInfo: Buffer.alloc(0), privateData };
}

/** The connection parameters of an event, from the peer's REQ or REP (its view swapped into ours). */
export function connEventParam(privateData: Uint8Array | undefined, m: CmMessageOf<'REQ'> | CmMessageOf<'REP'> | undefined): ConnEventParam {
  const p: ConnEventParam = {
    privateData: Buffer.from(privateData ?? Buffer.alloc(0)), responderResources: 0, initiatorDepth: 0, flowControl: 0,
    retryCount: 0, rnrRetryCount: 0, srq: 0, qpNum: 0,
  };
  if (m) {
    p.responderResources = m.initiatorDepth;
    p.initiatorDepth = m.responderResources;
    p.flowControl = m.endToEndFlowControl;
    p.rnrRetryCount = m.rnrRetryCount;
    p.srq = m.srq;
    p.qpNum = m.localQpn;
    // cma_set_rep_event_data leaves retry_count 0 for a REP (a REP carries none).
    p.retryCount = m.kind === 'REQ' ? m.retryCount : 0;
  }
  return p;
}

export function udEventParam(path: CmPath, privateData: Uint8Array, qpNum: number, qkey: number): UdEventParam {
  return {
    privateData: Buffer.from(privateData), dgid: Buffer.from(path.dgid), hopLimit: path.hopLimit, flowLabel: path.flowLabel,
    trafficClass: path.trafficClass, qpNum, qkey,
  };
}
