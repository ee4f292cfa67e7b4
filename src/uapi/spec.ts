// The shape of the uapi: objects, their methods, and each method's attributes, declared as
// data (as in the uverbs ioctl model) so that validation happens once, in the dispatcher.

export type AttrType =
  | { kind: 'uint'; min?: number; max?: number }
  | { kind: 'bigint' }
  | { kind: 'bool' }
  | { kind: 'enum'; values: readonly number[] }
  | { kind: 'flags'; mask: number }
  | { kind: 'bytes'; length?: number }
  | { kind: 'buffer' } // memory: Buffer, TypedArray or ArrayBuffer
  | { kind: 'string' }
  | { kind: 'object'; validate?: (v: Record<string, unknown>) => string | undefined }
  | { kind: 'handle'; object: number; access: HandleAccess };

/** read: look up; write: look up for change; destroy: the method ends the object; new: the method makes one. */
export type HandleAccess = 'read' | 'write' | 'destroy' | 'new';

export interface AttrSpec {
  id: number;
  name: string;
  type: AttrType;
  mandatory?: boolean;
  /** Output attributes are produced by the method, never given. */
  out?: boolean;
}

/**
 * An input attribute whose value reaches the handler as a T (see attrs.ts for the helpers
 * that make them). `Mandatory` tells ctx.get() whether the dispatcher guarantees a value.
 */
export interface InAttr<T, Mandatory extends boolean = boolean> extends AttrSpec {
  readonly mandatory: Mandatory;
  readonly out?: false;
  /** Never set: it only carries T to ctx.get(). */
  readonly valueType?: T;
}

/** An output attribute: the handler sets it (ctx.set) with a T. */
export interface OutAttr<T> extends AttrSpec {
  readonly out: true;
  /** Never set: it only carries T to ctx.set(). */
  readonly valueType?: T;
}

export interface MethodContext<Impl = unknown> {
  /** The value of an input attribute, typed by its declaration; handles arrive as the object's implementation. */
  get<T>(attr: InAttr<T, true>): T;
  get<T>(attr: InAttr<T, boolean>): T | undefined;
  /** Set an output attribute this method declares. */
  set<T>(attr: OutAttr<T>, value: T): void;
  /** Validated inputs by attribute id, untyped (for driver methods declared as plain AttrSpecs). */
  readonly attrs: ReadonlyMap<number, unknown>;
  /** The uobject a handle attribute of this call names, for methods that need it. */
  handle(attr: AttrSpec | number): UObject;
  /** Record that the new object holds a use count on `parent` until it is destroyed. */
  hold(parent: UObject | unknown): void;
  /**
   * The object this call makes, as soon as the provider made it (before steps that may still
   * fail): if the call fails from here on, the dispatcher destroys it. Returning it as
   * `created` does the same for what fails after the handler returns.
   */
  made(impl: unknown): void;
  /** Provider state shared by the context (the ucontext). */
  readonly context: Impl;
}

export interface MethodResult {
  /** The implementation of the object a 'new' handle makes. */
  created?: unknown;
  /** Output attributes, by id (ctx.set is the typed way); each must be a declared output. */
  out?: Record<number, unknown>;
}

export interface MethodSpec<Impl = any> {
  id: number;
  name: string;
  attrs: readonly AttrSpec[];
  handler: (ctx: MethodContext<Impl>) => MethodResult | void;
}

export interface ObjectSpec {
  id: number;
  name: string;
  /** Tear the implementation down. Called once, when the use count is zero (or at context close). */
  destroy: (impl: any, context: any) => void;
  /**
   * A limit on how many of these objects a device may have at once, across all its contexts
   * (the kernel's per-ib_device max_pd, max_cq, ...): the device attribute's name, as errors
   * name it, and its value for a context. The dispatcher enforces it (see UapiContext.invoke).
   */
  limit?: {
    name: string;
    max: (context: any) => number;
    /**
     * The errno past the limit: Linux rxe's pools give EINVAL (__rxe_add_to_pool), except the
     * MR pool's allocation, ENOMEM (rxe_alloc in rxe_reg_user_mr). Default EINVAL.
     */
    errno?: 'EINVAL' | 'ENOMEM';
  };
}

export interface UObject {
  readonly handle: number;
  readonly type: number;
  readonly impl: unknown;
  /** Objects that name this one (children); non-zero means destroy is EBUSY. */
  usecnt: number;
  /** Objects this one holds a use count on. */
  readonly holds: UObject[];
  live: boolean;
  /**
   * Calls under way that name the object (uverbs' uobject lock): a count of readers, or -1 for
   * one writer (a method that changes or destroys it). A call that cannot take its lock is EBUSY.
   */
  locks: number;
}

export type AttrIn = { id: number; value: unknown; mandatory?: boolean };
