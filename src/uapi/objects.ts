// The core verbs objects and their methods, declared once. Every check of the control path
// lives here or in the dispatcher: attribute types and ranges, IBTA rules (MR access,
// modify_qp transitions), and which object holds which.

import { EventEmitter } from 'node:events';
import { Access, ACCESS_MASK, MwType, QP_ATTR_NAMES, QpAttr, QpType, qpStateName, qpTypeName, SrqAttr } from '../abi/enums.js';
import type { AhAttr, QpAttrValues, QpCap } from '../abi/types.js';
import { fail } from './errors.js';
import type { ProviderContext, ProviderCq, ProviderDevice, ProviderMr, ProviderQp } from './provider.js';
import { checkTransition } from './qp-transitions.js';
import { UapiRegistry } from './registry.js';
import type { AttrSpec, MethodContext, UObject } from './spec.js';

export const Obj = { DEVICE: 0, PD: 1, COMP_CHANNEL: 2, CQ: 3, QP: 4, SRQ: 5, AH: 6, MR: 7, MW: 8 } as const;

/** Method ids; each object numbers its own. */
export const M = {
  DEVICE: { QUERY: 0, QUERY_PORT: 1, QUERY_GID_TABLE: 2, QUERY_PKEY: 3 },
  PD: { ALLOC: 0, DEALLOC: 1 },
  COMP_CHANNEL: { CREATE: 0, DESTROY: 1 },
  CQ: { CREATE: 0, DESTROY: 1, RESIZE: 2 },
  QP: { CREATE: 0, DESTROY: 1, MODIFY: 2, QUERY: 3 },
  SRQ: { CREATE: 0, DESTROY: 1, MODIFY: 2, QUERY: 3 },
  AH: { CREATE: 0, DESTROY: 1 },
  MR: { REG: 0, DEREG: 1, REREG: 2 },
  MW: { ALLOC: 0, DEALLOC: 1 },
} as const;

/** Attribute ids: 0 is always the object's own handle; others are per method. */
export const A = {
  HANDLE: 0,
  PD: 1,
  // MR
  MEM: 2, IOVA: 3, ACCESS: 4, LKEY: 5, RKEY: 6, REREG_FLAGS: 7, LENGTH: 8,
  // MW
  MW_TYPE: 2,
  // CQ
  CQE: 2, CHANNEL: 3, COMP_VECTOR: 4,
  // QP
  QP_TYPE: 2, SEND_CQ: 3, RECV_CQ: 4, SRQ: 5, CAP: 6, SQ_SIG_ALL: 7, QPN: 8, ATTR_MASK: 9, ATTR: 10, INIT_ATTR: 11,
  // SRQ
  MAX_WR: 2, MAX_SGE: 3, SRQ_LIMIT: 4, SRQ_MASK: 5, SRQ_ATTR: 6,
  // AH
  AH_ATTR: 2,
  // DEVICE
  DEVICE_ATTR: 1, PORT: 2, PORT_ATTR: 3, GID_TABLE: 4, PKEY_INDEX: 5, PKEY: 6,
} as const;

export const Rereg = { CHANGE_TRANSLATION: 1, CHANGE_PD: 2, CHANGE_ACCESS: 4 } as const;

/** Per-context state the core methods need. */
export interface CoreContext {
  device: ProviderDevice;
  provider: ProviderContext;
  maxPort: number;
}

/** A completion channel is a core object: a queue of CQ events, with no provider part. */
export class CompChannelImpl extends EventEmitter {
  readonly pending: ProviderCq[] = [];
  closed = false;
  notify(cq: ProviderCq) {
    if (this.closed) return;
    this.pending.push(cq);
    this.emit('event', cq);
  }
}

const handle = (object: number, access: 'read' | 'write' | 'destroy' | 'new', name: string, id: number = A.HANDLE, mandatory = true): AttrSpec => ({
  id, name, type: { kind: 'handle', object, access }, mandatory,
});
const u32 = (id: number, name: string, mandatory = false, min = 0, max = 0xffffffff): AttrSpec => ({
  id, name, type: { kind: 'uint', min, max }, mandatory,
});
const out = (id: number, name: string): AttrSpec => ({ id, name, type: { kind: 'object' }, out: true });

export function checkMrAccess(access: number): string | undefined {
  if (access & (Access.REMOTE_WRITE | Access.REMOTE_ATOMIC) && !(access & Access.LOCAL_WRITE)) {
    return 'REMOTE_WRITE or REMOTE_ATOMIC requires LOCAL_WRITE';
  }
  return undefined;
}

function checkGid(attr: Record<string, unknown>, gidCount: number): string | undefined {
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

/**
 * The message for a size above the device's maximum: the value, and the device attribute by
 * its verbs name (the error's site names the attribute given, so the message does not).
 */
const overMax = (v: number, limit: string, max: number) => `${v} exceeds the device's ${limit} (${max})`;

/**
 * Error messages name attributes once (in the error's site), in one style: the verbs names
 * of libibverbs' structs and uapi attributes (snake_case: cap.max_send_wr, path_mtu, sg_list),
 * whatever the JavaScript field is called (cap.maxSendWr, pathMtu, sgList).
 */
export const verbsName = (field: string) => field.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);

function checkCap(c: Record<string, unknown>, dev: ReturnType<ProviderDevice['queryDevice']>, hasSrq: boolean): [string, string] | undefined {
  const lim: Array<[keyof QpCap, string, number]> = [
    ['maxSendWr', 'max_qp_wr', dev.maxQpWr], ['maxRecvWr', 'max_qp_wr', dev.maxQpWr], ['maxSendSge', 'max_sge', dev.maxSge],
    ['maxRecvSge', 'max_sge', dev.maxSge], ['maxInlineData', 'max_inline_data', dev.maxInlineData],
  ];
  for (const [k, limit, max] of lim) {
    const v = c[k] ?? 0;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 0) return [`cap.${verbsName(k)}`, `must be a non-negative integer, got ${String(v)}`];
    if (v > max) return [`cap.${verbsName(k)}`, overMax(v, limit, max)];
  }
  if (((c.maxSendWr as number) ?? 0) < 1) return ['cap.max_send_wr', 'must be at least 1'];
  if (!hasSrq && ((c.maxRecvWr as number) ?? 0) < 1) return ['cap.max_recv_wr', 'must be at least 1 without an SRQ'];
  return undefined;
}

/** Value checks for modify_qp, beyond which attributes are allowed. */
function checkQpAttrValues(attr: QpAttrValues, mask: number, core: CoreContext, qp: ProviderQp): [string, string] | undefined {
  const dev = core.device.queryDevice();
  const port = core.device.queryPort(1);
  const range = (name: string, v: unknown, min: number, max: number): [string, string] | undefined =>
    typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max ? [name, `must be ${min}..${max}, got ${String(v)}`] : undefined;
  const checks: Array<[number, () => [string, string] | undefined]> = [
    [QpAttr.STATE, () => range('qpState', attr.qpState, 0, 6)],
    [QpAttr.CUR_STATE, () => (attr.curQpState !== qp.state ? ['curQpState', `is ${qpStateName(attr.curQpState ?? -1)} but the QP is ${qpStateName(qp.state)}`] : undefined)],
    [QpAttr.ACCESS_FLAGS, () => {
      const v = attr.qpAccessFlags;
      const allowed = Access.LOCAL_WRITE | Access.REMOTE_WRITE | Access.REMOTE_READ | Access.REMOTE_ATOMIC | Access.MW_BIND;
      if (typeof v !== 'number' || (v & ~allowed) !== 0) return ['qpAccessFlags', `unknown bits in ${String(v)}`];
      return undefined;
    }],
    [QpAttr.PKEY_INDEX, () => range('pkeyIndex', attr.pkeyIndex, 0, port.pkeyTblLen - 1)],
    [QpAttr.PORT, () => range('portNum', attr.portNum, 1, core.maxPort)],
    [QpAttr.QKEY, () => range('qkey', attr.qkey, 0, 0xffffffff)],
    [QpAttr.AV, () => {
      const p = typeof attr.ahAttr === 'object' && attr.ahAttr ? checkGid(attr.ahAttr as unknown as Record<string, unknown>, core.device.gidTable(1).length) : 'ahAttr is required';
      return p ? ['ahAttr', p] : undefined;
    }],
    [QpAttr.PATH_MTU, () => range('pathMtu', attr.pathMtu, 1, port.maxMtu)],
    [QpAttr.TIMEOUT, () => range('timeout', attr.timeout, 0, 31)],
    [QpAttr.RETRY_CNT, () => range('retryCnt', attr.retryCnt, 0, 7)],
    [QpAttr.RNR_RETRY, () => range('rnrRetry', attr.rnrRetry, 0, 7)],
    [QpAttr.RQ_PSN, () => range('rqPsn', attr.rqPsn, 0, 0xffffff)],
    [QpAttr.SQ_PSN, () => range('sqPsn', attr.sqPsn, 0, 0xffffff)],
    [QpAttr.MAX_QP_RD_ATOMIC, () => range('maxRdAtomic', attr.maxRdAtomic, 0, dev.maxQpInitRdAtom)],
    [QpAttr.MAX_DEST_RD_ATOMIC, () => range('maxDestRdAtomic', attr.maxDestRdAtomic, 0, dev.maxQpRdAtom)],
    [QpAttr.MIN_RNR_TIMER, () => range('minRnrTimer', attr.minRnrTimer, 0, 31)],
    [QpAttr.DEST_QPN, () => range('destQpNum', attr.destQpNum, 1, 0xffffff)],
    [QpAttr.PATH_MIG_STATE, () => range('pathMigState', attr.pathMigState, 0, 2)],
    [QpAttr.ALT_PATH, () => ['altPath', 'alternate paths (APM) are not supported by software RoCE']],
    [QpAttr.CAP, () => ['cap', 'resizing work queues with modify_qp is not supported']],
  ];
  for (const [bit, check] of checks) {
    if (mask & bit) {
      const r = check();
      if (r) return r;
    }
  }
  return undefined;
}

export function createRegistry(): UapiRegistry {
  const r = new UapiRegistry();
  const core = (ctx: MethodContext<CoreContext>) => ctx.context;

  // ---- DEVICE: queries (no handle; the context is the device) ----
  r.defineObject({ id: Obj.DEVICE, name: 'DEVICE', destroy: () => {} });
  r.defineMethod(Obj.DEVICE, {
    id: M.DEVICE.QUERY, name: 'QUERY', attrs: [out(A.DEVICE_ATTR, 'device_attr')],
    handler: (ctx) => ({ out: { [A.DEVICE_ATTR]: core(ctx).device.queryDevice() } }),
  });
  const portAttr = (mandatory = true): AttrSpec => ({ id: A.PORT, name: 'port_num', type: { kind: 'uint', min: 1, max: 255 }, mandatory });
  const checkPort = (ctx: MethodContext<CoreContext>) => {
    const p = ctx.attrs.get(A.PORT) as number;
    if (p > core(ctx).maxPort) fail('EINVAL', `port ${p} does not exist (ports 1..${core(ctx).maxPort})`, { attr: 'port_num' });
    return p;
  };
  r.defineMethod(Obj.DEVICE, {
    id: M.DEVICE.QUERY_PORT, name: 'QUERY_PORT', attrs: [portAttr(), out(A.PORT_ATTR, 'port_attr')],
    handler: (ctx) => ({ out: { [A.PORT_ATTR]: core(ctx).device.queryPort(checkPort(ctx)) } }),
  });
  r.defineMethod(Obj.DEVICE, {
    id: M.DEVICE.QUERY_GID_TABLE, name: 'QUERY_GID_TABLE', attrs: [portAttr(), out(A.GID_TABLE, 'entries')],
    handler: (ctx) => ({ out: { [A.GID_TABLE]: core(ctx).device.gidTable(checkPort(ctx)) } }),
  });
  r.defineMethod(Obj.DEVICE, {
    id: M.DEVICE.QUERY_PKEY, name: 'QUERY_PKEY', attrs: [portAttr(), u32(A.PKEY_INDEX, 'index', true, 0, 0xffff), out(A.PKEY, 'pkey')],
    handler: (ctx) => {
      const port = checkPort(ctx);
      const index = ctx.attrs.get(A.PKEY_INDEX) as number;
      const len = core(ctx).device.queryPort(port).pkeyTblLen;
      if (index >= len) fail('EINVAL', `P_Key index ${index} is beyond the table (${len} entries)`, { attr: 'index' });
      return { out: { [A.PKEY]: core(ctx).device.queryPkey(port, index) } };
    },
  });

  // ---- PD ----
  r.defineObject({ id: Obj.PD, name: 'PD', destroy: (pd, c: CoreContext) => c.provider.deallocPd(pd), limit: { name: 'max_pd', max: (c: CoreContext) => c.device.queryDevice().maxPd } });
  r.defineMethod(Obj.PD, { id: M.PD.ALLOC, name: 'ALLOC', attrs: [handle(Obj.PD, 'new', 'pd_handle')], handler: (ctx) => ({ created: core(ctx).provider.allocPd() }) });
  r.defineMethod(Obj.PD, { id: M.PD.DEALLOC, name: 'DEALLOC', attrs: [handle(Obj.PD, 'destroy', 'pd_handle')], handler: () => {} });

  // ---- MR ----
  r.defineObject({
    id: Obj.MR, name: 'MR',
    destroy: (mr, c: CoreContext) => c.provider.deregMr(mr),
    limit: { name: 'max_mr', max: (c: CoreContext) => c.device.queryDevice().maxMr },
    busy: (mr: ProviderMr) => (mr.boundMwCount > 0 ? `MR has ${mr.boundMwCount} memory window(s) bound` : undefined),
  });
  const accessAttr = (mandatory: boolean): AttrSpec => ({ id: A.ACCESS, name: 'access_flags', type: { kind: 'flags', mask: ACCESS_MASK }, mandatory });
  r.defineMethod(Obj.MR, {
    id: M.MR.REG, name: 'REG',
    attrs: [
      handle(Obj.MR, 'new', 'mr_handle'), handle(Obj.PD, 'read', 'pd_handle', A.PD),
      { id: A.MEM, name: 'memory', type: { kind: 'buffer' }, mandatory: true },
      { id: A.IOVA, name: 'iova', type: { kind: 'uint', max: Number.MAX_SAFE_INTEGER } },
      accessAttr(true), out(A.LKEY, 'lkey'), out(A.RKEY, 'rkey'),
    ],
    handler: (ctx) => {
      const access = ctx.attrs.get(A.ACCESS) as number;
      const bad = checkMrAccess(access);
      if (bad) fail('EINVAL', bad, { attr: 'access_flags' });
      const mem = ctx.attrs.get(A.MEM) as Uint8Array;
      const max = core(ctx).device.queryDevice().maxMrSize;
      if (mem.length === 0) fail('EINVAL', 'length must be at least 1', { attr: 'memory' });
      if (mem.length > max) fail('EINVAL', `length ${mem.length} exceeds the device's max_mr_size (${max})`, { attr: 'memory' });
      let iova = ctx.attrs.get(A.IOVA) as number | undefined;
      if (access & Access.ZERO_BASED) iova = 0;
      if (iova !== undefined && iova + mem.length > Number.MAX_SAFE_INTEGER) fail('EINVAL', 'iova + length overflows', { attr: 'iova' });
      const pd = ctx.attrs.get(A.PD)!;
      const mr = core(ctx).provider.regMr(pd as object, mem, iova, access);
      ctx.hold(ctx.handle(A.PD));
      return { created: mr, out: { [A.LKEY]: mr.lkey, [A.RKEY]: mr.rkey, [A.IOVA]: mr.iova } };
    },
  });
  r.defineMethod(Obj.MR, {
    id: M.MR.REREG, name: 'REREG',
    attrs: [
      handle(Obj.MR, 'write', 'mr_handle'), { id: A.REREG_FLAGS, name: 'flags', type: { kind: 'flags', mask: 7 }, mandatory: true },
      handle(Obj.PD, 'read', 'pd_handle', A.PD, false), { id: A.MEM, name: 'memory', type: { kind: 'buffer' } },
      { id: A.IOVA, name: 'iova', type: { kind: 'uint', max: Number.MAX_SAFE_INTEGER } }, accessAttr(false),
      out(A.LKEY, 'lkey'), out(A.RKEY, 'rkey'),
    ],
    handler: (ctx) => {
      const mr = ctx.attrs.get(A.HANDLE) as ProviderMr;
      const flags = ctx.attrs.get(A.REREG_FLAGS) as number;
      if (flags === 0) fail('EINVAL', 'no change requested', { attr: 'flags' });
      if (mr.boundMwCount > 0) fail('EBUSY', `MR has ${mr.boundMwCount} memory window(s) bound`, { attr: 'mr_handle' });
      const change: { pd?: object; mem?: Uint8Array; iova?: number; access?: number } = {};
      if (flags & Rereg.CHANGE_PD) {
        if (!ctx.attrs.has(A.PD)) fail('EINVAL', 'CHANGE_PD needs a PD', { attr: 'pd_handle' });
        change.pd = ctx.attrs.get(A.PD) as object;
      }
      if (flags & Rereg.CHANGE_TRANSLATION) {
        if (!ctx.attrs.has(A.MEM)) fail('EINVAL', 'CHANGE_TRANSLATION needs memory', { attr: 'memory' });
        change.mem = ctx.attrs.get(A.MEM) as Uint8Array;
        if (change.mem.length === 0) fail('EINVAL', 'length must be at least 1', { attr: 'memory' });
        const max = core(ctx).device.queryDevice().maxMrSize;
        if (change.mem.length > max) fail('EINVAL', `length ${change.mem.length} exceeds the device's max_mr_size (${max})`, { attr: 'memory' });
        change.iova = ctx.attrs.get(A.IOVA) as number | undefined;
      }
      if (flags & Rereg.CHANGE_ACCESS) {
        if (!ctx.attrs.has(A.ACCESS)) fail('EINVAL', 'CHANGE_ACCESS needs access flags', { attr: 'access_flags' });
        change.access = ctx.attrs.get(A.ACCESS) as number;
        const bad = checkMrAccess(change.access);
        if (bad) fail('EINVAL', bad, { attr: 'access_flags' });
      }
      core(ctx).provider.reregMr(mr, change);
      if (change.pd) moveHold(ctx.handle(A.HANDLE), ctx.handle(A.PD), Obj.PD);
      return { out: { [A.LKEY]: mr.lkey, [A.RKEY]: mr.rkey, [A.IOVA]: mr.iova } };
    },
  });
  r.defineMethod(Obj.MR, { id: M.MR.DEREG, name: 'DEREG', attrs: [handle(Obj.MR, 'destroy', 'mr_handle')], handler: () => {} });

  // ---- MW ----
  r.defineObject({ id: Obj.MW, name: 'MW', destroy: (mw, c: CoreContext) => c.provider.deallocMw(mw), limit: { name: 'max_mw', max: (c: CoreContext) => c.device.queryDevice().maxMw } });
  r.defineMethod(Obj.MW, {
    id: M.MW.ALLOC, name: 'ALLOC',
    attrs: [handle(Obj.MW, 'new', 'mw_handle'), handle(Obj.PD, 'read', 'pd_handle', A.PD), { id: A.MW_TYPE, name: 'type', type: { kind: 'enum', values: [MwType.TYPE_1, MwType.TYPE_2] }, mandatory: true }, out(A.RKEY, 'rkey')],
    handler: (ctx) => {
      const mw = core(ctx).provider.allocMw(ctx.attrs.get(A.PD) as object, ctx.attrs.get(A.MW_TYPE) as number);
      ctx.hold(ctx.handle(A.PD));
      return { created: mw, out: { [A.RKEY]: mw.rkey } };
    },
  });
  r.defineMethod(Obj.MW, { id: M.MW.DEALLOC, name: 'DEALLOC', attrs: [handle(Obj.MW, 'destroy', 'mw_handle')], handler: () => {} });

  // ---- AH ----
  r.defineObject({ id: Obj.AH, name: 'AH', destroy: (ah, c: CoreContext) => c.provider.destroyAh(ah), limit: { name: 'max_ah', max: (c: CoreContext) => c.device.queryDevice().maxAh } });
  r.defineMethod(Obj.AH, {
    id: M.AH.CREATE, name: 'CREATE',
    attrs: [handle(Obj.AH, 'new', 'ah_handle'), handle(Obj.PD, 'read', 'pd_handle', A.PD), { id: A.AH_ATTR, name: 'ah_attr', type: { kind: 'object' }, mandatory: true }],
    handler: (ctx) => {
      const attr = ctx.attrs.get(A.AH_ATTR) as Record<string, unknown>;
      const bad = checkGid(attr, core(ctx).device.gidTable(1).length);
      if (bad) fail('EINVAL', bad, { attr: 'ah_attr' });
      const ah = core(ctx).provider.createAh(ctx.attrs.get(A.PD) as object, attr as unknown as AhAttr);
      ctx.hold(ctx.handle(A.PD));
      return { created: ah };
    },
  });
  r.defineMethod(Obj.AH, { id: M.AH.DESTROY, name: 'DESTROY', attrs: [handle(Obj.AH, 'destroy', 'ah_handle')], handler: () => {} });

  // ---- COMP_CHANNEL ----
  r.defineObject({ id: Obj.COMP_CHANNEL, name: 'COMP_CHANNEL', destroy: (ch: CompChannelImpl) => { ch.closed = true; ch.emit('close'); } });
  r.defineMethod(Obj.COMP_CHANNEL, { id: M.COMP_CHANNEL.CREATE, name: 'CREATE', attrs: [handle(Obj.COMP_CHANNEL, 'new', 'channel_handle')], handler: () => ({ created: new CompChannelImpl() }) });
  r.defineMethod(Obj.COMP_CHANNEL, { id: M.COMP_CHANNEL.DESTROY, name: 'DESTROY', attrs: [handle(Obj.COMP_CHANNEL, 'destroy', 'channel_handle')], handler: () => {} });

  // ---- CQ ----
  r.defineObject({ id: Obj.CQ, name: 'CQ', destroy: (cq: ProviderCq, c: CoreContext) => {
    cq.onNotify = undefined;
    const waiting = cq.onCompletion;
    cq.onCompletion = undefined;
    c.provider.destroyCq(cq);
    waiting?.(true);
  }, limit: { name: 'max_cq', max: (c: CoreContext) => c.device.queryDevice().maxCq } });
  r.defineMethod(Obj.CQ, {
    id: M.CQ.CREATE, name: 'CREATE',
    attrs: [handle(Obj.CQ, 'new', 'cq_handle'), u32(A.CQE, 'cqe', true, 1), handle(Obj.COMP_CHANNEL, 'read', 'channel', A.CHANNEL, false), u32(A.COMP_VECTOR, 'comp_vector', false, 0, 0)],
    handler: (ctx) => {
      const cqe = ctx.attrs.get(A.CQE) as number;
      const max = core(ctx).device.queryDevice().maxCqe;
      if (cqe > max) fail('EINVAL', overMax(cqe, 'max_cqe', max), { attr: 'cqe' });
      const cq = core(ctx).provider.createCq(cqe);
      const channel = ctx.attrs.get(A.CHANNEL) as CompChannelImpl | undefined;
      if (channel) {
        cq.onNotify = () => channel.notify(cq);
        ctx.hold(ctx.handle(A.CHANNEL));
      }
      return { created: cq, out: { [A.CQE]: cq.cqe } };
    },
  });
  r.defineMethod(Obj.CQ, {
    id: M.CQ.RESIZE, name: 'RESIZE', attrs: [handle(Obj.CQ, 'write', 'cq_handle'), u32(A.CQE, 'cqe', true, 1)],
    handler: (ctx) => {
      const cq = ctx.attrs.get(A.HANDLE) as ProviderCq;
      const cqe = ctx.attrs.get(A.CQE) as number;
      const max = core(ctx).device.queryDevice().maxCqe;
      if (cqe > max) fail('EINVAL', overMax(cqe, 'max_cqe', max), { attr: 'cqe' });
      core(ctx).provider.resizeCq(cq, cqe);
      return { out: { [A.CQE]: cq.cqe } };
    },
  });
  r.defineMethod(Obj.CQ, { id: M.CQ.DESTROY, name: 'DESTROY', attrs: [handle(Obj.CQ, 'destroy', 'cq_handle')], handler: () => {} });

  // ---- SRQ ----
  r.defineObject({ id: Obj.SRQ, name: 'SRQ', destroy: (srq, c: CoreContext) => c.provider.destroySrq(srq), limit: { name: 'max_srq', max: (c: CoreContext) => c.device.queryDevice().maxSrq } });
  r.defineMethod(Obj.SRQ, {
    id: M.SRQ.CREATE, name: 'CREATE',
    attrs: [handle(Obj.SRQ, 'new', 'srq_handle'), handle(Obj.PD, 'read', 'pd_handle', A.PD), u32(A.MAX_WR, 'max_wr', true, 1), u32(A.MAX_SGE, 'max_sge', true, 1), u32(A.SRQ_LIMIT, 'srq_limit')],
    handler: (ctx) => {
      const dev = core(ctx).device.queryDevice();
      const maxWr = ctx.attrs.get(A.MAX_WR) as number, maxSge = ctx.attrs.get(A.MAX_SGE) as number, limit = (ctx.attrs.get(A.SRQ_LIMIT) as number) ?? 0;
      if (maxWr > dev.maxSrqWr) fail('EINVAL', overMax(maxWr, 'max_srq_wr', dev.maxSrqWr), { attr: 'max_wr' });
      if (maxSge > dev.maxSrqSge) fail('EINVAL', overMax(maxSge, 'max_srq_sge', dev.maxSrqSge), { attr: 'max_sge' });
      if (limit > maxWr) fail('EINVAL', `${limit} exceeds max_wr ${maxWr}`, { attr: 'srq_limit' });
      const srq = core(ctx).provider.createSrq(ctx.attrs.get(A.PD) as object, { maxWr, maxSge, srqLimit: limit });
      ctx.hold(ctx.handle(A.PD));
      return { created: srq };
    },
  });
  r.defineMethod(Obj.SRQ, {
    id: M.SRQ.MODIFY, name: 'MODIFY',
    attrs: [handle(Obj.SRQ, 'write', 'srq_handle'), { id: A.SRQ_MASK, name: 'attr_mask', type: { kind: 'flags', mask: SrqAttr.MAX_WR | SrqAttr.LIMIT }, mandatory: true }, u32(A.MAX_WR, 'max_wr', false, 1), u32(A.SRQ_LIMIT, 'srq_limit')],
    handler: (ctx) => {
      const srq = ctx.attrs.get(A.HANDLE) as ReturnType<ProviderContext['createSrq']>;
      const mask = ctx.attrs.get(A.SRQ_MASK) as number;
      if (mask & SrqAttr.MAX_WR) fail('EOPNOTSUPP', 'resizing an SRQ is not supported', { attr: 'max_wr' });
      if (mask & SrqAttr.LIMIT) {
        const limit = ctx.attrs.get(A.SRQ_LIMIT);
        if (limit === undefined) fail('EINVAL', 'LIMIT in the mask needs srq_limit', { attr: 'srq_limit' });
        if ((limit as number) > srq.query().maxWr) fail('EINVAL', `${String(limit)} exceeds max_wr ${srq.query().maxWr}`, { attr: 'srq_limit' });
      }
      core(ctx).provider.modifySrq(srq, { srqLimit: ctx.attrs.get(A.SRQ_LIMIT) as number }, mask);
    },
  });
  r.defineMethod(Obj.SRQ, {
    id: M.SRQ.QUERY, name: 'QUERY', attrs: [handle(Obj.SRQ, 'read', 'srq_handle'), out(A.SRQ_ATTR, 'srq_attr')],
    handler: (ctx) => ({ out: { [A.SRQ_ATTR]: (ctx.attrs.get(A.HANDLE) as ReturnType<ProviderContext['createSrq']>).query() } }),
  });
  r.defineMethod(Obj.SRQ, { id: M.SRQ.DESTROY, name: 'DESTROY', attrs: [handle(Obj.SRQ, 'destroy', 'srq_handle')], handler: () => {} });

  // ---- QP ----
  r.defineObject({ id: Obj.QP, name: 'QP', destroy: (qp, c: CoreContext) => c.provider.destroyQp(qp), limit: { name: 'max_qp', max: (c: CoreContext) => c.device.queryDevice().maxQp } });
  r.defineMethod(Obj.QP, {
    id: M.QP.CREATE, name: 'CREATE',
    attrs: [
      handle(Obj.QP, 'new', 'qp_handle'), handle(Obj.PD, 'read', 'pd_handle', A.PD),
      { id: A.QP_TYPE, name: 'qp_type', type: { kind: 'enum', values: [QpType.RC, QpType.UC, QpType.UD] }, mandatory: true },
      handle(Obj.CQ, 'read', 'send_cq', A.SEND_CQ), handle(Obj.CQ, 'read', 'recv_cq', A.RECV_CQ),
      handle(Obj.SRQ, 'read', 'srq', A.SRQ, false),
      { id: A.CAP, name: 'cap', type: { kind: 'object' }, mandatory: true },
      { id: A.SQ_SIG_ALL, name: 'sq_sig_all', type: { kind: 'bool' } },
      out(A.QPN, 'qp_num'),
    ],
    handler: (ctx) => {
      const cap = ctx.attrs.get(A.CAP) as Record<string, unknown>;
      const srq = ctx.attrs.get(A.SRQ);
      const bad = checkCap(cap, core(ctx).device.queryDevice(), srq !== undefined);
      if (bad) fail('EINVAL', bad[1], { attr: bad[0] });
      const c: QpCap = {
        maxSendWr: (cap.maxSendWr as number) ?? 0, maxRecvWr: srq ? 0 : ((cap.maxRecvWr as number) ?? 0),
        maxSendSge: (cap.maxSendSge as number) ?? 1, maxRecvSge: (cap.maxRecvSge as number) ?? 1, maxInlineData: (cap.maxInlineData as number) ?? 0,
      };
      const qp = core(ctx).provider.createQp(ctx.attrs.get(A.PD) as object, {
        qpType: ctx.attrs.get(A.QP_TYPE) as number, sendCq: ctx.attrs.get(A.SEND_CQ), recvCq: ctx.attrs.get(A.RECV_CQ),
        srq, cap: c, sqSigAll: (ctx.attrs.get(A.SQ_SIG_ALL) as boolean) ?? false,
      });
      ctx.hold(ctx.handle(A.PD));
      ctx.hold(ctx.handle(A.SEND_CQ));
      ctx.hold(ctx.handle(A.RECV_CQ));
      if (srq) ctx.hold(ctx.handle(A.SRQ));
      return { created: qp, out: { [A.QPN]: qp.qpn, [A.CAP]: c } };
    },
  });
  r.defineMethod(Obj.QP, {
    id: M.QP.MODIFY, name: 'MODIFY',
    attrs: [handle(Obj.QP, 'write', 'qp_handle'), { id: A.ATTR_MASK, name: 'attr_mask', type: { kind: 'flags', mask: (1 << 21) - 1 }, mandatory: true }, { id: A.ATTR, name: 'attr', type: { kind: 'object' }, mandatory: true }],
    handler: (ctx) => {
      const qp = ctx.attrs.get(A.HANDLE) as ProviderQp;
      const mask = ctx.attrs.get(A.ATTR_MASK) as number;
      const attr = ctx.attrs.get(A.ATTR) as QpAttrValues;
      const cur = mask & QpAttr.CUR_STATE && typeof attr.curQpState === 'number' ? attr.curQpState : qp.state;
      const bad = checkQpAttrValues(attr, mask, core(ctx), qp);
      if (bad) fail('EINVAL', bad[1], { attr: verbsName(bad[0]) });
      const next = mask & QpAttr.STATE ? (attr.qpState as number) : cur;
      const t = checkTransition(qp.qpType, cur, next, mask);
      if (!t.ok) {
        const names = (bits: number) => Object.entries(QP_ATTR_NAMES).filter(([b]) => bits & Number(b)).map(([, n]) => n).join('|');
        const what = `${qpTypeName(qp.qpType)} ${qpStateName(cur)}->${qpStateName(next)}`;
        if (t.reason === 'transition') fail('EINVAL', `${what} is not a valid transition`, { attr: 'attr_mask' });
        fail('EINVAL', `${what} ${t.reason === 'missing' ? 'requires' : 'does not allow'} ${names(t.attrs)}`, { attr: 'attr_mask' });
      }
      core(ctx).provider.modifyQp(qp, attr, mask);
    },
  });
  r.defineMethod(Obj.QP, {
    id: M.QP.QUERY, name: 'QUERY', attrs: [handle(Obj.QP, 'read', 'qp_handle'), out(A.ATTR, 'attr')],
    handler: (ctx) => ({ out: { [A.ATTR]: (ctx.attrs.get(A.HANDLE) as ProviderQp).query() } }),
  });
  r.defineMethod(Obj.QP, { id: M.QP.DESTROY, name: 'DESTROY', attrs: [handle(Obj.QP, 'destroy', 'qp_handle')], handler: () => {} });

  return r;
}

/** Move a child's hold from its current parent of `type` to `to` (rereg with CHANGE_PD). */
function moveHold(child: UObject, to: UObject, type: number) {
  const i = child.holds.findIndex((h) => h.type === type);
  if (i >= 0) {
    const from = child.holds[i]!;
    if (from.usecnt > 0) from.usecnt--;
    child.holds.splice(i, 1);
  }
  child.holds.push(to);
  to.usecnt++;
}

