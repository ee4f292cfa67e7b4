// SRQ: a shared receive queue in a PD (which it holds). Sizes are fixed at creation; the
// limit (the SRQ_LIMIT_REACHED threshold) can be changed.

import { SrqAttr } from '../../abi/enums.js';
import { Attr, M, Obj } from '../../abi/ids.js';
import type { SrqAttrValues } from '../../abi/types.js';
import { flags, handle, mandatory, newHandle, out, uint } from '../attrs.js';
import { fail } from '../errors.js';
import type { ProviderSrq } from '../provider.js';
import type { UapiRegistry } from '../registry.js';
import { overMax, type CoreContext } from './core.js';

const CREATE = {
  handle: newHandle(Attr.SRQ.CREATE.HANDLE, 'srq_handle', Obj.SRQ),
  pd: mandatory(handle<object>(Attr.SRQ.CREATE.PD_HANDLE, 'pd_handle', Obj.PD, 'read')),
  maxWr: mandatory(uint(Attr.SRQ.CREATE.MAX_WR, 'max_wr', { min: 1 })),
  // 0 is taken as 1 (rxe_srq_chk_init: RXE_MIN_SRQ_SGE).
  maxSge: mandatory(uint(Attr.SRQ.CREATE.MAX_SGE, 'max_sge', { min: 0 })),
  srqLimit: uint(Attr.SRQ.CREATE.SRQ_LIMIT, 'srq_limit'),
};
const MODIFY = {
  handle: mandatory(handle<ProviderSrq>(Attr.SRQ.MODIFY.HANDLE, 'srq_handle', Obj.SRQ, 'write')),
  mask: mandatory(flags(Attr.SRQ.MODIFY.ATTR_MASK, 'attr_mask', SrqAttr.MAX_WR | SrqAttr.LIMIT)),
  maxWr: uint(Attr.SRQ.MODIFY.MAX_WR, 'max_wr', { min: 1 }),
  srqLimit: uint(Attr.SRQ.MODIFY.SRQ_LIMIT, 'srq_limit'),
};
const QUERY = {
  handle: mandatory(handle<ProviderSrq>(Attr.SRQ.QUERY.HANDLE, 'srq_handle', Obj.SRQ, 'read')),
  srqAttr: out<SrqAttrValues>(Attr.SRQ.QUERY.RESP_SRQ_ATTR, 'srq_attr'),
};
const DESTROY = { handle: mandatory(handle<ProviderSrq>(Attr.SRQ.DESTROY.HANDLE, 'srq_handle', Obj.SRQ, 'destroy')) };

export function defineSrq(r: UapiRegistry): void {
  r.defineObject({
    id: Obj.SRQ, name: 'SRQ',
    destroy: (srq: ProviderSrq, c: CoreContext) => c.provider.destroySrq(srq),
    limit: { name: 'max_srq', max: (c: CoreContext) => c.device.queryDevice().maxSrq },
  });
  r.defineMethod<CoreContext>(Obj.SRQ, {
    id: M.SRQ.CREATE, name: 'CREATE', attrs: Object.values(CREATE),
    handler: (ctx) => {
      const dev = ctx.context.device.queryDevice();
      const maxWr = ctx.get(CREATE.maxWr), maxSge = Math.max(1, ctx.get(CREATE.maxSge)), limit = ctx.get(CREATE.srqLimit) ?? 0;
      if (maxWr > dev.maxSrqWr) fail('EINVAL', overMax(maxWr, 'max_srq_wr', dev.maxSrqWr), { attr: 'max_wr' });
      if (maxSge > dev.maxSrqSge) fail('EINVAL', overMax(maxSge, 'max_srq_sge', dev.maxSrqSge), { attr: 'max_sge' });
      // No check of srq_limit here: rxe_srq_chk_init has none (the limit is armed as given).
      const srq = ctx.context.provider.createSrq(ctx.get(CREATE.pd), { maxWr, maxSge, srqLimit: limit });
      ctx.hold(ctx.handle(CREATE.pd));
      return { created: srq };
    },
  });
  r.defineMethod<CoreContext>(Obj.SRQ, {
    id: M.SRQ.MODIFY, name: 'MODIFY', attrs: Object.values(MODIFY),
    handler: (ctx) => {
      const srq = ctx.get(MODIFY.handle);
      const mask = ctx.get(MODIFY.mask);
      const limit = ctx.get(MODIFY.srqLimit);
      const maxWr = ctx.get(MODIFY.maxWr);
      // rxe_srq_chk_attr: a new size within the device's, not below an armed limit; a limit
      // within the queue as it is now.
      const cur = srq.query();
      if (mask & SrqAttr.MAX_WR) {
        if (maxWr === undefined) fail('EINVAL', 'MAX_WR in the mask needs max_wr', { attr: 'max_wr' });
        const dev = ctx.context.device.queryDevice();
        if (maxWr > dev.maxSrqWr) fail('EINVAL', overMax(maxWr, 'max_srq_wr', dev.maxSrqWr), { attr: 'max_wr' });
        if (cur.srqLimit > 0 && maxWr < cur.srqLimit) fail('EINVAL', `${maxWr} is below the armed srq_limit ${cur.srqLimit}`, { attr: 'max_wr' });
      }
      if (mask & SrqAttr.LIMIT) {
        if (limit === undefined) fail('EINVAL', 'LIMIT in the mask needs srq_limit', { attr: 'srq_limit' });
        if (limit > cur.maxWr) fail('EINVAL', `${String(limit)} exceeds max_wr ${cur.maxWr}`, { attr: 'srq_limit' });
      }
      // The provider reads only what the mask names (the others may be absent).
      ctx.context.provider.modifySrq(srq, { maxWr: maxWr as number, srqLimit: limit as number }, mask);
    },
  });
  r.defineMethod<CoreContext>(Obj.SRQ, {
    id: M.SRQ.QUERY, name: 'QUERY', attrs: Object.values(QUERY),
    handler: (ctx) => ctx.set(QUERY.srqAttr, ctx.get(QUERY.handle).query()),
  });
  r.defineMethod<CoreContext>(Obj.SRQ, { id: M.SRQ.DESTROY, name: 'DESTROY', attrs: Object.values(DESTROY), handler: () => {} });
}
