// CQ: a completion queue, optionally on a completion channel (which it then holds).

import { Attr, M, Obj } from '../../abi/ids.js';
import { handle, mandatory, newHandle, out, uint } from '../attrs.js';
import { fail } from '../errors.js';
import type { ProviderCq } from '../provider.js';
import type { UapiRegistry } from '../registry.js';
import type { CompChannelImpl } from './comp-channel.js';
import { overMax, type CoreContext, type CoreMethodContext } from './core.js';

const CREATE = {
  handle: newHandle(Attr.CQ.CREATE.HANDLE, 'cq_handle', Obj.CQ),
  cqe: mandatory(uint(Attr.CQ.CREATE.CQE, 'cqe', { min: 1 })),
  channel: handle<CompChannelImpl>(Attr.CQ.CREATE.COMP_CHANNEL, 'channel', Obj.COMP_CHANNEL, 'read'),
  compVector: uint(Attr.CQ.CREATE.COMP_VECTOR, 'comp_vector', { max: 0 }),
  respCqe: out<number>(Attr.CQ.CREATE.RESP_CQE, 'resp_cqe'),
};
const RESIZE = {
  handle: mandatory(handle<ProviderCq>(Attr.CQ.RESIZE.HANDLE, 'cq_handle', Obj.CQ, 'write')),
  cqe: mandatory(uint(Attr.CQ.RESIZE.CQE, 'cqe', { min: 1 })),
  respCqe: out<number>(Attr.CQ.RESIZE.RESP_CQE, 'resp_cqe'),
};
const DESTROY = { handle: mandatory(handle<ProviderCq>(Attr.CQ.DESTROY.HANDLE, 'cq_handle', Obj.CQ, 'destroy')) };

/** Each CQ's completion channel, whose queued events for it go when the CQ does. */
const channels = new WeakMap<ProviderCq, CompChannelImpl>();

function checkCqe(ctx: CoreMethodContext, cqe: number): number {
  const max = ctx.context.device.queryDevice().maxCqe;
  if (cqe > max) fail('EINVAL', overMax(cqe, 'max_cqe', max), { attr: 'cqe' });
  return cqe;
}

export function defineCq(r: UapiRegistry): void {
  r.defineObject({
    id: Obj.CQ, name: 'CQ',
    destroy: (cq: ProviderCq, c: CoreContext) => {
      // The provider first: if it fails, the CQ stays as it was, still on its channel.
      c.provider.destroyCq(cq);
      cq.onNotify = undefined;
      channels.get(cq)?.forget(cq);
      const waiting = cq.onCompletion;
      cq.onCompletion = undefined;
      waiting?.(true);
    },
    limit: { name: 'max_cq', max: (c: CoreContext) => c.device.queryDevice().maxCq },
  });
  r.defineMethod<CoreContext>(Obj.CQ, {
    id: M.CQ.CREATE, name: 'CREATE', attrs: Object.values(CREATE),
    handler: (ctx) => {
      const cq = ctx.context.provider.createCq(checkCqe(ctx, ctx.get(CREATE.cqe)));
      const channel = ctx.get(CREATE.channel);
      if (channel) {
        cq.onNotify = () => channel.notify(cq);
        channels.set(cq, channel);
        ctx.hold(ctx.handle(CREATE.channel));
      }
      ctx.set(CREATE.respCqe, cq.cqe);
      return { created: cq };
    },
  });
  r.defineMethod<CoreContext>(Obj.CQ, {
    id: M.CQ.RESIZE, name: 'RESIZE', attrs: Object.values(RESIZE),
    handler: (ctx) => {
      const cq = ctx.get(RESIZE.handle);
      ctx.context.provider.resizeCq(cq, checkCqe(ctx, ctx.get(RESIZE.cqe)));
      ctx.set(RESIZE.respCqe, cq.cqe);
    },
  });
  r.defineMethod<CoreContext>(Obj.CQ, { id: M.CQ.DESTROY, name: 'DESTROY', attrs: Object.values(DESTROY), handler: () => {} });
}
