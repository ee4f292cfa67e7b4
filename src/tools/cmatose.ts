// `softrdma cmatose`: rdma-core's librdmacm/examples/cmatose.c (RC, the TCP port space) and, with
// --ud, udaddy.c (UD through SIDR, the UDP port space), over softrdma/cm: N connections at once,
// M messages each way, with their options and output lines.
//
// cmatose: the client resolves every id at once; each ROUTE_RESOLVED creates the node's QP (a PD,
// a send and a receive CQ, an MR of -S bytes), posts -C receives and connects (responder
// resources 1, initiator depth 1, retry count 5); the server accepts each CONNECT_REQUEST the same
// way. When all are ESTABLISHED the server SENDs -C messages on every connection, waits for its
// send completions, then for the client's -C replies; the client, having received the server's,
// SENDs its replies. The server disconnects every connection; the client answers each DISCONNECTED
// with rdma_disconnect. udaddy: the client SENDs -C datagrams WITH_IMM (its QPN) on each id to the
// QPN and Q_Key of the SIDR_REP; the server makes a reply AH from the first one's GRH and answers
// with -C of its own. -f name|ip and -P tcp (udaddy: udp) are taken as cmatose takes them. Not here:
// -f gid, -P ib (udaddy: ipoib), -t (TOS), -m (migrate), -a (ACK timeout): softrdma/cm has no
// AF_IB, no RDMA_PS_IB or IPoIB port space, no rdma_set_option and no rdma_migrate_id.
// softrdma adds a check (every message arrives with -S bytes) and a --timeout, where cmatose would
// wait for ever.

import { isIP } from 'node:net';
import { parseArgs } from 'node:util';
import {
  Access, createRxeDevice, rxeOf, SendFlags, WcOpcode, WcStatus, wcStatusStr, WrOpcode, type AH, type CQ, type MR, type PD, type QP, type WorkCompletion,
} from '../index.js';
import { createEventChannel, createId, type EventChannel, type RdmaCmEvent, type RdmaCmId } from '../cm/index.js';
import { UsageError, getoptArgs, intOption, MAX_TIMER_SEC, resolveAddressOptions } from './usage.js';
import { routeSource } from './route-source.js';
import { WaitTimeouts } from './wait-timeouts.js';

export const CMATOSE_USAGE = `usage: softrdma cmatose [-s server_address] [-b bind_address] [-f name|ip] [-P tcp]
                        [-c connections] [-C message_count] [-S message_size] [-p port] [--ud]

rdma-core's cmatose (RC, rdma_cm TCP port space) or, with --ud, udaddy (UD through SIDR, UDP port
space), over softrdma/cm: -c connections at once, -C messages of -S bytes each way on each.
Either side may be the kernel's ucmatose / udaddy.

  -s addr      the server's address or host name (makes this the client; without it, the server)
  -b addr      the local address (the server's: required; the client's: default what the
               kernel's routing picks towards -s)
  -f format    address format of -s and -b: name (a host name or an address, the default) or
               ip (numeric addresses only), as cmatose's; gid (AF_IB) is not taken
  -P space     port space: tcp, cmatose's default (--ud: udp, udaddy's); ib (--ud: ipoib) is
               not taken
  -c n         connections (default 1)
  -C n         messages each way per connection (default 10)
  -S n         message size (default 100; --ud: at most the path MTU)
  -p port      port (default 7471; --ud 7174, as udaddy)
      --ud          udaddy: UD QPs through SIDR
      --udp-port N  RoCEv2 UDP port of the softrdma device (default 4791; the server prints
                    the port it took when given 0)
      --timeout S   give up when nothing happens for S seconds (default 30; cmatose waits for ever)`;

/** struct ibv_grh before every UD receive. */
const GRH = 40;

interface Opts {
  dst: string | undefined; src: string | undefined; connections: number; count: number; size: number; port: number;
  ud: boolean; udpPort: number; timeoutMs: number;
}

export const CMATOSE_OPTIONS = {
  s: { type: 'string', short: 's' }, b: { type: 'string', short: 'b' }, c: { type: 'string', short: 'c' },
  C: { type: 'string', short: 'C' }, S: { type: 'string', short: 'S' }, p: { type: 'string', short: 'p' },
  f: { type: 'string', short: 'f' }, P: { type: 'string', short: 'P' }, ud: { type: 'boolean' }, 'udp-port': { type: 'string' }, timeout: { type: 'string' },
} as const;

async function parse(args: string[]): Promise<Opts> {
  const { values, positionals } = parseArgs({ args: getoptArgs(args, CMATOSE_OPTIONS), allowPositionals: true, strict: true, options: CMATOSE_OPTIONS });
  if (positionals.length) throw new UsageError(`unexpected argument '${positionals[0]}'`);
  const ud = values.ud === true;
  // The values first (getopt's order: the options as given), then what they lack together.
  const o: Opts = {
    dst: values.s, src: values.b, connections: intOption('-c', values.c, 1, 1, 10_000), count: intOption('-C', values.C, 10, 0, 100_000),
    size: intOption('-S', values.S, 100, 0, ud ? 4096 : 1 << 24), port: intOption('-p', values.p, ud ? 7174 : 7471, 0, 65535), ud,
    udpPort: intOption('--udp-port', values['udp-port'], 4791, 0, 65535), timeoutMs: intOption('--timeout', values.timeout, 30, 1, MAX_TIMER_SEC) * 1000,
  };
  // create_message(): no message size, no messages (the run is connections only).
  if (o.size === 0) o.count = 0;
  // -f and -P as cmatose.c and udaddy.c read them (strncasecmp on the first letters); a word they
  // do not know is their warning, and the default stays.
  const starts = (v: string, w: string) => v.slice(0, w.length).toLowerCase() === w;
  let numeric = false;
  if (values.f !== undefined) {
    if (starts(values.f, 'ip')) numeric = true;
    else if (starts(values.f, 'gid')) throw new UsageError('-f gid: softrdma/cm has no AF_IB (give IP addresses or host names)');
    else if (!starts(values.f, 'name')) process.stderr.write('Warning: unknown address format\n');
  }
  if (values.P !== undefined) {
    const [own, other] = ud ? ['udp', 'ipoib'] : ['tcp', 'ib'];
    if (starts(values.P, other)) throw new UsageError(`-P ${values.P}: softrdma/cm has no ${ud ? 'IPoIB' : 'RDMA_PS_IB'} port space (${ud ? 'udaddy' : 'cmatose'} runs on ${own}, the default)`);
    if (!starts(values.P, own)) process.stderr.write('Warning: unknown port space format\n');
  }
  // -f ip: rdma_getaddrinfo with RAI_NUMERICHOST, which takes no host name.
  for (const [k, v] of [['-s', values.s], ['-b', values.b]] as const) {
    if (numeric && v !== undefined && isIP(v) === 0) throw new UsageError(`${k} must be a numeric IPv4 or IPv6 address with -f ip, got '${v}'`);
  }
  if (values.s === undefined && (values.b === undefined || values.b === '0.0.0.0' || values.b === '::')) throw new UsageError('the server needs -b with the address of its softrdma device');
  // cmatose resolves -s and -b with rdma_getaddrinfo(): host names too.
  const addrs = await resolveAddressOptions([['b', values.b], ['s', values.s]]);
  return { ...o, dst: addrs.s, src: addrs.b };
}

/** One connection: struct cmatest_node. */
class Node {
  pd: PD | undefined;
  cqs: CQ[] = [];
  qp: QP | undefined;
  mr: MR | undefined;
  mem: Buffer | undefined;
  ah: AH | undefined;
  remoteQpn = 0;
  remoteQkey = 0;
  connected = false;
  constructor(readonly no: number, public id: RdmaCmId | undefined) {}

  /** init_node + create_message (+ post_recvs). */
  init(o: Opts): void {
    const id = this.id!;
    const ctx = id.verbs!;
    this.pd = ctx.allocPd();
    const cqe = o.ud ? (o.count ? o.count * 2 : 2) : o.count || 1;
    // cmatose: a send CQ and a receive CQ; udaddy: one for both.
    this.cqs = o.ud ? [ctx.createCq(cqe)] : [ctx.createCq(cqe), ctx.createCq(cqe)];
    this.qp = id.createQp(this.pd, {
      sendCq: this.cqs[0]!, recvCq: this.cqs[this.cqs.length - 1]!, sqSigAll: !o.ud,
      cap: { maxSendWr: o.count || 1, maxRecvWr: o.count || 1, maxSendSge: 1, maxRecvSge: 1 },
    });
    if (!o.size || !o.count) return;
    this.mem = Buffer.alloc(o.size + (o.ud ? GRH : 0));
    for (let i = 0; i < o.size; i++) this.mem[(o.ud ? GRH : 0) + i] = (this.no + i) & 0xff;
    this.mr = this.pd.regMr(this.mem, Access.LOCAL_WRITE);
    for (let i = 0; i < o.count; i++) this.qp.postRecv({ wrId: BigInt(this.no), sgList: [this.mr.sge()] });
  }

  sendCq(): CQ { return this.cqs[0]!; }
  recvCq(): CQ { return this.cqs[this.cqs.length - 1]!; }

  /** post_sends. */
  postSends(o: Opts, signaled: boolean): void {
    if (!this.connected || !o.count || !o.size) return;
    for (let i = 0; i < o.count; i++) {
      if (o.ud) {
        this.qp!.postSend({
          wrId: BigInt(this.no), opcode: WrOpcode.SEND_WITH_IMM, immData: this.qp!.qpn, sendFlags: signaled ? SendFlags.SIGNALED : 0,
          sgList: [this.mr!.sge(GRH, o.size)], ud: { ah: this.ah!, remoteQpn: this.remoteQpn, remoteQkey: this.remoteQkey },
        });
      } else {
        this.qp!.postSend({ wrId: BigInt(this.no), opcode: WrOpcode.SEND, sendFlags: 0, sgList: [this.mr!.sge(0, o.size)] });
      }
    }
  }

  /** destroy_node. */
  destroy(): void {
    if (!this.id) return;
    try { if (this.id.qp) this.id.destroyQp(); } catch { /* gone with the device */ }
    try {
      this.ah?.destroy();
      for (const cq of this.cqs) cq.destroy();
      this.mr?.dereg();
      this.pd?.dealloc();
    } catch { /* gone with the device */ }
    this.id.destroyId();
    this.id = undefined;
  }
}

/** A CM error event ended the run: cmatose returns its status (no message beyond the event line). */
/** The longest the end of a run waits for its connections' time-wait (rping's server waits as long). */
const TIMEWAIT_WAIT_MS = 10_000;

class CmFailure extends Error {
  constructor(readonly status: number) {
    super(`rdma_cm event status ${status}`);
  }
}

class Test {
  readonly nodes: Node[];
  connIndex = 0;
  connectsLeft: number;
  disconnectsLeft = 0;
  /** Connections disconnected whose time-wait has not ended (TIMEWAIT_EXIT). */
  timewaitLeft = 0;
  /** The first CM error: cma_handler's `ret = event->status`, what cmatose returns and prints. */
  failed: { status: number } | undefined;
  /** The completion waits' timeouts (one shared signal: see wait-timeouts.ts). */
  private readonly waits = new WaitTimeouts();
  constructor(readonly o: Opts, readonly ch: EventChannel, readonly name: string) {
    this.nodes = Array.from({ length: o.connections }, (_, i) => new Node(i, o.dst ? createId(ch, o.ud ? 'udp' : 'tcp', { context: i }) : undefined));
    this.connectsLeft = o.connections;
  }

  say(line: string): void { process.stdout.write(line + '\n'); }

  /** cma_handler. */
  handle(e: RdmaCmEvent): void {
    const o = this.o;
    const node = typeof e.id.context === 'number' ? this.nodes[e.id.context] : undefined;
    switch (e.event) {
      case 'ADDR_RESOLVED':
        e.id.resolveRoute(2000);
        return;
      case 'ROUTE_RESOLVED':
        node!.init(o);
        e.id.connect(o.ud ? {} : { responderResources: 1, initiatorDepth: 1, retryCount: 5 });
        return;
      case 'CONNECT_REQUEST': {
        if (this.connIndex === o.connections) {
          this.say(`${this.name}: failing connection request`);
          e.id.reject();
          return;
        }
        const n = this.nodes[this.connIndex++]!;
        n.id = e.id;
        e.id.context = n.no;
        n.init(o);
        e.id.accept({});
        if (o.ud) { n.connected = true; this.connectsLeft--; }
        return;
      }
      case 'ESTABLISHED':
        if (o.ud) {
          // resolved_handler: the AH from the SIDR_REP's path.
          const ud = e.ud!;
          node!.remoteQpn = ud.qpNum;
          node!.remoteQkey = ud.qkey;
          node!.ah = node!.pd!.createAh({ grh: { dgid: ud.dgid, hopLimit: ud.hopLimit, flowLabel: ud.flowLabel }, isGlobal: true, portNum: 1 });
        }
        node!.connected = true;
        this.connectsLeft--;
        if (!o.ud) this.disconnectsLeft++;
        return;
      case 'ADDR_ERROR': case 'ROUTE_ERROR': case 'CONNECT_ERROR': case 'UNREACHABLE': case 'REJECTED':
        this.say(`${this.name}: event: RDMA_CM_EVENT_${e.event}, error: ${e.status}`);
        this.connectsLeft--;
        this.failed ??= { status: e.status };
        return;
      case 'DISCONNECTED':
        try { e.id.disconnect(); } catch { /* we started it: this is the DREP */ }
        this.disconnectsLeft--;
        this.timewaitLeft++;
        return;
      case 'TIMEWAIT_EXIT':
        this.timewaitLeft--;
        return;
      default:
    }
  }

  /** connect_events / disconnect_events: take events until `until()` is false. */
  /**
   * Stay until every disconnected connection's time-wait has ended (at most `ms`): a kernel's CM
   * outlives the process and answers the peer's resent DREQ (its DREP may have been lost) from
   * time-wait; this process's CM goes with it, and the peer would wait out all its resends.
   */
  async timewait(ms: number): Promise<void> {
    const until = Date.now() + ms;
    while (this.timewaitLeft > 0) {
      const left = until - Date.now();
      if (left <= 0) return;
      const e = await this.ch.next(undefined, left).catch(() => undefined);
      if (!e) return;
      this.handle(e);
    }
  }

  async events(until: () => boolean): Promise<void> {
    while (until() && !this.failed) {
      const e = await this.ch.next(undefined, this.o.timeoutMs).catch(() => { throw new Error(`${this.name}: no rdma_cm event for ${this.o.timeoutMs / 1000} s (${this.connectsLeft} connects, ${this.disconnectsLeft} disconnects left)`); });
      this.handle(e);
    }
    if (this.failed) throw new CmFailure(this.failed.status);
  }

  /** poll_cqs: -C completions on every connected node's CQ; a UD server makes its reply AH from the first. */
  async poll(which: 'send' | 'recv'): Promise<void> {
    const o = this.o;
    for (const n of this.nodes) {
      if (!n.connected) continue;
      const cq = which === 'send' ? n.sendCq() : n.recvCq();
      for (let done = 0; done < o.count; done++) {
        const wc = await this.next(cq);
        if (wc.status !== WcStatus.SUCCESS) throw new Error(`${this.name}: completion error ${wcStatusStr(wc.status)} on connection ${n.no}`);
        if (wc.opcode === WcOpcode.RECV) {
          const want = o.size + (o.ud ? GRH : 0);
          if (wc.byteLen !== want) throw new Error(`${this.name}: connection ${n.no} received ${wc.byteLen} bytes, expected ${want}`);
          if (o.ud && !n.ah) this.replyAh(n, wc);
        }
      }
    }
  }

  private async next(cq: CQ): Promise<WorkCompletion> {
    const got = cq.poll(1)[0];
    if (got) return got;
    try {
      return await this.waits.run(this.o.timeoutMs, (signal) => cq.next({ signal }));
    } catch {
      throw new Error(`${this.name}: no completion for ${this.o.timeoutMs / 1000} s`);
    }
  }

  /** create_reply_ah (ibv_init_ah_from_wc): the peer's GID from the GRH area, its QPN from the immediate. */
  private replyAh(n: Node, wc: WorkCompletion): void {
    const m = n.mem!;
    // Over RoCEv2 IPv4 the GRH area holds the IPv4 header in its last 20 bytes (source at 32); IPv6: source at 8.
    const v4 = m[20]! >> 4 === 4;
    const dgid = v4 ? Buffer.concat([Buffer.from('00000000000000000000ffff', 'hex'), m.subarray(32, 36)]) : Buffer.from(m.subarray(8, 24));
    n.ah = n.pd!.createAh({ grh: { dgid, hopLimit: 64 }, isGlobal: true, portNum: 1 });
    n.remoteQpn = wc.immData!;
    n.remoteQkey = n.qp!.query().qkey;
  }

  destroy(): void {
    for (const n of this.nodes) n.destroy();
  }
}

export async function cmatose(args: string[]): Promise<number> {
  const o = await parse(args);
  const name = o.ud ? 'udaddy' : 'cmatose';
  const local = o.src ?? await routeSource(o.dst!);
  const dev = await createRxeDevice({ address: local, port: o.udpPort });
  const ch = createEventChannel();
  const t = new Test(o, ch, name);
  let ret = 0;
  try {
    if (o.dst) await runClient(t, local);
    else await runServer(t, local, rxeOf(dev).port);
  } catch (err) {
    if (err instanceof CmFailure) ret = err.status; // cma_handler's ret = event->status
    else {
      process.stderr.write(`${err instanceof Error ? err.message : String(err)}\n`);
      ret = 1;
    }
  }
  if (!t.failed) await t.timewait(TIMEWAIT_WAIT_MS);
  t.say('test complete');
  t.destroy();
  ch.close();
  // The last MADs (the DREPs just answered, the REJs and DREQs destroyId sent) leave before
  // the device's sockets close (its close waits a turn of the loop for them).
  await dev.close();
  t.say(`return status ${ret}`);
  // main()'s `return ret`: the exit status is its low byte (-110, ETIMEDOUT, exits 146).
  return ret & 0xff;
}

async function runServer(t: Test, local: string, udpPort: number): Promise<void> {
  const o = t.o;
  t.say(`${t.name}: starting server`);
  const listen = createId(t.ch, o.ud ? 'udp' : 'tcp');
  try {
    listen.bindAddr(local, o.port);
    listen.listen(Math.max(128, o.connections));
    if (o.port === 0 || o.udpPort === 0) process.stderr.write(`listening: port ${listen.localAddr!.port}, RoCE UDP port ${udpPort}\n`);
    await t.events(() => t.connectsLeft > 0);
    if (o.ud) {
      if (o.count) {
        t.say('receiving data transfers');
        await t.poll('recv');
        t.say('sending replies');
        for (const n of t.nodes) n.postSends(o, true);
        await t.poll('send');
        t.say('data transfers complete');
      }
      return;
    }
    if (o.count) {
      t.say('initiating data transfers');
      for (const n of t.nodes) n.postSends(o, false);
      t.say('completing sends');
      await t.poll('send');
      t.say('receiving data transfers');
      await t.poll('recv');
      t.say('data transfers complete');
    }
    t.say(`${t.name}: disconnecting`);
    for (const n of t.nodes) {
      if (!n.connected) continue;
      n.connected = false;
      n.id!.disconnect();
    }
    await t.events(() => t.disconnectsLeft > 0);
    t.say('disconnected');
  } finally {
    listen.destroyId();
  }
}

async function runClient(t: Test, local: string): Promise<void> {
  const o = t.o;
  t.say(`${t.name}: starting client`);
  t.say(`${t.name}: connecting`);
  for (const n of t.nodes) n.id!.resolveAddr({ address: o.dst!, port: o.port }, local, 2000);
  await t.events(() => t.connectsLeft > 0);
  if (o.ud) {
    if (o.count) {
      t.say('initiating data transfers');
      for (const n of t.nodes) n.postSends(o, false);
      t.say('receiving data transfers');
      await t.poll('recv');
      t.say('data transfers complete');
    }
    return;
  }
  if (o.count) {
    t.say('receiving data transfers');
    await t.poll('recv');
    t.say('sending replies');
    for (const n of t.nodes) n.postSends(o, false);
    t.say('data transfers complete');
  }
  await t.events(() => t.disconnectsLeft > 0);
}
