// Bit fields in IBTA's "Byte[Bit]" notation, as include/rdma/ibta_vol1_c12.h and iba.h describe
// them: a field starts at bit `bit` of byte `byte` (bit 0 = the most significant bit of that byte)
// and runs `width` bits towards the less significant end, crossing byte boundaries big-endian.
// A message is a table of such fields; encode and decode walk the table, so the table is the
// only place a layout is written down.

/** Where a field lives: byte offset, bit offset from that byte's MSB, width in bits. */
export interface FieldLoc {
  readonly name: string;
  readonly byte: number;
  readonly bit: number;
  readonly width: number;
  /** 'uint' (up to 32 bits, a number), 'u64' (64 bits, a bigint), 'bytes' (whole bytes, a Buffer). */
  readonly kind: 'uint' | 'u64' | 'bytes';
}

/** A field of up to 32 bits (iba.h's FIELD8/16/32_LOC start at the MSB of `byte`: bit 0). */
export const uint = <N extends string>(name: N, byte: number, width: number, bit = 0) =>
  ({ name, byte, bit, width, kind: 'uint' }) as const;
/** A 64-bit field (service ids, CA GUIDs), byte aligned. */
export const u64 = <N extends string>(name: N, byte: number) => ({ name, byte, bit: 0, width: 64, kind: 'u64' }) as const;
/** A byte string (GIDs, private data, ARI), byte aligned; `bytes` long. */
export const mem = <N extends string>(name: N, byte: number, bytes: number) =>
  ({ name, byte, bit: 0, width: bytes * 8, kind: 'bytes' }) as const;

/** The typed object a table of fields describes. */
export type FieldsOf<L extends readonly FieldLoc[]> = {
  -readonly [F in L[number] as F['name']]: F['kind'] extends 'u64' ? bigint : F['kind'] extends 'bytes' ? Buffer : number;
};

/**
 * 2^n for n = 0..64, exact. `2 ** n` with a variable n is a call into the C library's pow()
 * each time (V8 does not fold it): in a CPU profile of rdma_cm connection setup at steady
 * state it was the largest single item of the client, as every field of every MAD encoded
 * and decoded goes through readBits/writeBits.
 */
export const POW2: readonly number[] = Array.from({ length: 65 }, (_, n) => 2 ** n);

/**
 * Read `width` (<= 32) bits starting at absolute bit position `pos` of `b`: the (at most 5)
 * bytes the field touches as one number, its trailing bits dropped and its leading ones masked
 * off (exact: under 2^40). Bytes past the end read as 0.
 */
export function readBits(b: Uint8Array, pos: number, width: number): number {
  const first = pos >> 3;
  const span = ((pos & 7) + width + 7) >> 3;
  let v = 0;
  for (let i = 0; i < span; i++) v = v * 256 + (b[first + i] ?? 0);
  return Math.floor(v / POW2[span * 8 - (pos & 7) - width]!) % POW2[width]!;
}

/** Write the low `width` (<= 32) bits of `v` at absolute bit position `pos`; other bits untouched. */
export function writeBits(b: Uint8Array, pos: number, width: number, v: number): void {
  const first = pos >> 3;
  const span = ((pos & 7) + width + 7) >> 3;
  const tail = span * 8 - (pos & 7) - width;
  let cur = 0;
  for (let i = 0; i < span; i++) cur = cur * 256 + (b[first + i] ?? 0);
  const low = cur % POW2[tail]!;
  const high = Math.floor(cur / POW2[tail + width]!);
  let next = (high * POW2[width]! + (v % POW2[width]!)) * POW2[tail]! + low;
  for (let i = span - 1; i >= 0; i--) {
    b[first + i] = next % 256;
    next = Math.floor(next / 256);
  }
}

export function maxOf(f: FieldLoc): number {
  return POW2[f.width]! - 1;
}

/**
 * Decode every field of `layout` from `buf` starting at `base` (byte offset of the table's byte
 * 0), onto `into` (a new object by default). Byte strings are copies, owned by the result.
 */
export function decodeFields<L extends readonly FieldLoc[]>(layout: L, buf: Uint8Array, base = 0, into: object = {}): FieldsOf<L> {
  const out = into as Record<string, number | bigint | Buffer>;
  for (const f of layout) {
    const at = base + f.byte;
    if (f.kind === 'uint') out[f.name] = readBits(buf, at * 8 + f.bit, f.width);
    else if (f.kind === 'u64') out[f.name] = (BigInt(readBits(buf, at * 8, 32)) << 32n) | BigInt(readBits(buf, at * 8 + 32, 32));
    else {
      const src = buf.subarray(at, at + f.width / 8);
      const b = Buffer.allocUnsafe(src.length);
      b.set(src);
      out[f.name] = b;
    }
  }
  return out as FieldsOf<L>;
}

/**
 * Encode `value` into `buf` (zeroed by the caller: reserved bits stay 0). Numbers out of a
 * field's range, byte strings longer than the field and missing fields are programmer errors:
 * RangeError / TypeError naming the field. Shorter byte strings are zero-padded (as Linux
 * copies private data of any length up to the field's size into a zeroed MAD).
 */
export function encodeFields<L extends readonly FieldLoc[]>(layout: L, value: FieldsOf<L>, buf: Uint8Array, base = 0): void {
  const v = value as Record<string, unknown>;
  for (const f of layout) {
    const x = v[f.name];
    const at = base + f.byte;
    if (f.kind === 'uint') {
      if (typeof x !== 'number' || !Number.isInteger(x) || x < 0 || x > maxOf(f)) throw new RangeError(`${f.name}: ${String(x)} does not fit ${f.width} bits`);
      writeBits(buf, at * 8 + f.bit, f.width, x);
    } else if (f.kind === 'u64') {
      if (typeof x !== 'bigint' || x < 0n || x > 0xffff_ffff_ffff_ffffn) throw new RangeError(`${f.name}: ${String(x)} is not a 64-bit unsigned bigint`);
      writeBits(buf, at * 8, 32, Number(x >> 32n));
      writeBits(buf, at * 8 + 32, 32, Number(x & 0xffff_ffffn));
    } else {
      if (!(x instanceof Uint8Array)) throw new TypeError(`${f.name}: expected bytes`);
      if (x.length > f.width / 8) throw new RangeError(`${f.name}: ${x.length} bytes, at most ${f.width / 8}`);
      buf.set(x, at);
    }
  }
}

/** Byte length a layout covers (the end of its last field). */
export function layoutEnd(layout: readonly FieldLoc[]): number {
  let end = 0;
  for (const f of layout) end = Math.max(end, Math.ceil((f.byte * 8 + f.bit + f.width) / 8));
  return end;
}

/** Fields that overlap each other (a table typo): [a, b] names. Used by the tests. */
export function overlaps(layout: readonly FieldLoc[]): [string, string][] {
  const out: [string, string][] = [];
  for (let i = 0; i < layout.length; i++) {
    for (let j = i + 1; j < layout.length; j++) {
      const a = layout[i]!, b = layout[j]!;
      const a0 = a.byte * 8 + a.bit, b0 = b.byte * 8 + b.bit;
      if (a0 < b0 + b.width && b0 < a0 + a.width) out.push([a.name, b.name]);
    }
  }
  return out;
}
