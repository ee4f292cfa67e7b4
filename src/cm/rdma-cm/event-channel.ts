// struct rdma_event_channel in Node's idiom: an EventEmitter ('event', and each event's own
// name) that is also an async iterator, plus next() to wait for one event with a bound.
// Every event is emitted to the listeners ('event' and its own name), and a waiting next()
// that wants it takes it too: a program may listen for the events that end a connection and
// still wait for one of them with next() (rping's client disconnects, waits for DISCONNECTED
// and, as rping's event thread does, reports it from its listener). An event that no next()
// took and no listener heard waits in the channel (as librdmacm's queue) for next() or the
// iterator, so a channel used through listeners alone does not grow. While an async iterator
// is running, events it has not taken yet are always queued, listeners or not.
//
// The channel knows its ids (ucma's file and its contexts): a destroyed id's queued events go
// with it (a queued CONNECT_REQUEST's new id is destroyed, which rejects the peer), a next()
// waiting for that id fails with EBADF, and close() destroys every id still on the channel, as
// closing the ucma file does (ucma_close, ucma_cleanup_ctx_events).
//
// An event may come with a call for when the application has it (a CONNECT_REQUEST gives its
// listener's backlog slot back, as ucma_get_event does): when a next() or a listener gets it,
// or, if queued, when next() or the iterator takes it out (or it goes with its id).

import { EventEmitter } from 'node:events';
import { SoftrdmaError } from '../../abi/errors.js';
import { RDMA_CM_EVENT, type RdmaCmEvent, type RdmaCmEventType } from './events.js';

interface Waiter {
  id: unknown;
  match: (e: RdmaCmEvent) => boolean;
  resolve: (e: RdmaCmEvent) => void;
  reject: (err: Error) => void;
  timer: NodeJS.Timeout | undefined;
}

/** The longest timer Node keeps (setTimeout fires at once for more): a longer wait has none. */
const MAX_TIMER_MS = 2 ** 31 - 1;

/** What the channel asks of the ids on it. */
export interface ChannelMember {
  destroyId(): void;
}

/**
 * Emits 'event' (RdmaCmEvent) and the event's type ('ESTABLISHED', ...). `for await (const e of
 * channel)` sees every event from the first iteration on; `next(type?, ms)` waits for one.
 */
/** An EventChannel's events, typed for its listeners: 'event' and each event's type, with the event. */
export type EventChannelEvents = { event: [e: RdmaCmEvent] } & { [K in RdmaCmEventType]: [e: RdmaCmEvent] };

export class EventChannel extends EventEmitter<EventChannelEvents> implements AsyncIterable<RdmaCmEvent> {
  private readonly queue: RdmaCmEvent[] = [];
  private readonly waiters = new Set<Waiter>();
  private readonly members = new Set<ChannelMember>();
  /** Queued events' calls for when the application takes them (deliver's `taken`). */
  private readonly onTaken = new Map<RdmaCmEvent, () => void>();
  private iterators = 0;
  private closed = false;

  /** @internal An id made on this channel (EBADF once the channel is closed). */
  adopt(id: ChannelMember): void {
    if (this.closed) throw new SoftrdmaError('EBADF', 'rdma_cm: the event channel is closed');
    this.members.add(id);
  }

  /**
   * @internal `id` is being destroyed: its queued events go (a queued CONNECT_REQUEST on a
   * destroyed listener takes its new id with it), and waiters for it fail with EBADF.
   */
  forget(id: ChannelMember): void {
    this.members.delete(id);
    const orphans: ChannelMember[] = [];
    for (let i = this.queue.length - 1; i >= 0; i--) {
      const e = this.queue[i]!;
      if (e.id === id || (e.event === 'CONNECT_REQUEST' && e.listenId === id)) {
        this.take(i);
        if (e.event === 'CONNECT_REQUEST' && e.id !== id) orphans.push(e.id as ChannelMember);
      }
    }
    for (const w of [...this.waiters]) {
      if (w.id !== id) continue;
      this.waiters.delete(w);
      if (w.timer) clearTimeout(w.timer);
      w.reject(new SoftrdmaError('EBADF', 'rdma_cm: the id was destroyed'));
    }
    for (const o of orphans) o.destroyId();
  }

  /**
   * @internal Deliver one event (the CM ids do this): to the first waiting next() that wants it
   * and to the listeners; queued only if neither took it (or an iterator runs). `took` is
   * called once the application has it (at once if a next() or a listener got it).
   */
  deliver(e: RdmaCmEvent, took?: () => void): void {
    if (this.closed) {
      // Nobody can take it: a new id would wait forever (ids are destroyed at close, so this
      // is only a race with that), and the peer is owed an answer.
      took?.();
      if (e.event === 'CONNECT_REQUEST') (e.id as ChannelMember).destroyId();
      return;
    }
    let taken = false;
    for (const w of this.waiters) {
      if (!w.match(e)) continue;
      this.waiters.delete(w);
      if (w.timer) clearTimeout(w.timer);
      w.resolve(e);
      taken = true;
      break;
    }
    const heard = this.listenerCount('event') + this.listenerCount(e.event) > 0;
    const queued = !taken && (!heard || this.iterators > 0);
    if (queued) this.queue.push(e);
    if (taken || heard) took?.();
    else if (took) this.onTaken.set(e, took);
    this.emit('event', e);
    this.emit(e.event, e);
  }

  /**
   * The next event (of one of `types`, and for `id` if given), within `timeoutMs` (ETIMEDOUT
   * otherwise). An event is for `id` when it is about `id` or, a CONNECT_REQUEST, arrived on
   * listener `id` (so next('CONNECT_REQUEST', ms, listener) is librdmacm's rdma_get_request).
   * Queued events from an iterator are looked at first. Infinity, or more than 2^31 - 1 ms
   * (about 24.8 days, the most a Node timer takes), means no timeout. An unknown event type or a
   * timeout that is not a number of 0 or more is EINVAL (a rejected promise, as every failure here).
   */
  next(types?: RdmaCmEventType | readonly RdmaCmEventType[], timeoutMs = 30_000, id?: unknown): Promise<RdmaCmEvent> {
    let want: Set<RdmaCmEventType> | undefined;
    try {
      want = eventTypes(types);
      checkWait(timeoutMs);
    } catch (err) {
      return Promise.reject(err as Error);
    }
    const match = (e: RdmaCmEvent) => (!want || want.has(e.event)) && (id === undefined || e.id === id || e.listenId === id);
    const i = this.queue.findIndex(match);
    if (i >= 0) return Promise.resolve(this.take(i));
    if (this.closed) return Promise.reject(new SoftrdmaError('EBADF', 'rdma_cm: the event channel is closed'));
    // An id destroyed (or never on this channel) gets no more events: fail now, not at the timeout.
    if (id !== undefined && !this.members.has(id as ChannelMember)) return Promise.reject(new SoftrdmaError('EBADF', 'rdma_cm: the id was destroyed or is not on this channel'));
    return new Promise((resolve, reject) => {
      const w: Waiter = { id, match, resolve, reject, timer: undefined };
      if (Number.isFinite(timeoutMs) && timeoutMs <= MAX_TIMER_MS) {
        w.timer = setTimeout(() => {
          this.waiters.delete(w);
          reject(new SoftrdmaError('ETIMEDOUT', `rdma_cm: no ${want ? [...want].join('/') : 'event'} within ${timeoutMs} ms`));
        }, timeoutMs);
      }
      this.waiters.add(w);
    });
  }

  /** Take queued event `i` out: the application has it now (its `took` call runs). */
  private take(i: number): RdmaCmEvent {
    const e = this.queue.splice(i, 1)[0]!;
    const took = this.onTaken.get(e);
    if (took) {
      this.onTaken.delete(e);
      took();
    }
    return e;
  }

  async *[Symbol.asyncIterator](): AsyncIterator<RdmaCmEvent> {
    this.iterators++;
    try {
      while (!this.closed) {
        const e = (this.queue.length > 0 ? this.take(0) : undefined) ?? await this.next(undefined, Infinity).catch(() => undefined);
        if (!e) return;
        yield e;
      }
    } finally {
      this.iterators--;
    }
  }

  /**
   * rdma_destroy_event_channel: every id still on the channel is destroyed (what that sends:
   * see destroyId), then waiters and iterators end (EBADF / done).
   */
  close(): void {
    if (this.closed) return;
    for (const id of [...this.members]) id.destroyId();
    this.closed = true;
    this.queue.length = 0;
    this.onTaken.clear();
    for (const w of this.waiters) {
      if (w.timer) clearTimeout(w.timer);
      w.reject(new SoftrdmaError('EBADF', 'rdma_cm: the event channel is closed'));
    }
    this.waiters.clear();
  }
}

/** next()'s `types`: one event type or a list of them (EINVAL naming an unknown one); undefined: any. */
function eventTypes(types: unknown): Set<RdmaCmEventType> | undefined {
  if (types === undefined) return undefined;
  const list: unknown[] = typeof types === 'string' ? [types] : Array.isArray(types) ? types : [types];
  for (const t of list) {
    if (typeof t !== 'string' || !Object.hasOwn(RDMA_CM_EVENT, t)) {
      throw new SoftrdmaError('EINVAL', `rdma_cm: next() types: ${JSON.stringify(t) ?? String(t)} is not an event type (${Object.keys(RDMA_CM_EVENT).join(', ')})`);
    }
  }
  return new Set(list as RdmaCmEventType[]);
}

/** next()'s `timeoutMs`: a number of 0 or more (Infinity: no timeout); anything else would set no timer and wait for ever. */
function checkWait(ms: unknown): void {
  if (typeof ms !== 'number' || Number.isNaN(ms) || ms < 0) throw new SoftrdmaError('EINVAL', `rdma_cm: next() timeoutMs must be a number of 0 or more (Infinity: none), got ${typeof ms === 'string' ? JSON.stringify(ms) : String(ms)}`);
}

/** rdma_create_event_channel */
export function createEventChannel(): EventChannel {
  return new EventChannel();
}
