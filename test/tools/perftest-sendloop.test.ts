// perftest's bandwidth sender with -D against a fake session whose work requests complete as
// soon as they are posted: when the time runs out with nothing in flight, no completion is
// coming, and the sender must end rather than wait for one (it once waited for the completion
// timeout, 30 s, and the run failed: seen in about one `write_bw -D 1` run in three with
// `-t 1`, or with rxe's ACK coalescing on).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { WcOpcode, WcStatus, type SendWr, type WorkCompletion } from '../../src/index.js';
import { sendLoop } from '../../src/tools/perftest/bw.js';
import type { Session } from '../../src/tools/perftest/session.js';

function fakeSession(txDepth: number, durationSec: number): { s: Session; polls: number[] } {
  const done: WorkCompletion[] = [];
  const polls: number[] = [];
  const qp = {
    postSend(wr: SendWr): void {
      // Completes at once; only signalled WRs make a completion, as on a real CQ.
      if (wr.sendFlags! & 2) done.push({ wrId: wr.wrId, status: WcStatus.SUCCESS, opcode: WcOpcode.RDMA_WRITE, byteLen: 0, qpNum: 1, srcQp: 0, wcFlags: 0, immData: 0, pkeyIndex: 0, slid: 0, sl: 0, dlidPathBits: 0, vendorErr: 0 } as unknown as WorkCompletion);
    },
  };
  const s = {
    o: { test: 'write_bw', iters: 1000, txDepth, durationSec, marginSec: 0 },
    nq: 1,
    qps: [qp],
    mr: { sge: (addr: number, length: number) => ({ addr, length, lkey: 1 }) },
    sendOff: () => 0,
    remoteAddr: () => 0n,
    remote: [{ rkey: 2 }],
    async poll(want: number, onWc: (wc: WorkCompletion) => void, deadlineNs = Infinity): Promise<number> {
      polls.push(deadlineNs);
      let got = 0;
      for (;;) {
        while (done.length && got < want) { onWc(done.shift()!); got++; }
        if (got >= want) return got;
        if (deadlineNs === Infinity) throw new Error('the sender waits for a completion that cannot come');
        if (Number(process.hrtime.bigint()) >= deadlineNs) return got;
        await new Promise((r) => setImmediate(r));
      }
    },
  } as unknown as Session;
  return { s, polls };
}

test('perftest -D: the sender ends when the time runs out with nothing in flight', async () => {
  // tx-depth 1: every WR is signalled and completes before the next is posted, so whenever the
  // deadline is seen, nothing is in flight.
  for (let run = 0; run < 5; run++) {
    const { s } = fakeSession(1, 0.02);
    const r = await sendLoop(s, 4096, undefined);
    assert.ok(r.counts[0]! > 0, 'it sent');
    assert.ok(r.result.iterations > 0);
  }
});

test('perftest -D: with WRs in flight at the deadline, one more signalled WR is posted and awaited', async () => {
  const { s } = fakeSession(128, 0.02);
  const r = await sendLoop(s, 4096, undefined);
  assert.ok(r.counts[0]! > 0);
});

test("perftest's CQ moderation in the sender: one WR in 100 signalled, every one over 8192 bytes (unless -a or -Q), at most -t", async () => {
  const signalled = async (size: number, o: Record<string, unknown> = {}) => {
    const { s } = fakeSession(128, 0);
    Object.assign(s.o, { durationSec: undefined, ...o });
    let n = 0;
    const qp = s.qps[0]!;
    const post = qp.postSend.bind(qp);
    (qp as { postSend: (wr: SendWr) => void }).postSend = (wr: SendWr) => { if (wr.sendFlags! & 2) n++; post(wr); };
    const r = await sendLoop(s, size, undefined);
    assert.equal(r.counts[0], 1000);
    return n;
  };
  assert.equal(await signalled(4096), 10); // the 100th, 200th, ... 1000th (perftest's DEF_CQ_MOD; it was 64)
  assert.equal(await signalled(65536), 1000); // MSG_SIZE_CQ_MOD_LIMIT: every WR
  assert.equal(await signalled(65536, { all: true }), 10);
  assert.equal(await signalled(65536, { cqMod: 250 }), 8); // -Q 250 is capped at -t 128: 7 x 128 and the last
  assert.equal(await signalled(4096, { cqMod: 40 }), 25);
});
