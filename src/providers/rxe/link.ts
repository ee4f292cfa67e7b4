// The UDP side of an rxe device: one socket bound to (address, port), an ICRC flow per peer,
// and an optional fault hook that drops, duplicates, reorders or corrupts outgoing packets.

import dgram from 'node:dgram';
import { isIPv4 } from 'node:net';
import { VerbsError } from '../../uapi/errors.js';
import { IcrcFlow } from './wire/icrc.js';
import { ipv4Bytes, ipv6Bytes } from './wire/inet.js';
import { prepareRoceSocket } from './sockopt.js';
import type { DeviceCounters } from './counters.js';

export const ROCE_V2_PORT = 4791;

export interface FaultPlan {
  drop?: number;
  duplicate?: number;
  reorder?: number;
  corrupt?: number;
  /** Random source in [0, 1); defaults to Math.random. */
  random?: () => number;
}

export class RxeLink {
  onPacket: (pkt: Buffer, from: string, fromPort: number) => void = () => {};
  faults: FaultPlan | undefined;
  private readonly flows = new Map<string, IcrcFlow>();
  private held: { pkt: Buffer; to: string } | undefined;
  private readonly local: Buffer;
  private closed = false;
  /**
   * Bytes a sender may keep unacknowledged towards a peer: a quarter of the receive buffer
   * the kernel granted us (measured: an 8 MiB buffer holds ~990 datagrams of 4 KiB, as each
   * is charged ~8.4 KiB), within [128 KiB, 4 MiB]. The default net.core.rmem_max (208 KiB)
   * gives 128 KiB.
   */
  readonly windowBytes: number;

  private constructor(
    private readonly sock: dgram.Socket,
    readonly address: string,
    readonly port: number,
    readonly family: 4 | 6,
    private readonly counters: DeviceCounters,
  ) {
    this.local = family === 4 ? ipv4Bytes(address) : ipv6Bytes(address);
    this.windowBytes = Math.min(4 << 20, Math.max(128 << 10, sock.getRecvBufferSize() >> 2));
    sock.on('message', (msg, rinfo) => this.onPacket(msg, rinfo.address, rinfo.port));
    sock.on('error', () => { counters.send_err++; });
  }

  static open(address: string, port: number, counters: DeviceCounters): Promise<RxeLink> {
    const family = isIPv4(address) ? 4 : 6;
    const sock = dgram.createSocket({ type: family === 4 ? 'udp4' : 'udp6', recvBufferSize: 8 << 20, sendBufferSize: 8 << 20 });
    return new Promise((resolve, reject) => {
      const onError = (err: NodeJS.ErrnoException) => {
        sock.close();
        const code = err.code === 'EADDRINUSE' ? 'EADDRINUSE' : err.code === 'EADDRNOTAVAIL' ? 'EADDRNOTAVAIL' : 'EIO';
        reject(new VerbsError(code, `cannot bind UDP ${address} port ${port}: ${err.message}`, { object: 'rxe' }));
      };
      sock.once('error', onError);
      sock.bind({ address, port, exclusive: true }, () => {
        sock.off('error', onError);
        try {
          prepareRoceSocket(sock, family);
          // Buffer sizes are best effort: the kernel caps them at net.core.*mem_max.
        } catch (err) {
          sock.close();
          reject(new VerbsError('EIO', `cannot configure the UDP socket: ${(err as Error).message}`, { object: 'rxe' }));
          return;
        }
        resolve(new RxeLink(sock, address, sock.address().port, family, counters));
      });
    });
  }

  /** The ICRC flow for packets between us and a peer, in one direction. */
  flow(peer: string, outgoing: boolean, peerPort = this.port): IcrcFlow {
    const key = `${outgoing ? '>' : '<'}${peer}|${peerPort}`;
    let f = this.flows.get(key);
    if (!f) {
      const remote = this.family === 4 ? ipv4Bytes(peer) : ipv6Bytes(peer);
      f = outgoing
        ? new IcrcFlow(this.family, this.local, remote, this.port, peerPort)
        : new IcrcFlow(this.family, remote, this.local, peerPort, this.port);
      if (this.flows.size > 4096) this.flows.clear();
      this.flows.set(key, f);
    }
    return f;
  }

  /** Seal (ICRC) and send a packet to a peer's RoCE port. */
  send(pkt: Buffer, to: string): void {
    if (this.closed) return;
    this.flow(to, true).seal(pkt);
    this.counters.sent_pkts++;
    this.counters.sent_bytes += pkt.length;
    const f = this.faults;
    if (!f) {
      this.sock.send(pkt, this.port, to);
      return;
    }
    const rnd = f.random ?? Math.random;
    if (f.drop && rnd() < f.drop) { this.counters.fault_dropped++; return; }
    if (f.corrupt && rnd() < f.corrupt) {
      pkt = Buffer.from(pkt);
      const bit = Math.floor(rnd() * pkt.length * 8);
      pkt[bit >> 3]! ^= 1 << (bit & 7);
      this.counters.fault_corrupted++;
    }
    if (f.reorder && !this.held && rnd() < f.reorder) {
      // Hold this packet back and send it after the next one (or on the next tick).
      this.held = { pkt, to };
      this.counters.fault_reordered++;
      setImmediate(() => this.flushHeld());
      return;
    }
    this.sock.send(pkt, this.port, to);
    if (f.duplicate && rnd() < f.duplicate) { this.counters.fault_duplicated++; this.sock.send(pkt, this.port, to); }
    this.flushHeld();
  }

  /**
   * Send a packet given as parts: [headers, payload views..., tail] where the tail holds the
   * pad bytes and room for the ICRC. Payload views may point into registered memory; the
   * kernel copies them during the send, which is what makes this zero-copy in user space.
   */
  sendv(parts: Buffer[], to: string): void {
    if (this.closed) return;
    if (this.faults || parts.length === 1) { this.send(parts.length === 1 ? parts[0]! : Buffer.concat(parts), to); return; }
    const tail = parts[parts.length - 1]!;
    tail.writeUInt32LE(this.flow(to, true).computeParts(parts), tail.length - 4);
    let len = 0;
    for (const b of parts) len += b.length;
    this.counters.sent_pkts++;
    this.counters.sent_bytes += len;
    this.sock.send(parts, this.port, to);
  }

  private flushHeld() {
    const h = this.held;
    if (!h || this.closed) return;
    this.held = undefined;
    this.sock.send(h.pkt, this.port, h.to);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    // dgram resolves the address on the next tick before it sends: let packets already
    // handed to the socket (a UD send that has completed, a last ACK) leave first.
    await new Promise((r) => setImmediate(r));
    await new Promise<void>((resolve) => this.sock.close(() => resolve()));
  }
}
