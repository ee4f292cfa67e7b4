// Helpers that declare a method's attributes: each returns the plain AttrSpec the dispatcher
// checks, typed with the value the handler will see, so `ctx.get(attr)` needs no cast.
// Everything is optional until wrapped in mandatory().

import type { AttrSpec, HandleAccess, InAttr, OutAttr } from './spec.js';

/** The same attribute, which the caller must give (the dispatcher checks; ctx.get() is then never undefined). */
export const mandatory = <T>(attr: InAttr<T, false>): InAttr<T, true> => ({ ...attr, mandatory: true });

/** A non-negative integer in min..max (default 0..2^32-1). */
export const uint = (id: number, name: string, range: { min?: number; max?: number } = {}): InAttr<number, false> =>
  ({ id, name, type: { kind: 'uint', min: range.min ?? 0, max: range.max ?? 0xffffffff }, mandatory: false });

/** A flag word with no bits outside `mask`. */
export const flags = (id: number, name: string, mask: number): InAttr<number, false> =>
  ({ id, name, type: { kind: 'flags', mask }, mandatory: false });

/** One of `values`. */
export const oneOf = (id: number, name: string, values: readonly number[]): InAttr<number, false> =>
  ({ id, name, type: { kind: 'enum', values }, mandatory: false });

export const bool = (id: number, name: string): InAttr<boolean, false> =>
  ({ id, name, type: { kind: 'bool' }, mandatory: false });

/** Memory (Buffer, TypedArray or ArrayBuffer); the handler sees it as bytes. */
export const buffer = (id: number, name: string): InAttr<Uint8Array, false> =>
  ({ id, name, type: { kind: 'buffer' }, mandatory: false });

/** A plain object; the dispatcher checks only that it is one, so T is what the handler checks further. */
export const object = <T>(id: number, name: string): InAttr<T, false> =>
  ({ id, name, type: { kind: 'object' }, mandatory: false });

/** A handle to an existing object; the handler sees the object's implementation, a T. */
export const handle = <T>(id: number, name: string, object: number, access: Exclude<HandleAccess, 'new'>): InAttr<T, false> =>
  ({ id, name, type: { kind: 'handle', object, access }, mandatory: false });

/** The handle of the object a method makes: an output, filled in by the dispatcher. */
export const newHandle = (id: number, name: string, object: number): AttrSpec =>
  ({ id, name, type: { kind: 'handle', object, access: 'new' }, mandatory: true });

/** An output the handler sets with ctx.set(). */
export const out = <T>(id: number, name: string): OutAttr<T> =>
  ({ id, name, type: { kind: 'object' }, out: true });
