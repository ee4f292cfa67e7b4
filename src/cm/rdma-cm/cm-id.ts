// struct rdma_cm_id: one communication identifier of the rdma_cm, with librdmacm's calls
// (rdma_bind_addr, rdma_resolve_addr, rdma_resolve_route, rdma_create_qp, rdma_connect,
// rdma_listen, rdma_accept, rdma_reject, rdma_disconnect, rdma_destroy_id) on the IB CM agent
// of its device. What the calls put on the wire and do to the QP follows Linux's cma.c:
// cma_connect_ib (the REQ), cma_accept_ib (the REP), cma_resolve_ib_udp / cma_send_sidr_rep
// (SIDR), cma_ib_handler / cma_ib_req_handler (which CM event becomes which rdma_cm event).
//
// Calls check their arguments and the id's state first and throw SoftrdmaError (EINVAL naming
// the field or the state, EBADF on a destroyed id, EADDRNOTAVAIL, EADDRINUSE); a call that
// throws has changed nothing. Results come as events on the id's channel, as in librdmacm.

import { readFileSync } from 'node:fs';
import { randomInt } from 'node:crypto';
import { shown, SoftrdmaError } from '../../abi/errors.js';
import { QpType } from '../../abi/enums.js';
import type { Context, PD, QP } from '../../verbs/api.js';
import type { CmAgentEvent } from '../agent.js';
import { cmAckTimeout, type CmStateName } from '../cm-state.js';
import { CmDataSize, RejReason, SidrStatus, rejReasonName, reqQpType, sidrStatusName, type CmMessageOf } from '../wire/cm-messages.js';
import {
  CMA_REQ_USER_PRIVATE_DATA, CMA_SIDR_REQ_USER_PRIVATE_DATA, RDMA_UDP_QKEY, cmaReqPrivateData, cmaRoceFlowLabel, cmaUserData, decodeCmaHeader, roceGid, serviceIdFor,
} from '../wire/cma-header.js';
import { PORT_SPACE, isWildcard, ports, sockAddr, withoutZone, type PortSpaceName, type SockAddr } from './addresses.js';
import { CmDevice } from './cm-device.js';
import { connEventParam, formatRep, formatReq, sidrRep, udEventParam } from './cm-fields.js';
import { EventChannel } from './event-channel.js';
import { ERRNO, type ConnEventParam, type RdmaCmEvent, type RdmaCmEventType, type UdEventParam } from './events.js';
import { checkTimeout, privateData, rdAtomic, retries, timingOf, uint, type CmQpInit, type CmTiming, type ConnParam, type CreateIdOptions } from './params.js';
import { qpToErr, qpToInit, qpToRtr, qpToRts, type CmPath } from './qp-transitions.js';
import { armCmExit, cmExitCounters, exitGuard } from '../exit.js';

/** The id's state (enum rdma_cm_state, in words). */
export type RdmaCmState =
  | 'idle' | 'addr-bound' | 'addr-query' | 'addr-resolved' | 'route-query' | 'route-resolved'
  | 'connect' | 'connect-request' | 'established' | 'disconnect' | 'listen' | 'rejected' | 'device-removal' | 'destroyed';

let nextDebugNo = 1;

/** Ids not destroyed yet: a process that exits destroys them (ucma_close; exit.ts). */
const liveIds = new Set<RdmaCmId>();
const destroyIdsAtExit = (): void => {
  for (const id of [...liveIds]) {
    exitGuard(() => {
      id.destroyId();
      cmExitCounters.ids++;
    });
  }
};

// The CM device's sink and follower (onCmEvent, onDeviceRemoval, onDeviceAdded: internal ones,
// which the published declarations leave out) are met structurally where it is registered, not
// by an `implements` clause: one would name members the .d.ts lacks, and a consumer's tsc
// without skipLibCheck would fail on it. (The word that marks a member internal must not appear
// here: tsc's stripInternal would take the whole class out.)
export class RdmaCmId {
  /** The application's context (librdmacm's id->context). */
  context: unknown;
  readonly portSpace: PortSpaceName;
  /** The QP createQp made (librdmacm's id->qp). */
  qp: QP | undefined;
  /** A number for logs. */
  readonly no = nextDebugNo++;
  private st: RdmaCmState = 'idle';
  private dev: CmDevice | undefined;
  private local: SockAddr | undefined;
  private remote: SockAddr | undefined;
  private boundPort: { address: string; port: number } | undefined;
  /** setOption('afonly'), if given. */
  private afonlyOpt: boolean | undefined;
  /** Bound: whether the id takes its own family only (cma's id_priv->afonly). */
  private afonly = false;
  private path: CmPath | undefined;
  /** The comm id of the connection (or SIDR exchange) in progress. */
  private commId: number | undefined;
  /** Listener: the comm id on each device it listens on (made by the first listen: most ids never listen). */
  private listensMap: Map<CmDevice, number> | undefined;
  private get listens(): Map<CmDevice, number> { return this.listensMap ??= new Map(); }
  private backlog = 0;
  /** Listener: CONNECT_REQUESTs on the channel the application has not taken yet (ucma's backlog). */
  private pending = 0;
  /** Child of a listener: the REQ it answers. */
  private req: CmMessageOf<'REQ'> | undefined;
  /** Our starting PSN (id_priv->seq_num): the PSN we expect to receive first. */
  private readonly seqNum = randomInt(0x1000000);
  private retryCount = 7;
  private readonly timing: CmTiming;

  /** @internal use createId */
  constructor(readonly channel: EventChannel, portSpace: PortSpaceName, opts: CreateIdOptions = {}) {
    if (!(channel instanceof EventChannel)) throw new SoftrdmaError('EINVAL', `rdma_cm: channel must be an EventChannel (createEventChannel()), got ${shown(channel)}`);
    if (portSpace !== 'tcp' && portSpace !== 'udp') throw new SoftrdmaError('EINVAL', `rdma_cm: portSpace must be 'tcp' or 'udp', got ${String(portSpace)}`);
    if (typeof opts !== 'object' || opts === null) throw new SoftrdmaError('EINVAL', `rdma_cm: opts must be an object (or left out), got ${shown(opts)}`);
    this.portSpace = portSpace;
    this.context = opts.context;
    this.timing = timingOf(opts);
    channel.adopt(this);
    liveIds.add(this);
    armCmExit('ids', destroyIdsAtExit);
    CmDevice.retain();
  }

  get state(): RdmaCmState { return this.st; }
  /** The device the id is on (after bindAddr to an address, resolveAddr, or for a listener's new id). */
  get device() { return this.dev?.device; }
  /** A context on that device for the application's PDs and CQs (librdmacm's id->verbs); shared by the ids on the device. */
  get verbs(): Context | undefined { return this.dev?.context; }
  get localAddr(): SockAddr | undefined { return this.local && { ...this.local }; }
  get remoteAddr(): SockAddr | undefined { return this.remote && { ...this.remote }; }
  /** The route after ROUTE_RESOLVED (or taken from the REQ for a listener's new id). */
  get route(): Readonly<CmPath> | undefined { return this.path; }
  private get ps(): number { return PORT_SPACE[this.portSpace]; }
  /**
   * The service timeout our delayed MRAs ask for. Linux's is 24 (CMA_CM_MRA_SETTING: about 69 s
   * a try); ours is the id's CM response timeout (default 20, about 4 s), because a softrdma
   * process killed by a signal sends no REJ (the kernel does, for a Linux process; one that
   * exits does: exit.ts) and a peer told to wait 69 s a try would wait minutes for it.
   */
  private get mraServiceTimeout(): number { return this.timing.cmResponseTimeout; }
  private get ud(): boolean { return this.portSpace === 'udp'; }

  // ---- addresses and routes ----

  /**
   * rdma_set_option(RDMA_OPTION_ID, ...): 'afonly' (RDMA_OPTION_ID_AFONLY), before the id is
   * bound or while it is only bound (rdma_set_afonly): true, an IPv6 id takes IPv6 only (a '::'
   * listener no IPv4 connections, and it shares its port with a '0.0.0.0' one); false, both. An
   * IPv6 id that is not told follows net.ipv6.bindv6only (0 by default: both), as Linux's; an
   * IPv4 id takes IPv4 only whatever it is told. The other options of librdmacm (tos,
   * reuseaddr, ack timeout, path records) are not supported: ENOSYS, as the kernel answers an
   * option it does not know.
   */
  setOption(name: 'afonly', value: boolean): void {
    if (name !== 'afonly') throw new SoftrdmaError('ENOSYS', `rdma_cm: option ${String(name)} is not supported (softrdma has: afonly)`);
    if (typeof value !== 'boolean') throw new SoftrdmaError('EINVAL', `rdma_cm: afonly must be a boolean, got ${shown(value)}`);
    if (this.st !== 'idle' && this.st !== 'addr-bound') throw new SoftrdmaError('EINVAL', `rdma_cm: afonly is set before the id is more than bound (it is ${this.st})`);
    this.afonlyOpt = value;
  }

  /** Whether the id takes its own family only: always for IPv4, else as set or as the system's bindv6only. */
  private afonlyFor(family: 4 | 6): boolean {
    return family === 4 || (this.afonlyOpt ?? bindv6only());
  }

  /** rdma_bind_addr: a local address (a wildcard, or one a device holds) and port (0: ephemeral). */
  bindAddr(address: string, port = 0): void {
    this.expect('bindAddr', ['idle']);
    const a = sockAddr('address', address, port);
    let dev: CmDevice | undefined;
    if (!isWildcard(a.address)) dev = this.deviceHolding(a.address, 'address');
    this.afonly = this.afonlyFor(a.family);
    a.port = ports.bind(this.ps, a.address, a.port, this.afonly);
    this.boundPort = { address: a.address, port: a.port };
    this.local = a;
    if (dev) this.attach(dev);
    this.st = 'addr-bound';
  }

  /**
   * rdma_resolve_addr: the local device for `dst` (the one holding the source: `src`, or the
   * id's bound address, which makes `src` ignored as Linux's resolve_prepare_src does; else the
   * only device of dst's family, or the one holding dst itself) and the GIDs; ADDR_RESOLVED
   * follows (ADDR_ERROR with -EADDRNOTAVAIL when no device can be chosen). A wildcard `src`
   * chooses no device but binds its port and family, as rdma_bind_addr would. A wildcard `dst`
   * is loopback (cma_resolve_loopback): the chosen device's own address (a device of its family
   * when nothing else chooses one). The source's family must be dst's (EINVAL).
   * Resolution is local (the GID of a RoCEv2 peer is its address), so `timeoutMs` only bounds it.
   */
  resolveAddr(dst: { address: string; port: number }, src?: string | { address: string; port?: number }, timeoutMs = 2000): void {
    this.expect('resolveAddr', ['idle', 'addr-bound']);
    if (typeof dst !== 'object' || dst === null) throw new SoftrdmaError('EINVAL', 'rdma_cm: dst must be { address, port }');
    const d = sockAddr('dst', dst.address, dst.port);
    if (d.port === 0 && !this.ud) throw new SoftrdmaError('EINVAL', 'rdma_cm: dst port must not be 0');
    checkTimeout(timeoutMs);
    const given = srcAddr(src);
    const bound = this.st === 'addr-bound';
    const s = bound ? this.local : given;
    if (s && s.family !== d.family) {
      throw new SoftrdmaError('EINVAL', `rdma_cm: ${bound ? 'bound address' : 'src'} ${s.address} and dst ${d.address} are of different families`);
    }
    const dev = this.deviceFor(d, s);
    if (!dev) {
      this.later(() => this.emitEvent('ADDR_ERROR', { status: ERRNO.EADDRNOTAVAIL }));
      return;
    }
    // Bind now (the local address is the device's; a wildcard src keeps its port on the
    // wildcard, as rdma_bind_addr), so nothing is half-done if binding fails.
    if (!bound) {
      const at = s && isWildcard(s.address) ? s.address : dev.address;
      this.afonly = this.afonlyFor(dev.family);
      const port = ports.bind(this.ps, at, s?.port ?? 0, this.afonly);
      this.boundPort = { address: at, port };
      this.local = { address: dev.address, port, family: dev.family };
    } else if (isWildcard(this.local!.address)) {
      this.local = { address: dev.address, port: this.local!.port, family: dev.family };
    }
    this.attach(dev);
    this.remote = isWildcard(d.address) ? { address: dev.address, port: d.port, family: dev.family } : d;
    this.st = 'addr-query';
    this.later(() => {
      if (this.st !== 'addr-query') return;
      this.st = 'addr-resolved';
      this.emitEvent('ADDR_RESOLVED', {});
    });
  }

  /**
   * The device resolveAddr uses: the one holding a specific source (EADDRNOTAVAIL if none);
   * else, for a wildcard dst (loopback), the first device of its family; else the one holding
   * dst, or the only one of dst's family.
   */
  private deviceFor(d: SockAddr, s: SockAddr | undefined): CmDevice | undefined {
    if (s && !isWildcard(s.address)) return this.dev ?? this.deviceHolding(s.address, 'src');
    const fam = CmDevice.ofFamily(d.family);
    const pick = isWildcard(d.address) ? fam[0] : CmDevice.holding(d.address) ?? (fam.length === 1 ? fam[0] : undefined);
    return pick && CmDevice.of(pick);
  }

  /**
   * rdma_resolve_route: the path a REQ describes and the QP uses: our GID and the peer's
   * (IPv4-mapped for IPv4), the port's active MTU, hop limit 64, the flow label Linux computes
   * from the ports (cma_get_roce_udp_flow_label), packet life time 18 unless set. ROUTE_RESOLVED follows.
   */
  resolveRoute(timeoutMs = 2000): void {
    this.expect('resolveRoute', ['addr-resolved']);
    checkTimeout(timeoutMs);
    const dev = this.dev!;
    this.path = {
      sgid: Buffer.from(dev.gid), dgid: roceGid(this.remote!.address), mtu: dev.activeMtu,
      flowLabel: cmaRoceFlowLabel(this.local!.port, this.remote!.port), hopLimit: 64, trafficClass: 0,
      packetLifeTime: this.timing.packetLifeTime,
    };
    this.st = 'route-query';
    this.later(() => {
      if (this.st !== 'route-query') return;
      this.st = 'route-resolved';
      this.emitEvent('ROUTE_RESOLVED', {});
    });
  }

  // ---- the QP ----

  /**
   * rdma_create_qp: a QP on the id's device (RC for 'tcp', UD for 'udp') in `pd`, which must be
   * of a context on that device. RC: in INIT, moved to RTR and RTS by the CM. UD: in RTS at once,
   * Q_Key RDMA_UDP_QKEY.
   */
  createQp(pd: PD, init: CmQpInit): QP {
    this.expect('createQp', ['addr-bound', 'addr-resolved', 'route-resolved', 'connect-request']);
    if (!this.dev) throw new SoftrdmaError('EINVAL', 'rdma_cm: createQp on an id bound to no device (bind a local address or resolve one first)');
    if (this.qp) throw new SoftrdmaError('EINVAL', `rdma_cm: id already has QP ${this.qp.qpn}`);
    if (!pd || pd.context?.device !== this.dev.device) throw new SoftrdmaError('EINVAL', `rdma_cm: pd is not of a context on ${this.dev.device.name}`);
    if (typeof init !== 'object' || init === null) throw new SoftrdmaError('EINVAL', 'rdma_cm: createQp needs its attributes ({ sendCq, recvCq, cap })');
    const qpType = this.ud ? QpType.UD : QpType.RC;
    if (init.qpType !== undefined && init.qpType !== qpType) throw new SoftrdmaError('EINVAL', `rdma_cm: qpType ${init.qpType} does not fit port space ${this.portSpace}`);
    const attr = { qpType, sendCq: init.sendCq, recvCq: init.recvCq, cap: init.cap, ...(init.srq ? { srq: init.srq } : {}), ...(init.sqSigAll !== undefined ? { sqSigAll: init.sqSigAll } : {}) };
    const qp = pd.createQp(attr as Parameters<PD['createQp']>[0]);
    try {
      qpToInit(qp);
    } catch (err) {
      qp.destroy();
      throw err;
    }
    this.qp = qp;
    return qp;
  }

  /** rdma_destroy_qp */
  destroyQp(): void {
    const qp = this.qp;
    this.qp = undefined;
    if (qp) try { qp.destroy(); } catch { /* its context closed */ }
  }

  // ---- active side ----

  /**
   * rdma_connect. TCP: a REQ as cma_connect_ib fills it (service id from the port space and
   * the destination port, our QP and starting PSN, the path, the RDMA CM header then the
   * private data); ESTABLISHED when the REP came and the RTU went (with a QP; without one,
   * CONNECT_RESPONSE and establish()), else REJECTED, UNREACHABLE or CONNECT_ERROR.
   * UDP: a SIDR_REQ; ESTABLISHED with the peer's QPN and Q_Key, or UNREACHABLE.
   */
  connect(param: ConnParam = {}): void {
    this.expect('connect', ['route-resolved']);
    connParamObject(param);
    const dev = this.dev!;
    const user = privateData('privateData', param.privateData, this.ud ? CMA_SIDR_REQ_USER_PRIVATE_DATA : CMA_REQ_USER_PRIVATE_DATA);
    const hdr = cmaReqPrivateData({ ipVersion: this.local!.family, srcPort: this.local!.port, srcAddr: this.local!.address, dstAddr: this.remote!.address }, user, Infinity);
    const serviceId = serviceIdFor(this.ps, this.remote!.port);
    const path = this.path!;
    if (this.ud) {
      this.commId = dev.agent.sidrRequest({
        dgid: path.dgid, req: { partitionKey: 0xffff, serviceId, privateData: hdr },
        timeoutMs: sidrTryMs(this.timing), maxRetries: this.timing.maxCmRetries,
      });
      dev.own(this.commId, this);
      this.st = 'connect';
      return;
    }
    const qpNum = this.qp?.qpn ?? uint('qpNum', param.qpNum, undefined, 0xffffff);
    if (qpNum === undefined) throw new SoftrdmaError('EINVAL', 'rdma_cm: connect needs a QP (createQp) or param.qpNum');
    const rr = rdAtomic('responderResources', param.responderResources, 1, dev.maxQpRdAtom, dev.maxQpRdAtom);
    const id = rdAtomic('initiatorDepth', param.initiatorDepth, 1, dev.maxQpInitRdAtom, dev.maxQpInitRdAtom);
    const retry = retries('retryCount', param.retryCount);
    const rnr = retries('rnrRetryCount', param.rnrRetryCount);
    const flow = uint('flowControl', param.flowControl, 0, 1);
    const req = formatReq({
      serviceId, qpNum, responderResources: rr, initiatorDepth: id, flowControl: flow, startingPsn: this.seqNum, retryCount: retry,
      rnrRetryCount: rnr, srq: this.qp?.srq ? 1 : uint('srq', param.srq, 0, 1), path, timing: this.timing, privateData: hdr,
    });
    this.retryCount = retry;
    this.commId = dev.agent.connect({ dgid: path.dgid, req, packetLifeTime: path.packetLifeTime });
    dev.own(this.commId, this);
    this.st = 'connect';
  }

  /**
   * rdma_establish: after CONNECT_RESPONSE (a connect without a QP on the id), send the RTU.
   * The application has moved its QP to RTS itself.
   */
  establish(): void {
    this.expect('establish', ['connect']);
    const cs = this.dev?.agent.state(this.commId!);
    if (cs !== 'REP_RCVD' && cs !== 'MRA_REP_SENT') throw new SoftrdmaError('EINVAL', 'rdma_cm: establish before CONNECT_RESPONSE');
    this.dev!.agent.call(this.commId!, { type: 'send_rtu' });
    this.st = 'established';
  }

  // ---- passive side ----

  /**
   * rdma_listen: the service id of the bound port in the id's port space, on the device of
   * the bound address (a wildcard: on every device of that family, present now or made later,
   * as Linux's listen_any_list; '::' takes both families). An id that is not bound is bound to
   * the IPv4 wildcard and an ephemeral port.
   * `backlog` bounds the CONNECT_REQUESTs queued on the channel that the application has not
   * taken yet (ucma's backlog: an event is taken when next(), the iterator or a listener gets
   * it); a REQ beyond that is dropped without a word, so the client's resend of it comes in
   * later as a new REQ (cm_destroy_id with -ENOMEM); a SIDR_REQ gets SIDR_REP(REJECT), as
   * Linux's. A backlog <= 0 or above MAX_BACKLOG is MAX_BACKLOG (ucma_listen).
   */
  listen(backlog = 128): void {
    this.expect('listen', ['idle', 'addr-bound']);
    const max = backlogOf(backlog);
    const bindNow = this.st === 'idle';
    if (bindNow) this.bindAddr('0.0.0.0', 0);
    const local = this.local!;
    const sid = serviceIdFor(this.ps, local.port);
    const done: Array<[CmDevice, number]> = [];
    try {
      // A wildcard listens on the CM devices of its family present now (Linux: cma_listen_on_all)
      // and on those made later (onDeviceAdded); the listener itself stays on no device (its
      // verbs undefined), as in Linux.
      const devs = this.dev ? [this.dev] : CmDevice.cmDevicesOf(this.wildcardFamily());
      for (const d of devs) done.push([d, d.agent.listen(sid)]);
    } catch (err) {
      for (const [d, lid] of done) try { d.agent.call(lid, { type: 'destroy' }); } catch { /* gone with its device */ }
      if (bindNow) {
        this.unbind();
        this.local = undefined;
        this.st = 'idle';
      }
      throw err;
    }
    for (const [d, lid] of done) this.listenOn(d, lid);
    this.backlog = max;
    this.st = 'listen';
    if (!this.dev) CmDevice.follow(this);
  }

  /**
   * @internal A CM device was made after our listen (cma_add_one): a wildcard listener listens
   * there too when the device is of its family (cma_listen_on_dev). Where the service id is
   * taken on that device it goes without, as Linux warns and goes on.
   */
  onDeviceAdded(dev: CmDevice): void {
    if (this.st !== 'listen' || this.dev || this.listens.has(dev)) return;
    const fam = this.wildcardFamily();
    if (fam !== undefined && dev.family !== fam) return;
    let lid: number;
    try {
      lid = dev.agent.listen(serviceIdFor(this.ps, this.local!.port));
    } catch {
      return;
    }
    this.listenOn(dev, lid);
  }

  /** The family a wildcard listener takes devices of: '::' both unless AFONLY (off: Linux's default). */
  private wildcardFamily(): 4 | 6 | undefined {
    return this.local!.address === '::' && !this.afonly ? undefined : this.local!.family;
  }

  private listenOn(d: CmDevice, lid: number): void {
    this.listens.set(d, lid);
    d.own(lid, this);
    d.attach(this);
  }

  /**
   * rdma_accept. TCP: the QP (if the id has one) to RTR and RTS with the REQ's QPN, PSN and
   * path (cma_accept_ib), then the REP; ESTABLISHED when the RTU arrives. UDP: a SIDR_REP with
   * our QPN and RDMA_UDP_QKEY. A call that throws on its arguments leaves the request pending
   * (reject or destroy it); one whose QP cannot be moved to RTR or RTS has rejected it, as
   * Linux's rdma_accept does.
   */
  accept(param: ConnParam = {}): void {
    this.expect('accept', ['connect-request']);
    connParamObject(param);
    const dev = this.dev!;
    if (this.ud) {
      const qpn = this.qp?.qpn ?? uint('qpNum', param.qpNum, undefined, 0xffffff);
      if (qpn === undefined) throw new SoftrdmaError('EINVAL', 'rdma_cm: accept on a UDP id needs a QP (createQp) or param.qpNum');
      const pdata = privateData('privateData', param.privateData, CmDataSize.SIDR_REP_PRIVATE_DATA);
      dev.agent.call(this.commId!, { type: 'send_sidr_rep', rep: sidrRep(SidrStatus.SUCCESS, qpn, pdata) });
      this.st = 'established';
      return;
    }
    const req = this.req!;
    const qpNum = this.qp?.qpn ?? uint('qpNum', param.qpNum, undefined, 0xffffff);
    if (qpNum === undefined) throw new SoftrdmaError('EINVAL', 'rdma_cm: accept needs a QP (createQp) or param.qpNum');
    const pdata = privateData('privateData', param.privateData, CmDataSize.REP_PRIVATE_DATA);
    // Defaults (and 255, librdmacm's rdma_accept): what the peer asked, capped by the device.
    const rrDef = Math.min(req.initiatorDepth, dev.maxQpRdAtom), idDef = Math.min(req.responderResources, dev.maxQpInitRdAtom);
    const rr = rdAtomic('responderResources', param.responderResources, rrDef, dev.maxQpRdAtom, rrDef);
    const id = rdAtomic('initiatorDepth', param.initiatorDepth, idDef, dev.maxQpInitRdAtom, idDef);
    const rnr = retries('rnrRetryCount', param.rnrRetryCount);
    const flow = uint('flowControl', param.flowControl, 0, 1);
    // Without a QP on the id the application says whether its QP has an SRQ (rdma_accept:
    // id_priv->srq = conn_param->srq).
    const srq = this.qp ? (this.qp.srq ? 1 : 0) : uint('srq', param.srq, 0, 1);
    if (this.qp) {
      try {
        // librdmacm's rdma_accept sets the access (INIT to INIT) before its REP goes out, from
        // the REQ's initiator depth; the RTS timeout is cm_av's (packet life + 1, as
        // cm_init_av_by_path: a REQ's ACK timeout of 0 still gives a retransmission timer).
        qpToRtr(this.qp, { path: this.path!, remoteQpn: req.localQpn, rqPsn: this.seqNum, responderResources: rr, accessResources: req.initiatorDepth });
        qpToRts(this.qp, { sqPsn: req.startingPsn, timeout: this.path!.packetLifeTime + 1, retryCount: req.retryCount, rnrRetryCount: req.rnrRetryCount, initiatorDepth: id });
      } catch (err) {
        // As rdma_accept: the QP to ERR and a REJ (CONSUMER_DEFINED), so the peer is not left
        // waiting on its retries; the id is done (destroy it).
        qpToErr(this.qp);
        dev.agent.call(this.commId!, { type: 'send_rej', reason: RejReason.CONSUMER_DEFINED });
        this.st = 'rejected';
        throw err;
      }
    }
    dev.agent.call(this.commId!, {
      type: 'send_rep',
      rep: formatRep({ qpNum, startingPsn: this.seqNum, responderResources: rr, initiatorDepth: id, rnrRetryCount: rnr, flowControl: flow, srq, privateData: pdata }),
    });
    this.st = 'connect';
  }

  /**
   * rdma_reject, "a connection request or response": TCP a REJ with reason CONSUMER_DEFINED (28)
   * and up to 148 bytes of private data; UDP a SIDR_REP with status REJECT and up to 136 bytes.
   * Linux's rdma_reject checks no rdma_cm state, only ib_send_cm_rej the CM's: besides a request
   * (REQ_RCVD), our own REQ not yet answered (REQ_SENT, MRA_REQ_RCVD: the connect is abandoned,
   * its resends stop, the peer's id gets REJECTED) and a REP on the active side after
   * CONNECT_RESPONSE (REP_RCVD, MRA_REP_SENT: the CM goes back to IDLE); on the passive side,
   * our own REP before the RTU (REP_SENT, MRA_REP_RCVD: the CM goes into time-wait). No event follows on this id: cma_ib_handler
   * gates TIMEWAIT_EXIT on RDMA_CM_DISCONNECT, which a rejected id never reaches.
   */
  reject(privateDataIn?: Uint8Array): void {
    this.expect('reject', ['connect-request', 'connect']);
    const dev = this.dev!;
    if (this.st === 'connect') this.expectRejectable(dev);
    if (this.ud) {
      const pdata = privateData('privateData', privateDataIn, CmDataSize.SIDR_REP_PRIVATE_DATA);
      dev.agent.call(this.commId!, { type: 'send_sidr_rep', rep: sidrRep(SidrStatus.REJECT, 0, pdata) });
    } else {
      const pdata = privateData('privateData', privateDataIn, CmDataSize.REJ_PRIVATE_DATA);
      dev.agent.call(this.commId!, { type: 'send_rej', reason: RejReason.CONSUMER_DEFINED, privateData: pdata });
    }
    qpToErr(this.qp);
    this.st = 'rejected';
  }

  /** reject() in 'connect': our REQ or a REP unanswered, or our REP without its RTU (ib_send_cm_rej's states). */
  private expectRejectable(dev: CmDevice): void {
    const cs = this.ud ? undefined : dev.agent.state(this.commId!);
    if (cs !== undefined && REJECTABLE.has(cs)) return;
    throw new SoftrdmaError('EINVAL', `rdma_cm: reject in state connect with the CM in ${cs ?? 'a SIDR exchange'} (only a request, our REQ before its REP, a REP before establish(), or our REP before the RTU can be rejected)`);
  }

  /**
   * rdma_disconnect, as Linux's: the QP to ERR, then a DREQ if the connection is established,
   * else the DREP if the peer's DREQ came (DISCONNECTED having been delivered), else nothing
   * (the CM is not in a state to disconnect, e.g. a REP still unanswered: reject or destroyId).
   * DISCONNECTED comes with the DREP (or after the DREQ's retries, status -ETIMEDOUT), then
   * TIMEWAIT_EXIT. EINVAL only for an id with no connection (Linux: no ib cm_id). A UDP id
   * (after its SIDR exchange) only has its QP moved to ERR: there is nothing to tear down. A
   * listener bound to one device's address has an ib cm_id (its listen), so Linux's
   * rdma_disconnect finds nothing to send and returns 0: so does this; a wildcard listener has
   * none (its listens are per device): EINVAL.
   */
  disconnect(): void {
    if (this.st === 'destroyed') throw new SoftrdmaError('EBADF', 'rdma_cm: disconnect on a destroyed id');
    const dev = this.dev;
    if (this.st === 'listen' && dev && this.commId === undefined) return;
    if (this.commId === undefined || !dev) throw new SoftrdmaError('EINVAL', `rdma_cm: disconnect in state ${this.st} (no connection)`);
    qpToErr(this.qp);
    if (this.ud) return;
    const cs = dev.agent.state(this.commId);
    if (cs === 'ESTABLISHED') dev.agent.call(this.commId, { type: 'send_dreq' });
    else if (cs === 'DREQ_RCVD') dev.agent.call(this.commId, { type: 'send_drep' });
  }

  /**
   * rdma_destroy_id, from any state: what cm_destroy_id sends for the connection (REJ while
   * connecting, DREQ when established, DREP owed), the listens, the port, the QP createQp
   * made. No event is delivered for the id afterwards. Idempotent.
   */
  destroyId(): void {
    if (this.st === 'destroyed') return;
    liveIds.delete(this);
    CmDevice.unfollow(this);
    CmDevice.release();
    const dev = this.dev;
    if (dev && !dev.isRemoved) {
      if (this.commId !== undefined) {
        qpToErr(this.qp);
        try { dev.agent.call(this.commId, { type: 'destroy' }); } catch { /* already gone from the table */ }
        dev.disown(this.commId);
      }
    }
    for (const [d, lid] of this.listensMap ?? []) {
      if (!d.isRemoved) {
        try { d.agent.call(lid, { type: 'destroy' }); } catch { /* gone */ }
        d.disown(lid);
      }
      d.detach(this);
    }
    this.listensMap?.clear();
    this.commId = undefined;
    this.destroyQp();
    this.unbind();
    dev?.detach(this);
    this.st = 'destroyed';
    // Last: its queued events go, and a queued CONNECT_REQUEST's new id is destroyed (REJ).
    this.channel.forget(this);
  }

  // ---- events from the CM agent ----

  /**
   * @internal What each CM event becomes (cma_ib_handler): every event but TIMEWAIT_EXIT only
   * while the connection is being made or is up (Linux's RDMA_CM_CONNECT: our 'connect',
   * 'connect-request' and 'established'), TIMEWAIT_EXIT only after DISCONNECTED ('disconnect').
   * DISCONNECTED comes once, on the first of DREQ_RECEIVED, DREP_RECEIVED and DREQ_ERROR, so
   * both ends disconnecting at once each get it.
   */
  onCmEvent(e: CmAgentEvent, dev: CmDevice): void {
    if (e.event === 'REQ_RECEIVED' || e.event === 'SIDR_REQ_RECEIVED') {
      if (this.st === 'listen') return this.onRequest(e, dev);
      // Not a listener (any more): refuse, as cm_destroy_id would, so nothing waits in REQ_RCVD.
      return dev.agent.call(e.localId, { type: 'destroy' });
    }
    if (e.event === 'TIMEWAIT_EXIT') {
      if (this.st === 'disconnect') this.emitEvent('TIMEWAIT_EXIT', {});
      return;
    }
    if (this.st !== 'connect' && this.st !== 'connect-request' && this.st !== 'established') return;
    const m = e.msg;
    switch (e.event) {
      case 'REP_RECEIVED': return this.onRep(m as CmMessageOf<'REP'>);
      case 'RTU_RECEIVED':
      case 'USER_ESTABLISHED':
        if (this.st !== 'connect') return;
        this.st = 'established';
        // cma_ib_handler: an RTU's ESTABLISHED carries no parameters and no private data.
        return this.emitEvent('ESTABLISHED', { conn: this.connParamOf({}) });
      case 'REJ_RECEIVED': {
        const rej = m as CmMessageOf<'REJ'>;
        qpToErr(this.qp);
        this.st = 'rejected';
        return this.emitEvent('REJECTED', { status: rej.reason, reason: rejReasonName(rej.reason), conn: this.connParamOf({ privateData: rej.privateData }) });
      }
      case 'REQ_ERROR':
      case 'REP_ERROR':
        // cma_ib_handler leaves the QP alone here (only a REJ moves it to ERR): a passive side
        // whose REP resends ran out may face a client that is ESTABLISHED (its RTUs lost).
        this.st = 'rejected';
        return this.emitEvent('UNREACHABLE', { status: ERRNO.ETIMEDOUT });
      case 'DREQ_RECEIVED':
      case 'DREP_RECEIVED':
        // As cma_ib_handler: DISCONNECTED carries no parameters (a DREQ's or DREP's private
        // data does not reach the application).
        this.st = 'disconnect';
        return this.emitEvent('DISCONNECTED', { conn: this.connParamOf({}) });
      case 'DREQ_ERROR':
        this.st = 'disconnect';
        return this.emitEvent('DISCONNECTED', { status: ERRNO.ETIMEDOUT });
      case 'SIDR_REP_RECEIVED': {
        const rep = m as CmMessageOf<'SIDR_REP'>;
        if (rep.status !== SidrStatus.SUCCESS) {
          this.st = 'rejected';
          return this.emitEvent('UNREACHABLE', { status: rep.status, reason: sidrStatusName(rep.status), ud: this.udParamOf(rep.privateData, 0, 0) });
        }
        // cma_set_qkey: the QP createQp made has RDMA_UDP_QKEY, and a SIDR_REP naming another
        // is ADDR_ERROR -EINVAL; without one the id takes the peer's (RDMA_UDP_QKEY for 0).
        if (this.qp && rep.qkey !== 0 && rep.qkey !== RDMA_UDP_QKEY) {
          this.st = 'rejected';
          return this.emitEvent('ADDR_ERROR', { status: ERRNO.EINVAL });
        }
        this.st = 'established';
        return this.emitEvent('ESTABLISHED', { ud: this.udParamOf(rep.privateData, rep.qpn, rep.qkey || RDMA_UDP_QKEY) });
      }
      case 'SIDR_REQ_ERROR':
        this.st = 'rejected';
        return this.emitEvent('UNREACHABLE', { status: ERRNO.ETIMEDOUT });
      default:
        return; // MRA_RECEIVED: the peer needs more time; the CM machine waits longer.
    }
  }

  /** The REP of our REQ: QP to RTR and RTS with its QPN and PSN, the RTU, ESTABLISHED (cma_rep_recv). */
  private onRep(rep: CmMessageOf<'REP'>): void {
    if (this.st !== 'connect') return;
    const dev = this.dev!;
    const conn = this.connParamOf({ privateData: rep.privateData, rep });
    if (!this.qp) {
      // The application answers (establish) in its own time: a delayed MRA, sent only if the
      // REP comes again meanwhile, asks the peer to wait (cma_ib_handler, CMA_CM_MRA_SETTING).
      dev.agent.call(this.commId!, { type: 'send_mra', serviceTimeout: this.mraServiceTimeout, delay: true });
      return this.emitEvent('CONNECT_RESPONSE', { conn });
    }
    try {
      qpToRtr(this.qp, { path: this.path!, remoteQpn: rep.localQpn, rqPsn: this.seqNum, responderResources: rep.initiatorDepth, accessResources: rep.initiatorDepth });
      qpToRts(this.qp, {
        sqPsn: rep.startingPsn, timeout: cmAckTimeout(rep.targetAckDelay, this.path!.packetLifeTime), retryCount: this.retryCount,
        rnrRetryCount: rep.rnrRetryCount, initiatorDepth: rep.responderResources,
      });
    } catch (err) {
      qpToErr(this.qp);
      dev.agent.call(this.commId!, { type: 'send_rej', reason: RejReason.CONSUMER_DEFINED });
      this.st = 'rejected';
      // cma_ib_handler fills in the REP's parameters for CONNECT_ERROR as for ESTABLISHED.
      return this.emitEvent('CONNECT_ERROR', { status: -((err as SoftrdmaError).errno ?? 22), conn });
    }
    dev.agent.call(this.commId!, { type: 'send_rtu' });
    this.st = 'established';
    this.emitEvent('ESTABLISHED', { conn });
  }

  /** A REQ or SIDR_REQ on our listen: a new id carrying our context, CONNECT_REQUEST (cma_ib_req_handler). */
  private onRequest(e: CmAgentEvent, dev: CmDevice): void {
    const refuse = () => dev.agent.call(e.localId, { type: 'destroy' });
    const m = e.msg as CmMessageOf<'REQ'> | CmMessageOf<'SIDR_REQ'>;
    const hdr = decodeCmaHeader(m.privateData);
    if (!hdr.ok || !e.source) return refuse();
    // cma_ib_check_req_qp_type: a REQ for an RC QP reaches only a TCP id, a SIDR_REQ only a UDP id.
    if (m.kind === 'REQ' ? this.ud || reqQpType(m) !== 'RC' : !this.ud) return refuse();
    // A path MTU that no QP can take: rdma_accept would fail at RTR and reject; refuse now.
    if (m.kind === 'REQ' && !(m.pathMtu >= 1 && m.pathMtu <= 5)) return refuse();
    const h = hdr.value;
    // cma_match_private_data: a listener on one address takes only headers of its IP version
    // naming that address; one on 0.0.0.0 only IPv4 ones (rdma_bind_addr makes an AF_INET id
    // afonly), one on :: both (afonly 0, as with net.ipv6.bindv6only's default).
    if (!isWildcard(this.local!.address) && (h.ipVersion !== this.local!.family || h.dstAddr !== withoutZone(this.local!.address))) return refuse();
    if (isWildcard(this.local!.address) && (this.local!.family === 4 || this.afonly) && h.ipVersion !== this.local!.family) return refuse();
    // The backlog is full (ucma_connect_event_handler's -ENOMEM): cm_destroy_id forgets a REQ
    // without a REJ so the client's resend is taken once the application has read the queue;
    // a SIDR_REQ is rejected (SIDR_REP(REJECT)) whatever the error, as there.
    if (this.pending >= this.backlog) return dev.agent.call(e.localId, m.kind === 'REQ' ? { type: 'destroy', noMemory: true } : { type: 'destroy' });
    const child = new RdmaCmId(this.channel, this.portSpace, { context: this.context, ...this.timing });
    child.dev = dev;
    dev.attach(child);
    child.local = { address: dev.address, port: this.local!.port, family: dev.family };
    child.remote = { address: h.srcAddr, port: h.srcPort, family: h.ipVersion };
    child.commId = e.localId;
    this.pending++;
    const taken = () => { this.pending--; };
    dev.own(e.localId, child);
    child.st = 'connect-request';
    if (m.kind === 'REQ') {
      child.req = m;
      child.retryCount = m.retryCount;
      child.path = {
        sgid: Buffer.from(dev.gid), dgid: Buffer.from(e.source.sgid), mtu: Math.min(m.pathMtu, dev.activeMtu),
        flowLabel: m.primaryFlowLabel, hopLimit: m.primaryHopLimit, trafficClass: m.primaryTrafficClass,
        packetLifeTime: Math.max(0, m.primaryLocalAckTimeout - 1),
      };
      // As cma_ib_req_handler for an id still connecting after the event: a delayed MRA (sent
      // only when the REQ comes again) so a slow accept does not run out the peer's retries.
      dev.agent.call(e.localId, { type: 'send_mra', serviceTimeout: this.mraServiceTimeout, delay: true });
      this.emitEvent('CONNECT_REQUEST', { id: child, listenId: this, conn: child.connParamOf({ privateData: cmaUserData(m.privateData), req: m }) }, taken);
    } else {
      child.path = {
        sgid: Buffer.from(dev.gid), dgid: Buffer.from(e.source.sgid), mtu: dev.activeMtu, flowLabel: 0, hopLimit: 64, trafficClass: 0,
        packetLifeTime: this.timing.packetLifeTime,
      };
      this.emitEvent('CONNECT_REQUEST', { id: child, listenId: this, ud: child.udParamOf(cmaUserData(m.privateData), 0, 0) }, taken);
    }
  }

  /** @internal The device went away: DEVICE_REMOVAL; the QP and the CM state went with it. */
  onDeviceRemoval(dev: CmDevice): void {
    if (this.st === 'destroyed') return;
    // A wildcard listener loses that device's listen and hears nothing (Linux destroys the
    // per-device listen id silently: cma_listen_handler, cma_process_remove).
    this.listensMap?.delete(dev);
    if (this.dev !== dev) return;
    this.commId = undefined;
    this.qp = undefined;
    this.st = 'device-removal';
    this.emitEvent('DEVICE_REMOVAL', { status: ERRNO.ENODEV });
  }

  // ---- helpers ----

  private connParamOf(o: { privateData?: Uint8Array | undefined; rep?: CmMessageOf<'REP'>; req?: CmMessageOf<'REQ'> }): ConnEventParam {
    return connEventParam(o.privateData, o.rep ?? o.req);
  }

  private udParamOf(pdata: Uint8Array, qpNum: number, qkey: number): UdEventParam {
    return udEventParam(this.path!, pdata, qpNum, qkey);
  }

  /** `taken`: called once the application has the event (a CONNECT_REQUEST's backlog slot). */
  private emitEvent(event: RdmaCmEventType, o: Partial<Omit<RdmaCmEvent, 'event'>>, taken?: () => void): void {
    if (this.st === 'destroyed' && o.id === undefined) return;
    this.channel.deliver({ event, id: o.id ?? this, status: 0, ...o }, taken);
  }

  /**
   * ADDR_RESOLVED, ROUTE_RESOLVED and ADDR_ERROR: after the call has returned, as the callers
   * of an asynchronous call expect, but in the same turn of the loop (nothing is queried: the
   * GIDs are the addresses). A destroyed id gets nothing. (A setImmediate here cost each
   * connection two turns of the loop, each a trip through epoll.)
   */
  private later(f: () => void): void {
    process.nextTick(() => { if (this.st !== 'destroyed') f(); });
  }

  private expect(call: string, states: readonly RdmaCmState[]): void {
    if (!states.includes(this.st)) throw new SoftrdmaError(this.st === 'destroyed' ? 'EBADF' : 'EINVAL', `rdma_cm: ${call} in state ${this.st} (expected ${states.join(' or ')})`);
  }

  private deviceHolding(address: string, field: string): CmDevice {
    const d = CmDevice.holding(address);
    if (!d) throw new SoftrdmaError('EADDRNOTAVAIL', `rdma_cm: ${field} ${address} is held by no softrdma device of this process`);
    return CmDevice.of(d);
  }

  private attach(dev: CmDevice): void {
    if (this.dev && this.dev !== dev) this.dev.detach(this);
    this.dev = dev;
    dev.attach(this);
  }

  private unbind(): void {
    if (this.boundPort) ports.release(this.ps, this.boundPort.address, this.boundPort.port);
    this.boundPort = undefined;
  }
}

/**
 * The CM states in which an id in 'connect' can reject (cm_send_rej_locked): the active side
 * whose REQ awaits its REP, or holding a REP (CONNECT_RESPONSE came); the passive side whose REP
 * awaits its RTU.
 */
const REJECTABLE: ReadonlySet<CmStateName> = new Set(['REQ_SENT', 'MRA_REQ_RCVD', 'REP_RCVD', 'MRA_REP_SENT', 'REP_SENT', 'MRA_REP_RCVD']);

/** One try of a SIDR_REQ (cma_resolve_ib_udp: 1 << (CMA_CM_RESPONSE_TIMEOUT - 8) ms). */
function sidrTryMs(t: CmTiming): number {
  return 2 ** Math.max(t.cmResponseTimeout - 8, 0);
}

/** ucma's max_backlog (its default, net/rdma_ucm/max_backlog): the most a listen takes. */
export const MAX_BACKLOG = 1024;

/** ucma_listen: an integer backlog; <= 0 or above MAX_BACKLOG means MAX_BACKLOG. */
function backlogOf(v: unknown): number {
  if (typeof v !== 'number' || !Number.isInteger(v)) throw new SoftrdmaError('EINVAL', `rdma_cm: backlog must be an integer, got ${String(v)}`);
  return v <= 0 || v > MAX_BACKLOG ? MAX_BACKLOG : v;
}

/** rdma_create_id */
export function createId(channel: EventChannel, portSpace: PortSpaceName, opts: CreateIdOptions = {}): RdmaCmId {
  return new RdmaCmId(channel, portSpace, opts);
}

/** resolveAddr's `src`: left out, an address, or { address, port? } (EINVAL naming src otherwise). */
function srcAddr(src: unknown): SockAddr | undefined {
  if (src === undefined) return undefined;
  if (typeof src === 'string') return sockAddr('src', src, 0);
  if (typeof src !== 'object' || src === null) throw new SoftrdmaError('EINVAL', `rdma_cm: src must be an address or { address, port }, got ${shown(src)}`);
  const o = src as { address?: unknown; port?: unknown };
  return sockAddr('src', o.address, o.port ?? 0);
}

/** connect's and accept's parameters: an object (omitted: defaults), never null or a scalar. */
function connParamObject(param: unknown): void {
  if (typeof param !== 'object' || param === null) throw new SoftrdmaError('EINVAL', 'rdma_cm: the connection parameters must be an object');
}

let v6only: boolean | undefined;
/** net.ipv6.bindv6only (read once; 0 where it cannot be read), the default AFONLY of an IPv6 id. */
function bindv6only(): boolean {
  if (v6only === undefined) {
    try {
      v6only = readFileSync('/proc/sys/net/ipv6/bindv6only', 'utf8').trim() === '1';
    } catch {
      v6only = false;
    }
  }
  return v6only;
}
