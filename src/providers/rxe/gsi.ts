// QP1, the GSI (General Services Interface) of an rxe port. In Linux the kernel's MAD layer
// (core/mad.c) creates it as an IB_QPT_GSI QP; rxe numbers that QP 1 whatever its pool index
// (rxe_qp.c, port->qp_gsi_index), treats it as UD on the wire, stamps the GSI Q_Key into the
// DETH of everything it sends (rxe_req.c) and drops received packets whose DETH Q_Key is not
// the GSI Q_Key (rxe_recv.c, check_keys). Here the device owns one such QP per port, handed
// to softrdma's one MAD layer (src/cm) through the provider interface. It judges only what
// rxe and the QP judge (transport, Q_Key, size); MAD versions and classes are the MAD layer's.

import type { GsiDest, GsiSource, ProviderGsi } from '../../uapi/provider.js';
import { fail } from '../../uapi/errors.js';
import { addressFromGid, gidFromAddress } from '../../abi/inet.js';
import { deth, writeBth, type Packet } from './wire/headers.js';
import { BTH_BYTES, DETH_BYTES, ICRC_BYTES, Op, OpCode } from './wire/opcodes.js';
import { initialSourcePort } from './wire/udp-sport.js';
import type { SourcePort } from './source-port.js';
import type { RxeDevice } from './device.js';
import { tracer } from '../../sys/trace.js';

const traceReceiveError = tracer('rxe', 'receive-error');

/** IB_QP1 and IB_QP1_QKEY (rxe's GSI_QKEY); MADs are 256 bytes on an IB/RoCE port. */
export const GSI_QPN = 1;
export const GSI_QKEY = 0x80010000;
export const GSI_MAD_BYTES = 256;
const PKT_BYTES = BTH_BYTES + DETH_BYTES + GSI_MAD_BYTES + ICRC_BYTES;

const SEND = { object: 'GSI', method: 'SEND' } as const;

export class RxeGsi implements ProviderGsi {
  onMad: ((mad: Buffer, src: GsiSource) => void) | undefined;
  readonly gid: Buffer;
  /** The MAD layer moves QP1 to RTS with SQ PSN 0 (IB_MAD_SEND_Q_PSN); UD counts up per packet. */
  private psn = 0;
  /** As any rxe QP before it has a path: 0xC000 + hash_32(1, 14). */
  private readonly source: SourcePort;
  private closed = false;
  /** The last sender's address and GID: MADs come in conversations (parsing the address cost more than the rest of the receive). */
  private lastFrom: string | undefined;
  private lastSgid: Buffer | undefined;
  /** The last destination's GID and address, for the same reason. */
  private lastDgid: Buffer | undefined;
  private lastTo: string | undefined;

  constructor(private readonly device: RxeDevice, readonly port: number) {
    this.gid = gidFromAddress(device.address);
    this.source = device.link.acquirePort(initialSourcePort(GSI_QPN), true);
  }

  send(mad: Uint8Array, dest: GsiDest): void {
    if (this.closed) fail('EINVAL', 'the GSI is closed', SEND);
    if (!(mad instanceof Uint8Array) || mad.length !== GSI_MAD_BYTES) {
      fail('EINVAL', `a MAD is ${GSI_MAD_BYTES} bytes, got ${mad instanceof Uint8Array ? mad.length : typeof mad}`, { ...SEND, attr: 'mad' });
    }
    if (!(dest?.dgid instanceof Uint8Array) || dest.dgid.length !== 16) fail('EINVAL', 'needs a 16-byte dgid', { ...SEND, attr: 'dest' });
    let to: string;
    if (this.lastDgid?.equals(dest.dgid)) to = this.lastTo!;
    else {
      to = addressFromGid(dest.dgid);
      this.lastDgid = Buffer.from(dest.dgid);
      this.lastTo = to;
    }
    if (to.includes('.') !== (this.device.family === 4)) fail('EINVAL', `dgid ${to} is not reachable from an IPv${this.device.family} device`, { ...SEND, attr: 'dest' });
    const dqpn = dest.dqpn ?? GSI_QPN;
    if (!Number.isInteger(dqpn) || dqpn < 1 || dqpn > 0xffffff) fail('EINVAL', `bad remote QPN ${String(dqpn)}`, { ...SEND, attr: 'dest' });
    // rxe_req.c: QP1 always sends the GSI Q_Key; to another QP (a redirect) the caller's.
    const qkey = dqpn === GSI_QPN ? GSI_QKEY : (dest.qkey ?? GSI_QKEY) >>> 0;
    const buf = Buffer.allocUnsafe(PKT_BYTES);
    // No SE (the MAD layer posts IB_SEND_SIGNALED only), no pad (256 is aligned). AckReq set:
    // rxe_req.c sets it on the last packet of every message whatever the QP type, and the
    // 6.1 capture's MADs carry it, though nothing acknowledges a UD packet.
    writeBth(buf, { opcode: OpCode.UD_SEND_ONLY, padCount: 0, pkey: 0xffff, destQp: dqpn, ackReq: true, psn: this.psn });
    this.psn = (this.psn + 1) & 0xffffff;
    deth.write(buf, BTH_BYTES, qkey, GSI_QPN);
    buf.set(mad, BTH_BYTES + DETH_BYTES);
    const c = this.device.counters;
    c.gsi_sent_mads++;
    this.device.link.send(buf, to, this.source);
  }

  /**
   * The link sends what a tick queued at its end (a microtask); at process 'exit' that never
   * runs, so the CM's last MADs are handed to the socket here (as sendAcksAtExit does for ACKs).
   */
  flush(): void {
    if (!this.closed && this.device.link.queued > 0) this.device.link.flush();
  }

  /**
   * A packet for QP1 that passed the device's checks (length, ICRC, P_Key). Never throws:
   * what QP1 cannot take is counted and dropped, as rxe drops it.
   */
  receive(p: Packet, from: string, fromPort: number): void {
    const c = this.device.counters;
    // check_type_state: a GSI takes only UD opcodes
    if (!(p.mask & Op.UD)) { c.gsi_malformed_drops++; return; }
    if (deth.qkey(p) !== GSI_QKEY) { c.gsi_qkey_drops++; return; }
    // The MAD layer's receive buffers hold a GRH and one MAD: a larger message fails its WQE
    // (LOC_LEN_ERR) and a shorter one is not a MAD.
    if (p.payloadLength !== GSI_MAD_BYTES) { c.gsi_malformed_drops++; return; }
    const handler = this.onMad;
    if (this.closed || !handler) { c.unknown_qp_drops++; return; }
    c.gsi_rcvd_mads++;
    // A copy: the datagram may be a slice of a GRO run that is still being cut.
    const mad = Buffer.from(p.buf.subarray(p.payloadOffset, p.payloadOffset + GSI_MAD_BYTES));
    let sgid: Buffer;
    if (from === this.lastFrom) sgid = Buffer.from(this.lastSgid!);
    else {
      try { sgid = gidFromAddress(from); } catch { c.gsi_malformed_drops++; return; }
      this.lastFrom = from;
      this.lastSgid = Buffer.from(sgid);
    }
    const src: GsiSource = {
      sgid, address: from, dgid: this.gid, srcQp: deth.srcQp(p), pkeyIndex: 0, udpSourcePort: fromPort,
      trafficClass: undefined, flowLabel: undefined, hopLimit: undefined,
    };
    try {
      handler(mad, src);
    } catch (err) {
      // The consumer's bug, not the packet's: counted apart, reported where the device
      // reports receive-path bugs, and the device carries on.
      c.gsi_handler_errors++;
      if (traceReceiveError.active) traceReceiveError({ error: err, from, gsi: true });
    }
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.onMad = undefined;
    this.device.link.releasePort(this.source);
    this.device.gsiClosed(this);
  }
}
