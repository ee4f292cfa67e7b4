// The out-of-band TCP channel the tools use to swap QP numbers, PSNs, GIDs and keys before
// any RDMA traffic flows, and to keep both sides in step between test phases. Messages are
// JSON lines; every wait is bounded, and a closed or silent peer is a clear error.

import net from 'node:net';
import { once } from 'node:events';

export class OobChannel {
  private buf = '';
  private readonly queue: unknown[] = [];
  private waiter: { resolve: (v: unknown) => void; reject: (e: Error) => void } | undefined;
  private ended: Error | undefined;

  constructor(private readonly sock: net.Socket, private readonly timeoutMs: number) {
    sock.setNoDelay(true);
    sock.setEncoding('utf8');
    sock.on('data', (chunk: string) => {
      this.buf += chunk;
      for (let nl = this.buf.indexOf('\n'); nl >= 0; nl = this.buf.indexOf('\n')) {
        const line = this.buf.slice(0, nl);
        this.buf = this.buf.slice(nl + 1);
        let msg: unknown;
        try {
          msg = JSON.parse(line);
        } catch {
          this.fail(new Error('out-of-band peer sent a malformed message'));
          return;
        }
        this.push(msg);
      }
      if (this.buf.length > 1 << 20) this.fail(new Error('out-of-band message too long'));
    });
    sock.on('error', (err) => this.fail(new Error(`out-of-band connection: ${err.message}`)));
    sock.on('close', () => this.fail(new Error('out-of-band peer closed the connection')));
  }

  private push(msg: unknown) {
    const w = this.waiter;
    if (w) { this.waiter = undefined; w.resolve(msg); } else this.queue.push(msg);
  }

  private fail(err: Error) {
    if (this.ended) return;
    this.ended = err;
    this.sock.destroy();
    const w = this.waiter;
    this.waiter = undefined;
    w?.reject(err);
  }

  send(msg: unknown): void {
    if (this.ended) throw this.ended;
    this.sock.write(JSON.stringify(msg, (_k, v) => (typeof v === 'bigint' ? v.toString() : v)) + '\n');
  }

  /** The next message; rejects if the peer closes or stays silent for the timeout. */
  recv<T = Record<string, unknown>>(timeoutMs = this.timeoutMs): Promise<T> {
    if (this.queue.length) return Promise.resolve(this.queue.shift() as T);
    if (this.ended) return Promise.reject(this.ended);
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiter = undefined;
        reject(new Error(`out-of-band peer silent for ${timeoutMs} ms`));
      }, timeoutMs);
      this.waiter = {
        resolve: (v) => { clearTimeout(timer); resolve(v as T); },
        reject: (e) => { clearTimeout(timer); reject(e); },
      };
    });
  }

  /** Both sides call this; neither returns until the other has arrived. */
  async barrier(tag: string): Promise<void> {
    this.send({ barrier: tag });
    const m = await this.recv<{ barrier?: string }>();
    if (m.barrier !== tag) throw new Error(`out-of-band peer out of step: expected '${tag}', got ${JSON.stringify(m)}`);
  }

  close(): void {
    this.ended ??= new Error('closed');
    this.sock.end();
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
    throw new Error(`couldn't connect to ${host}:${port}: ${(err as Error).message}`);
  } finally {
    clearTimeout(timer);
  }
  return new OobChannel(sock, timeoutMs);
}
