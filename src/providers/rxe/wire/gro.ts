// Splitting a UDP GRO datagram back into RoCEv2 packets.
//
// With UDP_GRO set on the receiving socket, the kernel hands a GSO send (a run of equal-size
// packets, see RxeLink.flush) over whole instead of cutting it, on loopback and wherever GRO
// merges: one recvmsg and one 'message' event for up to 64 packets. The segment size travels
// in a control message that node:dgram does not pass on, so it is recovered from the packets
// themselves, and a sender only batches runs for which that is unambiguous:
//   - a run that starts with a packet without payload (ACKs, READ requests, atomics): the
//     head's opcode fixes its size;
//   - a run that starts with a FIRST or MIDDLE packet: its payload is one path MTU, the
//     receiving QP's (a responder refuses a FIRST or MIDDLE of another size, Linux
//     check_length); for a QP it does not know, the link passes no MTU, and of the five MTUs
//     the one whose offset holds the same QP's next BTH is the segment size, unless the
//     datagram is exactly one packet of some MTU;
//   - an RDMA WRITE ONLY followed by the same QP's next packet, no longer than it (SMC-R's
//     data write and its CDC SEND): the RETH's DMA length gives the WRITE's size.
// A GSO send's last segment may be shorter than the others (the kernel cuts it so), which is
// how a run ends with a short tail such as that SEND. Anything else is one packet, as without
// GRO; a datagram that only looks like a run fails its segments' ICRC checks and is dropped and
// counted like any bad packet.

import { BTH_BYTES, ICRC_BYTES, OPCODES, Op } from './opcodes.js';

const MTUS = [4096, 2048, 1024, 512, 256];

/** Does the BTH at `at` follow the one at 0 (same destination QP, next PSN)? */
function continues(buf: Buffer, at: number): boolean {
  if (buf.length - at < BTH_BYTES + ICRC_BYTES) return false;
  if (OPCODES[buf[at]!] === undefined) return false;
  if (((buf.readUInt32BE(4) ^ buf.readUInt32BE(at + 4)) & 0xffffff) !== 0) return false;
  const psn = buf.readUInt32BE(8) & 0xffffff;
  return (buf.readUInt32BE(at + 8) & 0xffffff) === ((psn + 1) & 0xffffff);
}

/**
 * The segment size of a datagram that holds a run of packets, or 0 when it holds one packet.
 * `pathMtu`: the path MTU of the QP the head packet is for, 0 if unknown. With it, a run of
 * FIRST or MIDDLE packets is cut exactly: the payload bytes are never read as headers. (The
 * size found for the last run, tried first, did read them: a single 4 KiB FIRST packet whose
 * payload held a BTH at 1 KiB was cut there; and a run of 1 KiB MIDDLE packets whose short
 * tail made it as long as one 2 or 4 KiB packet was taken for that packet.)
 */
export function groSegmentSize(buf: Buffer, pathMtu = 0): number {
  const len = buf.length;
  if (len < 2 * (BTH_BYTES + ICRC_BYTES)) return 0;
  const info = OPCODES[buf[0]!];
  if (!info) return 0;
  if (!(info.mask & Op.PAYLOAD)) {
    const s = info.length + ICRC_BYTES;
    return len > s ? s : 0;
  }
  if (info.mask & Op.END) {
    const s = writeOnlySize(buf, info);
    return s > 0 && len > s && continues(buf, s) ? s : 0;
  }
  if (pathMtu > 0) {
    const s = info.length + pathMtu + ICRC_BYTES;
    return len > s && len - s >= BTH_BYTES + ICRC_BYTES ? s : 0;
  }
  for (const mtu of MTUS) {
    const s = info.length + mtu + ICRC_BYTES;
    if (len === s) return 0;
    if (len > s && continues(buf, s)) return s;
  }
  return 0;
}

/** The size of an RDMA WRITE ONLY packet from its RETH's DMA length (at most one MTU), else 0. */
function writeOnlySize(head: Buffer, info: { length: number; reth: number; mask: number }): number {
  if (info.reth < 0 || !(info.mask & Op.END) || head.length < info.reth + 16) return 0;
  const dma = head.readUInt32BE(info.reth + 12);
  return dma <= 4096 ? info.length + dma + ((4 - (dma % 4)) % 4) + ICRC_BYTES : 0;
}

/**
 * Can `tail` (no longer than `head`) end a GSO run that starts with `head` and has `k`
 * packets before it, so that groSegmentSize still cuts it? The head must fix the segment size
 * by itself (a packet without payload, a FIRST or MIDDLE, or a WRITE ONLY by its RETH) and the
 * tail be the same QP's packet k PSNs later. `headLen` is the head's whole length. Only a
 * message's last packet is a tail: a FIRST's MIDDLE is better off heading a run of its own.
 */
export function endsRun(head: Buffer, headLen: number, tail: Buffer, k: number): boolean {
  const info = OPCODES[head[0]!];
  if (!info || !((OPCODES[tail[0]!]?.mask ?? 0) & Op.END)) return false;
  if (!(info.mask & Op.PAYLOAD)) return true;
  if (info.mask & Op.END && writeOnlySize(head, info) !== headLen) return false;
  if (((head.readUInt32BE(4) ^ tail.readUInt32BE(4)) & 0xffffff) !== 0) return false;
  return (tail.readUInt32BE(8) & 0xffffff) === (((head.readUInt32BE(8) & 0xffffff) + k) & 0xffffff);
}

/**
 * Can `next` join a GSO run that starts with `head` (both BTH-first header buffers of
 * packets of equal size, `next` the k-th after it) so that groSegmentSize splits it again?
 */
export function joinsRun(head: Buffer, next: Buffer, k: number): boolean {
  const info = OPCODES[head[0]!];
  if (!info) return false;
  if (!(info.mask & Op.PAYLOAD)) return true; // the head's opcode fixes the size
  if (info.mask & Op.END) return false; // a LAST or ONLY packet's payload may be any size
  if (((head.readUInt32BE(4) ^ next.readUInt32BE(4)) & 0xffffff) !== 0) return false;
  return (next.readUInt32BE(8) & 0xffffff) === (((head.readUInt32BE(8) & 0xffffff) + k) & 0xffffff);
}
