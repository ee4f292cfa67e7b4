// Bring a QP from RESET to RTS against a known peer, the way rdma-core's examples and
// perftest do once they have exchanged QPN, PSN and GID out of band. One helper for every
// QP type, so tools and tests cannot drift apart on the attribute masks.

import { Access, QpAttr, QpState, QpType, type MtuValue } from '../abi/enums.js';
import type { QP } from './api.js';
import { fail } from '../uapi/errors.js';
import { shown } from '../abi/errors.js';

export interface RemoteQpInfo {
  qpn: number;
  /** The peer's starting send PSN (our rq_psn). Ignored for UD. */
  psn: number;
  gid: Uint8Array;
}

export interface ConnectOptions {
  /** Our starting send PSN. */
  psn?: number;
  /** Path MTU as an Mtu enum value (1..5); default Mtu.MTU_1024 (3). */
  mtu?: MtuValue;
  access?: number;
  timeout?: number;
  retryCnt?: number;
  rnrRetry?: number;
  minRnrTimer?: number;
  maxRdAtomic?: number;
  maxDestRdAtomic?: number;
  /** UD only: the Q_Key our QP accepts. */
  qkey?: number;
  hopLimit?: number;
  sgidIndex?: number;
  portNum?: number;
}

export const RC_ACCESS = Access.LOCAL_WRITE | Access.REMOTE_WRITE | Access.REMOTE_READ | Access.REMOTE_ATOMIC;

/** RESET -> INIT only; receives may be posted from INIT on, before the peer is known. */
export function initQp(qp: QP, o: ConnectOptions = {}): void {
  const ud = qp.qpType === QpType.UD;
  qp.modify({ qpState: QpState.INIT, pkeyIndex: 0, portNum: o.portNum ?? 1, qpAccessFlags: o.access ?? RC_ACCESS, qkey: o.qkey ?? 0x11111111 },
    QpAttr.STATE | QpAttr.PKEY_INDEX | QpAttr.PORT | (ud ? QpAttr.QKEY : QpAttr.ACCESS_FLAGS));
}

/**
 * Bring a QP in RESET or INIT to RTS against `remote`. What the peer told is checked first; a
 * QP that started in RESET goes back to RESET if a step fails, so a failed connect leaves it as
 * it was.
 */
export function connectQp(qp: QP, remote: RemoteQpInfo, o: ConnectOptions = {}): void {
  const site = { object: 'QP', method: 'connect' };
  const ud = qp.qpType === QpType.UD;
  if (typeof remote !== 'object' || remote === null) fail('EINVAL', `the remote QP must be { qpn, psn, gid }, got ${remote === null ? 'null' : typeof remote}`, { ...site, attr: 'remote' });
  if (!ud) {
    if (!Number.isInteger(remote.qpn) || remote.qpn < 0 || remote.qpn > 0xffffff) fail('EINVAL', `remote.qpn must be a 24-bit QPN, got ${shown(remote.qpn)}`, { ...site, attr: 'remote.qpn' });
    if (!Number.isInteger(remote.psn) || remote.psn < 0 || remote.psn > 0xffffff) fail('EINVAL', `remote.psn must be a 24-bit PSN, got ${shown(remote.psn)}`, { ...site, attr: 'remote.psn' });
    if (!(remote.gid instanceof Uint8Array) || remote.gid.length !== 16) fail('EINVAL', 'remote.gid must be 16 bytes', { ...site, attr: 'remote.gid' });
  }
  if (qp.state !== QpState.RESET && qp.state !== QpState.INIT) fail('EINVAL', `QP ${qp.qpn} must be in RESET or INIT to connect`, site);
  const fromReset = qp.state === QpState.RESET;
  try {
    toRts(qp, remote, o);
  } catch (err) {
    if (fromReset && qp.state !== QpState.RESET) qp.modify({ qpState: QpState.RESET }, QpAttr.STATE);
    throw err;
  }
}

function toRts(qp: QP, remote: RemoteQpInfo, o: ConnectOptions): void {
  const type = qp.qpType;
  const portNum = o.portNum ?? 1;
  const ud = type === QpType.UD;
  if (qp.state === QpState.RESET) initQp(qp, o);
  if (ud) {
    qp.modify({ qpState: QpState.RTR }, QpAttr.STATE);
    qp.modify({ qpState: QpState.RTS, sqPsn: o.psn ?? 0 }, QpAttr.STATE | QpAttr.SQ_PSN);
    return;
  }
  const rc = type === QpType.RC;
  qp.modify({
    qpState: QpState.RTR, pathMtu: o.mtu ?? 3, destQpNum: remote.qpn, rqPsn: remote.psn,
    ahAttr: { grh: { dgid: remote.gid, hopLimit: o.hopLimit ?? 64, sgidIndex: o.sgidIndex ?? 0 }, isGlobal: true, portNum },
    maxDestRdAtomic: o.maxDestRdAtomic ?? 16, minRnrTimer: o.minRnrTimer ?? 12,
  }, QpAttr.STATE | QpAttr.AV | QpAttr.PATH_MTU | QpAttr.DEST_QPN | QpAttr.RQ_PSN
    | (rc ? QpAttr.MAX_DEST_RD_ATOMIC | QpAttr.MIN_RNR_TIMER : 0));
  qp.modify({
    qpState: QpState.RTS, sqPsn: o.psn ?? 0, timeout: o.timeout ?? 14, retryCnt: o.retryCnt ?? 7,
    rnrRetry: o.rnrRetry ?? 7, maxRdAtomic: o.maxRdAtomic ?? 16,
  }, QpAttr.STATE | QpAttr.SQ_PSN
    | (rc ? QpAttr.TIMEOUT | QpAttr.RETRY_CNT | QpAttr.RNR_RETRY | QpAttr.MAX_QP_RD_ATOMIC : 0));
}
