// The out-of-band TCP channel the tools use to swap QP numbers, PSNs, GIDs and keys before
// any RDMA traffic flows, and to keep both sides in step between test phases. It carries
// two kinds of message on one byte stream: perftest's fixed-size binary ones (readBytes /
// write) and softrdma's own JSON lines (recv / send). Every wait is bounded (except one a
// caller asks to be unbounded: a server waiting out the client's run), and a closed or silent
// peer, or one that sends what cannot be parsed, is a clear error. TCP keepalive is on, so
// that a peer host that vanishes (no FIN, no RST) ends even an unbounded wait.

import net from 'node:net';
import { once } from 'node:events';

/** A JSON line longer than this is not one of ours. */
const MAX_LINE = 1 << 20;
/** Idle time before the first keepalive probe (the kernel's interval and count do the rest). */
const KEEPALIVE_MS = 15_000;

/**
 * A softrdma message: a JSON object. Anything else (null, an array, a number) is not one of
 * ours, and reading fields of it would fail with a TypeError that says nothing of the peer.
 */
export function jsonMessage<T>(text: string, who: string): T {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    throw new Error(`${who} sent a malformed message`);
  }
  if (v === null || typeof v !== 'object' || Array.isArray(v)) {
    throw new Error(`${who} sent ${text.length > 40 ? `${text.slice(0, 40)}...` : text} where a JSON object was expected`);
  }
  return v as T;
}

export class OobChannel {
  private buf: Buffer = Buffer.alloc(0);
  private waiter: (() => void) | undefined;
  private ended: Error | undefined;
  private eof = false;

  constructor(private readonly sock: net.Socket, private readonly timeoutMs: number) {
    sock.setNoDelay(true);
    sock.setKeepAlive(true, KEEPALIVE_MS);
    sock.on('data', (chunk: Buffer) => {
      this.buf = this.buf.length ? Buffer.concat([this.buf, chunk]) : chunk;
      this.wake();
    });
    sock.on('error', (err) => this.fail(new Error(`out-of-band connection: ${err.message}`)));
    sock.on('end', () => { this.eof = true; this.wake(); });
    sock.on('close', () => { this.eof = true; this.fail(new Error('out-of-band peer closed the connection')); });
  }

  private wake() {
    const w = this.waiter;
    this.waiter = undefined;
    w?.();
  }

  private fail(err: Error) {
    if (this.ended) return;
    this.ended = err;
    this.sock.destroy();
    this.wake();
    this.onGone?.(err);
  }

  /** Called once when the exchange is gone (the peer closed it, or it failed). */
  onGone: ((err: Error) => void) | undefined;

  /** Waits until `ready()` returns a value (checked now and after every chunk), the peer goes away, or the timeout (Infinity: none). */
  private async until<T>(ready: () => T | undefined, what: string, timeoutMs: number): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const v = ready();
      if (v !== undefined) return v;
      if (this.ended || this.eof) {
        const got = this.buf.length ? ` (${this.buf.length} byte${this.buf.length === 1 ? '' : 's'} of it arrived)` : '';
        throw new Error(`out-of-band peer closed the connection while ${what} was expected${got}`);
      }
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`out-of-band peer silent for ${timeoutMs} ms (expected ${what})`);
      await new Promise<void>((resolve) => {
        const timer = Number.isFinite(left) ? setTimeout(() => { this.waiter = undefined; resolve(); }, left) : undefined;
        this.waiter = () => { clearTimeout(timer); resolve(); };
      });
    }
  }

  private take(n: number): Buffer {
    const out = Buffer.from(this.buf.subarray(0, n));
    this.buf = this.buf.subarray(n);
    return out;
  }

  /** Exactly `n` bytes of the stream (one of perftest's fixed-size messages); `timeoutMs` Infinity waits as long as the peer is there. */
  readBytes(n: number, what = `${n} bytes`, timeoutMs = this.timeoutMs): Promise<Buffer> {
    return this.until(() => (this.buf.length >= n ? this.take(n) : undefined), what, timeoutMs);
  }

  write(b: Buffer): void {
    if (this.ended) throw this.ended;
    this.sock.write(b);
  }

  send(msg: unknown): void {
    this.write(Buffer.from(JSON.stringify(msg, (_k, v) => (typeof v === 'bigint' ? v.toString() : v)) + '\n'));
  }

  /** The next JSON object; rejects if the peer closes, stays silent for the timeout, or sends anything else. */
  async recv<T = Record<string, unknown>>(timeoutMs = this.timeoutMs): Promise<T> {
    const line = await this.until(() => {
      const nl = this.buf.indexOf(10);
      if (nl >= 0) return this.take(nl + 1).toString('utf8', 0, nl);
      if (this.buf.length > MAX_LINE) throw new Error('out-of-band message too long');
      return undefined;
    }, 'a message', timeoutMs);
    return jsonMessage<T>(line, 'out-of-band peer');
  }

  /** Both sides call this; neither returns until the other has arrived. */
  async barrier(tag: string): Promise<void> {
    this.send({ barrier: tag });
    const m = await this.recv<{ barrier?: string }>();
    if (m.barrier !== tag) throw new Error(`out-of-band peer out of step: expected '${tag}', got ${JSON.stringify(m)}`);
  }

  /**
   * Ends our side and waits (bounded) for the peer to end its side too, so that neither
   * side's close turns into a reset while the other still reads. Whatever the peer still
   * sends (perftest's final "done") is dropped.
   */
  async finish(timeoutMs = this.timeoutMs): Promise<void> {
    if (this.ended) return;
    this.sock.end();
    try {
      await this.until(() => { this.buf = Buffer.alloc(0); return undefined; }, 'the end of the connection', timeoutMs);
    } catch {
      // The peer went away (what we waited for) or stayed: either way we are done.
    }
    this.ended ??= new Error('closed');
    this.sock.destroy();
  }

  /** Ends our side; the socket no longer keeps the process alive (a peer that holds it open cannot). */
  close(): void {
    this.ended ??= new Error('closed');
    this.sock.end();
    this.sock.unref();
  }
}

/** Listen on `port` (all addresses unless `host`), accept one peer, stop listening. */
export async function oobAccept(port: number, opts: { host?: string; timeoutMs: number; onListening?: (port: number) => void }): Promise<OobChannel> {
  const server = net.createServer();
  server.listen({ port, host: opts.host, exclusive: true });
  await once(server, 'listening');
  opts.onListening?.((server.address() as net.AddressInfo).port);
  try {
    const [sock] = (await once(server, 'connection')) as [net.Socket];
    return new OobChannel(sock, opts.timeoutMs);
  } finally {
    server.close();
  }
}

export async function oobConnect(host: string, port: number, timeoutMs: number): Promise<OobChannel> {
  const sock = net.connect({ host, port });
  const timer = setTimeout(() => sock.destroy(new Error(`timed out connecting to ${host}:${port}`)), timeoutMs);
  try {
    await once(sock, 'connect');
  } catch (err) {
    throw new Error(`Couldn't connect to ${host}:${port}: ${(err as Error).message}`);
  } finally {
    clearTimeout(timer);
  }
  return new OobChannel(sock, timeoutMs);
}
