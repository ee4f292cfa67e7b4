// A process on the other side of an rdma_cm test (test/cm/rdma-cm-process.test.ts):
//   server ADDR UDPPORT [reject]  listen on ADDR (port printed as {"listening":port,"udpPort":n}); accept
//                                 every request with a QP (or reject it with private data), answer
//                                 DISCONNECTED with disconnect(), destroy each id at TIMEWAIT_EXIT;
//                                 prints {"census":...} for each line on stdin and at its end.
//   hang ADDR UDPPORT              listen, print {"request":...} for the first request and never answer
//                                 (the test kills it to play a listener that dies)
//   client ADDR UDPPORT DST PORT   connect with a QP, print {"established":...}, then do nothing (the
//                                 test kills it to play a client that dies)
// Short CM timing (packet life 1) so time-wait takes ~130 ms.

import { createRxeDevice, rxeOf } from '../../src/index.js';
import { createEventChannel, createId, type RdmaCmEvent, type RdmaCmId } from '../../src/cm/index.js';
import { cmDevices } from '../../src/cm/rdma-cm/cm-device.js';

const [mode, addr, udp, dst, dport] = process.argv.slice(2);
const say = (o: object) => process.stdout.write(JSON.stringify(o) + '\n');
const dev = await createRxeDevice({ address: addr!, port: Number(udp) });
const ch = createEventChannel();
// REQ/REP wait 2·ms(1) + ms(16) = 258 ms before a resend: long enough not to resend on a busy machine
const opts = { packetLifeTime: 1, cmResponseTimeout: 16, maxCmRetries: 3 };

function withQp(id: RdmaCmId) {
  const pd = id.verbs!.allocPd();
  const cq = id.verbs!.createCq(8);
  id.createQp(pd, { sendCq: cq, recvCq: cq, cap: { maxSendWr: 2, maxRecvWr: 2, maxSendSge: 1, maxRecvSge: 1 } });
  return () => { id.destroyQp(); cq.destroy(); pd.dealloc(); };
}

if (mode === 'server' || mode === 'hang') {
  const l = createId(ch, 'tcp', opts);
  l.bindAddr(addr!, 0);
  l.listen(1024);
  say({ listening: l.localAddr!.port, udpPort: rxeOf(dev).port });
  const frees = new Map<RdmaCmId, () => void>();
  let accepted = 0, disconnected = 0, timewait = 0;
  ch.on('event', (e: RdmaCmEvent) => {
    if (mode === 'hang') {
      if (e.event === 'CONNECT_REQUEST') say({ request: e.conn!.qpNum });
      return;
    }
    switch (e.event) {
      case 'CONNECT_REQUEST':
        if (dst === 'reject') { e.id.reject(Buffer.from('go away')); e.id.destroyId(); return; }
        frees.set(e.id, withQp(e.id));
        e.id.accept({ privateData: Buffer.from('ok') });
        accepted++;
        return;
      case 'DISCONNECTED':
        disconnected++;
        try { e.id.disconnect(); } catch { /* we started it */ }
        return;
      case 'UNREACHABLE':
      case 'REJECTED':
        say({ event: e.event, status: e.status });
        frees.get(e.id)?.();
        frees.delete(e.id);
        e.id.destroyId();
        return;
      case 'TIMEWAIT_EXIT':
        timewait++;
        frees.get(e.id)?.();
        frees.delete(e.id);
        e.id.destroyId();
        return;
      default:
    }
  });
  const census = () => say({ census: cmDevices().map((d) => d.census()), accepted, disconnected, timewait, live: frees.size });
  // A line on stdin asks for the census; the end of stdin ends the process.
  process.stdin.on('data', census);
  process.stdin.on('end', () => {
    census();
    l.destroyId();
    ch.close();
    void dev.close();
  });
  process.stdin.resume();
} else if (mode === 'client') {
  const id = createId(ch, 'tcp', opts);
  id.resolveAddr({ address: dst!, port: Number(dport) }, addr);
  await ch.next('ADDR_RESOLVED', 5000, id);
  id.resolveRoute();
  await ch.next('ROUTE_RESOLVED', 5000, id);
  withQp(id);
  // retry count 6: the server's QP gives up on us after 7 tries (rxe, as Linux's, retries forever at 7)
  id.connect({ retryCount: 6 });
  const e = await ch.next(['ESTABLISHED', 'REJECTED', 'UNREACHABLE'], 10_000, id);
  say({ established: e.event === 'ESTABLISHED', qpn: id.qp!.qpn });
}
