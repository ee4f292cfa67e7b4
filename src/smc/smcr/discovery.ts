// SMC-R discovery: does the peer host have an SMC-R listener on this TCP port? Linux learns it
// from a TCP option in the SYN (SMC's experimental option, kind 254 magic 0xE2D4C3D9), which user
// space cannot set or see. softrdma asks the peer's device instead, through the IB CM on QP1: a
// SIDR_REQ (Service ID Resolution, a UD query of one round trip) for a service id that names
// SMC-R and the TCP port. An SMC-R server registers a SIDR listener for that service id on its
// rxe device(s) and answers SIDR_REP(SUCCESS); a device without it answers what the CM answers
// for any unknown service (SIDR_REP UNSUPPORTED, cm.c's cm_sidr_req_handler), and a host without
// a softrdma device answers nothing (the query times out). The client keeps the answer per
// destination (address, TCP port) with an expiry, and only ever sends a Proposal to a
// destination whose answer is a fresh yes: a plain server never sees a CLC byte.
//
// The service id: 0x02 E2 D4 C3 D9 00 PP PP (IB_CM_ASSIGN_SERVICE_ID's "locally administered"
// first byte 0x02 of ib_cm.h, then "SMCR" in EBCDIC as in the CLC eyecatcher, then the TCP port).
// It cannot collide with rdma_cm's port spaces: every RDMA CM service id is (port space << 16) |
// port with the upper 32 bits zero (TCP 0x0106, UDP 0x0111, IB 0x013f, IPoIB 0x0002,
// cma-header.ts; Linux's IB_CMA_SERVICE_ID range 0x0000000001xxxxxx), so no rdma_cm listener,
// here or in a Linux kernel, ever matches it; and Linux's own locally assigned ids
// (ib_cm_listen with IB_CM_ASSIGN_SERVICE_ID) count up from 0x0200000000000000, 2^56-odd
// assignments away from it. A Linux host asked this answers UNSUPPORTED (no ib_cm listener):
// "no softrdma SMC-R listener", which is true (see `discovery: false` for Linux SMC-R peers).
//
// Only destinations in the local interface's IPv4 subnet are asked (SMC-R v1's prefix rule;
// os.networkInterfaces() gives the prefix of the interface holding the local address), so
// nothing is sent towards hosts beyond a router.

import { interfaceAddresses } from '../interfaces.js';
import { isLocalAddress } from '../discovery.js';
import { isIPv4 } from 'node:net';
import { addressFromGid, unmapV4 } from '../../abi/inet.js';
import { getDeviceList, type Device } from '../../verbs/api.js';
import type { CmAgentEvent } from '../../cm/agent.js';
import { CmDevice, type CmIdSink } from '../../cm/rdma-cm/cm-device.js';
import { SidrStatus, type CmMessageOf } from '../../cm/wire/cm-messages.js';
import { roceGid } from '../../cm/wire/cma-header.js';
import { autoDevice, autoDeviceAllowed, wildcardAddresses } from './auto-device.js';

/** 0x02 (locally administered), "SMCR" in EBCDIC, 0x00, then the TCP port in the low 16 bits. */
export const SMCR_SERVICE_ID_BASE = 0x02e2_d4c3_d900_0000n;
export const SMCR_SERVICE_ID_MASK = 0xffff_ffff_ffff_0000n;

export function smcrServiceId(port: number): bigint {
  if (!Number.isInteger(port) || port < 1 || port > 0xffff) throw new RangeError(`TCP port ${port}`);
  return SMCR_SERVICE_ID_BASE | BigInt(port);
}

/** The SIDR_REP's private data from an SMC-R listener: the eyecatcher, then the CLC version (2). */
const ANSWER = Buffer.from([0xe2, 0xd4, 0xc3, 0xd9, 0x20]);

const envMs = (name: string, dflt: number): number => {
  const v = Number(process.env[name]);
  return process.env[name] !== undefined && process.env[name] !== '' && Number.isFinite(v) && v >= 0 ? v : dflt;
};

/** The knobs (ms). The environment sets them for a process (tests); configureSmcrDiscovery in one. */
export interface SmcrDiscoveryConfig {
  /** How long a yes is kept (SOFTRDMA_SMCR_DISCOVERY_POSITIVE_MS, default 10 min). */
  positiveMs: number;
  /** How long a no (UNSUPPORTED/REJECT, or no answer) is kept (SOFTRDMA_SMCR_DISCOVERY_NEGATIVE_MS, default 1 min). */
  negativeMs: number;
  /** One SIDR_REQ's wait before it is sent again (SOFTRDMA_SMCR_DISCOVERY_TIMEOUT_MS, default 250); 2 resends, then "no". */
  queryTimeoutMs: number;
  /**
   * The longest a connection to an unknown destination waits for the answer before it goes
   * TCP (SOFTRDMA_SMCR_DISCOVERY_WAIT_MS). Unset: about one round trip, 3 × the smoothed SIDR
   * round-trip time of earlier answers on the device (at least 2 ms); before the device has
   * had any answer, 2 × the time the connection's own TCP handshake took (at least 2 ms);
   * never more than 20 ms.
   */
  waitMs: number | undefined;
  /**
   * How recent a sign of life from the peer must be for a cached yes to hold without asking
   * (SOFTRDMA_SMCR_DISCOVERY_RECENT_MS, default 2): a client connection to that address and
   * port that the peer closed in order after reading data written within this long before
   * connect() (see yesHolds).
   */
  recentMs: number;
  /** SOFTRDMA_SMCR_DISCOVERY=0: propose SMC-R without asking (the first slice's behaviour). */
  enabled: boolean;
}

const config: SmcrDiscoveryConfig = {
  positiveMs: envMs('SOFTRDMA_SMCR_DISCOVERY_POSITIVE_MS', 10 * 60_000),
  negativeMs: envMs('SOFTRDMA_SMCR_DISCOVERY_NEGATIVE_MS', 60_000),
  queryTimeoutMs: envMs('SOFTRDMA_SMCR_DISCOVERY_TIMEOUT_MS', 250) || 250,
  waitMs: process.env.SOFTRDMA_SMCR_DISCOVERY_WAIT_MS ? envMs('SOFTRDMA_SMCR_DISCOVERY_WAIT_MS', 20) : undefined,
  recentMs: envMs('SOFTRDMA_SMCR_DISCOVERY_RECENT_MS', 2),
  enabled: process.env.SOFTRDMA_SMCR_DISCOVERY !== '0',
};
const QUERY_RETRIES = 2;
const MAX_WAIT_MS = 20;

export function configureSmcrDiscovery(c: Partial<SmcrDiscoveryConfig>): SmcrDiscoveryConfig {
  Object.assign(config, c);
  return { ...config };
}

function newCounters() {
  return {
    /** SIDR_REQs started (one per unknown destination at a time; resends not counted). */
    queries: 0,
    /** Connections that found a fresh answer in the cache (hits_positive + hits_negative). */
    hits: 0,
    hits_positive: 0,
    hits_negative: 0,
    /** Connections to a destination with no fresh answer (they started a query or joined one). */
    misses: 0,
    /** Queries answered SUCCESS by an SMC-R listener / UNSUPPORTED, REJECT or another status. */
    answers_positive: 0,
    answers_negative: 0,
    /** Queries nobody answered (every resend ran out): cached as no. */
    timeouts: 0,
    /** Queries that could not be sent (no CM on the device: QP1 held elsewhere). */
    errors: 0,
    /** Misses whose answer came within the wait (they proposed) / did not (they went TCP). */
    waited_answered: 0,
    waited_out: 0,
    /** Connections to a destination outside the local interface's subnet: TCP, nothing asked. */
    outside_subnet: 0,
    /** SIDR_REQs this process's SMC-R listeners answered. */
    served: 0,
    /** Of those, answered UNSUPPORTED because the servers' policy would not offer SMC-R to the asker. */
    served_refused: 0,
    /** Yes answers forgotten: a Proposal sent on one got no valid CLC answer (forgetSmcrListener), or the peer's process was taken for gone (forgetSmcrPeer). */
    withdrawn: 0,
    /** Connections that found a fresh yes but no live SMC-R connection to the peer, and asked again (at connect(), or once connected). */
    revalidated: 0,
    /** Connections that took a fresh yes without asking because the peer had closed one of ours in order just before (recentMs). */
    hits_recent: 0,
    /** Queries started at connect(), alongside the TCP handshake, instead of after it (prefetchSmcr). */
    prefetched: 0,
  };
}
const counters = newCounters();

/** The discovery counters of this process (a copy). */
export function smcrDiscoveryCounters(): ReturnType<typeof newCounters> {
  return { ...counters };
}

// ---------------------------------------------------------------------------------------------
// Server: SIDR listeners

/**
 * Whether a server's SMC-R may be offered to a client at `remote` (its policy, server.ts): a
 * listener whose policy says no answers UNSUPPORTED, so the client stays on TCP at TCP's cost
 * instead of proposing and being declined.
 */
export type SmcrOfferCheck = (remote: string | undefined) => boolean;

interface ListenEntry { cm: CmDevice; listenId: number; refs: number; checks: Array<SmcrOfferCheck | undefined> }
/** (device, service id) → the CM listen; two servers on one port (wildcard and specific) share it. */
const listens = new Map<string, ListenEntry>();
const deviceIds = new WeakMap<Device, number>();
let nextDeviceId = 1;
const devKey = (d: Device, sid: bigint) => {
  let n = deviceIds.get(d);
  if (n === undefined) deviceIds.set(d, n = nextDeviceId++);
  return `${n}:${sid}`;
};

function ipv4DeviceAddress(dev: Device): string | undefined {
  for (const g of dev.provider.gidTable(1)) {
    const a = addressFromGid(g.gid);
    if (isIPv4(a)) return a;
  }
  return undefined;
}

/**
 * Answers every SIDR_REQ on its listen with SUCCESS (the meaning: an SMC-R listener is here),
 * unless no server on it would offer SMC-R to the asking address (its policy): UNSUPPORTED, as
 * for a port without an SMC-R listener.
 */
class ListenSink implements CmIdSink {
  constructor(private readonly key: string) {}
  onCmEvent(e: CmAgentEvent, dev: CmDevice): void {
    if (e.event !== 'SIDR_REQ_RECEIVED') return;
    counters.served++;
    const checks = listens.get(this.key)?.checks ?? [undefined];
    const from = e.source ? addressFromGid(e.source.sgid) : undefined;
    const yes = checks.some((c) => { try { return !c || c(from); } catch { return false; } });
    if (!yes) counters.served_refused++;
    try {
      dev.agent.call(e.localId, {
        type: 'send_sidr_rep',
        rep: yes
          ? { status: SidrStatus.SUCCESS, additionalInfoLength: 0, qpn: 1, qkey: 0x8001_0000, additionalInfo: Buffer.alloc(0), privateData: ANSWER }
          : { status: SidrStatus.UNSUPPORTED, additionalInfoLength: 0, qpn: 0, qkey: 0, additionalInfo: Buffer.alloc(0), privateData: Buffer.alloc(0) },
      });
      dev.agent.call(e.localId, { type: 'destroy' });
    } catch { /* the agent closed under us */ }
  }
  onDeviceRemoval(): void {
    listens.delete(this.key);
  }
}

export interface SmcrListenHandle { remove(): void }

/**
 * An SMC-R server listening on address:port: a SIDR listener for smcrServiceId(port) on each
 * rxe device it may use: the one named, or (smcr: true) those holding the address, every IPv4
 * rxe device of the process for a wildcard address, and the devices SMC-R brings up itself
 * (smcr/auto-device.ts) on the address, or on each non-loopback IPv4 interface address for a
 * wildcard one, where the process has none; those listen once they are up. Devices the
 * application creates after listen() are not covered.
 */
export function registerSmcrListener(address: string, port: number, named?: Device, check?: SmcrOfferCheck): SmcrListenHandle {
  const sid = smcrServiceId(port);
  const wildcard = address === '0.0.0.0' || address === '::';
  const a = unmapV4(address);
  const devs = named ? [named] : getDeviceList().filter((d) => d.driver === 'rxe' && (wildcard || ipv4DeviceAddress(d) === a));
  const held: string[] = [];
  let removed = false;
  const listenOn = (dev: Device): void => {
    const key = devKey(dev, sid);
    if (held.includes(key)) return;
    const have = listens.get(key);
    if (have && !have.cm.isRemoved) { have.refs++; have.checks.push(check); held.push(key); return; }
    try {
      const cm = CmDevice.of(dev);
      const listenId = cm.agent.listen(sid);
      cm.own(listenId, new ListenSink(key));
      listens.set(key, { cm, listenId, refs: 1, checks: [check] });
      held.push(key);
    } catch { /* QP1 held by another owner, or the device closing: this device cannot be asked */ }
  };
  for (const dev of devs) listenOn(dev);
  if (!named) {
    for (const addr of wildcard ? wildcardAddresses() : [a]) {
      if (!autoDeviceAllowed(addr)) continue;
      const d = autoDevice(addr);
      if ('device' in d) listenOn(d.device);
      else if ('pending' in d) void d.pending.then((dev) => { if (dev && !removed) listenOn(dev); });
    }
  }
  return {
    remove() {
      if (removed) return;
      removed = true;
      for (const key of held) {
        const e = listens.get(key);
        if (e) { const i = e.checks.indexOf(check); if (i >= 0) e.checks.splice(i, 1); }
        if (!e || --e.refs > 0) continue;
        listens.delete(key);
        e.cm.disown(e.listenId);
        try { e.cm.agent.call(e.listenId, { type: 'destroy' }); } catch { /* agent closed */ }
      }
    },
  };
}

/** How many SIDR listens this process holds (tests). */
export function smcrListenCount(): number {
  return listens.size;
}

// ---------------------------------------------------------------------------------------------
// Client: the cache and the queries

type Answer = boolean;
/**
 * `asked`: when the query that answered started (performance.now()). `provisional`: a no from a
 * query sent at connect() (prefetchSmcr) that no connection which got as far as 'connect' has
 * used yet: if that connect fails, the no goes (abandonSmcrPrefetch), since it may only say that
 * the server was not up yet (a client retrying until its server starts must not keep a no for a
 * minute).
 */
interface CacheEntry { answer: Answer; expires: number; asked: number; provisional?: SmcrQuery }
export class SmcrQuery {
  readonly startedAt = performance.now();
  private readonly waiters = new Set<(a: Answer | undefined) => void>();
  done = false;
  answer: Answer | undefined;
  /** Set when the query could not be asked for a reason of this end (no device): how to decline. */
  failure: { reason: number; cause: string } | undefined;
  /** A stand-in while this end's device comes up (clc-flow.ts smcrDiscovery): true until the real query starts. */
  awaitsDevice = false;
  /**
   * Sent at connect() (prefetchSmcr): 'pending' until a connection that reached 'connect' uses it
   * ('claimed'), or its socket's connect failed first ('abandoned'): see CacheEntry.provisional.
   */
  prefetch: 'pending' | 'claimed' | 'abandoned' | undefined;
  constructor(readonly key: string, readonly dst = '') {}
  /** cb(answer) when the query ends: true / false, undefined if it could not be asked. */
  onDone(cb: (a: Answer | undefined) => void): () => void {
    if (this.done) { cb(this.answer); return () => undefined; }
    this.waiters.add(cb);
    return () => this.waiters.delete(cb);
  }
  finish(a: Answer | undefined): void {
    if (this.done) return;
    this.done = true;
    this.answer = a;
    for (const w of [...this.waiters]) w(a);
    this.waiters.clear();
  }
}

const cache = new Map<string, CacheEntry>();
const inflight = new Map<string, SmcrQuery>();
/** Smoothed SIDR round-trip time per device (ms), as TCP's SRTT (1/8 gain). */
const srtt = new WeakMap<Device, number>();

/** Forget every cached answer (tests). */
export function clearSmcrDiscoveryCache(): void {
  cache.clear();
  closedAt.clear();
}

export type SmcrDiscovery =
  | { go: 'propose'; cause: string; cached?: true }
  | { go: 'tcp'; cause: string; outside?: true; reason?: number }
  | { go: 'wait'; query: SmcrQuery; ms: number };

/** The prefix length of the IPv4 interface holding `local` (exactly, else by its subnet); undefined if none. */
function prefixOf(local: string): number | undefined {
  const n = v4(local);
  let found: number | undefined;
  for (const i of interfaceAddresses()) {
    if (i.family !== 'IPv4' || !i.cidr) continue;
    const len = Number(i.cidr.split('/')[1]);
    if (i.address === local) return len;
    if (found === undefined && sameSubnet(n, v4(i.address), len)) found = len;
  }
  return found;
}

const v4 = (a: string) => a.split('.').reduce((x, o) => ((x << 8) | Number(o)) >>> 0, 0);
const sameSubnet = (a: number, b: number, len: number) => len === 0 || ((a ^ b) >>> (32 - len)) === 0;

/** Is `dst` in the subnet of the interface holding `local` (SMC-R v1's prefix rule)? */
export function inLocalSubnet(local: string, dst: string): boolean {
  if (!isIPv4(local) || !isIPv4(dst)) return false;
  const len = prefixOf(local);
  return len !== undefined && sameSubnet(v4(local), v4(dst), len);
}

/**
 * How long a connection waits for a query's answer: about one round trip (see
 * SmcrDiscoveryConfig.waitMs); `tcpMs`, the connection's TCP handshake (connect() to
 * 'connect'), stands for it before the device has an estimate of its own.
 */
export function waitBudget(dev?: Device, tcpMs?: number): number {
  if (config.waitMs !== undefined) return config.waitMs;
  const rtt = dev && srtt.get(dev);
  if (rtt !== undefined) return Math.min(MAX_WAIT_MS, Math.max(2, 3 * rtt));
  return tcpMs === undefined || !(tcpMs >= 0) ? MAX_WAIT_MS : Math.min(MAX_WAIT_MS, Math.max(2, 2 * tcpMs));
}

/**
 * Is a cached yes good for a connection to dst:port without asking again? Only while a
 * connection of ours to that port is live on SMC-R (its TCP connection would have ended had the
 * peer's process gone, and the yes with it, forgetSmcrPeer), or when it was asked at or after
 * this connection's connect() to an IPv4 address (`since`): the listener answered while our SYN
 * was on its way. Otherwise the peer may have died since and a plain server taken its port (a
 * kill leaves an idle link group looking alive until its keepalive fails): asked again.
 * One more sign of life counts, for connections opened one after another: the peer closed a
 * connection of ours to that port in order, by a CDC it sent after reading the data we last
 * wrote on it, and that write was at most recentMs before this connect() (timed from the write,
 * not from the CDC's arrival, which a stalled event loop may read late). A plain server would
 * have had to take the port within that window (the SMC-R listener's process closing it first);
 * an answer asked at connect() is itself a SIDR round trip old when it comes, 0.2-1 ms between
 * two processes here. A short connection's echo and close fit in the default 2 ms.
 * (Only that port's connections count: one to another port shows the peer's process alive, not
 * that this port still has its SMC-R listener.)
 */
function yesHolds(hit: CacheEntry, key: string, dst: string, since: number | undefined, count: boolean): boolean {
  if (since !== undefined && hit.asked >= since) return true;
  if (livePeer(dst, key)) return true;
  if (since !== undefined && config.recentMs > 0 && (closedAt.get(key) ?? -Infinity) >= since - config.recentMs) {
    if (count) counters.hits_recent++;
    return true;
  }
  return false;
}

/** The fresh cached answer for dst:port (its `key`) that a connection takes without asking: a no, or a yes that holds for it. */
function answerThatHolds(key: string, dst: string, since: number | undefined, now: number, count = false): CacheEntry | undefined {
  const hit = cache.get(key);
  return hit && hit.expires > now && (!hit.answer || yesHolds(hit, key, dst, since, count)) ? hit : undefined;
}

/** When the peer last closed a client connection of ours to address:port in order (yesHolds), by that key. */
const closedAt = new Map<string, number>();

/**
 * A client SMC-R connection to `service` (address:port) got the peer's closing CDC, in order
 * (done writing or closed, not an abort), which it sent after reading data written at `at`
 * (performance.now()): the listener's process was alive at some time since `at`.
 */
export function noteSmcrOrderlyClose(service: string, at: number): void {
  const now = performance.now();
  if (closedAt.size >= MAX_CLOSED && !closedAt.has(service)) {
    // Only entries inside the window count: the older ones go.
    for (const [k, t] of closedAt) if (t < now - config.recentMs) closedAt.delete(k);
    if (closedAt.size >= MAX_CLOSED) return;
  }
  const was = closedAt.get(service);
  if (was === undefined || at > was) closedAt.set(service, at);
}

/** The most destinations whose last orderly close is remembered (each is looked at for recentMs only). */
const MAX_CLOSED = 1024;

/** The fresh entry of a host that answered no query at all lately (no softrdma device: none of its ports is asked). */
function muteHost(dst: string, now: number): CacheEntry | undefined {
  const mute = cache.get(hostKey(dst));
  return mute && mute.expires > now ? mute : undefined;
}

/** What discoverSmcr knows of the connection that asks. */
export interface SmcrAsker {
  /** Its TCP handshake's time (ms): waitBudget's stand-in for a round trip. */
  tcpMs?: number;
  /** Already waiting (for its device to come up, clc-flow.ts): it takes the query, its own wait decides. */
  join?: boolean;
  /** Its connect() (performance.now()), when that was given an IPv4 address (yesHolds, the budget). */
  since?: number;
  /** Its connect() asked already, and counted `revalidated` (prefetchSmcr). */
  counted?: boolean;
}

/**
 * Client, before an SMC-R Proposal from `local` (on `dev`) to dst:port, by a connection that
 * got as far as 'connect': propose (a fresh yes), TCP (a fresh no, or a destination outside the
 * subnet), or wait for a query, started here, or one already under way, up to the returned ms:
 * what is left of the budget since the query started, or all of it for one started since this
 * connection's connect() (its own prefetchSmcr's, or a neighbour's), whose answer also holds
 * for it (yesHolds).
 */
export function discoverSmcr(dev: Device | undefined, local: string, dst: string, port: number, ask: SmcrAsker = {}): SmcrDiscovery {
  if (!config.enabled) return { go: 'propose', cause: 'discovery off' };
  if (!inLocalSubnet(local, dst)) {
    counters.outside_subnet++;
    return { go: 'tcp', cause: `${dst} is outside ${local}'s subnet (SMC-R v1's prefix rule): not asked`, outside: true };
  }
  const key = serviceKey(dst, port);
  const now = performance.now();
  const held = answerThatHolds(key, dst, ask.since, now, true);
  if (held) {
    if (held.provisional) claim(held.provisional);
    counters.hits++;
    if (held.answer) { counters.hits_positive++; return { go: 'propose', cause: 'cached: an SMC-R listener', cached: true }; }
    counters.hits_negative++;
    return { go: 'tcp', cause: 'cached: no SMC-R listener at the peer' };
  }
  const hit = cache.get(key);
  // A yes asked again (unless this connection's connect() asked already, and counted it).
  if (hit && hit.expires > now) { if (!ask.counted) counters.revalidated++; }
  else if (hit) cache.delete(key);
  const mute = muteHost(dst, now);
  if (mute) {
    if (mute.provisional) claim(mute.provisional);
    counters.hits++;
    counters.hits_negative++;
    return { go: 'tcp', cause: 'cached: the peer host answered no SMC-R query (no softrdma device)' };
  }
  if (!dev) return { go: 'propose', cause: 'no device to ask with' }; // the Proposal then declines NOSMCRDEV
  counters.misses++;
  let q = inflight.get(key);
  if (q) claim(q);
  else {
    q = startQuery(dev, dst, port, key);
    if (q.done) return q.answer ? { go: 'propose', cause: 'discovered' } : { go: 'tcp', cause: 'SMC-R discovery could not ask' };
  }
  // join: a connection already waiting (for its device to come up, clc-flow.ts) only takes the
  // query; its own wait decides, and counts, how it ends.
  if (ask.join) return { go: 'wait', query: q, ms: 0 };
  // The budget runs from now for a query asked since this connection's connect() (prefetchSmcr's,
  // sent beside its SYN): the handshake's time is not taken from its wait.
  const left = waitBudget(dev, ask.tcpMs) - (ask.since !== undefined && q.startedAt >= ask.since ? 0 : now - q.startedAt);
  if (left <= 0) {
    counters.waited_out++;
    return { go: 'tcp', cause: 'SMC-R discovery under way: TCP for this connection' };
  }
  return { go: 'wait', query: q, ms: left };
}

/**
 * Client, at connect() (before the TCP handshake): would discoverSmcr ask about dst:port now?
 * Discovery on, no query under way, no fresh answer that holds without asking, the host not
 * known to answer nothing, dst neither loopback nor an address of this host (SMC-D's). The cheap
 * half of prefetchSmcr, looked at before the local address and device are (what most
 * connections need never be).
 */
export function prefetchWanted(dst: string, port: number): boolean {
  if (!config.enabled) return false;
  const key = serviceKey(dst, port);
  if (inflight.has(key)) return false;
  const now = performance.now();
  // `since` now: this is the connection's connect().
  return !answerThatHolds(key, dst, now, now) && !muteHost(dst, now) && !isLocalAddress(dst);
}

/**
 * Client, at connect(), where prefetchWanted said so: start the query discoverSmcr would start
 * once the connection is up, so that its round trip runs alongside the handshake's instead of
 * after it; dst in local's subnet. Returns the query
 * (the socket tells how its connect ended: claimSmcrPrefetch, abandonSmcrPrefetch) and whether
 * it asked a cached yes again (`revalidated`, counted here), or undefined if none started.
 */
export function prefetchSmcr(dev: Device, local: string, dst: string, port: number): { query: object; revalidated: boolean } | undefined {
  if (!inLocalSubnet(local, dst)) return undefined;
  const key = serviceKey(dst, port);
  const hit = cache.get(key);
  const revalidated = hit !== undefined && hit.answer && hit.expires > performance.now();
  const q = startQuery(dev, dst, port, key);
  if (q.done) return undefined;
  q.prefetch = 'pending';
  counters.prefetched++;
  if (revalidated) counters.revalidated++;
  return { query: q, revalidated };
}

/**
 * A Proposal sent on a yes for dst:port got no valid CLC answer (non-CLC bytes, the handshake
 * timer, the peer's end, a message out of sync, or the peer's Decline saying it has no SMC-R):
 * whatever answered the query then is not that port's server now (an SMC-R server replaced by
 * a plain one). The yes is forgotten, so the next connection asks again instead of proposing.
 */
export function forgetSmcrListener(dst: string, port: number): void {
  const key = serviceKey(dst, port);
  const hit = cache.get(key);
  if (hit?.answer) {
    cache.delete(key);
    counters.withdrawn++;
  }
}

/**
 * The peer host's SMC-R process is taken for gone (a connection's TCP ended or was reset with
 * no closing CDC, or our link group with it failed): every yes for its address is forgotten,
 * whichever port, so the next connection asks again instead of proposing to whatever holds
 * the port now (a plain server that took it over). Returns how many were forgotten.
 */
export function forgetSmcrPeer(dst: string): number {
  let n = 0;
  for (const [k, e] of cache) {
    if (e.answer && k.slice(0, k.lastIndexOf(':')) === dst) { cache.delete(k); n++; }
  }
  counters.withdrawn += n;
  return n;
}

/** Does this process have a live client SMC-R connection to dst:port (`service`, serviceKey's)? lgr.ts, which imports this module, sets it. */
export type LivePeerCheck = (dst: string, service: string) => boolean;
let livePeer: LivePeerCheck = () => false;
/** Returns the check it replaces (tests put it back). */
export function setSmcrLivePeerCheck(f: LivePeerCheck): LivePeerCheck {
  const was = livePeer;
  livePeer = f;
  return was;
}

/** A connection stopped waiting: count how (the answer came in time, or not). */
export function smcrWaitEnded(answered: boolean): void {
  if (answered) counters.waited_answered++;
  else counters.waited_out++;
}

/**
 * Does dst:port have an SMC-R listener, by a fresh answer? A connection that will not wait
 * (a TLS client choosing node:tls's own path, smc/tls.ts) asks here; without a fresh answer
 * it starts the query from the local address that would reach dst, on that address's device
 * (brought up if need be), for the connections after it; false meanwhile.
 */
export function smcrKnownListener(dst: string, port: number): boolean {
  const key = serviceKey(dst, port);
  const hit = cache.get(key);
  if (hit && hit.expires > performance.now()) return hit.answer;
  if (!config.enabled || inflight.has(key)) return false;
  const local = localAddressFor(dst);
  if (!local) return false;
  const d = autoDevice(local);
  if ('device' in d) discoverSmcr(d.device, local, dst, port);
  else if ('pending' in d) void d.pending.then((dev) => { if (dev) discoverSmcr(dev, local, dst, port); });
  return false;
}

/** The non-loopback IPv4 address of the interface whose subnet holds dst (where TCP would leave from). */
export function localAddressFor(dst: string): string | undefined {
  if (!isIPv4(dst)) return undefined;
  for (const i of interfaceAddresses()) {
    if (i.family !== 'IPv4' || i.internal || !i.cidr || !autoDeviceAllowed(i.address)) continue;
    if (sameSubnet(v4(dst), v4(i.address), Number(i.cidr.split('/')[1]))) return i.address;
  }
  return undefined;
}

/** The cache entry of a host that answered nothing (every port's query of it goes unasked while it is fresh). */
const hostKey = (dst: string) => `${dst}:*`;
/** A destination's cache key, and a client connection's `service` (SmcrConnection): address:port. */
export function serviceKey(dst: string, port: number): string {
  return `${dst}:${port}`;
}

/** Above this many destinations, expired answers are swept out before a new one is kept. */
const CACHE_SWEEP_AT = 4096;

function remember(key: string, answer: Answer, q: SmcrQuery): void {
  // A no for a connect() that failed before anyone used the query says nothing to keep.
  if (!answer && q.prefetch === 'abandoned') return;
  if (cache.size >= CACHE_SWEEP_AT) {
    const now = performance.now();
    for (const [k, e] of cache) if (e.expires <= now) cache.delete(k);
    if (cache.size >= CACHE_SWEEP_AT) cache.delete(cache.keys().next().value!);
  }
  const now = performance.now();
  cache.set(key, { answer, expires: now + (answer ? config.positiveMs : config.negativeMs), asked: q.startedAt, provisional: !answer && q.prefetch === 'pending' ? q : undefined });
}

/** A connection that reached 'connect' uses q (its own prefetch, or one it joined): q's answers stand. */
function claim(q: SmcrQuery): void {
  // (An abandoned one too: another connection to the same place got as far, and waits for it.)
  if (q.prefetch !== 'pending' && q.prefetch !== 'abandoned') return;
  q.prefetch = 'claimed';
  for (const k of [q.key, hostKey(q.dst)]) {
    const e = cache.get(k);
    if (e?.provisional === q) e.provisional = undefined;
  }
}

/**
 * Client: the socket whose connect() sent `query` (prefetchSmcrDiscovery) closed before 'connect'
 * (refused, unreachable, destroyed). Unless a connection that got further used it, the no it
 * brought (or will bring) is not kept: the server may just not have been up yet.
 */
export function abandonSmcrPrefetch(query: object): void {
  if (!(query instanceof SmcrQuery) || query.prefetch !== 'pending') return;
  query.prefetch = 'abandoned';
  for (const k of [query.key, hostKey(query.dst)]) {
    const e = cache.get(k);
    if (e?.provisional === query) cache.delete(k);
  }
}

/** Client: the socket whose connect() sent `query` reached 'connect': what it answers stands. */
export function claimSmcrPrefetch(query: object): void {
  if (query instanceof SmcrQuery) claim(query);
}

class QuerySink implements CmIdSink {
  constructor(private readonly q: SmcrQuery, private readonly dev: Device, private readonly dst: string, private readonly sid: bigint, private readonly localId: () => number) {}
  onCmEvent(e: CmAgentEvent, cm: CmDevice): void {
    if (e.event !== 'SIDR_REP_RECEIVED' && e.event !== 'SIDR_REQ_ERROR') return;
    cm.disown(this.localId());
    try { cm.agent.call(this.localId(), { type: 'destroy' }); } catch { /* agent closed */ }
    inflight.delete(this.q.key);
    if (e.event === 'SIDR_REQ_ERROR') {
      counters.timeouts++;
      remember(this.q.key, false, this.q);
      // Nothing answered, not even "unsupported": no softrdma device at that address, for any port.
      remember(hostKey(this.dst), false, this.q);
      return this.q.finish(false);
    }
    const rep = e.msg as CmMessageOf<'SIDR_REP'>;
    const ms = performance.now() - this.q.startedAt;
    const old = srtt.get(this.dev);
    srtt.set(this.dev, old === undefined ? ms : old + (ms - old) / 8);
    const yes = rep.status === SidrStatus.SUCCESS && rep.serviceId === this.sid && Buffer.from(rep.privateData.subarray(0, ANSWER.length)).equals(ANSWER);
    if (yes) counters.answers_positive++;
    else counters.answers_negative++;
    remember(this.q.key, yes, this.q);
    this.q.finish(yes);
  }
  onDeviceRemoval(): void {
    inflight.delete(this.q.key);
    this.q.finish(undefined);
  }
}

function startQuery(dev: Device, dst: string, port: number, key: string): SmcrQuery {
  const q = new SmcrQuery(key, dst);
  const sid = smcrServiceId(port);
  let cm: CmDevice;
  let localId = 0;
  try {
    cm = CmDevice.of(dev);
    localId = cm.agent.sidrRequest({
      dgid: roceGid(dst), req: { partitionKey: 0xffff, serviceId: sid, privateData: Buffer.alloc(0) },
      timeoutMs: config.queryTimeoutMs, maxRetries: QUERY_RETRIES,
    });
  } catch {
    counters.errors++;
    q.finish(undefined);
    return q;
  }
  counters.queries++;
  cm.own(localId, new QuerySink(q, dev, dst, sid, () => localId));
  inflight.set(key, q);
  return q;
}
