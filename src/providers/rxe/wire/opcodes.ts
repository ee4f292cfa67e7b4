// The InfiniBand transport opcode table, in the manner of Linux rxe's rxe_opcode_info:
// one row per BTH opcode says which extension headers follow the BTH and where, which
// QP types may use it, where it sits in a message, and what the responder must do.
// Requester, responder and completer consult this table instead of switching on opcodes.

export const BTH_BYTES = 12;
export const RETH_BYTES = 16;
export const AETH_BYTES = 4;
export const ATMETH_BYTES = 28;
export const ATMACK_BYTES = 8;
export const IMMDT_BYTES = 4;
export const IETH_BYTES = 4;
export const DETH_BYTES = 8;
export const ICRC_BYTES = 4;

/** Flags describing an opcode (bit set). */
export const enum Op {
  RETH = 1 << 0,
  AETH = 1 << 1,
  ATMETH = 1 << 2,
  ATMACK = 1 << 3,
  IMMDT = 1 << 4,
  IETH = 1 << 5,
  DETH = 1 << 6,
  PAYLOAD = 1 << 7,
  REQ = 1 << 8, // a request (handled by the responder)
  RESP = 1 << 9, // a response (handled by the completer)
  WRITE = 1 << 10, // responder writes into an MR (RDMA WRITE)
  READ = 1 << 11, // responder reads from an MR (RDMA READ)
  ATOMIC = 1 << 12,
  SEND = 1 << 13, // consumes a receive WQE
  START = 1 << 14, // first packet of a message
  MIDDLE = 1 << 15,
  END = 1 << 16, // last packet of a message
  COMP = 1 << 17, // completes a receive WQE at the responder
  RC = 1 << 18,
  UC = 1 << 19,
  UD = 1 << 20,
}

export const enum OpCode {
  RC_SEND_FIRST = 0x00,
  RC_SEND_MIDDLE = 0x01,
  RC_SEND_LAST = 0x02,
  RC_SEND_LAST_WITH_IMMEDIATE = 0x03,
  RC_SEND_ONLY = 0x04,
  RC_SEND_ONLY_WITH_IMMEDIATE = 0x05,
  RC_RDMA_WRITE_FIRST = 0x06,
  RC_RDMA_WRITE_MIDDLE = 0x07,
  RC_RDMA_WRITE_LAST = 0x08,
  RC_RDMA_WRITE_LAST_WITH_IMMEDIATE = 0x09,
  RC_RDMA_WRITE_ONLY = 0x0a,
  RC_RDMA_WRITE_ONLY_WITH_IMMEDIATE = 0x0b,
  RC_RDMA_READ_REQUEST = 0x0c,
  RC_RDMA_READ_RESPONSE_FIRST = 0x0d,
  RC_RDMA_READ_RESPONSE_MIDDLE = 0x0e,
  RC_RDMA_READ_RESPONSE_LAST = 0x0f,
  RC_RDMA_READ_RESPONSE_ONLY = 0x10,
  RC_ACKNOWLEDGE = 0x11,
  RC_ATOMIC_ACKNOWLEDGE = 0x12,
  RC_COMPARE_SWAP = 0x13,
  RC_FETCH_ADD = 0x14,
  RC_SEND_LAST_WITH_INVALIDATE = 0x16,
  RC_SEND_ONLY_WITH_INVALIDATE = 0x17,
  UC_SEND_FIRST = 0x20,
  UC_SEND_MIDDLE = 0x21,
  UC_SEND_LAST = 0x22,
  UC_SEND_LAST_WITH_IMMEDIATE = 0x23,
  UC_SEND_ONLY = 0x24,
  UC_SEND_ONLY_WITH_IMMEDIATE = 0x25,
  UC_RDMA_WRITE_FIRST = 0x26,
  UC_RDMA_WRITE_MIDDLE = 0x27,
  UC_RDMA_WRITE_LAST = 0x28,
  UC_RDMA_WRITE_LAST_WITH_IMMEDIATE = 0x29,
  UC_RDMA_WRITE_ONLY = 0x2a,
  UC_RDMA_WRITE_ONLY_WITH_IMMEDIATE = 0x2b,
  UD_SEND_ONLY = 0x64,
  UD_SEND_ONLY_WITH_IMMEDIATE = 0x65,
}

export interface OpcodeInfo {
  readonly name: string;
  readonly mask: number;
  /** Total header length (BTH + extension headers) in bytes. */
  readonly length: number;
  /** Offsets of extension headers from the start of the BTH; -1 when absent. */
  readonly reth: number;
  readonly aeth: number;
  readonly atmeth: number;
  readonly atmack: number;
  readonly immdt: number;
  readonly ieth: number;
  readonly deth: number;
}

// Header order on the wire: BTH, DETH, RETH, AtomicETH, AETH, AtomicAckETH, ImmDt, IETH.
const ORDER: ReadonlyArray<[number, number, keyof OpcodeInfo]> = [
  [Op.DETH, DETH_BYTES, 'deth'],
  [Op.RETH, RETH_BYTES, 'reth'],
  [Op.ATMETH, ATMETH_BYTES, 'atmeth'],
  [Op.AETH, AETH_BYTES, 'aeth'],
  [Op.ATMACK, ATMACK_BYTES, 'atmack'],
  [Op.IMMDT, IMMDT_BYTES, 'immdt'],
  [Op.IETH, IETH_BYTES, 'ieth'],
];

function row(name: string, mask: number): OpcodeInfo {
  const r: Record<string, number | string> = {
    name, mask, reth: -1, aeth: -1, atmeth: -1, atmack: -1, immdt: -1, ieth: -1, deth: -1,
  };
  let off = BTH_BYTES;
  for (const [bit, bytes, key] of ORDER) {
    if (mask & bit) {
      r[key] = off;
      off += bytes;
    }
  }
  r.length = off;
  return r as unknown as OpcodeInfo;
}

const S = Op.REQ | Op.SEND | Op.PAYLOAD;
const W = Op.REQ | Op.WRITE | Op.PAYLOAD;
const RR = Op.RESP | Op.PAYLOAD;

function transport(base: number, t: Op.RC | Op.UC, prefix: string, rows: Map<number, OpcodeInfo>) {
  const add = (code: number, name: string, mask: number) =>
    rows.set(base + code, row(`${prefix}_${name}`, mask | t));
  add(0x00, 'SEND_FIRST', S | Op.START);
  add(0x01, 'SEND_MIDDLE', S | Op.MIDDLE);
  add(0x02, 'SEND_LAST', S | Op.END | Op.COMP);
  add(0x03, 'SEND_LAST_WITH_IMMEDIATE', S | Op.IMMDT | Op.END | Op.COMP);
  add(0x04, 'SEND_ONLY', S | Op.START | Op.END | Op.COMP);
  add(0x05, 'SEND_ONLY_WITH_IMMEDIATE', S | Op.IMMDT | Op.START | Op.END | Op.COMP);
  add(0x06, 'RDMA_WRITE_FIRST', W | Op.RETH | Op.START);
  add(0x07, 'RDMA_WRITE_MIDDLE', W | Op.MIDDLE);
  add(0x08, 'RDMA_WRITE_LAST', W | Op.END);
  // WRITE_WITH_IMMEDIATE consumes a receive WQE, as a SEND does, but carries no data into it.
  add(0x09, 'RDMA_WRITE_LAST_WITH_IMMEDIATE', W | Op.IMMDT | Op.SEND | Op.END | Op.COMP);
  add(0x0a, 'RDMA_WRITE_ONLY', W | Op.RETH | Op.START | Op.END);
  add(0x0b, 'RDMA_WRITE_ONLY_WITH_IMMEDIATE', W | Op.RETH | Op.IMMDT | Op.SEND | Op.START | Op.END | Op.COMP);
}

function build(): ReadonlyArray<OpcodeInfo | undefined> {
  const rows = new Map<number, OpcodeInfo>();
  transport(0x00, Op.RC, 'RC', rows);
  transport(0x20, Op.UC, 'UC', rows);
  const rc = (code: number, name: string, mask: number) => rows.set(code, row(`RC_${name}`, mask | Op.RC));
  rc(0x0c, 'RDMA_READ_REQUEST', Op.REQ | Op.READ | Op.RETH | Op.START | Op.END);
  rc(0x0d, 'RDMA_READ_RESPONSE_FIRST', RR | Op.AETH | Op.START);
  rc(0x0e, 'RDMA_READ_RESPONSE_MIDDLE', RR | Op.MIDDLE);
  rc(0x0f, 'RDMA_READ_RESPONSE_LAST', RR | Op.AETH | Op.END);
  rc(0x10, 'RDMA_READ_RESPONSE_ONLY', RR | Op.AETH | Op.START | Op.END);
  rc(0x11, 'ACKNOWLEDGE', Op.RESP | Op.AETH | Op.START | Op.END);
  rc(0x12, 'ATOMIC_ACKNOWLEDGE', Op.RESP | Op.AETH | Op.ATMACK | Op.START | Op.END);
  rc(0x13, 'COMPARE_SWAP', Op.REQ | Op.ATOMIC | Op.ATMETH | Op.START | Op.END);
  rc(0x14, 'FETCH_ADD', Op.REQ | Op.ATOMIC | Op.ATMETH | Op.START | Op.END);
  rc(0x16, 'SEND_LAST_WITH_INVALIDATE', S | Op.IETH | Op.END | Op.COMP);
  rc(0x17, 'SEND_ONLY_WITH_INVALIDATE', S | Op.IETH | Op.START | Op.END | Op.COMP);
  rows.set(0x64, row('UD_SEND_ONLY', S | Op.DETH | Op.START | Op.END | Op.COMP | Op.UD));
  rows.set(0x65, row('UD_SEND_ONLY_WITH_IMMEDIATE', S | Op.DETH | Op.IMMDT | Op.START | Op.END | Op.COMP | Op.UD));
  const table: (OpcodeInfo | undefined)[] = new Array(256).fill(undefined);
  for (const [code, info] of rows) table[code] = info;
  return Object.freeze(table);
}

/** Indexed by the BTH opcode byte; undefined for opcodes softrdma does not implement (RD, CNP, reserved). */
export const OPCODES = build();

export function opcodeName(code: number): string {
  return OPCODES[code]?.name ?? `0x${code.toString(16).padStart(2, '0')}`;
}
