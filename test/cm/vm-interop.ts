// Interop smoke run against a Linux 6.1 kernel CM (the rxe VM harness, /work/shared/rxe-vm):
// not part of the suite. Inside the namespace (vm.sh ns), with `rping -s -a 10.77.0.2 -p 7174`
// listening in the guest:
//   node dist/test/cm/vm-interop.js [local address] [remote address] [port] [unheard port]
// It sends an RDMA CM REQ (TCP port space, cma_hdr in the private data, the fields
// cma_connect_ib fills, a real RC QP's number and PSN) to the listening port and reports what
// comes back; on a REP it connects the QP, sends the RTU, then disconnects (DREQ, expecting
// DREP) and waits out time-wait. Then a REQ to a port nobody listens on, expecting
// REJ(INVALID_SERVICE_ID), and the same REQ sent raw with a wrong and with the right Q_Key.
// Prints one line per event and a JSON summary at the end.

import { randomInt } from 'node:crypto';
import { connectQp, createRxeDevice, QpType, RC_ACCESS, rxeOf } from '../../src/index.js';
import { CmAgent, type CmAgentEvent } from '../../src/cm/agent.js';
import { RXE_LOCAL_CA_ACK_DELAY, cmAckTimeout } from '../../src/cm/cm-state.js';
import { blankCm, encodeCmMad, rejReasonName, type CmMessageOf } from '../../src/cm/wire/cm-messages.js';
import { deth, writeBth } from '../../src/providers/rxe/wire/headers.js';
import { BTH_BYTES, DETH_BYTES, ICRC_BYTES, OpCode } from '../../src/providers/rxe/wire/opcodes.js';
import {
  CMA_CM_RESPONSE_TIMEOUT, CMA_IBOE_PACKET_LIFETIME, CMA_MAX_CM_RETRIES, PortSpace, cmaReqPrivateData, cmaRoceFlowLabel, roceGid, serviceIdFor,
} from '../../src/cm/wire/cma-header.js';
import { MadLayer } from '../../src/cm/mad-layer.js';

const [local = '10.77.0.1', remote = '10.77.0.2', portArg = '7174', unheardArg = '7175'] = process.argv.slice(2);
const port = Number(portArg), unheard = Number(unheardArg);
const v6 = local.includes(':');
const t0 = Date.now();
/** JSON for a CM message: bigints in hex, byte strings as hex up to their last non-zero byte. */
const show = (_k: string, v: unknown): unknown => {
  if (typeof v === 'bigint') return `0x${v.toString(16)}`;
  const b = v as { type?: string; data?: number[] } | null;
  if (b && typeof b === 'object' && b.type === 'Buffer' && Array.isArray(b.data)) {
    let n = b.data.length;
    while (n > 0 && b.data[n - 1] === 0) n--;
    return Buffer.from(b.data.slice(0, n)).toString('hex');
  }
  return v;
};
const log = (...a: unknown[]) => console.log(`[${((Date.now() - t0) / 1000).toFixed(3)}]`, ...a);

function req(qpn: number, psn: number, dport: number): Omit<CmMessageOf<'REQ'>, 'localCommId' | 'kind'> {
  const { kind: _k, localCommId: _l, ...blank } = blankCm('REQ');
  const sport = randomInt(32768, 61000);
  return {
    ...blank, serviceId: serviceIdFor(PortSpace.TCP, dport), localQpn: qpn, responderResources: 1, initiatorDepth: 1,
    remoteCmResponseTimeout: CMA_CM_RESPONSE_TIMEOUT, localCmResponseTimeout: CMA_CM_RESPONSE_TIMEOUT, startingPsn: psn,
    retryCount: 7, rnrRetryCount: 7, maxCmRetries: CMA_MAX_CM_RETRIES, partitionKey: 0xffff, pathMtu: 3,
    primaryLocalLid: 0xffff, primaryRemoteLid: 0xffff, primaryLocalGid: roceGid(local), primaryRemoteGid: roceGid(remote),
    primaryFlowLabel: cmaRoceFlowLabel(sport, dport), primaryHopLimit: 64,
    primaryLocalAckTimeout: cmAckTimeout(RXE_LOCAL_CA_ACK_DELAY, CMA_IBOE_PACKET_LIFETIME),
    privateData: cmaReqPrivateData({ ipVersion: v6 ? 6 : 4, srcPort: sport, srcAddr: local, dstAddr: remote }),
  };
}

const dev = await createRxeDevice({ address: local });
const ctx = dev.open();
const pd = ctx.allocPd();
const cq = ctx.createCq(16);
const qp = pd.createQp({ qpType: QpType.RC, sendCq: cq, recvCq: cq, cap: { maxSendWr: 4, maxRecvWr: 4, maxSendSge: 1, maxRecvSge: 1 } });
const agent = new CmAgent(dev);
const summary: Record<string, unknown> = { local, remote, port, unheard };
const events: string[] = [];

const done = new Promise<void>((resolve) => {
  agent.on('event', (e: CmAgentEvent) => {
    const m = e.msg;
    events.push(e.event);
    log(e.event, m ? JSON.stringify(m, show) : '');
    if (e.event === 'REP_RECEIVED' && m?.kind === 'REP') {
      summary.rep = { qpn: m.localQpn, psn: m.startingPsn, caGuid: `0x${m.localCaGuid.toString(16)}`, targetAckDelay: m.targetAckDelay, rnrRetry: m.rnrRetryCount, srq: m.srq };
      // As Linux's cm_rep_handler: we send from the REP's Starting PSN, and receive from our REQ's.
      connectQp(qp, { qpn: m.localQpn, gid: roceGid(remote), psn: psnA }, { psn: m.startingPsn, access: RC_ACCESS, timeout: 14 });
      log(`QP ${qp.qpn} in RTS → RTU`);
      agent.call(e.localId, { type: 'send_rtu' });
      setTimeout(() => { log('→ DREQ'); agent.call(e.localId, { type: 'send_dreq' }); }, 1000);
    }
    if (e.event === 'REJ_RECEIVED' && m?.kind === 'REJ') {
      summary[`rej_${e.localId === idA ? 'listening' : 'unheard'}`] = { reason: m.reason, name: rejReasonName(m.reason), messageRejected: m.messageRejected };
    }
    if (e.event === 'DREQ_RECEIVED') agent.call(e.localId, { type: 'send_drep' });
    if (e.event === 'TIMEWAIT_EXIT' || e.event === 'REQ_ERROR' || (e.event === 'REJ_RECEIVED' && e.localId === idA)) resolve();
  });
  agent.on('established', (id: number) => { log('ESTABLISHED', id.toString(16)); summary.established = true; });
});

const psnA = randomInt(0, 1 << 24);
log(`REQ to ${remote} port ${port} from QP ${qp.qpn}`);
const idA = agent.connect({ dgid: roceGid(remote), req: req(qp.qpn, psnA, port), packetLifeTime: CMA_IBOE_PACKET_LIFETIME });
const timeout = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
await Promise.race([done, timeout(20_000)]);

const unheardDone = new Promise<void>((resolve) => agent.on('rejected', () => resolve()));
log(`REQ to ${remote} port ${unheard} (nobody listens)`);
agent.connect({ dgid: roceGid(remote), req: req(qp.qpn, psnA, unheard), packetLifeTime: CMA_IBOE_PACKET_LIFETIME });
await Promise.race([unheardDone, timeout(10_000)]);

// The kernel's Q_Key check (rxe_recv.c check_keys): the same REQ for an unheard port, sent raw
// from the device port with the wrong Q_Key, gets nothing back; with the GSI Q_Key, a REJ (for
// a comm id our table does not know, so counted as unexpected).
const rawReq = (qkey: number) => {
  const mad = encodeCmMad({ kind: 'REQ', ...req(qp.qpn, psnA, unheard), localCommId: 0x5a5a5a5a }, 0x5a5a5a5an);
  const pkt = Buffer.alloc(BTH_BYTES + DETH_BYTES + 256 + ICRC_BYTES);
  writeBth(pkt, { opcode: OpCode.UD_SEND_ONLY, padCount: 0, destQp: 1, ackReq: true, psn: 0 });
  deth.write(pkt, BTH_BYTES, qkey, 1);
  mad.copy(pkt, BTH_BYTES + DETH_BYTES);
  rxeOf(dev).link.send(pkt, remote);
};
const unexpected0 = agent.counters.rx_unexpected;
log('raw REQ with Q_Key 0x80010001');
rawReq(0x80010001);
await timeout(2000);
summary.wrongQkeyAnswered = agent.counters.rx_unexpected - unexpected0;
log('raw REQ with Q_Key 0x80010000');
rawReq(0x80010000);
await timeout(2000);
summary.rightQkeyAnswered = agent.counters.rx_unexpected - unexpected0 - (summary.wrongQkeyAnswered as number);

summary.events = events;
summary.cm = agent.counters;
summary.mad = MadLayer.of(dev).counters;
const c = rxeOf(dev).counters;
summary.rxe = { gsi_sent_mads: c.gsi_sent_mads, gsi_rcvd_mads: c.gsi_rcvd_mads, gsi_qkey_drops: c.gsi_qkey_drops, gsi_malformed_drops: c.gsi_malformed_drops, icrc_errors: c.icrc_errors, icrc_id_inferred: c.icrc_id_inferred };
console.log(JSON.stringify(summary, show, 1));
agent.close();
await dev.close();
