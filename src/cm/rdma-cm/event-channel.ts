// struct rdma_event_channel in Node's idiom: an EventEmitter ('event', and each event's own
// name) that is also an async iterator, plus next() to wait for one event with a bound.
// An event goes to a waiting next() if one wants it, else to the listeners if there are any
// ('event' or its own name), else it waits in the channel (as librdmacm's queue) for next()
// or the iterator. So a channel used through listeners alone does not grow.

import { EventEmitter } from 'node:events';
import { SoftrdmaError } from '../../abi/errors.js';
import type { RdmaCmEvent, RdmaCmEventType } from './events.js';

interface Waiter {
  match: (e: RdmaCmEvent) => boolean;
  resolve: (e: RdmaCmEvent) => void;
  reject: (err: Error) => void;
  timer: NodeJS.Timeout | undefined;
}

/**
 * Emits 'event' (RdmaCmEvent) and the event's type ('ESTABLISHED', ...). `for await (const e of
 * channel)` sees every event from the first iteration on; `next(type?, ms)` waits for one.
 */
export class EventChannel extends EventEmitter implements AsyncIterable<RdmaCmEvent> {
  private readonly queue: RdmaCmEvent[] = [];
  private readonly waiters = new Set<Waiter>();
  private closed = false;

  /** @internal Deliver one event (the CM ids do this). */
  deliver(e: RdmaCmEvent): void {
    if (this.closed) return;
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
    if (!taken && !heard) this.queue.push(e);
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
    return new Promise((resolve, reject) => {
      const w: Waiter = { match, resolve, reject, timer: undefined };
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
    while (!this.closed) {
      const e = this.queue.shift() ?? await this.next(undefined, Infinity).catch(() => undefined);
      if (!e) return;
      yield e;
    }
  }

  /** rdma_destroy_event_channel: waiters and iterators end (EBADF / done). */
  close(): void {
    if (this.closed) return;
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
