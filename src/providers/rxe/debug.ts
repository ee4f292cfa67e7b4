// rxe's debug trace: every debug event of the QP state machines goes through here (Linux rxe
// prints through rxe_dbg_qp/pr_debug). Events are published on the diagnostics_channel
// channels softrdma:rxe:resp and softrdma:rxe:comp, printed with NODE_DEBUG=rxe, and given to
// a sink a test installs. With none of these a trace call is three cheap tests.

import dc from 'node:diagnostics_channel';
import util from 'node:util';
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

const channels = { resp: dc.channel('softrdma:rxe:resp'), comp: dc.channel('softrdma:rxe:comp') };
const log = util.debuglog('rxe');
/** NODE_DEBUG is read once, at startup. */
const logOn = log.enabled;

let sink: RxeTraceSink | undefined;

/** Install a sink (undefined: none); returns the previous one so a caller can put it back. */
export function setTraceSink(next: RxeTraceSink | undefined): RxeTraceSink | undefined {
  const prev = sink;
  sink = next;
  return prev;
}

function emit(e: RxeTraceEvent): void {
  sink?.(e);
  const ch = channels[e.machine];
  if (ch.hasSubscribers) ch.publish(e);
  if (logOn) log('qp#%d %s %s psn 0x%s', e.qpn, e.machine, e.state, e.psn.toString(16));
}

/** The responder of QP `qpn` reached `state` for the packet with `psn`. */
export function traceResp(qpn: number, state: RespStateValue, psn: number): void {
  if (sink !== undefined || logOn || channels.resp.hasSubscribers) emit({ machine: 'resp', qpn, state: RESP_STATE_NAMES[state]!, psn });
}

/** The completer of QP `qpn` reached `state` for the packet (or retry) at `psn`. */
export function traceComp(qpn: number, state: CompStateValue, psn: number): void {
  if (sink !== undefined || logOn || channels.comp.hasSubscribers) emit({ machine: 'comp', qpn, state: COMP_STATE_NAMES[state]!, psn });
}
