// The CM's bookkeeping around the per-connection machine, still pure: which connection a
// received message belongs to, listeners by service id, duplicate REQ/REP detection by the
// peer's (comm id, CA GUID), stale connections by the peer's (QPN, CA GUID), and answers to
// messages that match no connection. Follows cm.c's cm_match_req, cm_rep_handler,
// cm_acquire_rejected_id, cm_acquire_mraed_id, cm_issue_rej, cm_issue_drep and
// cm_sidr_req_handler. Local comm ids are random 32-bit values, never 0, unique in the table.

import { randomFillSync } from 'node:crypto';
import {
  cmStep, newConn, passiveFromReq, passiveFromSidrReq, type CmAction, type CmConn, type CmInput, type CmStep,
} from './cm-state.js';
import {
  CmMsgResponse, RejReason, SidrStatus, blankCm, type CmMad, type CmMessage, type CmMessageOf,
} from './wire/cm-messages.js';

/** What happened to one connection (or, with localId undefined, a reply to the sender of what arrived). */
export interface CmOutcome {
  localId: number | undefined;
  actions: CmAction[];
  /** For a new passive connection: the listener it came in on. */
  listenId?: number;
  error?: CmStep['error'] | 'EBUSY';
}

export interface CmRouted {
  outcomes: CmOutcome[];
  dropped?: 'duplicate' | 'unexpected' | 'no_listener' | 'stale';
}

export interface CmTableOptions {
  localCaGuid: bigint;
  hiTid?: number;
  /** Source of local comm ids (tests inject one); default crypto.randomBytes. */
  randomU32?: () => number;
}

const ALL_ONES = 0xffff_ffff_ffff_ffffn;

/**
 * Local comm ids by a peer's (32-bit number, CA GUID): a map per GUID (a table talks to a few
 * peers). A string key per lookup (the GUID in decimal) cost more than the lookup.
 */
class PeerIndex {
  private readonly byGuid = new Map<bigint, Map<number, number>>();
  get(n: number, guid: bigint): number | undefined { return this.byGuid.get(guid)?.get(n >>> 0); }
  set(n: number, guid: bigint, localId: number): void {
    let m = this.byGuid.get(guid);
    if (!m) this.byGuid.set(guid, m = new Map());
    m.set(n >>> 0, localId);
  }
  /** Remove (n, guid) if it still names localId (an entry another connection took over since stays). */
  release(n: number, guid: bigint, localId: number): void {
    const m = this.byGuid.get(guid);
    if (!m || m.get(n >>> 0) !== localId) return;
    m.delete(n >>> 0);
    // An empty map stays while the table knows few peers (the next connection to the same peer
    // would make it again); past that, a peer making up GUIDs leaves nothing behind.
    if (m.size === 0 && this.byGuid.size > 16) this.byGuid.delete(guid);
  }
}

export class CmTable {
  readonly localCaGuid: bigint;
  readonly hiTid: number;
  private readonly rand: () => number;
  private readonly conns = new Map<number, CmConn>();
  private readonly listeners = new Map<number, { serviceId: bigint; mask: bigint }>();
  private readonly remoteIds = new PeerIndex();
  private readonly remoteQpns = new PeerIndex();
  /** The keys each connection holds in remoteIds and remoteQpns, so that leaving them costs two deletes, not a walk of both maps. */
  private readonly indexedBy = new Map<number, { remoteId: number; remoteQpn: number; guid: bigint }>();
  private readonly sidrKeys = new Map<number, string>();
  private readonly sidrSeen = new Set<string>();

  constructor(o: CmTableOptions) {
    this.localCaGuid = o.localCaGuid;
    this.hiTid = o.hiTid ?? 0;
    this.rand = o.randomU32 ?? randomU32;
  }

  /** A random local comm id, not 0 and not in use (a guessed id must not reach someone else's connection). */
  allocateId(): number {
    for (let i = 0; i < 1000; i++) {
      const id = this.rand() >>> 0;
      if (id !== 0 && !this.conns.has(id)) return id;
    }
    throw new Error('cm: no free local comm id (random source broken?)');
  }

  get(localId: number): CmConn | undefined {
    return this.conns.get(localId >>> 0);
  }

  /** Every connection the table holds (listeners, live ones, ones in time-wait). */
  connections(): IterableIterator<CmConn> {
    return this.conns.values();
  }

  get size(): number {
    return this.conns.size;
  }

  /** ib_create_cm_id. */
  create(): CmConn {
    const c = newConn({ localId: this.allocateId(), localCaGuid: this.localCaGuid, hiTid: this.hiTid });
    this.conns.set(c.localId, c);
    return c;
  }

  /**
   * ib_cm_listen: the service id is masked first; EBUSY if another listener's (id, mask) and
   * this one's overlap as cm_insert_listen compares them.
   */
  listen(localId: number, serviceId: bigint, mask = ALL_ONES): CmOutcome {
    const sid = serviceId & mask;
    for (const l of this.listeners.values()) {
      if ((l.mask & sid) === (mask & l.serviceId)) return { localId, actions: [], error: 'EBUSY' };
    }
    const out = this.call(localId, { type: 'listen', serviceId: sid });
    if (!out.error) this.listeners.set(localId >>> 0, { serviceId: sid, mask });
    return out;
  }

  /** A local call or a timer for one connection. */
  call(localId: number, input: CmInput): CmOutcome {
    const c = this.conns.get(localId >>> 0);
    if (!c) return { localId, actions: [], error: 'EINVAL' };
    return this.commit(cmStep(c, input));
  }

  /** A CM MAD arrived (from `peer`, the sender's address: only SIDR duplicate detection uses it). */
  receive(mad: CmMad, peer = ''): CmRouted {
    const { msg, header } = mad;
    const tid = header.tid;
    const to = (c: CmConn | undefined): CmRouted => (c ? this.routed(cmStep(c, { type: 'recv', msg, tid })) : { outcomes: [], dropped: 'unexpected' });
    const exact = (local: number, remote: number) => { const c = this.conns.get(local); return c && c.remoteId === remote ? c : undefined; };
    switch (msg.kind) {
      case 'REQ': return this.onReq(msg, tid);
      case 'REP': return this.onRep(msg, tid);
      case 'MRA':
        return to(msg.messageMraed === CmMsgResponse.REQ ? exact(msg.remoteCommId, 0) : exact(msg.remoteCommId, msg.localCommId));
      case 'REJ': {
        // cm_acquire_rejected_id: a REJ for TIMEOUT names the connection by the sender's comm
        // id and the CA GUID in its ARI, whatever its ARI length says; no match, no connection.
        if (msg.reason === RejReason.TIMEOUT) {
          const id = this.remoteIds.get(msg.localCommId, msg.ari.readBigUInt64BE(0));
          return to(id === undefined ? undefined : this.conns.get(id));
        }
        return to(msg.messageRejected === CmMsgResponse.REQ ? exact(msg.remoteCommId, 0) : exact(msg.remoteCommId, msg.localCommId));
      }
      case 'RTU': case 'DREP':
        return to(exact(msg.remoteCommId, msg.localCommId));
      case 'DREQ': {
        const c = exact(msg.remoteCommId, msg.localCommId);
        if (c) return to(c);
        // cm_issue_drep: nobody here by that name any more; let the peer finish
        const reply: CmMessageOf<'DREP'> = { ...blankCm('DREP'), localCommId: msg.remoteCommId, remoteCommId: msg.localCommId };
        return { outcomes: [{ localId: undefined, actions: [{ type: 'send', msg: reply, tid }] }], dropped: 'unexpected' };
      }
      case 'SIDR_REQ': return this.onSidrReq(msg, tid, peer);
      case 'SIDR_REP': return to(exact(msg.requestId, 0));
    }
  }

  /** The listener whose (service id, mask) covers `sid` (cm_find_listen). */
  private findListener(sid: bigint): number | undefined {
    for (const [id, l] of this.listeners) if ((l.mask & sid) === l.serviceId) return id;
    return undefined;
  }

  /** cm_issue_rej: a REJ to the sender of `m`, naming the ids the other way round. */
  private issueRej(m: { localCommId: number; remoteCommId: number }, reason: number, rejected: number, tid: bigint): CmOutcome {
    const rej: CmMessage = { ...blankCm('REJ'), localCommId: m.remoteCommId, remoteCommId: m.localCommId, messageRejected: rejected, reason };
    return { localId: undefined, actions: [{ type: 'send', msg: rej, tid }] };
  }

  /** cm_match_req + cm_req_handler. */
  private onReq(req: CmMessageOf<'REQ'>, tid: bigint): CmRouted {
    const dup = this.remoteIds.get(req.localCommId, req.localCaGuid);
    if (dup !== undefined) {
      const c = this.conns.get(dup)!;
      return { outcomes: [this.commit(cmStep(c, { type: 'recv', msg: req, tid }))], dropped: 'duplicate' };
    }
    const stale = this.remoteQpns.get(req.localQpn, req.localCaGuid);
    if (stale !== undefined) {
      // the peer reuses a QP we still think is connected: refuse, and disconnect the old one
      const outcomes = [this.issueRej({ localCommId: req.localCommId, remoteCommId: 0 }, RejReason.STALE_CONN, CmMsgResponse.REQ, tid)];
      const old = this.conns.get(stale)!;
      if (old.state === 'ESTABLISHED') outcomes.push(this.commit(cmStep(old, { type: 'send_dreq' })));
      return { outcomes, dropped: 'stale' };
    }
    const listenId = this.findListener(req.serviceId);
    if (listenId === undefined) {
      return { outcomes: [this.issueRej({ localCommId: req.localCommId, remoteCommId: 0 }, RejReason.INVALID_SERVICE_ID, CmMsgResponse.REQ, tid)], dropped: 'no_listener' };
    }
    const step = passiveFromReq({ localId: this.allocateId(), localCaGuid: this.localCaGuid, hiTid: this.hiTid }, req, tid);
    this.index(step.conn.localId, req.localCommId, req.localQpn, req.localCaGuid);
    return { outcomes: [{ ...this.commit(step), listenId }] };
  }

  /** cm_rep_handler / cm_dup_rep_handler. */
  private onRep(rep: CmMessageOf<'REP'>, tid: bigint): CmRouted {
    const c = this.conns.get(rep.remoteCommId);
    if (!c) return { outcomes: [], dropped: 'unexpected' };
    if (c.remoteId === 0 && (c.state === 'REQ_SENT' || c.state === 'MRA_REQ_RCVD')) {
      if (this.remoteIds.get(rep.localCommId, rep.localCaGuid) !== undefined) return { outcomes: [], dropped: 'duplicate' };
      const stale = this.remoteQpns.get(rep.localQpn, rep.localCaGuid);
      if (stale !== undefined) {
        const outcomes = [this.issueRej(rep, RejReason.STALE_CONN, CmMsgResponse.REP, tid)];
        const old = this.conns.get(stale)!;
        if (old.state === 'ESTABLISHED') outcomes.push(this.commit(cmStep(old, { type: 'send_dreq' })));
        return { outcomes, dropped: 'stale' };
      }
      this.index(c.localId, rep.localCommId, rep.localQpn, rep.localCaGuid);
      return { outcomes: [this.commit(cmStep(c, { type: 'recv', msg: rep, tid }))] };
    }
    if (c.remoteId !== rep.localCommId) return { outcomes: [], dropped: 'unexpected' };
    return this.routed(cmStep(c, { type: 'recv', msg: rep, tid }));
  }

  /** cm_sidr_req_handler. */
  private onSidrReq(req: CmMessageOf<'SIDR_REQ'>, tid: bigint, peer: string): CmRouted {
    const k = `${req.requestId}:${peer}`;
    if (this.sidrSeen.has(k)) return { outcomes: [], dropped: 'duplicate' };
    const listenId = this.findListener(req.serviceId);
    if (listenId === undefined) {
      const rep: CmMessage = { ...blankCm('SIDR_REP'), requestId: req.requestId, serviceId: req.serviceId, status: SidrStatus.UNSUPPORTED };
      return { outcomes: [{ localId: undefined, actions: [{ type: 'send', msg: rep, tid }] }], dropped: 'no_listener' };
    }
    const step = passiveFromSidrReq({ localId: this.allocateId(), localCaGuid: this.localCaGuid, hiTid: this.hiTid }, req, tid);
    this.sidrSeen.add(k);
    this.sidrKeys.set(step.conn.localId, k);
    return { outcomes: [{ ...this.commit(step), listenId }] };
  }

  private routed(step: CmStep): CmRouted {
    const outcomes = [this.commit(step)];
    return step.dropped ? { outcomes, dropped: step.dropped } : { outcomes };
  }

  /** Enter a connection in the duplicate (peer's comm id) and stale (peer's QPN) indexes. */
  private index(localId: number, remoteId: number, remoteQpn: number, guid: bigint): void {
    this.unindex(localId);
    this.remoteIds.set(remoteId, guid, localId);
    this.remoteQpns.set(remoteQpn, guid, localId);
    this.indexedBy.set(localId, { remoteId, remoteQpn, guid });
  }

  /** Take a connection out of both indexes (an entry another connection took over since stays). */
  private unindex(localId: number): void {
    const k = this.indexedBy.get(localId);
    if (!k) return;
    this.indexedBy.delete(localId);
    this.remoteIds.release(k.remoteId, k.guid, localId);
    this.remoteQpns.release(k.remoteQpn, k.guid, localId);
  }

  /** Store a step's result and keep the indexes in line with cm.c's lifetimes. */
  private commit(step: CmStep): CmOutcome {
    const c = step.conn;
    this.conns.set(c.localId, c);
    // cm_reset_to_idle / cm_enter_timewait take the id out of the duplicate and stale indexes
    if (c.state === 'IDLE' || c.state === 'TIMEWAIT') this.unindex(c.localId);
    if (c.state !== 'SIDR_REQ_RCVD') {
      const k = this.sidrKeys.get(c.localId);
      if (k !== undefined) { this.sidrSeen.delete(k); this.sidrKeys.delete(c.localId); }
    }
    if (c.state !== 'LISTEN') this.listeners.delete(c.localId);
    if (c.destroyed && c.state === 'IDLE') this.conns.delete(c.localId);
    const out: CmOutcome = { localId: c.localId, actions: step.actions };
    if (step.error) out.error = step.error;
    return out;
  }
}

/** crypto random 32-bit values, drawn 256 at a time (one randomBytes call per id was a tenth of the table's time). */
const pool = Buffer.alloc(1024);
let poolAt = pool.length;
function randomU32(): number {
  if (poolAt === pool.length) { randomFillSync(pool); poolAt = 0; }
  const v = pool.readUInt32BE(poolAt);
  pool.fill(0, poolAt, poolAt + 4);
  poolAt += 4;
  return v;
}
