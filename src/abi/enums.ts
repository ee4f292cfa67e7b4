// Verbs constants with libibverbs' names and values, so code and numbers carry over from C.

export const Access = {
  LOCAL_WRITE: 1,
  REMOTE_WRITE: 1 << 1,
  REMOTE_READ: 1 << 2,
  REMOTE_ATOMIC: 1 << 3,
  MW_BIND: 1 << 4,
  ZERO_BASED: 1 << 5,
  // reg_mr's other bits, as ib_check_mr_access (Linux 6.1) takes them: ON_DEMAND is EOPNOTSUPP
  // (no on-demand paging); HUGETLB and RELAXED_ORDERING are hints rxe ignores.
  ON_DEMAND: 1 << 6,
  HUGETLB: 1 << 7,
  RELAXED_ORDERING: 1 << 20,
} as const;
/** The access bits an MR or a window keeps (what they mean to rxe). */
export const ACCESS_MASK = 0x3f;
/** IBV_ACCESS_OPTIONAL_RANGE: bits 20-29, hints a device that does not know them ignores. */
export const ACCESS_OPTIONAL_RANGE = 0x3ff << 20;
/** Every bit reg_mr accepts (IB_ACCESS_SUPPORTED in 6.1: up to HUGETLB, and the optional range). */
export const MR_ACCESS_SUPPORTED = ((Access.HUGETLB << 1) - 1) | ACCESS_OPTIONAL_RANGE;

export const QpType = { RC: 2, UC: 3, UD: 4 } as const;
export type QpTypeValue = (typeof QpType)[keyof typeof QpType];
export const qpTypeName = (t: number) => ({ 2: 'RC', 3: 'UC', 4: 'UD' } as Record<number, string>)[t] ?? `type ${t}`;

export const QpState = { RESET: 0, INIT: 1, RTR: 2, RTS: 3, SQD: 4, SQE: 5, ERR: 6 } as const;
export type QpStateValue = (typeof QpState)[keyof typeof QpState];
export const qpStateName = (s: number) => ['RESET', 'INIT', 'RTR', 'RTS', 'SQD', 'SQE', 'ERR'][s] ?? `state ${s}`;

/** ibv_qp_attr_mask bits. */
export const QpAttr = {
  STATE: 1 << 0,
  CUR_STATE: 1 << 1,
  EN_SQD_ASYNC_NOTIFY: 1 << 2,
  ACCESS_FLAGS: 1 << 3,
  PKEY_INDEX: 1 << 4,
  PORT: 1 << 5,
  QKEY: 1 << 6,
  AV: 1 << 7,
  PATH_MTU: 1 << 8,
  TIMEOUT: 1 << 9,
  RETRY_CNT: 1 << 10,
  RNR_RETRY: 1 << 11,
  RQ_PSN: 1 << 12,
  MAX_QP_RD_ATOMIC: 1 << 13,
  ALT_PATH: 1 << 14,
  MIN_RNR_TIMER: 1 << 15,
  SQ_PSN: 1 << 16,
  MAX_DEST_RD_ATOMIC: 1 << 17,
  PATH_MIG_STATE: 1 << 18,
  CAP: 1 << 19,
  DEST_QPN: 1 << 20,
} as const;
export const QP_ATTR_NAMES = Object.fromEntries(Object.entries(QpAttr).map(([k, v]) => [v, k])) as Record<number, string>;

/** ibv_mtu: path and port MTUs are these enum values, not byte counts (mtuBytes/mtuEnum convert). */
export const Mtu = { MTU_256: 1, MTU_512: 2, MTU_1024: 3, MTU_2048: 4, MTU_4096: 5 } as const;
export type MtuValue = (typeof Mtu)[keyof typeof Mtu];
export const mtuBytes = (m: number) => 128 << m;
export function mtuEnum(bytes: number): MtuValue {
  const e = Math.log2(bytes) - 7;
  if (!Number.isInteger(e) || e < 1 || e > 5) throw new RangeError(`path MTU ${bytes} is not one of 256, 512, 1024, 2048, 4096`);
  return e as MtuValue;
}

export const WrOpcode = {
  RDMA_WRITE: 0,
  RDMA_WRITE_WITH_IMM: 1,
  SEND: 2,
  SEND_WITH_IMM: 3,
  RDMA_READ: 4,
  ATOMIC_CMP_AND_SWP: 5,
  ATOMIC_FETCH_AND_ADD: 6,
  LOCAL_INV: 7,
  BIND_MW: 8,
  SEND_WITH_INV: 9,
} as const;
export type WrOpcodeValue = (typeof WrOpcode)[keyof typeof WrOpcode];
export const WR_OPCODE_NAMES = Object.fromEntries(Object.entries(WrOpcode).map(([k, v]) => [v, k])) as Record<number, string>;

export const SendFlags = { FENCE: 1, SIGNALED: 2, SOLICITED: 4, INLINE: 8 } as const;

export const WcOpcode = {
  SEND: 0,
  RDMA_WRITE: 1,
  RDMA_READ: 2,
  COMP_SWAP: 3,
  FETCH_ADD: 4,
  BIND_MW: 5,
  LOCAL_INV: 6,
  RECV: 128,
  RECV_RDMA_WITH_IMM: 129,
} as const;

export const WcStatus = {
  SUCCESS: 0,
  LOC_LEN_ERR: 1,
  LOC_QP_OP_ERR: 2,
  LOC_EEC_OP_ERR: 3,
  LOC_PROT_ERR: 4,
  WR_FLUSH_ERR: 5,
  MW_BIND_ERR: 6,
  BAD_RESP_ERR: 7,
  LOC_ACCESS_ERR: 8,
  REM_INV_REQ_ERR: 9,
  REM_ACCESS_ERR: 10,
  REM_OP_ERR: 11,
  RETRY_EXC_ERR: 12,
  RNR_RETRY_EXC_ERR: 13,
  LOC_RDD_VIOL_ERR: 14,
  REM_INV_RD_REQ_ERR: 15,
  REM_ABORT_ERR: 16,
  INV_EECN_ERR: 17,
  INV_EEC_STATE_ERR: 18,
  FATAL_ERR: 19,
  RESP_TIMEOUT_ERR: 20,
  GENERAL_ERR: 21,
} as const;
export const WC_STATUS_NAMES = Object.fromEntries(Object.entries(WcStatus).map(([k, v]) => [v, k])) as Record<number, string>;
/** ibv_wc_status_str */
export const wcStatusStr = (s: number) => WC_STATUS_NAMES[s] ?? `status ${s}`;

export const WcFlags = { GRH: 1, WITH_IMM: 2, IP_CSUM_OK: 4, WITH_INV: 8 } as const;

export const MwType = { TYPE_1: 1, TYPE_2: 2 } as const;

export const PortState = { NOP: 0, DOWN: 1, INIT: 2, ARMED: 3, ACTIVE: 4, ACTIVE_DEFER: 5 } as const;

export const AsyncEventType = {
  CQ_ERR: 0,
  QP_FATAL: 1,
  QP_REQ_ERR: 2,
  QP_ACCESS_ERR: 3,
  COMM_EST: 4,
  SQ_DRAINED: 5,
  PATH_MIG: 6,
  PATH_MIG_ERR: 7,
  DEVICE_FATAL: 8,
  PORT_ACTIVE: 9,
  PORT_ERR: 10,
  LID_CHANGE: 11,
  PKEY_CHANGE: 12,
  SM_CHANGE: 13,
  SRQ_ERR: 14,
  SRQ_LIMIT_REACHED: 15,
  QP_LAST_WQE_REACHED: 16,
  CLIENT_REREGISTER: 17,
  GID_CHANGE: 18,
} as const;
export const ASYNC_EVENT_NAMES = Object.fromEntries(Object.entries(AsyncEventType).map(([k, v]) => [v, k])) as Record<number, string>;

export const SrqAttr = { MAX_WR: 1, LIMIT: 2 } as const;

/** Path MIG state: rxe only ever reports MIGRATED. */
export const MigState = { MIGRATED: 0, REARM: 1, ARMED: 2 } as const;
