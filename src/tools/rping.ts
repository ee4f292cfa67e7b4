// `softrdma rping`: rdma-core's librdmacm/examples/rping.c over softrdma/cm, with its options,
// its exchange and its output, so either side can be the real rping on a kernel rxe:
//   client: SEND (addr, rkey, len) of its start buffer → server RDMA READs it → server SENDs
//   go-ahead → client SENDs (addr, rkey, len) of its sink → server RDMA WRITEs the data there
//   → server SENDs go-ahead → client compares (-V) and prints (-v) "ping data: rdma-ping-N: ...".
// The advertisement is rping's struct rping_rdma_info: be64 buf, be32 rkey, be32 size.
// Connection parameters as rping_init_conn_param: responder resources 1, initiator depth 1,
// retry count 7, RNR retry 7; the QP as rping_create_qp: 16 send WRs, 2 receive WRs, one SGE.

import { parseArgs } from 'node:util';
import {
  Access, createRxeDevice, rxeOf, SendFlags, WcOpcode, WcStatus, wcStatusStr, WrOpcode, type CQ, type Device, type MR, type PD, type WorkCompletion,
} from '../index.js';
import { createEventChannel, createId, type EventChannel, type RdmaCmEvent, type RdmaCmId } from '../cm/index.js';
import { UsageError, getoptArgs, intOption, resolveAddressOptions } from './usage.js';
import { routeSource } from './route-source.js';
import { remoteAddr, type RemoteAddr } from '../abi/remote-addr.js';

export const RPING_USAGE = `usage: softrdma rping -s [-vVd] [-S size] [-C count] -a addr [-p port] [-P]
       softrdma rping -c [-vVd] [-S size] [-C count] [-I addr] -a addr [-p port]

rdma-core's rping over softrdma's rdma_cm; either side may be the kernel's rping.

  -c            client side
  -s            server side
  -a addr       address (server: to listen on, required: its softrdma device's address, where
                rping listens on any address without -a; client: of the server); or a host name
  -I addr       source address for the client (default: the one the kernel's routing picks)
  -p port       port (default 7174)
  -C count      ping count times (default: until interrupted)
  -S size       ping data size, 26 to 65535 (default 64)
  -v            display ping data to stdout
  -V            validate ping data (client)
  -d            debug printfs
  -P            persistent server: serve one connection after another (and at once)
      --udp-port N  RoCEv2 UDP port of the softrdma device (default 4791; the server prints the
                    port it took when given 0)`;

/** rping's limits: RPING_MIN_BUFSIZE (sizeof "2147483647" + sizeof "rdma-ping-%d: ") and RPING_BUFSIZE - 1. */
export const RPING_MIN_BUFSIZE = 26;
export const RPING_MAX_BUFSIZE = 64 * 1024 - 1;
const RPING_SQ_DEPTH = 16;
const INFO_BYTES = 16;

/** The client's ping buffer for iteration `ping` (rping_test_client): "rdma-ping-N: " then letters from `start`, NUL-terminated. */
export function pingData(buf: Buffer, ping: number, start: number): void {
  const size = buf.length;
  const head = Buffer.from(`rdma-ping-${ping}: `, 'latin1');
  const cc = Math.min(head.length, size - 1);
  head.copy(buf, 0, 0, cc);
  let c = start;
  for (let i = cc; i < size; i++) {
    buf[i] = c;
    c++;
    if (c > 122) c = 65;
  }
  buf[size - 1] = 0;
}

/** struct rping_rdma_info, big-endian. */
export function encodeInfo(addr: RemoteAddr, rkey: number, size: number, out = Buffer.alloc(INFO_BYTES)): Buffer {
  out.writeBigUInt64BE(BigInt(addr), 0);
  out.writeUInt32BE(rkey >>> 0, 8);
  out.writeUInt32BE(size >>> 0, 12);
  return out;
}
export function decodeInfo(b: Buffer): { addr: RemoteAddr; rkey: number; size: number } {
  return { addr: remoteAddr(b.readBigUInt64BE(0)), rkey: b.readUInt32BE(8), size: b.readUInt32BE(12) };
}

/** A C string's text: up to the first NUL. */
const cstr = (b: Buffer) => { const z = b.indexOf(0); return b.subarray(0, z < 0 ? b.length : z).toString('latin1'); };

interface Opts {
  server: boolean; addr: string | undefined; source: string | undefined; port: number; count: number; size: number;
  verbose: boolean; validate: boolean; debug: boolean; persistent: boolean; udpPort: number;
}

export const RPING_OPTIONS = {
  a: { type: 'string', short: 'a' }, I: { type: 'string', short: 'I' }, P: { type: 'boolean', short: 'P' },
  p: { type: 'string', short: 'p' }, C: { type: 'string', short: 'C' }, S: { type: 'string', short: 'S' },
  s: { type: 'boolean', short: 's' }, c: { type: 'boolean', short: 'c' }, v: { type: 'boolean', short: 'v', multiple: true },
  V: { type: 'boolean', short: 'V', multiple: true }, d: { type: 'boolean', short: 'd', multiple: true }, 'udp-port': { type: 'string' },
} as const;

async function parse(args: string[]): Promise<Opts> {
  const { values, positionals } = parseArgs({ args: getoptArgs(args, RPING_OPTIONS), allowPositionals: true, strict: true, options: RPING_OPTIONS });
  if (positionals.length) throw new UsageError(`unexpected argument '${positionals[0]}'`);
  if (values.s === values.c) throw new UsageError('give one of -s (server) and -c (client)');
  if (values.c && values.a === undefined) throw new UsageError('the client needs -a (the server\'s address)');
  const o: Opts = {
    server: values.s === true, addr: values.a, source: values.I, port: intOption('-p', values.p, 7174, 0, 65535),
    count: intOption('-C', values.C, 0, 0, 0x7fffffff), size: intOption('-S', values.S, 64, RPING_MIN_BUFSIZE, RPING_MAX_BUFSIZE),
    verbose: (values.v?.length ?? 0) > 0, validate: (values.V?.length ?? 0) > 0, debug: (values.d?.length ?? 0) > 0,
    persistent: values.P === true, udpPort: intOption('--udp-port', values['udp-port'], 4791, 0, 65535),
  };
  // rping resolves -a and -I with getaddrinfo(): host names too.
  const addrs = await resolveAddressOptions([['I', values.I], ['a', values.a]]);
  return { ...o, addr: addrs.a, source: addrs.I };
}

/** One connection's verbs objects, as rping_setup_qp + rping_setup_buffers. */
class Conn {
  readonly pd: PD;
  readonly cq: CQ;
  readonly recvBuf = Buffer.alloc(INFO_BYTES);
  readonly sendBuf = Buffer.alloc(INFO_BYTES);
  readonly rdmaBuf: Buffer;
  readonly startBuf: Buffer | undefined;
  readonly mrs: MR[] = [];
  readonly recvMr: MR;
  readonly sendMr: MR;
  readonly rdmaMr: MR;
  readonly startMr: MR | undefined;
  /** Aborted when the connection goes (DISCONNECTED, an error event): stops waiting on the CQ. */
  readonly ac = new AbortController();
  disconnected = false;

  constructor(readonly id: RdmaCmId, size: number, client: boolean) {
    const ctx = id.verbs!;
    this.pd = ctx.allocPd();
    this.cq = ctx.createCq(RPING_SQ_DEPTH * 2);
    id.createQp(this.pd, { sendCq: this.cq, recvCq: this.cq, cap: { maxSendWr: RPING_SQ_DEPTH, maxRecvWr: 2, maxSendSge: 1, maxRecvSge: 1 } });
    const reg = (b: Buffer, access: number) => { const m = this.pd.regMr(b, access); this.mrs.push(m); return m; };
    this.recvMr = reg(this.recvBuf, Access.LOCAL_WRITE);
    this.sendMr = reg(this.sendBuf, 0);
    this.rdmaBuf = Buffer.alloc(size);
    this.rdmaMr = reg(this.rdmaBuf, Access.LOCAL_WRITE | Access.REMOTE_READ | Access.REMOTE_WRITE);
    if (client) {
      this.startBuf = Buffer.alloc(size);
      this.startMr = reg(this.startBuf, Access.LOCAL_WRITE | Access.REMOTE_READ | Access.REMOTE_WRITE);
    }
  }

  postRecv(): void { this.id.qp!.postRecv({ wrId: 1n, sgList: [this.recvMr.sge()] }); }
  postSend(): void { this.id.qp!.postSend({ wrId: 2n, opcode: WrOpcode.SEND, sendFlags: SendFlags.SIGNALED, sgList: [this.sendMr.sge()] }); }

  /** The next completion that is not a SEND's (rping's cq thread ignores those and flushes); undefined once disconnected. */
  async next(): Promise<WorkCompletion | undefined> {
    for (;;) {
      let wc: WorkCompletion;
      try {
        wc = await this.cq.next({ signal: this.ac.signal });
      } catch (err) {
        if (this.ac.signal.aborted) return undefined;
        throw err;
      }
      if (wc.status === WcStatus.WR_FLUSH_ERR) continue;
      if (wc.status !== WcStatus.SUCCESS) throw new Error(`cq completion failed status ${wc.status} (${wcStatusStr(wc.status)})`);
      if (wc.opcode === WcOpcode.SEND) continue;
      return wc;
    }
  }

  /** The next RECV: the peer's advertisement (16 bytes, else "Received bogus data"). */
  async recvInfo(): Promise<{ addr: RemoteAddr; rkey: number; size: number } | undefined> {
    const wc = await this.next();
    if (!wc) return undefined;
    if (wc.opcode !== WcOpcode.RECV) throw new Error(`unexpected completion opcode ${wc.opcode}`);
    if (wc.byteLen !== INFO_BYTES) throw new Error(`Received bogus data, size ${wc.byteLen}`);
    const info = decodeInfo(this.recvBuf);
    this.postRecv();
    return info;
  }

  free(): void {
    this.ac.abort();
    this.id.destroyQp();
    for (const m of this.mrs) m.dereg();
    this.cq.destroy();
    this.pd.dealloc();
  }
}

const out = (s: string) => process.stdout.write(s + '\n');
const err = (s: string) => process.stderr.write(s + '\n');

/** Connection errors as rping prints them ("cma event RDMA_CM_EVENT_REJECTED, error 8"), with the reason's name after. */
function cmaText(e: RdmaCmEvent): string {
  return `cma event RDMA_CM_EVENT_${e.event}, error ${e.status}${e.reason ? ` (${e.reason})` : ''}`;
}

/**
 * What rping's main returns when a run fails (-1): the process exits 255. Its CM thread exits
 * with the same -1 on an error event (rping_cma_event_handler: ADDR_ERROR, ROUTE_ERROR,
 * CONNECT_ERROR, UNREACHABLE, REJECTED, DEVICE_REMOVAL), and its client returns -1 on a data mismatch.
 */
export const RPING_FAILED = 255;

/** rping.c's enum test_state, for its "wait for ... state N" lines. */
const State = { IDLE: 1, ADDR_RESOLVED: 3, ROUTE_RESOLVED: 4, DISCONNECTED: 10, ERROR: 11 } as const;

/** The state an event leaves rping's cb in (rping_cma_event_handler), from the state it was in. */
function stateAfter(e: RdmaCmEvent, before: number): number {
  return e.event === 'DISCONNECTED' ? State.DISCONNECTED : e.event === 'DEVICE_REMOVAL' ? State.ERROR : before;
}

/** The line rping_cma_event_handler prints for an event (DISCONNECTED and DEVICE_REMOVAL: the connection's own handler prints those). */
function reportEvent(e: RdmaCmEvent): void {
  if (e.event !== 'DISCONNECTED' && e.event !== 'DEVICE_REMOVAL') err(cmaText(e));
}

export async function rping(args: string[]): Promise<number> {
  const o = await parse(args);
  const dbg = o.debug ? out : () => {};
  let local: string;
  if (o.server) {
    if (o.addr === undefined || o.addr === '0.0.0.0' || o.addr === '::') throw new UsageError('the server needs -a with the address of its softrdma device');
    local = o.addr;
  } else {
    local = o.source ?? await routeSource(o.addr!);
  }
  const dev = await createRxeDevice({ address: local, port: o.udpPort });
  const ch = createEventChannel();
  try {
    return o.server ? await runServer(o, dev, ch, dbg) : await runClient(o, dev, ch, dbg);
  } finally {
    ch.close();
    await dev.close();
  }
}

async function runServer(o: Opts, dev: Device, ch: EventChannel, dbg: (s: string) => void): Promise<number> {
  const listenId = createId(ch, 'tcp', { context: 'parent' });
  dbg(`created cm_id ${listenId.no}`);
  listenId.bindAddr(o.addr!, o.port);
  dbg('rdma_bind_addr successful');
  dbg('rdma_listen');
  listenId.listen(3);
  if (o.port === 0 || o.udpPort === 0) err(`listening: port ${listenId.localAddr!.port}, RoCE UDP port ${rxeOf(dev).port}`);
  const conns = new Set<Promise<number>>();
  // The listener's device going away ends the wait for requests.
  let stopHearing = () => {};
  const removed = new Promise<undefined>((resolve) => { stopHearing = onEnd(ch, listenId, (e) => { if (e.event === 'DEVICE_REMOVAL') resolve(undefined); }); });
  try {
    for (;;) {
      const req = await Promise.race([ch.next('CONNECT_REQUEST', Infinity), removed]);
      if (!req) {
        // rping's CM thread: exit(-1).
        err('cma detected device removal!!!!');
        return RPING_FAILED;
      }
      dbg(`cma_event type RDMA_CM_EVENT_CONNECT_REQUEST cma_id ${req.id.no} (child)`);
      const p = serveOne(o, req.id, ch, dbg);
      if (!o.persistent) return await p;
      const q = p.catch((e: unknown) => { err(e instanceof Error ? e.message : String(e)); return 1; }).finally(() => conns.delete(q));
      conns.add(q);
    }
  } finally {
    stopHearing();
    listenId.destroyId();
    await Promise.all(conns);
  }
}

/**
 * The events that end a connection (DISCONNECTED, DEVICE_REMOVAL), heard by one listener per
 * channel and handed to the connection's own handler: `-P` serves many connections at once,
 * and a pair of listeners each would pile up on the channel.
 */
const enders = new WeakMap<EventChannel, Map<RdmaCmId, (e: RdmaCmEvent) => void>>();
function onEnd(ch: EventChannel, id: RdmaCmId, handler: (e: RdmaCmEvent) => void): () => void {
  let byId = enders.get(ch);
  if (!byId) {
    const m = new Map<RdmaCmId, (e: RdmaCmEvent) => void>();
    const dispatch = (e: RdmaCmEvent) => m.get(e.id)?.(e);
    ch.on('DISCONNECTED', dispatch).on('DEVICE_REMOVAL', dispatch);
    enders.set(ch, byId = m);
  }
  byId.set(id, handler);
  return () => byId.delete(id);
}

async function serveOne(o: Opts, child: RdmaCmId, ch: EventChannel, dbg: (s: string) => void): Promise<number> {
  let conn: Conn | undefined;
  // Only the events that end a connection are listened for: the others wait in the channel for next().
  const onEvent = (e: RdmaCmEvent) => {
    if (e.event === 'DISCONNECTED') {
      err('server DISCONNECT EVENT...');
      if (conn) { conn.disconnected = true; conn.ac.abort(); }
      try { child.disconnect(); } catch { /* already */ }
    } else if (e.event === 'DEVICE_REMOVAL') {
      err('cma detected device removal!!!!');
      conn?.ac.abort();
    }
  };
  const stopHearing = onEnd(ch, child, onEvent);
  try {
    conn = new Conn(child, o.size, false);
    dbg('allocated & registered buffers...');
    conn.postRecv();
    dbg('accepting client connection request');
    child.accept({ responderResources: 1, initiatorDepth: 1 });
    const est = await ch.next(['ESTABLISHED', 'DISCONNECTED', 'REJECTED', 'UNREACHABLE', 'CONNECT_ERROR', 'DEVICE_REMOVAL'], 60_000, child);
    if (est.event !== 'ESTABLISHED') {
      // As rping_run_server: an error event ends the process from the CM thread (exit(-1));
      // device removal leaves the state ERROR ("wait for CONNECTED state 11", "connect error
      // -1"). A DISCONNECTED before the first ping: rping.c's rping_accept takes the one wakeup
      // it posts and rping_test_server then waits for ever; softrdma's server gives up instead,
      // with the line rping_test_server would print, and returns 0 (a deliberate difference).
      reportEvent(est);
      if (est.event === 'DISCONNECTED') {
        err(`wait for RDMA_READ_ADV state ${State.DISCONNECTED}`);
        return 0;
      }
      if (est.event === 'DEVICE_REMOVAL') err(`wait for CONNECTED state ${State.ERROR}\nconnect error -1`);
      return RPING_FAILED;
    }
    dbg('cma_event type RDMA_CM_EVENT_ESTABLISHED');
    const qp = child.qp!;
    // rping_test_server's waits: when one finds the connection gone (the client's DREQ, the normal
    // end: DISCONNECTED, state 10; a device removal: ERROR, 11), rping says which wait and what
    // state on stderr, and returns 0 for DISCONNECTED (-1 otherwise: "rping server failed").
    let endedAt = '';
    for (;;) {
      // Wait for the client's start buffer advertisement.
      const start = await conn.recvInfo();
      if (!start) { endedAt = 'RDMA_READ_ADV'; break; }
      dbg(`Received rkey ${start.rkey.toString(16)} addr ${start.addr.toString(16)} len ${start.size} from peer`);
      dbg('server received sink adv');
      const len = Math.min(start.size, conn.rdmaBuf.length);
      qp.postSend({ wrId: 3n, opcode: WrOpcode.RDMA_READ, sendFlags: SendFlags.SIGNALED, sgList: [conn.rdmaMr.sge(0, len)], rdma: { remoteAddr: start.addr, rkey: start.rkey } });
      dbg('server posted rdma read req ');
      const rd = await conn.next();
      if (!rd) { endedAt = 'RDMA_READ_COMPLETE'; break; }
      if (rd.opcode !== WcOpcode.RDMA_READ) throw new Error(`wait for RDMA_READ_COMPLETE: completion opcode ${rd.opcode}`);
      dbg('server received read complete');
      if (o.verbose) out(`server ping data: ${cstr(conn.rdmaBuf)}`);
      conn.postSend();
      dbg('server posted go ahead');
      const sink = await conn.recvInfo();
      if (!sink) { endedAt = 'RDMA_WRITE_ADV'; break; }
      dbg(`Received rkey ${sink.rkey.toString(16)} addr ${sink.addr.toString(16)} len ${sink.size} from peer`);
      dbg('server received sink adv');
      const wlen = Math.min(cstr(conn.rdmaBuf).length + 1, conn.rdmaBuf.length);
      dbg(`rdma write from lkey ${conn.rdmaMr.lkey.toString(16)} laddr ${conn.rdmaMr.addr.toString(16)} len ${wlen}`);
      qp.postSend({ wrId: 4n, opcode: WrOpcode.RDMA_WRITE, sendFlags: SendFlags.SIGNALED, sgList: [conn.rdmaMr.sge(0, wlen)], rdma: { remoteAddr: sink.addr, rkey: sink.rkey } });
      const wr = await conn.next();
      if (!wr) { endedAt = 'RDMA_WRITE_COMPLETE'; break; }
      if (wr.opcode !== WcOpcode.RDMA_WRITE) throw new Error(`wait for RDMA_WRITE_COMPLETE: completion opcode ${wr.opcode}`);
      dbg('server rdma write complete ');
      conn.postSend();
      dbg('server posted go ahead');
    }
    const state = conn.disconnected ? State.DISCONNECTED : State.ERROR;
    err(`wait for ${endedAt} state ${state}`);
    if (state !== State.DISCONNECTED) {
      err('rping server failed: -1');
      return RPING_FAILED;
    }
    // The client disconnected (we sent the DREP); wait for time-wait to end, as the kernel's id does.
    await ch.next('TIMEWAIT_EXIT', 10_000, child).catch(() => undefined);
    return 0;
  } finally {
    stopHearing();
    conn?.free();
    child.destroyId();
  }
}

async function runClient(o: Opts, _dev: Device, ch: EventChannel, dbg: (s: string) => void): Promise<number> {
  const id = createId(ch, 'tcp', { context: 'parent' });
  dbg(`created cm_id ${id.no}`);
  let conn: Conn | undefined;
  const onEvent = (e: RdmaCmEvent) => {
    if (e.event === 'DISCONNECTED') {
      err('client DISCONNECT EVENT...');
      if (conn) { conn.disconnected = true; conn.ac.abort(); }
    } else if (e.event === 'DEVICE_REMOVAL') {
      err('cma detected device removal!!!!');
      conn?.ac.abort();
    }
  };
  const stopHearing = onEnd(ch, id, onEvent);
  try {
    // rping_bind_client: an ADDR_ERROR or ROUTE_ERROR is printed (and its CM thread exits -1);
    // the main thread says which state it found.
    id.resolveAddr({ address: o.addr!, port: o.port }, o.source, 2000);
    const ar = await ch.next(['ADDR_RESOLVED', 'ADDR_ERROR'], 5000, id);
    if (ar.event !== 'ADDR_RESOLVED') {
      reportEvent(ar);
      err(`waiting for addr/route resolution state ${State.IDLE}`);
      return RPING_FAILED;
    }
    id.resolveRoute(2000);
    const rr = await ch.next(['ROUTE_RESOLVED', 'ROUTE_ERROR'], 5000, id);
    if (rr.event !== 'ROUTE_RESOLVED') {
      reportEvent(rr);
      err(`waiting for addr/route resolution state ${State.ADDR_RESOLVED}`);
      return RPING_FAILED;
    }
    dbg('rdma_resolve_addr - rdma_resolve_route successful');
    conn = new Conn(id, o.size, true);
    dbg('allocated & registered buffers...');
    conn.postRecv();
    id.connect({ responderResources: 1, initiatorDepth: 1, retryCount: 7, rnrRetryCount: 7 });
    // 16 REQ retries of 6 s each before UNREACHABLE, as Linux.
    const est = await ch.next(['ESTABLISHED', 'REJECTED', 'UNREACHABLE', 'CONNECT_ERROR', 'DISCONNECTED', 'DEVICE_REMOVAL'], 120_000, id);
    if (est.event !== 'ESTABLISHED') {
      // rping_connect_client, then rping_run_client: the state is not CONNECTED (still
      // ROUTE_RESOLVED after a REJECTED, UNREACHABLE or CONNECT_ERROR), and main returns -1.
      reportEvent(est);
      err(`wait for CONNECTED state ${stateAfter(est, State.ROUTE_RESOLVED)}\nconnect error -1`);
      return RPING_FAILED;
    }
    dbg('rdma_connect successful');
    const qp = id.qp!;
    const startBuf = conn.startBuf!, startMr = conn.startMr!;
    let start = 65;
    let ret = 0;
    for (let ping = 0; !o.count || ping < o.count; ping++) {
      pingData(startBuf, ping, start);
      start++;
      if (start > 122) start = 65;
      encodeInfo(startMr.addr, startMr.rkey, o.size, conn.sendBuf);
      dbg(`RDMA addr ${startMr.addr.toString(16)} rkey ${startMr.rkey.toString(16)} len ${o.size}`);
      qp.postSend({ wrId: 2n, opcode: WrOpcode.SEND, sendFlags: SendFlags.SIGNALED, sgList: [conn.sendMr.sge()] });
      // Wait for the server's go-ahead (it has read our buffer).
      const go = await conn.next();
      if (!go) break;
      if (go.opcode !== WcOpcode.RECV) throw new Error(`wait for RDMA_WRITE_ADV: completion opcode ${go.opcode}`);
      conn.postRecv();
      conn.rdmaBuf.fill(0);
      encodeInfo(conn.rdmaMr.addr, conn.rdmaMr.rkey, o.size, conn.sendBuf);
      dbg(`RDMA addr ${conn.rdmaMr.addr.toString(16)} rkey ${conn.rdmaMr.rkey.toString(16)} len ${o.size}`);
      qp.postSend({ wrId: 2n, opcode: WrOpcode.SEND, sendFlags: SendFlags.SIGNALED, sgList: [conn.sendMr.sge()] });
      // Wait for the server to say the RDMA WRITE is complete.
      const done = await conn.next();
      if (!done) break;
      if (done.opcode !== WcOpcode.RECV) throw new Error(`wait for RDMA_WRITE_COMPLETE: completion opcode ${done.opcode}`);
      conn.postRecv();
      if (o.validate && !startBuf.equals(conn.rdmaBuf)) {
        // rping_test_client returns -1, and rping_run_client says so before it disconnects.
        err('data mismatch!');
        err('rping client failed: -1');
        ret = -1;
        break;
      }
      if (o.verbose) out(`ping data: ${cstr(conn.rdmaBuf)}`);
    }
    if (!conn.disconnected) {
      // rping_disconnect: the QP to ERR and a DREQ; DISCONNECTED comes with the peer's DREP.
      id.disconnect();
      await ch.next('DISCONNECTED', 10_000, id).catch(() => undefined);
    }
    return ret === 0 ? 0 : RPING_FAILED;
  } finally {
    stopHearing();
    conn?.free();
    id.destroyId();
  }
}
