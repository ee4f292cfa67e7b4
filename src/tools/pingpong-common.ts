// What rdma-core's *_pingpong examples share, for pingpong.ts and srq-pingpong.ts: the TCP
// exchange's address message, its reader, and the completion loop.

import net, { isIPv4, type Socket } from 'node:net';
import { once } from 'node:events';
import { addressFromGid, type CompChannel, type CQ, type WorkCompletion } from '../index.js';
import { hex } from './table.js';
import { WaitTimeoutError, WaitTimeouts } from './wait-timeouts.js';
import { spinPoll } from './spin-poll.js';

/** The 52-byte message: "%04x:%06x:%06x:%s" with a 32-hex-digit GID and the NUL. */
export const MSG_BYTES = 52;

export interface Dest { lid: number; qpn: number; psn: number; gid: Uint8Array }

/** Byte i of the GID is hex digits 2i..2i+1 (rdma-core's gid_to_wire_gid on little-endian hosts). */
export function encodeDest(d: Dest): Buffer {
  const gid = Buffer.from(d.gid).toString('hex');
  const text = `${hex(d.lid, 4)}:${hex(d.qpn, 6)}:${hex(d.psn, 6)}:${gid}`;
  const out = Buffer.alloc(MSG_BYTES);
  out.write(text, 'latin1');
  return out;
}

export function decodeDest(msg: Buffer): Dest {
  const text = msg.subarray(0, msg.indexOf(0) >= 0 ? msg.indexOf(0) : msg.length).toString('latin1');
  const m = /^([0-9a-fA-F]{1,4}):([0-9a-fA-F]{1,6}):([0-9a-fA-F]{1,6}):([0-9a-fA-F]{32})$/.exec(text);
  if (!m) throw new Error(`malformed peer address '${text.slice(0, 60)}'`);
  return { lid: parseInt(m[1]!, 16), qpn: parseInt(m[2]!, 16), psn: parseInt(m[3]!, 16), gid: Buffer.from(m[4]!, 'hex') };
}


/** inet_ntop(AF_INET6) of a GID, as the C tools print it (IPv4-mapped as ::ffff:a.b.c.d). */
export function gidText(gid: Uint8Array): string {
  const addr = addressFromGid(gid);
  return isIPv4(addr) ? `::ffff:${addr}` : addr;
}

/** Read exactly n bytes (the C tools do one read() per message; TCP may split it). */
export class Reader {
  private buf = Buffer.alloc(0);
  private ended = false;
  private wake: (() => void) | undefined;
  constructor(sock: Socket) {
    sock.on('data', (d: Buffer) => { this.buf = Buffer.concat([this.buf, d]); this.wake?.(); });
    sock.on('close', () => { this.ended = true; this.wake?.(); });
    sock.on('error', () => { this.ended = true; this.wake?.(); });
  }
  async read(n: number, timeoutMs: number): Promise<Buffer> {
    const deadline = Date.now() + timeoutMs;
    while (this.buf.length < n) {
      if (this.ended) throw new Error(`peer closed the exchange after ${this.buf.length}/${n} bytes`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error('peer silent during the exchange');
      await new Promise<void>((r) => { const t = setTimeout(r, left); this.wake = () => { clearTimeout(t); r(); }; });
      this.wake = undefined;
    }
    const out = this.buf.subarray(0, n);
    this.buf = this.buf.subarray(n);
    return out;
  }
}

/**
 * The TCP exchange (pp_client_exch_dest, pp_server_exch_dest): the client connects, sends its
 * lines, reads the server's, sends "done\0" and ends; the server accepts one connection, reads
 * the client's lines, calls `beforeAnswer` with them (it connects its QPs, as the C servers do
 * before they answer), sends its own and waits for the "done". Returns the peer's bytes and the
 * socket, ended, for the caller to destroy when the run is over (destroyed here on failure).
 * `announce(tcpPort)`: the server says which port it took (scripts' -p 0).
 */
export async function exchangeDests(
  x: { servername: string | undefined; port: number; announce?: (tcpPort: number) => void },
  mine: Buffer, theirLength: number, beforeAnswer: (theirs: Buffer) => void,
): Promise<{ theirs: Buffer; sock: Socket }> {
  let sock: Socket | undefined;
  try {
    if (x.servername) {
      sock = net.connect({ host: x.servername, port: x.port });
      await once(sock, 'connect').catch((e: Error) => { throw new Error(`Couldn't connect to ${x.servername}:${x.port}: ${e.message}`); });
      const rd = new Reader(sock);
      sock.write(mine);
      const theirs = await rd.read(theirLength, EXCHANGE_TIMEOUT_MS);
      sock.write(Buffer.from('done\0', 'latin1'));
      sock.end();
      return { theirs, sock };
    }
    const server = net.createServer();
    server.listen({ port: x.port, exclusive: true });
    await once(server, 'listening');
    x.announce?.((server.address() as net.AddressInfo).port);
    try {
      [sock] = (await once(server, 'connection')) as [Socket];
    } finally {
      server.close();
    }
    const rd = new Reader(sock);
    const theirs = await rd.read(theirLength, EXCHANGE_TIMEOUT_MS);
    beforeAnswer(theirs);
    sock.write(mine);
    await rd.read(5, EXCHANGE_TIMEOUT_MS);
    sock.end();
    return { theirs, sock };
  } catch (err) {
    sock?.destroy();
    throw err;
  }
}

export const SEND_WRID = 2, RECV_WRID = 1;
export const EXCHANGE_TIMEOUT_MS = 60_000;
/**
 * Polling, how long the CQ may stay empty before we sleep on it until it has a completion
 * (as perftest does, session.ts): spinning alone, as the C tools do on a hardware CQ, takes the
 * CPU from the peer on a busy host, and every exchange then costs a scheduler slice.
 */
export const SPIN_NS = 50_000n;

/**
 * The C tools' loop: poll `cq` (or, with a channel, wait for its event and poll once) and hand
 * each completion to `onWc`, up to `batch` a poll, until `done()`. Spins while an answer is likely soon (SPIN_NS), then
 * sleeps until the CQ has a completion; fails after EXCHANGE_TIMEOUT_MS with no completion
 * (`counts()` says how far the run got).
 */
export async function driveCq(cq: CQ, channel: CompChannel | undefined, batch: number, done: () => boolean, onWc: (wc: WorkCompletion) => void, counts: () => string): Promise<void> {
  let idleSince = Date.now();
  let quietSince = process.hrtime.bigint();
  const waits = new WaitTimeouts();
  const silent = () => new Error(`no completion for ${EXCHANGE_TIMEOUT_MS} ms (${counts()})`);
  const wcs: WorkCompletion[] = []; // one array for every poll: a spin allocates nothing
  while (!done()) {
    if (channel) {
      await waits.run(EXCHANGE_TIMEOUT_MS, (signal) => channel.getCqEvent({ signal }));
      cq.reqNotify();
    }
    spinPoll(cq, batch, undefined, wcs); // a CQ with a channel cannot spin: one poll
    for (const wc of wcs) onWc(wc);
    if (wcs.length) {
      idleSince = Date.now();
      quietSince = process.hrtime.bigint();
      continue;
    }
    if (channel) continue;
    if (Date.now() - idleSince > EXCHANGE_TIMEOUT_MS) throw silent();
    // Spin (a turn of the event loop at a time) while an answer is likely soon; then sleep
    // until the CQ has a completion.
    if (process.hrtime.bigint() - quietSince < SPIN_NS) {
      await new Promise((r) => setImmediate(r));
      continue;
    }
    try {
      const wc = await waits.run(Math.max(1, EXCHANGE_TIMEOUT_MS - (Date.now() - idleSince)), (signal) => cq.next({ signal }));
      onWc(wc);
      idleSince = Date.now();
    } catch (err) {
      if (err instanceof WaitTimeoutError) throw silent();
      throw err;
    }
    quietSince = process.hrtime.bigint();
  }
}
