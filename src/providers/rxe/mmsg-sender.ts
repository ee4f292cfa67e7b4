// Sending the datagrams of one flush with sendmmsg(2) instead of a node:dgram send each.
//
// The datagrams a flush hands to one socket in a row (an SMC-R message's WRITE and CDC SEND,
// a burst of small messages, ACKs) leave in one system call. (GSO runs stay with node:dgram:
// link.ts flush.) Measured
// between two namespaces on a veth, both ends busy-polling: two datagrams each way took a
// 20.2 us round trip by sendmmsg against 25.3 us by two node:dgram sends on connected sockets
// (bench/RESULTS.md, 2026-12-05). node:dgram's send is a SendWrap, a lookup and a
// uv_udp_try_send per datagram; here it is one call per batch through koffi, and the kernel
// has the packets when the call returns.
//
// Small parts (headers, tails, short payloads) are copied into a native staging area; large
// ones (payload views of registered memory) are given to the kernel by address, as node:dgram
// does: the kernel copies them during the call, so they may change once it has returned.
//
// Ordering. node:dgram hands a datagram to the kernel at once unless the socket is still
// binding or its send buffer was full (then libuv queues it and sends it later). A socket that
// node:dgram may hold datagrams for is never sent to directly: one that is not bound yet, and
// one to which a datagram this sender could not place (EAGAIN) went by node:dgram, until that
// datagram's callback says it left. A send the kernel refuses for another reason is what
// node:dgram reports as an 'error' event on the socket: emitted the same way here, and the
// batch goes on with the next datagram (a lost packet, as RC sees it).

import type { Socket } from 'node:dgram';
import koffi from 'koffi';
import { isIPv4 } from 'node:net';
import { libcLibrary } from '../../sys/libc.js';
import { ipv4Bytes, ipv6Bytes } from '../../abi/inet.js';

/** Datagrams per sendmmsg call (UIO_MAXIOV caps the call at 1024). */
const MAX_MSGS = 64;
/** iovecs for all the datagrams of one call (a GSO run of 64 packets has ~3 parts each). */
const MAX_IOVS = 512;
/**
 * Parts shorter than this are copied into the staging area (30 ns for up to 1 KiB); longer
 * ones are sent from where they are, by the address of their ArrayBuffer (found once per
 * buffer: koffi.address costs ~160 ns, too much for every packet of a GSO run).
 */
const COPY_BELOW = 256;
const COPY_BYTES = 16 << 10;
/** struct mmsghdr on LP64 Linux: msghdr (56 bytes) then msg_len; 64 with padding. */
const MMSG_BYTES = 64;
const IOV_BYTES = 16;
/** sockaddr_in6 is 28 bytes. */
const NAME_BYTES = 32;
const AF_INET = 2, AF_INET6 = 10;
const EAGAIN = 11, EINTR = 4, ENOBUFS = 105;

const MSGS_AT = 0;
const IOVS_AT = MSGS_AT + MAX_MSGS * MMSG_BYTES;
const NAMES_AT = IOVS_AT + MAX_IOVS * IOV_BYTES;
const COPY_AT = NAMES_AT + MAX_MSGS * NAME_BYTES;
const AREA_BYTES = COPY_AT + COPY_BYTES;

/** The system calls, a seam for tests (errors that loopback never returns). */
export interface SendSys {
  /** sendmmsg(fd, vec, vlen, 0): the count sent, or -1 with errno(). */
  sendmmsg(fd: number, vec: number, vlen: number): number;
  errno(): number;
}

let libcSys: SendSys | null | undefined;

/** The C library's sendmmsg, or null where it cannot be called (not Linux on a 64-bit CPU). */
export function bindLibc(): SendSys | null {
  if (libcSys !== undefined) return libcSys;
  libcSys = null;
  if (process.platform !== 'linux' || (process.arch !== 'x64' && process.arch !== 'arm64')) return libcSys; // LP64 layouts
  try {
    // The vector as an integer: an address inside the area (a retry starts past what was sent).
    const fn = libcLibrary().func('int sendmmsg(int, uintptr_t, unsigned int, int)') as (fd: number, vec: number, vlen: number, flags: number) => number;
    libcSys = { sendmmsg: (fd, vec, vlen) => fn(fd, vec, vlen, 0), errno: () => koffi.errno() };
  } catch {
    libcSys = null;
  }
  return libcSys;
}

/** node:dgram's per-socket state (its `handle` is null once closed), found once per socket. */
interface DgramState { handle: { fd?: number } | null; bindState: number; queue: unknown }
/** node:dgram's BIND_STATE_BOUND. */
const BOUND = 2;
interface SocketState { dgram: DgramState | undefined; fd: number; heldByDgram: number }

function dgramState(sock: Socket): DgramState | undefined {
  for (const sym of Object.getOwnPropertySymbols(sock)) {
    const s = (sock as unknown as Record<symbol, unknown>)[sym];
    if (s && typeof s === 'object' && 'handle' in s && 'bindState' in s) return s as DgramState;
  }
  return undefined;
}

let shared: MmsgSender | null | undefined;

interface Staged { parts: Buffer[]; to: string; port: number; onSent: (() => void) | undefined }

export class MmsgSender {
  private readonly mem: unknown;
  private readonly view: Buffer;
  /** The staging area's address, as a number (user-space addresses are below 2^53). */
  private readonly base: number;
  private readonly sockets = new WeakMap<Socket, SocketState>();
  /** ArrayBuffers' addresses (their memory does not move: V8 keeps a backing store in place). */
  private readonly buffers = new WeakMap<ArrayBufferLike, number>();
  /** The socket whose datagrams are staged, and what they are (for a fallback and callbacks). */
  private sock: Socket | undefined;
  private state: SocketState | undefined;
  private readonly staged: Staged[] = [];
  private iovs = 0;
  private copied = 0;
  /** The destination last written as a sockaddr, per family: datagrams go in runs to one peer. */
  private lastTo = '';
  private readonly lastName = Buffer.alloc(NAME_BYTES);
  private lastNameLen = 0;
  /** Datagrams sent, system calls made, datagrams node:dgram took instead (counters). */
  readonly stats = { datagrams: 0, calls: 0, fallbacks: 0, errors: 0 };

  private constructor(private readonly sys: SendSys) {
    this.mem = koffi.alloc('uint8_t', AREA_BYTES);
    this.view = Buffer.from(koffi.view(this.mem, AREA_BYTES));
    this.view.fill(0, 0, COPY_AT);
    this.base = Number(koffi.address(this.mem));
  }

  /**
   * The thread's sender, or undefined where sendmmsg cannot be called (then node:dgram sends
   * everything). One serves every device: a flush stages and commits within one call.
   */
  static shared(): MmsgSender | undefined {
    if (shared === undefined) {
      const s = bindLibc();
      shared = s ? new MmsgSender(s) : null;
    }
    return shared ?? undefined;
  }

  /** A sender of its own over the given system calls (tests); free() it after. */
  static withSys(sys: SendSys): MmsgSender {
    return new MmsgSender(sys);
  }

  free(): void {
    if (this === shared) return;
    koffi.free(this.mem);
  }

  /**
   * Stage one datagram (its parts, in order) for `sock`, to (to, port). What is staged for
   * another socket is sent first. Returns false when this datagram must go by node:dgram (the
   * socket is not bound, is closed, or node:dgram may hold datagrams for it): then nothing of
   * it was taken, and what was staged before has been sent.
   */
  add(sock: Socket, parts: Buffer[], to: string, port: number, onSent?: () => void): boolean {
    if (sock !== this.sock) {
      this.commit();
      const st = this.stateOf(sock);
      const d = st.dgram;
      const fd = d?.handle?.fd;
      // Not bound yet, or node:dgram holds datagrams for it (queued while it was binding, or
      // after a full send buffer): those must leave first.
      if (fd === undefined || fd < 0 || d!.bindState !== BOUND || d!.queue !== undefined || st.heldByDgram > 0) return false;
      st.fd = fd;
      this.sock = sock;
      this.state = st;
    } else if (this.state!.dgram?.handle == null) {
      // Closed since the last datagram (a close from inside a callback): node:dgram says how.
      this.commit();
      return false;
    }
    let need = 0, copy = 0;
    for (const b of parts) {
      if (b.length < COPY_BELOW) copy += b.length;
      need++;
    }
    if (this.staged.length === MAX_MSGS || this.iovs + need > MAX_IOVS || this.copied + copy > COPY_BYTES) {
      this.commit();
      this.sock = sock;
      this.state = this.stateOf(sock);
    }
    const i = this.staged.length;
    const v = this.view;
    const m = MSGS_AT + i * MMSG_BYTES;
    const name = NAMES_AT + i * NAME_BYTES;
    const nameLen = this.writeName(name, to, port);
    if (nameLen === 0) {
      // An address written with a zone (fe80::1%eth0): node:dgram resolves those.
      this.commit();
      return false;
    }
    const iov0 = this.iovs;
    // Parts copied one after another share an iovec.
    let runStart = -1, runLen = 0;
    const endRun = () => {
      if (runStart < 0) return;
      this.writeIov(this.iovs++, this.base + COPY_AT + runStart, runLen);
      runStart = -1;
      runLen = 0;
    };
    for (const b of parts) {
      if (b.length === 0) continue;
      if (b.length < COPY_BELOW) {
        if (runStart < 0) runStart = this.copied;
        b.copy(v, COPY_AT + this.copied);
        this.copied += b.length;
        runLen += b.length;
      } else {
        endRun();
        this.writeIov(this.iovs++, this.addressOf(b), b.length);
      }
    }
    endRun();
    writeAddr(v, m, this.base + name); // msg_name
    v.writeUInt32LE(nameLen, m + 8); // msg_namelen
    writeAddr(v, m + 16, this.base + IOVS_AT + iov0 * IOV_BYTES); // msg_iov
    writeAddr(v, m + 24, this.iovs - iov0); // msg_iovlen
    this.staged.push({ parts, to, port, onSent });
    return true;
  }

  /** Send what is staged. onSent callbacks run on a microtask (the kernel has the datagrams). */
  commit(): void {
    const n = this.staged.length;
    const sock = this.sock, st = this.state;
    this.sock = undefined;
    this.state = undefined;
    if (n === 0) return;
    const staged = this.staged.splice(0, n);
    this.iovs = 0;
    this.copied = 0;
    let done = 0;
    let sent: Array<() => void> | undefined;
    while (done < n) {
      const r = this.sys.sendmmsg(st!.fd, this.base + MSGS_AT + done * MMSG_BYTES, n - done);
      this.stats.calls++;
      if (r > 0) {
        for (let k = done; k < done + r; k++) if (staged[k]!.onSent) (sent ??= []).push(staged[k]!.onSent!);
        this.stats.datagrams += r;
        done += r;
        continue;
      }
      const e = this.sys.errno();
      if (e === EINTR) continue;
      if (e === EAGAIN || e === ENOBUFS) {
        // The send buffer is full: node:dgram queues the rest in libuv, in order, and the
        // socket is node:dgram's until the last of them has left.
        for (let k = done; k < n; k++) {
          const s = staged[k]!;
          st!.heldByDgram++;
          this.stats.fallbacks++;
          const cb = s.onSent;
          sock!.send(s.parts, s.port, s.to, () => { st!.heldByDgram--; cb?.(); });
        }
        break;
      }
      // Refused (an nftables drop answers EPERM, say): that datagram is lost, as node:dgram
      // reports it, and the batch goes on.
      this.stats.errors++;
      if (sock!.listenerCount('error') > 0) {
        const err = Object.assign(new Error(`sendmmsg errno ${e}`), { errno: -e, syscall: 'send' });
        sock!.emit('error', err);
      }
      done++;
    }
    if (sent) queueMicrotask(() => { for (const f of sent!) f(); });
  }

  private stateOf(sock: Socket): SocketState {
    let st = this.sockets.get(sock);
    if (!st) this.sockets.set(sock, st = { dgram: dgramState(sock), fd: -1, heldByDgram: 0 });
    return st;
  }

  /** Where b's bytes are: its ArrayBuffer's address (found once per buffer) plus its offset. */
  private addressOf(b: Buffer): number {
    const ab = b.buffer;
    let a = this.buffers.get(ab);
    if (a === undefined) this.buffers.set(ab, a = Number(koffi.address(new Uint8Array(ab))));
    return a + b.byteOffset;
  }

  private writeIov(k: number, addr: number, len: number): void {
    const at = IOVS_AT + k * IOV_BYTES;
    writeAddr(this.view, at, addr);
    writeAddr(this.view, at + 8, len);
  }

  /** A sockaddr for (to, port) at `at`; returns its length. */
  private writeName(at: number, to: string, port: number): number {
    const v = this.view;
    if (to !== this.lastTo) {
      if (to.includes('%')) return 0;
      const n = this.lastName;
      n.fill(0);
      if (isIPv4(to)) {
        n.writeUInt16LE(AF_INET, 0);
        ipv4Bytes(to).copy(n, 4);
        this.lastNameLen = 16;
      } else {
        n.writeUInt16LE(AF_INET6, 0);
        ipv6Bytes(to).copy(n, 8);
        this.lastNameLen = 28;
      }
      this.lastTo = to;
    }
    this.lastName.copy(v, at, 0, this.lastNameLen);
    v.writeUInt16BE(port, at + 2);
    return this.lastNameLen;
  }
}

/** A 64-bit little-endian integer below 2^53 (an address or a length). */
function writeAddr(v: Buffer, at: number, x: number): void {
  v.writeUInt32LE(x % 0x1_0000_0000, at);
  v.writeUInt32LE(Math.floor(x / 0x1_0000_0000), at + 4);
}
