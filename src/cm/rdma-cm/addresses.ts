// Socket addresses for rdma_cm ids: checked IP literals with a port, the wildcard forms, and
// the process's table of bound ports per port space (Linux's cma_ps_alloc/cma_alloc_port).

import { randomInt } from 'node:crypto';
import { isIP } from 'node:net';
import { SoftrdmaError } from '../../abi/errors.js';
import { PortSpace } from '../wire/cma-header.js';

export type PortSpaceName = 'tcp' | 'udp';
export const PORT_SPACE: Readonly<Record<PortSpaceName, number>> = { tcp: PortSpace.TCP, udp: PortSpace.UDP };

export interface SockAddr {
  address: string;
  port: number;
  family: 4 | 6;
}

const WILDCARDS = new Set(['0.0.0.0', '::']);
export const isWildcard = (address: string) => WILDCARDS.has(address);

/** An IP literal (no names: rdma_cm resolves addresses, not host names) and a port, or EINVAL naming the field. */
export function sockAddr(field: string, address: unknown, port: unknown = 0): SockAddr {
  if (typeof address !== 'string' || isIP(address) === 0) {
    throw new SoftrdmaError('EINVAL', `rdma_cm: ${field} must be an IPv4 or IPv6 address literal, got ${JSON.stringify(address)}`);
  }
  if (typeof port !== 'number' || !Number.isInteger(port) || port < 0 || port > 0xffff) {
    throw new SoftrdmaError('EINVAL', `rdma_cm: ${field} port must be an integer from 0 to 65535, got ${String(port)}`);
  }
  return { address: canonical(address), port, family: isIP(address) === 4 ? 4 : 6 };
}

/** One spelling per address (IPv6 compressed and lower case, as node:net prints it); a zone index kept as given. */
function canonical(a: string): string {
  if (isIP(a) === 4) return a;
  const base = withoutZone(a);
  try {
    return new URL(`http://[${base}]/`).hostname.slice(1, -1) + a.slice(base.length);
  } catch {
    return a.toLowerCase();
  }
}

/** The address without its zone index (fe80::1%eth0 is fe80::1 on the wire: the cma header has no zone). */
export function withoutZone(a: string): string {
  const zone = a.indexOf('%');
  return zone >= 0 ? a.slice(0, zone) : a;
}

/** The ephemeral range Linux uses by default (net.ipv4.ip_local_port_range). */
const EPHEMERAL_LOW = 32768, EPHEMERAL_HIGH = 60999;

/**
 * Bound ports per port space: (port, address) pairs. As Linux's cma_check_port: a port bound to
 * a wildcard and any other address on it (or a wildcard joining a port in use) is
 * EADDRNOTAVAIL; the same address twice is EADDRINUSE; other addresses share the port.
 */
export class PortTable {
  /** Per port: each bound address and whether its id takes its own family only (AFONLY). */
  private readonly bound = new Map<string, Map<string, boolean>>();

  private key(ps: number, port: number) { return `${ps}:${port}`; }

  /**
   * Why `address` cannot take `port` (cma_check_port's errno), or undefined if it can. Two ids
   * that both take their own family only, of different families, share any port (a '::' with
   * AFONLY beside a '0.0.0.0', whose id is always AFONLY).
   */
  private conflict(ps: number, port: number, address: string, afonly: boolean): 'EADDRNOTAVAIL' | 'EADDRINUSE' | undefined {
    const s = this.bound.get(this.key(ps, port));
    if (!s || s.size === 0) return undefined;
    const family = isIP(withoutZone(address));
    let why: 'EADDRNOTAVAIL' | 'EADDRINUSE' | undefined;
    for (const [cur, curAfonly] of s) {
      if (afonly && curAfonly && isIP(withoutZone(cur)) !== family) continue;
      if (isWildcard(address) || isWildcard(cur)) return 'EADDRNOTAVAIL';
      if (cur === address) why = 'EADDRINUSE';
    }
    return why;
  }

  /**
   * Bind `address:port` (port 0: an ephemeral port); EADDRINUSE / EADDRNOTAVAIL as
   * cma_check_port, EADDRNOTAVAIL when the range is full. `afonly`: the id takes its own
   * family only (always for IPv4).
   */
  bind(ps: number, address: string, port: number, afonly = isIP(withoutZone(address)) === 4): number {
    if (port !== 0) {
      const why = this.conflict(ps, port, address, afonly);
      if (why === 'EADDRINUSE') throw new SoftrdmaError(why, `rdma_cm: port ${port} on ${address} is in use`);
      if (why) {
        const held = [...this.bound.get(this.key(ps, port))!.keys()].join(', ');
        throw new SoftrdmaError(why, `rdma_cm: port ${port} is bound to ${held} already; ${address} cannot share it (a wildcard shares a port with no other address, unless both take their own family only: afonly)`);
      }
      this.add(ps, port, address, afonly);
      return port;
    }
    const span = EPHEMERAL_HIGH - EPHEMERAL_LOW + 1;
    const start = randomInt(span);
    for (let i = 0; i < span; i++) {
      const p = EPHEMERAL_LOW + ((start + i) % span);
      if (!this.conflict(ps, p, address, afonly)) { this.add(ps, p, address, afonly); return p; }
    }
    throw new SoftrdmaError('EADDRNOTAVAIL', 'rdma_cm: no ephemeral port left');
  }

  private add(ps: number, port: number, address: string, afonly: boolean): void {
    const k = this.key(ps, port);
    let s = this.bound.get(k);
    if (!s) this.bound.set(k, s = new Map());
    s.set(address, afonly);
  }

  release(ps: number, address: string, port: number): void {
    const k = this.key(ps, port);
    const s = this.bound.get(k);
    if (!s) return;
    s.delete(address);
    if (s.size === 0) this.bound.delete(k);
  }

  /** How many (port, address) pairs are bound (tests: nothing left behind). */
  get size(): number {
    let n = 0;
    for (const s of this.bound.values()) n += s.size;
    return n;
  }
}

export const ports = new PortTable();
