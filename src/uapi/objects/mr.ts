// MR: a memory region in a PD (which it holds). REREG changes its memory, PD or access and
// gives it new keys; an MR with memory windows bound to it cannot be changed (EBUSY) or
// deregistered (EINVAL, rxe_dereg_mr's "IBA 10.6.7.2.6").

import { Access, ACCESS_MASK, MR_ACCESS_SUPPORTED } from '../../abi/enums.js';
import { Attr, M, Obj, Rereg } from '../../abi/ids.js';
import { buffer, flags, handle, mandatory, newHandle, out, uint } from '../attrs.js';
import { fail } from '../errors.js';
import { moveHold } from '../handles.js';
import type { ProviderMr } from '../provider.js';
import type { UapiRegistry } from '../registry.js';
import type { CoreContext, CoreMethodContext } from './core.js';

const iova = (id: number) => uint(id, 'iova', { max: Number.MAX_SAFE_INTEGER });
const accessFlags = (id: number) => flags(id, 'access_flags', MR_ACCESS_SUPPORTED);

const REG = {
  handle: newHandle(Attr.MR.REG.HANDLE, 'mr_handle', Obj.MR),
  pd: mandatory(handle<object>(Attr.MR.REG.PD_HANDLE, 'pd_handle', Obj.PD, 'read')),
  memory: mandatory(buffer(Attr.MR.REG.MEMORY, 'memory')),
  iova: iova(Attr.MR.REG.IOVA),
  access: mandatory(accessFlags(Attr.MR.REG.ACCESS_FLAGS)),
  lkey: out<number>(Attr.MR.REG.RESP_LKEY, 'lkey'),
  rkey: out<number>(Attr.MR.REG.RESP_RKEY, 'rkey'),
  respIova: out<number>(Attr.MR.REG.RESP_IOVA, 'resp_iova'),
};
const REREG = {
  handle: mandatory(handle<ProviderMr>(Attr.MR.REREG.HANDLE, 'mr_handle', Obj.MR, 'write')),
  flags: mandatory(flags(Attr.MR.REREG.FLAGS, 'flags', Rereg.CHANGE_TRANSLATION | Rereg.CHANGE_PD | Rereg.CHANGE_ACCESS)),
  pd: handle<object>(Attr.MR.REREG.PD_HANDLE, 'pd_handle', Obj.PD, 'read'),
  memory: buffer(Attr.MR.REREG.MEMORY, 'memory'),
  iova: iova(Attr.MR.REREG.IOVA),
  access: accessFlags(Attr.MR.REREG.ACCESS_FLAGS),
  lkey: out<number>(Attr.MR.REREG.RESP_LKEY, 'lkey'),
  rkey: out<number>(Attr.MR.REREG.RESP_RKEY, 'rkey'),
  respIova: out<number>(Attr.MR.REREG.RESP_IOVA, 'resp_iova'),
};
const DEREG = { handle: mandatory(handle<ProviderMr>(Attr.MR.DEREG.HANDLE, 'mr_handle', Obj.MR, 'destroy')) };

/** IBTA: remote write or atomic access needs local write access too. */
export function checkMrAccess(access: number): string | undefined {
  if (access & (Access.REMOTE_WRITE | Access.REMOTE_ATOMIC) && !(access & Access.LOCAL_WRITE)) {
    return 'REMOTE_WRITE or REMOTE_ATOMIC requires LOCAL_WRITE';
  }
  return undefined;
}

/** The access an MR keeps: the IBTA's rule checked, ON_DEMAND refused, the hints dropped. */
function checkAccess(access: number): number {
  const bad = checkMrAccess(access);
  if (bad) fail('EINVAL', bad, { attr: 'access_flags' });
  if (access & Access.ON_DEMAND) fail('EOPNOTSUPP', 'ON_DEMAND: the device has no on-demand paging', { attr: 'access_flags' });
  return access & ACCESS_MASK;
}

function checkLength(ctx: CoreMethodContext, mem: Uint8Array): Uint8Array {
  const max = ctx.context.device.queryDevice().maxMrSize;
  if (mem.length === 0) fail('EINVAL', 'length must be at least 1', { attr: 'memory' });
  if (mem.length > max) fail('EINVAL', `length ${mem.length} exceeds the device's max_mr_size (${max})`, { attr: 'memory' });
  return mem;
}

export function defineMr(r: UapiRegistry): void {
  r.defineObject({
    id: Obj.MR, name: 'MR',
    destroy: (mr: ProviderMr, c: CoreContext) => c.provider.deregMr(mr),
    limit: { name: 'max_mr', max: (c: CoreContext) => c.device.queryDevice().maxMr, errno: 'ENOMEM' },
    busy: (mr: ProviderMr) => (mr.boundMwCount > 0 ? `MR has ${mr.boundMwCount} memory window(s) bound` : undefined),
    busyErrno: 'EINVAL',
  });
  r.defineMethod<CoreContext>(Obj.MR, {
    id: M.MR.REG, name: 'REG', attrs: Object.values(REG),
    handler: (ctx) => {
      const access = checkAccess(ctx.get(REG.access));
      const mem = checkLength(ctx, ctx.get(REG.memory));
      // ZERO_BASED moves nothing: as rxe_mr_init_user, the MR is at the iova given (the flag
      // only keeps windows off it, rxe_check_bind_mw).
      const iova = ctx.get(REG.iova);
      if (iova !== undefined && iova + mem.length > Number.MAX_SAFE_INTEGER) fail('EINVAL', 'iova + length overflows', { attr: 'iova' });
      const mr = ctx.context.provider.regMr(ctx.get(REG.pd), mem, iova, access);
      ctx.hold(ctx.handle(REG.pd));
      ctx.set(REG.lkey, mr.lkey);
      ctx.set(REG.rkey, mr.rkey);
      ctx.set(REG.respIova, mr.iova);
      return { created: mr };
    },
  });
  r.defineMethod<CoreContext>(Obj.MR, {
    id: M.MR.REREG, name: 'REREG', attrs: Object.values(REREG),
    handler: (ctx) => {
      const mr = ctx.get(REREG.handle);
      const flags = ctx.get(REREG.flags);
      if (flags === 0) fail('EINVAL', 'no change requested', { attr: 'flags' });
      if (mr.boundMwCount > 0) fail('EBUSY', `MR has ${mr.boundMwCount} memory window(s) bound`, { attr: 'mr_handle' });
      const change: { pd?: object; mem?: Uint8Array; iova?: number; access?: number } = {};
      if (flags & Rereg.CHANGE_PD) {
        change.pd = ctx.get(REREG.pd);
        if (change.pd === undefined) fail('EINVAL', 'CHANGE_PD needs a PD', { attr: 'pd_handle' });
      }
      if (flags & Rereg.CHANGE_TRANSLATION) {
        const mem = ctx.get(REREG.memory);
        if (mem === undefined) fail('EINVAL', 'CHANGE_TRANSLATION needs memory', { attr: 'memory' });
        change.mem = checkLength(ctx, mem);
        change.iova = ctx.get(REREG.iova);
      }
      if (flags & Rereg.CHANGE_ACCESS) {
        const access = ctx.get(REREG.access);
        if (access === undefined) fail('EINVAL', 'CHANGE_ACCESS needs access flags', { attr: 'access_flags' });
        change.access = checkAccess(access);
      }
      if (change.mem) {
        // As REG: iova + length must stay exact.
        if (change.iova !== undefined && change.iova + change.mem.length > Number.MAX_SAFE_INTEGER) fail('EINVAL', 'iova + length overflows', { attr: 'iova' });
      }
      ctx.context.provider.reregMr(mr, change);
      if (change.pd) moveHold(ctx.handle(REREG.handle), ctx.handle(REREG.pd), Obj.PD);
      ctx.set(REREG.lkey, mr.lkey);
      ctx.set(REREG.rkey, mr.rkey);
      ctx.set(REREG.respIova, mr.iova);
    },
  });
  r.defineMethod<CoreContext>(Obj.MR, { id: M.MR.DEREG, name: 'DEREG', attrs: Object.values(DEREG), handler: () => {} });
}
