// A source port's sockets are one ordered flow. Where a GSO run goes by its own socket (no
// sendmmsg: forced here with the device's sendmmsg option off; with sendmmsg a run leaves from
// the port's own socket, gso-sendmmsg.test.ts), and libuv has to queue it (the send buffer is
// full: EAGAIN), the port's next packets must not pass it on the plain socket, or the
// responder sees a PSN gap, NAKs and the requester goes back N.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { Access, SendFlags, WcStatus, WrOpcode, rxeOf } from '../../src/index.js';
import { makePair, waitCompletions } from '../helpers/pair.js';

type Send = (this: dgram.Socket, msg: Buffer | Buffer[], port: number, address: string, cb?: (err: Error | null) => void) => void;

test('a GSO run libuv had to queue is not passed by the packets behind it', async (t) => {
  // GSO runs (sends of many buffers, > 5000 bytes) are held back a few ms, as libuv holds a
  // send that met a full send buffer, and their socket reports them queued meanwhile.
  const proto = dgram.Socket.prototype as unknown as { send: Send; getSendQueueCount(): number };
  const send = proto.send, count = proto.getSendQueueCount;
  const queued = new WeakMap<dgram.Socket, number>();
  let delayed = 0;
  proto.send = function (this: dgram.Socket, msg, port, address, cb) {
    if (Array.isArray(msg) && msg.length > 2 && msg.reduce((n, b) => n + b.length, 0) > 5000) {
      delayed++;
      queued.set(this, (queued.get(this) ?? 0) + 1);
      setTimeout(() => {
        queued.set(this, queued.get(this)! - 1);
        send.call(this, msg, port, address, cb);
      }, 3);
      return;
    }
    send.call(this, msg, port, address, cb);
  } as Send;
  proto.getSendQueueCount = function (this: dgram.Socket) { return (queued.get(this) ?? 0) + count.call(this); };
  t.after(() => { proto.send = send; proto.getSendQueueCount = count; });

  // A local ACK timeout of ~1 s (18): a retransmit here must come from a NAK, not from this
  // machine stalling past the 67 ms of timeout 14 under load (a CI run's flake).
  const { a, b, close } = await makePair(undefined, { device: { sendmmsg: false }, timeout: 18, retryCnt: 3 });
  t.after(close);
  // A 64 KiB WRITE: FIRST (with RETH) alone, the MIDDLEs as GSO runs, LAST alone behind them.
  const size = 64 << 10;
  const src = Buffer.alloc(size), dst = Buffer.alloc(size);
  const lmr = a.pd.regMr(src, Access.LOCAL_WRITE), rmr = b.pd.regMr(dst, Access.LOCAL_WRITE | Access.REMOTE_WRITE);
  for (let round = 0; round < 6; round++) {
    src.fill(round + 1);
    a.qp.postSend({ wrId: round, opcode: WrOpcode.RDMA_WRITE, sendFlags: SendFlags.SIGNALED, sgList: [lmr.sge()], rdma: { remoteAddr: rmr.addr, rkey: rmr.rkey } });
    const [wc] = await waitCompletions(a.cq, 1, 8000);
    assert.equal(wc!.status, WcStatus.SUCCESS);
    assert.ok(dst.equals(src), `round ${round}`);
  }
  assert.ok(delayed >= 3, `GSO runs held back: ${delayed}`);
  assert.equal(rxeOf(b.dev).counters.out_of_seq_request, 0, 'the responder saw every PSN in order');
  const qc = rxeOf(a.dev).qps.get(a.qp.qpn)!.counters;
  assert.deepEqual([qc.seq_naks_rcvd, qc.retransmits], [0, 0]);
});
