// MW: a memory window in a PD (which it holds); type 1 is bound with ibv_bind_mw, type 2
// with a BIND_MW work request.

import { MwType } from '../../abi/enums.js';
import { Attr, M, Obj } from '../../abi/ids.js';
import { handle, mandatory, newHandle, oneOf, out } from '../attrs.js';
import type { ProviderMw } from '../provider.js';
import type { UapiRegistry } from '../registry.js';
import type { CoreContext } from './core.js';

const ALLOC = {
  handle: newHandle(Attr.MW.ALLOC.HANDLE, 'mw_handle', Obj.MW),
  pd: mandatory(handle<object>(Attr.MW.ALLOC.PD_HANDLE, 'pd_handle', Obj.PD, 'read')),
  type: mandatory(oneOf(Attr.MW.ALLOC.TYPE, 'type', [MwType.TYPE_1, MwType.TYPE_2])),
  rkey: out<number>(Attr.MW.ALLOC.RESP_RKEY, 'rkey'),
};
const DEALLOC = { handle: mandatory(handle<ProviderMw>(Attr.MW.DEALLOC.HANDLE, 'mw_handle', Obj.MW, 'destroy')) };

export function defineMw(r: UapiRegistry): void {
  r.defineObject({
    id: Obj.MW, name: 'MW',
    destroy: (mw: ProviderMw, c: CoreContext) => c.provider.deallocMw(mw),
    limit: { name: 'max_mw', max: (c: CoreContext) => c.device.queryDevice().maxMw },
  });
  r.defineMethod<CoreContext>(Obj.MW, {
    id: M.MW.ALLOC, name: 'ALLOC', attrs: Object.values(ALLOC),
    handler: (ctx) => {
      const mw = ctx.context.provider.allocMw(ctx.get(ALLOC.pd), ctx.get(ALLOC.type));
      ctx.hold(ctx.handle(ALLOC.pd));
      ctx.set(ALLOC.rkey, mw.rkey);
      return { created: mw };
    },
  });
  r.defineMethod<CoreContext>(Obj.MW, { id: M.MW.DEALLOC, name: 'DEALLOC', attrs: Object.values(DEALLOC), handler: () => {} });
}
