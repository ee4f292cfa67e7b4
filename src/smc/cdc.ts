// SMC-D connection data control (CDC): 32 bytes at the start of each DMB, written only by the
// peer (Linux struct smcd_cdc_msg): type 0xFE, then the producer cursor (how far the peer has
// written into this DMB, with its producer and connection-state flags) and the consumer cursor
// (how far the peer has read of the DMB it owns). Cursors are {wrap u16, count u32} in host
// order; each 8-byte cursor is stored and loaded as one atomic word, never torn.

export const CDC_TYPE = 0xfe;
export const SMCD_CDC_LEN = 32;

export const PROD_WRITE_BLOCKED = 0x80;
export const PROD_URG_PENDING = 0x40;
export const PROD_URG_PRESENT = 0x20;
export const PROD_CONS_UPD_REQ = 0x10;

export const CONN_DONE_WRITING = 0x80;
export const CONN_CLOSED = 0x40;
export const CONN_ABORT = 0x20;

const PROD_WORD = 1; // byte 8
const CONS_WORD = 2; // byte 16

export interface Cursor {
  wrap: number;
  count: number;
  prodFlags: number;
  connFlags: number;
}

export function packCursor(wrap: number, count: number, prodFlags = 0, connFlags = 0): bigint {
  return BigInt(wrap & 0xffff) | (BigInt(count >>> 0) << 16n) | (BigInt(prodFlags & 0xff) << 48n) | (BigInt(connFlags & 0xff) << 56n);
}

/** The producer flags of a cursor word (bits 48-55), without unpacking the rest. */
export function prodFlagsOf(v: bigint): number {
  return Number((BigInt.asUintN(64, v) >> 48n) & 0xffn);
}

export function unpackCursor(v: bigint): Cursor {
  const u = BigInt.asUintN(64, v);
  return {
    wrap: Number(u & 0xffffn),
    count: Number((u >> 16n) & 0xffffffffn),
    prodFlags: prodFlagsOf(u),
    connFlags: Number((u >> 56n) & 0xffn),
  };
}

// The data path's forms of the same words, without a BigInt per field: a cursor is built in
// two 32-bit halves of one scratch word and stored with one 64-bit atomic store (one BigInt),
// and loaded with one 64-bit atomic load and read back through the same halves. Bits 0-15
// wrap, 16-47 count, 48-55 producer flags, 56-63 connection flags, as packCursor.
const scratch64 = new BigInt64Array(1);
const scratch32 = new Int32Array(scratch64.buffer);
const LITTLE = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;
const LO = LITTLE ? 0 : 1;
const HI = LITTLE ? 1 : 0;

/** packCursor's word, built without intermediate BigInts. */
export function cursorWord(wrap: number, count: number, prodFlags: number, connFlags: number): bigint {
  scratch32[LO] = (wrap & 0xffff) | ((count & 0xffff) << 16);
  scratch32[HI] = ((count >>> 16) & 0xffff) | ((prodFlags & 0xff) << 16) | ((connFlags & 0xff) << 24);
  return scratch64[0]!;
}

/** unpackCursor into a caller's object (reused across calls): no allocation beyond the load. */
export function readCursorInto(v: bigint, out: Cursor): Cursor {
  scratch64[0] = v;
  const lo = scratch32[LO]!;
  const hi = scratch32[HI]!;
  out.wrap = lo & 0xffff;
  out.count = ((lo >>> 16) | ((hi & 0xffff) << 16)) >>> 0;
  out.prodFlags = (hi >>> 16) & 0xff;
  out.connFlags = (hi >>> 24) & 0xff;
  return out;
}

/** Views of one DMB's CDC area. */
export class CdcArea {
  readonly i64: BigInt64Array;
  readonly i32: Int32Array;
  constructor(bytes: Uint8Array) {
    this.i64 = new BigInt64Array(bytes.buffer, bytes.byteOffset, 4);
    this.i32 = new Int32Array(bytes.buffer, bytes.byteOffset, 8);
  }
  init(): void {
    Atomics.store(this.i32, 0, CDC_TYPE);
  }
  storeProd(v: bigint): void { Atomics.store(this.i64, PROD_WORD, v); }
  storeCons(v: bigint): void { Atomics.store(this.i64, CONS_WORD, v); }
  loadProd(): bigint { return Atomics.load(this.i64, PROD_WORD); }
  loadCons(): bigint { return Atomics.load(this.i64, CONS_WORD); }
  /**
   * The producer flags as they are now: one 32-bit load of the producer word's upper half (a
   * flags byte cannot tear), no BigInt.
   */
  loadProdFlags(): number { return (Atomics.load(this.i32, PROD_WORD * 2 + HI) >>> 16) & 0xff; }
  /** Has either cursor changed since the last call? Four plain word loads; no BigInt. */
  changed(last: Int32Array): boolean {
    const a = this.i32;
    let c = false;
    for (let w = 2; w < 6; w++) {
      const v = Atomics.load(a, w);
      if (v !== last[w - 2]) { last[w - 2] = v; c = true; }
    }
    return c;
  }
}
