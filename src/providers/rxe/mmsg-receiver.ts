// Receiving a UDP socket's datagrams with recvmmsg(2) into memory that is reused, instead of
// node:dgram's 'message' events.
//
// node:dgram gives every datagram a buffer of its own (libuv allocates 64 KiB, Node shrinks it
// to the datagram), which V8 counts as external memory until a garbage collection frees it.
// At rxe's packet rates (a GRO run of 64 KiB every 100 us) that memory grows much faster than
// the JS heap, and V8 answers with full mark-compacts every few tens of milliseconds: the
// receiver of `write_bw -q 16` spent more time collecting garbage than moving data (see
// docs/rxe.md#limits-and-memory). Here the kernel writes a batch of up to BATCH datagrams into
// one native area allocated once per socket, the packets are views of it, and nothing per
// datagram is external memory.
//
// Readiness comes from libuv itself: a uv_poll handle on a dup of the socket's fd in Node's
// main loop (libuv's symbols are in the node process for addons; koffi calls them). Its
// callback runs outside Node's callback scope, where microtasks would wait for some later
// callback, so it only schedules the read with setImmediate (the same loop turn's check
// phase). node:dgram's own reading is stopped; the socket still sends as before.
//
// Packets are views of the reused area: they are valid until the next batch is read (the next
// check-phase callback, or a busy poller's readNow once this batch's delivery has returned).
// Every consumer in rxe copies what it keeps during delivery (payloads into MRs, MADs, GRH
// addresses). Worker threads and other platforms keep node:dgram's path, as does a device
// opened with recvmmsg: false (SOFTRDMA_RXE_RECVMMSG=0).

import type { Socket } from 'node:dgram';
import fs from 'node:fs';
import { isMainThread } from 'node:worker_threads';
import koffi from 'koffi';
import { dgramHandle } from './sockopt.js';
import { ipv6String } from '../../abi/inet.js';
import { libcLibrary } from '../../sys/libc.js';

/** Datagrams per recvmmsg call; each slot holds the largest (a 64 KiB GRO run). */
const BATCH = 32;
const SLOT_BYTES = 65536;
/** struct mmsghdr on LP64 Linux: msghdr (56 bytes) then msg_len; 64 with padding (also mmsg-sender.ts). */
export const MMSG_BYTES = 64;
export const IOV_BYTES = 16;
/** sockaddr_in6 is 28 bytes. */
export const NAME_BYTES = 32;
/** One cmsg with an int: CMSG_SPACE(4) = 16 + 8. Room for two in case the kernel adds one. */
const CONTROL_BYTES = 48;
const SOL_UDP = 17, UDP_GRO = 104;
export const AF_INET = 2, AF_INET6 = 10;
const MSG_DONTWAIT = 0x40;
const UV_READABLE = 1;
export const EAGAIN = 11, EINTR = 4;

export interface MmsgHandlers {
  /** One datagram: a view of the reused area, its sender, and its GRO segment size (0: one packet). */
  datagram(msg: Buffer, address: string, port: number, groSegment: number): void;
  /** A recvmmsg call returned datagrams (before the first of them). */
  batch(): void;
  /** A failed read, or a datagram larger than a slot (dropped). */
  error(): void;
}

interface Uv {
  loop: unknown;
  pollSize: number;
  pollInit: (loop: unknown, h: unknown, fd: number) => number;
  pollStart: (h: unknown, events: number, cb: unknown) => number;
  pollStop: (h: unknown) => number;
  close: (h: unknown, cb: unknown) => void;
  ref: (h: unknown) => void;
  unref: (h: unknown) => void;
  recvmmsg: (fd: number, vec: unknown, vlen: number, flags: number, timeout: null) => number;
  dup: (fd: number) => number;
  pollCbType: koffi.IKoffiCType;
  closeCbType: koffi.IKoffiCType;
}

let uv: Uv | null | undefined;

/** A batch is being delivered, by any receiver (all on the main thread): no other read until it is done. */
let delivering = false;

function bindUv(): Uv | null {
  if (uv !== undefined) return uv;
  uv = null;
  if (process.platform !== 'linux' || !isMainThread) return uv;
  if (process.arch !== 'x64' && process.arch !== 'arm64') return uv; // the layouts above are LP64's
  try {
    // libuv's functions are the node process's own; recvmmsg and dup are the C library's.
    const self = koffi.load(null as unknown as string);
    const libc = libcLibrary();
    // The handle as an integer: a pointer argument would cost an External per call.
    const pollCbType = koffi.proto('void softrdma_uv_poll_cb(uintptr_t handle, int status, int events)');
    const closeCbType = koffi.proto('void softrdma_uv_close_cb(void *handle)');
    const UV_POLL = 8;
    uv = {
      loop: (self.func('void *uv_default_loop()') as () => unknown)(),
      pollSize: Number((self.func('size_t uv_handle_size(int)') as (t: number) => number | bigint)(UV_POLL)),
      pollInit: self.func('int uv_poll_init(void *, void *, int)') as Uv['pollInit'],
      pollStart: self.func('int uv_poll_start(void *, int, softrdma_uv_poll_cb *)') as Uv['pollStart'],
      pollStop: self.func('int uv_poll_stop(void *)') as Uv['pollStop'],
      close: self.func('void uv_close(void *, softrdma_uv_close_cb *)') as Uv['close'],
      ref: self.func('void uv_ref(void *)') as Uv['ref'],
      unref: self.func('void uv_unref(void *)') as Uv['unref'],
      recvmmsg: libc.func('int recvmmsg(int, void *, unsigned int, int, void *)') as Uv['recvmmsg'],
      dup: libc.func('int dup(int)') as Uv['dup'],
      pollCbType,
      closeCbType,
    };
    if (!(uv.pollSize > 0 && uv.pollSize < 4096)) uv = null;
  } catch {
    uv = null;
  }
  return uv;
}

/** Whether sockets can be read with recvmmsg here (main thread, Linux, libuv reachable). */
export function mmsgAvailable(): boolean {
  return bindUv() !== null;
}

export class MmsgReceiver {
  private readonly fd: number;
  private readonly mem: unknown;
  private readonly view: Buffer;
  private readonly handle: unknown;
  private readonly pollCb: koffi.IKoffiRegisteredCallback;
  private closeCb: koffi.IKoffiRegisteredCallback | undefined;
  private scheduled = false;
  private closed = false;
  /** Entries the last recvmmsg filled (their name and control lengths were overwritten). */
  private filled = 0;
  /** The last sender's address (family, bytes) and its string: datagrams come in runs from one peer. */
  private readonly lastName = Buffer.alloc(16);
  private lastLen = 0;
  private lastAddress = '';

  private constructor(private readonly u: Uv, fd: number, private readonly on: MmsgHandlers) {
    this.fd = fd;
    const total = BATCH * (MMSG_BYTES + IOV_BYTES + NAME_BYTES + CONTROL_BYTES + SLOT_BYTES);
    this.mem = koffi.alloc('uint8_t', total);
    this.view = Buffer.from(koffi.view(this.mem, total));
    this.view.fill(0, 0, BATCH * (MMSG_BYTES + IOV_BYTES + NAME_BYTES + CONTROL_BYTES));
    const base = koffi.address(this.mem);
    const v = this.view;
    for (let i = 0; i < BATCH; i++) {
      const m = i * MMSG_BYTES;
      v.writeBigUInt64LE(base + BigInt(this.nameAt(i)), m); // msg_name
      v.writeUInt32LE(NAME_BYTES, m + 8); // msg_namelen
      v.writeBigUInt64LE(base + BigInt(this.iovAt(i)), m + 16); // msg_iov
      v.writeBigUInt64LE(1n, m + 24); // msg_iovlen
      v.writeBigUInt64LE(base + BigInt(this.controlAt(i)), m + 32); // msg_control
      v.writeBigUInt64LE(BigInt(CONTROL_BYTES), m + 40); // msg_controllen
      const iov = this.iovAt(i);
      v.writeBigUInt64LE(base + BigInt(this.slotAt(i)), iov); // iov_base
      v.writeBigUInt64LE(BigInt(SLOT_BYTES), iov + 8); // iov_len
    }
    this.handle = koffi.alloc('uint8_t', u.pollSize);
    this.pollCb = koffi.register(this.onReadable, koffi.pointer(u.pollCbType));
  }

  /**
   * Read `sock`'s datagrams with recvmmsg from now on, or undefined where that is not possible
   * (then nothing changed: the caller keeps listening for 'message').
   */
  static attach(sock: Socket, on: MmsgHandlers): MmsgReceiver | undefined {
    const u = bindUv();
    const h = u && dgramHandle(sock);
    if (!u || !h) return undefined;
    let fd = -1;
    let r: MmsgReceiver | undefined;
    let inLoop = false;
    try {
      fd = u.dup(h.fd);
      if (fd < 0) return undefined;
      r = new MmsgReceiver(u, fd, on);
      if (u.pollInit(u.loop, r.handle, fd) !== 0) throw new Error('uv_poll_init');
      inLoop = true;
      if (u.pollStart(r.handle, UV_READABLE, r.pollCb) !== 0) throw new Error('uv_poll_start');
    } catch {
      // A handle libuv knows is freed through uv_close; one it does not, at once.
      if (r && inLoop) r.close();
      else if (r) r.release(true);
      else if (fd >= 0) fs.closeSync(fd);
      return undefined;
    }
    // node:dgram stops reading: the kernel's queue is ours (its handle stays for sending).
    h.recvStop();
    return r;
  }

  private nameAt(i: number): number { return BATCH * MMSG_BYTES + BATCH * IOV_BYTES + i * NAME_BYTES; }
  private iovAt(i: number): number { return BATCH * MMSG_BYTES + i * IOV_BYTES; }
  private controlAt(i: number): number { return BATCH * (MMSG_BYTES + IOV_BYTES + NAME_BYTES) + i * CONTROL_BYTES; }
  private slotAt(i: number): number { return BATCH * (MMSG_BYTES + IOV_BYTES + NAME_BYTES + CONTROL_BYTES) + i * SLOT_BYTES; }

  /** The poll callback: libuv's, outside Node's callback scope; never throws. */
  private readonly onReadable = (_h: unknown, status: number): void => {
    if (this.closed) return;
    if (status < 0) {
      this.on.error();
      return;
    }
    if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(this.drain);
    }
  };

  /** The poll callback's read: one batch per turn (a full batch asks for another turn). */
  private readonly drain = (): void => {
    this.scheduled = false;
    this.readNow();
  };

  /**
   * Read and deliver one recvmmsg batch now: the poll callback's drain, or a busy poller's
   * read (an empty CQ polled in a spin) without waiting for libuv to report the socket
   * readable. The views of a batch stay valid until the next read: consumers copy what they
   * keep during delivery. Returns the datagrams delivered; 0 when there were none, or when
   * called from inside a delivery, this receiver's or another's (the batch being delivered is
   * views of the area this read would overwrite; and a consumer called during one device's
   * delivery, a CM event listener say, must not see another device's batch delivered in the
   * middle of it).
   */
  readNow(): number {
    if (this.closed || delivering) return 0;
    delivering = true;
    try {
      return this.readBatch();
    } finally {
      delivering = false;
    }
  }

  private readBatch(): number {
    const u = this.u;
    const v = this.view;
    // The kernel wrote the lengths of the entries it filled last time: give them their room back.
    for (let i = 0; i < this.filled; i++) {
      const m = i * MMSG_BYTES;
      v.writeUInt32LE(NAME_BYTES, m + 8);
      v.writeUInt32LE(CONTROL_BYTES, m + 40);
    }
    const n = u.recvmmsg(this.fd, this.mem, BATCH, MSG_DONTWAIT, null);
    this.filled = n > 0 ? n : 0;
    if (n < 0) {
      const e = koffi.errno();
      if (e !== EAGAIN && e !== EINTR) this.on.error();
      return 0;
    }
    if (n === 0) return 0;
    this.on.batch();
    for (let i = 0; i < n && !this.closed; i++) {
      const m = i * MMSG_BYTES;
      const len = v.readUInt32LE(m + 56);
      const flags = v.readInt32LE(m + 48);
      if (flags & 0x20) { this.on.error(); continue; } // MSG_TRUNC: larger than a slot, not a packet of ours
      const name = this.nameAt(i);
      const family = v.readUInt16LE(name);
      const port = v.readUInt16BE(name + 2);
      let address: string;
      if (family === AF_INET) address = this.addressOf(name + 4, 4);
      else if (family === AF_INET6) address = this.addressOf(name + 8, 16);
      else continue;
      const seg = groSegment(v, this.controlAt(i), v.readUInt32LE(m + 40)); // msg_controllen (< 2^32)
      const slot = this.slotAt(i);
      this.on.datagram(v.subarray(slot, slot + len), address, port, seg);
    }
    // A full batch: more may be queued; read it next turn (after this batch's microtasks).
    if (n === BATCH && !this.closed && !this.scheduled) {
      this.scheduled = true;
      setImmediate(this.drain);
    }
    return n;
  }

  private addressOf(off: number, len: 4 | 16): string {
    const v = this.view;
    if (this.lastLen === len && v.compare(this.lastName, 0, len, off, off + len) === 0) return this.lastAddress;
    v.copy(this.lastName, 0, off, off + len);
    this.lastLen = len;
    this.lastAddress = len === 4 ? `${v[off]}.${v[off + 1]}.${v[off + 2]}.${v[off + 3]}` : ipv6String(v.subarray(off, off + 16));
    return this.lastAddress;
  }

  setKeepAlive(on: boolean): void {
    if (this.closed) return;
    if (on) this.u.ref(this.handle);
    else this.u.unref(this.handle);
  }

  /**
   * Stop reading. The dup'd fd closes now (uv_poll_stop has taken it out of epoll), so the
   * socket is gone once node:dgram closes its own fd, as without this reader: a device
   * reopened on the same port right after close must not meet EADDRINUSE. The handle's memory
   * and the area are freed once libuv has let go of the handle (uv_close's callback).
   */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.u.pollStop(this.handle);
    fs.closeSync(this.fd);
    this.closeCb = koffi.register(() => this.release(), koffi.pointer(this.u.closeCbType));
    this.u.close(this.handle, this.closeCb);
  }

  /** Free everything; the fd is already closed when the handle was in libuv's loop. */
  private release(fdOpen = false): void {
    this.closed = true;
    koffi.unregister(this.pollCb);
    // Not from inside the callback that is running: a turn later.
    const cb = this.closeCb;
    if (cb) setImmediate(() => koffi.unregister(cb));
    if (fdOpen) fs.closeSync(this.fd);
    koffi.free(this.handle);
    koffi.free(this.mem);
  }
}

/** The UDP_GRO control message's segment size, or 0 (one packet). */
function groSegment(v: Buffer, at: number, controlLen: number): number {
  let off = 0;
  while (off + 16 <= controlLen) {
    const len = v.readUInt32LE(at + off); // cmsg_len, a size_t (< 2^32)
    if (len < 16 || off + len > controlLen) return 0;
    if (v.readInt32LE(at + off + 8) === SOL_UDP && v.readInt32LE(at + off + 12) === UDP_GRO && len >= 20) return v.readInt32LE(at + off + 16);
    off += (len + 7) & ~7;
  }
  return 0;
}
