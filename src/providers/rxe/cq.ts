// Completion queue: a bounded queue of work completions with IBTA notification semantics
// (arm for next or solicited; an armed CQ notifies once). Every completion that finds the
// CQ full is lost and raises an async CQ_ERR (rxe_cq_post).

import { fail } from '../../uapi/errors.js';
import type { ProviderCq } from '../../uapi/provider.js';
import type { WorkCompletion } from '../../abi/types.js';
import { Ring } from './ring.js';

const ARM_NONE = 0, ARM_NEXT = 1, ARM_SOLICITED = 2;

export class RxeCq implements ProviderCq {
  onNotify: (() => void) | undefined;
  onCompletion: ((destroyed: boolean) => void) | undefined;
  private readonly queue: Ring<WorkCompletion>;
  private armed = ARM_NONE;
  destroyed = false;
  /**
   * The completion event, read when it runs rather than when it is queued: a CQ destroyed
   * (or taken off its channel) in between must announce nothing.
   */
  private readonly fireNotify = (): void => {
    if (!this.destroyed) this.onNotify?.();
  };

  constructor(
    public cqe: number,
    private readonly onOverflow: (cq: RxeCq) => void,
    /** The device's link: busyPoll() delivers what its socket holds now (see poll), canSpin says whether another read can help. */
    private readonly link?: { busyPoll(): void; readonly canSpin: boolean },
  ) {
    this.queue = new Ring(cqe);
  }

  get count(): number { return this.queue.length; }

  /**
   * Queue a completion. False when it was not queued: the CQ is destroyed, or full (then the
   * completion is lost and CQ_ERR raised, each time, as rxe_cq_post does; it returns -EBUSY).
   */
  push(wc: WorkCompletion, solicited: boolean): boolean {
    if (this.destroyed) return false;
    if (this.queue.full) {
      this.onOverflow(this);
      return false;
    }
    this.queue.push(wc);
    this.onCompletion?.(false);
    // Linux rxe_cq_post: a solicited-only arm is met only by a completion posted as solicited
    // (a receive of a packet with the SE bit, or a receive flush), an error or not.
    if (this.armed === ARM_NEXT || (this.armed === ARM_SOLICITED && solicited)) {
      this.armed = ARM_NONE;
      if (this.onNotify) queueMicrotask(this.fireNotify);
    }
    return true;
  }

  poll(max: number, into?: WorkCompletion[]): WorkCompletion[] {
    if (this.destroyed) fail('EBADF', 'the CQ was destroyed', { object: 'CQ', method: 'POLL' });
    // Polled empty: the consumer is looking for work. Read what the socket holds now rather
    // than leave it to the next turn of the event loop (a spinning poller then sees an answer
    // without an epoll round and a check-phase callback in between: busy polling). Not for a
    // CQ with a completion channel: its consumer is event-driven and polls to drain what an
    // event announced; reading there measured slower (SMC-R's ping-pong round trip, whose
    // links drain on events: 106-139 us against 63-69 without, docs/rxe.md).
    if (this.queue.length === 0 && this.link && !this.onNotify) this.link.busyPoll();
    const out = into ?? [];
    out.length = 0;
    while (out.length < max && this.queue.length) out.push(this.queue.shift()!);
    return out;
  }

  /** See ProviderCq.canSpin: a poll of this CQ reads the socket, and another read may help now. */
  get canSpin(): boolean {
    return this.link !== undefined && !this.onNotify && !this.destroyed && this.link.canSpin;
  }

  reqNotify(solicitedOnly: boolean): void {
    if (this.destroyed) fail('EBADF', 'the CQ was destroyed', { object: 'CQ', method: 'REQ_NOTIFY' });
    // A "next completion" arm is not narrowed to solicited ones by a later request (C11-31/32,
    // rxe_req_notify_cq).
    if (this.armed !== ARM_NEXT) this.armed = solicitedOnly ? ARM_SOLICITED : ARM_NEXT;
  }

  /** `asked` is checked (rxe_cq_chk_attr: EINVAL below the entries held); the queue holds `entries` (rounded as at create). */
  resize(asked: number, entries: number): void {
    if (asked < this.queue.length) fail('EINVAL', `cannot shrink below the ${this.queue.length} completions queued`, { object: 'CQ', method: 'RESIZE', attr: 'cqe' });
    this.queue.resize(entries);
    this.cqe = entries;
  }
}
