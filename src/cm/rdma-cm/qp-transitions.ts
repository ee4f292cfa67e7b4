// The QP transitions the rdma_cm makes for an id's QP, with the attributes Linux's
// ib_cm_init_qp_attr (cm.c) and cma_init_qp_attr (cma.c) give them:
// - INIT at creation: P_Key index 0, the port, no remote access yet (RC), the RDMA_UDP_QKEY (UD);
//   a UD QP goes on to RTR and RTS (sq_psn 0) at once, as librdmacm's ucma_init_ud_qp.
// - RTR when the REP is received (active) or before it is sent (passive): the access the
//   connection allows (REMOTE_WRITE, plus READ and ATOMIC when we give responder resources),
//   the peer's QPN, our own starting PSN as rq_psn, the path, our responder resources, min RNR
//   timer 0. Linux's cma_modify_qp_rtr sets the access with an INIT→INIT modify first; here it
//   rides on INIT→RTR, where IBTA allows it (an optional attribute of that transition): the
//   same QP in RTR, one modify (and one trip through the uapi dispatcher) less per connection.
// - RTS: the peer's starting PSN as sq_psn, the path's ACK timeout, retry counts, our initiator depth.
// - ERR at disconnect and rejection (cma_modify_qp_err).

import { Access, QpAttr, QpState, QpType } from '../../abi/enums.js';
import type { QP } from '../../verbs/api.js';
import { RDMA_UDP_QKEY } from '../wire/cma-header.js';

export interface CmPath {
  sgid: Buffer;
  dgid: Buffer;
  /** ibv_mtu enum value */
  mtu: number;
  flowLabel: number;
  hopLimit: number;
  trafficClass: number;
  /** Exponent (4.096 µs × 2^n) */
  packetLifeTime: number;
}

export function qpToInit(qp: QP): void {
  if (qp.qpType === QpType.UD) {
    qp.modify({ qpState: QpState.INIT, pkeyIndex: 0, portNum: 1, qkey: RDMA_UDP_QKEY }, QpAttr.STATE | QpAttr.PKEY_INDEX | QpAttr.PORT | QpAttr.QKEY);
    qp.modify({ qpState: QpState.RTR }, QpAttr.STATE);
    qp.modify({ qpState: QpState.RTS, sqPsn: 0 }, QpAttr.STATE | QpAttr.SQ_PSN);
    return;
  }
  qp.modify({ qpState: QpState.INIT, pkeyIndex: 0, portNum: 1, qpAccessFlags: 0 }, QpAttr.STATE | QpAttr.PKEY_INDEX | QpAttr.PORT | QpAttr.ACCESS_FLAGS);
}

export interface RtrParams {
  path: CmPath;
  remoteQpn: number;
  /** Our starting PSN (what we advertised: the peer sends from it). */
  rqPsn: number;
  responderResources: number;
  /**
   * What grants REMOTE_READ and REMOTE_ATOMIC (cm_init_qp_init_attr: cm_id_priv's
   * responder_resources when the QP's access is set, which on the passive side, before its REP,
   * is the REQ's initiator depth, not what the accept gives).
   */
  accessResources: number;
}

export function qpToRtr(qp: QP, p: RtrParams): void {
  const rc = qp.qpType === QpType.RC;
  const access = Access.REMOTE_WRITE | (p.accessResources > 0 ? Access.REMOTE_READ | Access.REMOTE_ATOMIC : 0);
  qp.modify({
    qpState: QpState.RTR, qpAccessFlags: access, pathMtu: p.path.mtu as 1, destQpNum: p.remoteQpn, rqPsn: p.rqPsn,
    ahAttr: {
      grh: { dgid: p.path.dgid, hopLimit: p.path.hopLimit, flowLabel: p.path.flowLabel, trafficClass: p.path.trafficClass, sgidIndex: 0 },
      isGlobal: true, portNum: 1,
    },
    maxDestRdAtomic: p.responderResources, minRnrTimer: 0,
  }, QpAttr.STATE | QpAttr.ACCESS_FLAGS | QpAttr.AV | QpAttr.PATH_MTU | QpAttr.DEST_QPN | QpAttr.RQ_PSN | (rc ? QpAttr.MAX_DEST_RD_ATOMIC | QpAttr.MIN_RNR_TIMER : 0));
}

export interface RtsParams {
  /** The peer's starting PSN: we send from it. */
  sqPsn: number;
  /** The path's local ACK timeout exponent. */
  timeout: number;
  retryCount: number;
  rnrRetryCount: number;
  initiatorDepth: number;
}

export function qpToRts(qp: QP, p: RtsParams): void {
  const rc = qp.qpType === QpType.RC;
  qp.modify({
    qpState: QpState.RTS, sqPsn: p.sqPsn, timeout: p.timeout, retryCnt: p.retryCount, rnrRetry: p.rnrRetryCount, maxRdAtomic: p.initiatorDepth,
  }, QpAttr.STATE | QpAttr.SQ_PSN | (rc ? QpAttr.TIMEOUT | QpAttr.RETRY_CNT | QpAttr.RNR_RETRY | QpAttr.MAX_QP_RD_ATOMIC : 0));
}

/** cma_modify_qp_err; a QP already destroyed or in RESET is left alone. */
export function qpToErr(qp: QP | undefined): void {
  if (!qp) return;
  try {
    if (qp.state !== QpState.ERR && qp.state !== QpState.RESET) qp.modify({ qpState: QpState.ERR }, QpAttr.STATE);
  } catch { /* destroyed with its context */ }
}
