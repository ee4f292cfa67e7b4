// The sockets that send from one UDP source port. node:dgram cannot choose the source port
// per send, so each port packets leave from has a socket bound to it: the ports of the link's
// pool, which QPs share (RxeLink.acquirePort; a socket per QP cost every rdma_cm connection a
// bind and a close on each side), and QP1's. Runs of equal-size packets go from that socket
// too, by sendmmsg with a UDP_SEGMENT control message per run (mmsg-sender.ts); where that
// cannot be, by a GSO socket per segment size in use (UDP_SEGMENT as a socket option: a socket
// cut for one size would cut a larger packet wrongly), sharing the port through SO_REUSEADDR.
// Nobody sends to these ports (RoCEv2 packets go to 4791), so they only send.
//
// The device's own port (4791) is a SourcePort too: its plain socket is the device socket,
// which is bound exclusively, so its GSO sockets take ephemeral ports instead.
//
// A port is bound when a QP first sends from it, or, for an RC QP, a turn after it reaches
// RTR (RxeLink.prepareSoon: it will answer with ACKs, and a server's QP waits a round trip
// there), not when the QP takes it: an RC QP takes a port at create and gives it up for the
// connected one at RTR (wire/udp-sport.ts), before it can send, and a QP that never gets that
// far needs no socket at all.

import dgram from 'node:dgram';
import dns from 'node:dns';
import { isIP } from 'node:net';
import { getSystemErrorName } from 'node:util';
import { enableUdpSegmentation, prepareRoceSocket } from './sockopt.js';
import type { DeviceCounters } from './counters.js';

/** GSO sockets per source port, one per segment size in use (a few MTU sizes in practice). */
const MAX_GSO_SOCKETS = 8;

export interface GsoSocket { sock: dgram.Socket; port: number; ready: boolean }

export class SourcePort {
  /** QPs sending from this port. */
  refs = 0;
  /** A slot of the link's pool (kept open when no QP holds it), not a port of its own (QP1's). */
  pooled = false;
  /** Its port is a QP's for good, not an RC QP's port from create (RxeLink.acquirePort). */
  final = false;
  /**
   * GSO sends of this port that libuv queued (its send buffer was full) and that have not left
   * yet: until they have, the port's other packets wait in the link (RxeLink.flush), or they
   * would pass them on their own sockets.
   */
  gsoQueued = 0;
  private sock: dgram.Socket | undefined;
  private state: 'unbound' | 'opening' | 'ready' | 'unavailable' | 'closed';
  private readonly gso = new Map<number, GsoSocket | 'unavailable'>();

  private constructor(
    readonly address: string,
    readonly family: 4 | 6,
    /** The port packets leave from; for the device's own, the device port. Fixed once bound. */
    private portNumber: number,
    private readonly counters: DeviceCounters,
    /** Undefined for the device's own port, which is always there; else that port. */
    private readonly fallback: SourcePort | undefined,
    device: dgram.Socket | undefined,
  ) {
    this.sock = device;
    this.state = device ? 'ready' : 'unbound';
  }

  get port(): number {
    return this.portNumber;
  }

  /** Not bound, nor binding, nor refused: its port may still change (rebase). */
  get unbound(): boolean {
    return this.state === 'unbound';
  }

  /** Another port, while nothing is bound (RxeLink.acquirePort). */
  rebase(port: number): void {
    if (this.state !== 'unbound') throw new Error('a bound source port cannot move');
    this.portNumber = port;
  }

  private get shared(): boolean {
    return this.fallback !== undefined;
  }

  /** The device's own port: sends go through its socket. */
  static ofDevice(sock: dgram.Socket, address: string, family: 4 | 6, port: number, counters: DeviceCounters): SourcePort {
    return new SourcePort(address, family, port, counters, undefined, sock);
  }

  /**
   * A port of its own, bound on first use (`sender`). Its socket takes sends at once: the
   * bind completes within the call (the address is a literal: see `literalLookup`), or else
   * node:dgram holds the sends until it has, after our options are set, so a QP's first
   * packets already leave from its port. If the bind fails, those are lost (RC resends them)
   * and the QP sends from the device port.
   */
  static open(device: SourcePort, port: number, counters: DeviceCounters, pooled: boolean): SourcePort {
    const sp = new SourcePort(device.address, device.family, port, counters, device, undefined);
    sp.pooled = pooled;
    return sp;
  }

  /** Whether this port has a socket of its own (bound or binding); for tests and tools. */
  get bound(): boolean {
    return this.shared && (this.state === 'opening' || this.state === 'ready');
  }

  /**
   * The port this one's packets leave from, for a packet about to be sent: itself while it has
   * a socket (bound or binding; the first call binds it), else the device port (the bind was
   * refused, or the last QP gave the port up with packets still queued). The device port is
   * always its own sender.
   */
  get sender(): SourcePort {
    if (this.state === 'unbound') this.start();
    return this.state === 'ready' || this.state === 'opening' || !this.fallback ? this : this.fallback;
  }

  /** Bind this port's socket now if it has none yet (a QP is about to send from it). */
  prepare(): void {
    if (this.state === 'unbound' && this.shared) this.start();
  }

  /** The UDP port packets would leave from now, without binding anything (the test seam's). */
  get wirePort(): number {
    return this.state === 'unavailable' || (this.state === 'closed' && this.fallback) ? this.fallback!.port : this.port;
  }

  private start(): void {
    this.state = 'opening';
    this.bind(this.port, (sock) => { this.sock = sock; }, (ok) => {
      if (ok) { if (this.state === 'opening') this.state = 'ready'; return; }
      if (this.state === 'closed') return;
      this.state = 'unavailable';
      this.sock = undefined;
      this.counters.sport_unavailable++;
    });
  }

  /** A sender's socket for single packets. */
  get socket(): dgram.Socket {
    return this.sock!;
  }

  /** The GSO socket for one segment size, once it is ready; opening it starts on first use. */
  gsoSocket(size: number): GsoSocket | undefined {
    const g = this.gso.get(size);
    if (typeof g === 'object') return g.ready ? g : undefined;
    if (g === undefined && this.state !== 'closed' && this.gso.size < MAX_GSO_SOCKETS) this.openGso(size);
    return undefined;
  }

  private openGso(size: number): void {
    const g: GsoSocket = { sock: undefined as unknown as dgram.Socket, port: 0, ready: false };
    this.gso.set(size, g);
    this.bind(this.shared ? this.port : 0, (sock) => { g.sock = sock; }, (ok) => {
      if (!ok) { this.gso.set(size, 'unavailable'); return; }
      if (!enableUdpSegmentation(g.sock, size)) { this.gso.set(size, 'unavailable'); g.sock.close(); return; }
      g.port = g.sock.address().port;
      g.ready = true;
    });
  }

  /** Whether runs of this size may go as GSO datagrams (by sendmmsg with UDP_SEGMENT, or a GSO socket). */
  runsAllowed(size: number): boolean {
    return this.state !== 'closed' && this.gso.get(size) !== 'unavailable';
  }

  /**
   * The kernel refused a run of this size sent by sendmmsg with UDP_SEGMENT (its errno; the
   * link's sender reports it). As gsoRefused for a GSO socket's: EIO, EINVAL and EMSGSIZE turn
   * runs of this size off for this port (they go packet by packet from now on); anything else
   * would fail a single packet alike, and runs stay.
   */
  runsRefused(size: number, errno: number): void {
    if (refusesGso(getSystemErrorName(-errno))) this.runsOff(size);
  }

  /**
   * A GSO send of this size failed (the link's send callback: node:dgram reports a send's error
   * there and nowhere else). The run is lost, as a lost packet would be (RC resends it). Only
   * errors that say the kernel refuses UDP_SEGMENT itself turn it off for this size (runs go
   * packet by packet from then on): EIO (a route without checksum offload, or through xfrm,
   * refuses every such send: RC resending runs again and again would never get through),
   * EINVAL and EMSGSIZE (a segment size the path no longer takes). Anything else (a full send
   * buffer, an unreachable route for a moment, a firewall's EPERM) would fail a single packet
   * alike, and GSO stays.
   */
  gsoRefused(size: number, g: GsoSocket, code: string | undefined): void {
    if (refusesGso(code) && this.gso.get(size) === g) this.runsOff(size);
  }

  /** Runs of this size go packet by packet from now on; their GSO socket, if any, closes. */
  private runsOff(size: number): void {
    const g = this.gso.get(size);
    this.gso.set(size, 'unavailable');
    // Sends still queued on it fail the same way, or leave before it closes.
    if (typeof g === 'object') setImmediate(() => g.sock.close());
  }

  /**
   * A send socket binding to (address, port), handed to made() before the bind starts (the
   * bind may complete, or fail, within this call); done(true) once it is bound with the RoCE
   * options, done(false) (and closed) when that fails.
   */
  private bind(port: number, made: (sock: dgram.Socket) => void, done: (ok: boolean) => void): void {
    const sock = dgram.createSocket({ type: this.family === 4 ? 'udp4' : 'udp6', sendBufferSize: 8 << 20, reuseAddr: this.shared, lookup: literalLookup });
    made(sock);
    // Send-only: whether the device keeps the process alive is the device socket's business.
    sock.unref();
    // After close(), the socket is closed already (or will be, behind its queued sends).
    const give = () => { if (this.state !== 'closed') { sock.close(); done(false); } };
    sock.once('error', give);
    // This callback runs before node:dgram sends what was queued during the bind. If close()
    // came first, node:dgram closes the socket after those sends (or already has).
    // exclusive: in a cluster worker a plain bind is the primary's, over IPC (as link.ts's).
    sock.bind({ address: this.address, port, exclusive: true }, () => {
      sock.off('error', give);
      if (this.state === 'closed') return;
      sock.on('error', () => { this.counters.send_err++; });
      try {
        prepareRoceSocket(sock, this.family);
      } catch {
        // node:dgram sends the queued packets right after this callback: close only after.
        done(false);
        setImmediate(() => sock.close());
        return;
      }
      done(true);
    });
  }

  /**
   * Close the sockets this port opened (never the device socket). Packets queued from this
   * port this tick (the link sends them at the end of the tick, and node:dgram hands them to
   * the kernel a tick later) still leave from it: the sockets close on the next turn of the
   * loop. The last QP1 MADs of a closing CM (its DREQs and DREPs) were lost here.
   */
  close(): void {
    if (this.state === 'closed') return;
    const hadSocket = this.state !== 'unbound';
    this.state = 'closed';
    const socks: dgram.Socket[] = [];
    if (this.shared && this.sock && hadSocket) socks.push(this.sock);
    for (const g of this.gso.values()) if (typeof g === 'object') socks.push(g.sock);
    this.gso.clear();
    if (socks.length > 0) setImmediate(() => { for (const s of socks) s.close(); });
  }
}

/**
 * node:dgram resolves the address of every send and bind through `lookup`, by default
 * dns.lookup, which answers even an address literal on the next tick. RoCE packets always go
 * to literals (addresses from GIDs): answering those at once saves that hop per packet and
 * lets a bind complete within the call. Names still go through dns.lookup.
 */
export function literalLookup(host: string, family: unknown, cb: (err: NodeJS.ErrnoException | null, address: string, family: number) => void): void {
  const f = isIP(host);
  if (f !== 0) cb(null, host, f);
  else dns.lookup(host, family as number, cb);
}

/** The errors with which the kernel refuses UDP_SEGMENT itself (see SourcePort.gsoRefused). */
function refusesGso(code: string | undefined): boolean {
  return code === 'EIO' || code === 'EINVAL' || code === 'EMSGSIZE';
}
