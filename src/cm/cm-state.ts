// The IB CM connection state machine of Linux drivers/infiniband/core/cm.c, pure: one
// connection's state and an input (a received message, a local call, a timer) give the next
// state and a list of actions (send this message, start/stop a timer, deliver this event to
// the consumer). No sockets, no clocks, no randomness: the caller owns those.
//
// The table CM_TABLE says, for each state, which inputs it takes and what they do; an input
// with no cell is refused (local calls: EINVAL, as cm.c's state checks) or dropped (received
// messages and stale timers: cm.c's "goto out"). Retransmission, which Linux leaves to the MAD
// layer (ib_post_send_mad with retries = max_cm_retries and timeout_ms), is explicit here: the
// retry timer resends the outstanding REQ/REP/DREQ/SIDR_REQ up to maxRetries times, then fails
// the way cm_process_send_error does.

import {
  CmMsgResponse, RejReason, SidrStatus, blankCm,
  type CmFields, type CmKind, type CmMessage, type CmMessageOf, type CmReq, type CmSidrReq,
} from './wire/cm-messages.js';
import { POW2 } from './wire/bits.js';

/** enum ib_cm_state, same order and values. */
export const CmState = {
  IDLE: 0,
  LISTEN: 1,
  REQ_SENT: 2,
  REQ_RCVD: 3,
  MRA_REQ_SENT: 4,
  MRA_REQ_RCVD: 5,
  REP_SENT: 6,
  REP_RCVD: 7,
  MRA_REP_SENT: 8,
  MRA_REP_RCVD: 9,
  ESTABLISHED: 10,
  DREQ_SENT: 11,
  DREQ_RCVD: 12,
  TIMEWAIT: 13,
  SIDR_REQ_SENT: 14,
  SIDR_REQ_RCVD: 15,
} as const;
export type CmStateName = keyof typeof CmState;
export const CM_STATES = Object.keys(CmState) as CmStateName[];

/** Events delivered to the consumer (enum ib_cm_event_type names, without LAP/APR). */
export type CmEventName =
  | 'REQ_ERROR' | 'REQ_RECEIVED' | 'REP_ERROR' | 'REP_RECEIVED' | 'RTU_RECEIVED' | 'USER_ESTABLISHED'
  | 'DREQ_ERROR' | 'DREQ_RECEIVED' | 'DREP_RECEIVED' | 'TIMEWAIT_EXIT' | 'MRA_RECEIVED' | 'REJ_RECEIVED'
  | 'SIDR_REQ_ERROR' | 'SIDR_REQ_RECEIVED' | 'SIDR_REP_RECEIVED';

/** States in which a sent message waits for its answer: the retry timer runs exactly there. */
export const RETRYING_STATES: ReadonlySet<CmStateName> = new Set<CmStateName>([
  'REQ_SENT', 'MRA_REQ_RCVD', 'REP_SENT', 'MRA_REP_RCVD', 'DREQ_SENT', 'SIDR_REQ_SENT',
]);

/** Linux's approximation of 4.096 µs × 2^t in milliseconds (cm_convert_to_ms): 1 << max(t - 8, 0). */
export const cmConvertToMs = (ibaTime: number) => { const n = Math.max(ibaTime - 8, 0); return POW2[n] ?? 2 ** n; };
/** The exact IBA time: 4.096 µs × 2^t, in milliseconds. */
export const ibaTimeMs = (ibaTime: number) => 4.096e-3 * (POW2[ibaTime] ?? 2 ** ibaTime);

/**
 * cm_ack_timeout: the local ACK timeout for a path, 4.096 µs × 2^t ≈ ack delay + 2 × packet
 * life, computed on exponents: the larger of (ack delay, life + 1), plus one when the other
 * is within a factor of two; at most 31.
 */
export function cmAckTimeout(caAckDelay: number, packetLifeTime: number): number {
  let t = packetLifeTime + 1;
  if (t >= caAckDelay) t += caAckDelay >= t - 1 ? 1 : 0;
  else t = caAckDelay + (t >= caAckDelay - 1 ? 1 : 0);
  return Math.min(31, t);
}

/** Soft-RoCE's local CA ACK delay (RXE_LOCAL_CA_ACK_DELAY), the REP's target ACK delay from rxe. */
export const RXE_LOCAL_CA_ACK_DELAY = 15;

export type TimerName = 'retry' | 'timewait';

export type CmAction =
  /** Send this message in a MAD with this transaction id. `retry`: a retransmission of the outstanding message. */
  | { type: 'send'; msg: CmMessage; tid: bigint; retry?: true }
  | { type: 'timer_start'; timer: TimerName; ms: number }
  | { type: 'timer_stop'; timer: TimerName }
  /** Tell the consumer. `msg` is the received message the event is about, if any. */
  | { type: 'deliver'; event: CmEventName; msg?: CmMessage };

export interface CmConn {
  readonly state: CmStateName;
  readonly localId: number;
  /** The peer's comm id; 0 until its REQ or REP told us. */
  readonly remoteId: number;
  readonly localCaGuid: bigint;
  readonly remoteCaGuid: bigint;
  readonly serviceId: bigint;
  /** The transaction id of the exchange in progress (responses echo the one they answer). */
  readonly tid: bigint;
  /** High 32 bits of the transaction ids this side starts (the MAD agent's hi_tid). */
  readonly hiTid: number;
  readonly localQpn: number;
  readonly remoteQpn: number;
  /**
   * How long a message this side sends waits for its answer (ms): cm_id_priv->timeout_ms, set by
   * the REQ (ours or the peer's) or the SIDR_REQ call; each REQ, REP and DREQ starts with it.
   */
  readonly responseTimeoutMs: number;
  /**
   * How long the outstanding message waits for an answer before it is resent (ms): the response
   * timeout, or longer for the message an MRA answered (ib_modify_mad changes that MAD only).
   */
  readonly timeoutMs: number;
  readonly maxRetries: number;
  /** Resends of the outstanding message so far. */
  readonly retries: number;
  readonly outstanding: CmMessage | undefined;
  /** The path's ACK timeout exponent (cm_av.timeout): the time-wait lasts cmConvertToMs of it. */
  readonly avTimeout: number;
  /** Our last MRA (resent for duplicates), RTU (resent for a duplicate REP), DREP (resent for a DREQ in time-wait). */
  readonly lastMra: CmMessageOf<'MRA'> | undefined;
  readonly lastRtu: CmMessageOf<'RTU'> | undefined;
  readonly lastDrep: CmMessageOf<'DREP'> | undefined;
  readonly retryTimer: boolean;
  readonly timewaitTimer: boolean;
  /** The consumer destroyed the id: no more events are delivered; time-wait still runs out. */
  readonly destroyed: boolean;
}

export type CmInput =
  | { type: 'listen'; serviceId: bigint }
  /** ib_send_cm_req: every REQ field but the local comm id; `packetLifeTime` of the primary path. */
  | { type: 'send_req'; req: Omit<CmReq, 'localCommId'>; packetLifeTime: number }
  | { type: 'send_rep'; rep: Omit<CmFields<'REP'>, 'localCommId' | 'remoteCommId'> }
  | { type: 'send_rtu'; privateData?: Buffer }
  /** ib_send_cm_mra; `delay`: IB_CM_MRA_FLAG_DELAY, send it only when a duplicate arrives. */
  | { type: 'send_mra'; serviceTimeout: number; delay?: boolean; privateData?: Buffer }
  | { type: 'send_rej'; reason: number; ari?: Buffer; privateData?: Buffer }
  | { type: 'send_dreq'; privateData?: Buffer }
  | { type: 'send_drep'; privateData?: Buffer }
  /** ib_cm_notify(IB_EVENT_COMM_EST): the QP saw traffic before the RTU. */
  | { type: 'establish' }
  /**
   * ib_destroy_cm_id. `noMemory`: cm_destroy_id with -ENOMEM (the consumer could not take a new
   * REQ): in REQ_RCVD the REQ is forgotten without a REJ, so the peer's resend comes as a new REQ.
   */
  | { type: 'destroy'; noMemory?: true }
  | { type: 'send_sidr_req'; req: Omit<CmSidrReq, 'requestId'>; timeoutMs: number; maxRetries: number }
  | { type: 'send_sidr_rep'; rep: Omit<CmFields<'SIDR_REP'>, 'requestId' | 'serviceId'> }
  | { type: 'recv'; msg: CmMessage; tid: bigint }
  | { type: 'retry_timeout' }
  | { type: 'timewait_timeout' };

export type CmInputKey = Exclude<CmInput['type'], 'recv'> | `recv:${CmKind}`;
export const inputKey = (i: CmInput): CmInputKey => (i.type === 'recv' ? `recv:${i.msg.kind}` : i.type);

export interface CmStep {
  conn: CmConn;
  actions: CmAction[];
  /** A local call refused in this state (cm.c returns -EINVAL / -EISCONN). */
  error?: 'EINVAL' | 'EISCONN';
  /** A received message or timer this state does not act on ('duplicate': counted by Linux as such). */
  dropped?: 'duplicate' | 'unexpected';
}

/** A fresh id in IDLE (ib_create_cm_id). */
export function newConn(o: { localId: number; localCaGuid: bigint; hiTid?: number }): CmConn {
  return {
    state: 'IDLE', localId: o.localId >>> 0, remoteId: 0, localCaGuid: o.localCaGuid, remoteCaGuid: 0n, serviceId: 0n,
    tid: 0n, hiTid: o.hiTid ?? 0, localQpn: 0, remoteQpn: 0, responseTimeoutMs: 0, timeoutMs: 0, maxRetries: 0, retries: 0, outstanding: undefined,
    avTimeout: 0, lastMra: undefined, lastRtu: undefined, lastDrep: undefined, retryTimer: false, timewaitTimer: false, destroyed: false,
  };
}

/**
 * The passive side of a REQ that matched a listener (cm_req_handler): a new id in REQ_RCVD,
 * its timing taken from the REQ, and REQ_RECEIVED for the consumer.
 */
export function passiveFromReq(o: { localId: number; localCaGuid: bigint; hiTid?: number }, req: CmMessageOf<'REQ'>, tid: bigint): CmStep {
  const ack = req.primaryLocalAckTimeout;
  const packetLife = ack - (ack > 0 ? 1 : 0);
  const responseTimeoutMs = cmConvertToMs(req.localCmResponseTimeout);
  const conn: CmConn = {
    ...newConn(o), state: 'REQ_RCVD', remoteId: req.localCommId, remoteCaGuid: req.localCaGuid, serviceId: req.serviceId, tid,
    remoteQpn: req.localQpn, responseTimeoutMs, timeoutMs: responseTimeoutMs, maxRetries: req.maxCmRetries, avTimeout: packetLife + 1,
  };
  return { conn, actions: [{ type: 'deliver', event: 'REQ_RECEIVED', msg: req }] };
}

/** The passive side of a SIDR_REQ that matched a listener (cm_sidr_req_handler). */
export function passiveFromSidrReq(o: { localId: number; localCaGuid: bigint; hiTid?: number }, req: CmMessageOf<'SIDR_REQ'>, tid: bigint): CmStep {
  const conn: CmConn = { ...newConn(o), state: 'SIDR_REQ_RCVD', remoteId: req.requestId, serviceId: req.serviceId, tid };
  return { conn, actions: [{ type: 'deliver', event: 'SIDR_REQ_RECEIVED', msg: req }] };
}

// ---- helpers for the handlers ----

type Handler = (c: CmConn, i: CmInput) => CmStep;

/** Transaction ids this side starts: hi_tid << 32 | local id (cm_form_tid; see docs/cm.md on byte order). */
const formTid = (c: CmConn) => (BigInt(c.hiTid >>> 0) << 32n) | BigInt(c.localId >>> 0);

/**
 * Move to `to` with `actions`, keeping the timers honest: leaving the retrying states stops the
 * retry timer (and forgets the outstanding message), entering TIMEWAIT starts the time-wait
 * timer (cm_enter_timewait), leaving TIMEWAIT stops it. Deliveries to a destroyed id are dropped.
 */
function transition(c: CmConn, to: CmStateName, patch: Partial<CmConn>, actions: CmAction[]): CmStep {
  const n = copyConn(c);
  Object.assign(n, patch);
  return settle(n, to, actions);
}

type MutableConn = { -readonly [K in keyof CmConn]: CmConn[K] };

/**
 * A copy of a connection to change before anyone sees it, field by field: one object literal
 * of one shape. (`{ ...c, ...patch }` took a generic property-by-property path for the second
 * spread: with the sends' patches it was a fifth of a connection's CM work.) The compiler
 * checks that every field is here.
 */
function copyConn(c: CmConn): MutableConn {
  return {
    state: c.state, localId: c.localId, remoteId: c.remoteId, localCaGuid: c.localCaGuid, remoteCaGuid: c.remoteCaGuid,
    serviceId: c.serviceId, tid: c.tid, hiTid: c.hiTid, localQpn: c.localQpn, remoteQpn: c.remoteQpn,
    responseTimeoutMs: c.responseTimeoutMs, timeoutMs: c.timeoutMs, maxRetries: c.maxRetries, retries: c.retries,
    outstanding: c.outstanding, avTimeout: c.avTimeout, lastMra: c.lastMra, lastRtu: c.lastRtu, lastDrep: c.lastDrep,
    retryTimer: c.retryTimer, timewaitTimer: c.timewaitTimer, destroyed: c.destroyed,
  };
}

/** The copy `n` moves to `to` with `actions`, its timers kept honest (see transition). */
function settle(n: MutableConn, to: CmStateName, actions: CmAction[]): CmStep {
  n.state = to;
  const out: CmAction[] = [];
  if (n.retryTimer && !RETRYING_STATES.has(to)) {
    out.push({ type: 'timer_stop', timer: 'retry' });
    n.retryTimer = false;
    n.outstanding = undefined;
    n.retries = 0;
  }
  if (to !== 'TIMEWAIT' && n.timewaitTimer) {
    out.push({ type: 'timer_stop', timer: 'timewait' });
    n.timewaitTimer = false;
  }
  for (const a of actions) {
    if (a.type === 'deliver' && n.destroyed) continue;
    if (a.type === 'timer_start') {
      if (a.timer === 'retry') n.retryTimer = true;
      else n.timewaitTimer = true;
    }
    out.push(a);
  }
  if (to === 'TIMEWAIT' && !n.timewaitTimer) {
    out.push({ type: 'timer_start', timer: 'timewait', ms: cmConvertToMs(n.avTimeout) });
    n.timewaitTimer = true;
  }
  return { conn: n, actions: out };
}

/**
 * Send `msg` and wait for its answer: the outstanding message, retry timer (re)started. It waits
 * the connection's response timeout, never what an MRA granted an earlier message.
 */
function sendAndWait(c: CmConn, to: CmStateName, msg: CmMessage, tid: bigint, patch: Partial<CmConn>, extra: CmAction[] = []): CmStep {
  const timeoutMs = patch.responseTimeoutMs ?? c.responseTimeoutMs;
  const n = copyConn(c);
  Object.assign(n, patch);
  n.timeoutMs = timeoutMs;
  n.tid = tid;
  n.outstanding = msg;
  n.retries = 0;
  n.retryTimer = false;
  const actions: CmAction[] = [];
  if (c.retryTimer) actions.push({ type: 'timer_stop', timer: 'retry' });
  actions.push({ type: 'send', msg, tid }, { type: 'timer_start', timer: 'retry', ms: timeoutMs });
  for (const a of extra) actions.push(a);
  return settle(n, to, actions);
}

const stay = (c: CmConn, actions: CmAction[] = []): CmStep => ({ conn: c, actions });
const refuse = (c: CmConn, error: 'EINVAL' | 'EISCONN' = 'EINVAL'): CmStep => ({ conn: c, actions: [], error });
const drop = (c: CmConn, why: 'duplicate' | 'unexpected' = 'unexpected'): CmStep => ({ conn: c, actions: [], dropped: why });
const deliver = (event: CmEventName, msg?: CmMessage): CmAction => (msg ? { type: 'deliver', event, msg } : { type: 'deliver', event });
/** No private data: one empty buffer for all (it has no bytes to change). */
const NO_DATA = Buffer.alloc(0);
const pd = (b: Buffer | undefined) => b ?? NO_DATA;

function recvOf<K extends CmKind>(i: CmInput, kind: K): { msg: CmMessageOf<K>; tid: bigint } {
  if (i.type !== 'recv' || i.msg.kind !== kind) throw new Error(`cm-state: ${inputKey(i)} routed to the ${kind} handler`);
  return { msg: i.msg as unknown as CmMessageOf<K>, tid: i.tid };
}
function callOf<T extends CmInput['type']>(i: CmInput, type: T): Extract<CmInput, { type: T }> {
  if (i.type !== type) throw new Error(`cm-state: ${i.type} routed to the ${type} handler`);
  return i as Extract<CmInput, { type: T }>;
}

/** The REJ this side sends in its current state (cm_format_rej): which message it rejects, and the local id it names. */
function formatRej(c: CmConn, reason: number, ari: Buffer | undefined, privateData: Buffer | undefined): CmMessageOf<'REJ'> {
  const s = c.state;
  const messageRejected = s === 'REQ_RCVD' || s === 'MRA_REQ_SENT' ? CmMsgResponse.REQ
    : s === 'REP_RCVD' || s === 'MRA_REP_SENT' ? CmMsgResponse.REP : CmMsgResponse.OTHER;
  return {
    ...blankCm('REJ'), localCommId: s === 'REQ_RCVD' ? 0 : c.localId, remoteCommId: c.remoteId, messageRejected,
    rejectedInfoLength: ari?.length ?? 0, reason, ari: pd(ari), privateData: pd(privateData),
  };
}

const guidBytes = (g: bigint) => { const b = Buffer.alloc(8); b.writeBigUInt64BE(g); return b; };

const mra = (c: CmConn, messageMraed: number, serviceTimeout: number, privateData?: Buffer): CmMessageOf<'MRA'> =>
  ({ ...blankCm('MRA'), localCommId: c.localId, remoteCommId: c.remoteId, messageMraed, serviceTimeout: serviceTimeout & 0x1f, privateData: pd(privateData) });
const drep = (c: CmConn, privateData?: Buffer): CmMessageOf<'DREP'> =>
  ({ ...blankCm('DREP'), localCommId: c.localId, remoteCommId: c.remoteId, privateData: pd(privateData) });

function tooLong(b: Buffer | undefined, max: number) {
  return b !== undefined && b.length > max;
}

// ---- the handlers, by what they do ----

/** A REJ arrived for this id (cm_rej_handler). */
const onRej: Handler = (c, i) => {
  const { msg } = recvOf(i, 'REJ');
  const toTimewait = ['DREQ_SENT', 'REP_RCVD', 'MRA_REP_SENT', 'ESTABLISHED'].includes(c.state) || msg.reason === RejReason.STALE_CONN;
  return transition(c, toTimewait ? 'TIMEWAIT' : 'IDLE', {}, [deliver('REJ_RECEIVED', msg)]);
};

/** ib_send_cm_rej: back to IDLE before the REP went out, into TIMEWAIT after (cm_enter_timewait). */
const sendRej: Handler = (c, i) => {
  const r = callOf(i, 'send_rej');
  if (tooLong(r.privateData, 148) || tooLong(r.ari, 72)) return refuse(c);
  const msg = formatRej(c, r.reason, r.ari, r.privateData);
  const to = c.state === 'REP_SENT' || c.state === 'MRA_REP_RCVD' ? 'TIMEWAIT' : 'IDLE';
  return transition(c, to, {}, [{ type: 'send', msg, tid: c.tid }]);
};

/** The retry timer fired: resend the outstanding message, or give up as cm_process_send_error does. */
const onRetryTimeout: Handler = (c) => {
  if (!c.retryTimer || !c.outstanding) return drop(c);
  if (c.retries < c.maxRetries) {
    return {
      conn: { ...c, retries: c.retries + 1 },
      actions: [{ type: 'send', msg: c.outstanding, tid: c.tid, retry: true }, { type: 'timer_start', timer: 'retry', ms: c.timeoutMs }],
    };
  }
  // the timer that just fired was the last one: nothing left to stop
  const fired: CmConn = { ...c, retryTimer: false, outstanding: undefined, retries: 0 };
  switch (c.state) {
    case 'REQ_SENT': case 'MRA_REQ_RCVD': return transition(fired, 'IDLE', {}, [deliver('REQ_ERROR')]);
    case 'REP_SENT': case 'MRA_REP_RCVD': return transition(fired, 'IDLE', {}, [deliver('REP_ERROR')]);
    case 'DREQ_SENT': return transition(fired, 'TIMEWAIT', {}, [deliver('DREQ_ERROR')]);
    default: return transition(fired, 'IDLE', {}, [deliver('SIDR_REQ_ERROR')]);
  }
};

/**
 * An MRA for our REQ or REP: that message waits longer (service timeout + path timeout), its
 * resends too, as ib_modify_mad does to the one MAD; the response timeout stays (cm_mra_handler
 * leaves cm_id_priv->timeout_ms alone), so a later DREQ waits the usual time.
 */
const onMra = (expect: number, to: CmStateName): Handler => (c, i) => {
  const { msg } = recvOf(i, 'MRA');
  if (msg.messageMraed !== expect) return drop(c);
  const timeoutMs = cmConvertToMs(msg.serviceTimeout) + cmConvertToMs(c.avTimeout);
  return {
    ...transition(c, to, { timeoutMs }, [{ type: 'timer_stop', timer: 'retry' }, { type: 'timer_start', timer: 'retry', ms: timeoutMs }, deliver('MRA_RECEIVED', msg)]),
  };
};

/** A DREQ naming our QP (cm_dreq_handler); one naming another QP is dropped. */
const onDreq: Handler = (c, i) => {
  const { msg, tid } = recvOf(i, 'DREQ');
  if (msg.remoteQpnEecn !== c.localQpn) return drop(c);
  return transition(c, 'DREQ_RCVD', { tid }, [deliver('DREQ_RECEIVED', msg)]);
};

const toEstablished = (event: CmEventName): Handler => (c, i) =>
  transition(c, 'ESTABLISHED', {}, [deliver(event, i.type === 'recv' ? i.msg : undefined)]);

const onDrep: Handler = (c, i) => transition(c, 'TIMEWAIT', {}, [deliver('DREP_RECEIVED', recvOf(i, 'DREP').msg)]);

const destroyTo = (to: CmStateName, send?: (c: CmConn) => CmMessage | CmMessage[]): Handler => (c) => {
  const d = { ...c, destroyed: true };
  const msgs = send ? [send(c)].flat() : [];
  return transition(d, to, {}, msgs.map((msg) => ({ type: 'send' as const, msg, tid: c.tid })));
};

/**
 * The REJs a passive side sends when its id goes after its REP (REP_SENT, MRA_REP_RCVD):
 * cm_format_rej's (message OTHER, our comm id), which a peer that has our REP matches, and the
 * same as a REQ's rejection (message REQ), which a peer still in REQ_SENT matches (it never
 * saw the REP, so it does not know our comm id: cm_acquire_rejected_id looks a REQ's REJ up by
 * its own id alone). Linux sends only the first: its kernel CM outlives the process and
 * rejects the peer's next REQ resend; a softrdma process that exits takes its CM with it, and
 * without the second REJ a peer whose copy of the REP was lost would wait out all its REQ
 * resends (~98 s with Linux's timing) before UNREACHABLE.
 */
const rejAfterRep = (c: CmConn): CmMessage[] => {
  const rej = formatRej(c, RejReason.CONSUMER_DEFINED, undefined, undefined);
  return [rej, { ...rej, messageRejected: CmMsgResponse.REQ, localCommId: 0 }];
};

/** A REP for our REQ (cm_rep_handler): learn the peer, stop waiting. */
const onRep: Handler = (c, i) => {
  const { msg } = recvOf(i, 'REP');
  return transition(c, 'REP_RCVD', {
    remoteId: msg.localCommId, remoteCaGuid: msg.localCaGuid, remoteQpn: msg.localQpn,
    avTimeout: cmAckTimeout(msg.targetAckDelay, Math.max(c.avTimeout - 1, 0)),
  }, [deliver('REP_RECEIVED', msg)]);
};

const sendRep: Handler = (c, i) => {
  const { rep } = callOf(i, 'send_rep');
  if (tooLong(rep.privateData, 196)) return refuse(c);
  const msg: CmMessageOf<'REP'> = { kind: 'REP', ...rep, localCommId: c.localId, remoteCommId: c.remoteId };
  return sendAndWait(c, 'REP_SENT', msg, c.tid, { localQpn: rep.localQpn });
};

const sendMra = (messageMraed: number, to: CmStateName): Handler => (c, i) => {
  const m = callOf(i, 'send_mra');
  if (tooLong(m.privateData, 222)) return refuse(c);
  const msg = mra(c, messageMraed, m.serviceTimeout, m.privateData);
  return transition(c, to, { lastMra: msg }, m.delay ? [] : [{ type: 'send', msg, tid: c.tid }]);
};

const resendMra: Handler = (c) => (c.lastMra ? stay(c, [{ type: 'send', msg: c.lastMra, tid: c.tid }]) : drop(c, 'duplicate'));

const sendRtu: Handler = (c, i) => {
  const { privateData } = callOf(i, 'send_rtu');
  if (tooLong(privateData, 224)) return refuse(c);
  const msg: CmMessageOf<'RTU'> = { ...blankCm('RTU'), localCommId: c.localId, remoteCommId: c.remoteId, privateData: pd(privateData) };
  return transition(c, 'ESTABLISHED', { lastRtu: msg }, [{ type: 'send', msg, tid: c.tid }]);
};

const sendDreq: Handler = (c, i) => {
  const { privateData } = callOf(i, 'send_dreq');
  if (tooLong(privateData, 220)) return refuse(c);
  const msg: CmMessageOf<'DREQ'> = { ...blankCm('DREQ'), localCommId: c.localId, remoteCommId: c.remoteId, remoteQpnEecn: c.remoteQpn, privateData: pd(privateData) };
  return sendAndWait(c, 'DREQ_SENT', msg, formTid(c), {});
};

const sendDrep: Handler = (c, i) => {
  const { privateData } = callOf(i, 'send_drep');
  if (tooLong(privateData, 224)) return refuse(c);
  const msg = drep(c, privateData);
  return transition(c, 'TIMEWAIT', { lastDrep: msg }, [{ type: 'send', msg, tid: c.tid }]);
};

const dupDrop: Handler = (c) => drop(c, 'duplicate');

/** A REP that repeats the one we already took: answer with what we answered (cm_dup_rep_handler). */
const dupRep = (resend: (c: CmConn) => CmMessage | undefined): Handler => (c, i) => {
  const { msg } = recvOf(i, 'REP');
  if (msg.localCommId !== c.remoteId) return drop(c);
  const m = resend(c);
  return m ? { conn: c, actions: [{ type: 'send', msg: m, tid: c.tid }], dropped: 'duplicate' } : drop(c, 'duplicate');
};

const TIMERS_STALE: Partial<Record<CmInputKey, Handler>> = { retry_timeout: onRetryTimeout, timewait_timeout: (c) => drop(c) };

/**
 * The machine: state → input → handler. Missing cells: local calls → EINVAL, anything else → dropped.
 * Each cell cites the cm.c function whose behaviour it reproduces.
 */
export const CM_TABLE: { readonly [S in CmStateName]: Partial<Record<CmInputKey, Handler>> } = {
  IDLE: {
    listen: (c, i) => transition(c, 'LISTEN', { serviceId: callOf(i, 'listen').serviceId }, []), // ib_cm_listen
    send_req: (c, i) => { // ib_send_cm_req
      const { req, packetLifeTime } = callOf(i, 'send_req');
      if (tooLong(req.privateData, 92)) return refuse(c);
      const msg: CmMessageOf<'REQ'> = { kind: 'REQ', ...req, localCommId: c.localId };
      return sendAndWait(c, 'REQ_SENT', msg, formTid(c), {
        serviceId: req.serviceId, localQpn: req.localQpn, maxRetries: req.maxCmRetries, avTimeout: packetLifeTime + 1,
        responseTimeoutMs: cmConvertToMs(packetLifeTime) * 2 + cmConvertToMs(req.remoteCmResponseTimeout),
      });
    },
    send_sidr_req: (c, i) => { // ib_send_cm_sidr_req
      const { req, timeoutMs, maxRetries } = callOf(i, 'send_sidr_req');
      if (tooLong(req.privateData, 216)) return refuse(c);
      const msg: CmMessageOf<'SIDR_REQ'> = { kind: 'SIDR_REQ', ...req, requestId: c.localId };
      return sendAndWait(c, 'SIDR_REQ_SENT', msg, formTid(c), { serviceId: req.serviceId, responseTimeoutMs: timeoutMs, maxRetries });
    },
    destroy: destroyTo('IDLE'),
    ...TIMERS_STALE,
  },
  LISTEN: { destroy: destroyTo('IDLE') },
  REQ_SENT: {
    'recv:REP': onRep,
    'recv:MRA': onMra(CmMsgResponse.REQ, 'MRA_REQ_RCVD'),
    'recv:REJ': onRej,
    send_rej: sendRej,
    // cm_destroy_id: REJ(TIMEOUT) carrying our CA GUID, so the peer can find its half in time-wait
    destroy: destroyTo('IDLE', (c) => formatRej(c, RejReason.TIMEOUT, guidBytes(c.localCaGuid), undefined)),
    ...TIMERS_STALE,
  },
  MRA_REQ_RCVD: {
    'recv:REP': onRep,
    'recv:MRA': dupDrop,
    'recv:REJ': onRej,
    send_rej: sendRej,
    destroy: destroyTo('IDLE', (c) => formatRej(c, RejReason.TIMEOUT, guidBytes(c.localCaGuid), undefined)),
    ...TIMERS_STALE,
  },
  REQ_RCVD: {
    send_rep: sendRep,
    send_mra: sendMra(CmMsgResponse.REQ, 'MRA_REQ_SENT'),
    send_rej: sendRej,
    'recv:REQ': dupDrop, // cm_dup_req_handler: the consumer has not answered yet
    'recv:REJ': onRej,
    // cm_destroy_id: REJ(CONSUMER_DEFINED); with -ENOMEM cm_reset_to_idle, "Do not reject to allow future retries"
    destroy: (c, i) => (callOf(i, 'destroy').noMemory ? destroyTo('IDLE')(c, i)
      : destroyTo('IDLE', (x) => formatRej(x, RejReason.CONSUMER_DEFINED, undefined, undefined))(c, i)),
  },
  MRA_REQ_SENT: {
    send_rep: sendRep,
    send_rej: sendRej,
    'recv:REQ': resendMra, // cm_dup_req_handler
    'recv:REJ': onRej,
    destroy: destroyTo('IDLE', (c) => formatRej(c, RejReason.CONSUMER_DEFINED, undefined, undefined)),
  },
  REP_SENT: {
    'recv:RTU': toEstablished('RTU_RECEIVED'),
    establish: toEstablished('USER_ESTABLISHED'),
    'recv:MRA': onMra(CmMsgResponse.REP, 'MRA_REP_RCVD'),
    'recv:REJ': onRej,
    'recv:DREQ': onDreq,
    'recv:REQ': dupDrop, // cm_dup_req_handler: the REP is being retransmitted already
    send_rej: sendRej,
    destroy: destroyTo('TIMEWAIT', rejAfterRep),
    ...TIMERS_STALE,
  },
  MRA_REP_RCVD: {
    'recv:RTU': toEstablished('RTU_RECEIVED'),
    establish: toEstablished('USER_ESTABLISHED'),
    'recv:MRA': dupDrop,
    'recv:REJ': onRej,
    'recv:DREQ': onDreq,
    'recv:REQ': dupDrop,
    send_rej: sendRej,
    destroy: destroyTo('TIMEWAIT', rejAfterRep),
    ...TIMERS_STALE,
  },
  REP_RCVD: {
    send_rtu: sendRtu,
    send_mra: sendMra(CmMsgResponse.REP, 'MRA_REP_SENT'),
    send_rej: sendRej,
    'recv:REP': dupRep(() => undefined),
    'recv:REJ': onRej,
    destroy: destroyTo('IDLE', (c) => formatRej(c, RejReason.CONSUMER_DEFINED, undefined, undefined)),
  },
  MRA_REP_SENT: {
    send_rtu: sendRtu,
    send_rej: sendRej,
    'recv:REP': dupRep((c) => c.lastMra),
    'recv:REJ': onRej,
    destroy: destroyTo('IDLE', (c) => formatRej(c, RejReason.CONSUMER_DEFINED, undefined, undefined)),
  },
  ESTABLISHED: {
    send_dreq: sendDreq,
    'recv:DREQ': onDreq,
    'recv:REJ': onRej,
    'recv:REP': dupRep((c) => c.lastRtu),
    'recv:RTU': dupDrop,
    establish: (c) => refuse(c, 'EISCONN'),
    // cm_destroy_id: send a DREQ, then (now in DREQ_SENT) stop waiting and enter time-wait
    destroy: (c) => {
      const d = { ...c, destroyed: true };
      const msg: CmMessageOf<'DREQ'> = { ...blankCm('DREQ'), localCommId: c.localId, remoteCommId: c.remoteId, remoteQpnEecn: c.remoteQpn };
      return transition(d, 'TIMEWAIT', { tid: formTid(c) }, [{ type: 'send', msg, tid: formTid(c) }]);
    },
  },
  DREQ_SENT: {
    'recv:DREP': onDrep,
    'recv:DREQ': onDreq, // both sides disconnected at once
    'recv:REJ': onRej,
    destroy: destroyTo('TIMEWAIT'),
    ...TIMERS_STALE,
  },
  DREQ_RCVD: {
    send_drep: sendDrep,
    'recv:DREQ': dupDrop,
    'recv:DREP': onDrep,
    destroy: destroyTo('TIMEWAIT', (c) => drep(c)),
  },
  TIMEWAIT: {
    // cm_dreq_handler: the peer missed our DREP; send it again (a DREQ naming another QP is
    // dropped), with the id's own TID as cm_format_drep writes it (cm_id_priv->tid: the first
    // DREQ's, whose resends carry the same), not the one this DREQ carries
    'recv:DREQ': (c, i) => {
      const { msg } = recvOf(i, 'DREQ');
      if (msg.remoteQpnEecn !== c.localQpn) return drop(c);
      return { conn: c, actions: [{ type: 'send', msg: c.lastDrep ?? drep(c), tid: c.tid }], dropped: 'duplicate' };
    },
    // cm_dup_req_handler: a REQ for a connection in time-wait is stale
    'recv:REQ': (c) => ({ conn: c, actions: [{ type: 'send', msg: formatRej(c, RejReason.STALE_CONN, undefined, undefined), tid: c.tid }], dropped: 'duplicate' }),
    timewait_timeout: (c) => (c.timewaitTimer ? transition({ ...c, timewaitTimer: false }, 'IDLE', {}, [deliver('TIMEWAIT_EXIT')]) : drop(c)),
    destroy: (c) => stay({ ...c, destroyed: true }),
    retry_timeout: (c) => drop(c),
  },
  SIDR_REQ_SENT: {
    'recv:SIDR_REP': (c, i) => transition(c, 'IDLE', {}, [deliver('SIDR_REP_RECEIVED', recvOf(i, 'SIDR_REP').msg)]),
    destroy: destroyTo('IDLE'),
    ...TIMERS_STALE,
  },
  SIDR_REQ_RCVD: {
    send_sidr_rep: (c, i) => {
      const { rep } = callOf(i, 'send_sidr_rep');
      if (tooLong(rep.privateData, 136) || tooLong(rep.additionalInfo, 72)) return refuse(c);
      const msg: CmMessageOf<'SIDR_REP'> = { kind: 'SIDR_REP', ...rep, requestId: c.remoteId, serviceId: c.serviceId };
      return transition(c, 'IDLE', {}, [{ type: 'send', msg, tid: c.tid }]);
    },
    destroy: destroyTo('IDLE', (c) => ({
      ...blankCm('SIDR_REP'), requestId: c.remoteId, serviceId: c.serviceId, status: SidrStatus.REJECT,
    })),
  },
};

const LOCAL_CALLS: ReadonlySet<string> = new Set(['listen', 'send_req', 'send_rep', 'send_rtu', 'send_mra', 'send_rej', 'send_dreq',
  'send_drep', 'establish', 'destroy', 'send_sidr_req', 'send_sidr_rep']);

/** One step of the machine. Never throws for any (state, input) pair; a refused call leaves the connection as it was. */
export function cmStep(c: CmConn, input: CmInput): CmStep {
  const h = CM_TABLE[c.state][inputKey(input)];
  if (h) return h(c, input);
  return LOCAL_CALLS.has(input.type) ? refuse(c) : drop(c);
}

/** Which kinds of message a handler may send when leaving `from` (for checks and docs). */
export const SENDS_ALLOWED: { readonly [S in CmStateName]: readonly CmKind[] } = {
  IDLE: ['REQ', 'SIDR_REQ'],
  LISTEN: [],
  REQ_SENT: ['REQ', 'REJ'],
  MRA_REQ_RCVD: ['REQ', 'REJ'],
  REQ_RCVD: ['REP', 'MRA', 'REJ'],
  MRA_REQ_SENT: ['REP', 'MRA', 'REJ'],
  REP_SENT: ['REP', 'REJ'],
  MRA_REP_RCVD: ['REP', 'REJ'],
  REP_RCVD: ['RTU', 'MRA', 'REJ'],
  MRA_REP_SENT: ['RTU', 'MRA', 'REJ'],
  ESTABLISHED: ['DREQ', 'RTU'],
  DREQ_SENT: ['DREQ'],
  DREQ_RCVD: ['DREP'],
  TIMEWAIT: ['DREP', 'REJ'],
  SIDR_REQ_SENT: ['SIDR_REQ'],
  SIDR_REQ_RCVD: ['SIDR_REP'],
};

