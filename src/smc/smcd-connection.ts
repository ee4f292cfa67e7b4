// One SMC-D connection's data path: the peer writes into our DMB (rx), we write into the
// peer's (tx). Each DMB starts with the CDC area written by the other side; the rest is a
// ring. Totals are kept as plain numbers (bytes since the start); the wire form is
// {wrap, count} relative to the ring size, as in Linux.
//
// Everything the peer writes is validated: a cursor that moves backwards or beyond the ring
// is a protocol error, never an out-of-bounds access.

import type { Dmb, RemoteDmb } from '../ism/device.js';
import { keepFreedHeap } from '../ism/libc.js';
import { freshSlice } from './slice-memory.js';
import {
  CdcArea, CONN_ABORT, CONN_CLOSED, CONN_DONE_WRITING, PROD_CONS_UPD_REQ, PROD_WRITE_BLOCKED, SMCD_CDC_LEN,
  cursorWord, readCursorInto, type Cursor,
} from './cdc.js';
import { PeerEnd } from './peer-end.js';
import { forget, kick } from './poller.js';
import type { SmcTransport, SmcTransportMode, TransportDiag, TransportEvents } from './transport.js';

/** A byte total in wire form: {wrap, count} relative to the ring (wrap is 16 bits). */
function toWire(total: number, ring: number): { wrap: number; count: number } {
  return { wrap: Math.floor(total / ring) & 0xffff, count: total % ring };
}

/** How far a cursor read from the peer moved past the total we last derived from it. */
function cursorDelta(total: number, ring: number, wrap: number, count: number): number {
  return ((wrap - (Math.floor(total / ring) & 0xffff)) & 0xffff) * ring + count - total % ring;
}

/** The cursor word of a byte total (toWire, then packCursor), without allocating but the word. */
function totalWord(total: number, ring: number, prodFlags: number, connFlags: number): bigint {
  return cursorWord(Math.floor(total / ring) & 0xffff, total % ring, prodFlags, connFlags);
}

// Cursors read on the data path land here (every poll that sees a change reads two): the
// per-packet path allocates nothing a 14-byte ping-pong does not need, which on busy CPUs is
// garbage collection the main thread waits for while V8's helper threads wait for a CPU.
const prodSeen: Cursor = { wrap: 0, count: 0, prodFlags: 0, connFlags: 0 };
const consSeen: Cursor = { wrap: 0, count: 0, prodFlags: 0, connFlags: 0 };

export class SmcdConnection implements SmcTransport {
  readonly rxRing: number;
  readonly txRing: number;
  /** Bytes written by the peer into rx / consumed by us. */
  private peerProduced = 0;
  private consumed = 0;
  /** Bytes written by us into tx / consumed by the peer. */
  private produced = 0;
  private peerConsumed = 0;
  private prodFlags = 0;
  private connFlags = 0;
  private peerProdFlags = 0;
  private peerConnFlags = 0;
  private readonly seen = new Int32Array(4);
  // Views of the two DMBs' CDC areas; private ones once the device closed under the connection.
  private rxCdc: CdcArea;
  private txCdc: CdcArea;
  private paused = false;
  private readonly end = new PeerEnd();
  private failed = false;
  released = false;
  /** The most one delivery copies out of the ring. */
  private readonly slice: number;
  /** For the poller: when this connection last saw activity (ms, performance.now()). */
  lastActive = 0;
  bytesReceived = 0;
  bytesSent = 0;

  /**
   * unregister gives rx back when the connection is released (the socket returns it to the
   * DMB pool); release(unregister) may name it there instead.
   */
  constructor(readonly rx: Dmb, readonly tx: RemoteDmb, private readonly h: TransportEvents, private readonly unregister?: (d: Dmb) => void) {
    this.rxRing = rx.size - SMCD_CDC_LEN;
    this.txRing = tx.size - SMCD_CDC_LEN;
    if (this.rxRing <= 0 || this.txRing <= 0) throw new RangeError('DMB too small for a CDC area');
    this.rxCdc = new CdcArea(rx.view);
    this.txCdc = new CdcArea(tx.view);
    this.txCdc.init();
    rx.onDeviceClose = this.onDeviceClose;
    // deliver() allocates a fresh Buffer per slice. With the heap kept, 256 KiB slices come
    // from memory already mapped and cost fewer events and cursor updates than 64 KiB ones
    // (about 15% more throughput here); without it, anything over glibc's 128 KiB mmap
    // threshold would be mapped and faulted in afresh on every delivery.
    this.slice = keepFreedHeap() ? 256 * 1024 : 64 * 1024;
  }

  get mode(): SmcTransportMode {
    return 'SMCD';
  }

  /** The DMB sizes (CDC area included), ours and the peer's. */
  get bufferSize(): number {
    return this.rx.size;
  }

  get peerBufferSize(): number {
    return this.tx.size;
  }

  /** Activity: the poller watches this connection's CDC until it has been quiet a while. */
  kick(): void {
    kick(this);
  }

  /** Free space in the peer's ring. */
  get writeSpace(): number {
    return this.txRing - (this.produced - this.peerConsumed);
  }

  /** Bytes in our ring not yet delivered. */
  get readable(): number {
    return this.peerProduced - this.consumed;
  }

  get state(): { produced: number; peerConsumed: number; peerProduced: number; consumed: number; prodFlags: number; connFlags: number; peerProdFlags: number; peerConnFlags: number } {
    return {
      produced: this.produced, peerConsumed: this.peerConsumed, peerProduced: this.peerProduced, consumed: this.consumed,
      prodFlags: this.prodFlags, connFlags: this.connFlags, peerProdFlags: this.peerProdFlags, peerConnFlags: this.peerConnFlags,
    };
  }

  /** For smcss: the cursors in wire form, the rings (SMC-D writes straight into the peer's DMB, so our send buffer is its ring), the flags and the DMBs. */
  diag(): TransportDiag {
    return {
      cursors: {
        tx: toWire(this.produced, this.txRing), peerCons: toWire(this.peerConsumed, this.txRing),
        rx: toWire(this.peerProduced, this.rxRing), cons: toWire(this.consumed, this.rxRing),
      },
      sndbufSize: this.txRing, rmbeSize: this.rxRing, peerRmbeSize: this.txRing,
      prodFlags: this.prodFlags, connFlags: this.connFlags, peerProdFlags: this.peerProdFlags, peerConnFlags: this.peerConnFlags,
      smcd: { token: this.rx.token, peerGid: this.tx.peerGid, peerToken: this.tx.token },
    };
  }

  /** Copy as much of data as fits into the peer's ring; returns the number of bytes taken. */
  write(data: Uint8Array): number {
    if (this.released || this.failed || (this.connFlags & (CONN_DONE_WRITING | CONN_ABORT))) return 0;
    // Nothing to write waits for nothing (write_blocked would make it a waiting writer: poller.ts).
    if (data.length === 0) return 0;
    const space = this.writeSpace;
    if (space === 0) {
      if (!(this.prodFlags & PROD_WRITE_BLOCKED)) {
        this.prodFlags |= PROD_WRITE_BLOCKED;
        this.publish();
        this.tx.signal();
      }
      return 0;
    }
    const n = Math.min(space, data.length);
    const pos = this.produced % this.txRing;
    const first = Math.min(n, this.txRing - pos);
    const ring = this.tx.view;
    ring.set(n === data.length && first === n ? data : data.subarray(0, first), SMCD_CDC_LEN + pos);
    if (n > first) ring.set(data.subarray(first, n), SMCD_CDC_LEN);
    this.produced += n;
    this.bytesSent += n;
    // Data left over means we wait for the consumer: say so in the same CDC, or a reader that
    // drains the ring would have no reason to wake us.
    if (n < data.length) this.prodFlags |= PROD_WRITE_BLOCKED;
    else this.prodFlags &= ~PROD_WRITE_BLOCKED;
    this.publish();
    this.tx.signal();
    return n;
  }

  /** peer_done_writing: no more data from us (half-close). */
  closeWrite(): void {
    if (this.released || (this.connFlags & CONN_DONE_WRITING)) return;
    this.connFlags |= CONN_DONE_WRITING;
    this.publish();
    this.tx.signal();
  }

  /** peer_conn_abort. */
  abort(): void {
    if (this.released || (this.connFlags & CONN_ABORT)) return;
    this.connFlags |= CONN_ABORT;
    this.publish();
    this.tx.signal();
  }

  /** peer_conn_closed: an orderly end after both sides finished. */
  closeOrderly(): void {
    if (this.released || (this.connFlags & (CONN_CLOSED | CONN_ABORT))) return;
    this.connFlags |= CONN_CLOSED | CONN_DONE_WRITING;
    this.publish();
    this.tx.signal();
  }

  /** SMC-D's writer sets write_blocked exactly while a write waits for room. */
  get peerWriteWaits(): boolean {
    return !this.peerFinished && (this.peerProdFlags & PROD_WRITE_BLOCKED) !== 0;
  }

  get peerFinished(): boolean {
    return (this.peerConnFlags & (CONN_DONE_WRITING | CONN_CLOSED | CONN_ABORT)) !== 0;
  }

  /** The peer closed its end entirely: it reads nothing more. */
  get peerClosed(): boolean {
    return (this.peerConnFlags & (CONN_CLOSED | CONN_ABORT)) !== 0;
  }

  get peerAborted(): boolean {
    return (this.peerConnFlags & CONN_ABORT) !== 0;
  }

  /**
   * Bytes the peer has written that we have not consumed, as the ring says now (not as of the
   * last poll): close(2)'s question, whether data is left unread.
   */
  unreadNow(): number {
    if (this.released || this.failed) return this.readable;
    return this.readable + (this.arrivedNow() ?? 0);
  }

  /**
   * How far the peer's producer cursor moved since the last poll, as the ring says now; held to
   * readCursors' rules (the peer writes the cursor, and may write anything): undefined if it
   * moved back, beyond the ring, or past the free space.
   */
  private arrivedNow(): number | undefined {
    const p = readCursorInto(this.rxCdc.loadProd(), prodSeen);
    if (p.count >= this.rxRing) return undefined;
    const d = cursorDelta(this.peerProduced, this.rxRing, p.wrap, p.count);
    if (d < 0 || this.readable + d > this.rxRing) return undefined;
    // The producer flags that came with the cursor are as current: close.ts asks whether the
    // peer's write is blocked on us (write_blocked) when it decides between close and abort.
    this.peerProdFlags = p.prodFlags;
    return d;
  }

  /**
   * Count everything in the ring as read, without delivering it: the reader is closing while
   * it was reading everything that came (a flowing stream), and over TCP libuv would have
   * read these bytes as they arrived.
   */
  consumeArrived(): void {
    if (this.released || this.failed) return;
    const d = this.arrivedNow();
    if (d === undefined) {
      this.fail('producer cursor beyond the ring or its free space at close');
      return;
    }
    this.peerProduced += d;
    this.bytesReceived += this.peerProduced - this.consumed;
    this.consumed = this.peerProduced;
    this.publish();
  }

  /** Bytes we wrote that the peer has not consumed. */
  get unconsumed(): number {
    return this.produced - this.peerConsumed;
  }

  /** @internal (poller) A write waits for room in the peer's ring: only the peer's consumer cursor ends the wait. */
  get writerWaits(): boolean {
    return !this.released && !this.failed && (this.prodFlags & PROD_WRITE_BLOCKED) !== 0
      && (this.connFlags & (CONN_DONE_WRITING | CONN_ABORT)) === 0 && !this.peerClosed;
  }

  /**
   * @internal (poller) Our write has waited, asleep: is the peer's process still there to make
   * room? One killed after its end was read tells us nothing more through TCP (libuv reads no
   * further, and we never write there), so the write would wait forever. Gone: as close.ts
   * takes a peer whose process ended, an abort when bytes of ours are left unconsumed.
   */
  checkPeer(): void {
    if (!this.writerWaits || this.tx.peerAlive() !== false) return;
    if (this.unconsumed === 0) {
      this.peerExited();
      return;
    }
    this.end.abortTold();
    this.h.peerAbort('peer process died with data of ours unread');
  }

  /**
   * The peer's process is gone without a closing CDC (its kernel closed the TCP connection):
   * treat it as peer_conn_closed. What it wrote is still delivered, then the end.
   */
  peerExited(): void {
    if (this.released || this.failed) return;
    const wasClosed = this.peerClosed;
    this.peerConnFlags |= CONN_CLOSED | CONN_DONE_WRITING;
    if (!wasClosed) this.wakeWriterAtClose();
    if (this.released) return;
    this.deliver();
    this.reportState();
  }

  /**
   * The peer is gone with a reset and no closing CDC (its process died with something unread:
   * close.ts): taken as its abort, and reported as one.
   */
  peerReset(cause: string): void {
    if (this.released || this.failed || this.peerAborted) return;
    this.peerConnFlags |= CONN_ABORT;
    this.end.cause = cause;
    this.reportState();
  }

  /** Deliver nothing until resume(). */
  pause(): void { this.paused = true; }

  /**
   * The application wants data again. Returns whether anything happened, or is to be reported
   * (an abort held while it was stopped: the next process() reports it, kick()).
   */
  resume(): boolean {
    this.paused = false;
    const any = this.deliver();
    return any || (this.end.abortUntold(this.peerConnFlags) && !this.released && !this.failed);
  }

  /**
   * Read the peer's CDC and act on it: deliver data, unblock writers, report done/abort.
   * Returns true when anything changed.
   */
  process(): boolean {
    if (this.released || this.failed) return false;
    let changed = false;
    if (this.rxCdc.changed(this.seen)) {
      changed = true;
      if (!this.readCursors()) return true;
    }
    if (this.deliver()) changed = true;
    this.reportState();
    return changed;
  }

  private readCursors(): boolean {
    const p = readCursorInto(this.rxCdc.loadProd(), prodSeen);
    const c = readCursorInto(this.rxCdc.loadCons(), consSeen);
    if (p.count >= this.rxRing || c.count >= this.txRing) return this.fail(`cursor count beyond the ring (prod ${p.count}, cons ${c.count})`);
    const prodDelta = cursorDelta(this.peerProduced, this.rxRing, p.wrap, p.count);
    const consDelta = cursorDelta(this.peerConsumed, this.txRing, c.wrap, c.count);
    if (prodDelta < 0 || this.peerProduced + prodDelta - this.consumed > this.rxRing) {
      return this.fail(`producer cursor moved by ${prodDelta} with ${this.rxRing - this.readable} bytes free`);
    }
    if (consDelta < 0 || this.peerConsumed + consDelta > this.produced) {
      return this.fail(`consumer cursor moved by ${consDelta} past the ${this.produced - this.peerConsumed} bytes in flight`);
    }
    this.peerProduced += prodDelta;
    this.peerProdFlags = p.prodFlags;
    const wasClosed = this.peerClosed;
    this.peerConnFlags |= p.connFlags;
    if (consDelta > 0) {
      this.peerConsumed += consDelta;
      this.h.writable();
    } else if (!wasClosed) {
      this.wakeWriterAtClose();
    }
    return true;
  }

  /**
   * The peer's close just came: a write of ours waiting for room learns now that it never will
   * (Linux: the close wakes smc_tx_wait, which returns -ECONNRESET), before the end is read.
   */
  private wakeWriterAtClose(): void {
    // An abort has its own report (reportState's peerAbort, ECONNRESET as well).
    if (this.peerClosed && !this.peerAborted && (this.prodFlags & PROD_WRITE_BLOCKED) && !this.released && !this.failed) this.h.writable();
  }

  private deliver(): boolean {
    if (this.failed) return false;
    let any = false;
    // Deliver in slices and publish the consumer cursor after each: the writer refills the
    // ring while we copy out, instead of the two sides taking turns over the whole ring.
    const slice = this.slice;
    const ring = this.rx.view;
    // failed: the device may have closed under us in a callback below (ring is unmapped then).
    while (!this.paused && !this.released && !this.failed && this.readable > 0) {
      // onread: straight from the ring into the application's buffer, as much as fits.
      const into = this.h.userBuffer?.();
      if (this.released) break;
      const n = Math.min(this.readable, into ? into.length : slice);
      const pos = this.consumed % this.rxRing;
      const first = Math.min(n, this.rxRing - pos);
      const out = into ?? freshSlice(n);
      out.set(ring.subarray(SMCD_CDC_LEN + pos, SMCD_CDC_LEN + pos + first), 0);
      if (n > first) out.set(ring.subarray(SMCD_CDC_LEN, SMCD_CDC_LEN + n - first), first);
      this.consumed += n;
      this.bytesReceived += n;
      any = true;
      this.publish();
      // A blocked writer may be asleep: wake it now that there is room. Its flags are read
      // afresh after our cursor is published (both Atomics, so in order): with the copy from
      // our last look at its CDC, a writer that blocked since then (and armed its doorbell
      // and went to sleep, as it does at once when the CPUs are busy) would never be woken.
      if ((this.peerProdFlags | this.rxCdc.loadProdFlags()) & (PROD_WRITE_BLOCKED | PROD_CONS_UPD_REQ)) this.tx.signal();
      if (!(into ? this.h.userData!(n, into) : this.h.data(out as Buffer))) this.paused = true;
    }
    return any;
  }

  private reportState(): void {
    if (this.released) return;
    const news = this.end.next(this.peerConnFlags, this.readable, this.paused, (this.prodFlags & PROD_WRITE_BLOCKED) !== 0);
    if (news === 'abort') this.h.peerAbort(this.end.cause);
    else if (news === 'done') this.h.peerDone();
  }

  private fail(message: string): false {
    // The peer broke the protocol: it gets an abort (ECONNRESET), not the orderly close the
    // socket's teardown would otherwise publish for a connection with nothing left unread.
    this.abort();
    this.failed = true;
    this.h.protocolError(message);
    return false;
  }

  /**
   * The ism device is closing under the connection, and its DMBs and mappings go next (Linux:
   * the ISM device went away, smc_conn_kill). Unless the thread is exiting, the peer is told
   * with an abort in its DMB (it gets ECONNRESET) and the socket gets the error; either way the
   * connection lets go of the memory: it polls no more, moves no data, and its CDC views are
   * private from now on. Its socket releases it as usual.
   */
  private readonly onDeviceClose = (atExit: boolean): void => {
    if (this.released) return;
    if (!atExit) this.abort();
    this.failed = true;
    forget(this);
    this.rxCdc = new CdcArea(new Uint8Array(SMCD_CDC_LEN));
    this.txCdc = new CdcArea(new Uint8Array(SMCD_CDC_LEN));
    if (!atExit) this.h.protocolError('the ism device was closed', 'ECONNABORTED');
  };

  private publish(): void {
    if (this.released) return;
    this.txCdc.storeCons(totalWord(this.consumed, this.rxRing, 0, 0));
    this.txCdc.storeProd(totalWord(this.produced, this.txRing, this.prodFlags, this.connFlags));
  }

  /** Stop polling and drop both DMB mappings; nothing may touch them afterwards. */
  release(unregister = this.unregister): void {
    if (this.released) return;
    forget(this);
    this.released = true;
    if (this.rx.onDeviceClose === this.onDeviceClose) this.rx.onDeviceClose = undefined;
    this.tx.detach();
    unregister?.(this.rx);
  }
}
