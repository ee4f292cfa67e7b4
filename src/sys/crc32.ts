// CRC-32 (zlib's) for the RoCEv2 ICRC: native/crc32.c's carry-less-multiply fold when the
// install built it and the CPU has PCLMULQDQ, node:zlib's table-driven crc32 otherwise. Both
// return what zlib.crc32(data, value) returns (test/sys/crc32.test.ts checks), except for
// empty data: zlib returns 0 for it (its NULL-buffer convention), these return `value`, which
// is the CRC of the bytes so far with nothing appended. SOFTRDMA_NATIVE=0 in the environment
// forces node:zlib's (for comparisons and the tests); SOFTRDMA_CRC_FOLD=128 keeps the addon to
// its 128-bit fold on a CPU that has the 256-bit one.

import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { crc32 as zlibCrc32 } from 'node:zlib';

export type Crc32 = (data: Uint8Array, value?: number) => number;

interface Addon { crc32: Crc32; accelerated: boolean; foldBits: number }

/** Where the build script puts the addon: native/build at the package's root (dist/src/sys is three below). */
export const ADDON_PATH = new URL('../../../native/build/crc32.node', import.meta.url);

/** zlib's, with nothing appended leaving the CRC as it was. */
const zlibCrc: Crc32 = (data, value = 0) => (data.length === 0 ? value >>> 0 : zlibCrc32(data, value));

function load(): { fn: Crc32; impl: 'pclmul' | 'zlib'; foldBits?: number; why?: string } {
  if (process.env.SOFTRDMA_NATIVE === '0') return { fn: zlibCrc, impl: 'zlib', why: 'SOFTRDMA_NATIVE=0' };
  let addon: Addon;
  try {
    addon = createRequire(import.meta.url)(fileURLToPath(ADDON_PATH)) as Addon;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    return { fn: zlibCrc, impl: 'zlib', why: code === 'MODULE_NOT_FOUND' ? 'the native addon was not built (no C compiler at install?)' : `the native addon did not load: ${(err as Error).message}` };
  }
  // Without PCLMULQDQ the addon's byte-at-a-time loop is slower than zlib's.
  if (!addon.accelerated) {
    const cap = process.env.SOFTRDMA_CRC_FOLD;
    return { fn: zlibCrc, impl: 'zlib', why: cap && /^\d+$/.test(cap) && Number(cap) < 128 ? `SOFTRDMA_CRC_FOLD=${cap}` : 'the CPU has no PCLMULQDQ' };
  }
  return { fn: addon.crc32, impl: 'pclmul', foldBits: addon.foldBits };
}

const chosen = load();

/** zlib.crc32(data, value), by whichever implementation was chosen at load. */
export const crc32: Crc32 = chosen.fn;

/** Which implementation crc32 is, and why not the native one when it is not (the benches print it; the tests check it). */
export const crc32Implementation: { impl: 'pclmul' | 'zlib'; foldBits?: number; why?: string } = {
  impl: chosen.impl,
  ...(chosen.foldBits ? { foldBits: chosen.foldBits } : {}),
  ...(chosen.why ? { why: chosen.why } : {}),
};

/** crc32Implementation in words, as the benchmarks print it. */
export function describeCrc32(): string {
  const c = crc32Implementation;
  return c.impl === 'pclmul' ? `native/crc32.c (${c.foldBits === 256 ? 'VPCLMULQDQ, 256-bit folds' : 'PCLMULQDQ'})` : `node:zlib's crc32 (${c.why})`;
}
