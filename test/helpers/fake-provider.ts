// A provider with no network: it implements uapi's provider interface (src/uapi/provider.ts)
// with plain objects and records every call, so tests of the uapi's own rules (handles,
// lifetimes, limits, validation) run without a UDP socket and can see what reached the
// provider, in which order.

import { Access, Mtu, PortState, QpState } from '../../src/abi/enums.js';
import type { AhAttr, AsyncEvent, DeviceAttr, GidEntry, PortAttr, QpAttrFull, QpAttrValues, QpInitAttr, RecvWr, SendWr, SrqAttrValues, WorkCompletion } from '../../src/abi/types.js';
import type { ProviderContext, ProviderCq, ProviderDevice, ProviderMr, ProviderMw, ProviderQp, ProviderSrq } from '../../src/uapi/provider.js';
import type { DriverRegistrar } from '../../src/uapi/registry.js';

/** Limits a test may lower; the rest of DeviceAttr is fixed. */
export type FakeLimits = Partial<Pick<DeviceAttr, 'maxPd' | 'maxCq' | 'maxCqe' | 'maxQp' | 'maxQpWr' | 'maxSge' | 'maxMr' | 'maxMw' | 'maxAh' | 'maxSrq' | 'maxSrqWr' | 'maxSrqSge' | 'maxMrSize'>>;

/** One call that reached the provider: its name and the object it made or ended. */
export interface FakeCall {
  op: string;
  obj?: FakeObject;
}

/** Every object the fake makes: a kind ('pd', 'cq', ...) and a serial number. */
export interface FakeObject {
  readonly kind: string;
  readonly id: number;
}

export class FakeCq implements ProviderCq, FakeObject {
  readonly kind = 'cq';
  onNotify: (() => void) | undefined;
  onCompletion?: ((destroyed: boolean) => void) | undefined;
  readonly queue: WorkCompletion[] = [];
  armed = false;
  constructor(readonly id: number, public cqe: number) {}
  poll(max: number, into?: WorkCompletion[]): WorkCompletion[] {
    const got = this.queue.splice(0, max);
    if (!into) return got;
    into.length = 0;
    into.push(...got);
    return into;
  }
  reqNotify(): void { this.armed = true; }
  /** What the provider does on a completion: queue it, then tell who listens. */
  complete(wc: WorkCompletion): void {
    this.queue.push(wc);
    if (this.armed) { this.armed = false; this.onNotify?.(); }
    this.onCompletion?.(false);
  }
}

export class FakeMr implements ProviderMr, FakeObject {
  readonly kind = 'mr';
  boundMwCount = 0;
  constructor(readonly id: number, public pd: object, public length: number, public iova: number, public access: number, public lkey: number, public rkey: number) {}
}

export class FakeQp implements ProviderQp, FakeObject {
  readonly kind = 'qp';
  state: number = QpState.RESET;
  readonly posted: Array<SendWr | RecvWr> = [];
  constructor(readonly id: number, readonly qpn: number, readonly init: QpInitAttr) {}
  get qpType(): number { return this.init.qpType; }
  postSend(wr: SendWr): void { this.posted.push(wr); }
  postRecv(wr: RecvWr): void { this.posted.push(wr); }
  query(): QpAttrFull {
    return {
      qpState: this.state, qpAccessFlags: 0, pkeyIndex: 0, portNum: 1, qkey: 0, ahAttr: undefined, pathMtu: Mtu.MTU_1024,
      timeout: 0, retryCnt: 0, rnrRetry: 0, rqPsn: 0, sqPsn: 0, maxRdAtomic: 0, maxDestRdAtomic: 0, minRnrTimer: 0,
      pathMigState: 0, cap: this.init.cap, destQpNum: 0, sqDraining: false,
    };
  }
}

export class FakeSrq implements ProviderSrq, FakeObject {
  readonly kind = 'srq';
  constructor(readonly id: number, public attr: SrqAttrValues) {}
  postRecv(): void {}
  query(): SrqAttrValues { return { ...this.attr }; }
}

export class FakeContext implements ProviderContext {
  private serial = 0;
  constructor(private readonly dev: FakeDevice, readonly onEvent: (ev: AsyncEvent) => void) {}

  private make<T extends FakeObject>(op: string, obj: T): T {
    this.dev.calls.push({ op, obj });
    return obj;
  }
  private end(op: string, obj: object): void {
    if (this.dev.failNext === op) {
      this.dev.failNext = undefined;
      throw new Error(`fake ${op} failed`);
    }
    this.dev.calls.push({ op, obj: obj as FakeObject });
  }
  private next(): number { return ++this.serial; }

  allocPd(): object { return this.make('allocPd', { kind: 'pd', id: this.next() }); }
  deallocPd(pd: object): void { this.end('deallocPd', pd); }
  regMr(pd: object, mem: Uint8Array, iova: number | undefined, access: number): ProviderMr {
    const id = this.next();
    return this.make('regMr', new FakeMr(id, pd, mem.length, iova ?? 0x1000 * id, access, id << 8, access & Access.REMOTE_WRITE ? (id << 8) | 1 : 0));
  }
  reregMr(mr: ProviderMr, change: { pd?: object; mem?: Uint8Array; iova?: number; access?: number }): void {
    const m = mr as FakeMr;
    if (change.pd) m.pd = change.pd;
    if (change.mem) { m.length = change.mem.length; m.iova = change.iova ?? m.iova; }
    if (change.access !== undefined) m.access = change.access;
    m.lkey++;
    m.rkey++;
    this.end('reregMr', mr);
  }
  deregMr(mr: ProviderMr): void { this.end('deregMr', mr); }
  allocMw(_pd: object, type: number): ProviderMw { return this.make('allocMw', { kind: 'mw', id: this.next(), rkey: 0x100, type }); }
  deallocMw(mw: ProviderMw): void { this.end('deallocMw', mw); }
  createCq(cqe: number): ProviderCq { return this.make('createCq', new FakeCq(this.next(), cqe)); }
  resizeCq(cq: ProviderCq, cqe: number): void { (cq as FakeCq).cqe = cqe; this.end('resizeCq', cq); }
  destroyCq(cq: ProviderCq): void { this.end('destroyCq', cq); }
  createAh(_pd: object, _attr: AhAttr): object { return this.make('createAh', { kind: 'ah', id: this.next() }); }
  destroyAh(ah: object): void { this.end('destroyAh', ah); }
  createSrq(_pd: object, attr: SrqAttrValues): ProviderSrq { return this.make('createSrq', new FakeSrq(this.next(), { ...attr })); }
  modifySrq(srq: ProviderSrq, attr: Partial<SrqAttrValues>): void {
    if (attr.srqLimit !== undefined) (srq as FakeSrq).attr.srqLimit = attr.srqLimit;
    this.end('modifySrq', srq);
  }
  destroySrq(srq: ProviderSrq): void { this.end('destroySrq', srq); }
  createQp(_pd: object, init: QpInitAttr): ProviderQp {
    const id = this.next();
    return this.make('createQp', new FakeQp(id, 0x10 + id, init));
  }
  modifyQp(qp: ProviderQp, attr: QpAttrValues): void {
    if (attr.qpState !== undefined) (qp as FakeQp).state = attr.qpState;
    this.end('modifyQp', qp);
  }
  destroyQp(qp: ProviderQp): void { this.end('destroyQp', qp); }
  close(): void { this.dev.calls.push({ op: 'closeContext' }); }
}

const GID = new Uint8Array([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 127, 0, 0, 1]);

export class FakeDevice implements ProviderDevice {
  readonly name = 'fake0';
  readonly driver = 'fake';
  /** Every call that reached the provider, in order. */
  readonly calls: FakeCall[] = [];
  readonly contexts: FakeContext[] = [];
  keepAlive: boolean | undefined;
  /** The next call of this teardown op (e.g. 'deregMr') throws instead of running. */
  failNext: string | undefined;

  constructor(private readonly limits: FakeLimits = {}, private readonly driverMethods?: (r: DriverRegistrar) => void) {}

  queryDevice(): DeviceAttr {
    return {
      fwVer: '0.0.0', nodeGuid: 1n, sysImageGuid: 1n, maxMrSize: 1 << 20, pageSizeCap: 0xfffff000, vendorId: 0, vendorPartId: 0,
      hwVer: 0, maxQp: 64, maxQpWr: 64, deviceCapFlags: 0, maxSge: 4, maxCq: 64, maxCqe: 256, maxMr: 64, maxPd: 64,
      maxQpRdAtom: 1, maxQpInitRdAtom: 1, maxMw: 64, maxAh: 64, maxSrq: 64, maxSrqWr: 64, maxSrqSge: 4, maxInlineData: 0,
      atomicCap: 'NONE', physPortCnt: 1, ...this.limits,
    };
  }
  queryPort(): PortAttr {
    return {
      state: PortState.ACTIVE, maxMtu: Mtu.MTU_4096, activeMtu: Mtu.MTU_1024, gidTblLen: 1, portCapFlags: 0, maxMsgSz: 1 << 20,
      pkeyTblLen: 1, lid: 0, smLid: 0, linkLayer: 'Ethernet', activeWidth: 1, activeSpeed: 1, physState: 5,
    };
  }
  gidTable(): GidEntry[] { return [{ index: 0, gid: GID, type: 'RoCE v2', address: '127.0.0.1' }]; }
  queryPkey(): number { return 0xffff; }
  openContext(onEvent: (ev: AsyncEvent) => void): ProviderContext {
    const c = new FakeContext(this, onEvent);
    this.contexts.push(c);
    return c;
  }
  registerDriverMethods(r: DriverRegistrar): void { this.driverMethods?.(r); }
  setKeepAlive(on: boolean): void { this.keepAlive = on; }
  async close(): Promise<void> {}

  /** The ops recorded so far, as 'op kind#id' strings, and forget them. */
  takeCalls(): string[] {
    const out = this.calls.map((c) => (c.obj ? `${c.op} ${c.obj.kind}#${c.obj.id}` : c.op));
    this.calls.length = 0;
    return out;
  }
}
