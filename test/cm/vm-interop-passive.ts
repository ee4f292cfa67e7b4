// Interop smoke run, passive side (not part of the suite): a softrdma CM agent listens on an
// RDMA CM TCP-port-space service id inside the rxe VM's namespace, and the guest's kernel CM
// connects to it (`rping -c -a 10.77.0.1 -p 7174`):
//   node dist/test/cm/vm-interop-passive.js [local address] [port] [seconds]
// On the REQ it connects a real RC QP to the requester's (its QPN; PSNs as Linux reads the
// REQ and REP), posts a receive and sends the REP; it reports the RTU, the first SEND rping makes on the new
// connection, then disconnects (DREQ, expecting DREP). One line per event, a JSON summary.

import { randomInt } from 'node:crypto';
import { Access, connectQp, createRxeDevice, QpType, queryRxeCounters, RC_ACCESS, rxeOf } from '../../src/index.js';
import { CmAgent, type CmAgentEvent } from '../../src/cm/agent.js';
import { RXE_LOCAL_CA_ACK_DELAY } from '../../src/cm/cm-state.js';
import { blankCm, type CmMessageOf } from '../../src/cm/wire/cm-messages.js';
import { PortSpace, decodeCmaHeader, serviceIdFor } from '../../src/cm/wire/cma-header.js';

const [local = '10.77.0.1', portArg = '7174', secondsArg = '40'] = process.argv.slice(2);
const t0 = Date.now();
const log = (...a: unknown[]) => console.log(`[${((Date.now() - t0) / 1000).toFixed(3)}]`, ...a);

const dev = await createRxeDevice({ address: local });
const ctx = dev.open();
const pd = ctx.allocPd();
const cq = ctx.createCq(16);
const qp = pd.createQp({ qpType: QpType.RC, sendCq: cq, recvCq: cq, cap: { maxSendWr: 4, maxRecvWr: 4, maxSendSge: 1, maxRecvSge: 1 } });
const buf = Buffer.alloc(4096);
const mr = pd.regMr(buf, Access.LOCAL_WRITE | Access.REMOTE_READ | Access.REMOTE_WRITE);
const agent = new CmAgent(dev);
const summary: Record<string, unknown> = { local, port: Number(portArg) };
const events: string[] = [];
const psn = randomInt(0, 1 << 24);

const done = new Promise<void>((resolve) => {
  agent.on('event', (e: CmAgentEvent) => {
    events.push(e.event);
    log(e.event, e.source ? `from ${e.source.address} QP ${e.source.srcQp}` : '');
    if (e.event === 'REQ_RECEIVED' && e.msg?.kind === 'REQ') {
      const q = e.msg;
      const h = decodeCmaHeader(q.privateData);
      summary.req = {
        qpn: q.localQpn, psn: q.startingPsn, caGuid: `0x${q.localCaGuid.toString(16)}`, serviceId: `0x${q.serviceId.toString(16)}`,
        flowLabel: q.primaryFlowLabel, ackTimeout: q.primaryLocalAckTimeout, hopLimit: q.primaryHopLimit, mtu: q.pathMtu,
        responseTimeouts: [q.remoteCmResponseTimeout, q.localCmResponseTimeout], maxCmRetries: q.maxCmRetries, cmaHdr: h.ok ? h.value : h.error,
      };
      // Linux takes the peer's Starting PSN as its own send PSN (cm_req_handler, cm_rep_handler):
      // each side advertises the PSN it expects to receive. So we send from the REQ's, and
      // expect the kernel's first packet at the PSN our REP carries.
      connectQp(qp, { qpn: q.localQpn, gid: q.primaryLocalGid, psn }, { psn: q.startingPsn, access: RC_ACCESS, timeout: 14 });
      qp.postRecv({ wrId: 1, sgList: [mr.sge(0, 4096)] });
      const { kind: _k, localCommId: _l, remoteCommId: _r, ...blank } = blankCm('REP');
      const rep: Omit<CmMessageOf<'REP'>, 'kind' | 'localCommId' | 'remoteCommId'> = {
        ...blank, localQpn: qp.qpn, startingPsn: psn, responderResources: 1, initiatorDepth: 1,
        targetAckDelay: RXE_LOCAL_CA_ACK_DELAY, rnrRetryCount: 7,
      };
      agent.call(e.localId, { type: 'send_rep', rep });
      log(`REP: QP ${qp.qpn} PSN 0x${psn.toString(16)}`);
    }
    if (e.event === 'DREQ_RECEIVED') agent.call(e.localId, { type: 'send_drep' });
    if (e.event === 'TIMEWAIT_EXIT' || e.event === 'REJ_RECEIVED' || e.event === 'REP_ERROR') resolve();
  });
  agent.on('established', (id: number) => {
    log('ESTABLISHED');
    summary.established = true;
    void cq.next().catch(() => undefined).then((wc) => {
      if (!wc) return;
      summary.firstRecv = { status: wc.status, byteLen: wc.byteLen, bytes: buf.subarray(0, wc.byteLen).toString('hex') };
      log('first SEND from the kernel:', summary.firstRecv);
      setTimeout(() => { log('→ DREQ'); agent.call(id, { type: 'send_dreq' }); }, 500);
    });
  });
});

agent.listen(serviceIdFor(PortSpace.TCP, Number(portArg)));
log(`listening on ${local} port ${portArg}`);
await Promise.race([done, new Promise((r) => setTimeout(r, Number(secondsArg) * 1000))]);
summary.events = events;
summary.cm = { tx: agent.counters.tx_msgs, rx: agent.counters.rx_msgs, retries: agent.counters.tx_retries };
const c = rxeOf(dev).counters;
summary.rxe = Object.fromEntries(Object.entries(c).filter(([, v]) => v));
summary.qp = Object.fromEntries(Object.entries(queryRxeCounters(ctx, qp).qp).filter(([, v]) => v));
summary.qpState = qp.state;
console.log(JSON.stringify(summary, (_k, v: unknown) => (typeof v === 'bigint' ? `0x${v.toString(16)}` : v), 1));
agent.close();
await dev.close();
