// AH: an address handle in a PD (which it holds), for UD sends. On RoCE a peer is addressed
// by GID, so the GRH is required.

import { Attr, M, Obj } from '../../abi/ids.js';
import { copyAv } from '../../abi/av.js';
import type { AhAttr } from '../../abi/types.js';
import { handle, mandatory, newHandle, object } from '../attrs.js';
import { fail } from '../errors.js';
import type { UapiRegistry } from '../registry.js';
import type { CoreContext } from './core.js';
import { shown } from '../../abi/errors.js';

const CREATE = {
  handle: newHandle(Attr.AH.CREATE.HANDLE, 'ah_handle', Obj.AH),
  pd: mandatory(handle<object>(Attr.AH.CREATE.PD_HANDLE, 'pd_handle', Obj.PD, 'read')),
  ahAttr: mandatory(object<Record<string, unknown>>(Attr.AH.CREATE.AH_ATTR, 'ah_attr')),
};
const DESTROY = { handle: mandatory(handle<object>(Attr.AH.DESTROY.HANDLE, 'ah_handle', Obj.AH, 'destroy')) };

/** What is wrong with an address vector (ibv_ah_attr), or undefined; shared with QP.MODIFY's AV. */
export function checkGid(attr: Record<string, unknown>, gidCount: number): string | undefined {
  // Linux rdma_check_ah_attr: a RoCE address without IB_AH_GRH is EINVAL. Left out, it means true.
  if (attr.isGlobal === false) return 'is_global must be true on RoCE: a RoCE address needs the GRH (GIDs address the peer)';
  if (attr.isGlobal !== undefined && attr.isGlobal !== true) return `is_global must be a boolean (got ${shown(attr.isGlobal)})`;
  const grh = attr.grh as Record<string, unknown> | undefined;
  if (typeof grh !== 'object' || grh === null) return 'grh is required on RoCE (GIDs address the peer)';
  if (!(grh.dgid instanceof Uint8Array) || grh.dgid.length !== 16) return 'grh.dgid must be 16 bytes';
  const idx = grh.sgidIndex ?? 0;
  if (typeof idx !== 'number' || !Number.isInteger(idx) || idx < 0 || idx >= gidCount) return `grh.sgidIndex ${String(idx)} is not in the GID table (0..${gidCount - 1})`;
  for (const [k, max] of [['hopLimit', 255], ['trafficClass', 255], ['flowLabel', 0xfffff]] as const) {
    const v = grh[k];
    if (v !== undefined && (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > max)) return `grh.${k} must be 0..${max}`;
  }
  if (attr.portNum !== undefined && attr.portNum !== 1) return `portNum ${String(attr.portNum)} does not exist`;
  return undefined;
}

export function defineAh(r: UapiRegistry): void {
  r.defineObject({
    id: Obj.AH, name: 'AH',
    destroy: (ah: object, c: CoreContext) => c.provider.destroyAh(ah),
    limit: { name: 'max_ah', max: (c: CoreContext) => c.device.queryDevice().maxAh },
  });
  r.defineMethod<CoreContext>(Obj.AH, {
    id: M.AH.CREATE, name: 'CREATE', attrs: Object.values(CREATE),
    handler: (ctx) => {
      // A copy, each field read once (abi/av.ts): the AH keeps none of the caller's objects.
      const attr = copyAv(ctx.get(CREATE.ahAttr)) as Record<string, unknown>;
      const bad = checkGid(attr, ctx.context.device.gidTable(1).length);
      if (bad) fail('EINVAL', bad, { attr: 'ah_attr' });
      // checkGid has checked the fields an AhAttr needs.
      const ah = ctx.context.provider.createAh(ctx.get(CREATE.pd), attr as unknown as AhAttr);
      ctx.hold(ctx.handle(CREATE.pd));
      return { created: ah };
    },
  });
  r.defineMethod<CoreContext>(Obj.AH, { id: M.AH.DESTROY, name: 'DESTROY', attrs: Object.values(DESTROY), handler: () => {} });
}
