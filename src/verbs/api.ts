// The public verbs API. Control-path calls go through the uapi dispatcher (one place for
// validation and lifetimes); post and poll go straight to the provider's objects.

import { EventEmitter } from 'node:events';
import { Attr, M, Obj, Rereg } from '../abi/ids.js';
import { copyAhAttr, copyAv } from '../abi/av.js';
import { FirstError, shown } from '../abi/errors.js';
import { deviceCounts } from '../uapi/device-counts.js';
import { UapiContext } from '../uapi/dispatcher.js';
import { type CompChannelImpl, createRegistry, type CoreContext } from '../uapi/objects/index.js';
import type { UapiRegistry } from '../uapi/registry.js';
import type { AttrIn } from '../uapi/spec.js';
import type { ProviderCq, ProviderDevice, ProviderGsi, ProviderMr, ProviderMw, ProviderQp, ProviderSrq } from '../uapi/provider.js';
import { VerbsError, fail } from '../uapi/errors.js';
import { ASYNC_EVENT_NAMES, Access, MwType, WrOpcode } from '../abi/enums.js';
import type {
  AhAttr, AsyncEvent, DeviceAttr, GidEntry, MwBindInfo, PortAttr, QpAttrFull, QpAttrValues, QpCap, QpCapInit, RecvWr, SendWr as WireSendWr, SrqAttrValues, WorkCompletion, WrId,
} from '../abi/types.js';

const attrs = (o: Record<number, unknown>): AttrIn[] => {
  const out: AttrIn[] = [];
  for (const id in o) {
    const value = o[id];
    if (value !== undefined) out.push({ id: Number(id), value, mandatory: true });
  }
  return out;
};

const registries = new WeakMap<ProviderDevice, UapiRegistry>();
function registryFor(dev: ProviderDevice): UapiRegistry {
  let r = registries.get(dev);
  if (!r) {
    r = createRegistry();
    dev.registerDriverMethods?.(r.driver());
    registries.set(dev, r);
  }
  return r;
}

/**
 * A send work request (ibv_send_wr): a UD send names its address handle, a type 2 bind its
 * memory window, as the objects this API made (a plain object in their place is refused
 * EINVAL when posted).
 */
export interface SendWr extends Omit<WireSendWr, 'ud' | 'bindMw'> {
  ud?: { ah: AH; remoteQpn: number; remoteQkey: number };
  bindMw?: { mw: MW; rkey: number; bindInfo: MwBindInfo };
}

/** What createQp takes: with an SRQ, receives go to it and cap.maxRecvWr may be left out. */
export type QpCreateAttr = { qpType: number; sendCq: CQ; recvCq: CQ; sqSigAll?: boolean }
  & ({ srq?: undefined; cap: QpCapInit & { maxRecvWr: number } } | { srq: SRQ; cap: QpCapInit });

/** A port's QP1 (see Device.openGsi). */
export type { ProviderGsi as Gsi, GsiDest, GsiSource } from '../uapi/provider.js';

const devices: Device[] = [];
const addedListeners = new Set<(device: Device) => void>();

/** The devices this process has (ibv_get_device_list). */
export function getDeviceList(): readonly Device[] {
  return devices.slice();
}

/**
 * Call `fn` with every device made from now on, on the microtask after it is made (Linux
 * tells its ib_clients so: ib_register_device → each client's add, the rdma_cm's cma_add_one).
 * A device closed by then is not announced. Returns a function to stop.
 */
export function onDeviceAdded(fn: (device: Device) => void): () => void {
  addedListeners.add(fn);
  return () => { addedListeners.delete(fn); };
}

function announce(device: Device): void {
  if (addedListeners.size === 0) return;
  queueMicrotask(() => {
    if (!devices.includes(device)) return;
    for (const fn of [...addedListeners]) {
      try {
        fn(device);
      } catch (e) {
        // One listener that throws (a bug) keeps the device from no other; the error is not lost.
        queueMicrotask(() => { throw e; });
      }
    }
  });
}

export class Device {
  private readonly contexts = new Set<Context>();
  private keepAlive = true;
  private holds = 0;
  constructor(readonly provider: ProviderDevice & { close?(): Promise<void> }) {
    devices.push(this);
    announce(this);
  }

  /**
   * Like socket.unref(): the device no longer keeps the process alive while idle, so a
   * program ends when it has nothing else to do, even without close(). Awaiting a completion
   * (`cq.next()`, `for await (const wc of cq)`, `channel.getCqEvent()`) still keeps it alive,
   * as do retransmissions of work in flight.
   */
  unref(): this {
    this.keepAlive = false;
    this.applyKeepAlive();
    return this;
  }

  /** Undo unref(): the device keeps the process alive until close() (the default). */
  ref(): this {
    this.keepAlive = true;
    this.applyKeepAlive();
    return this;
  }

  /** @internal Keep the process alive until the returned function is called (a pending wait). */
  hold(): () => void {
    this.holds++;
    this.applyKeepAlive();
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.holds--;
      this.applyKeepAlive();
    };
  }

  private applyKeepAlive(): void {
    if (devices.includes(this)) this.provider.setKeepAlive?.(this.keepAlive || this.holds > 0);
  }
  get name(): string { return this.provider.name; }
  get driver(): string { return this.provider.driver; }
  get nodeGuid(): bigint { return this.provider.queryDevice().nodeGuid; }

  /** ibv_open_device */
  open(): Context {
    const ctx = new Context(this, registryFor(this.provider));
    this.contexts.add(ctx);
    ctx.once('close', () => this.contexts.delete(ctx));
    return ctx;
  }

  /**
   * @internal QP1 of `port` for softrdma's MAD layer (src/cm), which the kernel keeps to
   * itself: one owner at a time (EBUSY), EOPNOTSUPP on a device without one.
   */
  openGsi(port = 1): ProviderGsi {
    if (!this.provider.openGsi) fail('EOPNOTSUPP', `device ${this.name} has no GSI`, { object: 'GSI' });
    return this.provider.openGsi(port);
  }

  /** Close every context, then the device itself (its socket). */
  async close(): Promise<void> {
    // Off the list first, so what watches a context's 'close' can tell a device closing from a
    // context closed on its own (the rdma_cm's DEVICE_REMOVAL).
    const i = devices.indexOf(this);
    if (i >= 0) devices.splice(i, 1);
    // A context whose close fails (a provider's destroy threw) does not keep the others or the
    // device open; the first failure is reported once everything is down.
    const errors = new FirstError();
    for (const c of [...this.contexts]) errors.run(() => c.close());
    await this.provider.close?.();
    errors.rethrow();
  }
}

export interface AsyncEventInfo {
  type: number;
  name: string;
  qp?: QP;
  cq?: CQ;
  srq?: SRQ;
  portNum?: number;
}

/**
 * An open device (ibv_context). Emits 'async-event' (AsyncEventInfo) for QP, CQ, SRQ and
 * port events, and 'close'.
 */
/** A Context's events, typed for its listeners. */
export interface ContextEvents {
  'async-event': [info: AsyncEventInfo];
  close: [];
}

export class Context extends EventEmitter<ContextEvents> {
  readonly uapi: UapiContext<CoreContext>;
  /** Wrapper objects by provider object, for async events and completions. */
  readonly wrappers = new WeakMap<object, unknown>();
  private closed = false;

  constructor(readonly device: Device, registry: UapiRegistry) {
    super();
    const provider = device.provider.openContext((ev) => this.onAsync(ev));
    this.uapi = new UapiContext(registry, { device: device.provider, provider, maxPort: device.provider.queryDevice().physPortCnt }, deviceCounts(device.provider));
    queueMicrotask(() => this.emitAsync({ type: 9, name: 'PORT_ACTIVE', portNum: 1 }));
  }

  /** Raw uapi call (object, method, attributes): the same path every method here takes. */
  invoke(objectId: number, methodId: number, a: Record<number, unknown> | AttrIn[]): Record<number, unknown> {
    return this.uapi.invoke(objectId, methodId, Array.isArray(a) ? a : attrs(a));
  }

  private onAsync(ev: AsyncEvent): void {
    // Delivered after the call that raised it returns, as uverbs queues events on the async
    // fd: a listener that destroys the QP at QP_LAST_WQE_REACHED does it after the modify
    // that raised it, not in the middle of it (where the QP is locked: EBUSY).
    queueMicrotask(() => this.deliverAsync(ev));
  }

  private deliverAsync(ev: AsyncEvent): void {
    // An event of an object destroyed since it was raised goes with the object (as uverbs
    // drops its queued events): nothing arrives about it after destroy returns.
    if (this.uapi.uobjectOf(ev.element)?.live === false) return;
    const w = typeof ev.element === 'object' && ev.element ? this.wrappers.get(ev.element) : undefined;
    const info: AsyncEventInfo = { type: ev.type, name: ASYNC_EVENT_NAMES[ev.type] ?? String(ev.type) };
    if (w instanceof QP) info.qp = w;
    else if (w instanceof CQ) info.cq = w;
    else if (w instanceof SRQ) info.srq = w;
    this.emitAsync(info);
  }

  private emitAsync(info: AsyncEventInfo) {
    if (!this.closed) this.emit('async-event', info);
  }

  queryDevice(): DeviceAttr {
    return this.invoke(Obj.DEVICE, M.DEVICE.QUERY, {})[Attr.DEVICE.QUERY.RESP_DEVICE_ATTR] as DeviceAttr;
  }
  queryPort(portNum = 1): PortAttr {
    return this.invoke(Obj.DEVICE, M.DEVICE.QUERY_PORT, { [Attr.DEVICE.QUERY_PORT.PORT_NUM]: portNum })[Attr.DEVICE.QUERY_PORT.RESP_PORT_ATTR] as PortAttr;
  }
  queryGidTable(portNum = 1): GidEntry[] {
    return this.invoke(Obj.DEVICE, M.DEVICE.QUERY_GID_TABLE, { [Attr.DEVICE.QUERY_GID_TABLE.PORT_NUM]: portNum })[Attr.DEVICE.QUERY_GID_TABLE.RESP_ENTRIES] as GidEntry[];
  }
  queryGid(portNum = 1, index = 0): Uint8Array {
    const e = this.queryGidTable(portNum).find((g) => g.index === index);
    if (!e) fail('EINVAL', `no GID at index ${index}`, { object: 'DEVICE', method: 'QUERY_GID', attr: 'index' });
    return e.gid;
  }
  queryPkey(portNum = 1, index = 0): number {
    return this.invoke(Obj.DEVICE, M.DEVICE.QUERY_PKEY, { [Attr.DEVICE.QUERY_PKEY.PORT_NUM]: portNum, [Attr.DEVICE.QUERY_PKEY.INDEX]: index })[Attr.DEVICE.QUERY_PKEY.RESP_PKEY] as number;
  }

  allocPd(): PD {
    const h = this.invoke(Obj.PD, M.PD.ALLOC, {})[Attr.PD.ALLOC.HANDLE] as number;
    return this.wrap(new PD(this, h));
  }

  createCompChannel(): CompChannel {
    const h = this.invoke(Obj.COMP_CHANNEL, M.COMP_CHANNEL.CREATE, {})[Attr.COMP_CHANNEL.CREATE.HANDLE] as number;
    return this.wrap(new CompChannel(this, h));
  }

  createCq(cqe: number, opts: { channel?: CompChannel; compVector?: number } = {}): CQ {
    objectArg(opts, 'opts', 'CQ', 'CREATE');
    const a = Attr.CQ.CREATE;
    const out = this.invoke(Obj.CQ, M.CQ.CREATE, { [a.CQE]: cqe, [a.COMP_CHANNEL]: handleIn(this, opts.channel, 'comp_channel', 'CQ', 'CREATE'), [a.COMP_VECTOR]: opts.compVector });
    return this.wrap(new CQ(this, out[a.HANDLE] as number));
  }

  /** Live objects by type: what close() will tear down. */
  census(): Record<string, number> {
    return this.uapi.census();
  }

  /** ibv_close_device: destroys everything this context owns, children first. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    // Everything is torn down even if a step fails; the first failure is thrown after.
    const errors = new FirstError();
    errors.run(() => this.uapi.close());
    errors.run(() => this.uapi.impl.provider.close());
    this.emit('close');
    errors.rethrow();
  }

  /** @internal */
  wrap<T extends { handle: number }>(w: T): T {
    const impl = this.uapi.lookup(w.handle).impl;
    if (typeof impl === 'object' && impl) this.wrappers.set(impl, w);
    return w;
  }

  /** @internal */
  impl<T>(handle: number): T {
    return this.uapi.lookup(handle).impl as T;
  }
}

abstract class Obj_ {
  constructor(readonly context: Context, readonly handle: number) {}
}

/**
 * The handle of an object argument, which must be a wrapper of `ctx`: handles are numbered per
 * context, so another context's object would name whatever this one has under that number.
 */
function handleIn(ctx: Context, x: unknown, attr: string, object: string, method: string): number | undefined {
  if (x === undefined) return undefined;
  if (!(x instanceof Obj_) || x.context !== ctx) fail('EINVAL', 'must be an object of the same context', { object, method, attr });
  return x.handle;
}

/**
 * An options or attributes argument, which must be a plain object: checked before any field
 * is read, so a wrong shape is EINVAL naming the argument rather than a TypeError.
 */
function objectArg(x: unknown, attr: string, object: string, method: string): void {
  if (typeof x !== 'object' || x === null || Array.isArray(x)) fail('EINVAL', `must be an object, got ${x === null ? 'null' : typeof x}`, { object, method, attr });
}

/** objectArg for a method that returns a promise: the error as a rejection, as its others are. */
function rejectedArg(x: unknown, attr: string, object: string, method: string): Promise<never> | undefined {
  try {
    objectArg(x, attr, object, method);
    return undefined;
  } catch (err) {
    return Promise.reject(err);
  }
}

export class PD extends Obj_ {
  /** ibv_reg_mr: `memory` is the registered buffer; `addr` of the MR is its I/O virtual address. */
  regMr(memory: ArrayBufferView | ArrayBuffer, access: number, opts: { iova?: number } = {}): MR {
    objectArg(opts, 'opts', 'MR', 'REG');
    const a = Attr.MR.REG;
    const out = this.context.invoke(Obj.MR, M.MR.REG, { [a.PD_HANDLE]: this.handle, [a.MEMORY]: memory, [a.ACCESS_FLAGS]: access, [a.IOVA]: opts.iova });
    return this.context.wrap(new MR(this.context, out[a.HANDLE] as number, memory));
  }
  allocMw(type: 1 | 2): MW {
    const a = Attr.MW.ALLOC;
    const out = this.context.invoke(Obj.MW, M.MW.ALLOC, { [a.PD_HANDLE]: this.handle, [a.TYPE]: type });
    return this.context.wrap(new MW(this.context, out[a.HANDLE] as number));
  }
  createAh(attr: AhAttr): AH {
    const a = Attr.AH.CREATE;
    const av = copyAv(attr) as AhAttr; // read once: what the AH reports is what it was made with
    const out = this.context.invoke(Obj.AH, M.AH.CREATE, { [a.PD_HANDLE]: this.handle, [a.AH_ATTR]: av });
    return this.context.wrap(new AH(this.context, out[a.HANDLE] as number, av));
  }
  createSrq(attr: { maxWr: number; maxSge: number; srqLimit?: number }): SRQ {
    objectArg(attr, 'attr', 'SRQ', 'CREATE');
    const a = Attr.SRQ.CREATE;
    const out = this.context.invoke(Obj.SRQ, M.SRQ.CREATE, { [a.PD_HANDLE]: this.handle, [a.MAX_WR]: attr.maxWr, [a.MAX_SGE]: attr.maxSge, [a.SRQ_LIMIT]: attr.srqLimit });
    return this.context.wrap(new SRQ(this.context, out[a.HANDLE] as number));
  }
  /** ibv_create_qp: without an SRQ, `cap.maxRecvWr` is required too. */
  createQp(init: QpCreateAttr): QP {
    objectArg(init, 'init', 'QP', 'CREATE');
    const a = Attr.QP.CREATE;
    const srq = init.srq; // read once: the QP's SRQ is the one it was created with
    const out = this.context.invoke(Obj.QP, M.QP.CREATE, {
      [a.PD_HANDLE]: this.handle, [a.QP_TYPE]: init.qpType,
      [a.SEND_CQ]: handleIn(this.context, init.sendCq, 'send_cq', 'QP', 'CREATE'), [a.RECV_CQ]: handleIn(this.context, init.recvCq, 'recv_cq', 'QP', 'CREATE'),
      [a.SRQ]: handleIn(this.context, srq, 'srq', 'QP', 'CREATE'), [a.CAP]: init.cap, [a.SQ_SIG_ALL]: init.sqSigAll,
    });
    return this.context.wrap(new QP(this.context, out[a.HANDLE] as number, out[a.RESP_CAP] as QpCap, srq));
  }
  /** ibv_dealloc_pd: EBUSY while MRs, MWs, AHs, SRQs or QPs use it. */
  dealloc(): void {
    this.context.invoke(Obj.PD, M.PD.DEALLOC, { [Attr.PD.DEALLOC.HANDLE]: this.handle });
  }
}

export class MR extends Obj_ {
  constructor(context: Context, handle: number, public memory: ArrayBufferView | ArrayBuffer) {
    super(context, handle);
  }
  private get p(): ProviderMr { return this.context.impl<ProviderMr>(this.handle); }
  get lkey(): number { return this.p.lkey; }
  get rkey(): number { return this.p.rkey; }
  /** I/O virtual address of the first byte: SGEs and RETHs name bytes as addr + offset. */
  get addr(): number { return this.p.iova; }
  get length(): number { return this.p.length; }
  get access(): number { return this.p.access; }
  /** A scatter/gather entry for [offset, offset + length) of this MR. */
  sge(offset = 0, length = this.length - offset) {
    return { addr: this.addr + offset, length, lkey: this.lkey };
  }
  /** ibv_rereg_mr: new keys every time; the old ones stop working. */
  rereg(change: { pd?: PD; memory?: ArrayBufferView | ArrayBuffer; iova?: number; access?: number }): void {
    objectArg(change, 'change', 'MR', 'REREG');
    const flags = (change.pd ? Rereg.CHANGE_PD : 0) | (change.memory ? Rereg.CHANGE_TRANSLATION : 0) | (change.access !== undefined ? Rereg.CHANGE_ACCESS : 0);
    const a = Attr.MR.REREG;
    this.context.invoke(Obj.MR, M.MR.REREG, { [a.HANDLE]: this.handle, [a.FLAGS]: flags, [a.PD_HANDLE]: handleIn(this.context, change.pd, 'pd_handle', 'MR', 'REREG'), [a.MEMORY]: change.memory, [a.IOVA]: change.iova, [a.ACCESS_FLAGS]: change.access });
    if (change.memory) this.memory = change.memory;
  }
  /** ibv_dereg_mr: EINVAL while memory windows are bound to it (rxe_dereg_mr), EBUSY while other objects hold it. */
  dereg(): void {
    this.context.invoke(Obj.MR, M.MR.DEREG, { [Attr.MR.DEREG.HANDLE]: this.handle });
  }
}

/** ibv_inc_rkey: same index, next key byte. */
export function incRkey(rkey: number): number {
  return ((rkey & 0xffffff00) | ((rkey + 1) & 0xff)) >>> 0;
}

/**
 * The rkey of the last bind posted on a type 1 window, as rdma-core's rxe_bind_mw keeps it in
 * ibmw->rkey from the post on. The provider's key changes only when the bind runs, so a bind
 * posted behind another still waiting in the send queue would reuse that one's key, and the
 * key of the earlier binding would outlive the re-bind.
 */
const postedRkey = new WeakMap<MW, number>();

export class MW extends Obj_ {
  private get p(): ProviderMw { return this.context.impl<ProviderMw>(this.handle); }
  /** A type 1 window's rkey is the one its last posted bind asked for (ibv_bind_mw's). */
  get rkey(): number { return postedRkey.get(this) ?? this.p.rkey; }
  get type(): number { return this.p.type; }
  dealloc(): void {
    this.context.invoke(Obj.MW, M.MW.DEALLOC, { [Attr.MW.DEALLOC.HANDLE]: this.handle });
  }
}

export class AH extends Obj_ {
  readonly #attr: AhAttr;
  /** @internal `attr` becomes the AH's own: createAh passes the copy it made (no one else holds it). */
  constructor(context: Context, handle: number, attr: AhAttr) {
    super(context, handle);
    this.#attr = attr;
  }
  /** The address vector the AH was created with (a copy: changing it changes no AH). */
  get attr(): AhAttr { return copyAhAttr(this.#attr); }
  destroy(): void {
    this.context.invoke(Obj.AH, M.AH.DESTROY, { [Attr.AH.DESTROY.HANDLE]: this.handle });
  }
}

interface ChannelWaiter {
  resolve(cq: CQ): void;
  reject(err: unknown): void;
  release: () => void;
  signal: AbortSignal | undefined;
  onAbort: (() => void) | undefined;
}

/**
 * A completion channel: `await channel.getCqEvent()`, or a listener (onCqEvent). Each event
 * goes to exactly one reader, as a read of the channel's fd does: to the longest-waiting
 * getCqEvent() if any waits, else to the listener, else it stays queued for the next reader.
 */
export class CompChannel extends Obj_ {
  private get p(): CompChannelImpl { return this.context.impl<CompChannelImpl>(this.handle); }
  private listener: ((cq: CQ) => void) | undefined;
  private readonly waiters: ChannelWaiter[] = [];
  constructor(context: Context, handle: number) {
    super(context, handle);
    const p = this.p;
    p.on('event', () => this.deliver(p));
    p.once('close', () => this.onClose());
  }

  /**
   * ibv_get_cq_event: resolves with the CQ that was notified (keeping the process alive while
   * it waits). Several waiters get one event each, in call order. Rejects if the channel closes.
   */
  getCqEvent(opts: { signal?: AbortSignal } = {}): Promise<CQ> {
    const bad = rejectedArg(opts, 'opts', 'COMP_CHANNEL', 'GET_CQ_EVENT');
    if (bad) return bad;
    let p: CompChannelImpl;
    try {
      p = this.p;
    } catch {
      // Destroyed: a rejection, as for a waiter the destroy finds (onClose) and as cq.next().
      return Promise.reject(new VerbsError('EBADF', 'completion channel destroyed', { object: 'COMP_CHANNEL', method: 'GET_CQ_EVENT' }));
    }
    // Anything queued has no earlier waiter (deliver() would have handed it out).
    if (p.pending.length) return Promise.resolve(this.take(p));
    if (opts.signal?.aborted) return Promise.reject(opts.signal.reason);
    return new Promise((resolve, reject) => {
      const w: ChannelWaiter = { resolve, reject, release: this.context.device.hold(), signal: opts.signal, onAbort: undefined };
      if (w.signal) {
        w.onAbort = () => { this.drop(w); reject(w.signal!.reason); };
        w.signal.addEventListener('abort', w.onAbort, { once: true });
      }
      this.waiters.push(w);
    });
  }

  /**
   * Call `fn(cq)` for every CQ event no getCqEvent() waits for (the event is consumed).
   * Returns a function to stop.
   */
  onCqEvent(fn: (cq: CQ) => void): () => void {
    const p = this.p;
    if (this.listener) fail('EBUSY', 'a listener is already attached', { object: 'COMP_CHANNEL' });
    const listener = (cq: CQ) => fn(cq);
    this.listener = listener;
    this.deliver(p);
    return () => { if (this.listener === listener) this.listener = undefined; };
  }

  destroy(): void {
    this.context.invoke(Obj.COMP_CHANNEL, M.COMP_CHANNEL.DESTROY, { [Attr.COMP_CHANNEL.DESTROY.HANDLE]: this.handle });
  }

  /** Hand queued events out, one reader each: waiters first, in order, then the listener. */
  private deliver(p: CompChannelImpl): void {
    while (p.pending.length) {
      const w = this.waiters[0];
      if (w) {
        this.drop(w);
        w.resolve(this.take(p));
      } else if (this.listener) {
        this.listener(this.take(p));
      } else {
        return;
      }
    }
  }

  private take(p: CompChannelImpl): CQ {
    return this.context.wrappers.get(p.pending.shift()!) as CQ;
  }

  private drop(w: ChannelWaiter): void {
    const i = this.waiters.indexOf(w);
    if (i >= 0) this.waiters.splice(i, 1);
    w.release();
    if (w.onAbort) w.signal!.removeEventListener('abort', w.onAbort);
  }

  private onClose(): void {
    for (const w of [...this.waiters]) {
      this.drop(w);
      w.reject(new VerbsError('EBADF', 'completion channel destroyed', { object: 'COMP_CHANNEL' }));
    }
  }
}

interface CqWaiter {
  resolve(wc: WorkCompletion): void;
  reject(err: unknown): void;
  signal: AbortSignal | undefined;
  onAbort: (() => void) | undefined;
}

/**
 * A completion queue. Completions arrive on the event loop: poll() takes what is there now;
 * `await cq.next()` waits for the next one, and `for await (const wc of cq)` takes them as
 * they come (until the CQ or its context is destroyed).
 */
export class CQ extends Obj_ {
  private cq: ProviderCq;
  private readonly waiters: CqWaiter[] = [];
  private release: (() => void) | undefined;
  private scheduled = false;
  private destroyed = false;
  constructor(context: Context, handle: number) {
    super(context, handle);
    this.cq = context.impl<ProviderCq>(handle);
  }
  get cqe(): number { return this.cq.cqe; }
  /**
   * ibv_poll_cq: up to `max` completions, oldest first. `into`, like ibv_poll_cq's array of the
   * caller's: an array to fill (emptied first) and return instead of a new one, so a poller
   * that spins on an empty CQ allocates nothing.
   */
  poll(max = 16, into?: WorkCompletion[]): WorkCompletion[] {
    // A negative count polls nothing, as ibv_poll_cq's loop; what is not an integer is refused
    // (NaN or a string would have polled nothing for ever, 1.5 polled two).
    if (!Number.isInteger(max)) fail('EINVAL', `must be an integer, got ${shown(max)}`, { object: 'CQ', method: 'POLL', attr: 'num_entries' });
    if (into !== undefined && (!Array.isArray(into) || !Object.isExtensible(into))) {
      fail('EINVAL', `must be a writable array, got ${into === null ? 'null' : Array.isArray(into) ? 'a frozen or sealed array' : typeof into}`, { object: 'CQ', method: 'POLL', attr: 'into' });
    }
    return this.cq.poll(max, into);
  }
  /**
   * Whether spinning on poll() while the CQ is empty, without yielding to the event loop, can
   * bring completions in right now: true on an rxe device with busy polling (a poll reads the
   * device's socket), for a CQ without a completion channel, while the device has no work
   * waiting for the next turn of the loop and has not used up its reads for this turn. When
   * false, yield (`await` a setImmediate, or `cq.next()`) before polling again.
   */
  get canSpin(): boolean { return this.cq.canSpin === true; }

  /**
   * The next completion, oldest first, as poll(1) would return it; when the CQ is empty,
   * waits on the event loop until one arrives (keeping the process alive meanwhile, even on
   * an unref()'d device). Several waiters are served in call order. Rejects with EBADF when
   * the CQ (or its context) is destroyed, or with the signal's reason when it aborts. Works
   * with or without a completion channel, and leaves the CQ's notification state alone.
   */
  next(opts: { signal?: AbortSignal } = {}): Promise<WorkCompletion> {
    const bad = rejectedArg(opts, 'opts', 'CQ', 'NEXT');
    if (bad) return bad;
    if (this.waiters.length === 0 && !this.destroyed) {
      const wc = this.takeOne(); // destroyed: the promise rejects below
      if (wc) return Promise.resolve(wc);
    }
    if (!this.destroyed && !this.context.uapi.uobjectOf(this.cq)?.live) this.destroyed = true;
    if (this.destroyed) return Promise.reject(this.destroyedError());
    if (opts.signal?.aborted) return Promise.reject(opts.signal.reason);
    return new Promise((resolve, reject) => {
      const w: CqWaiter = { resolve, reject, signal: opts.signal, onAbort: undefined };
      if (w.signal) {
        w.onAbort = () => { this.drop(w); reject(w.signal!.reason); };
        w.signal.addEventListener('abort', w.onAbort, { once: true });
      }
      this.waiters.push(w);
      if (!this.release) {
        this.cq.onCompletion = (destroyed) => (destroyed ? this.onDestroyed() : this.schedule());
        this.release = this.context.device.hold();
      }
    });
  }

  /** `for await (const wc of cq)`: completions as they arrive; ends when the CQ is destroyed. */
  async *[Symbol.asyncIterator](): AsyncGenerator<WorkCompletion, void, undefined> {
    for (;;) {
      let wc: WorkCompletion;
      try {
        wc = await this.next();
      } catch (err) {
        if (this.destroyed) return;
        throw err;
      }
      yield wc;
    }
  }

  private schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    queueMicrotask(() => {
      this.scheduled = false;
      while (this.waiters.length && !this.destroyed) {
        const wc = this.takeOne();
        if (!wc) break;
        const w = this.waiters[0]!;
        this.drop(w);
        w.resolve(wc);
      }
    });
  }

  private drop(w: CqWaiter): void {
    const i = this.waiters.indexOf(w);
    if (i >= 0) this.waiters.splice(i, 1);
    if (w.onAbort) w.signal!.removeEventListener('abort', w.onAbort);
    if (this.waiters.length === 0 && this.release) {
      if (this.cq.onCompletion) this.cq.onCompletion = undefined;
      this.release();
      this.release = undefined;
    }
  }

  /**
   * The oldest completion, or undefined. A destroyed CQ's poll is EBADF: then the waiters are
   * told (onCompletion(true) tells them when the destroy itself is seen) and undefined returned.
   */
  private takeOne(): WorkCompletion | undefined {
    try {
      return this.cq.poll(1)[0];
    } catch (e) {
      if (!(e instanceof VerbsError && e.code === 'EBADF')) throw e;
      this.onDestroyed();
      return undefined;
    }
  }

  private onDestroyed(): void {
    this.destroyed = true;
    for (const w of [...this.waiters]) {
      this.drop(w);
      w.reject(this.destroyedError());
    }
  }

  private destroyedError(): VerbsError {
    return new VerbsError('EBADF', 'the CQ was destroyed', { object: 'CQ' });
  }
  /** ibv_req_notify_cq */
  reqNotify(solicitedOnly = false): void { this.cq.reqNotify(solicitedOnly); }
  resize(cqe: number): void {
    this.context.invoke(Obj.CQ, M.CQ.RESIZE, { [Attr.CQ.RESIZE.HANDLE]: this.handle, [Attr.CQ.RESIZE.CQE]: cqe });
  }
  destroy(): void {
    this.context.invoke(Obj.CQ, M.CQ.DESTROY, { [Attr.CQ.DESTROY.HANDLE]: this.handle });
  }
}

export class SRQ extends Obj_ {
  private srq: ProviderSrq;
  constructor(context: Context, handle: number) {
    super(context, handle);
    this.srq = context.impl<ProviderSrq>(handle);
  }
  postRecv(wr: RecvWr | RecvWr[]): void { postEach(wr, (w) => this.srq.postRecv(w), 'SRQ', 'POST_RECV'); }
  modify(attr: Partial<SrqAttrValues>, mask: number): void {
    objectArg(attr, 'attr', 'SRQ', 'MODIFY');
    const a = Attr.SRQ.MODIFY;
    this.context.invoke(Obj.SRQ, M.SRQ.MODIFY, { [a.HANDLE]: this.handle, [a.ATTR_MASK]: mask, [a.MAX_WR]: attr.maxWr, [a.SRQ_LIMIT]: attr.srqLimit });
  }
  query(): SrqAttrValues {
    return this.context.invoke(Obj.SRQ, M.SRQ.QUERY, { [Attr.SRQ.QUERY.HANDLE]: this.handle })[Attr.SRQ.QUERY.RESP_SRQ_ATTR] as SrqAttrValues;
  }
  destroy(): void {
    this.context.invoke(Obj.SRQ, M.SRQ.DESTROY, { [Attr.SRQ.DESTROY.HANDLE]: this.handle });
  }
}

export class QP extends Obj_ {
  private qp: ProviderQp;
  constructor(context: Context, handle: number, readonly cap: QpCap, readonly srq: SRQ | undefined) {
    super(context, handle);
    this.qp = context.impl<ProviderQp>(handle);
  }
  get qpn(): number { return this.qp.qpn; }
  get qpType(): number { return this.qp.qpType; }
  get state(): number { return this.qp.state; }

  /** ibv_modify_qp: `mask` is a set of QpAttr bits, checked against the IBTA table. */
  modify(attr: QpAttrValues, mask: number): void {
    this.context.invoke(Obj.QP, M.QP.MODIFY, { [Attr.QP.MODIFY.HANDLE]: this.handle, [Attr.QP.MODIFY.ATTR_MASK]: mask, [Attr.QP.MODIFY.ATTR]: attr });
  }
  query(): QpAttrFull {
    return this.context.invoke(Obj.QP, M.QP.QUERY, { [Attr.QP.QUERY.HANDLE]: this.handle })[Attr.QP.QUERY.RESP_ATTR] as QpAttrFull;
  }

  /** ibv_post_send. A list stops at the first bad WR; the error carries `badWrIndex`. */
  postSend(wr: SendWr | SendWr[]): void {
    postEach(wr, (w) => {
      if (w.ud && w.ud.ah instanceof AH) w = { ...w, ud: { ...w.ud, ah: this.context.impl(handleIn(this.context, w.ud.ah, 'ud', 'QP', 'POST_SEND')!) } };
      const mw = w.bindMw?.mw;
      if (w.bindMw && mw instanceof MW) w = { ...w, bindMw: { ...w.bindMw, mw: this.context.impl(handleIn(this.context, mw, 'bind_mw', 'QP', 'POST_SEND')!) } };
      this.qp.postSend(w);
      // Posted: the next bind of a type 1 window takes its key from this one (postedRkey). A key
      // of another index fails the bind and is not the window's.
      if (w.opcode === WrOpcode.BIND_MW && mw instanceof MW && mw.type === MwType.TYPE_1 && w.bindMw!.rkey >>> 8 === mw.rkey >>> 8) {
        postedRkey.set(mw, w.bindMw!.rkey);
      }
    }, 'QP', 'POST_SEND');
  }
  postRecv(wr: RecvWr | RecvWr[]): void { postEach(wr, (w) => this.qp.postRecv(w), 'QP', 'POST_RECV'); }

  /**
   * ibv_bind_mw for a type 1 window: posts the bind and returns the window's new rkey. What
   * ibv_bind_mw and rxe_bind_mw check before posting fails here, with nothing posted: EINVAL
   * for a window that is not type 1, a zero-based bind, or an address range without an MR;
   * EPERM for an MR of another PD than the window's or the QP's.
   */
  bindMw(mw: MW, bind: { wrId: WrId; sendFlags?: number; bindInfo: MwBindInfo }): number {
    checkBindMw(this, mw, bind);
    const rkey = incRkey(mw.rkey);
    this.postSend({ wrId: bind.wrId, opcode: WrOpcode.BIND_MW, sendFlags: bind.sendFlags ?? 0, bindMw: { mw, rkey, bindInfo: bind.bindInfo } });
    return rkey;
  }

  destroy(): void {
    this.context.invoke(Obj.QP, M.QP.DESTROY, { [Attr.QP.DESTROY.HANDLE]: this.handle });
  }
}

const BIND_MW = { object: 'QP', method: 'BIND_MW' } as const;

/** The PD an object of `ctx` holds (its parent; an MR's follows REREG). */
function pdOf(ctx: Context, o: Obj_): number | undefined {
  return ctx.uapi.lookup(o.handle).holds.find((h) => h.type === Obj.PD)?.handle;
}

/** ibv_bind_mw's and rxe_bind_mw's synchronous checks (the rest fail the bind's completion). */
function checkBindMw(qp: QP, mw: unknown, bind: unknown): asserts mw is MW {
  if (!(mw instanceof MW) || mw.context !== qp.context) fail('EINVAL', 'must be a memory window of the same context', { ...BIND_MW, attr: 'mw' });
  objectArg(bind, 'mw_bind', BIND_MW.object, BIND_MW.method);
  const info = (bind as { bindInfo?: unknown }).bindInfo;
  objectArg(info, 'bind_info', BIND_MW.object, BIND_MW.method);
  const { mr, addr, length, mwAccessFlags } = info as MwBindInfo;
  if (mw.type !== MwType.TYPE_1) fail('EINVAL', 'only type 1 windows are bound this way; type 2 takes a BIND_MW work request', { ...BIND_MW, attr: 'mw' });
  if (!mr && (addr || length)) fail('EINVAL', 'is needed for a non-zero addr or length', { ...BIND_MW, attr: 'bind_info.mr' });
  if (typeof mwAccessFlags === 'number' && mwAccessFlags & Access.ZERO_BASED) fail('EINVAL', 'a type 1 window cannot be ZERO_BASED', { ...BIND_MW, attr: 'bind_info.mw_access_flags' });
  // Only an MR wrapper says which PD it is in; a bare { lkey } is left to the bind itself.
  if (mr instanceof MR) {
    const pd = mr.context === qp.context ? pdOf(qp.context, mr) : undefined;
    if (pd === undefined || pd !== pdOf(qp.context, mw) || pd !== pdOf(qp.context, qp)) fail('EPERM', 'is in another PD than the window or the QP', { ...BIND_MW, attr: 'bind_info.mr' });
  }
}

function postEach<T>(wr: T | T[], post: (w: T) => void, object: string, method: string): void {
  const one = (w: T) => {
    if (typeof w !== 'object' || w === null) fail('EINVAL', 'a work request must be an object', { object, method, attr: 'wr' });
    post(w);
  };
  if (!Array.isArray(wr)) return one(wr);
  for (let i = 0; i < wr.length; i++) {
    try {
      one(wr[i]!);
    } catch (err) {
      if (err instanceof VerbsError) (err as VerbsError & { badWrIndex?: number }).badWrIndex = i;
      throw err;
    }
  }
}
