// Waiting for completions: await cq.next(), for await (const wc of cq), and devices that let a
// program end (close(), or unref() like a socket).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { Access, QpType, SendFlags, VerbsError, WcOpcode, WcStatus, WrOpcode } from '../../src/index.js';
import { makePair } from '../helpers/pair.js';

test('cq.next() resolves completions in order; several waiters are served in call order', async () => {
  const { a, b, close } = await makePair(QpType.RC);
  try {
    const src = a.pd.regMr(Buffer.from('0123456789'), Access.LOCAL_WRITE);
    const dst = b.pd.regMr(Buffer.alloc(64), Access.LOCAL_WRITE | Access.REMOTE_WRITE);
    const first = a.cq.next(), second = a.cq.next();
    b.qp.postRecv({ wrId: 7, sgList: [dst.sge(32, 32)] });
    const received = b.cq.next();
    a.qp.postSend({ wrId: 1, opcode: WrOpcode.RDMA_WRITE, sendFlags: SendFlags.SIGNALED, sgList: [src.sge(0, 10)], rdma: { remoteAddr: dst.addr, rkey: dst.rkey } });
    a.qp.postSend({ wrId: 2, opcode: WrOpcode.SEND, sendFlags: SendFlags.SIGNALED, sgList: [src.sge(0, 4)] });
    assert.deepEqual([(await first).wrId, (await second).wrId], [1, 2]);
    const wc = await received;
    assert.equal(wc.status, WcStatus.SUCCESS);
    assert.equal(wc.opcode, WcOpcode.RECV);
    assert.equal(wc.byteLen, 4);
    assert.equal((dst.memory as Buffer).toString('utf8', 0, 10), '0123456789');
    // A completion already queued is returned at once.
    a.qp.postSend({ wrId: 3, opcode: WrOpcode.RDMA_WRITE, sendFlags: SendFlags.SIGNALED, sgList: [src.sge(0, 1)], rdma: { remoteAddr: dst.addr, rkey: dst.rkey } });
    await new Promise((r) => setTimeout(r, 200));
    assert.equal((await a.cq.next()).wrId, 3);
  } finally {
    await close();
  }
});

test('for await takes completions as they come and ends when the CQ goes', async () => {
  const { a, b, close } = await makePair(QpType.RC);
  try {
    const src = a.pd.regMr(Buffer.alloc(8), Access.LOCAL_WRITE);
    const dst = b.pd.regMr(Buffer.alloc(8), Access.LOCAL_WRITE | Access.REMOTE_WRITE);
    for (let i = 0; i < 5; i++) a.qp.postSend({ wrId: i, opcode: WrOpcode.RDMA_WRITE, sendFlags: SendFlags.SIGNALED, sgList: [src.sge()], rdma: { remoteAddr: dst.addr, rkey: dst.rkey } });
    const seen: number[] = [];
    for await (const wc of a.cq) {
      seen.push(Number(wc.wrId));
      if (seen.length === 5) break;
    }
    assert.deepEqual(seen, [0, 1, 2, 3, 4]);
    // Destroying the context ends a loop that waits, and rejects a pending next().
    const loop = (async () => { const got = []; for await (const wc of b.cq) got.push(wc); return got; })();
    const pending = b.cq.next();
    b.ctx.close();
    assert.deepEqual(await loop, []);
    await assert.rejects(pending, (e: unknown) => e instanceof VerbsError && e.code === 'EBADF');
    await assert.rejects(b.cq.next(), (e: unknown) => e instanceof VerbsError && e.code === 'EBADF');
  } finally {
    await close();
  }
});

test('cq.next() with an AbortSignal', async () => {
  const { a, close } = await makePair(QpType.RC);
  try {
    const ac = new AbortController();
    const p = a.cq.next({ signal: ac.signal });
    ac.abort(new Error('enough'));
    await assert.rejects(p, /enough/);
    await assert.rejects(a.cq.next({ signal: AbortSignal.abort(new Error('already')) }), /already/);
  } finally {
    await close();
  }
});

const script = (body: string) => `
  import { createRxeDevice, connectQp, queryRxeCounters, Access, QpType, WrOpcode, SendFlags } from ${JSON.stringify(fileURLToPath(new URL('../../src/index.js', import.meta.url)))};
  const port = 20000 + (process.pid % 20000);
  const A = await createRxeDevice({ address: '127.0.0.2', port }), B = await createRxeDevice({ address: '127.0.0.3', port });
  const side = (dev) => { const ctx = dev.open(), pd = ctx.allocPd(), cq = ctx.createCq(16);
    return { ctx, cq, mr: pd.regMr(Buffer.alloc(64), Access.LOCAL_WRITE | Access.REMOTE_WRITE),
             qp: pd.createQp({ qpType: QpType.RC, sendCq: cq, recvCq: cq, cap: { maxSendWr: 4, maxRecvWr: 4 } }) }; };
  const a = side(A), b = side(B);
  connectQp(a.qp, { qpn: b.qp.qpn, psn: 0, gid: b.ctx.queryGid() });
  connectQp(b.qp, { qpn: a.qp.qpn, psn: 0, gid: a.ctx.queryGid() });
  ${body}
`;

function runsFor(source: string, ms: number): Promise<{ exited: boolean; code: number | null; out: string }> {
  return new Promise((resolve) => {
    const child = execFile(process.execPath, ['--input-type=module', '-e', source], { timeout: ms }, (err, stdout, stderr) => {
      resolve({ exited: !(err && err.killed), code: child.exitCode, out: stdout + stderr });
    });
  });
}

test('an unref()\'d device lets the program end; awaiting a completion keeps it alive until then', async () => {
  const unref = await runsFor(script(`
    A.unref(); B.unref();
    await new Promise((r) => setTimeout(r, 50));   // the devices alone keep nothing alive
    a.qp.postSend({ wrId: 1, opcode: WrOpcode.RDMA_WRITE, sendFlags: SendFlags.SIGNALED, sgList: [a.mr.sge(0, 8)], rdma: { remoteAddr: b.mr.addr, rkey: b.mr.rkey } });
    const wc = await a.cq.next();
    console.log('completed', wc.wrId);
  `), 10_000);
  assert.equal(unref.exited, true, unref.out);
  assert.equal(unref.code, 0, unref.out);
  assert.match(unref.out, /completed 1/);
  // Without unref() or close() the devices keep the process alive, as a listening socket would.
  const kept = await runsFor(script(`console.log('done');`), 1500);
  assert.equal(kept.exited, false, kept.out);
  assert.match(kept.out, /done/);
});

test('an unref()\'d device whose peer is gone: retry_cnt 7 retries for ever (as rxe), but holds the process only for 7 timeouts', async () => {
  // timeout 14 (67 ms): the process may end after 7 timeouts without an ACK, ~0.5 s; before,
  // the retransmit timer held it for ever.
  const gone = await runsFor(script(`
    const rdma = { remoteAddr: b.mr.addr, rkey: b.mr.rkey };
    await B.close();
    A.unref();
    process.on('exit', () => console.log('timeouts', queryRxeCounters(a.ctx, a.qp).qp.timeouts));
    a.qp.postSend({ wrId: 1, opcode: WrOpcode.RDMA_WRITE, sendFlags: SendFlags.SIGNALED, sgList: [a.mr.sge(0, 8)], rdma });
  `), 8000);
  assert.equal(gone.exited, true, gone.out);
  assert.equal(gone.code, 0, gone.out);
  assert.equal(Number(/timeouts (\d+)/.exec(gone.out)?.[1]), 7, gone.out);
});
