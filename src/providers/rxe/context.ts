// The rxe provider context (a ucontext): creates and destroys the device's objects for one
// user context and routes async events to it.

import type { ProviderContext, ProviderCq, ProviderMr, ProviderMw, ProviderQp, ProviderSrq } from '../../uapi/provider.js';
import type { AhAttr, AsyncEvent, QpAttrValues, QpCap, QpInitAttr, SrqAttrValues } from '../../abi/types.js';
import { AsyncEventType, SrqAttr } from '../../abi/enums.js';
import { fail } from '../../uapi/errors.js';
import { RxeCq } from './cq.js';
import { type RxeMr, type RxeMw, RxePd } from './keys.js';
import { RxeQp, resolveAv } from './qp.js';
import { RxeSrq } from './srq.js';
import type { RxeDevice } from './device.js';

/** Whether an event's element is a provider object (QP, CQ, SRQ) that has been destroyed. */
const isDestroyed = (element: unknown): boolean =>
  typeof element === 'object' && element !== null && (element as { destroyed?: unknown }).destroyed === true;

/**
 * The entries a work queue asked for `n` holds (Linux rxe_queue_init): its slots are n + 1
 * rounded up to a power of two, one kept empty, so roundup_pow_of_two(n + 1) - 1; not beyond
 * `max`, the device's maximum.
 */
export function queueEntries(n: number, max: number): number {
  let slots = 1;
  while (slots < n + 1) slots *= 2;
  return Math.min(slots - 1, max);
}

/** Bytes of an SGE in a send WQE (struct ib_sge). */
const SGE_BYTES = 16;

export class RxeAh {
  /** Destroyed: a UD work request posted with it before then fails (rxe_get_av finds no AH by its ah_num). */
  destroyed = false;
  constructor(readonly pd: RxePd, readonly attr: AhAttr, readonly address: string) {}
}

export class RxeContext implements ProviderContext {
  readonly qps = new Set<RxeQp>();

  constructor(
    readonly device: RxeDevice,
    private readonly onEvent: (ev: AsyncEvent) => void,
  ) {}

  /**
   * Raise an async event on the next microtask. An event whose QP, CQ or SRQ is destroyed by
   * then is dropped: destroy takes an object's queued events with it (ib_uverbs_release_uevent),
   * so none arrives after destroy returns.
   */
  event(type: number, element: unknown): void {
    queueMicrotask(() => {
      if (!isDestroyed(element)) this.onEvent({ type, element });
    });
  }

  allocPd(): object { return new RxePd(); }
  deallocPd(): void {}

  regMr(pd: object, mem: Uint8Array, iova: number | undefined, access: number): ProviderMr {
    const buf = Buffer.from(mem.buffer, mem.byteOffset, mem.byteLength);
    return this.device.keys.addMr(pd as RxePd, buf, iova ?? this.device.nextIova(buf.length), access);
  }

  reregMr(mrIn: ProviderMr, change: { pd?: object; mem?: Uint8Array; iova?: number; access?: number }): void {
    const mr = mrIn as RxeMr;
    if (change.pd) mr.pd = change.pd as RxePd;
    if (change.mem) {
      mr.mem = Buffer.from(change.mem.buffer, change.mem.byteOffset, change.mem.byteLength);
      mr.iova = change.iova ?? this.device.nextIova(mr.mem.length);
    }
    if (change.access !== undefined) mr.access = change.access;
    mr.rekey(); // old lkey/rkey stop working
  }

  deregMr(mr: ProviderMr): void {
    const m = mr as RxeMr;
    m.valid = false;
    this.device.keys.remove(m);
  }

  allocMw(pd: object, type: number): ProviderMw {
    return this.device.keys.addMw(pd as RxePd, type);
  }

  deallocMw(mw: ProviderMw): void {
    const m = mw as RxeMw;
    m.unbind();
    this.device.keys.remove(m);
  }

  /** A CQ holds what its queue holds (rxe_cq_from_init: the size rounded as rxe_queue_init's, and reported). */
  createCq(cqe: number): ProviderCq {
    return new RxeCq(queueEntries(cqe, this.device.limits.maxCqe), (cq) => {
      this.device.counters.cq_overflows++;
      this.event(AsyncEventType.CQ_ERR, cq);
    }, this.device.link);
  }

  resizeCq(cq: ProviderCq, cqe: number): void {
    (cq as RxeCq).resize(cqe, queueEntries(cqe, this.device.limits.maxCqe));
  }

  destroyCq(cq: ProviderCq): void {
    (cq as RxeCq).destroyed = true;
  }

  createAh(pd: object, attr: AhAttr): object {
    return new RxeAh(pd as RxePd, attr, resolveAv(attr, this.device.family));
  }

  destroyAh(ah: object): void {
    (ah as RxeAh).destroyed = true;
  }

  createSrq(pd: object, attr: SrqAttrValues): ProviderSrq {
    // rxe_srq_from_init: the queue holds what rxe_queue_init rounds max_wr up to, and says so.
    const sized = { ...attr, maxWr: queueEntries(attr.maxWr, this.device.limits.maxSrqWr) };
    return new RxeSrq(pd as RxePd, sized, (srq) => this.event(AsyncEventType.SRQ_LIMIT_REACHED, srq));
  }

  modifySrq(srq: ProviderSrq, attr: Partial<SrqAttrValues>, mask: number): void {
    // A new size is rounded as at create (rxe_queue_resize goes through rxe_queue_init's rule).
    const sized = mask & SrqAttr.MAX_WR ? { ...attr, maxWr: queueEntries(attr.maxWr!, this.device.limits.maxSrqWr) } : attr;
    (srq as RxeSrq).modify(sized, mask);
  }

  destroySrq(srq: ProviderSrq): void {
    (srq as RxeSrq).destroyed = true;
  }

  createQp(pd: object, init: QpInitAttr): ProviderQp {
    const qpn = this.device.allocQpn();
    const qp = new RxeQp(this, qpn, init.qpType, pd as RxePd, init.sendCq as RxeCq, init.recvCq as RxeCq, init.srq as RxeSrq | undefined, this.sizeQueues(init.cap), init.sqSigAll ?? false);
    this.device.qps.set(qpn, qp);
    this.qps.add(qp);
    return qp;
  }

  /**
   * The capacities a QP's queues get for the ones asked (checked against the device's maxima
   * already), as Linux rxe_qp_init_req and rxe_qp_init_resp size them and report them back: a
   * send WQE has room for max(16 * max_send_sge, max_inline_data) bytes, which sets both
   * max_send_sge and max_inline_data; each queue holds what rxe_queue_init rounds it up to. None
   * beyond the device's maximum (where Linux's rounding could pass it).
   */
  private sizeQueues(cap: QpCap): QpCap {
    const dev = this.device.queryDevice();
    const wqe = Math.max(SGE_BYTES * cap.maxSendSge, cap.maxInlineData);
    return {
      maxSendWr: queueEntries(cap.maxSendWr, dev.maxQpWr),
      maxRecvWr: queueEntries(cap.maxRecvWr, dev.maxQpWr),
      maxSendSge: Math.min(Math.floor(wqe / SGE_BYTES), dev.maxSge),
      maxRecvSge: cap.maxRecvSge,
      maxInlineData: Math.min(wqe, dev.maxInlineData),
    };
  }

  modifyQp(qp: ProviderQp, attr: QpAttrValues, mask: number): void {
    (qp as RxeQp).modify(attr, mask);
  }

  destroyQp(qp: ProviderQp): void {
    const q = qp as RxeQp;
    q.destroy();
    this.device.qps.delete(q.qpn);
    this.qps.delete(q);
  }

  close(): void {
    if (this.qps.size) fail('EBUSY', 'context still has QPs');
  }
}
