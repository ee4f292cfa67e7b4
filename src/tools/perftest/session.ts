// One side of a perftest run: the rxe device, its RC QPs and buffer, the out-of-band channel,
// and perftest's exchange that connects the QPs (exchange.ts has the messages; this file has
// their order). Everything opened here is closed by close(), whatever stage the run failed at.
//
// The order, as perftest 6.06 runs it over Ethernet (TCP): versions, then the cycle buffer and
// cache line sizes, then the MTU; then rounds of address messages ("handshakes", one per QP or
// one for QP 0 as a barrier) whose number and place depend on the test, the QPs are moved to
// RTS in between; the test; and ctx_close_connection (one more handshake and "done").

import { randomBytes } from 'node:crypto';
import {
  type MtuValue, Access, connectQp, QpAttr, createRxeDevice, gidToString, mtuBytes, mtuEnum, QpType, wcStatusStr, WcStatus,
  type CQ, type Context, type Device, type MR, type PD, type QP, type WorkCompletion,
} from '../../index.js';
import { queryRxeCounters, rxeOf } from '../../index.js';
import { oobAccept, oobConnect, type OobChannel } from '../oob.js';
import { udpPortTaken } from '../usage.js';
// The rdma_cm is loaded for -R only (a run without it loads none of its modules: a cold start's cost).
import type { CmChannel } from './cm-channel.js';
import type { EventChannel, RdmaCmEvent, RdmaCmId } from '../../cm/index.js';
import type * as Cm from '../../cm/index.js';
import { areaBytes, CACHE_LINE, cqEntries, cqModeration, CYCLE_BUFFER, MAX_BUFFER_BYTES, MAX_SIZE_OPT, outReads, postsReceives, readsOrAtomics, resourceProblem, RX_DEPTH, txDepth, WR_SLACK, ATOMIC_TYPES, type AtomicType, type PerftestOptions } from './options.js';
import { hex } from '../table.js';
import {
  BW_REPORT_BYTES, decodeBwReport, decodeDest, decodeDestCm, decodeInt32, decodeMtu, decodeVersion, DEST_BYTES, DEST_CM_BYTES, DONE,
  encodeBwReport, encodeDest, encodeDestCm,
  encodeInt32, encodeMtu, encodeVersion, MIN_VERSION, VERSION_BYTES, type BwReport, type Dest,
} from './exchange.js';
import { remoteAddr, type RemoteAddr } from '../../abi/remote-addr.js';
import { WaitTimeoutError, WaitTimeouts } from '../wait-timeouts.js';
import { spinPoll } from '../spin-poll.js';

/**
 * perftest's inline_size on a Linux rxe: ctx_set_max_inline knows no rxe (vendor part 0 is
 * "UNKNOWN"), so it is 0 for every test ("Max inline data : 0[B]"), and nothing is sent inline.
 */
export const INLINE_SIZE = 0;
export { RX_DEPTH };

/**
 * What a softrdma client tells a softrdma server (only between two softrdma sides). marginSec
 * came later: a server that finds none (an older client) takes the default margin of the
 * client's -D, which is what such a client used unless it was given -f; an older server
 * ignores it. Adding a field that may be absent keeps the protocol's name.
 */
interface Hello { protocol: string; test: string; sizes: number[]; iters: number; txDepth: number; durationSec?: number; marginSec?: number; qps: number; bidir: boolean; all: boolean; cqMod?: number; atomicType?: AtomicType }
const PROTOCOL = 'softrdma-perftest/2';

/** How long poll() spins on an empty CQ before it waits for a completion event (ns). */
const SPIN_NS = 50_000;

export class Session {
  dev: Device | undefined;
  ctx: Context | undefined;
  pd: PD | undefined;
  cq!: CQ;
  qps: QP[] = [];
  buf!: Buffer;
  mr!: MR;
  /** The exchange: perftest's TCP socket, or with -R an rdma_cm connection (cm-channel.ts). */
  oob: OobChannel | CmChannel | undefined;
  /** -R: the event channel and the ids of the test's QPs (one connection per QP). */
  cmCh: EventChannel | undefined;
  cmIds: RdmaCmId[] = [];
  /** -R: softrdma/cm, loaded when the exchange starts. */
  private cm: typeof Cm | undefined;
  local: Dest[] = [];
  remote: Dest[] = [];
  mtu = 0;
  /** -R: the rdma_cm port (-p, or the one a server given 0 took). */
  cmPort = 0;
  /** The exchange's TCP port (-p, or the one a server given 0 took). */
  oobPort = 0;
  /** Both sides are softrdma (the version message said so): our extra messages may flow. */
  softrdma = false;
  peerVersion = '';
  /** Bytes per area: QP i sends from area i and is written/read/sent into at area qps + i. */
  area = 0;
  /**
   * perftest's out_reads (options.ts outReads): READ and atomic tests -o or the device's
   * max_qp_rd_atom, the others 1. The address messages' OUT, the header's "Outstand reads", our
   * QPs' max_dest_rd_atomic (and, with -R, the responder resources and initiator depth).
   */
  outReads = 1;
  /** The device's max_qp_init_rd_atom: the most READs/atomics our QPs may have in flight. */
  maxInitRdAtom = 1;

  constructor(readonly o: PerftestOptions) {}

  get isServer(): boolean { return this.o.host === undefined; }
  get qp(): QP { return this.qps[0]!; }
  get nq(): number { return this.o.qps; }
  sendOff(i: number): number { return i * this.area; }
  recvOff(i: number): number { return (this.nq + i) * this.area; }
  remoteAddr(i: number): RemoteAddr { return remoteAddr(this.remote[i]!.vaddr); }

  /** Messages that are not results go to stderr with --json or --output, so stdout stays machine-readable. */
  say(line: string): void {
    if (this.o.json || this.o.output) process.stderr.write(line + '\n');
    else process.stdout.write(line + '\n');
  }

  /** softrdma's own lines (ports, the peer's version), which perftest does not print: on stderr, so stdout stays perftest's. */
  extra(line: string): void {
    process.stderr.write(line + '\n');
  }

  async open(): Promise<void> {
    const o = this.o;
    try {
      this.dev = await createRxeDevice({ address: o.bind, port: o.udpPort, name: o.ibDev });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EADDRINUSE') throw err;
      throw new Error(udpPortTaken(o.bind, o.udpPort, 'perftest'));
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
    // check_link_and_mtu's ctx_set_out_reads, before the exchange starts.
    const limits = this.ctx.queryDevice();
    this.outReads = outReads(o, limits.maxQpRdAtom, (line) => process.stderr.write(line + '\n'));
    this.maxInitRdAtom = limits.maxQpInitRdAtom;

    const CmChannel = o.rdmaCm ? (await import('./cm-channel.js')).CmChannel : undefined;
    if (o.rdmaCm) this.cm = await import('../../cm/index.js');
    if (CmChannel && this.isServer) {
      this.oob = await CmChannel.accept(o.bind, o.port, o.timeoutMs, (port) => {
        this.cmPort = port;
        this.say(WAITING);
        this.extra(`(rdma_cm port ${port} on ${o.bind}, RoCE UDP port ${rxeOf(this.dev!).port})`);
      });
    } else if (CmChannel) {
      this.cmPort = o.port;
      this.oob = await CmChannel.connect(o.host!, o.port, o.bind, o.timeoutMs);
    } else if (this.isServer) {
      this.oob = await oobAccept(o.port, {
        timeoutMs: o.timeoutMs,
        onListening: (port) => {
          this.oobPort = port;
          this.say(WAITING);
          this.extra(`(out-of-band TCP port ${port}, RoCE UDP port ${rxeOf(this.dev!).port})`);
        },
      });
    } else {
      this.oob = await oobConnect(o.host!, o.port, o.timeoutMs);
    }
    const oob = this.oob;
    // A peer that goes away mid-run (its exchange connection closes) ends a completion wait at
    // once, rather than at -D's end or after --timeout of silence.
    oob.onGone = (err) => { this.exchangeGone = err; this.waits.abort(err); };

    // exchange_versions / check_version_compatibility
    oob.write(encodeVersion(!o.perftestOnly));
    const v = decodeVersion(await oob.readBytes(VERSION_BYTES, "the peer's perftest version"));
    this.peerVersion = v.version;
    if (!(v.number >= MIN_VERSION)) throw new Error(`the peer's perftest version '${printable(v.version)}' is older than 5.70 (or not a version): this exchange needs 5.70 or later`);
    this.softrdma = v.softrdma && !o.perftestOnly;
    if (this.softrdma) await this.hello();

    // check_sys_data: both take the larger of the two
    oob.write(encodeInt32(CYCLE_BUFFER));
    const cycle = Math.max(CYCLE_BUFFER, decodeInt32(await oob.readBytes(4, "the peer's cycle buffer size"), 'cycle buffer size'));
    oob.write(encodeInt32(CACHE_LINE));
    const line = Math.max(CACHE_LINE, decodeInt32(await oob.readBytes(4, "the peer's cache line size"), 'cache line size'));
    if (cycle > 1 << 30 || line > 1 << 16) throw new Error(`the peer asked for a cycle buffer of ${cycle} bytes and a cache line of ${line}: too large`);

    // check_mtu: the smaller of the two, if the peer's is a valid one
    const portMtu = this.ctx.queryPort().activeMtu;
    const mine = Math.min(portMtu, o.mtu ? mtuEnum(o.mtu) : portMtu);
    oob.write(encodeMtu(mine));
    const theirs = decodeMtu(await oob.readBytes(2, "the peer's MTU"));
    this.mtu = theirs !== undefined && theirs < mine ? theirs : mine;

    // The buffer: per QP a send area and a target area, each as big as the largest message
    // and the cycle buffer the peer may walk through, rounded to cache lines.
    this.area = areaBytes(Math.max(...o.sizes), cycle, line);
    if (2 * this.nq * this.area > MAX_BUFFER_BYTES) {
      throw new Error(`the peer's cycle buffer of ${cycle} bytes makes the buffer ${2 * this.nq * this.area} bytes (-q ${this.nq}), more than ${MAX_BUFFER_BYTES}`);
    }
    const lat = o.test.endsWith('_lat');
    // Latency tests poll a byte for the peer's round number, so they start from zeros; bw
    // tests move random bytes, which the data check can tell apart.
    this.buf = lat ? Buffer.alloc(2 * this.nq * this.area) : randomBytes(2 * this.nq * this.area);
    this.mr = this.pd.regMr(this.buf, Access.LOCAL_WRITE | Access.REMOTE_WRITE | Access.REMOTE_READ | Access.REMOTE_ATOMIC);
    const sendDepth = o.txDepth + WR_SLACK;
    this.cq = this.ctx.createCq(cqEntries(this.nq, o.txDepth, postsReceives(o.test)));
    const gid = this.ctx.queryGid(1, o.gidIndex);
    const cap = { maxSendWr: sendDepth, maxRecvWr: RX_DEPTH + WR_SLACK, maxSendSge: 1, maxRecvSge: 1, maxInlineData: INLINE_SIZE };
    if (o.rdmaCm) {
      // create_rdma_cm_connection: a handshake, the rdma_cm connections (the QPs made by the ids), a handshake.
      // Our server listens before that first handshake (perftest's after it, and its client retries).
      const listener = this.isServer ? this.cmListen() : undefined;
      try {
        await this.sync();
        await this.connectThroughCm(cap, listener);
      } finally {
        listener?.destroyId();
      }
      await this.sync();
    }
    for (let i = 0; i < this.nq; i++) {
      const qp = o.rdmaCm ? this.cmIds[i]!.qp! : this.pd.createQp({ qpType: QpType.RC, sendCq: this.cq, recvCq: this.cq, cap });
      this.qps.push(qp);
      this.local.push({
        lid: 0, outReads: this.outReads, qpn: qp.qpn, psn: randomBytes(3).readUIntBE(0, 3), rkey: this.mr.rkey,
        vaddr: BigInt(this.mr.addr + this.recvOff(i)), gid: Uint8Array.from(gid), srqn: 0,
      });
    }

    // The address rounds, in the order of each test's main().
    const t = o.test;
    const perQp = async () => { for (let i = 0; i < this.nq; i++) this.remote[i] = await this.handshake(i); };
    if (t === 'write_lat' || t === 'read_lat' || t === 'atomic_lat') await this.sync();
    await perQp();
    const v4 = (g: Uint8Array) => g.subarray(0, 12).every((b, k) => b === (k < 10 ? 0 : 0xff));
    if (!o.rdmaCm && v4(this.local[0]!.gid) !== v4(this.remote[0]!.gid)) {
      throw new Error(`the GID types differ: ours ${gidToString(this.local[0]!.gid)}, the peer's ${gidToString(this.remote[0]!.gid)} (one is IPv4, one IPv6; perftest: "Found Incompatibility issue with GID types")`);
    }
    for (let i = 0; i < this.nq; i++) {
      const r = this.remote[i]!;
      if (Number(r.vaddr) > Number.MAX_SAFE_INTEGER) throw new Error(`the peer's buffer address 0x${r.vaddr.toString(16)} is beyond 2^53`);
      if (o.rdmaCm) continue; // the rdma_cm moved the QPs to RTS
      connectQp(this.qps[i]!, { qpn: r.qpn, psn: r.psn, gid: r.gid }, {
        psn: this.local[i]!.psn, mtu: this.mtu as MtuValue, sgidIndex: o.gidIndex, hopLimit: 64,
        minRnrTimer: 12, timeout: 14, retryCnt: 7, rnrRetry: 7,
        // ctx_modify_qp_to_rtr/rts: max_dest_rd_atomic ours, max_rd_atomic the peer's (at most the device's).
        maxDestRdAtomic: this.outReads, maxRdAtomic: Math.max(1, Math.min(this.maxInitRdAtom, r.outReads)),
      });
    }
    // atomic_lat as read_lat (perftest 4.5-0.17's atomic_lat.c; later versions drop the round per QP here).
    if (t === 'send_bw' || t === 'send_lat') { await this.sync(); await perQp(); } else { await perQp(); await this.sync(); }
  }

  /**
   * -R: one rdma_cm connection per QP to the server's address and port, as create_rdma_cm_connection
   * does. The client resolves, routes, creates the QP on the id and connects (responder resources
   * and initiator depth = out_reads for READ and atomics, 0 otherwise; retries 7/7); it does so one
   * id after the other, so that the server's QP i (in the order the requests come) is our QP i,
   * which the data check relies on (perftest starts all at once; with -q 1 that is the same).
   * perftest's client retries the lot 10 times, 100 ms apart, when the server is not listening
   * yet (the server listens after its handshake); ours listens before it. The server takes
   * nq CONNECT_REQUESTs, creates each QP, accepts, sets min_rnr_timer 12 (MIN_RNR_TIMER) as
   * perftest does, and drops the listener.
   */
  private cmListen(): RdmaCmId {
    const ch = this.cmCh = this.cm!.createEventChannel();
    const listener = this.cm!.createId(ch, 'tcp');
    try {
      listener.bindAddr(this.o.bind, this.cmPort);
      listener.listen(this.nq);
    } catch (err) {
      listener.destroyId();
      throw err;
    }
    return listener;
  }

  private async connectThroughCm(cap: { maxSendWr: number; maxRecvWr: number; maxSendSge: number; maxRecvSge: number; maxInlineData: number }, listener: RdmaCmId | undefined): Promise<void> {
    const o = this.o;
    const ch = this.cmCh ??= this.cm!.createEventChannel();
    const attr = this.ctx!.queryDevice();
    const reads = readsOrAtomics(o.test);
    const param = {
      responderResources: reads ? Math.min(this.outReads, attr.maxQpRdAtom) : 0,
      initiatorDepth: reads ? Math.min(this.outReads, attr.maxQpInitRdAtom) : 0,
      retryCount: 7, rnrRetryCount: 7,
    };
    const init = { sendCq: this.cq, recvCq: this.cq, cap };
    const fail = (what: string, e: RdmaCmEvent) => new Error(`${what}: RDMA_CM_EVENT_${e.event}, status ${e.status}${e.reason ? ` (${e.reason})` : ''}`);
    if (listener) {
      for (let i = 0; i < this.nq; i++) {
        const req = await ch.next('CONNECT_REQUEST', o.timeoutMs, undefined);
        this.cmIds.push(req.id);
        const qp = req.id.createQp(this.pd!, init);
        req.id.accept(param);
        // rdma_cm_connection_request_handler: ibv_modify_qp(min_rnr_timer = MIN_RNR_TIMER); its result is not looked at.
        try { qp.modify({ minRnrTimer: 12 }, QpAttr.MIN_RNR_TIMER); } catch { /* as perftest: ignored */ }
      }
      return;
    }
    for (let i = 0; i < this.nq; i++) {
      for (let attempt = 1; ; attempt++) {
        const id = this.cm!.createId(ch, 'tcp');
        try {
          id.resolveAddr({ address: o.host!, port: this.cmPort }, o.bind, 2000);
          const ar = await ch.next(['ADDR_RESOLVED', 'ADDR_ERROR'], 5000, id);
          if (ar.event !== 'ADDR_RESOLVED') throw fail('rdma_resolve_addr', ar);
          id.resolveRoute(2000);
          const rr = await ch.next(['ROUTE_RESOLVED', 'ROUTE_ERROR'], 5000, id);
          if (rr.event !== 'ROUTE_RESOLVED') throw fail('rdma_resolve_route', rr);
          id.createQp(this.pd!, init);
          id.connect(param);
          const est = await ch.next(['ESTABLISHED', 'REJECTED', 'UNREACHABLE', 'CONNECT_ERROR', 'DISCONNECTED', 'DEVICE_REMOVAL'], o.timeoutMs, id);
          if (est.event !== 'ESTABLISHED') throw fail(`rdma_connect of QP ${i}`, est);
          this.cmIds.push(id);
          break;
        } catch (err) {
          id.destroyId();
          if (attempt >= 10) throw new Error(`Failed to connect RDMA CM client, tried 10 times: ${(err as Error).message}`);
          await new Promise((r) => setTimeout(r, 100));
        }
      }
    }
  }

  /** The softrdma-only step: the client's options, which a softrdma server adopts. */
  private async hello(): Promise<void> {
    const o = this.o, oob = this.oob!;
    if (!this.isServer) {
      const h: Hello = {
        protocol: PROTOCOL, test: o.test, sizes: o.sizes, iters: o.iters, txDepth: o.txDepth, durationSec: o.durationSec,
        marginSec: o.durationSec === undefined ? undefined : o.marginSec, qps: o.qps, bidir: o.bidir, all: o.all, cqMod: o.cqMod,
        atomicType: o.atomicType,
      };
      oob.send(h);
      const ok = await oob.recv<{ ok?: boolean; error?: string }>();
      if (!ok.ok) throw new Error(`server refused: ${ok.error ?? 'no reason given'}`);
      return;
    }
    const h = await oob.recv<Partial<Hello>>();
    const refuse = (why: string) => { oob.send({ error: why }); return new Error(why); };
    if (h.protocol !== PROTOCOL) throw refuse(`the softrdma peer speaks ${String(h.protocol)}, not ${PROTOCOL}`);
    if (h.test !== o.test) { oob.send({ error: `server runs ${o.test}, client asked for ${h.test}` }); throw new Error(`client asked for ${h.test}, this server runs ${o.test}`); }
    // As in perftest both sides should be given the same options; the client's win.
    if (!Array.isArray(h.sizes) || !h.sizes.length || h.sizes.length > 64 || !h.sizes.every((s) => Number.isInteger(s) && s > 0 && s <= MAX_SIZE_OPT)) throw refuse('client sent bad sizes');
    if (!Number.isInteger(h.iters) || h.iters! < 1) throw refuse('client sent a bad iteration count');
    if (!Number.isInteger(h.qps) || h.qps! < 1 || h.qps! > 256) throw refuse('client sent a bad QP count');
    const txDepth = Number.isInteger(h.txDepth) && h.txDepth! >= 1 && h.txDepth! <= 8192 ? h.txDepth! : o.txDepth;
    let durationSec: number | undefined, marginSec = 0;
    if (h.durationSec !== undefined && h.durationSec !== null) {
      if (typeof h.durationSec !== 'number' || !(h.durationSec > 0 && h.durationSec <= 86400)) throw refuse('client sent a bad duration');
      durationSec = h.durationSec;
      // An older client sends no margin: its default, a quarter of -D rounded down.
      marginSec = h.marginSec === undefined || h.marginSec === null ? Math.floor(durationSec / 4) : h.marginSec;
      if (typeof marginSec !== 'number' || !(marginSec >= 0 && durationSec > 2 * marginSec)) throw refuse('client sent a bad margin');
    }
    // What the client's options need here too (the same check as the client's parser made).
    const problem = resourceProblem({ test: o.test, qps: h.qps!, sizes: h.sizes, txDepth, all: h.all === true });
    if (problem) throw refuse(`client's options: ${problem}`);
    if (o.explicit.size && h.sizes.join() !== o.sizes.join()) this.say(`note: using the client's sizes (${h.sizes.join(', ')})`);
    if (o.explicit.iters && h.iters !== o.iters) this.say(`note: using the client's iteration count (${h.iters})`);
    // An older client sends no atomic type: perftest's default.
    if (h.atomicType !== undefined && !(ATOMIC_TYPES as readonly unknown[]).includes(h.atomicType)) throw refuse('client sent a bad atomic type');
    o.atomicType = h.atomicType ?? 'FETCH_AND_ADD';
    o.sizes = h.sizes;
    o.iters = h.iters!;
    o.txDepth = txDepth;
    o.durationSec = durationSec;
    o.marginSec = marginSec;
    o.qps = h.qps!;
    o.bidir = h.bidir === true;
    o.all = h.all === true;
    // -Q came later too: a client that sends none asked for none (or is older: perftest's default).
    o.cqMod = Number.isInteger(h.cqMod) && h.cqMod! >= 1 && h.cqMod! <= 1024 ? h.cqMod : undefined;
    oob.send({ protocol: PROTOCOL, ok: true });
  }

  /**
   * One address message each way (ctx_hand_shake); perftest also uses it as a barrier. With
   * `peerRun` the peer may be in the middle of its test (a server waiting for the client's
   * run): no --timeout then, as perftest's server blocks in read() for as long as the run
   * lasts. With -D the run's length is known, and the wait ends at -D plus --timeout: a peer
   * killed mid-run sends no DREQ over the rdma_cm (a C perftest's kernel would), and over TCP
   * a vanished host is told only by keepalive, minutes later. With -n, a peer that dies still
   * ends the wait over TCP (the connection closes), not over the rdma_cm (see docs/tools.md).
   */
  async handshake(i: number, peerRun = false): Promise<Dest> {
    const timeout = peerRun ? this.peerRunWaitMs() : undefined;
    if (this.o.rdmaCm) {
      // rdma_write_keys / rdma_read_keys: the binary struct; before the QPs exist, perftest sends zeros.
      this.oob!.write(encodeDestCm(this.local[i] ?? ZERO_DEST, this.o.gidIndex));
      return decodeDestCm(await this.oob!.readBytes(DEST_CM_BYTES, "the peer's address message", timeout));
    }
    this.oob!.write(encodeDest(this.local[i]!));
    return decodeDest(await this.oob!.readBytes(DEST_BYTES, "the peer's address message", timeout));
  }

  /** A handshake with QP 0's address, used only to keep the sides in step (`peerRun`: see handshake). */
  async sync(peerRun = false): Promise<void> {
    await this.handshake(0, peerRun);
  }

  /** xchg_bw_reports: ours for theirs (`peerRun`: the peer may still be running, see handshake). */
  async xchgReport(r: BwReport, peerRun = false): Promise<BwReport> {
    const timeout = peerRun ? this.peerRunWaitMs() : undefined;
    if (this.o.rdmaCm) {
      // Over the rdma_cm each field is its own ctx_xchg_data: five 8-byte SENDs each way.
      const mine = encodeBwReport(r);
      const parts: Buffer[] = [];
      for (let k = 0; k < BW_REPORT_BYTES; k += 8) {
        this.oob!.write(mine.subarray(k, k + 8));
        parts.push(await this.oob!.readBytes(8, "a field of the peer's bw report", k === 0 ? timeout : undefined));
      }
      return decodeBwReport(Buffer.concat(parts));
    }
    this.oob!.write(encodeBwReport(r));
    return decodeBwReport(await this.oob!.readBytes(BW_REPORT_BYTES, "the peer's bw report", timeout));
  }

  /** How long to wait for a peer that may be in the middle of its run (see handshake). */
  peerRunWaitMs(): number {
    return this.o.durationSec ? this.o.durationSec * 1000 + this.o.timeoutMs : Infinity;
  }

  /** ctx_close_connection: a last handshake, then "done" (which nobody reads), then close. */
  async closeConnection(peerRun = false): Promise<void> {
    await this.sync(peerRun);
    if (!this.o.rdmaCm) this.oob!.write(DONE); // no "done" over the rdma_cm
    await this.oob!.finish(2000);
  }

  /**
   * perftest's ctx_print_test_info (perftest_parameters.c, 6.06) for this run, then its
   * ctx_print_pingpong_data lines. Its lines, in its order, on its conditions; the values are
   * what perftest prints on a Linux rxe (vendor part 0: an "UNKNOWN" device, so no inline data)
   * built without relaxed ordering, posting with ibv_post_send (as --use_old_post_send).
   * softrdma's own facts (ports, the peer's version) go to stderr: see headerExtra.
   */
  describe(title: string): string {
    const o = this.o;
    const bw = o.test.endsWith('_bw');
    const send = o.test === 'send_bw' || o.test === 'send_lat';
    const reads = readsOrAtomics(o.test);
    // perftest's tx_depth: DEF_TX_BW (128) or -t for bw, DEF_TX_LAT (1) for lat; at most -n (force_dependecies).
    const tx = txDepth({ ...o, txDepth: bw ? o.txDepth : 1 });
    // rx_depth: DEF_RX_SEND (512), at most -n, made even ("WA for a bug when rx_depth is odd in SEND", not with -a).
    let rx = o.durationSec ? RX_DEPTH : Math.min(RX_DEPTH, o.iters);
    if (rx % 2 === 1 && !o.all) rx++;
    const lines = [
      '-'.repeat(87),
      // "RDMA_Write Bidirectional BW Test" with -b.
      `                    ${o.bidir ? title.replace(/ BW Test$/, ' Bidirectional BW Test') : title}`,
      ` Dual-port       : OFF\t\tDevice         : ${this.dev!.name}`,
      ` Number of qps   : ${this.nq}\t\tTransport type : IB`,
      ` Connection type : RC\t\tUsing SRQ      : OFF`,
      ` PCIe relax order: Unsupported`,
      ` ibv_wr* API     : OFF`,
      ...(!this.isServer || o.bidir ? [` TX depth        : ${tx}`] : []),
      ...(send && (this.isServer || o.bidir) ? [` RX depth        : ${rx}`] : []),
      ...(bw ? [` CQ Moderation   : ${cqModeration(o, o.sizes[0]!)}`] : []),
      ` Mtu             : ${mtuBytes(this.mtu)}[B]`,
      ` Link type       : Ethernet`,
      ` GID index       : ${o.gidIndex}`,
      reads ? ` Outstand reads  : ${this.outReads}` : ` Max inline data : ${INLINE_SIZE}[B]`,
      ` rdma_cm QPs\t : ${o.rdmaCm ? 'ON' : 'OFF'}`,
      ` Data ex. method : ${o.rdmaCm ? 'rdma_cm' : 'Ethernet'}`,
      ...(o.rdmaCm && this.isServer ? ['-'.repeat(87), ' Waiting for client rdma_cm QP to connect', ' Please run the same command with the IB/RoCE interface IP'] : []),
      '-'.repeat(87),
    ];
    // ctx_print_pingpong_data: " OUT" for READ (and not atomics), " RKey ... VAddr" for READ and WRITE.
    const cx = (n: number | bigint, width: number) => (n === 0 || n === 0n ? '0'.repeat(width) : `0x${hex(Number(n), width - 2)}`);
    const gidBytes = (g: Uint8Array) => Array.from(g, (b) => String(b).padStart(2, '0')).join(':');
    const read = o.test === 'read_bw' || o.test === 'read_lat';
    const rdma = read || o.test === 'write_bw' || o.test === 'write_lat';
    const fmt = (side: string, e: Dest) =>
      ` ${side} address: LID ${cx(e.lid, 4)} QPN ${cx(e.qpn, 6)} PSN ${cx(e.psn, 6)}${read ? ` OUT ${cx(e.outReads, 4)}` : ''}${rdma ? ` RKey ${cx(e.rkey, 8)} VAddr ${cx(e.vaddr, 16)}` : ''}\n GID: ${gidBytes(e.gid)}`;
    return [
      ...lines,
      ...this.local.map((e) => fmt('local', e)),
      ...this.remote.map((e) => fmt('remote', e)),
      '-'.repeat(87),
    ].join('\n');
  }

  /** What softrdma adds to perftest's header (on stderr, after it): the exchange's port, the peer's version, the bound address. */
  headerExtra(): string {
    const o = this.o;
    const ex = o.rdmaCm ? `rdma_cm port ${this.cmPort}` : `TCP port ${this.oobPort || o.port}`;
    return `softrdma: bound address ${o.bind}, ${ex}; peer perftest ${printable(this.peerVersion)}${this.softrdma ? ', softrdma' : ''}`;
  }

  /**
   * Poll until `want` completions arrive, the deadline (hrtime ns) passes, or the peer has
   * been silent for the timeout. Returns how many arrived.
   */
  async poll(want: number, onWc: (wc: WorkCompletion) => void, deadlineNs = Infinity): Promise<number> {
    let got = 0;
    let last = Date.now();
    let quietSince = nowNs();
    const take = (wc: WorkCompletion) => {
      if (wc.status !== WcStatus.SUCCESS) throw new Error(`completion error: ${wcStatusStr(wc.status)} (wr_id ${wc.wrId})`);
      onWc(wc);
      got++;
    };
    // One array for every poll of this wait: spinning on an empty CQ allocates nothing.
    const wcs: WorkCompletion[] = [];
    while (got < want) {
      spinPoll(this.cq, 32, undefined, wcs);
      for (const wc of wcs) take(wc);
      if (wcs.length) {
        last = Date.now();
        quietSince = nowNs();
        continue;
      }
      const now = nowNs();
      if (now >= deadlineNs) break;
      if (Date.now() - last > this.o.timeoutMs) throw new Error(`no completion for ${this.o.timeoutMs} ms (${got}/${want})`);
      // Spin (in place, then a turn of the event loop for timers and other I/O) while an answer is
      // likely to come soon; after SPIN_NS of nothing, sleep in epoll until the CQ has one, as
      // a socket reader would. Spinning alone takes the CPU from the peer whenever the host is
      // busy, and each exchange then costs a scheduler slice (perftest's -e waits the same way).
      if (now - quietSince < SPIN_NS) {
        await yieldToLoop();
        continue;
      }
      const wc = await this.waitCompletion(Math.min(deadlineNs, now + (this.o.timeoutMs - (Date.now() - last)) * 1e6));
      if (wc) {
        take(wc);
        last = Date.now();
      }
      quietSince = nowNs();
    }
    return got;
  }

  /** The completion waits' timeouts (one shared signal: see wait-timeouts.ts). */
  private readonly waits = new WaitTimeouts();
  /** The exchange went away (oob.onGone): completion waits fail with this. */
  private exchangeGone: Error | undefined;

  /** The next completion, waiting on the event loop until one comes or `untilNs` passes. */
  private async waitCompletion(untilNs: number): Promise<WorkCompletion | undefined> {
    if (this.exchangeGone) throw this.exchangeGone;
    const ms = Math.max(0, (untilNs - nowNs()) / 1e6);
    try {
      return await this.waits.run(Number.isFinite(ms) ? Math.ceil(ms) : Infinity, (signal) => this.cq.next({ signal }));
    } catch (err) {
      if (err instanceof WaitTimeoutError) return undefined;
      throw err;
    }
  }

  /** Keeps taking completions (for receives to be re-posted) while `p` runs; returns its value. */
  async drainDuring<T>(p: Promise<T>, onWc: (wc: WorkCompletion) => void): Promise<T> {
    let settled = false;
    const done = p.finally(() => { settled = true; });
    while (!settled) {
      for (const wc of this.cq.poll(32)) {
        if (wc.status !== WcStatus.SUCCESS) throw new Error(`completion error: ${wcStatusStr(wc.status)} (wr_id ${wc.wrId})`);
        onWc(wc);
      }
      await Promise.race([done.then(() => undefined, () => undefined), yieldToLoop()]);
    }
    return done;
  }

  /** The rxe device and QP counters (driver-namespace methods). */
  counters(): { device: Record<string, number>; qp: Record<string, number> } {
    return queryRxeCounters(this.ctx!, this.qp);
  }

  async close(): Promise<void> {
    // -R: the test's connections first (rdma_cm_disconnect_nodes, then the QPs), then the exchange's.
    for (const id of this.cmIds) { try { id.destroyId(); } catch { /* gone with the device */ } }
    this.cmIds = [];
    this.cmCh?.close();
    this.oob?.close();
    try { this.ctx?.close(); } finally { await this.dev?.close(); }
  }
}

/** One turn of the event loop: lets received packets in, like a busy-polling perftest loop. */
export function yieldToLoop(): Promise<void> {
  return new Promise((r) => setImmediate(r));
}

const ZERO_DEST: Dest = { lid: 0, outReads: 0, qpn: 0, psn: 0, rkey: 0, vaddr: 0n, gid: new Uint8Array(16), srqn: 0 };

/** What perftest's servers print before they wait for the client (write_bw.c etc.: "\n***...\n"). */
const WAITING = '\n************************************\n* Waiting for client to connect... *\n************************************';

export function nowNs(): number { return Number(process.hrtime.bigint()); }

function printable(s: string): string {
  return s.slice(0, 32).replace(/[^\x20-\x7e]/g, '.');
}
