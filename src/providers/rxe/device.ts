// An rxe device: RoCEv2 over one UDP socket bound to a local IP address. It owns the QP
// table and the key table, checks every received packet (length, opcode, ICRC, QP, state)
// before a QP sees it, and counts every drop.

import { createHash, randomInt } from 'node:crypto';
import { isIP, isIPv4 } from 'node:net';
import type { ProviderContext, ProviderDevice } from '../../uapi/provider.js';
import type { DriverRegistrar } from '../../uapi/registry.js';
import type { AsyncEvent, DeviceAttr, GidEntry, PortAttr } from '../../abi/types.js';
import { PortState, QpType, mtuEnum, type MtuValue } from '../../abi/enums.js';
import { fail } from '../../uapi/errors.js';
import { newDeviceCounters } from './counters.js';
import { KeyTable } from './keys.js';
import { DEFAULT_SOURCE_PORTS, MAX_POOLED_PORTS, ROCE_V2_PORT, RxeLink, type FaultPlan } from './link.js';
import { RxeAh, RxeContext } from './context.js';
import type { RxeQp } from './qp.js';
import { parsePacket } from './wire/headers.js';
import { Op } from './wire/opcodes.js';
import { gidFromAddress, unmapV4 } from '../../abi/inet.js';
import { shown } from '../../abi/errors.js';
import { onResponse } from './completer.js';
import { onRequest } from './responder.js';
import { registerRxeDriverMethods } from './driver-methods.js';
import { GSI_QPN, RxeGsi } from './gsi.js';
import { tracer } from '../../sys/trace.js';
import { defaultPortMtu } from './port-mtu.js';

/** A packet that broke the receive path (a bug: counted as malformed, device carries on). */
const traceReceiveError = tracer('rxe', 'receive-error');

export interface RxeDeviceOptions {
  /** Local IP address (IPv4 or IPv6) the device binds. */
  address: string;
  /** UDP port, 4791 unless set (peers must use the same). */
  port?: number;
  name?: string;
  /**
   * RoCE port MTU in bytes; by default what Linux rxe derives from the interface holding the
   * address (1024 for a 1500-byte link, 4096 for jumbo frames and loopback; port-mtu.ts).
   */
  mtu?: number;
  /**
   * Send runs of equal-size packets as UDP GSO sends, and take runs in whole under UDP GRO
   * (default: on, unless SOFTRDMA_RXE_GSO=0). The wire sees ordinary packets; a capture on
   * the sending host may show the uncut datagrams, as with TCP segmentation offload.
   */
  gso?: boolean;
  /**
   * The UDP source ports the device's QPs send from, 0 to 256 (default 8, or
   * SOFTRDMA_RXE_SPORTS): a pool of sockets the QPs share, each bound to a port in
   * 0xC000-0xFFFF that Linux rxe would give the first QP using it (from its QPN and its
   * peer's; see wire/udp-sport.ts), so switches and NICs can spread QPs. 0: every packet
   * leaves from the device port (also SOFTRDMA_RXE_SPORT=0).
   */
  sourcePorts?: number;
  /** The option's older name: false is `sourcePorts: 0`; true is the default pool, whatever SOFTRDMA_RXE_SPORT says. */
  perQpSourcePort?: boolean;
  /**
   * Read the device socket with recvmmsg into memory reused from batch to batch (default: on
   * where it works, the main thread on Linux, unless SOFTRDMA_RXE_RECVMMSG=0; see
   * mmsg-receiver.ts). Off: node:dgram's 'message' events, a buffer per datagram.
   */
  recvmmsg?: boolean;
  /**
   * Hand the datagrams a flush sends to one socket in a row to the kernel with one sendmmsg
   * call (default: on where it works, Linux on 64-bit, unless SOFTRDMA_RXE_SENDMMSG=0; see
   * mmsg-sender.ts). Off: a node:dgram send per datagram (or GSO run).
   */
  sendmmsg?: boolean;
  /**
   * Busy polling: a poll of an empty CQ reads the device socket at once (one recvmmsg batch)
   * instead of leaving the datagrams to the next turn of the event loop, so a consumer that
   * spins on its CQ (perftest's latency tests) sees an answer without an epoll round in
   * between. CQs with a completion channel are event-driven and never read this way
   * (default: on wherever recvmmsg is, unless SOFTRDMA_RXE_BUSY_POLL=0).
   */
  busyPoll?: boolean;
  /**
   * Lower some of the limits the device advertises (queryDevice) and enforces: object counts
   * (maxPd, maxCq, maxAh, maxSrq, maxQp, maxMw: one more is EINVAL, as Linux rxe's pools;
   * maxMr: ENOMEM) and sizes (maxCqe,
   * maxQpWr, maxSge, maxSrqWr, maxSrqSge: more is EINVAL). Each must be an integer from 1 to
   * its default (RXE_DEFAULT_LIMITS); for tests, and for a process that wants to cap what a
   * device may hold. An unknown name or a value out of range is EINVAL.
   */
  limits?: Partial<RxeLimits>;
}

/** The limits an rxe device advertises by default (those of Linux rxe's rxe_param.h, or near them). */
export const RXE_DEFAULT_LIMITS = Object.freeze({
  maxQp: 1 << 16, maxQpWr: 16384, maxSge: 32, maxCq: 16384, maxCqe: (1 << 15) - 1, maxMr: 1 << 20, maxPd: 1 << 16,
  maxMw: 1 << 20, maxAh: 1 << 16, maxSrq: 1 << 14, maxSrqWr: 16384, maxSrqSge: 27,
});
export type RxeLimits = { -readonly [K in keyof typeof RXE_DEFAULT_LIMITS]: number };

function checkLimits(given: Partial<RxeLimits> | undefined): RxeLimits {
  const out: RxeLimits = { ...RXE_DEFAULT_LIMITS };
  if (given === undefined) return out;
  if (typeof given !== 'object' || given === null) fail('EINVAL', 'limits must be an object', { object: 'rxe', attr: 'limits' });
  for (const [k, v] of Object.entries(given)) {
    if (v === undefined) continue;
    if (!Object.hasOwn(RXE_DEFAULT_LIMITS, k)) fail('EINVAL', `unknown limit ${k} (known: ${Object.keys(RXE_DEFAULT_LIMITS).join(', ')})`, { object: 'rxe', attr: 'limits' });
    const max = RXE_DEFAULT_LIMITS[k as keyof RxeLimits];
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > max) fail('EINVAL', `${k} must be an integer from 1 to ${max}, got ${String(v)}`, { object: 'rxe', attr: 'limits' });
    out[k as keyof RxeLimits] = v;
  }
  return out;
}
/**
 * QPN 0 (SMI, not on RoCE) and 1 (GSI, gsi.ts) are special, and never in the QP table; as rxe's
 * pool (which starts at 16), user QPNs run from 17. 0xffffff is the multicast QPN (Linux's
 * IB_MULTICAST_QPN), never a QP's. The pool wraps from LAST_QPN to FIRST_QPN.
 */
export const FIRST_QPN = 0x11;
export const LAST_QPN = 0xfffffe;

/**
 * Where a new device starts handing out QPNs: anywhere in the pool. Linux's QPN counter lives
 * in the kernel and keeps counting across processes (hardware hands out what looks random); a
 * device made per process that started at 17 every time would give a restarted process the
 * QPN of its previous life, and its peer's CM, still holding that connection (same CA GUID:
 * nodeGuidFor), would refuse the first REQ as stale (REJ STALE_CONN).
 */
function firstQpnOfDevice(): number {
  return randomInt(FIRST_QPN, LAST_QPN + 1);
}

let deviceCount = 0;

/**
 * device_cap_flags (uverbs' IB_UVERBS_DEVICE_* bits, which are libibverbs' IBV_DEVICE_*): those
 * of Linux rxe's RXE_DEVICE_CAP_FLAGS this device really has. PORT_ACTIVE_EVENT (every context
 * opens with IBV_EVENT_PORT_ACTIVE), SYS_IMAGE_GUID (sys_image_guid is the node GUID),
 * RC_RNR_NAK_GEN (the responder answers a SEND without a receive with an RNR NAK), MEM_WINDOW
 * and MEM_WINDOW_TYPE_2B (type 1 and type 2 windows, a type 2 bound to its QP), SRQ_RESIZE
 * (modify_srq with MAX_WR, as rxe_srq_from_attr). Not claimed: MEM_MGT_EXTENSIONS (no fast registration),
 * AUTO_PATH_MIG (no alternate paths), BAD_PKEY_CNTR and BAD_QKEY_CNTR (the port counters read
 * 0), CHANGE_PHY_PORT and UD_AV_PORT_ENFORCE (one port).
 */
export const RXE_DEVICE_CAP_FLAGS =
  (1 << 10) | // PORT_ACTIVE_EVENT
  (1 << 11) | // SYS_IMAGE_GUID
  (1 << 12) | // RC_RNR_NAK_GEN
  (1 << 13) | // SRQ_RESIZE
  (1 << 17) | // MEM_WINDOW
  (1 << 24); // MEM_WINDOW_TYPE_2B

/**
 * The node GUID of a device on this address, the same in every run. Linux rxe makes it from
 * the netdev's MAC, EUI-64 style (addrconf_addr_eui48: flip the universal/local bit, put
 * ff:fe in the middle). A softrdma device has an address, not a MAC: an IPv4 address a.b.c.d
 * stands for the locally administered MAC 02:00:a:b:c:d (GUID 0000:aaff:febb:ccdd), an IPv6
 * address for the first 6 bytes of its SHA-256, made locally administered and unicast.
 */
export function nodeGuidFor(address: string): bigint {
  let mac: Buffer;
  if (isIPv4(address)) mac = Buffer.from([0x02, 0x00, ...address.split('.').map(Number)]);
  else {
    mac = createHash('sha256').update(gidFromAddress(address)).digest().subarray(0, 6);
    mac[0] = (mac[0]! & 0xfc) | 0x02;
  }
  return Buffer.from([mac[0]! ^ 0x02, mac[1]!, mac[2]!, 0xff, 0xfe, mac[3]!, mac[4]!, mac[5]!]).readBigUInt64BE();
}

export class RxeDevice implements ProviderDevice {
  readonly driver = 'rxe';
  readonly keys: KeyTable;
  readonly qps = new Map<number, RxeQp>();
  readonly nodeGuid: bigint;
  readonly portMtu: MtuValue;
  private nextQpn = firstQpnOfDevice();
  /** Port 1's QP1 while the MAD layer has it open. */
  private gsi: RxeGsi | undefined;
  private iovaCursor = 0x7f0000000000;
  private closed = false;
  /** The one GID (the address's), made once: the rdma_cm and SMC-R look devices up by it per connection. */
  private readonly gid: Buffer;

  private constructor(
    readonly name: string,
    readonly link: RxeLink,
    mtu: number,
    readonly counters: ReturnType<typeof newDeviceCounters>,
    readonly limits: Readonly<RxeLimits>,
  ) {
    this.portMtu = mtuEnum(mtu);
    // MRs and MWs share one key space; the uapi keeps each within its own limit.
    this.keys = new KeyTable();
    this.nodeGuid = nodeGuidFor(link.address);
    this.gid = gidFromAddress(link.address);
    link.onPacket = (pkt, from, fromPort, segment) => this.receive(pkt, from, fromPort, segment);
    link.pathMtuOf = (qpn) => this.qps.get(qpn)?.mtu ?? 0;
  }

  static async create(opts: RxeDeviceOptions): Promise<RxeDevice> {
    // Everything that can be refused is checked before the socket is bound: an address that is
    // not an IP literal ('' bound the wildcard, then the GUID refused it with the socket open,
    // and the process never exited); a port node:dgram would take modulo 65536.
    if (typeof opts !== 'object' || opts === null) fail('EINVAL', `options must be an object with an address, got ${shown(opts)}`, { object: 'rxe', attr: 'options' });
    const given = (opts as Partial<RxeDeviceOptions>).address;
    if (typeof given !== 'string' || isIP(given) === 0) {
      fail('EINVAL', `address must be an IPv4 or IPv6 address, got ${shown(given)}`, { object: 'rxe', attr: 'address' });
    }
    // An IPv4-mapped IPv6 address (as a '::' server reports its IPv4 peers) is the IPv4 address:
    // its GID is that address's, as Linux's for an IPv4 netdev address.
    const address = unmapV4(given);
    // A wildcard is no address of a port: Linux never has an all-zero GID.
    if (address === '0.0.0.0' || (isIP(address) === 6 && gidFromAddress(address).every((b) => b === 0))) {
      fail('EINVAL', `address must be a unicast address of this host, not the wildcard ${address}`, { object: 'rxe', attr: 'address' });
    }
    if (opts.port !== undefined && !(Number.isInteger(opts.port) && opts.port >= 0 && opts.port <= 65535)) {
      fail('EINVAL', `port must be an integer from 0 to 65535, got ${shown(opts.port)}`, { object: 'rxe', attr: 'port' });
    }
    if (opts.mtu !== undefined && !(typeof opts.mtu === 'number' && [256, 512, 1024, 2048, 4096].includes(opts.mtu))) {
      fail('EINVAL', `mtu must be 256, 512, 1024, 2048 or 4096 (bytes), got ${shown(opts.mtu)}`, { object: 'rxe', attr: 'mtu' });
    }
    if (opts.name !== undefined && (typeof opts.name !== 'string' || opts.name === '')) {
      fail('EINVAL', `name must be a non-empty string, got ${shown(opts.name)}`, { object: 'rxe', attr: 'name' });
    }
    for (const k of ['gso', 'perQpSourcePort', 'recvmmsg', 'sendmmsg', 'busyPoll'] as const) {
      if (opts[k] !== undefined && typeof opts[k] !== 'boolean') fail('EINVAL', `${k} must be a boolean, got ${shown(opts[k])}`, { object: 'rxe', attr: k });
    }
    if (opts.sourcePorts !== undefined && !(Number.isInteger(opts.sourcePorts) && opts.sourcePorts >= 0 && opts.sourcePorts <= MAX_POOLED_PORTS)) {
      fail('EINVAL', `sourcePorts must be an integer from 0 to ${MAX_POOLED_PORTS}, got ${shown(opts.sourcePorts)}`, { object: 'rxe', attr: 'sourcePorts' });
    }
    if (opts.perQpSourcePort === false && opts.sourcePorts) {
      fail('EINVAL', `perQpSourcePort: false (the device port only) contradicts sourcePorts: ${opts.sourcePorts}`, { object: 'rxe', attr: 'perQpSourcePort' });
    }
    const counters = newDeviceCounters();
    const mtu = opts.mtu ?? defaultPortMtu(address);
    const limits = checkLimits(opts.limits);
    const link = await RxeLink.open(
      address, opts.port ?? ROCE_V2_PORT, counters, opts.gso ?? process.env.SOFTRDMA_RXE_GSO !== '0',
      sourcePortPool(opts), opts.recvmmsg ?? process.env.SOFTRDMA_RXE_RECVMMSG !== '0',
      opts.sendmmsg ?? process.env.SOFTRDMA_RXE_SENDMMSG !== '0',
    );
    try {
      link.busyPolling = opts.busyPoll ?? process.env.SOFTRDMA_RXE_BUSY_POLL !== '0';
      return new RxeDevice(opts.name ?? `rxe${deviceCount++}`, link, mtu, counters, limits);
    } catch (err) {
      // No device to close later: the link is ours to close, or its socket keeps the process alive.
      await link.close();
      throw err;
    }
  }

  get family(): 4 | 6 { return this.link.family; }
  get address(): string { return this.link.address; }
  get port(): number { return this.link.port; }

  set faults(plan: FaultPlan | undefined) { this.link.faults = plan; }
  get faults(): FaultPlan | undefined { return this.link.faults; }

  isAh(x: unknown): x is RxeAh { return x instanceof RxeAh; }

  allocQpn(): number {
    // The uapi enforces max_qp (after the QP is made: rxe's order); this guards the QPN space itself.
    if (this.qps.size >= LAST_QPN - FIRST_QPN + 1) fail('ENOMEM', `no free QP numbers (${this.qps.size} in use)`);
    for (;;) {
      const q = this.nextQpn;
      this.nextQpn = this.nextQpn >= LAST_QPN ? FIRST_QPN : this.nextQpn + 1;
      if (!this.qps.has(q)) return q;
    }
  }

  /** A fresh, page-aligned I/O virtual address range for an MR registered without one. */
  nextIova(length: number): number {
    const v = this.iovaCursor;
    this.iovaCursor += Math.ceil((length + 1) / 4096) * 4096 + 4096;
    return v;
  }

  /**
   * The device's attributes, fixed when it is made: one frozen object for every caller (the
   * checks of each createQp and modify read them; the uapi's QUERY hands callers a copy).
   */
  queryDevice(): DeviceAttr {
    return this.attrs ??= Object.freeze(this.buildAttrs());
  }

  private attrs: DeviceAttr | undefined;

  private buildAttrs(): DeviceAttr {
    const l = this.limits;
    return {
      fwVer: '0.1.0', nodeGuid: this.nodeGuid, sysImageGuid: this.nodeGuid, maxMrSize: 2 ** 32, pageSizeCap: 0xfffff000,
      vendorId: 0xffffff, vendorPartId: 0, hwVer: 0, maxQp: l.maxQp, maxQpWr: l.maxQpWr, deviceCapFlags: RXE_DEVICE_CAP_FLAGS, maxSge: l.maxSge,
      maxCq: l.maxCq, maxCqe: l.maxCqe, maxMr: l.maxMr, maxPd: l.maxPd, maxQpRdAtom: 128, maxQpInitRdAtom: 128,
      maxMw: l.maxMw, maxAh: l.maxAh, maxSrq: l.maxSrq, maxSrqWr: l.maxSrqWr, maxSrqSge: l.maxSrqSge, maxInlineData: 1024,
      atomicCap: 'HCA', physPortCnt: 1,
    };
  }

  queryPort(): PortAttr {
    return {
      // max_mtu is rxe's IB_MTU_4096 whatever the link's (rxe_init_port_param); active_mtu the link's.
      state: this.closed ? PortState.DOWN : PortState.ACTIVE, maxMtu: 5, activeMtu: this.portMtu, gidTblLen: 1,
      portCapFlags: 0, maxMsgSz: 0x80000000, pkeyTblLen: 1, lid: 0, smLid: 0, linkLayer: 'Ethernet',
      activeWidth: 1, activeSpeed: 1, physState: this.closed ? 3 : 5,
    };
  }

  gidTable(): GidEntry[] {
    return [{ index: 0, gid: Buffer.from(this.gid), type: 'RoCE v2', address: this.address }];
  }

  queryPkey(): number { return 0xffff; }

  openContext(onEvent: (ev: AsyncEvent) => void): ProviderContext {
    if (this.closed) fail('ENODEV', `device ${this.name} is closed`);
    return new RxeContext(this, onEvent);
  }

  setKeepAlive(on: boolean): void {
    this.link.setKeepAlive(on);
  }

  /** QP1 for the MAD layer: one owner at a time, as the kernel's MAD layer is QP1's only user. */
  openGsi(port: number): RxeGsi {
    if (this.closed) fail('ENODEV', `device ${this.name} is closed`);
    if (port !== 1) fail('EINVAL', `device ${this.name} has port 1 only, not ${String(port)}`, { object: 'GSI', attr: 'port' });
    if (this.gsi) fail('EBUSY', `QP1 of ${this.name} port 1 is already open`, { object: 'GSI' });
    this.gsi = new RxeGsi(this, port);
    return this.gsi;
  }

  /** @internal RxeGsi.close() */
  gsiClosed(g: RxeGsi): void {
    if (this.gsi === g) this.gsi = undefined;
  }

  registerDriverMethods(r: DriverRegistrar): void {
    registerRxeDriverMethods(r);
  }

  /** Every received datagram passes through here; nothing malformed reaches a QP. */
  private receive(pkt: Buffer, from: string, fromPort: number, segment = 0): void {
    const c = this.counters;
    c.rcvd_pkts++;
    c.rcvd_bytes += pkt.length;
    try {
      const p = parsePacket(pkt);
      if (typeof p === 'string') { c.malformed_drops++; return; }
      const check = this.link.flow(from, false, fromPort).check(pkt, segment);
      if (check === 'bad') { c.icrc_errors++; return; }
      if (check !== 'ok') c.icrc_id_inferred++;
      if (p.pkey !== 0xffff && p.pkey !== 0x7fff) { c.malformed_drops++; return; }
      if (p.destQp === GSI_QPN) {
        // rxe_rcv: QPN 1 means the port's GSI QP, whatever its index in the QP pool
        if (this.gsi) this.gsi.receive(p, from, fromPort);
        else c.unknown_qp_drops++;
        return;
      }
      const qp = this.qps.get(p.destQp);
      if (!qp) { c.unknown_qp_drops++; return; }
      // An opcode of another transport (say UC on an RC QP) is never valid.
      const transport = p.mask & (Op.RC | Op.UC | Op.UD);
      const want = qp.qpType === QpType.RC ? Op.RC : qp.qpType === QpType.UC ? Op.UC : Op.UD;
      if (transport !== want) { c.malformed_drops++; return; }
      // Who may speak for a QP: a connected QP hears only its path's address (see fromPath);
      // anything else is dropped silently (no NAK, no state change), as Linux rxe does.
      if (want !== Op.UD && !qp.fromPath(from)) { c.addr_mismatch_drops++; qp.counters.addr_mismatch_drops++; return; }
      if (p.mask & Op.RESP) onResponse(qp, p);
      else onRequest(qp, p, from);
    } catch (err) {
      // A bug must not take the device down with it; count it and go on.
      c.malformed_drops++;
      if (traceReceiveError.active) traceReceiveError({ error: err, from });
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.gsi?.close();
    for (const qp of this.qps.values()) qp.destroy();
    this.qps.clear();
    await this.link.close();
  }
}

/**
 * The pool's size: the options, else the environment (SOFTRDMA_RXE_SPORT=0, or
 * SOFTRDMA_RXE_SPORTS=N with N from 0 to 256 in decimal; anything else is not read), else the
 * default.
 */
function sourcePortPool(opts: { sourcePorts?: number; perQpSourcePort?: boolean }): number {
  if (opts.sourcePorts !== undefined) return opts.sourcePorts;
  if (opts.perQpSourcePort === false) return 0;
  if (opts.perQpSourcePort === undefined && process.env.SOFTRDMA_RXE_SPORT === '0') return 0;
  // Decimal digits only: Number('') is 0, which would turn the pool off unasked.
  const env = process.env.SOFTRDMA_RXE_SPORTS;
  return env !== undefined && /^\d{1,3}$/.test(env) && Number(env) <= MAX_POOLED_PORTS ? Number(env) : DEFAULT_SOURCE_PORTS;
}
