// The UDP side of an rxe device: one socket bound to (address, port) that receives
// everything, the send sockets of each QP's source port (source-port.ts), an ICRC flow per
// peer, and an optional fault hook that drops, duplicates, reorders or corrupts outgoing
// packets.

import dgram from 'node:dgram';
import { isIPv4 } from 'node:net';
import { VerbsError } from '../../uapi/errors.js';
import { IcrcFlow, type PrefixBudget } from './wire/icrc.js';
import { turnWork } from './turn-work.js';
import { sendDeferredAcksNow } from './responder.js';
import { ipv4Bytes, ipv6Bytes } from '../../abi/inet.js';
import { enableUdpGro, prepareRoceSocket } from './sockopt.js';
import { endsRun, groSegmentSize, joinsRun } from './wire/gro.js';
import { SourcePort, literalLookup } from './source-port.js';
import { MmsgReceiver } from './mmsg-receiver.js';
import { MmsgSender } from './mmsg-sender.js';
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

/** Most packets in one GSO send (the kernel's UDP_MAX_SEGMENTS is 64 on older kernels). */
const GSO_MAX_SEGMENTS = 64;
/** A GSO send is one UDP datagram until it is cut: its payload must stay under 64 KiB. */
const GSO_MAX_BYTES = 65_000;
/**
 * Buffers one GSO send may have: the kernel takes at most UIO_MAXIOV (1024) iovecs a call and
 * refuses more with EMSGSIZE (a run of 64 packets of 32 SGEs each has over 2000).
 */
const GSO_MAX_IOVS = 1024;
/**
 * Ports held apart from the pool (QP1's) per device; beyond that many, the device port.
 */
const MAX_SOURCE_PORTS = 256;
/**
 * The pool of source-port sockets QPs share, per device (device option `sourcePorts`,
 * SOFTRDMA_RXE_SPORTS). Linux rxe gives every QP a port of its own; in user space a port
 * is a bound socket, and a socket per QP cost an rdma_cm connection a bind and a close on
 * each side (32 connections in flight: 0.25-0.40x TCP's rate with them, 0.42-0.46 from one
 * port), and 16 QPs sending a sendmmsg call per QP per flush. Eight ports still spread a
 * device's QPs over eight flows for switches and receive queues.
 */
export const DEFAULT_SOURCE_PORTS = 8;
export const MAX_POOLED_PORTS = 256;
/**
 * ICRC flows (one per peer address, ports and direction) and cached prefix CRCs a link keeps,
 * all peers together. Every source port of every address is a flow, and a packet makes its
 * flow before its ICRC is checked, so only a bound on the whole table bounds the memory a
 * sender of made-up packets can take (a prefix CRC costs ~100 bytes; per-flow bounds alone
 * let one address spraying ports and lengths hold ~450 MB). Past either bound the table
 * starts afresh: a flow in use costs one CRC of a 36- or 56-byte prefix per length again. A
 * connection uses two flows (one each way), so 65,536 leaves room for ~30,000 live QPs before
 * the table is dropped for them (a flow alone, without its prefixes, is ~200 bytes).
 */
const MAX_FLOWS = 65536;
/**
 * The flow table drops the flows nobody looked up since its last sweep when it holds this
 * many, or more as the sweeps keep more (nextSweepAt, sweepFlows). Connections set up and torn down by the
 * thousand (the rdma_cm) make new flows all the time: from a peer whose QPs each send from a
 * port of their own (Linux rxe), one per connection. They lived on until the table was full,
 * 65,536 of them, old enough for the collector to copy, and then every live flow was dropped
 * with them.
 */
const FLOW_SWEEP_MIN = 1024;

/**
 * The next sweep, after one left `kept` flows: half as many new ones again (1024 at least),
 * and before the table is full. Not "twice what the sweep left": what a sweep leaves includes
 * every flow made since the sweep before, so that bound ratcheted up whenever some older flow
 * was still in use, until it passed MAX_FLOWS and only the full table's reset was left.
 */
const nextSweepAt = (kept: number): number => Math.min(MAX_FLOWS, kept + Math.max(FLOW_SWEEP_MIN, kept >> 1));
const MAX_PREFIXES = 65536;

export interface Outgoing { parts: Buffer[]; len: number; to: string; onSent: (() => void) | undefined; src: SourcePort; ack: number; group: AckGroup | undefined }

/**
 * What an RC request packet says about acknowledgement, for flush's AckReq pass: nothing (not
 * an RC request, or a packet in the middle of a message that does not ask), asks (AckReq is
 * set in its BTH), or deferrable (the last packet of a SEND or WRITE: it asks for an ACK unless
 * a later packet of the same QP in the same send batch asks, as an ACK is cumulative).
 */
export const ACK_NONE = 0, ACK_ASKS = 1, ACK_DEFERRABLE = 2;

/** A requester's identity for the AckReq pass (one per QP): the pass that last saw an ask. */
export interface AckGroup { ackPass: number }

/**
 * Reads that deliver datagrams a busy poller makes per turn of the event loop (RxeLink.busyPoll):
 * up to 16 recvmmsg batches before timers and other I/O get their turn.
 */
export const BUSY_READS_PER_TURN = 16;

/** Set AckReq in the BTH of a packet's header buffer (the BTH comes first). */
const setAckReq = (hdr: Buffer) => { hdr[8] = hdr[8]! | 0x80; };

/**
 * Put a flush's packets in runs by the socket they leave from, each socket's packets in their
 * order: the flush makes a sendmmsg call per run of one socket, so QPs on different ports
 * interleaved in the queue (sixteen QPs sending in one tick) cost a call per switch. Only a
 * port's own packets are ordered among themselves here (a QP's requests and ACKs leave from
 * its port; RoCE orders nothing across QPs). Only queues of the pool's ports are regrouped: a
 * CM message from QP1 (a DREQ behind a connection's last data) or a packet from the device
 * port keeps its place. (A QP that moves to another port with packets of the old one still
 * queued, an SQD-to-SQD path change in the same tick, could see its new packets pass its old
 * ones: an RC QP recovers by its NAK and resend.) Nothing is moved when in runs already.
 */
export function groupBySender(q: Outgoing[]): void {
  // By port, not by the socket it sends from now (`sender`, which would start a bind): a pooled
  // port sends from its own socket, or, refused, from the device port, where QPs' packets are
  // not ordered among themselves either.
  let prev = q[0]!.src;
  if (!prev.pooled) return;
  let seen: SourcePort[] | undefined;
  let mixed = false;
  for (let i = 1; i < q.length; i++) {
    const s = q[i]!.src;
    if (!s.pooled) return;
    if (s === prev) continue;
    (seen ??= [prev]);
    if (seen.includes(s)) mixed = true;
    else seen.push(s);
    prev = s;
  }
  if (!mixed) return;
  const runs = seen!.map((): Outgoing[] => []);
  for (const o of q) runs[seen!.indexOf(o.src)]!.push(o);
  let n = 0;
  for (const r of runs) for (const o of r) q[n++] = o;
}

export class RxeLink {
  /** segment: the packet's index in a run that arrived as one datagram (UDP GRO), else 0. */
  onPacket: (pkt: Buffer, from: string, fromPort: number, segment: number) => void = () => {};
  faults: FaultPlan | undefined;
  /**
   * A seam for tests that drive QPs packet by packet: when set, each outgoing packet, sealed
   * with its ICRC, goes to this function instead of a socket (no fault plan, no GSO), at once
   * and in order; a send's onSent runs on the next microtask.
   */
  transmit: ((pkt: Buffer, to: string, sourcePort: number) => void) | undefined;
  private out: Outgoing[] = [];
  /** The queue array of the flush before last, emptied: the two take turns (no array per flush). */
  private spare: Outgoing[] = [];
  /** A flush is wanted (something is queued); `flushTasks` flush microtasks are in flight. */
  private flushQueued = false;
  private flushTasks = 0;
  /** Deferrable packets queued (see ACK_DEFERRABLE), and the count of AckReq passes so far. */
  private deferrable = 0;
  private ackPass = 0;
  /** Sends from the device port itself (QPs without a port of their own, and the fault hook). */
  readonly devicePort: SourcePort;
  /** Every source port with a SourcePort (pooled or QP1's), by port number. */
  private readonly ports = new Map<number, SourcePort>();
  /** The pool: slot i holds the port of the first QP whose own port is i modulo the pool's size. */
  private readonly slots: Array<SourcePort | undefined>;
  private readonly flows = new Map<string, { remote: Buffer; flows: Map<number, IcrcFlow> }>();
  /** Flows in `flows`, and their cached prefix CRCs (MAX_FLOWS, MAX_PREFIXES). */
  private flowCount = 0;
  /** The sweep a flow looked up now belongs to (IcrcFlow.epoch), and the count that starts the next sweep. */
  private flowEpoch = 0;
  private sweepAt = FLOW_SWEEP_MIN;
  private readonly prefixBudget: PrefixBudget = { entries: 0, max: MAX_PREFIXES, full: () => this.forgetFlows() };
  /**
   * The last flow looked up in each direction. One per direction: a request/response exchange
   * alternates receiving and sending, and a single entry missed (two map lookups and a new
   * entry object) on every packet.
   */
  private readonly lastFlow = [{ peer: '', peerPort: -1, localPort: -1, flow: undefined as IcrcFlow | undefined }, { peer: '', peerPort: -1, localPort: -1, flow: undefined as IcrcFlow | undefined }];
  private held: { pkt: Buffer; to: string; sock: dgram.Socket } | undefined;
  /** Packets of a source port waiting for its GSO sends that libuv queued (SourcePort.gsoQueued), in order. */
  private readonly waiting = new Map<SourcePort, Outgoing[]>();
  /** Runs arrive whole (UDP_GRO is on). */
  private groEnabled = false;
  /**
   * The path MTU of a local QP by number, 0 if there is none (the device's): a run of FIRST or
   * MIDDLE packets that arrived whole on node:dgram's path is cut by it (wire/gro.ts).
   */
  pathMtuOf: (qpn: number) => number = () => 0;
  private readonly local: Buffer;
  private closed = false;
  /** Whether the device keeps the process alive (setKeepAlive): the retransmit timers' hold depends on it. */
  keepAlive = true;
  /** Whether busyPoll reads (the device's busyPoll option). */
  busyPolling = false;
  /** busyPoll's reads in this turn of the event loop that delivered datagrams (cleared in the check phase). */
  private busyReads = 0;
  /** The recvmmsg reader, when the device socket is read that way. */
  private mmsg: MmsgReceiver | undefined;
  /** The sendmmsg sender, when flushes send that way (see mmsg-sender.ts). */
  private mmsgOut: MmsgSender | undefined;
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
    /** Batch runs of equal-size packets into UDP GSO sends (see flush). */
    readonly gsoEnabled: boolean,
    /** Source-port sockets QPs share (0: every packet from the device port; see DEFAULT_SOURCE_PORTS). */
    readonly poolSize: number,
  ) {
    this.slots = new Array<SourcePort | undefined>(poolSize).fill(undefined);
    this.local = family === 4 ? ipv4Bytes(address) : ipv6Bytes(address);
    this.devicePort = SourcePort.ofDevice(sock, address, family, port, counters);
    this.windowBytes = Math.min(4 << 20, Math.max(128 << 10, sock.getRecvBufferSize() >> 2));
    sock.on('message', (msg, rinfo) => this.deliver(msg, rinfo.address, rinfo.port, this.groEnabled ? -1 : 0));
    sock.on('error', () => { counters.send_err++; });
  }

  static open(address: string, port: number, counters: DeviceCounters, gso: boolean, poolSize: number, recvmmsg: boolean, sendmmsg: boolean): Promise<RxeLink> {
    const family = isIPv4(address) ? 4 : 6;
    const sock = dgram.createSocket({ type: family === 4 ? 'udp4' : 'udp6', recvBufferSize: 8 << 20, sendBufferSize: 8 << 20, lookup: literalLookup });
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
        const link = new RxeLink(sock, address, sock.address().port, family, counters, gso, poolSize);
        link.groEnabled = gso && enableUdpGro(sock);
        if (recvmmsg) link.attachMmsg();
        if (sendmmsg) link.mmsgOut = MmsgSender.shared();
        resolve(link);
      });
    });
  }

  /**
   * One received datagram. `groSegment`: its UDP GRO segment size from the kernel's control
   * message (0: one packet), or -1 when node:dgram hid that message and the size must be
   * recovered from the packets (wire/gro.ts).
   */
  private deliver(msg: Buffer, address: string, port: number, groSegment: number): void {
    const s = groSegment < 0 ? groSegmentSize(msg, msg.length >= 8 ? this.pathMtuOf(msg.readUInt32BE(4) & 0xffffff) : 0) : groSegment < msg.length ? groSegment : 0;
    if (s === 0) this.onPacket(msg, address, port, 0);
    else {
      this.counters.gro_datagrams++;
      for (let off = 0, k = 0; off < msg.length; off += s, k++) {
        this.counters.gro_packets++;
        this.onPacket(msg.subarray(off, Math.min(off + s, msg.length)), address, port, k);
      }
    }
    // What answering this datagram queued (ACKs, NAKs, read responses, a requester's burst on
    // an ACK) leaves now, not in the flush microtask: that would run after the microtasks
    // the datagram's completions queued (CQ notifications), so an ACK would wait for the
    // consumer to handle the data (and to answer it). A GRO run's answers still leave together.
    if (this.out.length > 0) this.flush();
  }

  /**
   * Read with recvmmsg into reused memory instead of node:dgram's 'message' events (see
   * mmsg-receiver.ts), where that works; the datagrams take the same path either way.
   */
  private attachMmsg(): void {
    const c = this.counters;
    const r = MmsgReceiver.attach(this.sock, {
      datagram: (msg, address, port, seg) => this.deliver(msg, address, port, seg),
      batch: () => { c.recvmmsg_batches++; },
      error: () => { c.recv_err++; },
    });
    if (!r) return;
    this.sock.removeAllListeners('message');
    this.mmsg = r;
  }

  /**
   * Deliver the datagrams the socket holds now, one recvmmsg batch, without waiting for the
   * event loop to report it readable; an empty CQ's poll calls it (cq.ts). What the poller
   * queued leaves first: it polls because it waits for an answer to what it just posted,
   * which would otherwise leave only once it yields to the microtasks (measured: 8-30 us
   * later in a sleeping send_lat, whose poll goes on to arm a wait). A read that finds
   * nothing is free to repeat, so a poller may spin in place as on a hardware CQ; reads that
   * deliver are BUSY_READS_PER_TURN per turn of the event loop at most: a consumer that
   * awaits completion after completion (`for await` over a CQ) runs on microtasks only, and
   * unbounded, it would keep timers, deferred ACKs and all other I/O waiting for as long as
   * datagrams kept coming. Nothing on node:dgram's path (it has no synchronous read), inside
   * a delivery, or once closed.
   */
  readonly busyPoll = (): void => {
    if (!this.busyPolling || !this.mmsg || this.closed) return;
    // A send the socket refuses is a lost packet (RC resends it), as in the flush microtask.
    // Before the bound on reads: what the poller posted leaves whether or not it may read, and
    // so do the ACKs deferred for the batch delivered before this poll.
    sendDeferredAcksNow();
    if (this.out.length > 0) {
      try { this.flush(); } catch { this.counters.send_err++; }
    }
    if (this.busyReads >= BUSY_READS_PER_TURN) return;
    if (this.mmsg.readNow() > 0) {
      this.counters.busy_poll_batches++;
      if (this.busyReads++ === 0) setImmediate(this.busyTurn);
    }
  };

  private readonly busyTurn = (): void => { this.busyReads = 0; };

  /**
   * Read and deliver what the socket holds now, before a retransmit timer counts a timeout:
   * node runs expired timers before the poll phase, so after the event loop was held up (a
   * long synchronous stretch, a GC) longer than the timeout, the ACK that came meanwhile is
   * still in the socket when the timer fires. Linux rxe takes packets in softirq, apart from
   * its timers, and has no such race. Returns false where no synchronous read exists
   * (node:dgram's path: its reads come in the poll phase, which the caller then waits out).
   */
  readWaiting(): boolean {
    if (!this.mmsg || this.closed) return false;
    // Bounded: a peer that keeps sending must not hold the timer callback.
    for (let i = 0; i < 8 && this.mmsg.readNow() > 0; i++);
    return true;
  }

  /**
   * Whether polling an empty CQ again, without a turn of the event loop, can bring anything
   * in: busy polling is on and reads the socket (recvmmsg), its bound on delivering reads is
   * not reached, and no requester waits for the next turn to go on with its send queue (a spin
   * would hold it back; deferred ACKs leave at each busy poll instead). See CQ.canSpin.
   */
  get canSpin(): boolean {
    return this.busyPolling && this.mmsg !== undefined && !this.closed && this.busyReads < BUSY_READS_PER_TURN && turnWork.pending === 0;
  }

  /** The ICRC flow for packets between us and a peer, in one direction. */
  flow(peer: string, outgoing: boolean, peerPort = this.port, localPort = this.port): IcrcFlow {
    // Packets come in runs to and from one peer: skip the lookup for a repeat.
    const last = this.lastFlow[outgoing ? 1 : 0]!;
    if (last.flow && last.peer === peer && last.peerPort === peerPort && last.localPort === localPort) {
      last.flow.epoch = this.flowEpoch;
      return last.flow;
    }
    // Per peer, flows by (direction, ports) as one number: no key string per packet.
    const key = (outgoing ? 0x1_0000_0000 : 0) + peerPort * 0x10000 + localPort;
    let byPorts = this.flows.get(peer);
    let f = byPorts?.flows.get(key);
    if (!f) {
      if (this.flowCount >= this.sweepAt) {
        this.sweepFlows();
        byPorts = this.flows.get(peer);
      }
      if (this.flowCount >= MAX_FLOWS) {
        this.forgetFlows();
        byPorts = undefined;
      }
      if (!byPorts) this.flows.set(peer, byPorts = { remote: this.family === 4 ? ipv4Bytes(peer) : ipv6Bytes(peer), flows: new Map() });
      f = outgoing
        ? new IcrcFlow(this.family, this.local, byPorts.remote, localPort, peerPort)
        : new IcrcFlow(this.family, byPorts.remote, this.local, peerPort, localPort);
      f.budget = this.prefixBudget;
      byPorts.flows.set(key, f);
      this.flowCount++;
    }
    f.epoch = this.flowEpoch;
    last.peer = peer;
    last.peerPort = peerPort;
    last.localPort = localPort;
    last.flow = f;
    return f;
  }

  /**
   * Drop the flows not looked up since the last sweep (those of QPs gone, to peers gone), then
   * start the next: a flow in use that sat idle that long costs one prefix CRC per length again.
   * Amortized, a sweep costs a step per flow made since the last.
   */
  private sweepFlows(): void {
    const now = this.flowEpoch;
    for (const [peer, byPorts] of this.flows) {
      for (const [key, f] of byPorts.flows) {
        if (f.epoch === now) continue;
        byPorts.flows.delete(key);
        this.flowCount--;
        f.release();
      }
      if (byPorts.flows.size === 0) this.flows.delete(peer);
    }
    for (const l of this.lastFlow) if (l.flow && l.flow.epoch !== now) l.flow = undefined;
    this.flowEpoch = now + 1;
    this.sweepAt = nextSweepAt(this.flowCount);
  }

  /** Start the flow table afresh (MAX_FLOWS, MAX_PREFIXES). Flows in use go on working; they are no longer counted. */
  private forgetFlows(): void {
    this.sweepAt = FLOW_SWEEP_MIN;
    for (const byPorts of this.flows.values()) for (const f of byPorts.flows.values()) f.budget = undefined;
    this.flows.clear();
    this.flowCount = 0;
    this.prefixBudget.entries = 0;
    for (const l of this.lastFlow) l.flow = undefined;
  }

  /** The flow table's size: flows and the prefix CRCs they cache (tests and tools). */
  get icrcState(): { flows: number; prefixes: number } {
    return { flows: this.flowCount, prefixes: this.prefixBudget.entries };
  }

  /**
   * The sockets a QP sends from, for `port`, the port Linux rxe would give it
   * (wire/udp-sport.ts); releasePort() it when the QP stops using it. A QP shares the pool's
   * slot `port` modulo the pool's size: the slot's socket is bound to the Linux port of its
   * first QP that has its port for good (`final`: a UD QP's, an RC or UC QP's once connected;
   * an RC QP's port from create is given up at RTR), and kept for the QPs after it (so a
   * capture of one QP per slot looks as Linux's). `own`: a port apart from the pool, exactly
   * `port` (QP1's, whose MADs leave from 55410 as Linux's). The device port when the pool is
   * off, the port is the device's, or too many own ports are open.
   */
  acquirePort(port: number, own = false, final = true): SourcePort {
    if (this.poolSize === 0 || this.closed || port === this.port) return this.devicePort;
    let sp = this.ports.get(port);
    if (!sp && !own) {
      const i = port % this.poolSize;
      sp = this.slots[i];
      if (!sp) {
        this.ports.set(port, this.slots[i] = sp = SourcePort.open(this.devicePort, port, this.counters, true));
        sp.final = final;
      } else if (final && !sp.final && sp.unbound) {
        // The slot waits on a port from create that its QP will give up: take this one instead.
        this.ports.delete(sp.port);
        sp.rebase(port);
        sp.final = true;
        this.ports.set(port, sp);
      }
    }
    if (!sp) {
      if (this.ports.size >= MAX_SOURCE_PORTS + this.poolSize) { this.counters.sport_unavailable++; return this.devicePort; }
      this.ports.set(port, sp = SourcePort.open(this.devicePort, port, this.counters, false));
    }
    sp.refs++;
    return sp;
  }

  /**
   * Bind sp's socket on the next turn, if a QP still holds it then (a QP that is to send soon:
   * see RxeQp's move to RTR); until then nothing is bound, and its first send binds it as ever.
   */
  prepareSoon(sp: SourcePort): void {
    if (sp === this.devicePort || sp.bound) return;
    setImmediate(() => { if (!this.closed && sp.refs > 0) sp.prepare(); });
  }

  /**
   * A QP gives its port up. A pooled port with a socket stays open for the slot's next QPs
   * (closed with the device); one never bound, or refused (another socket holds it without
   * SO_REUSEADDR), closes and leaves the slot to the next QP's own port; a port apart from
   * the pool closes with its last QP.
   */
  releasePort(sp: SourcePort): void {
    if (sp === this.devicePort || --sp.refs > 0) return;
    if (sp.pooled && sp.bound) return;
    sp.close();
    if (this.ports.get(sp.port) === sp) this.ports.delete(sp.port);
    const i = this.slots.indexOf(sp);
    if (i >= 0) this.slots[i] = undefined;
  }

  /** Source ports some QP holds now (each bound at its first send), for tests and tools. */
  get sourcePorts(): number[] {
    return [...this.ports.values()].filter((sp) => sp.refs > 0).map((sp) => sp.port);
  }

  /** Source ports with a socket bound (or binding), held or kept in the pool: ports QPs have sent from. */
  get boundSourcePorts(): number[] {
    return [...this.ports.values()].filter((sp) => sp.bound).map((sp) => sp.port);
  }

  /** Packets queued for the next flush, not yet handed to a socket (for tests and tools). */
  get queued(): number {
    return this.out.length;
  }

  /** Send a packet (ICRC room at its end) to a peer's RoCE port. */
  send(pkt: Buffer, to: string, src: SourcePort = this.devicePort): void {
    this.sendv([pkt], to, undefined, src);
  }

  /**
   * Send a packet given as parts: [headers, payload views..., tail] where the tail holds the
   * pad bytes and room for the ICRC. Payload views may point into registered memory; the
   * kernel copies them during the send, which is what makes this zero-copy in user space.
   * Packets leave at the end of the current tick, in order (see flush). `onSent` runs once
   * the kernel has the packet (node:dgram hands it over a tick after send()): only then may
   * the payload's memory change.
   *
   * `ack` and `group` (an RC requester's packets): see ACK_DEFERRABLE. A deferrable packet
   * sent at once (the transmit seam, a fault plan) always asks.
   */
  sendv(parts: Buffer[], to: string, onSent?: () => void, src: SourcePort = this.devicePort, ack = ACK_NONE, group?: AckGroup): void {
    if (this.closed) return;
    if (this.transmit) {
      if (ack === ACK_DEFERRABLE) setAckReq(parts[0]!);
      this.transmitNow(parts, to, src, onSent);
      return;
    }
    if (this.faults) {
      this.flush();
      if (ack === ACK_DEFERRABLE) setAckReq(parts[0]!);
      this.sendFaulty(parts.length === 1 ? parts[0]! : Buffer.concat(parts), to, src);
      if (onSent) process.nextTick(onSent); // the packet was copied (or is ours)
      return;
    }
    let len = 0;
    for (const b of parts) len += b.length;
    this.counters.sent_pkts++;
    this.counters.sent_bytes += len;
    if (ack === ACK_DEFERRABLE) this.deferrable++;
    this.out.push({ parts, len, to, onSent, src, ack, group });
    if (!this.flushQueued) {
      this.flushQueued = true;
      this.flushTasks++;
      queueMicrotask(this.flushNow);
    }
  }

  /**
   * The flush microtask. One queued before a synchronous flush (the end of a received
   * datagram) may still be in flight when the next send queues another: only the last one
   * flushes, so a consumer's sends from one stretch of code still leave as one batch.
   */
  private readonly flushNow = () => {
    if (--this.flushTasks === 0 && this.flushQueued) this.flush();
  };

  /**
   * The AckReq pass over a batch: walking back from its end, a deferrable packet asks for an
   * ACK unless a later packet of its QP in the batch asks (the ACK for that one acknowledges
   * both: IBTA 9.7.5.1.1, ACKs are cumulative). So the last message of a burst always asks,
   * and a WRITE posted with a SEND (SMC-R's data and CDC) draws one ACK, not two.
   */
  private markAckReqs(q: Outgoing[]): void {
    const pass = ++this.ackPass;
    for (let i = q.length - 1; i >= 0; i--) {
      const o = q[i]!;
      const g = o.group;
      if (!g) continue;
      if (o.ack === ACK_ASKS) g.ackPass = pass;
      else if (o.ack === ACK_DEFERRABLE) {
        if (g.ackPass === pass) this.counters.ack_req_coalesced++;
        else {
          setAckReq(o.parts[0]!);
          g.ackPass = pass;
        }
      }
    }
  }

  /**
   * Seal and send what this tick queued, in order. A run of equal-size packets to one peer
   * (the middle packets of a message, which all carry a full MTU) leaves as one UDP GSO
   * send: one system call and one trip through the stack for up to 64 packets, cut into
   * ordinary RoCEv2 datagrams by the kernel, or handed whole to a receiver that set UDP_GRO.
   * A run is a msghdr with a UDP_SEGMENT control message in the flush's sendmmsg call, from
   * the port's own socket; without sendmmsg it goes from a GSO socket of the same source port
   * (the device port's use ephemeral ports). Segment i carries IPv4 Identification i, which
   * its ICRC covers; a run that ends up sent packet by packet is sealed again for
   * Identification 0.
   */
  flush(): void {
    this.flushQueued = false;
    const q = this.out;
    if (q.length === 0) return;
    this.out = this.spare;
    const mm = this.mmsgOut;
    const refused = mm ? mm.stats.errors : 0;
    const calls = mm ? mm.stats.calls : 0;
    try {
      if (this.deferrable > 0) {
        this.deferrable = 0;
        this.markAckReqs(q);
      }
      if (q.length > 2) groupBySender(q);
      for (let i = 0; i < q.length;) {
        const a = q[i]!;
        // A port's sockets (its plain one and its GSO ones) are one ordered flow: while a GSO
        // send of the port waits in libuv's queue, the port's later packets wait here.
        const sender = a.src.sender;
        if (sender.gsoQueued > 0) {
          let w = this.waiting.get(sender);
          if (!w) this.waiting.set(sender, w = []);
          w.push(a);
          i++;
          continue;
        }
        let j = i + 1;
        if (this.gsoEnabled) {
          const max = Math.min(GSO_MAX_SEGMENTS, Math.floor(GSO_MAX_BYTES / a.len));
          let iovs = a.parts.length;
          // Only runs the receiver can cut again without the kernel's help (wire/gro.ts).
          while (j < q.length && j - i < max && q[j]!.len === a.len && q[j]!.to === a.to && q[j]!.src === a.src && iovs + q[j]!.parts.length <= GSO_MAX_IOVS && joinsRun(a.parts[0]!, q[j]!.parts[0]!, j - i)) iovs += q[j++]!.parts.length;
          // A shorter packet may end the run (the kernel cuts a GSO send's last segment short):
          // SMC-R's CDC SEND behind its data WRITE, a message's SEND behind a WRITE's run.
          const t = q[j];
          if (t && j - i < GSO_MAX_SEGMENTS && (j - i) * a.len + t.len <= GSO_MAX_BYTES && t.len <= a.len && t.to === a.to && t.src === a.src && iovs + t.parts.length <= GSO_MAX_IOVS && endsRun(a.parts[0]!, a.len, t.parts[0]!, j - i)) j++;
        }
        // A run goes with the flush's other datagrams in one sendmmsg, as one datagram with a
        // UDP_SEGMENT control message, from the port's own socket (so in order with its single
        // packets). Where that cannot be (no sendmmsg, the socket is node:dgram's for now, a run
        // the staging area cannot take), it goes by node:dgram on the port's GSO socket for its
        // size, or packet by packet.
        if (j - i > 1 && mm && sender.runsAllowed(a.len) && this.stageRun(mm, q, i, j, sender)) {
          i = j;
          continue;
        }
        // Datagrams node:dgram holds for the plain socket (its send buffer was full) leave
        // before a run: the run goes packet by packet behind them.
        const g = j - i > 1 && !(sender.socket.getSendQueueCount() > 0 || mm?.holds(sender.socket)) ? sender.gsoSocket(a.len) : undefined;
        if (g) {
          const { all, onSent } = sealRun(q, i, j, this.flow(a.to, true, this.port, g.port));
          // What was staged for the plain sockets leaves first.
          mm?.commit();
          // Always with a callback: without one node:dgram drops a send's error silently. The
          // kernel refuses UDP_SEGMENT on a route without checksum offload (EIO), as it would a
          // run it cannot take: that run is lost (RC resends it), and this port sends runs of
          // this size packet by packet from now on (SourcePort.gsoRefused).
          const size = a.len;
          let queued = false;
          g.sock.send(all, this.port, a.to, (err) => {
            try {
              if (err) {
                this.counters.send_err++;
                sender.gsoRefused(size, g, (err as NodeJS.ErrnoException).code);
              }
              onSent?.();
            } finally {
              // Whatever threw above, the port's waiting packets must not wait for ever.
              if (queued && --sender.gsoQueued === 0) this.sendWaiting(sender);
            }
          });
          // Not sent at once (EAGAIN): libuv sends it when the socket is writable.
          if (g.sock.getSendQueueCount() > 0) {
            queued = true;
            sender.gsoQueued++;
          }
          this.counters.gso_sends++;
          this.counters.gso_packets += j - i;
        } else {
          for (let k = i; k < j; k++) {
            const o = q[k]!;
            const from = o.src.sender;
            this.flow(o.to, true, this.port, from.port).sealParts(o.parts);
            if (!mm?.add(from.socket, o.parts, o.to, this.port, o.onSent)) from.socket.send(o.parts, this.port, o.to, o.onSent);
          }
        }
        i = j;
      }
    } finally {
      // What was staged leaves even if a send threw (nothing stays staged past a flush), and
      // sends the kernel refused count as node:dgram's failed sends do not: send_err.
      if (mm) {
        mm.commit();
        this.counters.send_err += mm.stats.errors - refused;
        this.counters.sendmmsg_calls += mm.stats.calls - calls;
      }
      // Cleared even if a send threw: a queue is never sent twice.
      q.length = 0;
      this.spare = q;
    }
  }

  /**
   * Stage the run q[i..j) for the flush's sendmmsg as one GSO datagram from the port's own
   * socket; false if the sender cannot take it (nothing staged: the caller sends it another way).
   */
  private stageRun(mm: MmsgSender, q: Outgoing[], i: number, j: number, sender: SourcePort): boolean {
    const a = q[i]!;
    const flow = this.flow(a.to, true, this.port, sender.port);
    const { all, packets, onSent } = sealRun(q, i, j, flow);
    const size = a.len;
    const staged = mm.add(sender.socket, all, a.to, this.port, onSent, {
      size, packets, onRefused: (errno) => sender.runsRefused(size, errno),
      unrun: () => {
        for (const p of packets) flow.sealParts(p, 0);
        this.counters.gso_sends--;
        this.counters.gso_packets -= packets.length;
      },
    });
    if (staged) {
      this.counters.gso_sends++;
      this.counters.gso_packets += j - i;
    }
    return staged;
  }

  /** A port's queued GSO sends have left: what waited for them goes now, ahead of anything queued since. */
  private sendWaiting(sender: SourcePort): void {
    const w = this.waiting.get(sender);
    if (!w) return;
    this.waiting.delete(sender);
    if (this.closed) return;
    for (const o of this.out) w.push(o);
    this.out.length = 0;
    const out = this.out;
    this.out = w;
    // The emptied queue array becomes the spare one after the flush (flush swaps them).
    this.spare = out;
    try {
      this.flush();
    } catch {
      this.counters.send_err++;
    }
  }

  private transmitNow(parts: Buffer[], to: string, src: SourcePort, onSent: (() => void) | undefined): void {
    const pkt = Buffer.concat(parts);
    const port = src.wirePort;
    this.flow(to, true, this.port, port).seal(pkt);
    this.counters.sent_pkts++;
    this.counters.sent_bytes += pkt.length;
    this.transmit!(pkt, to, port);
    if (onSent) queueMicrotask(onSent);
  }

  private sendFaulty(pkt: Buffer, to: string, src: SourcePort): void {
    const f = this.faults!;
    const from = src.sender;
    const sock = from.socket;
    this.flow(to, true, this.port, from.port).seal(pkt);
    this.counters.sent_pkts++;
    this.counters.sent_bytes += pkt.length;
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
      this.held = { pkt, to, sock };
      this.counters.fault_reordered++;
      setImmediate(() => this.flushHeld());
      return;
    }
    sock.send(pkt, this.port, to);
    if (f.duplicate && rnd() < f.duplicate) { this.counters.fault_duplicated++; sock.send(pkt, this.port, to); }
    this.flushHeld();
  }

  private flushHeld() {
    const h = this.held;
    if (!h || this.closed) return;
    this.held = undefined;
    try {
      h.sock.send(h.pkt, this.port, h.to);
    } catch {
      // Its QP gave up the source port meanwhile (the socket is closed): a lost packet.
      this.counters.send_err++;
    }
  }

  /**
   * Whether the device socket keeps the process alive (it receives; the send-only source-port
   * and GSO sockets never do). Timers of work in flight (retransmission, RNR) do too, but on a
   * device that does not, a retransmit timer only for 7 timeouts without an acknowledgement
   * (completer.ts retransmitTimer).
   */
  setKeepAlive(on: boolean): void {
    this.keepAlive = on;
    if (on) this.sock.ref();
    else this.sock.unref();
    this.mmsg?.setKeepAlive(on);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.flush();
    this.closed = true;
    this.mmsg?.close();
    // Each source port closes its own sockets a turn later (SourcePort.close), behind what
    // was queued from it; the device socket closes here after the same wait.
    this.devicePort.close();
    for (const sp of this.ports.values()) sp.close();
    this.ports.clear();
    this.slots.fill(undefined);
    // dgram resolves the address on the next tick before it sends: let packets already
    // handed to the socket (a UD send that has completed, a last ACK) leave first.
    await new Promise((r) => setImmediate(r));
    await new Promise<void>((resolve) => this.sock.close(() => resolve()));
  }
}

/**
 * Seal the run q[i..j) for one GSO send through `flow` (segment k's ICRC covers IPv4
 * Identification k): its parts in order, each packet's parts, and one callback for their onSents.
 */
function sealRun(q: Outgoing[], i: number, j: number, flow: IcrcFlow): { all: Buffer[]; packets: Buffer[][]; onSent: (() => void) | undefined } {
  const all: Buffer[] = [];
  const packets: Buffer[][] = [];
  let sent: Array<() => void> | undefined;
  for (let k = i; k < j; k++) {
    const { parts, onSent } = q[k]!;
    flow.sealParts(parts, k - i);
    for (const b of parts) all.push(b);
    packets.push(parts);
    if (onSent) (sent ??= []).push(onSent);
  }
  return { all, packets, onSent: sent && (() => { for (const f of sent) f(); }) };
}
