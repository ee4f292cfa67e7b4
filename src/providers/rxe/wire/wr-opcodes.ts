// The work-request opcode table, in the manner of Linux rxe's rxe_wr_opcode_info
// (rxe_opcode.c): one row per WR opcode says which QP types may post it, what kind of work
// it is (the WR_*_MASK bits), which completion opcode it reports, and which BTH opcodes its
// packets carry at the start, middle and end of a message (what rxe_req.c's
// next_opcode_rc/next_opcode_uc work out from the previous packet's opcode).
//
// The QP types are softrdma's as they were before this table (its posting rules did not
// change): unlike Linux, LOCAL_INV is allowed on UC QPs and SEND_WITH_INV only on RC QPs.

import { QpType, WcOpcode, WrOpcode } from '../../../abi/enums.js';
import { OpCode } from './opcodes.js';

/** What a work request does (Linux's WR_INLINE_MASK, WR_ATOMIC_MASK, ... in rxe_opcode.h). */
export const enum WrFlag {
  /** Its data may be posted inline (sends and writes). */
  INLINE = 1 << 0,
  /** An atomic: one 8-byte operand, one packet, the result written locally. */
  ATOMIC = 1 << 1,
  /** Consumes a receive WQE at the responder. */
  SEND = 1 << 2,
  /** Reads remote memory into local memory. */
  READ = 1 << 3,
  /** Writes remote memory. */
  WRITE = 1 << 4,
  /** Executed by the requester itself, no packet (LOCAL_INV, BIND_MW). */
  LOCAL_OP = 1 << 5,
}

/** The BTH opcodes of a message's packets: the first, middle and last of several, or its only one. */
export interface PacketOpcodes {
  readonly first: number;
  readonly middle: number;
  readonly last: number;
  readonly only: number;
}

export interface WrOpcodeInfo {
  readonly name: string;
  /** WrFlag bits. */
  readonly mask: number;
  /** The opcode of its send-queue completion. */
  readonly wcOpcode: number;
  /** Keyed by QpType: the QP types that may post it, with its packet opcodes there. */
  readonly on: Readonly<Partial<Record<number, PacketOpcodes>>>;
}

const message = (first: number, middle: number, last: number, only: number): PacketOpcodes => Object.freeze({ first, middle, last, only });
/** An operation that is one request packet however long its data (a READ asks for it all at once). */
const single = (opcode: number) => message(opcode, opcode, opcode, opcode);
/** Local operations send nothing. */
const LOCAL = single(-1);

const SEND = WrFlag.INLINE | WrFlag.SEND;
const WRITE = WrFlag.INLINE | WrFlag.WRITE;

function build(): ReadonlyArray<WrOpcodeInfo | undefined> {
  const table: (WrOpcodeInfo | undefined)[] = [];
  const row = (opcode: number, name: string, mask: number, wcOpcode: number, on: WrOpcodeInfo['on']) => {
    table[opcode] = Object.freeze({ name, mask, wcOpcode, on: Object.freeze(on) });
  };
  row(WrOpcode.SEND, 'SEND', SEND, WcOpcode.SEND, {
    [QpType.RC]: message(OpCode.RC_SEND_FIRST, OpCode.RC_SEND_MIDDLE, OpCode.RC_SEND_LAST, OpCode.RC_SEND_ONLY),
    [QpType.UC]: message(OpCode.UC_SEND_FIRST, OpCode.UC_SEND_MIDDLE, OpCode.UC_SEND_LAST, OpCode.UC_SEND_ONLY),
    [QpType.UD]: single(OpCode.UD_SEND_ONLY),
  });
  row(WrOpcode.SEND_WITH_IMM, 'SEND_WITH_IMM', SEND, WcOpcode.SEND, {
    [QpType.RC]: message(OpCode.RC_SEND_FIRST, OpCode.RC_SEND_MIDDLE, OpCode.RC_SEND_LAST_WITH_IMMEDIATE, OpCode.RC_SEND_ONLY_WITH_IMMEDIATE),
    [QpType.UC]: message(OpCode.UC_SEND_FIRST, OpCode.UC_SEND_MIDDLE, OpCode.UC_SEND_LAST_WITH_IMMEDIATE, OpCode.UC_SEND_ONLY_WITH_IMMEDIATE),
    [QpType.UD]: single(OpCode.UD_SEND_ONLY_WITH_IMMEDIATE),
  });
  row(WrOpcode.SEND_WITH_INV, 'SEND_WITH_INV', SEND, WcOpcode.SEND, {
    [QpType.RC]: message(OpCode.RC_SEND_FIRST, OpCode.RC_SEND_MIDDLE, OpCode.RC_SEND_LAST_WITH_INVALIDATE, OpCode.RC_SEND_ONLY_WITH_INVALIDATE),
  });
  row(WrOpcode.RDMA_WRITE, 'RDMA_WRITE', WRITE, WcOpcode.RDMA_WRITE, {
    [QpType.RC]: message(OpCode.RC_RDMA_WRITE_FIRST, OpCode.RC_RDMA_WRITE_MIDDLE, OpCode.RC_RDMA_WRITE_LAST, OpCode.RC_RDMA_WRITE_ONLY),
    [QpType.UC]: message(OpCode.UC_RDMA_WRITE_FIRST, OpCode.UC_RDMA_WRITE_MIDDLE, OpCode.UC_RDMA_WRITE_LAST, OpCode.UC_RDMA_WRITE_ONLY),
  });
  row(WrOpcode.RDMA_WRITE_WITH_IMM, 'RDMA_WRITE_WITH_IMM', WRITE, WcOpcode.RDMA_WRITE, {
    [QpType.RC]: message(OpCode.RC_RDMA_WRITE_FIRST, OpCode.RC_RDMA_WRITE_MIDDLE, OpCode.RC_RDMA_WRITE_LAST_WITH_IMMEDIATE, OpCode.RC_RDMA_WRITE_ONLY_WITH_IMMEDIATE),
    [QpType.UC]: message(OpCode.UC_RDMA_WRITE_FIRST, OpCode.UC_RDMA_WRITE_MIDDLE, OpCode.UC_RDMA_WRITE_LAST_WITH_IMMEDIATE, OpCode.UC_RDMA_WRITE_ONLY_WITH_IMMEDIATE),
  });
  row(WrOpcode.RDMA_READ, 'RDMA_READ', WrFlag.READ, WcOpcode.RDMA_READ, { [QpType.RC]: single(OpCode.RC_RDMA_READ_REQUEST) });
  row(WrOpcode.ATOMIC_CMP_AND_SWP, 'ATOMIC_CMP_AND_SWP', WrFlag.ATOMIC, WcOpcode.COMP_SWAP, { [QpType.RC]: single(OpCode.RC_COMPARE_SWAP) });
  row(WrOpcode.ATOMIC_FETCH_AND_ADD, 'ATOMIC_FETCH_AND_ADD', WrFlag.ATOMIC, WcOpcode.FETCH_ADD, { [QpType.RC]: single(OpCode.RC_FETCH_ADD) });
  row(WrOpcode.LOCAL_INV, 'LOCAL_INV', WrFlag.LOCAL_OP, WcOpcode.LOCAL_INV, { [QpType.RC]: LOCAL, [QpType.UC]: LOCAL });
  row(WrOpcode.BIND_MW, 'BIND_MW', WrFlag.LOCAL_OP, WcOpcode.BIND_MW, { [QpType.RC]: LOCAL, [QpType.UC]: LOCAL });
  return Object.freeze(table);
}

/** Indexed by the WR opcode (ibv_wr_opcode); undefined for opcodes softrdma does not implement. */
export const WR_OPCODES = build();

/** The row of a WR opcode; undefined for anything else (including non-integers from a caller). */
export function wrOpcodeInfo(opcode: number): WrOpcodeInfo | undefined {
  return Number.isInteger(opcode) && opcode >= 0 ? WR_OPCODES[opcode] : undefined;
}

/** The packet opcodes of `opcode` on a QP of `qpType`; undefined if that QP type may not post it. */
export function packetOpcodesOf(opcode: number, qpType: number): PacketOpcodes | undefined {
  const on = wrOpcodeInfo(opcode)?.on;
  return on && Object.hasOwn(on, qpType) ? on[qpType] : undefined;
}

/** The BTH opcode of packet `k` of a message of `npkts` packets. */
export function packetOpcode(ops: PacketOpcodes, k: number, npkts: number): number {
  return npkts === 1 ? ops.only : k === 0 ? ops.first : k === npkts - 1 ? ops.last : ops.middle;
}
