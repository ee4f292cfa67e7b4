// perftest -R (--rdma_cm): the out-of-band exchange over an RC connection the rdma_cm sets up,
// as perftest 6.06 does it (perftest_communication.c: create_comm_struct, rdma_client_connect,
// rdma_server_connect, rdma_write_keys/rdma_read_keys, rdma_write_data/rdma_read_data). No TCP:
// the client connects a "comm" id to the server's address and port (-p), the server accepts it
// and drops its listener, and every message of the exchange is one SEND on that QP. The C side
// keeps one receive posted (sizeof(struct pingpong_dest), 56 bytes) and re-posts it after each
// message it reads; its client writes first and then reads, its server reads first and then
// writes. So that a C peer never sees a SEND before its receive is back (an RNR NAK, and the
// CM's min_rnr_timer 0 makes that 655 ms), we send our k-th message only when the peer has
// certainly re-posted: a server after the client's k-th has arrived, a client after the
// server's (k-1)-th. Every exchange step of perftest (and of two softrdma sides) is one message
// each way, so the rule never stalls. The messages keep their sizes (the bw report goes as five
// 8-byte messages, the address message as the 56-byte binary struct, see exchange.ts).

import {
  Access, SendFlags, WcOpcode, WcStatus, wcStatusStr, WrOpcode, type CQ, type MR, type PD, type QP, type WorkCompletion,
} from '../../index.js';
import { createEventChannel, createId, type EventChannel, type RdmaCmEvent, type RdmaCmEventType, type RdmaCmId } from '../../cm/index.js';
import { jsonMessage } from '../oob.js';

/** Our receive buffers: larger than perftest's 56 bytes, for the JSON steps two softrdma sides add. */
const RECV_BYTES = 64 * 1024;
const RECV_DEPTH = 4;
/** perftest's SYNC_SPEC_ID, the wr_id of every exchange SEND and receive. */
const SYNC_SPEC_ID = 5n;
const CONNECT_EVENTS: RdmaCmEventType[] = ['ESTABLISHED', 'REJECTED', 'UNREACHABLE', 'CONNECT_ERROR', 'DISCONNECTED', 'DEVICE_REMOVAL'];

function cmaError(what: string, e: RdmaCmEvent): Error {
  return new Error(`${what}: RDMA_CM_EVENT_${e.event}, status ${e.status}${e.reason ? ` (${e.reason})` : ''}`);
}

export class CmChannel {
  private readonly pd: PD;
  private readonly cq: CQ;
  private readonly recvMr: MR;
  private readonly sendBuf = Buffer.alloc(RECV_BYTES);
  private readonly sendMr: MR;
  private readonly recvBuf = Buffer.alloc(RECV_BYTES * RECV_DEPTH);
  private readonly inbox: Buffer[] = [];
  private readonly outbox: Buffer[] = [];
  private sent = 0;
  private received = 0;
  private failed: Error | undefined;
  private waiter: (() => void) | undefined;
  private closed = false;
  private readonly ac = new AbortController();
  private pump: Promise<void> | undefined;
  private sending = false;
  /** DISCONNECTED came (the peer's DREQ, or the DREP to ours). */
  private disconnected = false;
  private answered = false;

  private constructor(readonly ch: EventChannel, readonly id: RdmaCmId, private readonly server: boolean, private readonly timeoutMs: number) {
    const ctx = id.verbs!;
    this.pd = ctx.allocPd();
    this.cq = ctx.createCq(2 * RECV_DEPTH + 8);
    // create_comm_struct: tx_depth 1, rx_depth 1, RC, SEND (we keep a few more receives).
    id.createQp(this.pd, { sendCq: this.cq, recvCq: this.cq, cap: { maxSendWr: 4, maxRecvWr: RECV_DEPTH, maxSendSge: 1, maxRecvSge: 1 } });
    this.recvMr = this.pd.regMr(this.recvBuf, Access.LOCAL_WRITE);
    this.sendMr = this.pd.regMr(this.sendBuf, 0);
    for (let i = 0; i < RECV_DEPTH; i++) this.postRecv(i);
  }

  get qp(): QP { return this.id.qp!; }

  private postRecv(slot: number): void {
    this.qp.postRecv({ wrId: BigInt(slot), sgList: [this.recvMr.sge(slot * RECV_BYTES, RECV_BYTES)] });
  }

  /** rdma_client_connect: resolve, route, the comm QP, connect (no responder resources, retries 7/7). */
  static async connect(host: string, port: number, source: string, timeoutMs: number): Promise<CmChannel> {
    const ch = createEventChannel();
    const id = createId(ch, 'tcp');
    try {
      id.resolveAddr({ address: host, port }, source, 2000);
      const ar = await ch.next(['ADDR_RESOLVED', 'ADDR_ERROR'], 5000, id);
      if (ar.event !== 'ADDR_RESOLVED') throw cmaError('rdma_resolve_addr', ar);
      id.resolveRoute(2000);
      const rr = await ch.next(['ROUTE_RESOLVED', 'ROUTE_ERROR'], 5000, id);
      if (rr.event !== 'ROUTE_RESOLVED') throw cmaError('rdma_resolve_route', rr);
      const c = new CmChannel(ch, id, false, timeoutMs);
      id.connect({ retryCount: 7, rnrRetryCount: 7 });
      const est = await ch.next(CONNECT_EVENTS, timeoutMs, id);
      if (est.event !== 'ESTABLISHED') { c.close(); throw cmaError(`couldn't connect to ${host} port ${port} through the rdma_cm`, est); }
      c.start();
      return c;
    } catch (err) {
      try { id.destroyId(); } catch { /* destroyed by close() */ }
      ch.close();
      throw err;
    }
  }

  /**
   * rdma_server_connect: bind, listen, take one CONNECT_REQUEST, accept it, destroy the listener.
   * The wait for the client has no limit, as perftest's (rdma_get_cm_event blocks) and as our
   * TCP server's accept; `timeoutMs` bounds the exchange's messages afterwards.
   */
  static async accept(bind: string, port: number, timeoutMs: number, onListening?: (port: number) => void): Promise<CmChannel> {
    const ch = createEventChannel();
    const listener = createId(ch, 'tcp');
    try {
      listener.bindAddr(bind, port);
      listener.listen(1);
      onListening?.(listener.localAddr!.port);
      const req = await ch.next('CONNECT_REQUEST', Infinity);
      const c = new CmChannel(ch, req.id, true, timeoutMs);
      // perftest neither waits for ESTABLISHED here: the QP is in RTS once accept() returns.
      req.id.accept({ retryCount: 7, rnrRetryCount: 7 });
      c.start();
      return c;
    } catch (err) {
      ch.close();
      throw err;
    } finally {
      listener.destroyId();
    }
  }

  private start(): void {
    const onEvent = (e: RdmaCmEvent) => {
      if (e.id === this.id && (e.event === 'DISCONNECTED' || e.event === 'DEVICE_REMOVAL')) {
        this.disconnected = true;
        this.fail(new Error(`rdma_cm exchange connection: ${e.event}`));
      }
    };
    this.ch.on('DISCONNECTED', onEvent).on('DEVICE_REMOVAL', onEvent);
    this.pump = this.readLoop();
  }

  private fail(err: Error): void {
    if (this.failed) return;
    this.failed = err;
    this.wake();
    this.onGone?.(err);
  }

  /** Called once when the exchange is gone (DISCONNECTED, DEVICE_REMOVAL, a failed SEND). */
  onGone: ((err: Error) => void) | undefined;

  private wake(): void {
    const w = this.waiter;
    this.waiter = undefined;
    w?.();
  }

  private async readLoop(): Promise<void> {
    for (;;) {
      let wc: WorkCompletion;
      try {
        wc = await this.cq.next({ signal: this.ac.signal });
      } catch (err) {
        if (!this.ac.signal.aborted) this.fail(err as Error);
        return;
      }
      if (wc.status !== WcStatus.SUCCESS) {
        if (!this.closed) this.fail(new Error(`rdma_cm exchange: completion error ${wcStatusStr(wc.status)}`));
        return;
      }
      if (wc.opcode === WcOpcode.SEND) {
        this.sending = false;
        this.flush();
        continue;
      }
      const slot = Number(wc.wrId);
      this.inbox.push(Buffer.from(this.recvBuf.subarray(slot * RECV_BYTES, slot * RECV_BYTES + wc.byteLen)));
      this.received++;
      this.postRecv(slot);
      this.flush();
      this.wake();
    }
  }

  /** Sends what the peer is ready for: one SEND at a time, each signaled (rdma_write_data waits for it). */
  private flush(): void {
    if (this.sending || this.failed || this.closed) return;
    const next = this.outbox[0];
    if (!next) return;
    const allowed = this.server ? this.received >= this.sent + 1 : this.received >= this.sent;
    if (!allowed) return;
    this.outbox.shift();
    next.copy(this.sendBuf);
    this.sending = true;
    this.sent++;
    this.qp.postSend({ wrId: SYNC_SPEC_ID, opcode: WrOpcode.SEND, sendFlags: SendFlags.SIGNALED, sgList: [this.sendMr.sge(0, next.length)] });
  }

  write(b: Buffer): void {
    if (this.failed) throw this.failed;
    if (b.length > RECV_BYTES) throw new Error(`rdma_cm exchange message of ${b.length} bytes is too long`);
    this.outbox.push(Buffer.from(b));
    this.flush();
  }

  private async nextMessage(what: string, timeoutMs: number): Promise<Buffer> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const m = this.inbox.shift();
      if (m) return m;
      if (this.failed) throw new Error(`${this.failed.message} while ${what} was expected`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`rdma_cm exchange peer silent for ${timeoutMs} ms (expected ${what})`);
      await new Promise<void>((resolve) => {
        // Infinity: a server waiting out the client's run; a DISCONNECTED (the peer's exit) still ends it.
        const timer = Number.isFinite(left) ? setTimeout(() => { this.waiter = undefined; resolve(); }, left) : undefined;
        this.waiter = () => { clearTimeout(timer); resolve(); };
      });
    }
  }

  /** One message of exactly `n` bytes (rdma_read_data takes `size` bytes of the SEND). */
  async readBytes(n: number, what = `${n} bytes`, timeoutMs = this.timeoutMs): Promise<Buffer> {
    const m = await this.nextMessage(what, timeoutMs);
    if (m.length !== n) throw new Error(`rdma_cm exchange: ${what} must be a ${n}-byte SEND, got ${m.length} bytes`);
    return m;
  }

  send(msg: unknown): void {
    this.write(Buffer.from(JSON.stringify(msg, (_k, v) => (typeof v === 'bigint' ? v.toString() : v))));
  }

  async recv<T = Record<string, unknown>>(timeoutMs = this.timeoutMs): Promise<T> {
    const m = await this.nextMessage('a message', timeoutMs);
    return jsonMessage<T>(m.toString('utf8'), 'rdma_cm exchange peer');
  }

  async barrier(tag: string): Promise<void> {
    this.send({ barrier: tag });
    const m = await this.recv<{ barrier?: string }>();
    if (m.barrier !== tag) throw new Error(`rdma_cm exchange peer out of step: expected '${tag}', got ${JSON.stringify(m)}`);
  }

  /**
   * The end, as a TCP peer's close is awaited: our last SEND acknowledged, then a DREQ (or the DREP
   * to the peer's), then DISCONNECTED, which comes when the peer has disconnected too: neither side
   * tears its QPs down while the other may still be finishing (write_lat's last WRITE). Bounded.
   */
  async finish(timeoutMs = 2000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    const sleep = () => new Promise((r) => setTimeout(r, 1));
    while ((this.sending || this.outbox.length) && !this.failed && Date.now() < deadline) await sleep();
    this.disconnect();
    while (!this.disconnected && Date.now() < deadline) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(() => { this.waiter = undefined; resolve(); }, Math.max(1, deadline - Date.now()));
        this.waiter = () => { clearTimeout(timer); resolve(); };
      });
    }
    this.disconnect();
  }

  private disconnect(): void {
    if (this.answered) return;
    try {
      this.id.disconnect();
      this.answered = true;
    } catch { /* not connected (yet, or any more) */ }
  }

  /** Disconnects (when still connected) and frees the id, the QP and everything else. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.ac.abort();
    try { this.id.destroyId(); } catch { /* already gone */ }
    try { this.recvMr.dereg(); this.sendMr.dereg(); this.cq.destroy(); this.pd.dealloc(); } catch { /* the device went */ }
    this.ch.close();
    void this.pump;
  }
}
