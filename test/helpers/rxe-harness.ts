// One rxe QP driven packet by packet, without a peer: its device hands every packet it sends
// to a capture list (RxeLink.transmit) instead of a socket, and the test feeds it decoded
// packets "from the peer" straight into the responder (onRequest) and the completer
// (onResponse). With fakeTime() the retransmit and RNR timers run only when the test
// advances the clock, so retries happen exactly when a test says.

import type { TestContext } from 'node:test';
import {
  Access, connectQp, createRxeDevice, gidFromAddress, QpType, rxeOf,
  type ConnectOptions, type Context, type CQ, type Device, type MR, type PD, type QP, type Sge, type WorkCompletion,
} from '../../src/index.js';
import type { RxeDevice } from '../../src/providers/rxe/device.js';
import type { RxeQp } from '../../src/providers/rxe/qp.js';
import { ackDeferral, onRequest } from '../../src/providers/rxe/responder.js';
import { onResponse } from '../../src/providers/rxe/completer.js';
import { setTraceSink, type RxeTraceEvent } from '../../src/providers/rxe/debug.js';
import { ACK_SYNDROME_NO_CREDIT_LIMIT, AethSyndrome, aeth, parsePacket, reth, writeBth, type Packet } from '../../src/providers/rxe/wire/headers.js';
import { ICRC_BYTES, OPCODES, Op, OpCode, opcodeName } from '../../src/providers/rxe/wire/opcodes.js';

export const LOCAL = '127.0.0.2';
/** The peer that never exists: packets "from" it are fed in by the test. */
export const PEER = '127.0.0.3';
export const PEER_QPN = 0x123;
/** Our send queue's first PSN, and the first PSN our responder expects. */
export const SQ_PSN = 0x100;
export const RQ_PSN = 0x200;
export const MTU = 1024;

/** A registered buffer: its bytes and the MR over them. */
export interface Mem { buf: Buffer; mr: MR; addr: number; rkey: number; sge(): Sge }

/** A packet the QP sent: its bytes as they would leave (ICRC sealed) and its decoded headers. */
export interface Sent { bytes: Buffer; pkt: Packet; to: string }

export interface Harness {
  dev: Device;
  rxe: RxeDevice;
  ctx: Context;
  pd: PD;
  cq: CQ;
  qp: QP;
  /** The provider's QP (its counters and state). */
  rq: RxeQp;
  /** Packets sent since the last take(), in order; take() empties the list. */
  take(): Sent[];
  /** Feed a packet from the peer: requests to the responder, responses to the completer. */
  feed(buf: Buffer): void;
  /** The state-machine trace since the harness opened ('RESPST_...', 'COMPST_...'). */
  trace: RxeTraceEvent[];
  /** Register `size` bytes (filled with `fill`) for every local and remote access. */
  mr(size: number, fill?: number): Mem;
  poll(): WorkCompletion[];
  close(): Promise<void>;
}

export async function openHarness(opts: ConnectOptions & { cap?: object; ackDeferral?: boolean } = {}): Promise<Harness> {
  const { cap: capOpts, ackDeferral: defer = false, ...connect } = opts;
  // Packets are fed one at a time with no turn of the event loop between them, so the
  // responder's deferred ACK (responder.ts) is off unless a test asks: each ACK is then
  // among what feed() sent, as Linux rxe sends it.
  const deferralWas = ackDeferral.on;
  ackDeferral.on = defer;
  const dev = await createRxeDevice({ address: LOCAL, port: 0, mtu: 4096, gso: false, perQpSourcePort: false });
  const rxe = rxeOf(dev);
  let sent: Sent[] = [];
  rxe.link.transmit = (bytes, to) => {
    const pkt = parsePacket(bytes);
    if (typeof pkt === 'string') throw new Error(`the QP sent a malformed packet (${pkt})`);
    sent.push({ bytes, pkt, to });
  };
  const trace: RxeTraceEvent[] = [];
  const prevSink = setTraceSink((e) => trace.push(e));
  const ctx = dev.open();
  const pd = ctx.allocPd();
  const cq = ctx.createCq(256);
  const cap = { maxSendWr: 64, maxRecvWr: 64, maxSendSge: 2, maxRecvSge: 2, maxInlineData: 64, ...capOpts };
  const qp = pd.createQp({ qpType: QpType.RC, sendCq: cq, recvCq: cq, cap });
  connectQp(qp, { qpn: PEER_QPN, gid: gidFromAddress(PEER), psn: RQ_PSN }, { psn: SQ_PSN, mtu: 3, minRnrTimer: 1, timeout: 10, ...connect });
  const rq = rxe.qps.get(qp.qpn)!;
  return {
    dev, rxe, ctx, pd, cq, qp, rq, trace,
    take() { const out = sent; sent = []; return out; },
    feed(buf) {
      const p = parsePacket(buf);
      if (typeof p === 'string') throw new Error(`test packet does not parse (${p})`);
      if (p.mask & Op.RESP) onResponse(rq, p);
      else onRequest(rq, p, PEER);
    },
    mr(size, fill = 0) {
      const buf = Buffer.alloc(size, fill);
      const mr = pd.regMr(buf, Access.LOCAL_WRITE | Access.REMOTE_WRITE | Access.REMOTE_READ | Access.REMOTE_ATOMIC);
      return { buf, mr, addr: mr.addr, rkey: mr.rkey, sge: () => mr.sge() };
    },
    poll: () => cq.poll(64),
    async close() {
      setTraceSink(prevSink);
      ackDeferral.on = deferralWas;
      await dev.close();
    },
  };
}

/**
 * Fake time for the QP's timers: setTimeout runs only from advance(), and performance.now()
 * (which the retransmit timer compares against) moves with it. Undone when the test ends.
 */
export function fakeTime(t: TestContext): { advance(ms: number): void } {
  let now = performance.now();
  t.mock.method(performance, 'now', () => now);
  t.mock.timers.enable({ apis: ['setTimeout'] });
  return {
    advance(ms) {
      now += ms;
      t.mock.timers.tick(ms);
    },
  };
}

// ---- packets from the peer ----

/** A packet to our QP: BTH with `opcode` and `psn`, extension headers by `fill`, payload, ICRC room. */
export function packet(destQp: number, opcode: number, psn: number, opts: { payload?: Buffer; ackReq?: boolean; fill?: (buf: Buffer, info: NonNullable<(typeof OPCODES)[number]>) => void } = {}): Buffer {
  const info = OPCODES[opcode]!;
  const payload = opts.payload ?? Buffer.alloc(0);
  const pad = (4 - (payload.length & 3)) & 3;
  const buf = Buffer.alloc(info.length + payload.length + pad + ICRC_BYTES);
  writeBth(buf, { opcode, padCount: pad, destQp, ackReq: opts.ackReq ?? false, psn });
  opts.fill?.(buf, info);
  payload.copy(buf, info.length);
  return buf;
}

const aethPacket = (destQp: number, opcode: number, psn: number, syndrome: number, payload?: Buffer) =>
  packet(destQp, opcode, psn, { ...(payload ? { payload } : {}), fill: (b, i) => aeth.write(b, i.aeth, syndrome, 0) });

export const ackOf = (h: Harness, psn: number) => aethPacket(h.rq.qpn, OpCode.RC_ACKNOWLEDGE, psn, AethSyndrome.ACK | ACK_SYNDROME_NO_CREDIT_LIMIT);
export const nakOf = (h: Harness, psn: number, code: number) => aethPacket(h.rq.qpn, OpCode.RC_ACKNOWLEDGE, psn, AethSyndrome.NAK | code);
export const rnrNakOf = (h: Harness, psn: number, timer: number) => aethPacket(h.rq.qpn, OpCode.RC_ACKNOWLEDGE, psn, AethSyndrome.RNR_NAK | timer);
export const readResponseOf = (h: Harness, opcode: number, psn: number, payload: Buffer) =>
  OPCODES[opcode]!.mask & Op.AETH ? aethPacket(h.rq.qpn, opcode, psn, AethSyndrome.ACK | ACK_SYNDROME_NO_CREDIT_LIMIT, payload) : packet(h.rq.qpn, opcode, psn, { payload });
export const sendOnlyOf = (h: Harness, psn: number, payload: Buffer) => packet(h.rq.qpn, OpCode.RC_SEND_ONLY, psn, { payload, ackReq: true });
export const readRequestOf = (h: Harness, psn: number, va: number, rkey: number, len: number) =>
  packet(h.rq.qpn, OpCode.RC_RDMA_READ_REQUEST, psn, { ackReq: true, fill: (b, i) => reth.write(b, i.reth, va, rkey, len) });

/** "RC_ACKNOWLEDGE 0x200 NAK 0" style summaries, for readable assertions. */
export function describe(s: Sent | Packet): string {
  const p = 'pkt' in s ? s.pkt : s;
  let out = `${opcodeName(p.opcode)} 0x${p.psn.toString(16)}`;
  if (p.mask & Op.AETH) {
    const syn = aeth.syndrome(p);
    const type = syn & AethSyndrome.TYPE_MASK;
    out += type === AethSyndrome.ACK ? ' ACK' : type === AethSyndrome.RNR_NAK ? ` RNR_NAK ${syn & 0x1f}` : ` NAK ${syn & 0x1f}`;
  }
  return out;
}

/** The trace's state names for one machine, in order. */
export const states = (h: Harness, machine: 'resp' | 'comp') => h.trace.filter((e) => e.machine === machine).map((e) => e.state);
