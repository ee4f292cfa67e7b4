// The RDMA CM's header at the start of a REQ's (and a SIDR_REQ's) private data, and the IB
// service ids of the RDMA CM port spaces. Follows Linux drivers/infiniband/core/cma.c
// (struct cma_hdr, cma_format_hdr, cma_connect_ib, cma_resolve_ib_udp, cma_get_roce_udp_flow_label)
// and include/rdma/rdma_cm.h (enum rdma_ucm_port_space, RDMA_IB_IP_PS_*).

import { isIPv4, isIPv6 } from 'node:net';
import { addressFromGid, ipv4Bytes, ipv6Bytes } from '../../abi/inet.js';
import { CmDataSize } from './cm-messages.js';
import { err, ok, type Result } from './mad.js';

/** cma_hdr: version (1), IP version in the high nibble (1), source port (2), source and destination address (16 + 16). */
export const CMA_HDR_SIZE = 36;
export const CMA_VERSION = 0x00;

/** Private data an application can still put in a REQ / SIDR_REQ behind the header. */
export const CMA_REQ_USER_PRIVATE_DATA = CmDataSize.REQ_PRIVATE_DATA - CMA_HDR_SIZE; // 56
export const CMA_SIDR_REQ_USER_PRIVATE_DATA = CmDataSize.SIDR_REQ_PRIVATE_DATA - CMA_HDR_SIZE; // 180

/** RDMA CM port spaces (enum rdma_ucm_port_space). */
export const PortSpace = {
  IPOIB: 0x0002,
  IB: 0x013f,
  TCP: 0x0106,
  UDP: 0x0111,
} as const;
export type PortSpaceValue = (typeof PortSpace)[keyof typeof PortSpace];

/** Service id prefixes of the IP port spaces (RDMA_IB_IP_PS_*) and the mask that keeps them. */
export const RDMA_IB_IP_PS_MASK = 0xffff_ffff_ffff_0000n;
export const RDMA_IB_IP_PS_TCP = 0x0000_0000_0106_0000n;
export const RDMA_IB_IP_PS_UDP = 0x0000_0000_0111_0000n;
export const RDMA_IB_IP_PS_IB = 0x0000_0000_013f_0000n;
/** The whole RDMA CM service id range (IB_CMA_SERVICE_ID / IB_CMA_SERVICE_ID_MASK in ib_cm.h). */
export const IB_CMA_SERVICE_ID = 0x0000_0000_0100_0000n;
export const IB_CMA_SERVICE_ID_MASK = 0xffff_ffff_ff00_0000n;

/** Q_Key the RDMA CM uses for UDP and IB port space UD QPs (RDMA_UDP_QKEY). */
export const RDMA_UDP_QKEY = 0x01234567;

/** Linux's CM parameters for RDMA CM connections (cma.c): response timeout 20 (4.096 µs × 2^20 ≈ 4.3 s), 15 retries. */
export const CMA_CM_RESPONSE_TIMEOUT = 20;
export const CMA_MAX_CM_RETRIES = 15;
/** Packet lifetime cma.c puts in a RoCE path record (CMA_IBOE_PACKET_LIFETIME). */
export const CMA_IBOE_PACKET_LIFETIME = 18;

/** The service id for a port in a port space: (ps << 16) | port, as rdma_get_service_id does for IP addresses. */
export function serviceIdFor(ps: number, port: number): bigint {
  if (!Number.isInteger(ps) || ps < 0 || ps > 0xffff) throw new RangeError(`port space ${ps}`);
  if (!Number.isInteger(port) || port < 0 || port > 0xffff) throw new RangeError(`port ${port}`);
  return (BigInt(ps) << 16n) | BigInt(port);
}

/** The port space and port of an RDMA CM service id, or undefined if it is not one of the known spaces. */
export function parseServiceId(sid: bigint): { ps: PortSpaceValue; port: number } | undefined {
  if (sid >> 32n !== 0n) return undefined;
  const ps = Number((sid >> 16n) & 0xffffn);
  if (!(Object.values(PortSpace) as number[]).includes(ps)) return undefined;
  return { ps: ps as PortSpaceValue, port: Number(sid & 0xffffn) };
}

export interface CmaHeader {
  /** 4 or 6: the address family of the RDMA CM ids (IPv4 addresses travel as the last 4 bytes, the rest zero). */
  ipVersion: 4 | 6;
  /** The active side's source port (cma_format_hdr writes src sin_port); the destination port is in the service id. */
  srcPort: number;
  srcAddr: string;
  dstAddr: string;
}

/**
 * Encode the 36-byte header. As cma_format_hdr into kzalloc'ed memory: an IPv4 address fills
 * the union's last 4 bytes and the 12 before it stay zero (not the ::ffff: mapped form of a GID).
 */
export function encodeCmaHeader(h: CmaHeader): Buffer {
  const b = Buffer.alloc(CMA_HDR_SIZE);
  b[0] = CMA_VERSION;
  b[1] = h.ipVersion << 4;
  if (!Number.isInteger(h.srcPort) || h.srcPort < 0 || h.srcPort > 0xffff) throw new RangeError(`srcPort ${h.srcPort}`);
  b.writeUInt16BE(h.srcPort, 2);
  if (h.ipVersion === 4) {
    addressBytes(h.srcAddr, 4).copy(b, 4 + 12);
    addressBytes(h.dstAddr, 4).copy(b, 20 + 12);
  } else if (h.ipVersion === 6) {
    addressBytes(h.srcAddr, 6).copy(b, 4);
    addressBytes(h.dstAddr, 6).copy(b, 20);
  } else {
    throw new RangeError(`ipVersion ${String(h.ipVersion)}`);
  }
  return b;
}

/** Header + application data, as REQ private data (at most 56 bytes of application data). */
export function cmaReqPrivateData(h: CmaHeader, user: Uint8Array = Buffer.alloc(0), max = CMA_REQ_USER_PRIVATE_DATA): Buffer {
  if (user.length > max) throw new RangeError(`private data: ${user.length} bytes, at most ${max} after the RDMA CM header`);
  return Buffer.concat([encodeCmaHeader(h), user]);
}

/**
 * Decode the header at the start of REQ / SIDR_REQ private data. Refuses another version or an
 * IP version other than 4 and 6 (cma.c's cma_save_ip_info has no case for them). An IPv4 address
 * is read from the last 4 bytes only, as Linux does; the 12 before it are not checked.
 */
export function decodeCmaHeader(pd: Uint8Array): Result<CmaHeader> {
  if (!(pd instanceof Uint8Array) || pd.length < CMA_HDR_SIZE) return err('length', `the RDMA CM header is ${CMA_HDR_SIZE} bytes`, pd?.length ?? 0);
  if (pd[0] !== CMA_VERSION) return err('cmaVersion', `expected ${CMA_VERSION}`, pd[0]!);
  const ipVersion = pd[1]! >> 4;
  const b = Buffer.from(pd.buffer, pd.byteOffset, pd.length);
  const srcPort = b.readUInt16BE(2);
  if (ipVersion === 4) {
    const a = (o: number) => `${b[o]}.${b[o + 1]}.${b[o + 2]}.${b[o + 3]}`;
    return ok({ ipVersion, srcPort, srcAddr: a(16), dstAddr: a(32) });
  }
  if (ipVersion === 6) {
    return ok({ ipVersion, srcPort, srcAddr: v6String(b.subarray(4, 20)), dstAddr: v6String(b.subarray(20, 36)) });
  }
  return err('ipVersion', 'expected 4 or 6', ipVersion);
}

/** An IPv6 address's text, keeping IPv4-mapped addresses in IPv6 form (::ffff:a.b.c.d). */
function v6String(g: Uint8Array): string {
  const s = addressFromGid(g);
  return isIPv4(s) ? `::ffff:${s}` : s;
}

/** The application's part of REQ / SIDR_REQ private data (after the header). */
export const cmaUserData = (pd: Uint8Array) => pd.subarray(CMA_HDR_SIZE);

/**
 * The flow label Linux (cma_get_roce_udp_flow_label) puts in a RoCEv2 REQ's primary path when
 * the source address carries none: (source port × 31 + destination port) masked to 20 bits.
 * Seen in the 6.1 capture: ports 46136 → 7174 give 0x5eece.
 */
export function cmaRoceFlowLabel(srcPort: number, dstPort: number): number {
  return (srcPort * 31 + dstPort) & 0xfffff;
}

/** The GID a RoCEv2 path uses for an address: IPv6 as is, IPv4 as ::ffff:a.b.c.d. */
export function roceGid(addr: string): Buffer {
  return Buffer.from(addressBytes(addr, 0));
}

/**
 * An address's bytes (family 4 or 6: those of that family, else TypeError) or its RoCE GID
 * (family 0), from a small cache: a process talks to a few peers, and parsing the same
 * dotted quad for every REQ cost more than encoding the rest of its header. Read-only
 * buffers; callers copy.
 */
const parsed = new Map<string, Buffer>();
function addressBytes(addr: string, family: 0 | 4 | 6): Buffer {
  const key = `${family}${addr}`;
  let b = parsed.get(key);
  if (!b) {
    if (family === 4) b = ipv4Bytes(addr);
    else if (family === 6) b = ipv6Bytes(addr);
    else if (isIPv4(addr)) b = ipv6Bytes(`::ffff:${addr}`);
    else if (isIPv6(addr)) b = ipv6Bytes(addr);
    else throw new TypeError(`not an IP address: ${addr}`);
    if (parsed.size >= 256) parsed.clear();
    parsed.set(key, b);
  }
  return b;
}
