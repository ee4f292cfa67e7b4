// The named states of the responder and the completer, as Linux rxe's enum resp_states
// (rxe_resp.c; rxe_verbs.h in later kernels) and enum comp_states (rxe_comp.c) with their
// name tables, so a debug trace (debug.ts) can say where a packet's handling went.
// softrdma's responder and completer are straight-line code rather than loops over a state
// variable; they report the state a packet reaches at each decision (its checks, its
// error, its reply), by these names.

function names(prefix: string, states: Record<string, number>): readonly string[] {
  const out: string[] = [];
  for (const [name, value] of Object.entries(states)) out[value] = prefix + name;
  return Object.freeze(out);
}

/** Responder states (rxe_resp.c); the error states name the check that failed. */
export const RespState = {
  GET_REQ: 0,
  CHK_PSN: 1,
  CHK_OP_SEQ: 2,
  CHK_OP_VALID: 3,
  CHK_RESOURCE: 4,
  CHK_LENGTH: 5,
  CHK_RKEY: 6,
  EXECUTE: 7,
  READ_REPLY: 8,
  ATOMIC_REPLY: 9,
  COMPLETE: 10,
  ACKNOWLEDGE: 11,
  CLEANUP: 12,
  DUPLICATE_REQUEST: 13,
  ERR_MALFORMED_WQE: 14,
  ERR_UNSUPPORTED_OPCODE: 15,
  ERR_MISALIGNED_ATOMIC: 16,
  ERR_PSN_OUT_OF_SEQ: 17,
  ERR_MISSING_OPCODE_FIRST: 18,
  ERR_MISSING_OPCODE_LAST_C: 19,
  ERR_MISSING_OPCODE_LAST_D1E: 20,
  ERR_TOO_MANY_RDMA_ATM_REQ: 21,
  ERR_RNR: 22,
  ERR_RKEY_VIOLATION: 23,
  ERR_INVALIDATE_RKEY: 24,
  ERR_LENGTH: 25,
  ERR_CQ_OVERFLOW: 26,
  ERROR: 27,
  RESET: 28,
  DONE: 29,
  EXIT: 30,
} as const;
export type RespStateValue = (typeof RespState)[keyof typeof RespState];
/** RESP_STATE_NAMES[RespState.CHK_PSN] is 'RESPST_CHK_PSN' (Linux's resp_state_name). */
export const RESP_STATE_NAMES = names('RESPST_', RespState);

/** Completer states (rxe_comp.c). */
export const CompState = {
  GET_ACK: 0,
  GET_WQE: 1,
  COMP_WQE: 2,
  COMP_ACK: 3,
  CHECK_PSN: 4,
  CHECK_ACK: 5,
  READ: 6,
  ATOMIC: 7,
  WRITE_SEND: 8,
  UPDATE_COMP: 9,
  ERROR_RETRY: 10,
  RNR_RETRY: 11,
  ERROR: 12,
  EXIT: 13,
  DONE: 14,
} as const;
export type CompStateValue = (typeof CompState)[keyof typeof CompState];
/** COMP_STATE_NAMES[CompState.GET_ACK] is 'COMPST_GET_ACK' (Linux's comp_state_name). */
export const COMP_STATE_NAMES = names('COMPST_', CompState);
