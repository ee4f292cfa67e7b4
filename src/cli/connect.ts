// Bring an RC QP to RTS against a peer (QPN, PSN, GID), as the pingpong and perftest tools do.

import { QpAttr, QpState, RC_DEFAULT_ACCESS, type QP } from './shared.js';

export function connect(qp: QP, remote: { qpn: number; psn: number; gid: Uint8Array }, myPsn: number, mtu = 3): void {
  qp.modify({ qpState: QpState.INIT, pkeyIndex: 0, portNum: 1, qpAccessFlags: RC_DEFAULT_ACCESS },
    QpAttr.STATE | QpAttr.PKEY_INDEX | QpAttr.PORT | QpAttr.ACCESS_FLAGS);
  qp.modify({
    qpState: QpState.RTR, pathMtu: mtu, destQpNum: remote.qpn, rqPsn: remote.psn, maxDestRdAtomic: 16, minRnrTimer: 12,
    ahAttr: { grh: { dgid: remote.gid, hopLimit: 64, sgidIndex: 0 }, isGlobal: true, portNum: 1 },
  }, QpAttr.STATE | QpAttr.AV | QpAttr.PATH_MTU | QpAttr.DEST_QPN | QpAttr.RQ_PSN | QpAttr.MAX_DEST_RD_ATOMIC | QpAttr.MIN_RNR_TIMER);
  qp.modify({ qpState: QpState.RTS, sqPsn: myPsn, timeout: 14, retryCnt: 7, rnrRetry: 7, maxRdAtomic: 16 },
    QpAttr.STATE | QpAttr.SQ_PSN | QpAttr.TIMEOUT | QpAttr.RETRY_CNT | QpAttr.RNR_RETRY | QpAttr.MAX_QP_RD_ATOMIC);
}
