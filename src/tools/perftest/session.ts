// One side of a perftest run: the rxe device, its RC QP and buffer, the out-of-band channel,
// and the exchange that connects the two QPs. Everything opened here is closed by close(),
// whatever stage the run failed at.

import { randomBytes } from 'node:crypto';
import {
  type MtuValue, Access, connectQp, createRxeDevice, gidFromAddress, gidToString, mtuBytes, mtuEnum, QpType, wcStatusStr, WcStatus,
  type CQ, type Context, type Device, type MR, type PD, type QP, type WorkCompletion,
} from '../../index.js';
import { queryRxeCounters, rxeOf } from '../../index.js';
import { oobAccept, oobConnect, type OobChannel } from '../oob.js';
import type { PerftestOptions } from './options.js';
import { hex } from '../table.js';

export interface EndpointInfo { qpn: number; psn: number; gid: string; rkey: number; addr: number; mtu: number }

const PROTOCOL = 'softrdma-perftest/1';
export const MAX_INLINE = 256;

export class Session {
  dev: Device | undefined;
  ctx: Context | undefined;
  pd: PD | undefined;
  cq!: CQ;
  qp!: QP;
  buf!: Buffer;
  mr!: MR;
  oob: OobChannel | undefined;
  remote!: EndpointInfo;
  local!: EndpointInfo;
  mtu = 0;
  /** Bytes in each of the two halves of `buf` (latency tests send from one, receive into the other). */
  half = 0;

  constructor(readonly o: PerftestOptions) {}

  get isServer(): boolean { return this.o.host === undefined; }

  /** Messages that are not results go to stderr with --json, so stdout stays machine-readable. */
  say(line: string): void {
    if (this.o.json) process.stderr.write(line + '\n');
    else process.stdout.write(line + '\n');
  }

  async open(): Promise<void> {
    const o = this.o;
    try {
      this.dev = await createRxeDevice({ address: o.bind, port: o.udpPort, name: o.ibDev });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EADDRINUSE') throw err;
      throw new Error(`UDP port ${o.udpPort} on ${o.bind} is taken (another rxe device, perftest or pingpong on this address?). ` +
        'Two processes on one host need an address each: e.g. --bind 127.0.0.2 for the server and --bind 127.0.0.3 ' +
        'for the client (each on port 4791 of its own address); or --udp-port 0 on the server and, on the client, ' +
        'the port the server prints.');
    }
    const gids = this.dev.open();
    try {
      if (!gids.queryGidTable().some((g) => g.index === o.gidIndex)) {
        throw new Error(`no GID at index ${o.gidIndex} on ${this.dev.name}: its GID table has index 0 only (${gidToString(gids.queryGid())}); softrdma devinfo -v shows it`);
      }
    } finally {
      gids.close();
    }
    this.ctx = this.dev.open();
    this.pd = this.ctx.allocPd();

    if (this.isServer) {
      this.oob = await oobAccept(o.port, {
        timeoutMs: o.timeoutMs,
        onListening: (port) => this.say(`\n************************************\n* Waiting for client to connect... *\n************************************\n(out-of-band TCP port ${port}, RoCE UDP port ${rxeOf(this.dev!).port})`),
      });
      const hello = await this.oob.recv<{ protocol?: string; test?: string; sizes?: number[]; iters?: number; txDepth?: number; durationSec?: number }>();
      if (hello.protocol !== PROTOCOL) throw new Error(`peer does not speak ${PROTOCOL}`);
      if (hello.test !== o.test) {
        this.oob.send({ error: `server runs ${o.test}, client asked for ${hello.test}` });
        throw new Error(`client asked for ${hello.test}, this server runs ${o.test}`);
      }
      // As in perftest both sides should be given the same options; the client's win.
      if (!Array.isArray(hello.sizes) || !hello.sizes.every((s) => Number.isInteger(s) && s > 0 && s <= 1 << 23)) throw new Error('client sent bad sizes');
      if (!Number.isInteger(hello.iters) || hello.iters! < 1) throw new Error('client sent a bad iteration count');
      if (o.explicit.size && hello.sizes.join() !== o.sizes.join()) this.say(`note: using the client's sizes (${hello.sizes.join(', ')})`);
      if (o.explicit.iters && hello.iters !== o.iters) this.say(`note: using the client's iteration count (${hello.iters})`);
      o.sizes = hello.sizes;
      o.iters = hello.iters!;
      o.txDepth = hello.txDepth ?? o.txDepth;
      o.durationSec = typeof hello.durationSec === 'number' && hello.durationSec > 0 ? hello.durationSec : undefined;
      this.oob.send({ protocol: PROTOCOL, ok: true });
    } else {
      this.oob = await oobConnect(o.host!, o.port, o.timeoutMs);
      this.oob.send({ protocol: PROTOCOL, test: o.test, sizes: o.sizes, iters: o.iters, txDepth: o.txDepth, durationSec: o.durationSec });
      const ok = await this.oob.recv<{ ok?: boolean; error?: string }>();
      if (!ok.ok) throw new Error(`server refused: ${ok.error ?? 'no reason given'}`);
    }

    const maxSize = Math.max(...o.sizes, 8);
    this.half = maxSize;
    this.buf = randomBytes(2 * maxSize);
    this.mr = this.pd.regMr(this.buf, Access.LOCAL_WRITE | Access.REMOTE_WRITE | Access.REMOTE_READ | Access.REMOTE_ATOMIC);
    const depth = Math.max(o.txDepth, 512) + 16;
    this.cq = this.ctx.createCq(2 * depth);
    this.qp = this.pd.createQp({
      qpType: QpType.RC, sendCq: this.cq, recvCq: this.cq,
      cap: { maxSendWr: depth, maxRecvWr: depth, maxSendSge: 1, maxRecvSge: 1, maxInlineData: MAX_INLINE },
    });
    const portMtu = this.ctx.queryPort().activeMtu;
    this.local = {
      qpn: this.qp.qpn, psn: randomBytes(3).readUIntBE(0, 3), gid: gidToString(this.ctx.queryGid(1, o.gidIndex)),
      rkey: this.mr.rkey, addr: this.mr.addr, mtu: Math.min(portMtu, o.mtu ? mtuEnum(o.mtu) : portMtu),
    };
    this.oob.send({ endpoint: this.local });
    const r = (await this.oob.recv<{ endpoint?: EndpointInfo }>()).endpoint;
    if (!r || !Number.isInteger(r.qpn) || !Number.isInteger(r.psn) || typeof r.gid !== 'string' || !Number.isInteger(r.mtu)) {
      throw new Error('peer sent a malformed endpoint');
    }
    this.remote = r;
    this.mtu = Math.min(this.local.mtu, r.mtu);
    connectQp(this.qp, { qpn: r.qpn, psn: r.psn, gid: parseGid(r.gid) }, { psn: this.local.psn, mtu: this.mtu as MtuValue, minRnrTimer: 1, sgidIndex: o.gidIndex });
  }

  describe(title: string): string {
    const o = this.o;
    // perftest_communication.h: BASIC_ADDR_FMT, RDMA_FMT ("%#0Nx": 0x counts in the width) and PERF_GID_FMT (bytes in decimal).
    const cx = (n: number, width: number) => (n === 0 ? '0'.repeat(width) : `0x${hex(n, width - 2)}`);
    const gidBytes = (g: string) => Array.from(parseGid(g), (b) => String(b).padStart(2, '0')).join(':');
    const fmt = (e: EndpointInfo) =>
      ` LID ${cx(0, 4)} QPN ${cx(e.qpn, 6)} PSN ${cx(e.psn, 6)} RKey ${cx(e.rkey, 8)} VAddr ${cx(e.addr, 16)}\n GID: ${gidBytes(e.gid)}`;
    return [
      '-'.repeat(87),
      `                    ${title}`,
      ` Number of qps   : 1\t\tTransport type : IB`,
      ` Connection type : RC\t\tUsing SRQ      : OFF`,
      ` Device          : ${this.dev!.name}\t\tBound address  : ${o.bind}`,
      o.test.endsWith('_bw') ? ` TX depth        : ${o.txDepth}` : ` Mtu             : ${mtuBytes(this.mtu)}[B]`,
      o.test.endsWith('_bw') ? ` Mtu             : ${mtuBytes(this.mtu)}[B]` : ` Max inline data : ${MAX_INLINE}[B]`,
      ` Link type       : Ethernet`,
      ` GID index       : ${o.gidIndex}`,
      ` Data ex. method : Ethernet (TCP port ${o.port})`,
      '-'.repeat(87),
      ` local address:${fmt(this.local)}`,
      ` remote address:${fmt(this.remote)}`,
      '-'.repeat(87),
    ].join('\n');
  }

  /** Poll until `want` completions arrive or the peer has been silent for the timeout. */
  async poll(want: number, onWc: (wc: WorkCompletion) => void): Promise<void> {
    let got = 0;
    let last = Date.now();
    while (got < want) {
      const wcs = this.cq.poll(32);
      for (const wc of wcs) {
        if (wc.status !== WcStatus.SUCCESS) throw new Error(`completion error: ${wcStatusStr(wc.status)} (wr_id ${wc.wrId})`);
        onWc(wc);
      }
      got += wcs.length;
      if (wcs.length) last = Date.now();
      else {
        if (Date.now() - last > this.o.timeoutMs) throw new Error(`no completion for ${this.o.timeoutMs} ms (${got}/${want})`);
        await yieldToLoop();
      }
    }
  }

  /** The rxe device and QP counters (driver-namespace methods). */
  counters(): { device: Record<string, number>; qp: Record<string, number> } {
    return queryRxeCounters(this.ctx!, this.qp);
  }

  async close(): Promise<void> {
    this.oob?.close();
    try { this.ctx?.close(); } finally { await this.dev?.close(); }
  }
}

/** One turn of the event loop: lets received packets in, like a busy-polling perftest loop. */
export function yieldToLoop(): Promise<void> {
  return new Promise((r) => setImmediate(r));
}


function parseGid(s: string): Uint8Array {
  // gidToString gives the IPv6 text form; accept it, or a plain IP address.
  try {
    return gidFromAddress(s);
  } catch {
    throw new Error(`peer sent a bad GID '${s}'`);
  }
}
