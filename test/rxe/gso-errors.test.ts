// GSO sends the kernel refuses, on the GSO sockets' path (node:dgram; runs go that way where
// sendmmsg cannot be used, here forced with the device's sendmmsg option off; the sendmmsg
// path's own: gso-sendmmsg.test.ts). node:dgram drops a send's error unless the send has a
// callback (no 'error' event), so a refused run must be seen there: it is counted in
// send_err and that segment size goes packet by packet from then on. And a run never has
// more buffers than one send takes (UIO_MAXIOV, 1024 iovecs: EMSGSIZE past it).

import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { Access, SendFlags, WcStatus, WrOpcode, rxeOf } from '../../src/index.js';
import { makePair, waitCompletions } from '../helpers/pair.js';

type Send = (this: dgram.Socket, msg: Buffer | Buffer[], port: number, address: string, cb?: (err: Error | null) => void) => void;

/**
 * Watch node:dgram sends of more than one buffer (GSO runs; single packets of rxe go by
 * sendmmsg or as one buffer list of a few parts). `refuse` answers a send with that errno
 * instead of sending it, as the kernel answers a UDP_SEGMENT send on a route without checksum
 * offload (EIO). Undone when the test ends.
 */
function watchRuns(t: TestContext, refuse?: (parts: Buffer[]) => string | undefined) {
  const seen = { runs: 0, maxBuffers: 0, refused: 0 };
  const proto = dgram.Socket.prototype as unknown as { send: Send };
  const orig = proto.send;
  proto.send = function (this: dgram.Socket, msg, port, address, cb) {
    if (Array.isArray(msg) && msg.reduce((n, b) => n + b.length, 0) > 5000) {
      seen.runs++;
      seen.maxBuffers = Math.max(seen.maxBuffers, msg.length);
      const code = refuse?.(msg);
      if (code) {
        seen.refused++;
        // node:dgram passes such an error to the callback only; without one it is lost.
        if (cb) process.nextTick(cb, Object.assign(new Error(`send ${code}`), { code }));
        return;
      }
    }
    orig.call(this, msg, port, address, cb);
  } as Send;
  t.after(() => { proto.send = orig; });
  return seen;
}

test('a GSO run never has more than 1024 buffers: SENDs of 32 SGEs go through without loss', async (t) => {
  const seen = watchRuns(t);
  const { a, b, close } = await makePair(undefined, { device: { sendmmsg: false }, mtu: 3, timeout: 14, retryCnt: 3, cap: { maxSendSge: 32, maxRecvSge: 4, maxSendWr: 256, maxRecvWr: 256 } });
  t.after(close);
  const nsge = 32, sge = 64, msg = nsge * sge, n = 40;
  const src = Buffer.alloc(msg * n, 1), dst = Buffer.alloc(msg * (n + 4));
  const smr = a.pd.regMr(src, Access.LOCAL_WRITE), dmr = b.pd.regMr(dst, Access.LOCAL_WRITE);
  for (let i = 0; i < n + 4; i++) b.qp.postRecv({ wrId: i, sgList: [dmr.sge(i * msg, msg)] });
  const post = (k: number, base: number) => {
    for (let i = 0; i < k; i++) {
      const sgList = Array.from({ length: nsge }, (_, s) => smr.sge(i * msg + s * sge, sge));
      a.qp.postSend({ wrId: base + i, opcode: WrOpcode.SEND, sendFlags: SendFlags.SIGNALED, sgList });
    }
  };
  // The first run of a size opens its GSO socket (and goes packet by packet).
  post(4, 0);
  assert.deepEqual((await waitCompletions(a.cq, 4)).map((w) => w.status), [0, 0, 0, 0]);
  const c = rxeOf(a.dev).counters;
  const gso0 = c.gso_sends;
  post(n, 100);
  const wcs = await waitCompletions(a.cq, n, 8000);
  assert.deepEqual([...new Set(wcs.map((w) => w.status))], [WcStatus.SUCCESS]);
  assert.ok(c.gso_sends > gso0, 'the SENDs went as GSO runs');
  assert.ok(seen.maxBuffers <= 1024, `a GSO send of ${seen.maxBuffers} buffers`);
  assert.equal(c.send_err, 0);
});

test('a GSO send the kernel refuses (EIO) is counted, and that size then goes packet by packet', async (t) => {
  const seen = watchRuns(t, () => 'EIO');
  const { a, b, close } = await makePair(undefined, { device: { sendmmsg: false }, timeout: 14, retryCnt: 2 });
  t.after(close);
  const size = 256 << 10;
  const src = Buffer.alloc(size, 7), dst = Buffer.alloc(size);
  const lmr = a.pd.regMr(src, Access.LOCAL_WRITE), rmr = b.pd.regMr(dst, Access.LOCAL_WRITE | Access.REMOTE_WRITE);
  const write = (wrId: number) => a.qp.postSend({ wrId, opcode: WrOpcode.RDMA_WRITE, sendFlags: SendFlags.SIGNALED, sgList: [lmr.sge()], rdma: { remoteAddr: rmr.addr, rkey: rmr.rkey } });
  const c = rxeOf(a.dev).counters;
  for (let round = 0; round < 3; round++) {
    write(round);
    const [wc] = await waitCompletions(a.cq, 1, 8000);
    assert.equal(wc!.status, WcStatus.SUCCESS, `WRITE ${round}`);
  }
  assert.ok(dst.equals(src));
  if (seen.runs === 0) { t.skip('this kernel takes no UDP GSO sends: nothing to refuse'); return; }
  assert.ok(seen.refused >= 1, 'a GSO send was tried and refused');
  assert.equal(c.send_err, seen.refused, 'each refused run counted in send_err');
  const refused = seen.refused;
  write(9);
  assert.equal((await waitCompletions(a.cq, 1, 8000))[0]!.status, WcStatus.SUCCESS);
  assert.equal(seen.refused, refused, 'no more GSO sends of the refused size');
});

test('a GSO send that fails for a moment (ENETUNREACH) is a lost run, not the end of GSO for that size', async (t) => {
  let first = true;
  const seen = watchRuns(t, () => { if (!first) return undefined; first = false; return 'ENETUNREACH'; });
  const { a, b, close } = await makePair(undefined, { device: { sendmmsg: false }, timeout: 14, retryCnt: 3 });
  t.after(close);
  const size = 256 << 10;
  const src = Buffer.alloc(size, 9), dst = Buffer.alloc(size);
  const lmr = a.pd.regMr(src, Access.LOCAL_WRITE), rmr = b.pd.regMr(dst, Access.LOCAL_WRITE | Access.REMOTE_WRITE);
  const c = rxeOf(a.dev).counters;
  for (let round = 0; round < 3; round++) {
    a.qp.postSend({ wrId: round, opcode: WrOpcode.RDMA_WRITE, sendFlags: SendFlags.SIGNALED, sgList: [lmr.sge()], rdma: { remoteAddr: rmr.addr, rkey: rmr.rkey } });
    assert.equal((await waitCompletions(a.cq, 1, 8000))[0]!.status, WcStatus.SUCCESS, `WRITE ${round}`);
  }
  if (seen.runs === 0) { t.skip('this kernel takes no UDP GSO sends: nothing to refuse'); return; }
  assert.equal(seen.refused, 1);
  assert.equal(c.send_err, 1);
  const runs = c.gso_sends;
  a.qp.postSend({ wrId: 9, opcode: WrOpcode.RDMA_WRITE, sendFlags: SendFlags.SIGNALED, sgList: [lmr.sge()], rdma: { remoteAddr: rmr.addr, rkey: rmr.rkey } });
  assert.equal((await waitCompletions(a.cq, 1, 8000))[0]!.status, WcStatus.SUCCESS);
  assert.ok(c.gso_sends > runs, 'runs still go as GSO sends');
  assert.ok(dst.equals(src));
});
