// The one error of SMC-R's link-level codecs (CDC and LLC messages received on a link's QP).
// Linux never answers a malformed CDC or LLC message: smc_wr_rx_demultiplex, smc_cdc_rx_handler
// and smc_llc_rx_handler drop it without a word (docs/smc.md, "SMC-R wire"), so this error names
// the field and leaves the consequence (count and drop, as Linux, or end the link group) to the
// caller.

import { SoftrdmaError } from '../../abi/errors.js';

export class SmcrWireError extends SoftrdmaError {
  constructor(readonly field: string, message: string) {
    super('EPROTO', `${field}: ${message}`);
    this.name = 'SmcrWireError';
  }
}

export function need(cond: boolean, field: string, message: string): asserts cond {
  if (!cond) throw new SmcrWireError(field, message);
}

/** A value that must fit an unsigned field of `bits` bits (an encoder's argument check). */
export function uint(v: number, bits: number, what: string): number {
  if (!Number.isInteger(v) || v < 0 || v >= 2 ** bits) throw new RangeError(`${what} must be a ${bits}-bit unsigned integer, got ${v}`);
  return v;
}

export function bytes(b: Buffer | undefined, len: number, what: string): Buffer {
  if (b === undefined) return Buffer.alloc(len);
  if (b.length !== len) throw new RangeError(`${what} must be ${len} bytes, got ${b.length}`);
  return b;
}
