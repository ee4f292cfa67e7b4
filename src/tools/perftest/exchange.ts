// The messages of perftest's out-of-band exchange over TCP (perftest_communication.c, as in
// perftest 4.5-0.17, which reports itself as version 6.06: Debian 12's package). Every message
// has a fixed size and both sides send the same kind at the same step, so a reader knows how
// many bytes come next; nothing on the wire says which message it is. Each function here turns
// one message into bytes or back, and a malformed message is an Error that says what was wrong.

/** The version both sides swap first: 16 bytes, a NUL-terminated decimal string. */
export const VERSION = '6.06';
export const VERSION_BYTES = 16;
/**
 * After the version's NUL, bytes the C side never reads (it only calls atof() on the field):
 * a softrdma peer says so there, and two softrdma peers then add their own messages.
 */
export const SOFTRDMA_MARK = 'softrdma/1';
/** perftest refuses peers older than this (check_version_compatibility). */
export const MIN_VERSION = 5.7;

/** Address message with a GID (KEY_MSG_SIZE_GID): 107 characters and a NUL. */
export const DEST_BYTES = 108;
/** The bw report: five 8-byte big-endian fields (size, iters, peak, average, message rate). */
export const BW_REPORT_BYTES = 40;
/** Written by each side after its last handshake (ctx_close_connection); nobody reads it. */
export const DONE = Buffer.from('done\0', 'latin1');

export interface Dest {
  lid: number;
  /** The sender's max outstanding RDMA READ/atomic requests it will accept (max_dest_rd_atomic). */
  outReads: number;
  qpn: number;
  psn: number;
  rkey: number;
  vaddr: bigint;
  gid: Uint8Array;
  srqn: number;
}

export interface BwReport {
  size: bigint;
  iters: bigint;
  bwPeak: number;
  bwAvg: number;
  msgRate: number;
}

export function encodeVersion(softrdma: boolean, version = VERSION): Buffer {
  const b = Buffer.alloc(VERSION_BYTES);
  b.write(version, 0, 'latin1');
  if (softrdma) b.write(SOFTRDMA_MARK, version.length + 1, 'latin1');
  return b;
}

export function decodeVersion(b: Buffer): { version: string; number: number; softrdma: boolean } {
  if (b.length !== VERSION_BYTES) throw new Error(`version message must be ${VERSION_BYTES} bytes, got ${b.length}`);
  // Without a NUL the C side's atof() would read past the field; we take the 16 bytes.
  const nul = b.indexOf(0) < 0 ? b.length : b.indexOf(0);
  const version = b.subarray(0, nul).toString('latin1');
  // atof() as the C side reads it: the leading decimal number, 0 when there is none.
  const m = /^\s*[+-]?(\d+(\.\d*)?|\.\d+)/.exec(version);
  const number = m ? Number(m[0]) : 0;
  const rest = b.subarray(nul + 1);
  const end = rest.indexOf(0);
  const softrdma = (end < 0 ? rest : rest.subarray(0, end)).toString('latin1') === SOFTRDMA_MARK;
  return { version, number, softrdma };
}

/** check_sys_data's two numbers (cycle buffer, cache line size): 4 bytes, network order. */
export function encodeInt32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeInt32BE(n);
  return b;
}

export function decodeInt32(b: Buffer, what: string): number {
  if (b.length !== 4) throw new Error(`${what} must be 4 bytes, got ${b.length}`);
  return b.readInt32BE(0);
}

/** check_mtu: the ibv_mtu enum (1 = 256 ... 5 = 4096) as "%d" in 2 bytes (a digit and NUL). */
export function encodeMtu(mtuEnum: number): Buffer {
  if (!Number.isInteger(mtuEnum) || mtuEnum < 1 || mtuEnum > 5) throw new Error(`bad MTU enum ${mtuEnum}`);
  return Buffer.from(`${mtuEnum}\0`, 'latin1');
}

/** The peer's MTU enum, or undefined when it is not one perftest would use (it then keeps its own). */
export function decodeMtu(b: Buffer): number | undefined {
  if (b.length !== 2) throw new Error(`MTU message must be 2 bytes, got ${b.length}`);
  const s = b.toString('latin1').replace(/\0.*$/s, '');
  const n = /^\d+$/.test(s) ? Number(s) : NaN;
  return n >= 1 && n <= 5 ? n : undefined;
}

const hexw = (n: number | bigint, w: number) => n.toString(16).padStart(w, '0');

/** KEY_PRINT_FMT_GID: "%04x:%04x:%06x:%06x:%08x:%016llx:" 16 x "%02x:" "%08x:" and a NUL. */
export function encodeDest(d: Dest): Buffer {
  if (d.gid.length !== 16) throw new Error('a GID has 16 bytes');
  const fields = [hexw(d.lid & 0xffff, 4), hexw(d.outReads & 0xffff, 4), hexw(d.qpn & 0xffffff, 6), hexw(d.psn & 0xffffff, 6),
    hexw(d.rkey >>> 0, 8), hexw(BigInt.asUintN(64, d.vaddr), 16)];
  const text = fields.join(':') + ':' + Array.from(d.gid, (x) => hexw(x, 2) + ':').join('') + hexw(d.srqn >>> 0, 8) + ':';
  const b = Buffer.alloc(DEST_BYTES);
  b.write(text, 0, 'latin1');
  return b;
}

const DEST_RE = /^([0-9a-f]{4}):([0-9a-f]{4}):([0-9a-f]{6}):([0-9a-f]{6}):([0-9a-f]{8}):([0-9a-f]{16}):((?:[0-9a-f]{2}:){16})([0-9a-f]{8}):$/i;

export function decodeDest(b: Buffer): Dest {
  if (b.length !== DEST_BYTES) throw new Error(`address message must be ${DEST_BYTES} bytes, got ${b.length}`);
  const nul = b.indexOf(0);
  const text = b.subarray(0, nul < 0 ? b.length : nul).toString('latin1');
  const m = DEST_RE.exec(text);
  if (nul !== DEST_BYTES - 1 || !m) {
    throw new Error(`malformed address message from the peer: '${printable(text)}' (expected LID:OUT_READS:QPN:PSN:RKEY:VADDR:16 GID bytes:SRQN:)`);
  }
  const h = (i: number) => parseInt(m[i]!, 16);
  return {
    lid: h(1), outReads: h(2), qpn: h(3), psn: h(4), rkey: h(5), vaddr: BigInt('0x' + m[6]!),
    gid: Uint8Array.from(m[7]!.slice(0, -1).split(':'), (x) => parseInt(x, 16)), srqn: h(8),
  };
}

/** xchg_bw_reports for a peer of version 5.33 or later: each field swapped on its own, big-endian. */
export function encodeBwReport(r: BwReport): Buffer {
  const b = Buffer.alloc(BW_REPORT_BYTES);
  b.writeBigUInt64BE(BigInt.asUintN(64, r.size), 0);
  b.writeBigUInt64BE(BigInt.asUintN(64, r.iters), 8);
  b.writeDoubleBE(r.bwPeak, 16);
  b.writeDoubleBE(r.bwAvg, 24);
  b.writeDoubleBE(r.msgRate, 32);
  return b;
}

export function decodeBwReport(b: Buffer): BwReport {
  if (b.length !== BW_REPORT_BYTES) throw new Error(`bw report must be ${BW_REPORT_BYTES} bytes, got ${b.length}`);
  return { size: b.readBigUInt64BE(0), iters: b.readBigUInt64BE(8), bwPeak: b.readDoubleBE(16), bwAvg: b.readDoubleBE(24), msgRate: b.readDoubleBE(32) };
}

function printable(s: string): string {
  return s.slice(0, 120).replace(/[^\x20-\x7e]/g, '.');
}

/**
 * The address message as perftest -R sends it (rdma_write_keys with HAVE_ENDIAN): struct
 * pingpong_dest as x86-64 lays it out, 56 bytes: lid, out_reads, qpn, psn, rkey (4 bytes each,
 * big-endian), 4 bytes of padding, vaddr (8, big-endian), the GID (16), srqn and gid_index
 * (4 each, big-endian). rdma_read_keys reads all but srqn and gid_index.
 */
export const DEST_CM_BYTES = 56;

export function encodeDestCm(d: Dest, gidIndex = 0): Buffer {
  if (d.gid.length !== 16) throw new Error('a GID has 16 bytes');
  const b = Buffer.alloc(DEST_CM_BYTES);
  b.writeInt32BE(d.lid | 0, 0);
  b.writeInt32BE(d.outReads | 0, 4);
  b.writeInt32BE(d.qpn | 0, 8);
  b.writeInt32BE(d.psn | 0, 12);
  b.writeUInt32BE(d.rkey >>> 0, 16);
  b.writeBigUInt64BE(BigInt.asUintN(64, d.vaddr), 24);
  b.set(d.gid, 32);
  b.writeUInt32BE(d.srqn >>> 0, 48);
  b.writeInt32BE(gidIndex | 0, 52);
  return b;
}

export function decodeDestCm(b: Buffer): Dest {
  if (b.length !== DEST_CM_BYTES) throw new Error(`address message must be ${DEST_CM_BYTES} bytes over the rdma_cm, got ${b.length}`);
  return {
    lid: b.readInt32BE(0), outReads: b.readInt32BE(4), qpn: b.readUInt32BE(8) & 0xffffff, psn: b.readUInt32BE(12) & 0xffffff,
    rkey: b.readUInt32BE(16), vaddr: b.readBigUInt64BE(24), gid: Uint8Array.from(b.subarray(32, 48)), srqn: b.readUInt32BE(48),
  };
}
