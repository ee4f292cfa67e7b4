// The RoCEv2 invariant CRC (IBA A17.8): zlib's CRC-32 over 8 bytes of 0xff (the masked LRH),
// the IP and UDP headers with their variant fields set to ones, the BTH with its reserved
// byte set to ones, then the rest of the packet; stored little-endian as the last 4 bytes.
//
// A UDP socket never sees the IP header, so an IcrcFlow rebuilds it from what the socket
// does know (addresses, ports, length) and from what softrdma makes the kernel send
// (IPv4: DF set and Identification 0, see link.ts).

import { crc32 } from '../../../sys/crc32.js';
import { ICRC_BYTES } from './opcodes.js';

const LRH_MASK_BYTES = 8;
const UDP_BYTES = 8;
const IPV4_BYTES = 20;
const IPV6_BYTES = 40;

export type IpFamily = 4 | 6;

/** Prefix CRCs kept per flow: a few packet lengths times the Identifications of a GSO run. */
const PREFIX_CACHE_MAX = 1024;

/**
 * The prefix CRCs the flows of one link keep, counted together (RxeLink.flow): every source
 * address and port is a flow, so per-flow bounds alone let a peer spraying ports and lengths
 * hold hundreds of MB. `full` is called before one more would go past `max`.
 */
export interface PrefixBudget { entries: number; readonly max: number; full(): void }

export class IcrcFlow {
  private readonly prefix: Buffer;
  private readonly ipBytes: number;
  /**
   * CRC of the masked LRH + IP + UDP prefix, by (UDP length, Identification): the first one
   * kept inline, the others in a map made when a second comes. A flow often lives as long as
   * one short connection's QP, and sees one or two lengths: objects it does not make are
   * objects the collector does not copy.
   */
  private firstKey = -1;
  private firstCrc = 0;
  private prefixCrc: Map<number, number> | undefined;
  /** Where this flow's cached prefixes are counted (its link's), if anywhere. */
  budget: PrefixBudget | undefined;
  /** The link's sweep in which it was last looked up (RxeLink.sweepFlows). */
  epoch = 0;
  /**
   * A prefix CRC check() computed and has not cached yet (key -1: none): it is cached only if
   * the packet passes, so packets that fail the check leave nothing behind.
   */
  private pendingKey = -1;
  private pendingCrc = 0;

  constructor(
    readonly family: IpFamily,
    src: Uint8Array,
    dst: Uint8Array,
    sport: number,
    dport: number,
    /** IPv4 Identification to assume; softrdma's own packets carry 0 (see computeParts). */
    private readonly ipv4Id = 0,
  ) {
    this.ipBytes = family === 4 ? IPV4_BYTES : IPV6_BYTES;
    // 36 or 56 bytes: V8 keeps a typed array this small on its heap (no backing store of its
    // own), and not from node:buffer's pool, whose 8 KiB blocks a long-lived slice would pin.
    const p = Buffer.alloc(LRH_MASK_BYTES + this.ipBytes + UDP_BYTES, 0xff);
    const ip = LRH_MASK_BYTES;
    if (family === 4) {
      p[ip] = 0x45; // version 4, IHL 5; TOS (byte 1) stays masked
      p.writeUInt16BE(ipv4Id, ip + 4); // 0 is what the kernel writes for DF on an unconnected socket
      p.writeUInt16BE(0x4000, ip + 6); // DF, fragment offset 0
      p[ip + 9] = 17; // UDP; TTL (8) and header checksum (10..11) stay masked
      p.set(src, ip + 12);
      p.set(dst, ip + 16);
    } else {
      // Version 6, then traffic class and flow label masked to ones: 0x6fffffff (rxe sets
      // priority to 0xf and the flow label to ones; the version nibble stays 6).
      p[ip] = 0x6f;
      p[ip + 6] = 17; // next header; hop limit (7) stays masked
      p.set(src, ip + 8);
      p.set(dst, ip + 24);
    }
    const udp = ip + this.ipBytes;
    p.writeUInt16BE(sport, udp);
    p.writeUInt16BE(dport, udp + 2);
    // UDP length is patched per packet; UDP checksum stays masked (0xffff).
    this.prefix = p;
  }

  /** The ICRC of a packet whose last 4 bytes are (or will be) the ICRC field. */
  compute(pkt: Buffer): number {
    return this.computeParts([pkt]);
  }

  /**
   * The ICRC of a packet given as parts (the BTH first, the ICRC field at the end of the
   * last part), so a payload can be sent straight from registered memory without a copy.
   */
  computeParts(parts: readonly Buffer[], ipv4Id = this.ipv4Id): number {
    return this.crcOf(parts, ipv4Id, true);
  }

  /** computeParts; `keep`: cache a prefix CRC computed on the way (else it is left pending). */
  private crcOf(parts: readonly Buffer[], ipv4Id: number, keep: boolean): number {
    let len = 0;
    for (const b of parts) len += b.length;
    const first = parts[0]!;
    const resv8a = first[4]!;
    first[4] = 0xff;
    // Each call costs about as much as CRCing a few hundred bytes: the prefix comes from the
    // cache and an empty tail is skipped.
    let crc = this.prefixCrcFor(UDP_BYTES + len, ipv4Id & 0xffff, keep);
    const last = parts.length - 1;
    for (let i = 0; i < last; i++) crc = crc32(parts[i]!, crc);
    const tail = parts[last]!;
    if (tail.length > ICRC_BYTES) crc = crc32(tail.subarray(0, tail.length - ICRC_BYTES), crc);
    first[4] = resv8a;
    return crc >>> 0;
  }

  private prefixCrcFor(udpLen: number, id: number, keep: boolean): number {
    const key = this.family === 4 ? udpLen * 0x10000 + id : udpLen;
    if (key === this.firstKey) return this.firstCrc;
    let crc = this.prefixCrc?.get(key);
    if (crc !== undefined) return crc;
    const p = this.prefix;
    const ip = LRH_MASK_BYTES;
    if (this.family === 4) {
      p.writeUInt16BE(IPV4_BYTES + udpLen, ip + 2);
      // Segment i of a GSO send leaves with Identification i (the kernel numbers them).
      p.writeUInt16BE(id, ip + 4);
    } else p.writeUInt16BE(udpLen, ip + 4);
    p.writeUInt16BE(udpLen, ip + this.ipBytes + 4);
    crc = crc32(p);
    if (keep) this.remember(key, crc);
    else {
      this.pendingKey = key;
      this.pendingCrc = crc;
    }
    return crc;
  }

  /** Prefix CRCs this flow keeps. */
  get cached(): number {
    return (this.firstKey >= 0 ? 1 : 0) + (this.prefixCrc?.size ?? 0);
  }

  private remember(key: number, crc: number): void {
    const b = this.budget;
    if (this.cached >= PREFIX_CACHE_MAX) {
      if (b) b.entries -= this.cached;
      this.firstKey = -1;
      this.prefixCrc?.clear();
    }
    if (b) {
      if (b.entries >= b.max) b.full();
      // full() may have let go of this flow too (its link starts afresh): then it counts nowhere.
      if (this.budget === b) b.entries++;
    }
    if (this.firstKey < 0) {
      this.firstKey = key;
      this.firstCrc = crc;
    } else (this.prefixCrc ??= new Map()).set(key, crc);
  }

  /** The flow leaves its link's table: what it caches no longer counts against the link's budget. */
  release(): void {
    if (this.budget) this.budget.entries -= this.cached;
    this.budget = undefined;
  }

  /** The packet check() computed passed: cache the prefix CRC it computed for it, if any. */
  private keepPending(): void {
    if (this.pendingKey < 0) return;
    this.remember(this.pendingKey, this.pendingCrc);
    this.pendingKey = -1;
  }

  /** Write the ICRC into the last 4 bytes. */
  seal(pkt: Buffer): void {
    this.sealParts([pkt]);
  }

  /** Write the ICRC of a packet given as parts into the last 4 bytes of its last part. */
  sealParts(parts: readonly Buffer[], ipv4Id = this.ipv4Id): void {
    const tail = parts[parts.length - 1]!;
    tail.writeUInt32LE(this.computeParts(parts, ipv4Id), tail.length - ICRC_BYTES);
  }

  /**
   * Check a received packet. 'ok': exact match (IPv4 with Identification 0, or IPv6).
   * For IPv4, a number: the ICRC is consistent with a sender that wrote that Identification
   * (16 of the 32 check bits verified; see inferIpv4Id; all 32 when it is ipv4IdHint). 'bad':
   * no Identification explains it.
   */
  check(pkt: Buffer, ipv4IdHint = 0): 'ok' | 'bad' | number {
    const want = pkt.readUInt32LE(pkt.length - ICRC_BYTES);
    const parts = [pkt];
    // Segment i of a run that arrived whole (UDP GRO) left with Identification i: try that first.
    this.pendingKey = -1;
    if (ipv4IdHint > 0 && this.family === 4 && this.crcOf(parts, ipv4IdHint, false) === want) {
      this.keepPending();
      return ipv4IdHint;
    }
    this.pendingKey = -1;
    const got = this.crcOf(parts, this.ipv4Id, false);
    if (want === got) {
      this.keepPending();
      return 'ok';
    }
    if (this.family !== 4) return 'bad';
    // Bytes covered by the CRC after the 2-byte Identification field (offset 12 of the stream).
    const after = LRH_MASK_BYTES + IPV4_BYTES + UDP_BYTES + pkt.length - ICRC_BYTES - (LRH_MASK_BYTES + 6);
    const id = inferIpv4Id((want ^ got) >>> 0, after);
    if (id < 0) return 'bad';
    this.keepPending();
    return id;
  }
}

// ---- Identification inference --------------------------------------------------------
// For messages of equal length, crc(a) ^ crc(b) = raw(a ^ b): the raw (no init, no final
// xor) CRC register after feeding the difference. If the difference is only the 16-bit
// Identification x followed by k bytes, raw = A^k · M0(x), where A feeds one zero byte and
// M0 feeds the two bytes of x into a zero register. Undo A^k, then look M0(x) up.

const POLY = 0xedb88320;
const TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ POLY : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

function feedByte(c: number, b: number): number {
  return (TABLE[(c ^ b) & 0xff]! ^ (c >>> 8)) >>> 0;
}

/** Inverse of feeding one zero byte: undo eight bit steps (POLY's top bit marks each xor). */
function unfeedZeroByte(c: number): number {
  for (let k = 0; k < 8; k++) c = c & 0x80000000 ? (((c ^ POLY) << 1) | 1) >>> 0 : (c << 1) >>> 0;
  return c;
}

type Mat = Uint32Array; // 32 columns: the image of each basis bit

function apply(m: Mat, v: number): number {
  let r = 0;
  for (let i = 0; v !== 0; i++, v >>>= 1) if (v & 1) r ^= m[i]!;
  return r >>> 0;
}

function mul(a: Mat, b: Mat): Mat {
  const r = new Uint32Array(32);
  for (let i = 0; i < 32; i++) r[i] = apply(a, b[i]!);
  return r;
}

const UNFEED: Mat = (() => {
  const m = new Uint32Array(32);
  for (let i = 0; i < 32; i++) m[i] = unfeedZeroByte((1 << i) >>> 0);
  return m;
})();

/**
 * UNFEED^(2^j) for j = 0, 1, ...: undoing k zero bytes applies those of k's set bits to the
 * vector, at most 17 matrix-vector products for any UDP length and nothing cached per length
 * (matrix-matrix powers per length cost ~50 us, which packets of ever new lengths that fail
 * the check could make a peer pay for every time).
 */
const UNFEED_POW2: Mat[] = [UNFEED];

/** A^-k applied to v: undo k zero bytes fed into the CRC register. */
function unfeed(k: number, v: number): number {
  for (let j = 0; k > 0; j++, k = Math.floor(k / 2)) {
    if (j === UNFEED_POW2.length) UNFEED_POW2.push(mul(UNFEED_POW2[j - 1]!, UNFEED_POW2[j - 1]!));
    if (k % 2 === 1) v = apply(UNFEED_POW2[j]!, v);
  }
  return v;
}

/** A^-k as one matrix: the product of unfeed's powers for k. */
function unfeedMatrix(k: number): Mat {
  let m: Mat | undefined;
  for (let j = 0; k > 0; j++, k = Math.floor(k / 2)) {
    if (j === UNFEED_POW2.length) UNFEED_POW2.push(mul(UNFEED_POW2[j - 1]!, UNFEED_POW2[j - 1]!));
    if (k % 2 === 1) m = m ? mul(UNFEED_POW2[j]!, m) : UNFEED_POW2[j]!;
  }
  return m ?? IDENTITY;
}

const IDENTITY: Mat = (() => {
  const m = new Uint32Array(32);
  for (let i = 0; i < 32; i++) m[i] = (1 << i) >>> 0;
  return m;
})();

/**
 * Lengths whose inference explained a packet, with A^-k as one matrix: a Linux peer gives
 * every packet its own Identification, so each of its packets is inferred, mostly at a few
 * lengths; one matrix-vector product there instead of unfeed's up to 17. Filled only by
 * inferences that succeeded (a packet that fails costs no matrix product) and bounded.
 */
const unfeedByLength = new Map<number, Mat>();
const MAX_UNFEED_LENGTHS = 64;

let idByImage: Map<number, number> | undefined;

/** The Identification that explains an ICRC difference, or -1. */
export function inferIpv4Id(diff: number, bytesAfterId: number): number {
  if (!idByImage) {
    idByImage = new Map();
    for (let x = 0; x < 0x10000; x++) idByImage.set(feedByte(feedByte(0, x >>> 8), x & 0xff), x);
  }
  const m = unfeedByLength.get(bytesAfterId);
  if (m) return idByImage.get(apply(m, diff)) ?? -1;
  const id = idByImage.get(unfeed(bytesAfterId, diff)) ?? -1;
  if (id >= 0) {
    if (unfeedByLength.size >= MAX_UNFEED_LENGTHS) unfeedByLength.clear();
    unfeedByLength.set(bytesAfterId, unfeedMatrix(bytesAfterId));
  }
  return id;
}
