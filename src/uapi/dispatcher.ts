// A uapi context (the ufile of uverbs) and its dispatcher: every control-path call is checked
// here before a method sees it, against the method's declaration (spec.ts): the attributes
// given, their types and ranges, the handles they name, the device's object limits; and what
// the method returns is checked against the outputs it declares. Lifetimes follow the
// kernel's rules: an object named by live children cannot be destroyed (EBUSY), handles are
// never reused (handles.ts), and closing the context tears everything down, children first.

import { FirstError } from '../abi/errors.js';
import { checkValue } from './attr-values.js';
import { ObjectCounts } from './device-counts.js';
import { VerbsError, fail, internal, type ErrorSite } from './errors.js';
import { HandleTable } from './handles.js';
import type { RegisteredObject, UapiRegistry } from './registry.js';
import type { AttrIn, AttrSpec, InAttr, MethodContext, MethodSpec, OutAttr, UObject } from './spec.js';

type Site = Required<Pick<ErrorSite, 'object' | 'method'>>;
type AttrSite = Required<ErrorSite>;

const isNewHandle = (a: AttrSpec) => a.type.kind === 'handle' && a.type.access === 'new';
/** Outputs: attributes a method produces and a caller may not give. */
const isOutput = (a: AttrSpec) => a.out === true || isNewHandle(a);

/**
 * What invoke() and validate() need from a method's declaration, worked out once per method
 * (a connection's setup makes a dozen control-path calls: rebuilding these on each call was
 * a measurable part of an rdma_cm connection's cost).
 */
interface MethodPlan {
  site: Site;
  where: string;
  specs: Map<number, AttrSpec>;
  /** Error sites per attribute id. */
  sites: Map<number, AttrSite>;
  newAttr: AttrSpec | undefined;
  destroyAttr: AttrSpec | undefined;
  /** Mandatory inputs. */
  mandatory: AttrSpec[];
}

const plans = new WeakMap<MethodSpec, MethodPlan>();

function planOf(objectName: string, method: MethodSpec): MethodPlan {
  let p = plans.get(method);
  if (p) return p;
  const site: Site = { object: objectName, method: method.name };
  p = {
    site,
    where: `${site.object}.${site.method}`,
    specs: new Map(method.attrs.map((a) => [a.id, a])),
    sites: new Map(method.attrs.map((a) => [a.id, { ...site, attr: a.name }])),
    newAttr: method.attrs.find(isNewHandle),
    destroyAttr: method.attrs.find((a) => a.type.kind === 'handle' && a.type.access === 'destroy'),
    mandatory: method.attrs.filter((a) => a.mandatory && !isOutput(a)),
  };
  plans.set(method, p);
  return p;
}

/** Every attribute a method returned must be one of its declared outputs. */
function checkOutputs(plan: MethodPlan, out: Record<number, unknown>): void {
  for (const key in out) {
    const id = Number(key);
    const spec = plan.specs.get(id);
    if (!spec || !spec.out) internal(`${plan.where} returned attribute id ${id}, which it does not declare as an output`);
  }
}

export class UapiContext<Impl = unknown> {
  private readonly table = new HandleTable();
  private closed = false;

  constructor(
    readonly registry: UapiRegistry,
    readonly impl: Impl,
    /** Where limited objects are counted: the device's (deviceCounts), or this context's own. */
    readonly counts: ObjectCounts = new ObjectCounts(),
  ) {}

  get objectCount(): number {
    return this.table.size;
  }

  /** Count of live objects by object name (for leak checks and tools). */
  census(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const u of this.table.all()) {
      const name = this.registry.objects.get(u.type)?.name ?? String(u.type);
      out[name] = (out[name] ?? 0) + 1;
    }
    return out;
  }

  uobjectOf(impl: unknown): UObject | undefined {
    return this.table.ofImpl(impl);
  }

  lookup(handle: number, type?: number): UObject {
    const u = this.table.get(handle);
    if (!u) fail('ENOENT', `no live object with handle ${handle}`);
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
    const plan = planOf(obj.name, method);
    if (this.closed) fail('EBADF', 'the context is closed', plan.site);

    const locked: UObject[] = [];
    try {
      return this.run(plan, method, attrsIn, locked);
    } finally {
      // The call's locks on the objects it named, whatever became of it.
      for (const u of locked) u.locks = u.locks < 0 ? 0 : u.locks - 1;
    }
  }

  private run(plan: MethodPlan, method: MethodSpec, attrsIn: readonly AttrIn[], locked: UObject[]): Record<number, unknown> {
    const { site, newAttr, destroyAttr, where } = plan;
    const { values, uobjs } = this.validate(plan, attrsIn, locked);
    const held: UObject[] = [];

    if (destroyAttr) {
      const victim = uobjs.get(destroyAttr.id)!;
      const reason = this.busyReason(victim);
      // Held by other objects: EBUSY (uverbs); the provider's own refusal: its errno.
      if (reason) fail(victim.usecnt > 0 ? 'EBUSY' : (this.registry.objects.get(victim.type) as RegisteredObject).busyErrno ?? 'EBUSY', reason, { ...site, attr: destroyAttr.name });
    }
    const newType = newAttr ? (newAttr.type as { object: number }).object : -1;

    const declared = (attr: AttrSpec, verb: string): void => {
      const spec = plan.specs.get(attr.id);
      if (spec?.name !== attr.name) internal(`${where} ${verb} attribute '${attr.name}' (id ${attr.id}), which it does not declare`);
    };
    const outs: Record<number, unknown> = {};
    const ctx: MethodContext<Impl> = {
      attrs: values,
      context: this.impl,
      get: <T>(attr: InAttr<T>) => {
        declared(attr, 'reads');
        return values.get(attr.id) as T;
      },
      set: <T>(attr: OutAttr<T>, value: T) => {
        declared(attr, 'sets');
        outs[attr.id] = value;
      },
      handle: (attr) => {
        const id = typeof attr === 'number' ? attr : attr.id;
        const u = uobjs.get(id);
        if (!u) fail('EINVAL', `attribute id ${id} is not a handle of this call`, site);
        return u;
      },
      hold: (parent) => {
        const u = (parent as UObject)?.handle !== undefined && (parent as UObject).holds ? (parent as UObject) : this.uobjectOf(parent);
        if (!u) fail('EINVAL', 'hold: not an object of this context', site);
        held.push(u);
      },
      made: (impl) => {
        if (!newAttr) internal(`${where} makes no object`);
        made = impl;
      },
    };

    // The object this call made: once the provider made it, any failure destroys it again
    // (uverbs' rdma_alloc_abort_uobject), so nothing is left that no handle names.
    let made: unknown;
    const abort = (): void => {
      if (made !== undefined) (this.registry.objects.get(newType) as RegisteredObject).destroy(made, this.impl);
    };
    let result;
    try {
      result = method.handler(ctx) ?? {};
    } catch (err) {
      abort();
      if (err instanceof VerbsError) {
        if (err.object) throw err;
        throw new VerbsError(err.code, err.detail, { ...site, attr: err.attr });
      }
      if (err instanceof RangeError || err instanceof TypeError) throw new VerbsError('EINVAL', err.message, site);
      throw err;
    }
    const out: Record<number, unknown> = result.out ? { ...outs, ...result.out } : outs;
    if (newAttr) {
      if (result.created !== undefined) made = result.created;
      if (made === undefined) fail('EIO', 'method made no object', site);
      try {
        checkOutputs(plan, out);
        // The device's object-count limits, for every object type that has one: after the
        // method's own checks, as rxe adds an object to its pool after checking the arguments.
        const limit = this.registry.objects.get(newType)?.limit;
        if (limit) {
          const max = limit.max(this.impl);
          if (this.counts.get(newType) >= max) fail(limit.errno ?? 'EINVAL', `device limit ${limit.name} (${max}) reached`, site);
          this.counts.add(newType, 1);
        }
      } catch (err) {
        abort();
        throw err;
      }
      out[newAttr.id] = this.table.add(newType, made, held).handle;
    } else {
      checkOutputs(plan, out);
    }
    if (destroyAttr) this.destroyUObject(uobjs.get(destroyAttr.id)!);
    return out;
  }

  /**
   * Close the context: destroy every object, children before parents. A provider whose destroy
   * throws does not stop the close (as uverbs' cleanup goes on past a failing object): the
   * object is dropped anyway, the rest are destroyed, and the first error is thrown at the end.
   */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    const errors = new FirstError();
    const drop = (u: UObject): void => errors.run(() => this.destroyUObject(u, true));
    // Newest first, skipping anything still pinned; repeat until nothing is left. Each pass
    // frees at least one object unless a provider reports a cycle, which is then broken by force.
    while (this.table.size > 0) {
      let progress = false;
      for (const u of this.table.all().reverse()) {
        if (u.usecnt === 0 && !this.busyReason(u, true)) {
          drop(u);
          progress = true;
        }
      }
      if (!progress) {
        const u = this.table.all().pop()!;
        u.usecnt = 0;
        drop(u);
      }
    }
    errors.rethrow();
  }

  private busyReason(u: UObject, closing = false): string | undefined {
    if (u.usecnt > 0) return `${this.objName(u.type)} ${u.handle} is in use by ${u.usecnt} other object(s)`;
    const obj = this.registry.objects.get(u.type) as RegisteredObject;
    return closing ? undefined : obj.busy?.(u.impl);
  }

  /**
   * Destroy an object through its provider. If the provider throws, an explicit destroy leaves
   * the object live; a close (`force`) drops it regardless.
   */
  private destroyUObject(u: UObject, force = false): void {
    const obj = this.registry.objects.get(u.type)!;
    let done = false;
    this.table.remove(u, () => {
      try {
        obj.destroy(u.impl, this.impl);
        done = true;
      } finally {
        if ((done || force) && obj.limit) this.counts.add(u.type, -1);
      }
    }, !force);
  }

  private objName(type: number): string {
    return this.registry.objects.get(type)?.name ?? `object ${type}`;
  }

  /**
   * Check the caller's attributes against the method's declaration; handles become their
   * objects, each locked for the call (pushed on `locked`, which the caller releases): shared to
   * read, exclusive to change or destroy, EBUSY where another call under way holds it the other
   * way (uverbs_try_lock_object). A handler that calls back in (a getter on an attribute's value,
   * a listener) cannot destroy or change what the call is using.
   */
  private validate(plan: MethodPlan, attrsIn: readonly AttrIn[], locked: UObject[]) {
    const { specs, site } = plan;
    const values = new Map<number, unknown>();
    const uobjs = new Map<number, UObject>();
    if (!Array.isArray(attrsIn)) fail('EINVAL', 'attributes must be an array of {id, value}', site);
    for (const a of attrsIn) {
      if (typeof a !== 'object' || a === null) fail('EINVAL', 'malformed attribute', site);
      // Each of the caller's fields read once (as uverbs copies the attribute array in): an id
      // checked as one attribute and stored as another would let a handler's later lookup fail
      // after the provider made its object.
      const id: unknown = a.id;
      if (typeof id !== 'number' || !Number.isInteger(id)) fail('EINVAL', 'malformed attribute', site);
      const spec = specs.get(id);
      if (!spec) {
        // As in uverbs: an attribute the kernel does not know fails only if the caller needs it understood.
        if (a.mandatory) fail('EPROTONOSUPPORT', `unknown mandatory attribute id ${id}`, site);
        continue;
      }
      const at = plan.sites.get(id)!;
      if (values.has(id)) fail('EINVAL', 'given twice', at);
      if (isOutput(spec)) fail('EINVAL', 'is an output and cannot be given', at);
      const value: unknown = a.value;
      if (value === undefined) {
        if (spec.mandatory) fail('EINVAL', 'is mandatory', at);
        continue;
      }
      if (spec.type.kind === 'handle') {
        const u = this.lookupAttr(value, spec.type.object, at);
        const exclusive = spec.type.access !== 'read';
        if (exclusive ? u.locks !== 0 : u.locks < 0) {
          fail('EBUSY', `${this.objName(u.type)} ${u.handle} is ${u.locks < 0 ? 'being changed' : 'in use'} by a call under way`, at);
        }
        u.locks = exclusive ? -1 : u.locks + 1;
        locked.push(u);
        uobjs.set(id, u);
        values.set(id, u.impl);
      } else {
        values.set(id, checkValue(spec.type, value, at));
      }
    }
    for (const spec of plan.mandatory) {
      if (!values.has(spec.id)) fail('EINVAL', 'is mandatory', plan.sites.get(spec.id)!);
    }
    return { values, uobjs };
  }

  private lookupAttr(value: unknown, type: number, at: AttrSite): UObject {
    if (typeof value !== 'number' || !Number.isInteger(value)) fail('EINVAL', 'a handle must be an integer', at);
    // As uverbs' lookup_get_idr_uobject: a negative id is no handle at all.
    if (value < 0) fail('EINVAL', `handle ${value} is negative`, at);
    const u = this.table.get(value);
    if (!u) fail('ENOENT', `no live object with handle ${value}`, at);
    if (u.type !== type) fail('EINVAL', `handle ${value} is a ${this.objName(u.type)}, not a ${this.objName(type)}`, at);
    return u;
  }
}
