// PD: a protection domain. MRs, MWs, AHs, SRQs and QPs hold it; it has no attributes.

import { Attr, M, Obj } from '../../abi/ids.js';
import { handle, mandatory, newHandle } from '../attrs.js';
import type { UapiRegistry } from '../registry.js';
import type { CoreContext } from './core.js';

const ALLOC = { handle: newHandle(Attr.PD.ALLOC.HANDLE, 'pd_handle', Obj.PD) };
const DEALLOC = { handle: mandatory(handle<object>(Attr.PD.DEALLOC.HANDLE, 'pd_handle', Obj.PD, 'destroy')) };

export function definePd(r: UapiRegistry): void {
  r.defineObject({
    id: Obj.PD, name: 'PD',
    destroy: (pd: object, c: CoreContext) => c.provider.deallocPd(pd),
    limit: { name: 'max_pd', max: (c: CoreContext) => c.device.queryDevice().maxPd },
  });
  r.defineMethod<CoreContext>(Obj.PD, { id: M.PD.ALLOC, name: 'ALLOC', attrs: Object.values(ALLOC), handler: (ctx) => ({ created: ctx.context.provider.allocPd() }) });
  r.defineMethod<CoreContext>(Obj.PD, { id: M.PD.DEALLOC, name: 'DEALLOC', attrs: Object.values(DEALLOC), handler: () => {} });
}
