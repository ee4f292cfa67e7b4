// rxe's debug trace: every debug line of the QP state machines goes through here, so where it
// goes is decided in one place (Linux rxe prints through rxe_dbg_qp/pr_debug). With
// SOFTRDMA_DEBUG set it goes to stderr; a test or tool may install its own sink. Without a
// sink a trace call is one test of a variable.

import { COMP_STATE_NAMES, RESP_STATE_NAMES, type CompStateValue, type RespStateValue } from './states.js';

export interface RxeTraceEvent {
  /** Which state machine: the responder or the completer. */
  machine: 'resp' | 'comp';
  qpn: number;
  /** The state's name, as Linux rxe prints it ('RESPST_CHK_PSN', 'COMPST_ERROR_RETRY', ...). */
  state: string;
  /** The PSN of the packet (or, for a timer, the PSN retried from). */
  psn: number;
}
export type RxeTraceSink = (event: RxeTraceEvent) => void;

const toStderr: RxeTraceSink = (e) => console.error(`rxe qp#${e.qpn} ${e.machine} ${e.state} psn 0x${e.psn.toString(16)}`);

let sink: RxeTraceSink | undefined = process.env.SOFTRDMA_DEBUG ? toStderr : undefined;

/** Install a sink (undefined: none); returns the previous one so a caller can put it back. */
export function setTraceSink(next: RxeTraceSink | undefined): RxeTraceSink | undefined {
  const prev = sink;
  sink = next;
  return prev;
}

/** The responder of QP `qpn` reached `state` for the packet with `psn`. */
export function traceResp(qpn: number, state: RespStateValue, psn: number): void {
  if (sink !== undefined) sink({ machine: 'resp', qpn, state: RESP_STATE_NAMES[state]!, psn });
}

/** The completer of QP `qpn` reached `state` for the packet (or retry) at `psn`. */
export function traceComp(qpn: number, state: CompStateValue, psn: number): void {
  if (sink !== undefined) sink({ machine: 'comp', qpn, state: COMP_STATE_NAMES[state]!, psn });
}
