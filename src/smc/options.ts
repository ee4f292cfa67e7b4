// The smc* socket options and their process-wide defaults (Linux: the net.smc sysctls of
// smc_sysctl.c, such as net.smc.rmem, and SMC's setsockopt in af_smc.c).

import { compressBufSize, uncompressBufSize } from './clc.js';
import type { SmcPolicy } from './policy.js';
import type { SmcrOption } from './smcr/device.js';

export interface SmcSocketOptions {
  /** Try SMC on this socket (default true). */
  smc?: boolean;
  /** Per-connection decision, called with the addresses once TCP is connected. */
  smcPolicy?: SmcPolicy;
  /** Size of the DMB this end receives into: 16 KiB × 2^n (default 1 MiB, the SMC-D v1 maximum). */
  smcBufferSize?: number;
  /** How long a handshake step may take before the side waiting declines (ms, default 2000). */
  smcHandshakeTimeout?: number;
  /**
   * SMC-R (RDMA between hosts): `true` uses the rxe device on the TCP connection's local
   * address, bringing one up when the process has none (smcr/auto-device.ts); `{ device }` that
   * device; `false` no SMC-R. A client with it proposes SMC-R only to a destination in its
   * subnet whose host said it has an SMC-R listener on that port (SIDR discovery,
   * smcr/discovery.ts; a local SMC listener still gets SMC-D); `{ device, discovery: false }`
   * proposes without asking. A server with it answers the discovery query and accepts SMC-R
   * Proposals. Default: the process's (on, unless SOFTRDMA_SMCR=0 or setSmcrDefault(false)).
   */
  smcr?: SmcrOption;
}

export interface ResolvedSmcOptions {
  enabled: boolean;
  policy: SmcPolicy | undefined;
  bufferSize: number;
  timeout: number;
  /** As given (false: off); undefined: the process default when used (smcrOf). */
  smcr: SmcrOption | undefined;
}

/** SMC-R for sockets that do not say: on, unless SOFTRDMA_SMCR=0 or setSmcrDefault(false). */
let smcrDefault = process.env.SOFTRDMA_SMCR !== '0';

/** The per-process switch: SMC-R for sockets and servers that do not set `smcr` (from their next connection on). */
export function setSmcrDefault(enabled: boolean): void {
  if (typeof enabled !== 'boolean') throw invalidArgType('enabled', 'of type boolean', enabled);
  smcrDefault = enabled;
}

/** The SMC-R a socket or server uses now: its own `smcr`, or the process default (true). */
export function smcrOf(opts: ResolvedSmcOptions): SmcrOption | undefined {
  if (opts.smcr === undefined) return smcrDefault ? true : undefined;
  return opts.smcr || undefined;
}

/**
 * SOFTRDMA_SMC_BUFFER sets the process-wide default DMB size (like net.smc.rmem). The default
 * is 1 MiB, the largest DMBE size SMC-D v1 defines (Linux's SMCD_DMBE_SIZES; Wireshark marks
 * larger ones invalid). Both softrdma ends accept larger DMBs; bulk transfers gain a little
 * from them (fewer times the writer finds the ring full and waits for the reader).
 */
const DEFAULT_BUFFER = Number(process.env.SOFTRDMA_SMC_BUFFER) > 0 ? Number(process.env.SOFTRDMA_SMC_BUFFER) : 1024 * 1024;

/** What a socket created without SMC options gets: one shared, frozen object, as none is ever changed. */
let defaults: ResolvedSmcOptions | undefined;

export function resolveSmcOptions(o: SmcSocketOptions | undefined, inherit?: ResolvedSmcOptions): ResolvedSmcOptions {
  if (!inherit && (o === undefined || (o.smc === undefined && o.smcPolicy === undefined && o.smcBufferSize === undefined && o.smcHandshakeTimeout === undefined && o.smcr === undefined))) {
    return defaults ??= Object.freeze(resolveFrom(undefined, undefined));
  }
  return resolveFrom(o, inherit);
}

/** A value as node's ERR_INVALID_ARG_TYPE messages show it ("Received type string ('no')"). */
export function received(v: unknown): string {
  if (v === null || v === undefined) return `Received ${String(v)}`;
  if (typeof v === 'function') return `Received function ${v.name || '<anonymous>'}`;
  if (typeof v === 'object') return `Received an instance of ${(v as object).constructor?.name ?? 'Object'}`;
  const shown = typeof v === 'string' ? `'${v.length > 28 ? `${v.slice(0, 25)}...` : v}'` : typeof v === 'bigint' ? `${v}n` : String(v);
  return `Received type ${typeof v} (${shown})`;
}

/** node's TypeError for an argument or option of the wrong type (code ERR_INVALID_ARG_TYPE). */
export function invalidArgType(name: string, expected: string, v: unknown): TypeError {
  return Object.assign(new TypeError(`The "${name}" ${name.includes('.') ? 'property' : 'argument'} must be ${expected}. ${received(v)}`), { code: 'ERR_INVALID_ARG_TYPE' });
}

/** The largest delay a Node timer takes (a longer one fires after 1 ms, with a warning). */
const MAX_TIMER_MS = 2 ** 31 - 1;

function resolveFrom(o: SmcSocketOptions | undefined, inherit: ResolvedSmcOptions | undefined): ResolvedSmcOptions {
  if (o !== undefined && (typeof o !== 'object' || o === null)) throw invalidArgType('options', 'of type object', o);
  const size = o?.smcBufferSize ?? inherit?.bufferSize ?? DEFAULT_BUFFER;
  if (typeof size !== 'number') throw invalidArgType('options.smcBufferSize', 'of type number', size);
  if (!Number.isInteger(size) || size < 16384 || size > 1 << 30 || uncompressBufSize(compressBufSize(size)) !== size) {
    throw Object.assign(new RangeError(`smcBufferSize must be 16 KiB × 2^n up to 1 GiB, got ${size}`), { code: 'ERR_OUT_OF_RANGE' });
  }
  const timeout = o?.smcHandshakeTimeout ?? inherit?.timeout ?? 2000;
  if (typeof timeout !== 'number') throw invalidArgType('options.smcHandshakeTimeout', 'of type number', timeout);
  if (!(timeout > 0 && timeout <= MAX_TIMER_MS)) throw Object.assign(new RangeError(`smcHandshakeTimeout must be > 0 and at most ${MAX_TIMER_MS} ms (a Node timer's longest), got ${timeout}`), { code: 'ERR_OUT_OF_RANGE' });
  if (o?.smcPolicy !== undefined && typeof o.smcPolicy !== 'function') throw invalidArgType('options.smcPolicy', 'of type function', o.smcPolicy);
  if (o?.smc !== undefined && typeof o.smc !== 'boolean') throw invalidArgType('options.smc', 'of type boolean', o.smc);
  const smcr = o?.smcr ?? inherit?.smcr;
  if (smcr !== undefined && typeof smcr !== 'boolean') {
    const dev = typeof smcr === 'object' && smcr !== null ? (smcr as { device?: unknown }).device : undefined;
    if (typeof dev !== 'object' || dev === null) throw invalidArgType('options.smcr', 'a boolean or { device } with an rxe device', smcr);
    const discovery = (smcr as { discovery?: unknown }).discovery;
    if (discovery !== undefined && typeof discovery !== 'boolean') throw invalidArgType('options.smcr.discovery', 'of type boolean', discovery);
  }
  return { enabled: o?.smc ?? inherit?.enabled ?? true, policy: o?.smcPolicy ?? inherit?.policy, bufferSize: size, timeout, smcr };
}
