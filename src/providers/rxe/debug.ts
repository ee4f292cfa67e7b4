// rxe's debug trace: every debug event of the QP state machines goes through here (Linux rxe
// prints through rxe_dbg_qp/pr_debug). Events are trace points of src/sys/trace.ts (channels
// softrdma:rxe:resp and softrdma:rxe:comp, printed with NODE_DEBUG=rxe), and go to a sink a
// test installs. With none of these a trace call is three cheap tests.

import { tracer } from '../../sys/trace.js';
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

const line = (e: RxeTraceEvent) => `qp#${e.qpn} ${e.machine} ${e.state} psn 0x${e.psn.toString(16)}`;
const traces = { resp: tracer<RxeTraceEvent>('rxe', 'resp', line), comp: tracer<RxeTraceEvent>('rxe', 'comp', line) };

let sink: RxeTraceSink | undefined;

/** Install a sink (undefined: none); returns the previous one so a caller can put it back. */
export function setTraceSink(next: RxeTraceSink | undefined): RxeTraceSink | undefined {
  const prev = sink;
  sink = next;
  return prev;
}

function emit(e: RxeTraceEvent): void {
  sink?.(e);
  traces[e.machine](e);
}

/** The responder of QP `qpn` reached `state` for the packet with `psn`. */
export function traceResp(qpn: number, state: RespStateValue, psn: number): void {
  if (sink !== undefined || traces.resp.active) emit({ machine: 'resp', qpn, state: RESP_STATE_NAMES[state]!, psn });
}

/** The completer of QP `qpn` reached `state` for the packet (or retry) at `psn`. */
export function traceComp(qpn: number, state: CompStateValue, psn: number): void {
  if (sink !== undefined || traces.comp.active) emit({ machine: 'comp', qpn, state: COMP_STATE_NAMES[state]!, psn });
}
