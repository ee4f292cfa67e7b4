// The SMC-R CDC message (Linux net/smc/smc_cdc.h struct smc_cdc_msg): 44 bytes sent with an
// RDMA SEND on the link's QP after the data's RDMA WRITEs, all big-endian, unlike SMC-D's CDC
// area (../cdc.ts), which is host-order cursors in the DMB. Layout (byte: field):
//    0 type 0xFE (smc_wr_rx_hdr)      1 len 44
//    2 seqno (u16)                    4 token: the receiver's RMBE alert token (u32)
//    8 prod cursor: reserved (u16), wrap (u16), count (u32)    (union smc_cdc_cursor)
//   16 cons cursor: the same ("piggy backed ack")
//   24 producer flags: write_blocked 0x80, urg_data_pending 0x40, urg_data_present 0x20,
//      cons_curs_upd_req 0x10, failover_validation 0x08        (smc.h struct smc_cdc_producer_flags)
//   25 connection state flags: peer_done_writing 0x80, peer_conn_closed 0x40,
//      peer_conn_abort 0x20                                    (smc.h struct smc_cdc_conn_state_flags)
//   26 reserved[18]

import {
  CDC_TYPE, CONN_ABORT, CONN_CLOSED, CONN_DONE_WRITING, PROD_CONS_UPD_REQ, PROD_URG_PENDING, PROD_URG_PRESENT, PROD_WRITE_BLOCKED,
} from '../cdc.js';
import { need, uint } from './error.js';

export { CDC_TYPE };
/** SMC_WR_TX_SIZE: every CDC (and v1 LLC) message is 44 bytes. */
export const SMCR_CDC_LEN = 44;
/** offsetof(struct smc_cdc_msg, reserved): Linux drops shorter messages (smc_cdc.c 477). */
export const SMCR_CDC_MIN_LEN = 26;
/** Producer flag 0x08, set on messages replayed on another link after a failover (SMC-R only). */
export const PROD_FAILOVER_VALIDATION = 0x08;

export interface SmcrCursor { wrap: number; count: number }

export interface SmcrCdc {
  seqno: number;
  /** The receiving connection's RMBE alert token (from its Accept/Confirm). */
  token: number;
  prod: SmcrCursor;
  cons: SmcrCursor;
  writeBlocked: boolean;
  urgDataPending: boolean;
  urgDataPresent: boolean;
  consCursUpdReq: boolean;
  failoverValidation: boolean;
  peerDoneWriting: boolean;
  peerConnClosed: boolean;
  peerConnAbort: boolean;
}

/** Write the 44-byte message into out at off (a fresh Buffer if none is given); reserved bytes are zeroed. */
export function encodeSmcrCdc(m: SmcrCdc, out?: Buffer, off = 0): Buffer {
  const b = out ?? Buffer.alloc(SMCR_CDC_LEN);
  if (off < 0 || off + SMCR_CDC_LEN > b.length) throw new RangeError('no room for a CDC message');
  b.fill(0, off, off + SMCR_CDC_LEN);
  b[off] = CDC_TYPE;
  b[off + 1] = SMCR_CDC_LEN;
  b.writeUInt16BE(uint(m.seqno, 16, 'seqno'), off + 2);
  b.writeUInt32BE(uint(m.token, 32, 'token'), off + 4);
  b.writeUInt16BE(uint(m.prod.wrap, 16, 'prod.wrap'), off + 10);
  b.writeUInt32BE(uint(m.prod.count, 32, 'prod.count'), off + 12);
  b.writeUInt16BE(uint(m.cons.wrap, 16, 'cons.wrap'), off + 18);
  b.writeUInt32BE(uint(m.cons.count, 32, 'cons.count'), off + 20);
  b[off + 24] = (m.writeBlocked ? PROD_WRITE_BLOCKED : 0) | (m.urgDataPending ? PROD_URG_PENDING : 0) | (m.urgDataPresent ? PROD_URG_PRESENT : 0)
    | (m.consCursUpdReq ? PROD_CONS_UPD_REQ : 0) | (m.failoverValidation ? PROD_FAILOVER_VALIDATION : 0);
  b[off + 25] = (m.peerDoneWriting ? CONN_DONE_WRITING : 0) | (m.peerConnClosed ? CONN_CLOSED : 0) | (m.peerConnAbort ? CONN_ABORT : 0);
  return b;
}

/**
 * Decode a received CDC message (the SEND's payload). Refused as Linux's smc_cdc_rx_handler
 * (smc_cdc.c 469-506) drops them: fewer than 26 bytes, a len byte other than 44; and a first
 * byte other than 0xFE (smc_wr_rx_demultiplex gives such a message to no CDC handler). Bytes
 * after the 44th are ignored, as Linux reads only the struct. Reserved bits are ignored.
 */
export function decodeSmcrCdc(b: Buffer): SmcrCdc {
  need(b.length >= SMCR_CDC_MIN_LEN, 'length', `${b.length} bytes (at least ${SMCR_CDC_MIN_LEN})`);
  need(b[0] === CDC_TYPE, 'type', `0x${b[0]!.toString(16)} is not a CDC message (0xfe)`);
  need(b[1] === SMCR_CDC_LEN, 'len', `${b[1]} (must be ${SMCR_CDC_LEN})`);
  const pf = b[24]!, cf = b[25]!;
  return {
    seqno: b.readUInt16BE(2), token: b.readUInt32BE(4),
    prod: { wrap: b.readUInt16BE(10), count: b.readUInt32BE(12) },
    cons: { wrap: b.readUInt16BE(18), count: b.readUInt32BE(20) },
    writeBlocked: (pf & PROD_WRITE_BLOCKED) !== 0, urgDataPending: (pf & PROD_URG_PENDING) !== 0, urgDataPresent: (pf & PROD_URG_PRESENT) !== 0,
    consCursUpdReq: (pf & PROD_CONS_UPD_REQ) !== 0, failoverValidation: (pf & PROD_FAILOVER_VALIDATION) !== 0,
    peerDoneWriting: (cf & CONN_DONE_WRITING) !== 0, peerConnClosed: (cf & CONN_CLOSED) !== 0, peerConnAbort: (cf & CONN_ABORT) !== 0,
  };
}

/**
 * Sequence-number order as Linux's smc_cdc_before (smc_cdc.c 283-286): seq1 comes before seq2 in 16-bit
 * serial arithmetic. A CDC whose seqno is before the last one seen is stale and dropped (smc_cdc.c 498).
 */
export function cdcSeqBefore(seq1: number, seq2: number): boolean {
  return ((seq1 - seq2) << 16 >> 16) < 0;
}
