// IP addresses and GIDs: text addresses to the bytes of a GID or of the ICRC pseudo-header, and back (RoCEv2 GIDs are IPv6 or IPv4-mapped addresses; SMC's CLC carries the same bytes).

import { isIPv4, isIPv6 } from 'node:net';

/**
 * An IPv4 address written in IPv6 form ('::ffff:1.2.3.4', as a dual-stack socket reports an IPv4
 * peer) as the IPv4 address; anything else as it is.
 */
export function unmapV4(a: string): string {
  return /^::ffff:/i.test(a) && isIPv4(a.slice(7)) ? a.slice(7) : a;
}

export function ipv4Bytes(addr: string): Buffer {
  if (!isIPv4(addr)) throw new TypeError(`not an IPv4 address: ${addr}`);
  return Buffer.from(addr.split('.').map((x) => Number(x)));
}

export function ipv6Bytes(addr: string): Buffer {
  const zone = addr.indexOf('%');
  if (zone >= 0) addr = addr.slice(0, zone);
  if (!isIPv6(addr)) throw new TypeError(`not an IPv6 address: ${addr}`);
  const out = Buffer.alloc(16);
  let tail = addr;
  // An embedded dotted quad (::ffff:1.2.3.4) fills the last four bytes.
  const lastColon = addr.lastIndexOf(':');
  let v4: Buffer | undefined;
  if (addr.indexOf('.', lastColon) >= 0) {
    v4 = ipv4Bytes(addr.slice(lastColon + 1));
    tail = addr.slice(0, lastColon + 1) + '0:0';
  }
  const [head, rest] = tail.split('::') as [string, string | undefined];
  const h = head ? head.split(':') : [];
  const r = rest !== undefined && rest !== '' ? rest.split(':') : [];
  const groups = rest === undefined ? h : [...h, ...new Array(8 - h.length - r.length).fill('0'), ...r];
  groups.forEach((g, i) => out.writeUInt16BE(parseInt(g, 16), i * 2));
  if (v4) v4.copy(out, 12);
  return out;
}

/** The GID for an address: IPv6 as is, IPv4 as the IPv4-mapped IPv6 address (as rxe does). */
export function gidFromAddress(addr: string): Buffer {
  if (isIPv4(addr)) {
    const g = Buffer.alloc(16);
    g.writeUInt16BE(0xffff, 10);
    ipv4Bytes(addr).copy(g, 12);
    return g;
  }
  return ipv6Bytes(addr);
}

/** The IP address a GID names: IPv4-mapped GIDs give dotted quads. */
export function addressFromGid(gid: Uint8Array): string {
  if (gid.length !== 16) throw new TypeError('a GID is 16 bytes');
  const isMapped = gid.subarray(0, 10).every((b) => b === 0) && gid[10] === 0xff && gid[11] === 0xff;
  if (isMapped) return `${gid[12]}.${gid[13]}.${gid[14]}.${gid[15]}`;
  return compressIpv6(hexGroups(gid));
}

/**
 * 16 address bytes as inet_ntop(3) writes them, which is how node:dgram reports a sender:
 * RFC 5952's compressed form, an IPv4-mapped address as ::ffff:a.b.c.d, and (glibc's rule)
 * one whose first six words alone are zero as ::a.b.c.d.
 */
export function ipv6String(b: Uint8Array): string {
  if (b.length !== 16) throw new TypeError('an IPv6 address is 16 bytes');
  if (b.subarray(0, 10).every((x) => x === 0)) {
    const quad = `${b[12]}.${b[13]}.${b[14]}.${b[15]}`;
    if (b[10] === 0xff && b[11] === 0xff) return `::ffff:${quad}`;
    if (b[10] === 0 && b[11] === 0 && (b[12] !== 0 || b[13] !== 0)) return `::${quad}`;
  }
  return compressIpv6(hexGroups(b));
}

/** The eight 16-bit words of an IPv6 address, in hex without leading zeros. */
function hexGroups(b: Uint8Array): string[] {
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(((b[i]! << 8) | b[i + 1]!).toString(16));
  return groups;
}

function compressIpv6(groups: string[]): string {
  // Replace the longest run of zero groups (length >= 2) with '::' (RFC 5952).
  let best = -1, bestLen = 0;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== '0') { i++; continue; }
    let j = i;
    while (j < 8 && groups[j] === '0') j++;
    if (j - i > bestLen && j - i >= 2) { best = i; bestLen = j - i; }
    i = j;
  }
  if (best < 0) return groups.join(':');
  return `${groups.slice(0, best).join(':')}::${groups.slice(best + bestLen).join(':')}`;
}

export function gidToString(gid: Uint8Array): string {
  const parts: string[] = [];
  for (let i = 0; i < 16; i += 2) parts.push(Buffer.from(gid.subarray(i, i + 2)).toString('hex'));
  return parts.join(':');
}
