// The MAD layer of one port (Linux drivers/infiniband/core/mad.c and agent.c, in small): it owns
// the port's QP1, checks what arrives as mad.c's validate_mad does, hands each MAD to the agent
// registered for its class, version and method (responses: to the agent whose high TID half
// they carry), and answers a GET or SET nobody takes with GetResp(UNSUPPORTED_METHOD_ATTRIB),
// as generate_unmatched_resp does. Everything else it cannot place is counted and dropped.
// One layer per device, shared by its agents (the CM now; SA or vendor classes later).

import type { Device, Gsi, GsiDest, GsiSource } from '../verbs/api.js';
import { MadMethod, MadStatus, MgmtClass, decodeMad, isResponseMad, type Mad } from './wire/mad.js';
import { tracer } from '../sys/trace.js';

const traceDrop = tracer('cm', 'drop');
/** IB_MGMT_CLASSPORTINFO_ATTR_ID */
const CLASS_PORT_INFO = 0x0001;

export interface MadRecv {
  mad: Mad;
  /** The whole 256 bytes (the agent's own copy). */
  buf: Buffer;
  src: GsiSource;
}

export interface MadAgentSpec {
  mgmtClass: number;
  classVersion: number;
  /** The request methods this agent takes (ib_mad_reg_req.method_mask). */
  methods: readonly number[];
  onMad(r: MadRecv): void;
}

export interface MadAgent {
  /** High 32 bits of the TIDs this agent starts; responses carrying them come back to it. */
  readonly hiTid: number;
  send(mad: Buffer, dest: GsiDest): void;
  /** Hand what was sent to the network now (process exit: see MadLayer.flush). */
  flush(): void;
  unregister(): void;
}

export function newMadCounters() {
  return {
    rcvd: 0,
    sent: 0,
    /** validate_mad: a base version other than 1, or an SMP class (those belong on QP0). */
    invalid_drops: 0,
    /** A request no agent takes (not GET/SET, so nothing to answer). */
    unclaimed_drops: 0,
    /** A response whose high TID names no agent here. */
    unmatched_response_drops: 0,
    /** GET/SET nobody takes, answered GetResp(UNSUPPORTED_METHOD_ATTRIB). */
    unsupported_answered: 0,
    /** An agent's handler threw (its bug; the layer carries on). */
    agent_errors: 0,
    /** A send refused by the GSI (a bad destination). */
    send_errors: 0,
  };
}
export type MadCounters = ReturnType<typeof newMadCounters>;

const layers = new WeakMap<Device, MadLayer>();

export class MadLayer {
  readonly counters = newMadCounters();
  private readonly agents = new Map<number, MadAgentSpec>();
  /** ib_mad_client_id: each agent's high TID half, counting from 1. */
  private nextHiTid = 1;
  private closed = false;

  private constructor(private readonly device: Device, private readonly gsi: Gsi) {
    gsi.onMad = (buf, src) => this.receive(buf, src);
  }

  /** The device's MAD layer, opening its QP1 on first use; it closes with its last agent. */
  static of(device: Device): MadLayer {
    let l = layers.get(device);
    if (!l) {
      l = new MadLayer(device, device.openGsi(1));
      layers.set(device, l);
    }
    return l;
  }

  get gid(): Buffer { return this.gsi.gid; }

  /** ib_register_mad_agent: EBUSY-like refusal if another agent takes one of these methods already. */
  register(spec: MadAgentSpec): MadAgent {
    if (this.closed) throw new Error('mad: the layer is closed');
    for (const a of this.agents.values()) {
      if (a.mgmtClass === spec.mgmtClass && a.classVersion === spec.classVersion && a.methods.some((m) => spec.methods.includes(m))) {
        throw new Error(`mad: class 0x${spec.mgmtClass.toString(16)} version ${spec.classVersion} already has an agent for one of these methods`);
      }
    }
    const hiTid = this.nextHiTid++;
    this.agents.set(hiTid, spec);
    return {
      hiTid,
      send: (mad, dest) => this.send(mad, dest),
      flush: () => this.flush(),
      unregister: () => {
        if (!this.agents.delete(hiTid)) return;
        if (this.agents.size === 0) this.close();
      },
    };
  }

  send(mad: Buffer, dest: GsiDest): void {
    if (this.closed) return;
    try {
      this.gsi.send(mad, dest);
      this.counters.sent++;
    } catch {
      this.counters.send_errors++;
    }
  }

  /**
   * The MADs sent so far leave now rather than at the end of the tick (the GSI's flush, if it
   * batches): at process 'exit' the end of the tick never comes.
   */
  flush(): void {
    if (!this.closed) this.gsi.flush?.();
  }

  private receive(buf: Buffer, src: GsiSource): void {
    const c = this.counters;
    c.rcvd++;
    const r = decodeMad(buf);
    if (!r.ok) { c.invalid_drops++; return; }
    const mad = r.value;
    const h = mad.header;
    // validate_mad: the subnet-management classes travel on QP0 only
    if (h.mgmtClass === MgmtClass.SUBN_LID_ROUTED || h.mgmtClass === MgmtClass.SUBN_DIRECTED_ROUTE) { c.invalid_drops++; return; }
    // validate_mad: CM attributes other than ClassPortInfo travel by SEND only (no answer to a GET)
    if (h.mgmtClass === MgmtClass.CM && h.attrId !== CLASS_PORT_INFO && h.method !== MadMethod.SEND) { c.invalid_drops++; return; }
    let agent: MadAgentSpec | undefined;
    if (isResponseMad(h)) {
      agent = this.agents.get(Number(h.tid >> 32n));
      if (!agent) { c.unmatched_response_drops++; return; }
    } else {
      for (const a of this.agents.values()) {
        if (a.mgmtClass === h.mgmtClass && a.classVersion === h.classVersion && a.methods.includes(h.method)) { agent = a; break; }
      }
    }
    if (agent) {
      try {
        agent.onMad({ mad, buf, src });
      } catch (error) {
        // an agent's bug: counted and reported, and the port carries on
        c.agent_errors++;
        if (traceDrop.active) traceDrop({ why: 'agent_error', error, mgmtClass: h.mgmtClass, from: src.address });
      }
      return;
    }
    if (h.method === MadMethod.GET || h.method === MadMethod.SET) {
      // generate_unmatched_resp: the request back, as a GetResp with the status set
      const resp = Buffer.from(buf);
      resp[3] = MadMethod.GET_RESP;
      resp.writeUInt16BE(MadStatus.UNSUPPORTED_METHOD_ATTRIB, 4);
      c.unsupported_answered++;
      this.send(resp, { dgid: src.sgid, dqpn: src.srcQp });
      return;
    }
    c.unclaimed_drops++;
  }

  private close(): void {
    if (this.closed) return;
    this.closed = true;
    this.gsi.onMad = undefined;
    this.gsi.close();
    if (layers.get(this.device) === this) layers.delete(this.device);
  }
}
