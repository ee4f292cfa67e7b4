// The `ism` device: what an SMC-D Internal Shared Memory device does, in user space.
//
// - registerDmb(size): a DMB (direct memory buffer) backed by a sealed memfd, named by an
//   unguessable 64-bit token. No file is ever created: a memfd has no name in /dev/shm and
//   its memory is freed when the last process that maps it exits, kill -9 included.
// - attachDmb(peerGid, token): map a peer's DMB. The peer device publishes a small "device
//   page" (a memfd too) with its token table; the attacher finds the token there, opens the
//   memfd through /proc/<pid>/fd/<n> (which the kernel allows only to the same user, the same
//   rule as ptrace), checks the memfd's name and seals, and maps it.
// - RemoteDmb.write(offset, bytes) and signal(): a memcpy into the peer's memory, and a
//   doorbell: a 4-byte DMB index sent over a Unix socket between the two devices, but only
//   when the owner has armed the DMB (it is about to sleep). While traffic flows, owners
//   poll and writers never make a system call. The doorbell socket is a file in the owner-only
//   runtime directory (not an abstract name, which any user could connect to), so only this
//   user's processes can connect; its connections are capped (maxDoorbellConnections, excess
//   closed at once and counted). A ring that cannot be delivered is lost (counted): the owner's
//   poller looks at its armed DMBs now and then on its own (src/smc/poller.ts).
// - Proposals: a device has a secret key, kept in its owner-only registry entry. A client's
//   Proposal carries an HMAC with it over the TCP connection (proposalProof), which a server
//   checks against the entry of the GID the Proposal names (verifyProposal) before it
//   allocates anything; see src/smc/peer-proof.ts.
// - Lifetime. close() ends the SMC-D connections over the device (they abort, their sockets get
//   an error), gives back every DMB, peer mapping and descriptor, and removes the entry and the
//   doorbell; memory a caller may still hold a view of (`bytes`) is replaced by zeroed private
//   memory, never left unmapped (see releaseMapping). At process exit only the entry and the
//   doorbell go (the memory stays for later 'exit' listeners; the kernel frees it a moment
//   later); when a worker thread ends, everything goes, as at close() but without telling the
//   peers (the thread's TCP connections tell them). Opening a device sweeps the entries (and
//   their doorbells) of processes and threads that died without closing theirs.

import diagnosticsChannel from 'node:diagnostics_channel';
import { EventEmitter } from 'node:events';
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import { isMainThread } from 'node:worker_threads';
import { SoftrdmaError, shown } from '../abi/errors.js';
import { F_SEAL_GROW, F_SEAL_SHRINK, mapShared, memfdCreate, openProcFdChecked, reapDeadThreadMappings, releaseLedgerIfEmpty, releaseMapping, sealSize, seals, kernelThreadId, type Mapping } from './libc.js';
import {
  entryPath, isAlive, listEntries, liveness, netNamespace, openEntryPath, pidNamespaceKnown, pidNamespaceTag, processStartTime, readEntry, removeEntry, restoreEntry, selfStamp, subdir, writeEntry,
} from './runtime-dir.js';

// A worker thread ended by terminate() leaves its mappings (see libc.ts's ledger): they are
// reaped when the Worker made in this thread reports its 'exit' (the thread has been joined
// then), and at each device open, in whichever thread.
diagnosticsChannel.subscribe('worker_threads', (message) => {
  const worker = (message as { worker?: EventEmitter } | undefined)?.worker;
  worker?.once('exit', () => { reapDeadThreadMappings(); });
});

/** node:net's connect as it was when this module loaded (see PeerDevice.connect). */
const nodeConnect = net.Socket.prototype.connect;

const PAGE_MAGIC = 0x314d5349; // 'ISM1'
const PAGE_HEADER = 64;
const SLOT_SIZE = 32;
const DEFAULT_SLOTS = 8192;
const MAX_SLOTS = 1 << 20;
const EMPTY = 0n;
const TOMBSTONE = 1n;
/** The CHID Linux gives its software (loopback) ISM device. */
export const VIRTUAL_CHID = 0xffff;
/** How long an idle peer device stays mapped and connected, so short connections reuse it. */
const PEER_LINGER_MS = 10_000;
/**
 * Doorbell connections a device accepts at once: one per peer device that rang it within the
 * last PEER_LINGER_MS, so this is a bound on concurrent peer processes; more are closed at once.
 */
const DEFAULT_MAX_DOORBELL_CONNECTIONS = 4096;
/** Bytes of HMAC-SHA256 a Proposal carries. */
export const PROOF_LEN = 16;

export class IsmError extends SoftrdmaError {
  constructor(code: string, message: string) {
    super(code, message);
    this.name = 'IsmError';
  }
}

interface DeviceEntry {
  gid: string;
  chid: number;
  pid: number;
  start: string;
  /** The writer's pid namespace: only processes in the same one can judge its pid (or reach its fds). */
  pidns?: string;
  /** The writer's thread (kernel tid): a worker thread can end, and be terminated, before its process. */
  tid?: number;
  /** That thread's start time (field 22 of its /proc stat): a tid reused by a later thread of the process is not the writer. */
  tidStart?: string;
  netns: string;
  pageFd: number;
  slots: number;
  /** The doorbell socket's file name in the ism directory. */
  bell?: string;
  /** The Proposal key (hex), readable only by this user (see verifyProposal). */
  key?: string;
}

function hex64(v: bigint): string {
  return v.toString(16).padStart(16, '0');
}

function randomToken(): bigint {
  for (;;) {
    const t = randomBytes(8).readBigUInt64LE();
    if (t > TOMBSTONE) return t;
  }
}

/** Slot table in a device page: token u64, fd i32, size u32, armed i32, signals u32. */
class SlotTable {
  readonly u32: Uint32Array;
  readonly i32: Int32Array;
  readonly i64: BigInt64Array;
  constructor(buffer: ArrayBuffer, readonly slots: number) {
    this.u32 = new Uint32Array(buffer);
    this.i32 = new Int32Array(buffer);
    this.i64 = new BigInt64Array(buffer);
  }
  private base(i: number): number { return (PAGE_HEADER + i * SLOT_SIZE) / 4; }
  token(i: number): bigint { return BigInt.asUintN(64, Atomics.load(this.i64, (PAGE_HEADER + i * SLOT_SIZE) / 8)); }
  setToken(i: number, t: bigint): void { Atomics.store(this.i64, (PAGE_HEADER + i * SLOT_SIZE) / 8, BigInt.asIntN(64, t)); }
  fd(i: number): number { return this.i32[this.base(i) + 2]!; }
  size(i: number): number { return this.u32[this.base(i) + 3]!; }
  armedIndex(i: number): number { return this.base(i) + 4; }
  set(i: number, fd: number, size: number): void {
    const b = this.base(i);
    this.i32[b + 2] = fd;
    this.u32[b + 3] = size;
    Atomics.store(this.i32, b + 4, 0);
  }
  /** Open addressing on the token: the attacher needs no round trip to find a DMB. */
  find(token: bigint): number {
    const i = this.probe(token, (t) => t === token || t === EMPTY);
    return i >= 0 && this.token(i) === token ? i : -1;
  }
  freeSlotFor(token: bigint): number {
    return this.probe(token, (t) => t === EMPTY || t === TOMBSTONE);
  }
  /** The first slot on token's probe sequence whose token satisfies stop, or -1. */
  private probe(token: bigint, stop: (t: bigint) => boolean): number {
    const start = Number(token % BigInt(this.slots));
    for (let n = 0; n < this.slots; n++) {
      const i = (start + n) % this.slots;
      if (stop(this.token(i))) return i;
    }
    return -1;
  }
}

const NO_BYTES = new Uint8Array(0);

/**
 * Mapped memory shared with another process: `view` for softrdma's own users, who drop it when
 * the memory goes (it is empty then); `bytes` for the application, which may keep it, so the
 * mapping is marked exposed and releaseMapping leaves zeroed private memory in its place: a
 * view kept beyond the release reads zeros and writes nowhere the peer sees.
 */
abstract class SharedMemoryView {
  /** @internal */
  view: Uint8Array;
  protected mapping: Mapping | undefined;
  constructor(mapping: Mapping) {
    this.mapping = mapping;
    this.view = new Uint8Array(mapping.buffer);
  }
  /** The memory (empty once it is released). */
  get bytes(): Uint8Array {
    if (this.mapping) this.mapping.exposed = true;
    return this.view;
  }
}

/** A DMB this device owns; the peer writes into it. */
export class Dmb extends SharedMemoryView {
  /** Called (on the event loop) when the peer rang the doorbell for this DMB. */
  onSignal: (() => void) | undefined;
  /** @internal Called once when the DMB is unregistered (the DMB pool's per-peer count). */
  onRelease: (() => void) | undefined;
  /**
   * @internal Called when the device closes under the DMB, before its memory goes (atExit:
   * the worker thread is ending). The connection using it ends, and drops its views of it.
   */
  onDeviceClose: ((atExit: boolean) => void) | undefined;
  /**
   * @internal The peer device the DMB was handed out for, set by SMC's DMB pool (which reuses a
   * DMB for that peer only, and keeps it named so while it waits in the pool: a peer may attach
   * after our side has let go). SMC's handshake takes one of this device's own DMBs only where
   * it was handed out for ourselves.
   */
  forPeer: bigint | undefined;
  private closed = false;
  constructor(
    private readonly device: IsmDevice,
    readonly token: bigint,
    readonly index: number,
    readonly size: number,
    readonly fd: number,
    mapping: Mapping,
  ) {
    super(mapping);
  }
  /** Ask writers to ring the doorbell on their next signal. Re-check for data after arming. */
  arm(): void {
    if (!this.closed) Atomics.store(this.device.table.i32, this.device.table.armedIndex(this.index), 1);
  }
  disarm(): void {
    if (!this.closed) Atomics.store(this.device.table.i32, this.device.table.armedIndex(this.index), 0);
  }
  get isClosed(): boolean { return this.closed; }
  /**
   * @internal The poller found data that came while armed, without (or before) its ring: the
   * ring may be lost because our doorbell's file was removed (a tmp cleaner), and every ring
   * would be until the device's next handshake. Make it again now (at most once a second).
   */
  ringMissed(): void {
    if (this.closed) return;
    try {
      this.device.ensureRegistered();
    } catch {
      // No runtime directory or doorbell to be had now: the poller's looks still find the data.
    }
  }
  /** @internal keepMemory: at process exit, where later 'exit' listeners may still read it. */
  release(keepMemory = false): void {
    if (this.closed) return;
    this.closed = true;
    this.view = NO_BYTES;
    this.onSignal = undefined;
    this.onDeviceClose = undefined;
    if (!keepMemory) {
      releaseMapping(this.mapping!);
      this.mapping = undefined;
      fs.closeSync(this.fd);
    }
    const released = this.onRelease;
    this.onRelease = undefined;
    released?.();
  }
}

/** A peer's DMB, mapped here for writing. */
export class RemoteDmb extends SharedMemoryView {
  private detached = false;
  constructor(
    private readonly peer: PeerDevice,
    readonly token: bigint,
    readonly index: number,
    readonly size: number,
    mapping: Mapping,
  ) {
    super(mapping);
  }
  get peerGid(): bigint { return this.peer.gid; }
  /**
   * Whether the peer device's process (and thread) still runs, as its registry entry names it
   * (pid and start time): false once it died, even unreaped; undefined where this process
   * cannot tell (another pid namespace).
   */
  peerAlive(): boolean | undefined { return entryAlive(this.peer.entry); }
  /** Detached (by detach(), or by the device's close). */
  get isDetached(): boolean { return this.detached; }
  /** Copy bytes into the peer's DMB at offset; bounds are checked, never trusted. */
  write(offset: number, data: Uint8Array, signal = false): void {
    if (this.detached) throw new IsmError('ENODEV', 'DMB is detached');
    if (!(data instanceof Uint8Array)) throw new IsmError('EINVAL', `data must be a Buffer or Uint8Array, got ${typeof data === 'string' ? 'a string' : String(data)}`);
    if (!Number.isInteger(offset) || offset < 0 || offset + data.length > this.size) {
      throw new IsmError('EINVAL', `write of ${data.length} bytes at offset ${offset} exceeds the DMB (${this.size} bytes)`);
    }
    this.view.set(data, offset);
    if (signal) this.signal();
  }
  /** Ring the peer's doorbell if the peer armed this DMB; returns whether it rang. */
  signal(): boolean {
    if (this.detached) return false;
    const t = this.peer.table;
    const a = t.armedIndex(this.index);
    if (Atomics.load(t.i32, a) === 0) return false;
    if (Atomics.compareExchange(t.i32, a, 1, 0) !== 1) return false;
    this.peer.ring(this.index);
    return true;
  }
  detach(): void {
    if (this.detached) return;
    const mapping = this.revoke()!;
    this.peer.attached.delete(this);
    // A mapping whose view was handed out is not kept for reuse: writes through a kept view
    // would land in the peer's DMB, and in a later connection's ring once it is handed out again.
    if (mapping.exposed) releaseMapping(mapping);
    else this.peer.park(this.token, this.index, this.size, mapping);
    this.peer.unref();
  }
  /** @internal Detached without parking: the peer device is closing; returns the mapping to release. */
  revoke(): Mapping | undefined {
    if (this.detached) return undefined;
    this.detached = true;
    this.view = NO_BYTES;
    const m = this.mapping;
    this.mapping = undefined;
    return m;
  }
}

/** A detached peer DMB whose mapping is kept, in case the peer hands the same DMB out again. */
interface Parked {
  index: number;
  size: number;
  mapping: Mapping;
}

/** How many detached mappings of one peer device are kept for reuse. */
const MAX_PARKED = 64;

/** node:net's onread slots on a Socket (lib/net.js: kBuffer, kBufferCb, kBufferGen), found by their descriptions. */
let onreadSlots: { buffer: symbol; callback: symbol } | null | undefined;

/**
 * Make libuv read s into one buffer of ours and call cb(n, buffer) per read, as node:net does
 * for a socket made with the onread option (its onStreamRead calls kBufferCb with the count
 * instead of pushing a Buffer). False, and nothing changed, where this node's Socket lacks
 * the slots or the handle lacks useUserBuffer: the caller then listens for 'data'.
 */
function readIntoOwnBuffer(s: net.Socket, cb: (n: number, buf: Buffer) => void): boolean {
  if (onreadSlots === undefined) {
    const own = Object.getOwnPropertySymbols(s);
    const buffer = own.find((k) => k.description === 'kBuffer');
    const callback = own.find((k) => k.description === 'kBufferCb');
    const gen = own.find((k) => k.description === 'kBufferGen');
    onreadSlots = buffer && callback && gen ? { buffer, callback } : null;
  }
  const handle = (s as unknown as { _handle?: { useUserBuffer?: (b: Uint8Array) => void } })._handle;
  if (!onreadSlots || typeof handle?.useUserBuffer !== 'function') return false;
  const slots = s as unknown as Record<symbol, unknown>;
  if (slots[onreadSlots.buffer] !== null || slots[onreadSlots.callback] !== null) return false;
  const buf = Buffer.alloc(4096);
  slots[onreadSlots.buffer] = buf;
  slots[onreadSlots.callback] = (n: number) => { cb(n, buf); };
  handle.useUserBuffer(buf);
  return true;
}

/** What this process knows of another device: its page, and a doorbell connection. */
class PeerDevice {
  table: SlotTable;
  /** This device's DMBs attached now (not detached): revoked if the device closes first. */
  readonly attached = new Set<RemoteDmb>();
  private readonly parked = new Map<bigint, Parked>();
  private closed = false;
  private sock: net.Socket | undefined;
  private refs = 0;
  private linger: NodeJS.Timeout | undefined;
  private pending: number[] = [];
  private readonly bells = new Map<number, Buffer>();
  private connected = false;
  constructor(
    private readonly owner: IsmDevice,
    readonly gid: bigint,
    readonly entry: DeviceEntry,
    private readonly page: Mapping,
  ) {
    this.table = new SlotTable(page.buffer, entry.slots);
  }
  ref(): void {
    this.refs++;
    if (this.linger) { clearTimeout(this.linger); this.linger = undefined; }
  }
  unref(): void {
    if (--this.refs > 0) return;
    this.linger = setTimeout(() => this.close(), PEER_LINGER_MS);
    this.linger.unref();
  }
  /**
   * Keep a detached mapping. The owner may give the same DMB (same token) to the next
   * connection, as Linux reuses buffers within a link group; mapping it again would cost an
   * open of /proc/<pid>/fd, an mmap and fresh page faults. Mappings whose token left the
   * owner's table are dropped, so they do not pin the owner's freed memory.
   */
  park(token: bigint, index: number, size: number, mapping: Mapping): void {
    for (const [t, p] of this.parked) {
      if (this.table.token(p.index) !== t) { releaseMapping(p.mapping); this.parked.delete(t); }
    }
    if (this.parked.size >= MAX_PARKED) {
      const [oldest, p] = this.parked.entries().next().value as [bigint, Parked];
      releaseMapping(p.mapping);
      this.parked.delete(oldest);
    }
    this.parked.set(token, { index, size, mapping });
  }
  /** A parked mapping of this token, if the owner still has that very DMB registered. */
  unpark(token: bigint, index: number, size: number): Mapping | undefined {
    const p = this.parked.get(token);
    if (!p) return undefined;
    this.parked.delete(token);
    if (p.index === index && p.size === size && this.table.token(index) === token) return p.mapping;
    releaseMapping(p.mapping);
    return undefined;
  }
  ring(index: number): void {
    this.owner.stats.signalsSent++;
    if (!this.sock) this.connect();
    // No doorbell now (no runtime directory): lost, as one whose connect fails (see 'close').
    // The sleeper's poller finds the data on its own look (smc/poller.ts recheck).
    if (!this.sock) { this.owner.stats.signalsLost++; return; }
    if (!this.connected) { this.pending.push(index); return; }
    // One 4-byte Buffer per DMB index, reused: the stream may still hold an earlier write of
    // it, whose bytes are the same.
    let b = this.bells.get(index);
    if (!b) {
      b = Buffer.alloc(4);
      b.writeUInt32LE(index);
      this.bells.set(index, b);
    }
    this.sock!.write(b);
  }
  private connect(): void {
    let where: string;
    try {
      where = entryPath('ism', this.entry.bell!);
    } catch {
      return; // no runtime directory now: nothing rings; the next ring tries again
    }
    // node:net's own connect, not whatever wraps Socket.prototype.connect now (the auto
    // preload, an APM tool): the doorbell is softrdma's internal socket, not the application's.
    const s = new net.Socket();
    nodeConnect.call(s, where);
    this.sock = s;
    s.setNoDelay(true);
    s.unref();
    s.on('connect', () => {
      this.connected = true;
      if (this.pending.length) {
        const b = Buffer.allocUnsafe(4 * this.pending.length);
        this.pending.forEach((ix, n) => b.writeUInt32LE(ix, 4 * n));
        this.pending = [];
        s.write(b);
      }
    });
    // The peer went away: its connections learn that through TCP; drop our doorbell.
    s.on('error', () => {});
    // Rings still pending are lost (the file removed, a refused or failed connect); the next
    // ring connects afresh, to the path the entry names then.
    s.on('close', () => {
      this.owner.stats.signalsLost += this.pending.length;
      this.sock = undefined;
      this.connected = false;
      this.pending = [];
    });
  }
  /**
   * Unmap the peer's page and the DMBs kept for reuse, and drop the doorbell connection: once
   * idle (no DMB attached), or at once with force (the owning device closes), when DMBs still
   * attached are revoked (RemoteDmb.revoke) and their mappings released too.
   */
  close(force = false): void {
    if (this.closed || (this.refs > 0 && !force)) return;
    this.closed = true;
    if (this.linger) { clearTimeout(this.linger); this.linger = undefined; }
    this.owner.forgetPeer(this);
    this.sock?.destroy();
    for (const r of this.attached) {
      const m = r.revoke();
      if (m) releaseMapping(m);
    }
    this.attached.clear();
    for (const p of this.parked.values()) releaseMapping(p.mapping);
    this.parked.clear();
    releaseMapping(this.page);
  }
}

/** The registry entry that announces a device to the other processes of the user. */
function deviceEntryName(gid: bigint): string {
  return `${hex64(gid)}.json`;
}

export interface IsmStats {
  dmbsRegistered: number;
  dmbsAttached: number;
  /** Attachments served from a kept mapping of the same DMB. */
  attachReused: number;
  signalsSent: number;
  signalsReceived: number;
  /** Rings that could not be delivered (no doorbell file, a failed or refused connect). */
  signalsLost: number;
  badSignals: number;
  /** Doorbell connections closed at once because maxDoorbellConnections were open. */
  doorbellRefused: number;
  /** Proposals whose GID this device could not verify (no live entry, or a wrong proof). */
  proposalsRefused: number;
}

export interface IsmDeviceInfo {
  gid: bigint;
  chid: number;
  pid: number;
  dmbs: number;
  peers: number;
  stats: IsmStats;
}

export interface IsmOpenOptions {
  /** DMB slots in the token table (default 8192). */
  slots?: number;
  /** Doorbell connections accepted at once (default 4096); more are closed at once and counted. */
  maxDoorbellConnections?: number;
}

export class IsmDevice extends EventEmitter {
  readonly gid: bigint;
  readonly chid = VIRTUAL_CHID;
  /** @internal */ readonly table: SlotTable;
  readonly stats: IsmStats = {
    dmbsRegistered: 0, dmbsAttached: 0, attachReused: 0, signalsSent: 0, signalsReceived: 0, signalsLost: 0, badSignals: 0,
    doorbellRefused: 0, proposalsRefused: 0,
  };
  private readonly page: Mapping;
  private readonly pageFd: number;
  private readonly dmbs = new Map<number, Dmb>();
  private readonly peers = new Map<bigint, PeerDevice>();
  private server: net.Server;
  /** Accepted doorbell connections (server.close() leaves them open). */
  private readonly doorbells = new Set<net.Socket>();
  private readonly entryName: string;
  private readonly entry: DeviceEntry;
  private readonly key: Buffer;
  private entryCheckedAt = 0;
  private closed = false;
  /**
   * At exit the entry goes (nobody may attach to a dead process's device). In the main thread
   * the memory stays mapped: an 'exit' listener after ours may still destroy a socket, whose
   * teardown reads its DMB's cursors and writes its closing CDC into the peer's; the kernel
   * frees it all a moment later. A worker thread's exit is not the process's: there everything
   * is released (as close() does, but the peers learn of it through TCP, as of a process exit).
   */
  private readonly onExit = () => this.shutdown(true);

  private constructor(slots: number, private readonly maxDoorbell: number) {
    super();
    this.gid = randomToken();
    this.key = randomBytes(32);
    this.entryName = deviceEntryName(this.gid);
    const bell = `${hex64(randomToken())}.sock`;
    // The runtime directory first: if it is refused, nothing is made (and nothing can leak).
    subdir('ism');
    sweepDeadEntries();
    reapDeadThreadMappings();
    // Whatever is made below is released again if a later step fails.
    let memfd: { fd: number; mapping: Mapping } | undefined;
    let server: net.Server | undefined;
    try {
      memfd = createSealedMemfd(`softrdma-ism-${hex64(this.gid)}`, PAGE_HEADER + slots * SLOT_SIZE);
      const hdr = new DataView(memfd.mapping.buffer);
      hdr.setUint32(0, PAGE_MAGIC, true);
      hdr.setUint32(4, slots, true);
      hdr.setUint32(8, process.pid, true);
      hdr.setBigUint64(16, this.gid, true);
      server = this.listenDoorbell(bell);
      const tid = kernelThreadId();
      const tidStart = tid === undefined ? undefined : processStartTime(process.pid, tid);
      this.entry = {
        gid: hex64(this.gid), chid: this.chid, ...selfStamp(), ...(tid === undefined ? {} : { tid }), ...(tidStart === undefined ? {} : { tidStart }), netns: netNamespace(),
        pageFd: memfd.fd, slots, bell, key: this.key.toString('hex'),
      };
      writeEntry('ism', this.entryName, this.entry);
    } catch (err) {
      server?.close();
      if (memfd) {
        releaseMapping(memfd.mapping);
        fs.closeSync(memfd.fd);
      }
      throw err;
    }
    this.pageFd = memfd.fd;
    this.page = memfd.mapping;
    this.table = new SlotTable(this.page.buffer, slots);
    this.server = server;
    this.entryCheckedAt = performance.now();
    process.once('exit', this.onExit);
  }

  /** Listen for doorbell connections at ism/<bell> in the runtime directory; throws if that fails. */
  private listenDoorbell(bell: string): net.Server {
    const server = net.createServer((s) => this.onDoorbellConnection(s));
    // A listen error is also emitted (on the next tick): reported to the device's own
    // 'error' listeners, if any, and never thrown from a timer.
    server.on('error', (e) => { if (this.listenerCount('error') > 0) this.emit('error', e); });
    server.on('drop', () => { this.stats.doorbellRefused++; });
    server.maxConnections = this.maxDoorbell;
    // exclusive: in a cluster worker, a listen without it is the primary's (over IPC, later),
    // and this process's doorbell must be its own, bound now.
    server.listen({ path: entryPath('ism', bell), exclusive: true }); // binds at once; a failure leaves it not listening
    if (!server.listening) {
      server.close();
      throw new IsmError('EADDRNOTAVAIL', `cannot listen for doorbell connections at ${bell}`);
    }
    server.unref();
    return server;
  }

  /**
   * Peers find this device through its registry entry and its doorbell socket. If the runtime
   * directory was removed under us (a tmp cleaner), make both again, or every handshake from
   * now on would fall back to TCP. Checked at most once a second.
   */
  ensureRegistered(): void {
    const now = performance.now();
    if (this.closed || now - this.entryCheckedAt < 1000) return;
    this.entryCheckedAt = now;
    restoreEntry('ism', this.entryName, this.entry);
    if (!fs.existsSync(entryPath('ism', this.entry.bell!))) {
      // Connected peers keep their doorbell connections; new ones need the file. Close first:
      // closing unlinks the socket's path, which would be the new socket's.
      this.server.close();
      this.server = this.listenDoorbell(this.entry.bell!);
    }
  }

  static open(opts: IsmOpenOptions = {}): IsmDevice {
    const slots = opts.slots ?? DEFAULT_SLOTS;
    if (!Number.isInteger(slots) || slots < 1 || slots > MAX_SLOTS) throw new IsmError('EINVAL', `slots must be 1..2^20, got ${slots}`);
    const max = opts.maxDoorbellConnections ?? DEFAULT_MAX_DOORBELL_CONNECTIONS;
    if (!Number.isInteger(max) || max < 1) throw new IsmError('EINVAL', `maxDoorbellConnections must be a positive integer, got ${max}`);
    return new IsmDevice(slots, max);
  }

  /** @internal Open doorbell connections (peers that rang this device recently). */
  doorbellConnections(): Promise<number> {
    return new Promise((resolve, reject) => this.server.getConnections((err, n) => (err ? reject(err) : resolve(n))));
  }

  /**
   * The proof a Proposal from this device carries for one TCP connection: HMAC-SHA256 with
   * this device's key over the GID and the connection (see src/smc/peer-proof.ts), first
   * PROOF_LEN bytes.
   */
  proposalProof(connection: string): Buffer {
    return proof(this.key, this.gid, connection);
  }

  /**
   * Does a Proposal naming gid come from that device? True only if gid's registry entry (a
   * file of this user, in this user's owner-only directory) is of a live process in this
   * network and pid namespace, and the Proposal's proof is the HMAC with that entry's key over
   * this connection. Counted when not.
   */
  verifyProposal(gid: bigint, connection: string, given: Uint8Array | undefined): boolean {
    const e = this.peers.get(gid)?.entry ?? this.liveEntry(gid);
    const ok = !!e && typeof e.key === 'string' && e.key.length === 64 && given !== undefined && given.length === PROOF_LEN
      && timingSafeEqual(proof(Buffer.from(e.key, 'hex'), gid, connection), given);
    if (!ok) this.stats.proposalsRefused++;
    return ok;
  }

  /** gid's registry entry, if it is of a live process (and thread) this one can reach (same namespaces). */
  private liveEntry(gid: bigint): DeviceEntry | undefined {
    const e = readEntry<DeviceEntry>(entryPath('ism', deviceEntryName(gid)));
    return e && e.gid === hex64(gid) && e.netns === netNamespace() && entryAlive(e) === true ? e : undefined;
  }

  query(): IsmDeviceInfo {
    return { gid: this.gid, chid: this.chid, pid: process.pid, dmbs: this.dmbs.size, peers: this.peers.size, stats: { ...this.stats } };
  }

  registerDmb(size: number): Dmb {
    if (this.closed) throw new IsmError('ENODEV', 'ism device is closed');
    if (!Number.isInteger(size) || size < 64 || size > 1 << 30) throw new IsmError('EINVAL', `DMB size must be an integer from 64 B to 1 GiB, got ${shown(size)}`);
    const token = randomToken();
    const index = this.table.freeSlotFor(token);
    if (index < 0) throw new IsmError('ENOSPC', `all ${this.table.slots} DMB slots are in use`);
    const { fd, mapping } = createSealedMemfd(`softrdma-dmb-${hex64(token)}`, size);
    const dmb = new Dmb(this, token, index, size, fd, mapping);
    this.table.set(index, fd, size);
    this.table.setToken(index, token); // last: an attacher sees a slot only once it is complete
    this.dmbs.set(index, dmb);
    this.stats.dmbsRegistered++;
    return dmb;
  }

  unregisterDmb(dmb: Dmb): void {
    if (!(dmb instanceof Dmb)) throw new IsmError('EINVAL', `unregisterDmb needs a Dmb, got ${String(dmb)}`);
    if (this.dmbs.get(dmb.index) !== dmb) return;
    this.dmbs.delete(dmb.index);
    this.table.setToken(dmb.index, TOMBSTONE);
    dmb.release();
  }

  /**
   * @internal Why the DMB a peer names cannot be a new connection's to write into, or undefined:
   * it is attached here already (a DMB has one writer), or it is one of this device's own (the
   * peer named our GID) that was not handed out for a connection with ourselves. SMC's handshake
   * asks before it attaches.
   */
  dmbTaken(peerGid: bigint, token: bigint): string | undefined {
    if (peerGid === this.gid) {
      const own = this.dmbs.get(this.table.find(token));
      if (!own || own.token !== token || own.forPeer !== this.gid) return 'a DMB of this device not handed out for a connection with itself';
    }
    const peer = this.peers.get(peerGid);
    if (peer) for (const r of peer.attached) if (r.token === token) return 'a DMB attached here already, for another connection';
    return undefined;
  }

  /** Map a peer's DMB by token. Fails with ENODEV (no such device), ENOENT (no such token). */
  attachDmb(peerGid: bigint, token: bigint): RemoteDmb {
    if (this.closed) throw new IsmError('ENODEV', 'ism device is closed');
    if (typeof peerGid !== 'bigint') throw new IsmError('EINVAL', `peerGid must be a bigint, got ${shown(peerGid)}`);
    if (typeof token !== 'bigint') throw new IsmError('EINVAL', `token must be a bigint, got ${shown(token)}`);
    const peer = this.peerDevice(peerGid);
    let index: number, size: number, mapping: Mapping | undefined;
    try {
      index = peer.table.find(token);
      if (index < 0) throw new IsmError('ENOENT', `peer ${hex64(peerGid)} has no DMB with token ${hex64(token)}`);
      size = peer.table.size(index);
      mapping = peer.unpark(token, index, size);
      if (mapping) this.stats.attachReused++;
      else mapping = mapPeerMemfd(peer.entry.pid, peer.table.fd(index), `softrdma-dmb-${hex64(token)}`, size);
    } catch (err) {
      // A peer just mapped for this attach, and used by nothing, lingers out as after its last
      // DMB (it kept its page mapped, and answered reachable(), for the life of the process).
      peer.ref();
      peer.unref();
      throw err;
    }
    peer.ref();
    this.stats.dmbsAttached++;
    const remote = new RemoteDmb(peer, token, index, size, mapping);
    peer.attached.add(remote);
    return remote;
  }

  /**
   * Is there a live device with this GID on this host (same user, same network and pid
   * namespace)? A peer already mapped is answered from memory; its death shows on the connection.
   */
  reachable(gid: bigint): boolean {
    return this.peers.has(gid) || this.liveEntry(gid) !== undefined;
  }

  /** @internal */
  forgetPeer(p: PeerDevice): void {
    if (this.peers.get(p.gid) === p) this.peers.delete(p.gid);
  }

  private peerDevice(gid: bigint): PeerDevice {
    const known = this.peers.get(gid);
    if (known) return known;
    let file: string;
    try {
      file = entryPath('ism', deviceEntryName(gid));
    } catch (err) {
      throw new IsmError('ENODEV', `no ism device ${hex64(gid)} reachable: ${(err as Error).message}`);
    }
    const e = readEntry<DeviceEntry>(file);
    if (!e || e.gid !== hex64(gid)) throw new IsmError('ENODEV', `no ism device ${hex64(gid)} on this host`);
    if (e.netns !== netNamespace()) throw new IsmError('ENODEV', `ism device ${hex64(gid)} is in another network namespace`);
    const alive = entryAlive(e);
    // Only a process that can judge the pid (same pid namespace) may remove the entry.
    if (alive === undefined) throw new IsmError('ENODEV', `ism device ${hex64(gid)} is in another pid namespace`);
    if (!alive) {
      removeDeadEntry(file, e);
      throw new IsmError('ENODEV', `ism device ${hex64(gid)} is gone (pid ${e.pid}${e.tid === undefined ? '' : ` thread ${e.tid}`} exited)`);
    }
    // The entry is the peer's word (the same user's, but any of its processes): a doorbell is a
    // socket file of the ism directory by the name the runtime directory gives one (as
    // removeDeadEntry requires), never a path to some other socket; the slot count is one a
    // device may have (open()'s bounds), checked before the page is mapped by it.
    if (typeof e.bell !== 'string' || !BELL_NAME.test(e.bell)) throw new IsmError('ENODEV', `ism device ${hex64(gid)} has no doorbell (or a malformed one)`);
    if (!Number.isInteger(e.slots) || e.slots < 1 || e.slots > MAX_SLOTS) throw new IsmError('ENODEV', `ism device ${hex64(gid)} has a malformed entry (slots ${String(e.slots)})`);
    const size = PAGE_HEADER + e.slots * SLOT_SIZE;
    const page = mapPeerMemfd(e.pid, e.pageFd, `softrdma-ism-${hex64(gid)}`, size);
    const hdr = new DataView(page.buffer);
    if (hdr.getUint32(0, true) !== PAGE_MAGIC || hdr.getBigUint64(16, true) !== gid) {
      releaseMapping(page);
      throw new IsmError('ENODEV', `ism device ${hex64(gid)} has a malformed device page`);
    }
    let p: PeerDevice;
    try {
      p = new PeerDevice(this, gid, e, page);
    } catch (err) {
      releaseMapping(page);
      throw err;
    }
    this.peers.set(gid, p);
    return p;
  }

  private onDoorbellConnection(s: net.Socket): void {
    if (this.closed) { s.destroy(); return; }
    s.setNoDelay(true);
    s.unref(); // a doorbell never keeps the process alive
    this.doorbells.add(s);
    s.on('close', () => this.doorbells.delete(s));
    let carry: Buffer | undefined;
    const rings = (chunk: Buffer) => {
      const buf = carry ? Buffer.concat([carry, chunk]) : chunk;
      const whole = buf.length - (buf.length % 4);
      for (let off = 0; off < whole; off += 4) {
        const ix = buf.readUInt32LE(off);
        const dmb = this.dmbs.get(ix);
        if (!dmb) { this.stats.badSignals++; continue; }
        this.stats.signalsReceived++;
        // A throwing consumer must not cost the rest of the chunk's rings (their writers think
        // them heard): thrown again on its own tick.
        try { dmb.onSignal?.(); } catch (err) { process.nextTick(() => { throw err; }); }
      }
      carry = whole < buf.length ? Buffer.from(buf.subarray(whole)) : undefined;
    };
    // A doorbell is rung once per wakeup, on the path of every message while the CPUs are busy:
    // read it as node:net's onread option does (libuv reads into one buffer of ours, the
    // callback gets the count; no Buffer, no stream push, no 'data' event per ring). An
    // accepted socket cannot be given onread, so its slots are set as the option would have.
    if (!readIntoOwnBuffer(s, (n, buf) => rings(buf.subarray(0, n)))) s.on('data', rings);
    s.on('error', () => {});
  }

  /** Whether close() ran (or the process or thread is exiting): nothing can be registered or attached. */
  get isClosed(): boolean {
    return this.closed;
  }

  /**
   * Close the device, as Linux's ISM device going away: the SMC-D connections over it abort
   * (their sockets get an error, their peers ECONNRESET), and its DMBs, its mappings of peer
   * DMBs, its descriptors, its registry entry and its doorbell go. A Dmb or RemoteDmb used
   * afterwards is closed or detached; a `bytes` view kept from before reads zeros. If this was
   * the process's default device, defaultIsmDevice() opens a new one next time.
   */
  close(): void {
    this.shutdown(false);
  }

  private shutdown(atExit: boolean): void {
    if (this.closed) return;
    this.closed = true;
    if (shared === this) shared = undefined;
    process.removeListener('exit', this.onExit);
    const keepMemory = atExit && isMainThread;
    if (!keepMemory) {
      // Users first, while the memory is still mapped: a connection writes its abort into the
      // peer's DMB, and lets go of its views. It may return its DMB meanwhile (hence the copy).
      for (const d of [...this.dmbs.values()]) {
        const closing = d.onDeviceClose;
        d.onDeviceClose = undefined;
        try { closing?.(atExit); } catch (err) { process.nextTick(() => { throw err; }); }
      }
    }
    for (const d of this.dmbs.values()) d.release(keepMemory);
    this.dmbs.clear();
    if (!keepMemory) for (const p of [...this.peers.values()]) p.close(true);
    this.server.close();
    for (const s of this.doorbells) s.destroy();
    this.doorbells.clear();
    const entry = openEntryPath('ism', this.entryName);
    if (entry) removeEntry(entry);
    if (keepMemory) return;
    releaseMapping(this.page);
    fs.closeSync(this.pageFd);
    // A worker thread's last device: its mapping ledger (libc.ts) has nothing left to name.
    if (!isMainThread) releaseLedgerIfEmpty();
  }
}

/**
 * Is the process (and thread) that wrote an entry alive: as liveness(), and for an entry of a
 * live process that names its thread, whether that thread still runs (a worker thread ended,
 * or was terminated without running its exit hooks). undefined: this process cannot tell.
 */
function entryAlive(e: DeviceEntry): boolean | undefined {
  const alive = liveness(e);
  if (alive !== true || e.tid === undefined) return alive;
  if (!Number.isSafeInteger(e.tid) || e.tid <= 0) return alive;
  // An entry without the thread's start time (written before it was recorded): the tid alone.
  if (typeof e.tidStart !== 'string') return fs.existsSync(`/proc/${e.pid}/task/${e.tid}`);
  return isAlive(e.pid, e.tidStart, e.tid); // not a later thread given the same tid
}

/** A dead device's entry and its doorbell socket (if the entry names one as we name them). */
function removeDeadEntry(file: string, e: DeviceEntry): void {
  removeEntry(file);
  if (typeof e.bell === 'string' && BELL_NAME.test(e.bell)) {
    const bell = openEntryPath('ism', e.bell);
    if (bell) removeEntry(bell);
  }
}

const ENTRY_NAME = /^[0-9a-f]{16}\.json$/;
const BELL_NAME = /^[0-9a-f]{16}\.sock$/;
/** writeEntry's temporary file: <entry>.<pid>.tmp (possibly with the pid namespace's tag after the pid). */
const TMP_NAME = /^[0-9a-f]{16}\.json\.(\d+)(?:\.(\d+))?\.tmp$/;
/** A temporary entry file older than this was left by a writer that died before its rename. */
const TMP_STALE_MS = 60_000;

/**
 * Remove what processes (and worker threads) that died without closing their devices left in
 * the ism directory: entries whose writer is dead (judged as peerDevice() judges them: only
 * entries of this pid namespace are judged, others are left alone), with their doorbell
 * sockets, and temporary files of a writeEntry that never got to its rename (the writer's pid
 * gone from this namespace, and the file over a minute old). Run as a device opens; never
 * fails the open.
 */
function sweepDeadEntries(): void {
  let dir: string;
  let names: string[] | undefined;
  try {
    dir = subdir('ism');
    names = listEntries(dir);
  } catch {
    return;
  }
  if (!names) return;
  const nsTag = pidNamespaceKnown() ? pidNamespaceTag() : undefined;
  const now = Date.now();
  for (const name of names) {
    try {
      if (ENTRY_NAME.test(name)) {
        const file = `${dir}/${name}`;
        const e = readEntry<DeviceEntry>(file);
        if (e && typeof e.pid === 'number' && entryAlive(e) === false) removeDeadEntry(file, e);
        continue;
      }
      const tmp = TMP_NAME.exec(name);
      if (!tmp) continue;
      if (tmp[2] !== undefined && tmp[2] !== nsTag) continue; // another pid namespace's
      if (fs.existsSync(`/proc/${tmp[1]}`)) continue;
      const file = `${dir}/${name}`;
      const st = fs.lstatSync(file);
      if (st.isFile() && now - st.mtimeMs > TMP_STALE_MS) removeEntry(file);
    } catch {
      // Gone meanwhile, or unreadable: the next sweep looks again.
    }
  }
}

function proof(key: Buffer, gid: bigint, connection: string): Buffer {
  return createHmac('sha256', key).update(`softrdma-smcd-proposal-v1 ${hex64(gid)} ${connection}`).digest().subarray(0, PROOF_LEN);
}

/** A memfd of `size` bytes, sealed against resizing, and its shared mapping. */
function createSealedMemfd(name: string, size: number): { fd: number; mapping: Mapping } {
  const fd = memfdCreate(name);
  try {
    fs.ftruncateSync(fd, size);
    sealSize(fd);
    return { fd, mapping: mapShared(fd, size) };
  } catch (e) {
    fs.closeSync(fd);
    throw e;
  }
}

/** Map another process's memfd (checked by openPeerMemfd); the fd is closed again at once. */
function mapPeerMemfd(pid: number, remoteFd: number, name: string, size: number): Mapping {
  const fd = openPeerMemfd(pid, remoteFd, name, size);
  try {
    return mapShared(fd, size);
  } finally {
    fs.closeSync(fd); // the mapping keeps the memory; the fd is not needed any more
  }
}

/**
 * Open another process's memfd and check it is the one we were told about: the name carries
 * the token (so a recycled fd number cannot be mistaken for it), the size matches, and the
 * size is sealed (so the owner cannot shrink it under our mapping and crash us with SIGBUS).
 *
 * The peer's fd number may have been reused for anything by the time we look (a FIFO, a
 * terminal, a device), so its target is not opened until it has been checked
 * (libc.ts openProcFdChecked: an O_PATH descriptor first, which follows the /proc magic link,
 * as O_NOFOLLOW would not, and opens nothing; checked to be a regular file with the memfd's
 * name; then that very file opened read-write, O_NOCTTY and O_NONBLOCK).
 */
function openPeerMemfd(pid: number, remoteFd: number, name: string, size: number): number {
  let opened: ReturnType<typeof openProcFdChecked>;
  try {
    opened = openProcFdChecked(`/proc/${pid}/fd/${remoteFd}`, `/memfd:${name} (deleted)`);
  } catch (e) {
    throw new IsmError((e as NodeJS.ErrnoException).code ?? 'EACCES', `cannot open memfd ${remoteFd} of pid ${pid}: ${(e as Error).message}`);
  }
  if (!('fd' in opened)) {
    throw new IsmError('ENOENT', opened.notFile ? `pid ${pid} fd ${remoteFd} (${opened.named}) is not a regular file` : `pid ${pid} fd ${remoteFd} is ${opened.named}, not ${name}`);
  }
  const fd = opened.fd;
  try {
    const st = fs.fstatSync(fd);
    if (!st.isFile()) throw new IsmError('ENOENT', `${name} is not a regular file`);
    if (st.size !== size) throw new IsmError('EINVAL', `${name} is ${st.size} bytes, expected ${size}`);
    const s = seals(fd);
    if ((s & (F_SEAL_SHRINK | F_SEAL_GROW)) !== (F_SEAL_SHRINK | F_SEAL_GROW)) throw new IsmError('EPERM', `${name} is not sealed against resizing`);
  } catch (e) {
    fs.closeSync(fd);
    throw e;
  }
  return fd;
}

let shared: IsmDevice | undefined;
/** The process's ism device if it was opened (for counters; opens nothing). */
export function openedIsmDevice(): IsmDevice | undefined {
  return shared;
}

/** The process's ism device, opened on first use (and again after it was closed). */
export function defaultIsmDevice(): IsmDevice {
  shared ??= IsmDevice.open();
  shared.ensureRegistered();
  return shared;
}
