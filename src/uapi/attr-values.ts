// One attribute value checked against its declared type (AttrType), and normalised to what
// the handler sees: memory as a Uint8Array view, integers as bigints where declared so.

import { fail, type ErrorSite } from './errors.js';
import type { AttrType } from './spec.js';
import { shown } from '../abi/errors.js';

/**
 * A u32 flag word, as the C verbs take them. Checked before any bit test: JavaScript's
 * bitwise operators truncate to 32 bits, so 2**32 + 1 would pass as 1, and NaN or 1.5 as 0.
 */
export function isFlagWord(v: unknown): v is number {
  return typeof v === 'number' && Number.isInteger(v) && v >= 0 && v <= 0xffffffff;
}

export function checkValue(t: AttrType, v: unknown, at: ErrorSite): unknown {
  switch (t.kind) {
    case 'uint': {
      if (typeof v !== 'number' || !Number.isInteger(v) || v < 0) fail('EINVAL', `must be a non-negative integer, got ${shown(v)}`, at);
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
      if (!isFlagWord(v)) fail('EINVAL', `must be a 32-bit flag word, got ${shown(v)}`, at);
      const unknown = (v & ~t.mask) >>> 0;
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
