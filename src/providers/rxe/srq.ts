// Shared receive queue with the IBTA limit event: when the number of posted WQEs falls
// below an armed limit, SRQ_LIMIT_REACHED fires once and the limit disarms.

import type { ProviderSrq } from '../../uapi/provider.js';
import type { RecvWr, SrqAttrValues } from '../../abi/types.js';
import { SrqAttr } from '../../abi/enums.js';
import { fail } from '../../uapi/errors.js';
import { Ring } from './ring.js';
import { validateRecv, type RecvWqe } from './qp.js';
import type { RxePd } from './keys.js';

const POST_RECV = { object: 'SRQ', method: 'POST_RECV' } as const;

export class RxeSrq implements ProviderSrq {
  private readonly q: Ring<RecvWqe>;
  limit: number;
  destroyed = false;

  constructor(
    readonly pd: RxePd,
    private readonly attr: SrqAttrValues,
    private readonly onLimit: (srq: RxeSrq) => void,
  ) {
    this.q = new Ring(attr.maxWr);
    this.limit = attr.srqLimit;
  }

  postRecv(wr: RecvWr): void {
    if (this.destroyed) fail('EINVAL', 'SRQ is destroyed', POST_RECV);
    const w = validateRecv(wr, this.attr.maxSge, 'SRQ');
    if (this.q.full) fail('ENOMEM', `SRQ full (${this.q.capacity} work requests)`, POST_RECV);
    this.q.push(w);
  }

  take(): RecvWqe | undefined {
    const w = this.q.shift();
    if (w && this.limit > 0 && this.q.length < this.limit) {
      this.limit = 0;
      this.onLimit(this);
    }
    return w;
  }

  /**
   * rxe_srq_from_attr: MAX_WR resizes the queue (rxe_queue_resize, `maxWr` already rounded as
   * rxe_queue_init rounds it), the WQEs posted staying in order; refused (EINVAL, nothing
   * changed) when they would not fit. LIMIT arms the limit.
   */
  modify(attr: Partial<SrqAttrValues>, mask: number): void {
    if (mask & SrqAttr.MAX_WR) {
      const n = attr.maxWr!;
      if (n < this.q.length) fail('EINVAL', `${n} entries cannot hold the ${this.q.length} receives posted`, { object: 'SRQ', method: 'MODIFY', attr: 'max_wr' });
      this.q.resize(n);
      this.attr.maxWr = n;
    }
    if (mask & SrqAttr.LIMIT) this.limit = attr.srqLimit ?? 0;
  }

  query(): SrqAttrValues {
    return { maxWr: this.attr.maxWr, maxSge: this.attr.maxSge, srqLimit: this.limit };
  }

  get posted(): number { return this.q.length; }
}
