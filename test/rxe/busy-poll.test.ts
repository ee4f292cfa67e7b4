// Busy polling: a poll of an empty CQ reads the device socket at once (RxeLink.busyPoll), so a
// consumer spinning on its CQ sees an answer without an epoll round. Reads that find nothing
// may repeat (a poller spins in place); reads that deliver are BUSY_READS_PER_TURN a turn of the
// event loop at most. The device option busyPoll: false, and a CQ with a completion channel,
// leave datagrams to the loop; a read from inside a delivery reads nothing (the batch being
// delivered is views of the area a read would overwrite).

import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { once } from 'node:events';
import { performance } from 'node:perf_hooks';
import { describe, it } from 'node:test';
import { Access, QpType, SendFlags, WcOpcode, WrOpcode, rxeOf, type CQ, type WorkCompletion } from '../../src/index.js';
import { MmsgReceiver, mmsgAvailable } from '../../src/providers/rxe/mmsg-receiver.js';
import { BUSY_READS_PER_TURN } from '../../src/providers/rxe/link.js';
import { connect, makePair, waitCompletions } from '../helpers/pair.js';

/** Poll `cq` without ever yielding to the event loop, for at most `ms`. */
function spin(cq: CQ, ms: number): WorkCompletion[] {
  const until = performance.now() + ms;
  let wcs: WorkCompletion[] = [];
  while (wcs.length === 0 && performance.now() < until) wcs = cq.poll(4);
  return wcs;
}

/** A SEND from a to b, handed to the kernel (a's link flushes in a microtask); b's receive posted. */
async function sendOne(p: Awaited<ReturnType<typeof makePair>>, text: string) {
  const rbuf = Buffer.alloc(64);
  const rmr = p.b.pd.regMr(rbuf, Access.LOCAL_WRITE);
  p.b.qp.postRecv({ wrId: 7n, sgList: [rmr.sge()] });
  const smr = p.a.pd.regMr(Buffer.from(text), 0);
  p.a.qp.postSend({ wrId: 1n, opcode: WrOpcode.SEND, sendFlags: SendFlags.SIGNALED, sgList: [smr.sge()] });
  await Promise.resolve();
  assert.equal(rxeOf(p.a.dev).link.queued, 0, 'the SEND left a');
  return rbuf;
}

describe('rxe busy polling', { skip: !mmsgAvailable() && 'recvmmsg is not available here' }, () => {
  it('an empty CQ\'s poll reads the socket: a SEND completes at the receiver without a turn of the event loop', async () => {
    const p = await makePair(undefined, { device: { busyPoll: true } });
    try {
      const before = rxeOf(p.b.dev).counters.busy_poll_batches;
      const rbuf = await sendOne(p, 'spun');
      const wcs = spin(p.b.cq, 5000);
      assert.equal(wcs.length, 1, 'the receive completed within the spin');
      assert.equal(wcs[0]!.status, 0);
      assert.equal(wcs[0]!.opcode, WcOpcode.RECV);
      assert.equal(rbuf.subarray(0, 4).toString(), 'spun');
      assert.ok(rxeOf(p.b.dev).counters.busy_poll_batches > before, 'counted as a busy-poll batch');
      // b's ACK was deferred to the end of the loop's poll phase (responder.ts); b's next poll,
      // empty, sends it, and a spinning a sees its SEND complete, all without a turn of the loop.
      assert.equal(p.b.cq.poll(1).length, 0);
      const [ack] = spin(p.a.cq, 5000);
      assert.equal(ack?.status, 0);
      assert.equal(ack?.opcode, WcOpcode.SEND);
    } finally {
      await p.close();
    }
  });

  it('reads that find nothing repeat freely; reads that deliver stop at BUSY_READS_PER_TURN until the loop turns', async () => {
    const p = await makePair(undefined, { device: { busyPoll: true } });
    try {
      const before = rxeOf(p.b.dev).counters.busy_poll_batches;
      assert.equal(p.b.cq.canSpin, true);
      // Thousands of empty reads (30 ms of polling) use up nothing.
      assert.equal(spin(p.b.cq, 30).length, 0);
      for (let i = 0; i < BUSY_READS_PER_TURN; i++) {
        const rbuf = await sendOne(p, `n${i}`.padEnd(4, '.'));
        assert.equal(spin(p.b.cq, 5000).length, 1, `read ${i + 1} of the turn delivered it`);
        assert.equal(rbuf.subarray(0, 4).toString(), `n${i}`.padEnd(4, '.'));
      }
      assert.equal(rxeOf(p.b.dev).counters.busy_poll_batches, before + BUSY_READS_PER_TURN);
      assert.equal(p.b.cq.canSpin, false, 'a spin cannot help until the loop turns');
      // What b posts still leaves when it polls.
      p.a.qp.postRecv({ wrId: 8n, sgList: [p.a.pd.regMr(Buffer.alloc(16), Access.LOCAL_WRITE).sge()] });
      p.b.qp.postSend({ wrId: 9n, opcode: WrOpcode.SEND, sendFlags: SendFlags.SIGNALED, sgList: [p.b.pd.regMr(Buffer.from('back'), 0).sge()] });
      assert.equal(rxeOf(p.b.dev).link.queued, 1);
      p.b.cq.poll(1);
      assert.equal(rxeOf(p.b.dev).link.queued, 0, 'sent by the poll past the bound');
      // One more SEND, on the wire before b polls again, but in the same turn of b's loop: a
      // consumer on microtasks alone cannot keep the loop from turning.
      const rbuf = await sendOne(p, 'last');
      assert.equal(spin(p.b.cq, 30).length, 0, 'no further read this turn');
      const [wc] = await waitCompletions(p.b.cq, 1);
      assert.equal(wc!.status, 0);
      assert.equal(rbuf.subarray(0, 4).toString(), 'last');
    } finally {
      await p.close();
    }
  });

  it('what the poller posted leaves when it polls, before it waits', async () => {
    const p = await makePair(undefined, { device: { busyPoll: true } });
    try {
      const rbuf = Buffer.alloc(16);
      p.b.qp.postRecv({ wrId: 7n, sgList: [p.b.pd.regMr(rbuf, Access.LOCAL_WRITE).sge()] });
      p.a.qp.postSend({ wrId: 1n, opcode: WrOpcode.SEND, sendFlags: SendFlags.SIGNALED, sgList: [p.a.pd.regMr(Buffer.from('sent'), 0).sge()] });
      assert.equal(rxeOf(p.a.dev).link.queued, 1, 'queued for the end of the tick');
      assert.equal(p.a.cq.poll(1).length, 0);
      assert.equal(rxeOf(p.a.dev).link.queued, 0, 'the empty poll sent it');
      const [wc] = spin(p.b.cq, 5000);
      assert.equal(wc?.status, 0);
      assert.equal(rbuf.subarray(0, 4).toString(), 'sent');
    } finally {
      await p.close();
    }
  });

  it('with busyPoll: false the datagram waits for the event loop', async () => {
    const p = await makePair(undefined, { device: { busyPoll: false } });
    try {
      const rbuf = await sendOne(p, 'loop');
      assert.equal(p.b.cq.canSpin, false);
      assert.equal(spin(p.b.cq, 30).length, 0, 'nothing without a turn of the loop');
      const [wc] = await waitCompletions(p.b.cq, 1);
      assert.equal(wc!.status, 0);
      assert.equal(rbuf.subarray(0, 4).toString(), 'loop');
      assert.equal(rxeOf(p.b.dev).counters.busy_poll_batches, 0);
    } finally {
      await p.close();
    }
  });

  it('a CQ with a completion channel is event-driven: its poll does not read the socket', async () => {
    const p = await makePair(undefined, { device: { busyPoll: true } });
    const channel = p.b.ctx.createCompChannel();
    try {
      const cq = p.b.ctx.createCq(16, { channel });
      const cap = { maxSendWr: 4, maxRecvWr: 4, maxSendSge: 1, maxRecvSge: 1 };
      const qa = p.a.pd.createQp({ qpType: QpType.RC, sendCq: p.a.cq, recvCq: p.a.cq, cap });
      const qb = p.b.pd.createQp({ qpType: QpType.RC, sendCq: cq, recvCq: cq, cap });
      connect(qa, { qpn: qb.qpn, gid: p.b.ctx.queryGid() }, { psn: 1, remotePsn: 2 });
      connect(qb, { qpn: qa.qpn, gid: p.a.ctx.queryGid() }, { psn: 2, remotePsn: 1 });
      const rbuf = Buffer.alloc(16);
      qb.postRecv({ wrId: 1n, sgList: [p.b.pd.regMr(rbuf, Access.LOCAL_WRITE).sge()] });
      qa.postSend({ wrId: 1n, opcode: WrOpcode.SEND, sendFlags: SendFlags.SIGNALED, sgList: [p.a.pd.regMr(Buffer.from('chan'), 0).sge()] });
      await Promise.resolve();
      assert.equal(rxeOf(p.a.dev).link.queued, 0, 'the SEND left a');
      assert.equal(cq.canSpin, false);
      assert.equal(spin(cq, 30).length, 0, 'nothing without a turn of the loop');
      assert.equal(rxeOf(p.b.dev).counters.busy_poll_batches, 0);
      const [wc] = await waitCompletions(cq, 1);
      assert.equal(wc!.status, 0);
      assert.equal(rbuf.subarray(0, 4).toString(), 'chan');
    } finally {
      await p.close();
    }
  });

  it('a read from inside a delivery reads nothing, and the batch being delivered stays intact', async () => {
    const rx = dgram.createSocket('udp4');
    rx.bind(0, '127.0.0.2');
    await once(rx, 'listening');
    const got: string[] = [];
    let nested = 0;
    let r: MmsgReceiver | undefined;
    r = MmsgReceiver.attach(rx, {
      datagram(msg) {
        const before = msg.toString();
        nested += r!.readNow();
        assert.equal(msg.toString(), before, 'the view was not overwritten by a nested read');
        got.push(before);
      },
      batch() {},
      error() { assert.fail('receive error'); },
    });
    assert.ok(r, 'attached');
    const tx = dgram.createSocket('udp4');
    try {
      tx.bind(0, '127.0.0.3');
      await once(tx, 'listening');
      tx.connect(rx.address().port, '127.0.0.2');
      await once(tx, 'connect');
      // A connected, bound socket sends within the call: more than one batch (32) is queued
      // before the first read, so a nested read would find datagrams to overwrite views with.
      const N = 40;
      for (let i = 0; i < N; i++) tx.send(`datagram ${i}`);
      const until = performance.now() + 5000;
      while (got.length < N && performance.now() < until) r.readNow();
      assert.equal(nested, 0);
      assert.deepEqual(got, Array.from({ length: N }, (_, i) => `datagram ${i}`));
    } finally {
      r.close();
      tx.close();
      rx.close();
    }
  });
});
