// What the rdma_cm calls take (librdmacm's struct rdma_conn_param, the QP's init attributes,
// createId's options) and the checks every call makes first: a bad value is EINVAL naming the
// field, before anything has changed.

import { SoftrdmaError } from '../../abi/errors.js';
import type { QpCapInit } from '../../abi/types.js';
import type { CQ, SRQ } from '../../verbs/api.js';
import { CMA_CM_RESPONSE_TIMEOUT, CMA_IBOE_PACKET_LIFETIME, CMA_MAX_CM_RETRIES } from '../wire/cma-header.js';

/** struct rdma_conn_param (librdmacm), for connect and accept. */
export interface ConnParam {
  /** At most 56 bytes in a REQ (92 less the RDMA CM header), 196 in a REP, 180 in a SIDR_REQ, 136 in a SIDR_REP. */
  privateData?: Uint8Array;
  /**
   * RDMA READ/atomic requests we accept at once (≤ the device's maxQpRdAtom); default: connect 1,
   * accept what the peer's REQ asked. 255 (RDMA_MAX_RESP_RES): connect the device's most, accept the default.
   */
  responderResources?: number;
  /**
   * RDMA READ/atomic requests we issue at once (≤ the device's maxQpInitRdAtom); default: connect 1,
   * accept what the peer offered. 255 (RDMA_MAX_INIT_DEPTH): connect the device's most, accept the default.
   */
  initiatorDepth?: number;
  flowControl?: number;
  /** Transport retries, 0-255, above 7 taken as 7 (cma_connect_ib; default 7). */
  retryCount?: number;
  /** RNR retries, 0-255, above 7 taken as 7 (7 = infinite; default 7). */
  rnrRetryCount?: number;
  /** Without a QP on the id (createQp), the QP number to advertise (the application moves its QP itself). */
  qpNum?: number;
  srq?: number;
}

/** Options of createId: the application's context, and the CM's timing (Linux's values by default). */
export interface CreateIdOptions {
  /** Anything: carried on the id, and onto the ids a listener makes (librdmacm's context). */
  context?: unknown;
  /** CM response timeout exponent (4.096 µs × 2^n), 0-31; Linux's CMA_CM_RESPONSE_TIMEOUT 20 by default. */
  cmResponseTimeout?: number;
  /** CM retries, 0-15; CMA_MAX_CM_RETRIES 15 by default. */
  maxCmRetries?: number;
  /** The route's packet life time exponent, 0-31; CMA_IBOE_PACKET_LIFETIME 18 by default (also sets the QP's ACK timeout). */
  packetLifeTime?: number;
}

/** What createQp takes (ibv_qp_init_attr); the QP type follows the port space (TCP: RC, UDP: UD). */
export interface CmQpInit {
  sendCq: CQ;
  recvCq: CQ;
  cap: QpCapInit & { maxRecvWr?: number };
  srq?: SRQ;
  sqSigAll?: boolean;
  qpType?: number;
}

export type CmTiming = Required<Omit<CreateIdOptions, 'context'>>;

/** createId's timing options, checked, with Linux's values where not given. */
export function timingOf(opts: CreateIdOptions): CmTiming {
  return {
    cmResponseTimeout: uint('cmResponseTimeout', opts.cmResponseTimeout, CMA_CM_RESPONSE_TIMEOUT, 31),
    maxCmRetries: uint('maxCmRetries', opts.maxCmRetries, CMA_MAX_CM_RETRIES, 15),
    packetLifeTime: uint('packetLifeTime', opts.packetLifeTime, CMA_IBOE_PACKET_LIFETIME, 31),
  };
}

export function checkTimeout(ms: unknown): void {
  if (typeof ms !== 'number' || !(ms > 0)) throw new SoftrdmaError('EINVAL', `rdma_cm: timeoutMs must be a positive number, got ${String(ms)}`);
}

export function uint(field: string, v: unknown, def: number, max: number): number;
export function uint(field: string, v: unknown, def: undefined, max: number): number | undefined;
export function uint(field: string, v: unknown, def: number | undefined, max: number): number | undefined {
  if (v === undefined) return def;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > max) throw new SoftrdmaError('EINVAL', `rdma_cm: ${field} must be an integer from 0 to ${max}, got ${String(v)}`);
  return v;
}

/** librdmacm's RDMA_MAX_RESP_RES and RDMA_MAX_INIT_DEPTH: "as many as the device takes". */
export const RDMA_MAX_RD_ATOMIC = 0xff;

/**
 * responderResources / initiatorDepth: `def` when not given, `most` for RDMA_MAX_RD_ATOMIC, else
 * at most `max` (EINVAL beyond, as librdmacm's ucma_valid_param).
 */
export function rdAtomic(field: string, v: unknown, def: number, max: number, most: number): number {
  return v === RDMA_MAX_RD_ATOMIC ? most : uint(field, v, def, max);
}

/** retryCount / rnrRetryCount: a u8 (EINVAL otherwise); above 7 is 7, as cma_connect_ib and cma_accept_ib take it. */
export function retries(field: string, v: unknown): number {
  return Math.min(7, uint(field, v, 7, 0xff));
}

export function privateData(field: string, v: unknown, max: number): Buffer {
  if (v === undefined) return Buffer.alloc(0);
  if (!(v instanceof Uint8Array)) throw new SoftrdmaError('EINVAL', `rdma_cm: ${field} must be a Uint8Array`);
  if (v.length > max) throw new SoftrdmaError('EINVAL', `rdma_cm: ${field} is ${v.length} bytes, at most ${max} here`);
  return Buffer.from(v);
}

