// The CM agent of one device (Linux cm.c's per-port agent and its work handlers): CmTable and
// the per-connection machine (cm-table.ts, cm-state.ts) on a real QP1 and real clocks. It
// registers with the device's MAD layer for the CM class (version 2, method SEND, as cm.c
// does), decodes what arrives and routes it through the table, and carries out each step's
// actions: `send` encodes the MAD and posts it to the connection's peer (or, for an answer to
// a message that matched nothing, to that message's sender), `timer_*` arm and clear
// setTimeout timers that feed `retry_timeout` / `timewait_timeout` back in, `deliver` is an
// event. The rdma_cm layer (ids, addresses, QP transitions) sits on this later.

import { EventEmitter } from 'node:events';
import { SoftrdmaError } from '../abi/errors.js';
import type { Device, GsiSource } from '../verbs/api.js';
import { CmTable, type CmOutcome, type CmRouted } from './cm-table.js';
import type { CmAction, CmConn, CmEventName, CmInput, CmStateName, TimerName } from './cm-state.js';
import {
  CM_CLASS_VERSION, CM_KINDS, decodeCmMad, encodeCmMad, rejReasonName, type CmKind, type CmMessage, type CmMessageOf, type CmReq, type CmSidrReq,
} from './wire/cm-messages.js';
import { MadMethod, MgmtClass } from './wire/mad.js';
import { MadLayer, type MadAgent, type MadRecv } from './mad-layer.js';
import { tracer } from '../sys/trace.js';
import { armCmExit, cmExitCounters, exitGuard } from './exit.js';

const traceEvent = tracer('cm', 'event');
const traceDrop = tracer('cm', 'drop');

/** One event for the consumer: an ib_cm_event_type by name, with the message it is about. */
export interface CmAgentEvent {
  localId: number;
  event: CmEventName;
  msg?: CmMessage;
  /** REQ_RECEIVED / SIDR_REQ_RECEIVED: the listener the new id came in on. */
  listenId?: number;
  /** Who sent the message (events caused by a received message). */
  source?: GsiSource;
}

/**
 * Run a call into the application (an event listener). A listener that throws is the
 * consumer's bug: it surfaces as an uncaught exception, as it would from any emitter, but on
 * the next tick, after the caller's state, timers and sends are done and without hiding the
 * other events of the step or the other ids (the MAD layer below would otherwise swallow it).
 */
export function guarded(f: () => void): void {
  try {
    f();
  } catch (err) {
    process.nextTick(() => { throw err; });
  }
}

/** The process's open agents: at exit, each destroys what is left (exit.ts). */
const openAgents = new Set<CmAgent>();
const destroyAllAtExit = (): void => {
  for (const a of [...openAgents]) exitGuard(() => a.destroyAllAtExit());
};

const perKind = () => Object.fromEntries(CM_KINDS.map((k) => [k, 0])) as Record<CmKind, number>;

/** Linux's per-port CM counters (cm_tx_msgs, cm_tx_retries, cm_rx_msgs, cm_rx_duplicates, by message), and the drops. */
export function newCmCounters() {
  return {
    tx_msgs: perKind(),
    tx_retries: perKind(),
    rx_msgs: perKind(),
    rx_duplicates: perKind(),
    /** CM-class MADs that do not decode as a CM message this CM handles (decodeCmMad's refusals). */
    rx_malformed: 0,
    /** Messages for no connection here (answered where cm.c answers: DREP for a DREQ, REJ for a REQ nobody listens for). */
    rx_unexpected: 0,
    rx_no_listener: 0,
    rx_stale: 0,
  };
}
export type CmCounters = ReturnType<typeof newCmCounters>;

export interface CmAgentOptions {
  /** The CA GUID in our messages; the device's node GUID by default (as Linux). */
  localCaGuid?: bigint;
  /** Source of local comm ids (tests); default crypto. */
  randomU32?: () => number;
}

export interface CmConnectOptions {
  /** The remote port's GID (where the REQ goes: its QP1). */
  dgid: Uint8Array;
  /**
   * Every REQ field but the local comm id (cma_connect_ib fills them for RDMA CM); the local
   * CA GUID is ours whatever it says (cm_format_req takes it from the device).
   */
  req: Omit<CmReq, 'localCommId'>;
  /** The primary path's packet life time exponent (RoCE: CMA_IBOE_PACKET_LIFETIME 18). */
  packetLifeTime: number;
}

/**
 * Events: 'event' (CmAgentEvent) for every ib_cm event; and, for convenience, 'established'
 * (localId) when a connection reaches ESTABLISHED by any way (RTU in, RTU sent, COMM_EST),
 * 'rejected' ({ localId, reason, reasonName, msg }), 'timewait-exit' (localId).
 */
/** Time-waits of one length, in the order they began (CmAgent.startTimewait). */
interface TimewaitQueue { ids: number[]; ends: number[]; head: number; timer: NodeJS.Timeout | undefined; expiring: boolean }

export class CmAgent extends EventEmitter {
  readonly table: CmTable;
  readonly counters = newCmCounters();
  /** Our GID on the device (the REQ's primary local GID). */
  readonly gid: Buffer;
  private readonly mad: MadAgent;
  /** Where each connection's messages go: the peer's GID. */
  private readonly peers = new Map<number, Buffer>();
  /** Running retry timers by comm id (numbers as keys: no string per start and stop). */
  private readonly retryTimers = new Map<number, NodeJS.Timeout>();
  /**
   * Time-waits: when each comm id's ends, and per length of time-wait (it follows the path's
   * packet life: one or two lengths in practice) a queue in the order they began, which is the
   * order they end, with one timer for the first. A timer per connection (a Timeout, a closure
   * and its context, held for the two seconds of Linux's time-wait) was a large part of what
   * each connection left for the collector to copy when thousands come and go a second.
   */
  private readonly timewaitEnds = new Map<number, number>();
  private readonly timewaitQueues = new Map<number, TimewaitQueue>();
  /** Each connection's state after its last step, to see it reach ESTABLISHED. */
  private readonly lastState = new Map<number, CmStateName>();
  private closed = false;

  constructor(readonly device: Device, opts: CmAgentOptions = {}) {
    super();
    const layer = MadLayer.of(device);
    this.gid = layer.gid;
    this.mad = layer.register({
      mgmtClass: MgmtClass.CM, classVersion: CM_CLASS_VERSION, methods: [MadMethod.SEND], onMad: (r) => this.receive(r),
    });
    this.table = new CmTable({
      localCaGuid: opts.localCaGuid ?? device.nodeGuid, hiTid: this.mad.hiTid, ...(opts.randomU32 ? { randomU32: opts.randomU32 } : {}),
    });
    openAgents.add(this);
    armCmExit('agents', destroyAllAtExit);
  }

  /** The state of a connection (undefined once the table forgot it). */
  state(localId: number): CmStateName | undefined {
    return this.table.get(localId)?.state;
  }

  conn(localId: number): CmConn | undefined {
    return this.table.get(localId);
  }

  /** ib_cm_listen on a new id; EBUSY if another listener's service id and mask overlap these. */
  listen(serviceId: bigint, mask?: bigint): number {
    this.checkOpen();
    const c = this.table.create();
    const out = this.table.listen(c.localId, serviceId, mask);
    if (out.error) {
      this.table.call(c.localId, { type: 'destroy' });
      throw new SoftrdmaError(out.error, `cm: service id 0x${serviceId.toString(16)}${mask === undefined ? '' : ` mask 0x${mask.toString(16)}`} has a listener already`);
    }
    return c.localId;
  }

  /** ib_send_cm_req on a new id: the REQ goes to `dgid`'s QP1; returns the local comm id. */
  connect(o: CmConnectOptions): number {
    this.checkOpen();
    const c = this.table.create();
    this.peers.set(c.localId, Buffer.from(o.dgid));
    try {
      this.call(c.localId, { type: 'send_req', req: { ...o.req, localCaGuid: this.table.localCaGuid }, packetLifeTime: o.packetLifeTime });
    } catch (err) {
      this.table.call(c.localId, { type: 'destroy' });
      this.forget(c.localId);
      throw err;
    }
    return c.localId;
  }

  /** ib_send_cm_sidr_req on a new id: the SIDR_REQ goes to `dgid`'s QP1; returns the local comm id (the request id). */
  sidrRequest(o: { dgid: Uint8Array; req: Omit<CmSidrReq, 'requestId'>; timeoutMs: number; maxRetries: number }): number {
    this.checkOpen();
    const c = this.table.create();
    this.peers.set(c.localId, Buffer.from(o.dgid));
    try {
      this.call(c.localId, { type: 'send_sidr_req', req: o.req, timeoutMs: o.timeoutMs, maxRetries: o.maxRetries });
    } catch (err) {
      this.table.call(c.localId, { type: 'destroy' });
      this.forget(c.localId);
      throw err;
    }
    return c.localId;
  }

  /**
   * Any local call on a connection (send_rep, send_rtu, send_mra, send_rej, send_dreq,
   * send_drep, establish, destroy, SIDR calls): the machine's refusals are thrown (EINVAL,
   * EISCONN), as cm.c returns them. A REP carries our CA GUID whatever it says (cm_format_rep).
   */
  call(localId: number, input: Exclude<CmInput, { type: 'recv' | 'retry_timeout' | 'timewait_timeout' | 'listen' }>): void {
    this.checkOpen();
    if (input.type === 'send_rep') input = { ...input, rep: { ...input.rep, localCaGuid: this.table.localCaGuid } };
    const out = this.table.call(localId, input);
    if (out.error) throw new SoftrdmaError(out.error, `cm: ${input.type} refused on id 0x${(localId >>> 0).toString(16)} in ${this.state(localId) ?? 'no such id'}`);
    this.run(out, undefined);
  }

  /** Drop every timer and leave QP1 (the MAD layer closes it with its last agent). No messages are sent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    openAgents.delete(this);
    for (const t of this.retryTimers.values()) clearTimeout(t);
    this.retryTimers.clear();
    for (const q of this.timewaitQueues.values()) if (q.timer) clearTimeout(q.timer);
    this.timewaitQueues.clear();
    this.timewaitEnds.clear();
    this.mad.unregister();
  }

  /**
   * @internal At process exit (exit.ts), after the rdma_cm ids: cm_destroy_id for every comm id
   * nobody destroyed (what it sends: REJ, DREQ, DREP, SIDR_REP(REJECT)), then the MADs to the
   * socket now, synchronously.
   */
  destroyAllAtExit(): void {
    if (this.closed) return;
    for (const c of [...this.table.connections()]) {
      if (c.destroyed) continue;
      exitGuard(() => {
        this.call(c.localId, { type: 'destroy' });
        cmExitCounters.connections++;
      });
    }
    this.mad.flush();
  }

  private checkOpen(): void {
    if (this.closed) throw new SoftrdmaError('EINVAL', 'cm: the agent is closed');
  }

  private receive(r: MadRecv): void {
    if (this.closed) return;
    const d = decodeCmMad(r.buf);
    if (!d.ok) {
      this.counters.rx_malformed++;
      if (traceDrop.active) traceDrop({ why: 'malformed', error: d.error, from: r.src.address });
      return;
    }
    const { msg } = d.value;
    this.counters.rx_msgs[msg.kind]++;
    const routed: CmRouted = this.table.receive(d.value, r.src.address);
    if (routed.dropped === 'duplicate') this.counters.rx_duplicates[msg.kind]++;
    else if (routed.dropped === 'unexpected') this.counters.rx_unexpected++;
    else if (routed.dropped === 'no_listener') this.counters.rx_no_listener++;
    else if (routed.dropped === 'stale') this.counters.rx_stale++;
    if (routed.dropped && traceDrop.active) traceDrop({ why: routed.dropped, kind: msg.kind, from: r.src.address });
    for (const o of routed.outcomes) {
      // A new passive connection (or SIDR) answers the sender.
      if (o.localId !== undefined && !this.peers.has(o.localId)) this.peers.set(o.localId, Buffer.from(r.src.sgid));
      this.run(o, r.src);
    }
  }

  /** Carry out one outcome's actions in order; events go out after the sends and timers. */
  private run(o: CmOutcome, src: GsiSource | undefined): void {
    const events: CmAgentEvent[] = [];
    for (const a of o.actions) this.act(o, a, src, events);
    const id = o.localId;
    const conn = id === undefined ? undefined : this.table.get(id);
    let reached = false;
    if (id !== undefined) {
      if (!conn) this.forget(id);
      else {
        reached = conn.state === 'ESTABLISHED' && this.lastState.get(id) !== 'ESTABLISHED';
        this.lastState.set(id, conn.state);
      }
    }
    for (const e of events) guarded(() => this.emitEvent(e));
    if (reached && !conn!.destroyed) guarded(() => this.emit('established', id));
  }

  private act(o: CmOutcome, a: CmAction, src: GsiSource | undefined, events: CmAgentEvent[]): void {
    const id = o.localId;
    switch (a.type) {
      case 'send': {
        // Answers to what matched no connection go back to the sender, like cm_issue_rej/drep.
        const dgid = id === undefined ? src?.sgid : this.peers.get(id) ?? src?.sgid;
        if (!dgid) return;
        this.counters.tx_msgs[a.msg.kind]++;
        if (a.retry) this.counters.tx_retries[a.msg.kind]++;
        this.mad.send(encodeCmMad(a.msg, a.tid), { dgid });
        return;
      }
      case 'timer_start': {
        if (id === undefined) return;
        this.stopTimer(id, a.timer);
        if (a.timer === 'timewait') return this.startTimewait(id, a.ms);
        const t = setTimeout(() => this.fire(id, a.timer), a.ms);
        // Time-wait and retries alone do not hold the process open (the device's socket decides that).
        t.unref();
        this.retryTimers.set(id, t);
        return;
      }
      case 'timer_stop':
        if (id !== undefined) this.stopTimer(id, a.timer);
        return;
      case 'deliver': {
        if (id === undefined) return;
        const e: CmAgentEvent = { localId: id, event: a.event };
        if (a.msg) e.msg = a.msg;
        if (o.listenId !== undefined) e.listenId = o.listenId;
        if (src) e.source = src;
        events.push(e);
        return;
      }
    }
  }

  private fire(id: number, timer: TimerName): void {
    if (timer === 'retry') this.retryTimers.delete(id);
    else this.timewaitEnds.delete(id);
    if (this.closed) return;
    const out = this.table.call(id, { type: timer === 'retry' ? 'retry_timeout' : 'timewait_timeout' });
    if (!out.error) this.run(out, undefined);
  }

  private startTimewait(id: number, ms: number): void {
    const end = performance.now() + ms;
    this.timewaitEnds.set(id, end);
    let q = this.timewaitQueues.get(ms);
    if (!q) this.timewaitQueues.set(ms, q = { ids: [], ends: [], head: 0, timer: undefined, expiring: false });
    q.ids.push(id);
    q.ends.push(end);
    if (!q.timer && !q.expiring) this.armTimewait(q);
  }

  private armTimewait(q: TimewaitQueue): void {
    q.timer = setTimeout(() => this.expireTimewaits(q), Math.max(1, Math.ceil(q.ends[q.head]! - performance.now())));
    q.timer.unref();
  }

  /** The time-waits of a queue that have ended, in order; a stopped or restarted one is skipped. */
  private expireTimewaits(q: TimewaitQueue): void {
    q.timer = undefined;
    q.expiring = true;
    // Time-waits that begin during this pass (an event handler's) wait for a later one, as a
    // timer of their own would.
    const stop = q.ids.length;
    try {
      // A time-wait lasts at least its length. Timers run on the loop's clock, which may lag
      // performance.now() by up to a millisecond, so a timer can fire just before its first
      // entry's end: nothing ends then, and the queue is armed again for the rest.
      while (q.head < stop && q.ends[q.head]! <= performance.now()) {
        const id = q.ids[q.head]!, end = q.ends[q.head]!;
        q.head++;
        if (this.timewaitEnds.get(id) !== end) continue;
        this.fire(id, 'timewait');
      }
    } finally {
      q.expiring = false;
      if (q.head === q.ids.length) {
        q.ids.length = 0;
        q.ends.length = 0;
        q.head = 0;
      } else if (q.head >= 1024) {
        q.ids.splice(0, q.head);
        q.ends.splice(0, q.head);
        q.head = 0;
      }
      if (!this.closed && q.head < q.ids.length) this.armTimewait(q);
    }
  }

  private stopTimer(id: number, timer: TimerName): void {
    if (timer === 'timewait') {
      // Its queue entry stays, and is skipped when its time comes.
      this.timewaitEnds.delete(id);
      return;
    }
    const t = this.retryTimers.get(id);
    if (t) { clearTimeout(t); this.retryTimers.delete(id); }
  }

  private forget(id: number): void {
    this.peers.delete(id);
    this.lastState.delete(id);
    this.stopTimer(id, 'retry');
    this.stopTimer(id, 'timewait');
  }

  private emitEvent(e: CmAgentEvent): void {
    if (traceEvent.active) traceEvent({ localId: e.localId, event: e.event, kind: e.msg?.kind });
    this.emit('event', e);
    if (e.event === 'REJ_RECEIVED' && e.msg?.kind === 'REJ') {
      const rej = e.msg as CmMessageOf<'REJ'>;
      this.emit('rejected', { localId: e.localId, reason: rej.reason, reasonName: rejReasonName(rej.reason), msg: rej });
    } else if (e.event === 'TIMEWAIT_EXIT') {
      this.emit('timewait-exit', e.localId);
    }
  }
}
