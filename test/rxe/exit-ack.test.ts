// A process that exits on its last receive, without closing anything, still acknowledges it:
// the responder's deferred ACK leaves from process 'exit' (responder.ts). Otherwise the
// sender's last message would be retried for ever (retry_cnt 7 is endless, as in Linux rxe).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { Access, QpType, SendFlags, WcStatus, WrOpcode, createRxeDevice, gidFromAddress, queryRxeCounters, rxeOf } from '../../src/index.js';
import { connect, waitCompletions } from '../helpers/pair.js';
import { runNode } from '../helpers/procs.js';

const CHILD = fileURLToPath(new URL('./exit-ack-child.js', import.meta.url));

test('a receiver that calls process.exit() on its last completion still ACKs it (the deferred ACK leaves at exit)', async () => {
  const dev = await createRxeDevice({ address: '127.0.0.2', port: 0 });
  try {
    const ctx = dev.open();
    const pd = ctx.allocPd();
    const cq = ctx.createCq(16);
    const qp = pd.createQp({ qpType: QpType.RC, sendCq: cq, recvCq: cq, cap: { maxSendWr: 4, maxRecvWr: 4, maxSendSge: 1, maxRecvSge: 1 } });
    const child = runNode(CHILD, [String(rxeOf(dev).port), String(qp.qpn)]);
    const [, qpn] = await child.waitFor(/"qpn":(\d+)/);
    // A 4.3 s retransmit timeout (4.096 us x 2^20): a lost ACK cannot be rescued in time.
    connect(qp, { qpn: Number(qpn), gid: gidFromAddress('127.0.0.3') }, { timeout: 20, psn: 0x100, remotePsn: 0x200 });
    const mr = pd.regMr(Buffer.from('last message'), Access.LOCAL_WRITE);
    qp.postSend({ wrId: 7, opcode: WrOpcode.SEND, sendFlags: SendFlags.SIGNALED, sgList: [mr.sge()] });
    assert.equal(await child.exit(10_000), 0, child.stderr);
    const [wc] = await waitCompletions(cq, 1, 3000);
    assert.deepEqual([wc!.wrId, wc!.status], [7, WcStatus.SUCCESS]);
    assert.equal(queryRxeCounters(ctx, qp).qp.retransmits, 0);
  } finally {
    await dev.close();
  }
});
