// The receiving end of exit-ack.test.ts, as its own process: an RC QP on 127.0.0.3 (UDP port
// argv[2], the test's device's) connected to the test's QP (argv[3]), one receive posted. It
// prints its QPN, polls from setImmediate as pingpong does, and calls process.exit() in the
// same turn that shows the receive's completion, before closing anything.

import { Access, QpType, createRxeDevice, gidFromAddress } from '../../src/index.js';
import { connect } from '../helpers/pair.js';

const [port, peerQpn] = process.argv.slice(2).map(Number) as [number, number];
const dev = await createRxeDevice({ address: '127.0.0.3', port });
const ctx = dev.open();
const pd = ctx.allocPd();
const cq = ctx.createCq(16);
const qp = pd.createQp({ qpType: QpType.RC, sendCq: cq, recvCq: cq, cap: { maxSendWr: 4, maxRecvWr: 4, maxSendSge: 1, maxRecvSge: 1 } });
connect(qp, { qpn: peerQpn, gid: gidFromAddress('127.0.0.2') }, { timeout: 20, psn: 0x200, remotePsn: 0x100 });
const mr = pd.regMr(Buffer.alloc(64), Access.LOCAL_WRITE);
qp.postRecv({ wrId: 1, sgList: [mr.sge()] });
process.stdout.write(`${JSON.stringify({ qpn: qp.qpn })}\n`);
const deadline = Date.now() + 10_000;
for (;;) {
  const [wc] = cq.poll(1);
  if (wc) process.exit(wc.status === 0 ? 0 : 3);
  if (Date.now() > deadline) process.exit(4);
  await new Promise((r) => setImmediate(r));
}
