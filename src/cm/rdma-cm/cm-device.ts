// The rdma_cm's view of one device (Linux's struct cma_device): the device's address and GID,
// a context the CM opened on it (an id's `verbs`, where applications allocate PDs and CQs, as
// librdmacm's id->verbs), its CM agent, and which id each of the agent's comm ids belongs to.
// Devices are the process's rxe devices (getDeviceList()); one holding an address is found
// through its GID table (RoCEv2: the GID is the address). A device closing is DEVICE_REMOVAL
// for every id on it.
//
// Devices come and go while the CM runs. As Linux tells every ib_client of a new device
// (ib_register_device → cma_add_one, which makes each wildcard listener on listen_any_list
// listen there: cma_listen_on_dev), the verbs layer announces each device made (onDeviceAdded):
// while any id is alive, the CM gives it its CM agent and tells the followers (wildcard
// listeners). A device going away is seen through its context closing.

import { getDeviceList, onDeviceAdded, type Context, type Device } from '../../verbs/api.js';
import type { DeviceAttr } from '../../abi/types.js';
import { addressFromGid, gidFromAddress } from '../../abi/inet.js';
import { CmAgent, guarded, type CmAgentEvent } from '../agent.js';

/** What the CM device asks of an id: its agent events, and the device going away. */
export interface CmIdSink {
  onCmEvent(e: CmAgentEvent, dev: CmDevice): void;
  onDeviceRemoval(dev: CmDevice): void;
}

/** What hears of each CM device as it is made (Linux's listen_any_list: wildcard listeners). */
export interface CmDeviceFollower {
  onDeviceAdded(dev: CmDevice): void;
}

const byDevice = new Map<Device, CmDevice>();
const notCm = new WeakSet<Device>();
const followers = new Set<CmDeviceFollower>();

/** Ids alive (retain/release): while there is one, every device made gets its CM agent. */
let retained = 0;
let stopFollowing: (() => void) | undefined;

export class CmDevice {
  private ctx: Context;
  readonly agent: CmAgent;
  readonly gid: Buffer;
  readonly address: string;
  readonly family: 4 | 6;
  /** Comm ids (connections and listeners) → the id that owns them. */
  private readonly owners = new Map<number, CmIdSink>();
  /** Ids attached to this device (bound to its address, or children of its listeners). */
  private readonly users = new Set<CmIdSink>();
  private removed = false;

  private constructor(readonly device: Device) {
    this.ctx = device.open();
    try {
      this.agent = new CmAgent(device);
    } catch (err) {
      this.ctx.close();
      throw err;
    }
    this.gid = Buffer.from(this.agent.gid);
    this.address = addressFromGid(this.gid);
    this.family = this.address.includes(':') ? 6 : 4;
    this.agent.on('event', (e: CmAgentEvent) => this.route(e));
    this.watch();
  }

  /** A context on the device for the ids' PDs and CQs (librdmacm's id->verbs). */
  get context(): Context { return this.ctx; }

  /**
   * The context closes when the device does (Device.close leaves the device list first): that
   * is DEVICE_REMOVAL. An application that closed `id.verbs` itself has closed its own PDs and
   * CQs on it, not the device: the CM opens another context and carries on.
   */
  private watch(): void {
    this.ctx.once('close', () => {
      if (this.removed) return;
      if (!getDeviceList().includes(this.device)) return this.remove();
      this.ctx = this.device.open();
      this.watch();
    });
  }

  /** The CM device of `device`, made on first use; the followers hear of it then (cma_add_one). */
  static of(device: Device): CmDevice {
    let d = byDevice.get(device);
    if (!d) {
      byDevice.set(device, d = new CmDevice(device));
      // One follower that throws (a bug) must not keep the device from the others.
      for (const f of [...followers]) guarded(() => f.onDeviceAdded(d!));
    }
    return d;
  }

  /** `f` hears of every CM device made from now on, until unfollow (a wildcard listener). */
  static follow(f: CmDeviceFollower): void { followers.add(f); }
  static unfollow(f: CmDeviceFollower): void { followers.delete(f); }

  /**
   * An id is alive (createId): every device gets its CM agent now and, until the last id is
   * released, every device made later as the verbs layer announces it (onDeviceAdded).
   */
  static retain(): void {
    retained++;
    CmDevice.attachAll();
    stopFollowing ??= onDeviceAdded(() => CmDevice.attachAll());
  }

  /** An id was destroyed: with the last one, new devices are no longer followed. */
  static release(): void {
    if (retained > 0) retained--;
    if (retained > 0 || !stopFollowing) return;
    stopFollowing();
    stopFollowing = undefined;
  }

  /**
   * Give every device of the process its CM agent (as every Linux port has ib_cm's), so a REQ
   * to a device no id uses yet is still answered (REJ(INVALID_SERVICE_ID)). A device whose QP1
   * is held by another MAD layer owner is left alone.
   */
  static attachAll(): void {
    for (const dev of getDeviceList()) {
      if (byDevice.has(dev) || notCm.has(dev)) continue;
      try {
        CmDevice.of(dev);
      } catch {
        notCm.add(dev); // QP1 taken (EBUSY) or no GSI: not a CM device, not tried again here
      }
    }
  }

  /**
   * The process's device holding `address`, without opening anything on the others. The address
   * is compared as its GID is written: a link-local one's zone (fe80::1%eth0, as rping -a takes
   * it) and an IPv4-mapped form name the same GID.
   */
  static holding(address: string): Device | undefined {
    let want: Buffer;
    try {
      want = gidFromAddress(address);
    } catch {
      return undefined;
    }
    // The GID's bytes name the address as its printed form does (one GID, one form), without a
    // string made per entry: SMC-R asks this a few times per connection.
    for (const dev of getDeviceList()) {
      for (const g of dev.provider.gidTable(1)) if (want.equals(g.gid)) return dev;
    }
    return undefined;
  }

  /** Whether an rxe device of the process has an IPv4 loopback address (127/8). */
  static anyOnLoopback(): boolean {
    for (const dev of getDeviceList()) {
      if (dev.driver !== 'rxe') continue;
      for (const g of dev.provider.gidTable(1)) if (addressFromGid(g.gid).startsWith('127.')) return true;
    }
    return false;
  }

  /** The process's devices of an address family (4, 6, or both for undefined) that can be CM devices. */
  static ofFamily(family: 4 | 6 | undefined): Device[] {
    return getDeviceList().filter((dev) => !notCm.has(dev) && dev.provider.gidTable(1).some((g) => {
      const a = addressFromGid(g.gid);
      return family === undefined || (a.includes(':') ? 6 : 4) === family;
    }));
  }

  /** The CM devices of an address family, made where missing; a device whose QP1 is taken is left out. */
  static cmDevicesOf(family: 4 | 6 | undefined): CmDevice[] {
    const out: CmDevice[] = [];
    for (const dev of CmDevice.ofFamily(family)) {
      try {
        out.push(CmDevice.of(dev));
      } catch {
        notCm.add(dev);
      }
    }
    return out;
  }

  /** The port's active MTU (ibv_mtu enum value). */
  get activeMtu(): number { return this.device.provider.queryPort(1).activeMtu; }
  /** The device's RDMA READ/atomic limits: fixed when it is made, so its attributes are asked once (queryDevice builds them all). */
  get maxQpRdAtom(): number { return this.attrs.maxQpRdAtom; }
  get maxQpInitRdAtom(): number { return this.attrs.maxQpInitRdAtom; }
  private deviceAttrs: DeviceAttr | undefined;
  private get attrs(): DeviceAttr { return this.deviceAttrs ??= this.device.provider.queryDevice(); }
  get isRemoved(): boolean { return this.removed; }

  attach(id: CmIdSink): void { this.users.add(id); }
  detach(id: CmIdSink): void { this.users.delete(id); }

  own(localId: number, id: CmIdSink): void { this.owners.set(localId, id); }
  disown(localId: number): void { this.owners.delete(localId); }
  owner(localId: number): CmIdSink | undefined { return this.owners.get(localId); }

  /** How many comm ids and ids are still tied to this device (tests: nothing left behind). */
  census(): { commIds: number; ids: number; agentConnections: number } {
    return { commIds: this.owners.size, ids: this.users.size, agentConnections: this.agent.table.size };
  }

  private route(e: CmAgentEvent): void {
    // A new passive connection names its listener; everything else its own comm id.
    const sink = (e.event === 'REQ_RECEIVED' || e.event === 'SIDR_REQ_RECEIVED') && e.listenId !== undefined
      ? this.owners.get(e.listenId) : this.owners.get(e.localId);
    if (sink) sink.onCmEvent(e, this);
    if (e.event !== 'REQ_RECEIVED' && e.event !== 'SIDR_REQ_RECEIVED') return;
    // A listener that is already gone, or one that neither answered the request nor took it
    // (owns its comm id): refuse as cm_destroy_id would (REJ / SIDR_REP(REJECT)), so nothing
    // is left waiting in REQ_RCVD for a peer that would retry for a minute and a half.
    const c = this.agent.table.get(e.localId);
    if (c && (c.state === 'REQ_RCVD' || c.state === 'SIDR_REQ_RCVD') && !this.owners.has(e.localId)) this.agent.call(e.localId, { type: 'destroy' });
  }

  /** The device closed (its contexts close first): every id on it sees DEVICE_REMOVAL; the agent leaves QP1. */
  private remove(): void {
    if (this.removed) return;
    this.removed = true;
    byDevice.delete(this.device);
    this.agent.close();
    // Every id, and every sink that only owns comm ids (SMC-R discovery's queries), hears it
    // once: the agent's timers are gone, so nothing else would ever end their waits. One
    // application handler that throws must not keep the removal from the others (guarded).
    const sinks = new Set<CmIdSink>([...this.users, ...this.owners.values()]);
    this.users.clear();
    this.owners.clear();
    for (const u of sinks) guarded(() => u.onDeviceRemoval(this));
  }
}

/** The CM devices in use (tests). */
export function cmDevices(): CmDevice[] {
  return [...byDevice.values()];
}
