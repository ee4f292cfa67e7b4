// A process that ends with its rdma_cm ids still alive (test/cm/rdma-cm-exit.test.ts):
//   client ADDR UDPPORT DST PORT  connect with a QP; prints {"requested":true} once the REQ is
//                                 sent and {"established":true} on ESTABLISHED
//   hang ADDR UDPPORT             listen; prints {"listening":port,"udpPort":n}, then {"request":true}
//                                 for the first request, which it never answers
// A line on stdin then says how it ends, destroying nothing itself: "exit" (process.exit(0)),
// "throw" (an uncaught exception from a callback), "end" (the program runs out of work: the
// device unref'd, stdin closed). At 'exit' it prints {"atExit":...}, the CM's exit sweep counters
// (its hook was registered with the first id, so it ran before this one).

import { writeSync } from 'node:fs';
import { createRxeDevice, rxeOf } from '../../src/index.js';
import { createEventChannel, createId, type RdmaCmEvent } from '../../src/cm/index.js';
import { cmExitCounters } from '../../src/cm/exit.js';

const [mode, addr, udp, dst, dport] = process.argv.slice(2);
const say = (o: object) => writeSync(1, JSON.stringify(o) + '\n');
const dev = await createRxeDevice({ address: addr!, port: Number(udp) });
const ch = createEventChannel();

if (mode === 'hang') {
  const l = createId(ch, 'tcp', { packetLifeTime: 1, cmResponseTimeout: 16, maxCmRetries: 3 });
  l.bindAddr(addr!, 0);
  l.listen();
  say({ listening: l.localAddr!.port, udpPort: rxeOf(dev).port });
  let told = false;
  ch.on('event', (e: RdmaCmEvent) => {
    if (e.event === 'CONNECT_REQUEST' && !told) { told = true; say({ request: true }); }
  });
} else {
  // A long REQ timeout (about 4 s a try): the REQ stays outstanding while the test decides.
  const id = createId(ch, 'tcp', { packetLifeTime: 1, cmResponseTimeout: 20, maxCmRetries: 3 });
  id.resolveAddr({ address: dst!, port: Number(dport) }, addr);
  await ch.next('ADDR_RESOLVED', 5000, id);
  id.resolveRoute();
  await ch.next('ROUTE_RESOLVED', 5000, id);
  const pd = id.verbs!.allocPd();
  const cq = id.verbs!.createCq(8);
  id.createQp(pd, { sendCq: cq, recvCq: cq, cap: { maxSendWr: 2, maxRecvWr: 2, maxSendSge: 1, maxRecvSge: 1 } });
  id.connect();
  say({ requested: true });
  ch.on('ESTABLISHED', () => say({ established: true }));
}

process.on('exit', (code) => say({ atExit: { ...cmExitCounters }, code }));
process.stdin.setEncoding('utf8').on('data', (d: string) => {
  const how = d.trim();
  if (how === 'exit') process.exit(0);
  if (how === 'throw') setImmediate(() => { throw new Error('boom: an uncaught exception'); });
  if (how === 'end') {
    dev.unref();
    process.stdin.destroy();
  }
});
