// The IBTA QP state transition table (IBA 11.2.5, as Linux's ib_modify_qp_is_ok encodes it):
// for each (current state, next state) and QP type, the attributes a modify_qp call must
// carry and the ones it may carry. Anything outside required ∪ optional fails the call.

import { QpAttr as A, QpState as S, QpType as T } from '../abi/enums.js';

interface Rule {
  req?: Partial<Record<number, number>>;
  opt?: Partial<Record<number, number>>;
}

const UD = T.UD, UC = T.UC, RC = T.RC;
const ok: Rule = {};

const toRtsOpt = {
  [UD]: A.CUR_STATE | A.QKEY,
  [UC]: A.CUR_STATE | A.ALT_PATH | A.ACCESS_FLAGS | A.PATH_MIG_STATE,
  [RC]: A.CUR_STATE | A.ALT_PATH | A.ACCESS_FLAGS | A.MIN_RNR_TIMER | A.PATH_MIG_STATE,
};

const TABLE: Record<number, Partial<Record<number, Rule>>> = {
  [S.RESET]: {
    [S.RESET]: ok,
    [S.INIT]: {
      req: { [UD]: A.PKEY_INDEX | A.PORT | A.QKEY, [UC]: A.PKEY_INDEX | A.PORT | A.ACCESS_FLAGS, [RC]: A.PKEY_INDEX | A.PORT | A.ACCESS_FLAGS },
    },
    // No RESET -> ERR: Linux's qp_state_table (core/verbs.c) allows only RESET and INIT from RESET.
  },
  [S.INIT]: {
    [S.RESET]: ok,
    [S.ERR]: ok,
    [S.INIT]: {
      opt: { [UD]: A.PKEY_INDEX | A.PORT | A.QKEY, [UC]: A.PKEY_INDEX | A.PORT | A.ACCESS_FLAGS, [RC]: A.PKEY_INDEX | A.PORT | A.ACCESS_FLAGS },
    },
    [S.RTR]: {
      req: {
        [UC]: A.AV | A.PATH_MTU | A.DEST_QPN | A.RQ_PSN,
        [RC]: A.AV | A.PATH_MTU | A.DEST_QPN | A.RQ_PSN | A.MAX_DEST_RD_ATOMIC | A.MIN_RNR_TIMER,
      },
      opt: {
        [UD]: A.PKEY_INDEX | A.QKEY,
        [UC]: A.ALT_PATH | A.ACCESS_FLAGS | A.PKEY_INDEX,
        [RC]: A.ALT_PATH | A.ACCESS_FLAGS | A.PKEY_INDEX,
      },
    },
  },
  [S.RTR]: {
    [S.RESET]: ok,
    [S.ERR]: ok,
    [S.RTS]: {
      req: { [UD]: A.SQ_PSN, [UC]: A.SQ_PSN, [RC]: A.TIMEOUT | A.RETRY_CNT | A.RNR_RETRY | A.SQ_PSN | A.MAX_QP_RD_ATOMIC },
      opt: toRtsOpt,
    },
  },
  [S.RTS]: {
    [S.RESET]: ok,
    [S.ERR]: ok,
    [S.RTS]: {
      opt: {
        [UD]: A.CUR_STATE | A.QKEY,
        [UC]: A.CUR_STATE | A.ACCESS_FLAGS | A.ALT_PATH | A.PATH_MIG_STATE,
        [RC]: A.CUR_STATE | A.ACCESS_FLAGS | A.ALT_PATH | A.PATH_MIG_STATE | A.MIN_RNR_TIMER,
      },
    },
    [S.SQD]: { opt: { [UD]: A.EN_SQD_ASYNC_NOTIFY, [UC]: A.EN_SQD_ASYNC_NOTIFY, [RC]: A.EN_SQD_ASYNC_NOTIFY } },
  },
  [S.SQD]: {
    [S.RESET]: ok,
    [S.ERR]: ok,
    [S.RTS]: { opt: toRtsOpt },
    [S.SQD]: {
      opt: {
        [UD]: A.PKEY_INDEX | A.QKEY,
        [UC]: A.AV | A.ALT_PATH | A.ACCESS_FLAGS | A.PKEY_INDEX | A.PATH_MIG_STATE,
        [RC]: A.PORT | A.AV | A.TIMEOUT | A.RETRY_CNT | A.RNR_RETRY | A.MAX_QP_RD_ATOMIC | A.MAX_DEST_RD_ATOMIC |
          A.ALT_PATH | A.ACCESS_FLAGS | A.PKEY_INDEX | A.MIN_RNR_TIMER | A.PATH_MIG_STATE,
      },
    },
  },
  [S.SQE]: {
    [S.RESET]: ok,
    [S.ERR]: ok,
    [S.RTS]: { opt: { [UD]: A.CUR_STATE | A.QKEY, [UC]: A.CUR_STATE | A.ACCESS_FLAGS } },
  },
  [S.ERR]: { [S.RESET]: ok, [S.ERR]: ok },
};

export type TransitionCheck =
  | { ok: true }
  | { ok: false; reason: 'transition' }
  | { ok: false; reason: 'missing' | 'extra'; attrs: number };

/** Check a modify_qp call. `mask` includes STATE when the state changes. */
export function checkTransition(qpType: number, cur: number, next: number, mask: number): TransitionCheck {
  const rule = TABLE[cur]?.[next];
  if (!rule) return { ok: false, reason: 'transition' };
  // CUR_STATE is only meaningful leaving RTR, RTS, SQD or SQE (as Linux checks).
  if (mask & A.CUR_STATE && cur !== S.RTR && cur !== S.RTS && cur !== S.SQD && cur !== S.SQE) {
    return { ok: false, reason: 'extra', attrs: A.CUR_STATE };
  }
  const req = rule.req?.[qpType] ?? 0;
  const opt = rule.opt?.[qpType] ?? 0;
  if ((mask & req) !== req) return { ok: false, reason: 'missing', attrs: req & ~mask };
  const extra = mask & ~(req | opt | A.STATE);
  if (extra) return { ok: false, reason: 'extra', attrs: extra };
  return { ok: true };
}

export function requiredAttrs(qpType: number, cur: number, next: number): number {
  return TABLE[cur]?.[next]?.req?.[qpType] ?? 0;
}

export function optionalAttrs(qpType: number, cur: number, next: number): number {
  return TABLE[cur]?.[next]?.opt?.[qpType] ?? 0;
}

export function isValidTransition(cur: number, next: number): boolean {
  return TABLE[cur]?.[next] !== undefined;
}
