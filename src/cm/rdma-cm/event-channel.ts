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

import { EventEmitter } from 'node:events';
import { SoftrdmaError } from '../../abi/errors.js';
import type { RdmaCmEvent, RdmaCmEventType } from './events.js';

interface Waiter {
  id: unknown;
  match: (e: RdmaCmEvent) => boolean;
  resolve: (e: RdmaCmEvent) => void;
  reject: (err: Error) => void;
  timer: NodeJS.Timeout | undefined;
}

/** What the channel asks of the ids on it. */
export interface ChannelMember {
  destroyId(): void;
}

/**
 * Emits 'event' (RdmaCmEvent) and the event's type ('ESTABLISHED', ...). `for await (const e of
 * channel)` sees every event from the first iteration on; `next(type?, ms)` waits for one.
 */
export class EventChannel extends EventEmitter implements AsyncIterable<RdmaCmEvent> {
  private readonly queue: RdmaCmEvent[] = [];
  private readonly waiters = new Set<Waiter>();
  private readonly members = new Set<ChannelMember>();
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
        this.queue.splice(i, 1);
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
   * and to the listeners; queued only if neither took it (or an iterator runs).
   */
  deliver(e: RdmaCmEvent): void {
    if (this.closed) {
      // Nobody can take it: a new id would wait forever (ids are destroyed at close, so this
      // is only a race with that), and the peer is owed an answer.
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
    if (!taken && (!heard || this.iterators > 0)) this.queue.push(e);
    this.emit('event', e);
    this.emit(e.event, e);
  }

  /**
   * The next event (of one of `types`, and for `id` if given), within `timeoutMs` (ETIMEDOUT
   * otherwise). Queued events from an iterator are looked at first.
   */
  next(types?: RdmaCmEventType | readonly RdmaCmEventType[], timeoutMs = 30_000, id?: unknown): Promise<RdmaCmEvent> {
    const want = types === undefined ? undefined : new Set(typeof types === 'string' ? [types] : types);
    const match = (e: RdmaCmEvent) => (!want || want.has(e.event)) && (id === undefined || e.id === id);
    const i = this.queue.findIndex(match);
    if (i >= 0) return Promise.resolve(this.queue.splice(i, 1)[0]!);
    if (this.closed) return Promise.reject(new SoftrdmaError('EBADF', 'rdma_cm: the event channel is closed'));
    // An id destroyed (or never on this channel) gets no more events: fail now, not at the timeout.
    if (id !== undefined && !this.members.has(id as ChannelMember)) return Promise.reject(new SoftrdmaError('EBADF', 'rdma_cm: the id was destroyed or is not on this channel'));
    return new Promise((resolve, reject) => {
      const w: Waiter = { id, match, resolve, reject, timer: undefined };
      if (Number.isFinite(timeoutMs)) {
        w.timer = setTimeout(() => {
          this.waiters.delete(w);
          reject(new SoftrdmaError('ETIMEDOUT', `rdma_cm: no ${want ? [...want].join('/') : 'event'} within ${timeoutMs} ms`));
        }, timeoutMs);
      }
      this.waiters.add(w);
    });
  }

  async *[Symbol.asyncIterator](): AsyncIterator<RdmaCmEvent> {
    this.iterators++;
    try {
      while (!this.closed) {
        const e = this.queue.shift() ?? await this.next(undefined, Infinity).catch(() => undefined);
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
    for (const w of this.waiters) {
      if (w.timer) clearTimeout(w.timer);
      w.reject(new SoftrdmaError('EBADF', 'rdma_cm: the event channel is closed'));
    }
    this.waiters.clear();
  }
}

/** rdma_create_event_channel */
export function createEventChannel(): EventChannel {
  return new EventChannel();
}
