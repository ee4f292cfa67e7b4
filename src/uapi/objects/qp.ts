// QP: a queue pair in a PD, with send and receive CQs and optionally an SRQ (it holds all
// of them). MODIFY checks each attribute's value, then the IBTA table of which attributes a
// transition requires and allows (qp-transitions.ts), before the provider sees the call.

import { Access, QP_ATTR_NAMES, QpAttr, QpState, QpType, qpStateName, qpTypeName } from '../../abi/enums.js';
import { Attr, M, Obj } from '../../abi/ids.js';
import type { QpAttrFull, QpAttrValues, QpCap, QpCapInit } from '../../abi/types.js';
import { isFlagWord } from '../attr-values.js';
import { bool, flags, handle, mandatory, newHandle, object, oneOf, out } from '../attrs.js';
import { fail } from '../errors.js';
import type { ProviderCq, ProviderDevice, ProviderQp, ProviderSrq } from '../provider.js';
import { checkTransition } from '../qp-transitions.js';
import type { UapiRegistry } from '../registry.js';
import { copyAv } from '../../abi/av.js';
import { checkGid } from './ah.js';
import { overMax, verbsName, type CoreContext } from './core.js';
import { shown } from '../../abi/errors.js';

const CREATE = {
  handle: newHandle(Attr.QP.CREATE.HANDLE, 'qp_handle', Obj.QP),
  pd: mandatory(handle<object>(Attr.QP.CREATE.PD_HANDLE, 'pd_handle', Obj.PD, 'read')),
  qpType: mandatory(oneOf(Attr.QP.CREATE.QP_TYPE, 'qp_type', [QpType.RC, QpType.UC, QpType.UD])),
  sendCq: mandatory(handle<ProviderCq>(Attr.QP.CREATE.SEND_CQ, 'send_cq', Obj.CQ, 'read')),
  recvCq: mandatory(handle<ProviderCq>(Attr.QP.CREATE.RECV_CQ, 'recv_cq', Obj.CQ, 'read')),
  srq: handle<ProviderSrq>(Attr.QP.CREATE.SRQ, 'srq', Obj.SRQ, 'read'),
  // Checked field by field in the handler (checkCap), so its fields are unknown until then.
  cap: mandatory(object<Partial<Record<keyof QpCapInit, unknown>>>(Attr.QP.CREATE.CAP, 'cap')),
  sqSigAll: bool(Attr.QP.CREATE.SQ_SIG_ALL, 'sq_sig_all'),
  qpNum: out<number>(Attr.QP.CREATE.RESP_QP_NUM, 'qp_num'),
  respCap: out<QpCap>(Attr.QP.CREATE.RESP_CAP, 'resp_cap'),
};
const MODIFY = {
  handle: mandatory(handle<ProviderQp>(Attr.QP.MODIFY.HANDLE, 'qp_handle', Obj.QP, 'write')),
  mask: mandatory(flags(Attr.QP.MODIFY.ATTR_MASK, 'attr_mask', (1 << 21) - 1)),
  // Checked field by field, as the mask selects them (checkQpAttrValues).
  attr: mandatory(object<QpAttrValues>(Attr.QP.MODIFY.ATTR, 'attr')),
};
const QUERY = {
  handle: mandatory(handle<ProviderQp>(Attr.QP.QUERY.HANDLE, 'qp_handle', Obj.QP, 'read')),
  attr: out<QpAttrFull>(Attr.QP.QUERY.RESP_ATTR, 'attr'),
};
const DESTROY = { handle: mandatory(handle<ProviderQp>(Attr.QP.DESTROY.HANDLE, 'qp_handle', Obj.QP, 'destroy')) };

/** The attribute at fault (a verbs name) and what is wrong with it. */
type Problem = [string, string];

/**
 * The capacities against the device's maxima (rxe_qp_chk_cap). No lower bound: a 0-entry
 * queue is legal (posting to it fails as to a full one). With an SRQ the QP has no receive
 * queue, so its receive capacities are not looked at.
 */
function checkCap(c: Partial<Record<keyof QpCapInit, unknown>>, dev: ReturnType<ProviderDevice['queryDevice']>, hasSrq: boolean): Problem | undefined {
  const lim: Array<[keyof QpCap, string, number]> = [['maxSendWr', 'max_qp_wr', dev.maxQpWr], ['maxSendSge', 'max_sge', dev.maxSge], ['maxInlineData', 'max_inline_data', dev.maxInlineData]];
  if (!hasSrq) lim.push(['maxRecvWr', 'max_qp_wr', dev.maxQpWr], ['maxRecvSge', 'max_sge', dev.maxSge]);
  for (const [k, limit, max] of lim) {
    const v = c[k] === undefined ? 0 : c[k];
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 0) return [`cap.${verbsName(k)}`, `must be a non-negative integer, got ${shown(v)}`];
    if (v > max) return [`cap.${verbsName(k)}`, overMax(v, limit, max)];
  }
  if (c.maxSendWr === undefined) return ['cap.max_send_wr', 'is required'];
  if (!hasSrq && c.maxRecvWr === undefined) return ['cap.max_recv_wr', 'is required without an SRQ'];
  return undefined;
}

/** What the value checks of modify_qp read besides the attributes (the device's limits on demand). */
interface CheckEnv {
  attr: QpAttrValues;
  core: CoreContext;
  qp: ProviderQp;
  dev: ReturnType<ProviderDevice['queryDevice']> | undefined;
  port: ReturnType<ProviderDevice['queryPort']> | undefined;
}

const range = (name: string, v: unknown, min: number, max: number): Problem | undefined =>
  typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max ? [name, `must be ${min}..${max}, got ${shown(v)}`] : undefined;
const devOf = (e: CheckEnv) => (e.dev ??= e.core.device.queryDevice());
const portOf = (e: CheckEnv) => (e.port ??= e.core.device.queryPort(1));

/**
 * Value checks for modify_qp by mask bit, in the order they are made. One table for every
 * call (the checks once were closures made per call, and the device and port queried whether
 * a check needed them or not: measurable in a connection's setup, which modifies QPs 4 times).
 */
const QP_ATTR_CHECKS: ReadonlyArray<readonly [number, (e: CheckEnv) => Problem | undefined]> = [
  [QpAttr.STATE, ({ attr }) => range('qpState', attr.qpState, 0, 6)],
  [QpAttr.CUR_STATE, ({ attr, qp }) => (attr.curQpState !== qp.state ? ['curQpState', `is ${qpStateName(attr.curQpState ?? -1)} but the QP is ${qpStateName(qp.state)}`] : undefined)],
  [QpAttr.ACCESS_FLAGS, ({ attr }) => {
    const v = attr.qpAccessFlags;
    const allowed = Access.LOCAL_WRITE | Access.REMOTE_WRITE | Access.REMOTE_READ | Access.REMOTE_ATOMIC | Access.MW_BIND;
    if (!isFlagWord(v)) return ['qpAccessFlags', `must be a 32-bit flag word, got ${shown(v)}`];
    if ((v & ~allowed) !== 0) return ['qpAccessFlags', `unknown bits in ${String(v)}`];
    return undefined;
  }],
  [QpAttr.PKEY_INDEX, (e) => range('pkeyIndex', e.attr.pkeyIndex, 0, portOf(e).pkeyTblLen - 1)],
  [QpAttr.PORT, ({ attr, core }) => range('portNum', attr.portNum, 1, core.maxPort)],
  [QpAttr.QKEY, ({ attr }) => range('qkey', attr.qkey, 0, 0xffffffff)],
  [QpAttr.AV, ({ attr, core }) => {
    const p = typeof attr.ahAttr === 'object' && attr.ahAttr ? checkGid(attr.ahAttr as unknown as Record<string, unknown>, core.device.gidTable(1).length) : 'ahAttr is required';
    return p ? ['ahAttr', p] : undefined;
  }],
  [QpAttr.PATH_MTU, (e) => range('pathMtu', e.attr.pathMtu, 1, portOf(e).maxMtu)],
  [QpAttr.TIMEOUT, ({ attr }) => range('timeout', attr.timeout, 0, 31)],
  [QpAttr.RETRY_CNT, ({ attr }) => range('retryCnt', attr.retryCnt, 0, 7)],
  [QpAttr.RNR_RETRY, ({ attr }) => range('rnrRetry', attr.rnrRetry, 0, 7)],
  // u32 as the ABI's; the handler masks them to 24 bits, as _ib_modify_qp ("psn overflow, masking to 24 bits").
  [QpAttr.RQ_PSN, ({ attr }) => range('rqPsn', attr.rqPsn, 0, 0xffffffff)],
  [QpAttr.SQ_PSN, ({ attr }) => range('sqPsn', attr.sqPsn, 0, 0xffffffff)],
  [QpAttr.MAX_QP_RD_ATOMIC, (e) => range('maxRdAtomic', e.attr.maxRdAtomic, 0, devOf(e).maxQpInitRdAtom)],
  [QpAttr.MAX_DEST_RD_ATOMIC, (e) => range('maxDestRdAtomic', e.attr.maxDestRdAtomic, 0, devOf(e).maxQpRdAtom)],
  [QpAttr.MIN_RNR_TIMER, ({ attr }) => range('minRnrTimer', attr.minRnrTimer, 0, 31)],
  [QpAttr.DEST_QPN, ({ attr }) => range('destQpNum', attr.destQpNum, 1, 0xffffff)],
  [QpAttr.PATH_MIG_STATE, ({ attr }) => range('pathMigState', attr.pathMigState, 0, 2)],
  [QpAttr.ALT_PATH, () => ['altPath', 'alternate paths (APM) are not supported by software RoCE']],
  [QpAttr.CAP, () => ['cap', 'resizing work queues with modify_qp is not supported']],
];

/** The field of ibv_qp_attr each mask bit selects (ALT_PATH has none: it is refused). */
const QP_ATTR_FIELDS: ReadonlyArray<readonly [number, keyof QpAttrValues]> = [
  [QpAttr.STATE, 'qpState'], [QpAttr.CUR_STATE, 'curQpState'], [QpAttr.EN_SQD_ASYNC_NOTIFY, 'enSqdAsyncNotify'],
  [QpAttr.ACCESS_FLAGS, 'qpAccessFlags'], [QpAttr.PKEY_INDEX, 'pkeyIndex'], [QpAttr.PORT, 'portNum'], [QpAttr.QKEY, 'qkey'],
  [QpAttr.AV, 'ahAttr'], [QpAttr.PATH_MTU, 'pathMtu'], [QpAttr.TIMEOUT, 'timeout'], [QpAttr.RETRY_CNT, 'retryCnt'],
  [QpAttr.RNR_RETRY, 'rnrRetry'], [QpAttr.RQ_PSN, 'rqPsn'], [QpAttr.MAX_QP_RD_ATOMIC, 'maxRdAtomic'],
  [QpAttr.MIN_RNR_TIMER, 'minRnrTimer'], [QpAttr.SQ_PSN, 'sqPsn'], [QpAttr.MAX_DEST_RD_ATOMIC, 'maxDestRdAtomic'],
  [QpAttr.PATH_MIG_STATE, 'pathMigState'], [QpAttr.CAP, 'cap'], [QpAttr.DEST_QPN, 'destQpNum'],
];

/**
 * modify_qp's attributes as the mask selects them, each read once, the address vector copied
 * (abi/av.ts): the checks and the provider see the same values, and the QP keeps none of the
 * caller's objects.
 */
function snapshotQpAttr(attr: QpAttrValues, mask: number): QpAttrValues {
  const a = attr as Record<string, unknown>;
  const out: Record<string, unknown> = {};
  for (const [bit, key] of QP_ATTR_FIELDS) {
    if (!(mask & bit)) continue;
    const v = a[key];
    out[key] = key === 'ahAttr' ? copyAv(v) : v;
  }
  return out as QpAttrValues;
}

/** Value checks for modify_qp, beyond which attributes are allowed. */
function checkQpAttrValues(attr: QpAttrValues, mask: number, core: CoreContext, qp: ProviderQp): Problem | undefined {
  const env: CheckEnv = { attr, core, qp, dev: undefined, port: undefined };
  for (const [bit, check] of QP_ATTR_CHECKS) {
    if (mask & bit) {
      const r = check(env);
      if (r) return r;
    }
  }
  return undefined;
}

/**
 * rxe's __qp_chk_state: while SQD still drains work the requester has started, the only
 * state change allowed is to ERR (leaving, or re-entering, SQD waits for SQ_DRAINED).
 */
function checkSqdDrain(qp: ProviderQp, cur: number, next: number, mask: number): void {
  if (!(mask & QpAttr.STATE) || cur !== QpState.SQD || next === QpState.ERR) return;
  if (qp.query().sqDraining) fail('EINVAL', `the send queue is still draining: only ERR is allowed until SQ_DRAINED, not ${qpStateName(next)}`, { attr: 'qp_state' });
}

export function defineQp(r: UapiRegistry): void {
  r.defineObject({
    id: Obj.QP, name: 'QP',
    destroy: (qp: ProviderQp, c: CoreContext) => c.provider.destroyQp(qp),
    limit: { name: 'max_qp', max: (c: CoreContext) => c.device.queryDevice().maxQp },
  });
  r.defineMethod<CoreContext>(Obj.QP, {
    id: M.QP.CREATE, name: 'CREATE', attrs: Object.values(CREATE),
    handler: (ctx) => {
      // Each field read once: what checkCap passes is what the QP gets.
      const given = ctx.get(CREATE.cap);
      const cap: Partial<Record<keyof QpCapInit, unknown>> = {
        maxSendWr: given.maxSendWr, maxRecvWr: given.maxRecvWr, maxSendSge: given.maxSendSge, maxRecvSge: given.maxRecvSge, maxInlineData: given.maxInlineData,
      };
      const srq = ctx.get(CREATE.srq);
      const bad = checkCap(cap, ctx.context.device.queryDevice(), srq !== undefined);
      if (bad) fail('EINVAL', bad[1], { attr: bad[0] });
      // checkCap has made every given field a non-negative integer.
      const n = (v: unknown, otherwise: number) => (v as number | undefined) ?? otherwise;
      const c: QpCap = {
        maxSendWr: n(cap.maxSendWr, 0), maxRecvWr: srq ? 0 : n(cap.maxRecvWr, 0),
        // With an SRQ there is no receive queue: rxe_qp_to_attr reports no receive caps.
        maxSendSge: n(cap.maxSendSge, 1), maxRecvSge: srq ? 0 : n(cap.maxRecvSge, 1), maxInlineData: n(cap.maxInlineData, 0),
      };
      const qp = ctx.context.provider.createQp(ctx.get(CREATE.pd), {
        qpType: ctx.get(CREATE.qpType), sendCq: ctx.get(CREATE.sendCq), recvCq: ctx.get(CREATE.recvCq),
        srq, cap: c, sqSigAll: ctx.get(CREATE.sqSigAll) ?? false,
      });
      ctx.hold(ctx.handle(CREATE.pd));
      ctx.hold(ctx.handle(CREATE.sendCq));
      ctx.hold(ctx.handle(CREATE.recvCq));
      if (srq) ctx.hold(ctx.handle(CREATE.srq));
      ctx.set(CREATE.qpNum, qp.qpn);
      // What the provider made of them: a queue may hold more than asked (rxe rounds its sizes
      // up), and the response says so, as ib_uverbs_create_qp returns the driver's caps.
      ctx.set(CREATE.respCap, qp.query().cap);
      return { created: qp };
    },
  });
  r.defineMethod<CoreContext>(Obj.QP, {
    id: M.QP.MODIFY, name: 'MODIFY', attrs: Object.values(MODIFY),
    handler: (ctx) => {
      const qp = ctx.get(MODIFY.handle);
      const mask = ctx.get(MODIFY.mask);
      const attr = snapshotQpAttr(ctx.get(MODIFY.attr), mask);
      const cur = mask & QpAttr.CUR_STATE && typeof attr.curQpState === 'number' ? attr.curQpState : qp.state;
      const bad = checkQpAttrValues(attr, mask, ctx.context, qp);
      if (bad) fail('EINVAL', bad[1], { attr: verbsName(bad[0]) });
      if (mask & QpAttr.RQ_PSN) attr.rqPsn = attr.rqPsn! & 0xffffff;
      if (mask & QpAttr.SQ_PSN) attr.sqPsn = attr.sqPsn! & 0xffffff;
      const next = mask & QpAttr.STATE ? (attr.qpState as number) : cur;
      const t = checkTransition(qp.qpType, cur, next, mask);
      if (!t.ok) {
        const names = (bits: number) => Object.entries(QP_ATTR_NAMES).filter(([b]) => bits & Number(b)).map(([, n]) => n).join('|');
        const what = `${qpTypeName(qp.qpType)} ${qpStateName(cur)}->${qpStateName(next)}`;
        if (t.reason === 'transition') fail('EINVAL', `${what} is not a valid transition`, { attr: 'attr_mask' });
        fail('EINVAL', `${what} ${t.reason === 'missing' ? 'requires' : 'does not allow'} ${names(t.attrs)}`, { attr: 'attr_mask' });
      }
      checkSqdDrain(qp, cur, next, mask);
      ctx.context.provider.modifyQp(qp, attr, mask);
    },
  });
  r.defineMethod<CoreContext>(Obj.QP, {
    id: M.QP.QUERY, name: 'QUERY', attrs: Object.values(QUERY),
    handler: (ctx) => {
      const a = ctx.get(QUERY.handle).query();
      // The QP's address vector stays the QP's: the caller gets a copy to change as it likes.
      ctx.set(QUERY.attr, a.ahAttr ? { ...a, ahAttr: copyAv(a.ahAttr) as QpAttrFull['ahAttr'] } : a);
    },
  });
  r.defineMethod<CoreContext>(Obj.QP, { id: M.QP.DESTROY, name: 'DESTROY', attrs: Object.values(DESTROY), handler: () => {} });
}
