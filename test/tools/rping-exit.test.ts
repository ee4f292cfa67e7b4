// softrdma rping fails as rdma-core's rping.c does: main returns -1 (exit status 255) on a
// data mismatch with -V ("data mismatch!", then rping_run_client's "rping client failed: -1") and
// on a connection that does not come up (its CM thread prints "cma event ..." and exits -1;
// rping_connect_client's "wait for CONNECTED state 4" and rping_run_client's "connect error -1").
// The mismatch comes from a server written here with softrdma/cm: rping's exchange, except that
// it writes back other bytes than it read.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Access, createRxeDevice, rxeOf, SendFlags, WcOpcode, WrOpcode, type CQ, type WorkCompletion } from '../../src/index.js';
import { createEventChannel, createId } from '../../src/cm/index.js';
import { decodeInfo, encodeInfo } from '../../src/tools/rping.js';
import { run } from '../helpers/procs.js';

/** The next completion of `opcode` (SEND completions in between are skipped, as rping's CQ thread does). */
async function nextOf(cq: CQ, opcode: number): Promise<WorkCompletion> {
  for (;;) {
    const wc = await cq.next({ signal: AbortSignal.timeout(20_000) });
    assert.equal(wc.status, 0, `completion status ${wc.status}`);
    if (wc.opcode === opcode) return wc;
  }
}

test('rping -c -V against a server that writes back other bytes: "data mismatch!", "rping client failed: -1", exit 255', async () => {
  const dev = await createRxeDevice({ address: '127.0.0.2', port: 0 });
  const ch = createEventChannel();
  const listener = createId(ch, 'tcp');
  try {
    listener.bindAddr('127.0.0.2', 0);
    listener.listen(1);
    const cli = run(['rping', '-c', '-a', '127.0.0.2', '-I', '127.0.0.3', '-p', String(listener.localAddr!.port), '--udp-port', String(rxeOf(dev).port), '-C', '3', '-V', '-v']);
    const req = await ch.next('CONNECT_REQUEST', 20_000);
    const id = req.id;
    const ctx = id.verbs!;
    const pd = ctx.allocPd();
    const cq = ctx.createCq(32);
    id.createQp(pd, { sendCq: cq, recvCq: cq, cap: { maxSendWr: 16, maxRecvWr: 2, maxSendSge: 1, maxRecvSge: 1 } });
    const qp = id.qp!;
    const recvBuf = Buffer.alloc(16), sendBuf = Buffer.alloc(16), data = Buffer.alloc(64);
    const recvMr = pd.regMr(recvBuf, Access.LOCAL_WRITE), sendMr = pd.regMr(sendBuf, 0), dataMr = pd.regMr(data, Access.LOCAL_WRITE);
    const postRecv = () => qp.postRecv({ wrId: 1n, sgList: [recvMr.sge()] });
    const goAhead = () => qp.postSend({ wrId: 2n, opcode: WrOpcode.SEND, sendFlags: SendFlags.SIGNALED, sgList: [sendMr.sge(0, 16)] });
    postRecv();
    id.accept({ responderResources: 1, initiatorDepth: 1 });
    await ch.next('ESTABLISHED', 20_000, id);
    try {
      // The client's start buffer: read it, as rping's server does.
      await nextOf(cq, WcOpcode.RECV);
      const start = decodeInfo(recvBuf);
      postRecv();
      qp.postSend({ wrId: 3n, opcode: WrOpcode.RDMA_READ, sendFlags: SendFlags.SIGNALED, sgList: [dataMr.sge(0, start.size)], rdma: { remoteAddr: start.addr, rkey: start.rkey } });
      await nextOf(cq, WcOpcode.RDMA_READ);
      assert.match(data.toString('latin1'), /^rdma-ping-0: /);
      encodeInfo(0, 0, 0, sendBuf);
      goAhead();
      // Its sink: write back the ping with one byte changed.
      await nextOf(cq, WcOpcode.RECV);
      const sink = decodeInfo(recvBuf);
      postRecv();
      data[0] = 'R'.charCodeAt(0);
      qp.postSend({ wrId: 4n, opcode: WrOpcode.RDMA_WRITE, sendFlags: SendFlags.SIGNALED, sgList: [dataMr.sge(0, data.indexOf(0) + 1)], rdma: { remoteAddr: sink.addr, rkey: sink.rkey } });
      await nextOf(cq, WcOpcode.RDMA_WRITE);
      goAhead();
      assert.equal(await cli.exit(), 255, cli.stderr);
      assert.match(cli.stderr, /^data mismatch!\nrping client failed: -1\n/m);
      assert.equal(cli.stdout, ''); // -v prints verified pings only
    } finally {
      id.destroyId();
      for (const m of [recvMr, sendMr, dataMr]) m.dereg();
      cq.destroy();
      pd.dealloc();
    }
  } finally {
    listener.destroyId();
    ch.close();
    await dev.close();
  }
});

test('rping -c towards a port nobody listens on: "cma event RDMA_CM_EVENT_REJECTED", "wait for CONNECTED state 4", "connect error -1", exit 255', async () => {
  const s = run(['rping', '-s', '-a', '127.0.0.2', '-p', '0', '--udp-port', '0']);
  const [, port, udp] = await s.waitFor(/listening: port (\d+), RoCE UDP port (\d+)/);
  try {
    const c = run(['rping', '-c', '-a', '127.0.0.2', '-I', '127.0.0.3', '-p', String(Number(port) + 1), '--udp-port', udp!, '-C', '1']);
    assert.equal(await c.exit(), 255, c.stderr);
    assert.match(c.stderr, /^cma event RDMA_CM_EVENT_REJECTED, error 8 \(IB_CM_REJ_INVALID_SERVICE_ID\)\nwait for CONNECTED state 4\nconnect error -1\n$/);
  } finally {
    s.child.kill();
    await s.exit().catch(() => 0);
  }
});
