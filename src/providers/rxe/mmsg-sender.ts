// Sending the datagrams of one flush with sendmmsg(2) instead of a node:dgram send each.
//
// The datagrams a flush hands to one socket in a row (an SMC-R message's WRITE and CDC SEND,
// a burst of small messages, ACKs) leave in one system call, and so do GSO runs (a message's
// equal-size packets as one datagram with a UDP_SEGMENT control message, which the kernel cuts
// back into packets: link.ts flush) between them: a 64 KiB RDMA WRITE, whose FIRST packet is
// 16 bytes longer than the rest and cannot join their run, went as two system calls before,
// and a flush of several messages is now one. Measured
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
// binding, its address lookup is asynchronous, or its send buffer was full (then libuv queues
// it and sends it later). A socket that node:dgram may hold datagrams for is never sent to
// directly: one that is not bound yet, one with datagrams in libuv's queue
// (getSendQueueCount), and one to which this sender handed datagrams it could not place
// (EAGAIN), until their callbacks say they left. That is checked again after every call.
// A send the kernel refuses for another reason (an nftables drop answers EPERM) is a lost
// packet, as RC sees it: node:dgram passes the error to the send's callback and emits nothing;
// here onSent runs all the same, the refusal is counted (the link adds it to send_err), and
// the batch goes on with the next datagram. A socket closed before its datagrams were sent
// sends nothing more: they are dropped as refused (node:dgram would throw).

import type { Socket } from 'node:dgram';
import koffi from 'koffi';
import { isIPv4 } from 'node:net';
import { libcLibrary } from '../../sys/libc.js';
import { ipv4Bytes, ipv6Bytes } from '../../abi/inet.js';
import { dgramState, type DgramState } from './sockopt.js';
import { AF_INET, AF_INET6, EAGAIN, EINTR, IOV_BYTES, MMSG_BYTES, NAME_BYTES } from './mmsg-receiver.js';

/** Datagrams per sendmmsg call (UIO_MAXIOV caps the call at 1024). */
const MAX_MSGS = 64;
/** iovecs for all the datagrams of one call (a datagram has at most maxSge + 2 parts). */
const MAX_IOVS = 512;
/**
 * Parts shorter than this are copied into the staging area (30 ns for up to 1 KiB); longer
 * ones are sent from where they are, by the address of their ArrayBuffer (found once per
 * buffer: koffi.address costs ~160 ns, too much for every packet of a GSO run).
 */
const COPY_BELOW = 256;
const COPY_BYTES = 16 << 10;
const ENOBUFS = 105;

const MSGS_AT = 0;
const IOVS_AT = MSGS_AT + MAX_MSGS * MMSG_BYTES;
const NAMES_AT = IOVS_AT + MAX_IOVS * IOV_BYTES;
/** CMSG_SPACE(sizeof(uint16_t)): one UDP_SEGMENT control message. */
const CTRL_BYTES = 24;
const CTRL_AT = NAMES_AT + MAX_MSGS * NAME_BYTES;
const COPY_AT = CTRL_AT + MAX_MSGS * CTRL_BYTES;
const AREA_BYTES = COPY_AT + COPY_BYTES;
const SOL_UDP = 17, UDP_SEGMENT = 103;

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

/** node:dgram's BIND_STATE_BOUND. */
const BOUND = 2;
/** Per socket: node:dgram's state (found once), the fd last checked, its family, datagrams handed to node:dgram not yet sent. */
interface SocketState { dgram: DgramState | undefined; fd: number; v6: boolean; heldByDgram: number }

let shared: MmsgSender | null | undefined;

interface Staged {
  parts: Buffer[];
  to: string;
  port: number;
  onSent: (() => void) | undefined;
  /** A GSO run: its packets, each its parts (what node:dgram is given one by one after EAGAIN: it cannot cut a run). */
  run?: Buffer[][];
  /** A GSO run the kernel refused (its errno). */
  onRefused?: (errno: number) => void;
  /** A GSO run about to go packet by packet instead. */
  unrun?: () => void;
}

/** A run of equal-size packets for one GSO datagram (all but the last of `size` bytes). */
export interface GsoRun {
  size: number;
  /** Each packet's parts, in order. */
  packets: Buffer[][];
  onRefused(errno: number): void;
  /**
   * The run goes packet by packet after all (EAGAIN: node:dgram takes it): reseal each packet
   * for a datagram of its own (a GSO segment's ICRC covers IPv4 Identification i, a lone
   * datagram's 0) and uncount the run.
   */
  unrun(): void;
}

export class MmsgSender {
  /** The staging area: off the V8 heap, its own ArrayBuffer, so its address never changes; freed by the GC. */
  private readonly view: Buffer;
  /** The same memory as 32-bit words, for the structures' 64-bit fields (writeAddr). */
  private readonly words: Uint32Array;
  /** The staging area's address, as a number (checked to be exact). */
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
  /** The destination last written as a sockaddr: datagrams go in runs to one peer. */
  private lastTo = '';
  private lastToV4 = false;
  private readonly lastName = Buffer.alloc(NAME_BYTES);
  private lastNameLen = 0;
  /**
   * Datagrams sent, system calls made, datagrams handed to node:dgram after EAGAIN, and
   * datagrams refused or dropped (counters; the link adds refusals to its send_err).
   */
  readonly stats = { datagrams: 0, calls: 0, fallbacks: 0, errors: 0 };

  private constructor(private readonly sys: SendSys) {
    this.view = Buffer.allocUnsafeSlow(AREA_BYTES);
    this.words = new Uint32Array(this.view.buffer, this.view.byteOffset, AREA_BYTES >>> 2);
    this.view.fill(0, 0, COPY_AT);
    this.base = Number(koffi.address(this.view));
    if (!Number.isSafeInteger(this.base)) throw new RangeError('an address beyond 2^53');
  }

  /**
   * The thread's sender, or undefined where sendmmsg cannot be called (then node:dgram sends
   * everything). One serves every device: a flush stages and commits within one call.
   */
  static shared(): MmsgSender | undefined {
    if (shared === undefined) {
      const s = bindLibc();
      try {
        shared = s ? new MmsgSender(s) : null;
      } catch {
        shared = null;
      }
    }
    return shared ?? undefined;
  }

  /** A sender of its own over the given system calls (tests). */
  static withSys(sys: SendSys): MmsgSender {
    return new MmsgSender(sys);
  }

  /**
   * Stage one datagram (its parts, in order) for `sock`, to (to, port). What is staged for
   * another socket is sent first. Returns false when this datagram must go by node:dgram (the
   * socket is not bound, is closed, or node:dgram may hold datagrams for it; an address with a
   * zone or of the other family; more parts than one call takes): then nothing of it was
   * taken, and what was staged before has been sent. With `gso`, the parts are a run's
   * packets one after another, sent as one datagram that the kernel cuts every `gso.size` bytes.
   */
  add(sock: Socket, parts: Buffer[], to: string, port: number, onSent?: () => void, gso?: GsoRun): boolean {
    const need = parts.length;
    let copy = 0;
    for (const b of parts) if (b.length < COPY_BELOW) copy += b.length;
    // A full batch is sent first; the socket is then checked again as a new one (below).
    if (sock === this.sock && (this.staged.length === MAX_MSGS || this.iovs + need > MAX_IOVS || this.copied + copy > COPY_BYTES)) this.commit();
    if (sock !== this.sock) {
      // A new socket, or the same after a call: its state may have changed (EAGAIN, a close).
      this.commit();
      const st = this.stateOf(sock);
      if (!this.direct(sock, st)) return false;
      this.sock = sock;
      this.state = st;
    }
    if (need > MAX_IOVS || copy > COPY_BYTES || !this.destination(to, this.state!.v6)) {
      this.commit();
      return false;
    }
    const i = this.staged.length;
    const v = this.view;
    const m = MSGS_AT + i * MMSG_BYTES;
    const name = NAMES_AT + i * NAME_BYTES;
    const iov0 = this.iovs, copied0 = this.copied;
    // Parts copied one after another share an iovec.
    let runStart = -1, runLen = 0;
    for (const b of parts) {
      if (b.length === 0) continue;
      if (b.length < COPY_BELOW) {
        if (runStart < 0) runStart = this.copied;
        b.copy(v, COPY_AT + this.copied);
        this.copied += b.length;
        runLen += b.length;
        continue;
      }
      const at = this.addressOf(b);
      if (at < 0) {
        // Memory whose address a double cannot hold exactly: node:dgram sends it.
        this.iovs = iov0;
        this.copied = copied0;
        this.commit();
        return false;
      }
      if (runStart >= 0) {
        this.writeIov(this.iovs++, this.base + COPY_AT + runStart, runLen);
        runStart = -1;
        runLen = 0;
      }
      this.writeIov(this.iovs++, at, b.length);
    }
    if (runStart >= 0) this.writeIov(this.iovs++, this.base + COPY_AT + runStart, runLen);
    this.lastName.copy(v, name, 0, this.lastNameLen);
    v.writeUInt16BE(port, name + 2);
    writeAddr(this.words, m, this.base + name); // msg_name
    v.writeUInt32LE(this.lastNameLen, m + 8); // msg_namelen
    writeAddr(this.words, m + 16, this.base + IOVS_AT + iov0 * IOV_BYTES); // msg_iov
    writeAddr(this.words, m + 24, this.iovs - iov0); // msg_iovlen
    if (gso) {
      const c = CTRL_AT + i * CTRL_BYTES;
      writeAddr(this.words, c, 18); // cmsg_len: CMSG_LEN(sizeof(uint16_t))
      v.writeInt32LE(SOL_UDP, c + 8); // cmsg_level
      v.writeInt32LE(UDP_SEGMENT, c + 12); // cmsg_type
      v.writeUInt16LE(gso.size, c + 16);
      writeAddr(this.words, m + 32, this.base + c); // msg_control
      writeAddr(this.words, m + 40, CTRL_BYTES); // msg_controllen
      this.staged.push({ parts, to, port, onSent, run: gso.packets, onRefused: gso.onRefused, unrun: gso.unrun });
    } else {
      // (The slot may have carried a run's control message in an earlier call.)
      writeAddr(this.words, m + 32, 0);
      writeAddr(this.words, m + 40, 0);
      this.staged.push({ parts, to, port, onSent });
    }
    return true;
  }

  /**
   * Send what is staged. onSent callbacks run on the next tick (the kernel has the datagrams),
   * as node:dgram runs a send's callback, whether the datagram left or was refused.
   */
  commit(): void {
    const n = this.staged.length;
    const sock = this.sock, st = this.state;
    this.sock = undefined;
    this.state = undefined;
    if (n === 0) return;
    const staged = this.staged.splice(0, n);
    this.iovs = 0;
    this.copied = 0;
    // Closed since the datagrams were staged (its fd number may be another file's by now).
    if (st!.dgram?.handle?.fd !== st!.fd) {
      this.stats.errors += n;
      callBack(staged, n);
      return;
    }
    let done = 0;
    while (done < n) {
      const r = this.sys.sendmmsg(st!.fd, this.base + MSGS_AT + done * MMSG_BYTES, n - done);
      this.stats.calls++;
      if (r > 0) {
        this.stats.datagrams += r;
        done += r;
        continue;
      }
      const e = this.sys.errno();
      if (e === EINTR) continue;
      if (e === EAGAIN || e === ENOBUFS) {
        // The send buffer is full: node:dgram queues the rest in libuv, in order, and the
        // socket is node:dgram's until the last of them has left; their onSent runs then.
        callBack(staged, done);
        for (let k = done; k < n; k++) {
          const s = staged[k]!;
          // A run goes packet by packet: node:dgram's send has no UDP_SEGMENT.
          s.unrun?.();
          const datagrams = s.run ?? [s.parts];
          let left = datagrams.length;
          const cb = s.onSent;
          for (const d of datagrams) {
            st!.heldByDgram++;
            this.stats.fallbacks++;
            try {
              sock!.send(d, s.port, s.to, () => { st!.heldByDgram--; if (--left === 0) cb?.(); });
            } catch {
              st!.heldByDgram--;
              this.stats.errors++;
              if (--left === 0 && cb) process.nextTick(cb);
            }
          }
        }
        return;
      }
      // Refused: that datagram is lost (RC resends it), and the batch goes on. A refused run
      // tells its link, which may stop sending runs of that size (EIO: no checksum offload).
      this.stats.errors++;
      staged[done]!.onRefused?.(e);
      done++;
    }
    callBack(staged, n);
  }

  /**
   * Whether node:dgram holds datagrams of `sock` this sender handed to it (after EAGAIN) that
   * have not left yet: a GSO socket of the same port must not send past them (link.ts).
   */
  holds(sock: Socket): boolean {
    return (this.sockets.get(sock)?.heldByDgram ?? 0) > 0;
  }

  /** Whether datagrams for `sock` may go to the kernel directly now (see the head of this file). */
  private direct(sock: Socket, st: SocketState): boolean {
    const d = st.dgram;
    const fd = d?.handle?.fd;
    if (fd === undefined || fd < 0 || d!.bindState !== BOUND || d!.queue !== undefined || st.heldByDgram > 0) return false;
    if (sock.getSendQueueCount() > 0) return false;
    st.fd = fd;
    return true;
  }

  private stateOf(sock: Socket): SocketState {
    let st = this.sockets.get(sock);
    if (!st) this.sockets.set(sock, st = { dgram: dgramState(sock), fd: -1, v6: (sock as unknown as { type?: string }).type === 'udp6', heldByDgram: 0 });
    return st;
  }

  /** Where b's bytes are: its ArrayBuffer's address (found once per buffer) plus its offset; -1 if not exact. */
  private addressOf(b: Buffer): number {
    const ab = b.buffer;
    let a = this.buffers.get(ab);
    if (a === undefined) {
      a = Number(koffi.address(new Uint8Array(ab)));
      if (!Number.isSafeInteger(a + ab.byteLength)) a = -1;
      this.buffers.set(ab, a);
    }
    return a < 0 ? -1 : a + b.byteOffset;
  }

  private writeIov(k: number, addr: number, len: number): void {
    const at = IOVS_AT + k * IOV_BYTES;
    writeAddr(this.words, at, addr);
    writeAddr(this.words, at + 8, len);
  }

  /**
   * Make lastName the sockaddr of `to` (port written per datagram). false for what node:dgram
   * handles differently: an address with a zone (fe80::1%eth0), or one of the other family
   * than the socket's (node:dgram refuses it).
   */
  private destination(to: string, v6Socket: boolean): boolean {
    if (to !== this.lastTo) {
      if (to.includes('%')) return false;
      const n = this.lastName;
      n.fill(0);
      const v4 = isIPv4(to);
      if (v4) {
        n.writeUInt16LE(AF_INET, 0);
        ipv4Bytes(to).copy(n, 4);
        this.lastNameLen = 16;
      } else {
        n.writeUInt16LE(AF_INET6, 0);
        ipv6Bytes(to).copy(n, 8);
        this.lastNameLen = 28;
      }
      this.lastTo = to;
      this.lastToV4 = v4;
    }
    return this.lastToV4 !== v6Socket;
  }
}

/** Run the onSent of the first `count` staged on the next tick, as node:dgram runs a synchronous send's callback. */
function callBack(staged: Staged[], count: number): void {
  let fs: Array<() => void> | undefined;
  for (let k = 0; k < count; k++) if (staged[k]!.onSent) (fs ??= []).push(staged[k]!.onSent!);
  if (fs) process.nextTick(runAll, fs);
}

function runAll(fs: Array<() => void>): void {
  for (const f of fs) f();
}

/**
 * A 64-bit little-endian integer below 2^53 (an address or a length) at byte `at` (a multiple
 * of 8; the structures are little-endian as everywhere in this file): two typed-array stores of
 * the low and high words, where Buffer's writeUInt32LE checks its arguments each time (3-4% of
 * an SMC-R sender's CPU, more while the code is still interpreted).
 */
function writeAddr(w: Uint32Array, at: number, x: number): void {
  const i = at >>> 2;
  w[i] = x >>> 0;
  w[i + 1] = (x / 0x1_0000_0000) >>> 0;
}
