// A uapi context (the ufile of uverbs): its handle table and the one dispatcher that checks
// every control-path call before a method sees it. Lifetimes follow the kernel's rules:
// an object named by live children cannot be destroyed (EBUSY), handles are never reused,
// and closing the context tears everything down in dependency order.

import { VerbsError, fail } from './errors.js';
import type { RegisteredObject, UapiRegistry } from './registry.js';
import type { AttrIn, AttrSpec, AttrType, MethodContext, MethodSpec, UObject } from './spec.js';

/**
 * Live objects of each limited type (ObjectSpec.limit) on one device, shared by every context
 * opened on it: the kernel counts max_pd, max_qp, ... per ib_device, not per open file.
 */
export class ObjectCounts {
  private readonly live = new Map<number, number>();
  get(type: number): number { return this.live.get(type) ?? 0; }
  add(type: number, n: number): void { this.live.set(type, Math.max(0, this.get(type) + n)); }
}

const countsByDevice = new WeakMap<object, ObjectCounts>();

/** The object counts of a device (any object identifying it, e.g. its provider device). */
export function deviceCounts(device: object): ObjectCounts {
  let c = countsByDevice.get(device);
  if (!c) countsByDevice.set(device, (c = new ObjectCounts()));
  return c;
}

export class UapiContext<Impl = unknown> {
  private readonly handles = new Map<number, UObject>();
  private readonly byImpl = new WeakMap<object, UObject>();
  private nextHandle = 1;
  private closed = false;

  constructor(
    readonly registry: UapiRegistry,
    readonly impl: Impl,
    /** Where limited objects are counted: the device's (deviceCounts), or this context's own. */
    readonly counts: ObjectCounts = new ObjectCounts(),
  ) {}

  get objectCount(): number {
    return this.handles.size;
  }

  /** Count of live objects by object name (for leak checks and tools). */
  census(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const u of this.handles.values()) {
      const name = this.registry.objects.get(u.type)?.name ?? String(u.type);
      out[name] = (out[name] ?? 0) + 1;
    }
    return out;
  }

  uobjectOf(impl: unknown): UObject | undefined {
    return typeof impl === 'object' && impl !== null ? this.byImpl.get(impl) : undefined;
  }

  lookup(handle: number, type?: number): UObject {
    const u = this.handles.get(handle);
    if (!u || !u.live) fail('ENOENT', `no live object with handle ${handle}`);
    if (type !== undefined && u.type !== type) {
      fail('EINVAL', `handle ${handle} is a ${this.objName(u.type)}, not a ${this.objName(type)}`);
    }
    return u;
  }

  /** Data-path users (e.g. an MW bound to an MR) pin and unpin objects through these. */
  retain(impl: unknown): void {
    const u = this.uobjectOf(impl);
    if (u) u.usecnt++;
  }

  release(impl: unknown): void {
    const u = this.uobjectOf(impl);
    if (u && u.usecnt > 0) u.usecnt--;
  }

  invoke(objectId: number, methodId: number, attrsIn: readonly AttrIn[]): Record<number, unknown> {
    const obj = this.registry.objects.get(objectId);
    if (!obj) fail('EPROTONOSUPPORT', `unknown object id ${objectId}`);
    const method = obj.methods.get(methodId);
    if (!method) fail('EPROTONOSUPPORT', `unknown method id ${methodId}`, { object: obj.name });
    const site = { object: obj.name, method: method.name };
    if (this.closed) fail('EBADF', 'the context is closed', site);

    const { values, uobjs } = this.validate(obj, method, attrsIn);
    const held: UObject[] = [];
    const newAttr = method.attrs.find((a) => a.type.kind === 'handle' && a.type.access === 'new');
    const destroyAttr = method.attrs.find((a) => a.type.kind === 'handle' && a.type.access === 'destroy');

    if (destroyAttr) {
      const victim = uobjs.get(destroyAttr.id)!;
      const reason = this.busyReason(victim);
      if (reason) fail('EBUSY', reason, { ...site, attr: destroyAttr.name });
    }
    // The device's object-count limits, checked here for every object type that has one.
    const newType = newAttr ? (newAttr.type as { object: number }).object : -1;
    const limit = newAttr ? this.registry.objects.get(newType)?.limit : undefined;
    if (limit) {
      const max = limit.max(this.impl);
      if (this.counts.get(newType) >= max) fail('ENOMEM', `device limit ${limit.name} (${max}) reached`, site);
    }

    const ctx: MethodContext<Impl> = {
      attrs: values,
      context: this.impl,
      handle: (id) => {
        const u = uobjs.get(id);
        if (!u) fail('EINVAL', `attribute id ${id} is not a handle of this call`, site);
        return u;
      },
      hold: (parent) => {
        const u = (parent as UObject)?.handle !== undefined && (parent as UObject).holds ? (parent as UObject) : this.uobjectOf(parent);
        if (!u) fail('EINVAL', 'hold: not an object of this context', site);
        held.push(u);
      },
    };

    let result;
    try {
      result = method.handler(ctx) ?? {};
    } catch (err) {
      if (err instanceof VerbsError) {
        if (err.object) throw err;
        throw new VerbsError(err.code, err.detail, { ...site, attr: err.attr });
      }
      if (err instanceof RangeError || err instanceof TypeError) throw new VerbsError('EINVAL', err.message, site);
      throw err;
    }
    const out: Record<number, unknown> = { ...(result.out ?? {}) };

    if (newAttr) {
      if (result.created === undefined) fail('EIO', 'method made no object', site);
      const type = newType;
      if (limit) this.counts.add(type, 1);
      const u: UObject = { handle: this.nextHandle++, type, impl: result.created, usecnt: 0, holds: held, live: true };
      for (const p of held) p.usecnt++;
      this.handles.set(u.handle, u);
      if (typeof u.impl === 'object' && u.impl !== null) this.byImpl.set(u.impl, u);
      out[newAttr.id] = u.handle;
    }
    if (destroyAttr) this.destroyUObject(uobjs.get(destroyAttr.id)!);
    return out;
  }

  /** Close the context: destroy every object, children before parents. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    // Newest first, skipping anything still pinned; repeat until nothing is left. Each pass
    // frees at least one object unless a provider reports a cycle, which is then broken by force.
    while (this.handles.size > 0) {
      let progress = false;
      for (const u of [...this.handles.values()].reverse()) {
        if (u.usecnt === 0 && !this.busyReason(u, true)) {
          this.destroyUObject(u);
          progress = true;
        }
      }
      if (!progress) {
        const u = [...this.handles.values()].pop()!;
        u.usecnt = 0;
        this.destroyUObject(u);
      }
    }
  }

  private busyReason(u: UObject, closing = false): string | undefined {
    if (u.usecnt > 0) return `${this.objName(u.type)} ${u.handle} is in use by ${u.usecnt} other object(s)`;
    const obj = this.registry.objects.get(u.type) as RegisteredObject;
    return closing ? undefined : obj.busy?.(u.impl);
  }

  private destroyUObject(u: UObject): void {
    const obj = this.registry.objects.get(u.type)!;
    u.live = false;
    this.handles.delete(u.handle);
    if (obj.limit) this.counts.add(u.type, -1);
    try {
      obj.destroy(u.impl, this.impl);
    } finally {
      for (const p of u.holds) if (p.usecnt > 0) p.usecnt--;
    }
  }

  private objName(type: number): string {
    return this.registry.objects.get(type)?.name ?? `object ${type}`;
  }

  private validate(obj: RegisteredObject, method: MethodSpec, attrsIn: readonly AttrIn[]) {
    const site = { object: obj.name, method: method.name };
    const specs = new Map<number, AttrSpec>(method.attrs.map((a) => [a.id, a]));
    const values = new Map<number, unknown>();
    const uobjs = new Map<number, UObject>();
    if (!Array.isArray(attrsIn)) fail('EINVAL', 'attributes must be an array of {id, value}', site);
    for (const a of attrsIn) {
      if (typeof a !== 'object' || a === null || !Number.isInteger(a.id)) fail('EINVAL', 'malformed attribute', site);
      const spec = specs.get(a.id);
      if (!spec) {
        // As in uverbs: an attribute the kernel does not know fails only if the caller needs it understood.
        if (a.mandatory) fail('EPROTONOSUPPORT', `unknown mandatory attribute id ${a.id}`, site);
        continue;
      }
      const at = { ...site, attr: spec.name };
      if (values.has(a.id)) fail('EINVAL', 'given twice', at);
      if (spec.out || (spec.type.kind === 'handle' && spec.type.access === 'new')) fail('EINVAL', 'is an output and cannot be given', at);
      if (a.value === undefined) {
        if (spec.mandatory) fail('EINVAL', 'is mandatory', at);
        continue;
      }
      if (spec.type.kind === 'handle') {
        const u = this.lookupAttr(a.value, spec.type.object, at);
        uobjs.set(a.id, u);
        values.set(a.id, u.impl);
      } else {
        values.set(a.id, checkValue(spec.type, a.value, at));
      }
    }
    for (const spec of method.attrs) {
      if (spec.mandatory && !spec.out && !(spec.type.kind === 'handle' && spec.type.access === 'new') && !values.has(spec.id)) {
        fail('EINVAL', 'is mandatory', { ...site, attr: spec.name });
      }
    }
    return { values, uobjs };
  }

  private lookupAttr(value: unknown, type: number, at: { object: string; method: string; attr: string }): UObject {
    if (typeof value !== 'number' || !Number.isInteger(value)) fail('EINVAL', 'a handle must be an integer', at);
    const u = this.handles.get(value);
    if (!u || !u.live) fail('ENOENT', `no live object with handle ${value}`, at);
    if (u.type !== type) fail('EINVAL', `handle ${value} is a ${this.objName(u.type)}, not a ${this.objName(type)}`, at);
    return u;
  }
}

function checkValue(t: AttrType, v: unknown, at: { object: string; method: string; attr: string }): unknown {
  switch (t.kind) {
    case 'uint': {
      if (typeof v !== 'number' || !Number.isInteger(v) || v < 0) fail('EINVAL', `must be a non-negative integer, got ${String(v)}`, at);
      if ((t.min !== undefined && v < t.min) || (t.max !== undefined && v > t.max)) {
        fail('EINVAL', `${v} is out of range ${t.min ?? 0}..${t.max ?? Infinity}`, at);
      }
      return v;
    }
    case 'bigint':
      if (typeof v === 'bigint') return v;
      if (typeof v === 'number' && Number.isInteger(v)) return BigInt(v);
      return fail('EINVAL', 'must be a bigint or an integer', at);
    case 'bool':
      if (typeof v !== 'boolean') fail('EINVAL', 'must be a boolean', at);
      return v;
    case 'enum':
      if (typeof v !== 'number' || !t.values.includes(v)) fail('EINVAL', `${String(v)} is not one of ${t.values.join(', ')}`, at);
      return v;
    case 'flags': {
      if (typeof v !== 'number' || !Number.isInteger(v) || v < 0) fail('EINVAL', 'must be a flag word', at);
      const unknown = v & ~t.mask;
      if (unknown) fail('EINVAL', `unknown flag bits 0x${unknown.toString(16)}`, at);
      return v;
    }
    case 'bytes': {
      if (!(v instanceof Uint8Array)) fail('EINVAL', 'must be a Uint8Array', at);
      if (t.length !== undefined && v.length !== t.length) fail('EINVAL', `must be ${t.length} bytes, got ${v.length}`, at);
      return v;
    }
    case 'buffer':
      if (v instanceof ArrayBuffer) return new Uint8Array(v);
      if (ArrayBuffer.isView(v)) return new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
      return fail('EINVAL', 'must be a Buffer, TypedArray or ArrayBuffer', at);
    case 'string':
      if (typeof v !== 'string') fail('EINVAL', 'must be a string', at);
      return v;
    case 'object': {
      if (typeof v !== 'object' || v === null || Array.isArray(v)) fail('EINVAL', 'must be an object', at);
      const problem = t.validate?.(v as Record<string, unknown>);
      if (problem) fail('EINVAL', problem, at);
      return v;
    }
    case 'handle':
      return v;
  }
}
