// The sendmmsg sender (mmsg-sender.ts): datagrams staged for one socket leave in one call,
// byte-exact and in order, whatever mix of copied and by-address parts they have; a change of
// socket sends what was staged first; a full send buffer hands the rest to node:dgram and keeps
// the socket node:dgram's until those have left (also when the batch filled up mid-flush); a
// datagram the kernel refuses is counted, its onSent still runs (as node:dgram runs a failed
// send's callback) and the others still leave; sockets node:dgram may hold datagrams for, and
// closed ones, are never sent to directly.

import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { once } from 'node:events';
import { describe, it } from 'node:test';
import { MmsgSender, bindLibc, type SendSys } from '../../src/providers/rxe/mmsg-sender.js';
import { boundUdp, receiveDatagrams } from '../helpers/udp-sockets.js';

const libc = bindLibc();
const skip = libc ? false : 'sendmmsg needs Linux on a 64-bit CPU';

/** A receiving and a sending socket on loopback, closed after fn. */
async function withPair(fn: (rx: dgram.Socket, tx: dgram.Socket) => Promise<void>, type: 'udp4' | 'udp6' = 'udp4'): Promise<void> {
  const address = type === 'udp4' ? '127.0.0.1' : '::1';
  const rx = await boundUdp(type, address);
  const tx = await boundUdp(type, address);
  try {
    await fn(rx, tx);
  } finally {
    rx.close();
    tx.close();
  }
}

/** Stage each datagram for tx (each must be taken), commit, and check they all arrived at rx byte-exact and in order. */
async function stageAll(s: MmsgSender, tx: dgram.Socket, rx: dgram.Socket, datagrams: Buffer[][]): Promise<void> {
  rx.removeAllListeners('message');
  const arrived = receiveDatagrams(rx, datagrams.length);
  const to = rx.address();
  for (const parts of datagrams) assert.equal(s.add(tx, parts, to.address, to.port), true);
  s.commit();
  assert.deepEqual(await arrived, datagrams.map((p) => Buffer.concat(p)));
}

/** Datagram k: a small header, a by-address payload view into a shared buffer, a small tail. */
function datagram(k: number, big: Buffer): Buffer[] {
  const hdr = Buffer.alloc(28, k & 0xff); // small: on V8's heap until its buffer is asked for
  const len = 256 + ((k * 97) % 1200);
  const payload = big.subarray(k * 7, k * 7 + len);
  const tail = Buffer.from([k, k >> 8, 0xee, 0xff]);
  return [hdr, payload, tail];
}

function pattern(n: number): Buffer {
  const b = Buffer.allocUnsafe(n);
  for (let i = 0; i < n; i++) b[i] = (i * 31 + 7) & 0xff;
  return b;
}

/** A sender over the C library's sendmmsg, counting calls; `fail(call, first)` may answer -1 with an errno instead. */
function counting(fail?: (call: number, vec: number) => number | undefined): { sys: SendSys; calls: number[] } {
  const calls: number[] = [];
  let errno = 0;
  const sys: SendSys = {
    sendmmsg(fd, vec, vlen) {
      calls.push(vlen);
      const e = fail?.(calls.length, vec);
      if (e !== undefined) { errno = e; return -1; }
      return libc!.sendmmsg(fd, vec, vlen);
    },
    errno: () => errno || libc!.errno(),
  };
  return { sys, calls };
}

describe('rxe sendmmsg sender', { skip }, () => {
  it('sends a socket run of datagrams in one call, byte-exact and in order; onSent after the call', async () => {
    await withPair(async (rx, tx) => {
      const { sys, calls } = counting();
      const s = MmsgSender.withSys(sys);
      const big = pattern(64 << 10);
      const want: Buffer[] = [];
      const arrived = receiveDatagrams(rx, 40);
      let sent = 0;
      for (let k = 0; k < 40; k++) {
        const parts = datagram(k, big);
        want.push(Buffer.concat(parts));
        assert.equal(s.add(tx, parts, '127.0.0.1', rx.address().port, () => { sent++; }), true);
      }
      assert.equal(calls.length, 0, 'nothing leaves before the commit');
      s.commit();
      assert.deepEqual(calls, [40]);
      assert.equal(sent, 0, 'onSent waits for the next tick');
      await new Promise((r) => process.nextTick(r));
      assert.equal(sent, 40);
      const got = await arrived;
      assert.deepEqual(got, want);
    });
  });

  it('cuts calls at 64 datagrams, and when the copy area is full, in order', async () => {
    await withPair(async (rx, tx) => {
      const { sys, calls } = counting();
      const s = MmsgSender.withSys(sys);
      // 150 one-part datagrams of 100 copied bytes: 64 a call.
      await stageAll(s, tx, rx, Array.from({ length: 150 }, (_, k) => [Buffer.alloc(100, k)]));
      assert.deepEqual(calls, [64, 64, 22]);
      // 100 datagrams of two 250-byte parts (both copied): the 16 KiB area holds 32 of them.
      calls.length = 0;
      await stageAll(s, tx, rx, Array.from({ length: 100 }, (_, k) => [Buffer.alloc(250, k), Buffer.alloc(250, 255 - k)]));
      assert.deepEqual(calls, [32, 32, 32, 4]);
    });
  });

  it('sends what was staged for one socket before staging for another', async () => {
    const rx = await boundUdp('udp4', '127.0.0.1');
    const a = await boundUdp('udp4', '127.0.0.1');
    const b = await boundUdp('udp4', '127.0.0.1');
    const { sys, calls } = counting();
    const s = MmsgSender.withSys(sys);
    try {
      const arrived = receiveDatagrams(rx, 6);
      const from: number[] = [];
      rx.on('message', (_m, r) => from.push(r.port));
      const seq = [a, a, b, a, b, b];
      seq.forEach((sock, k) => assert.equal(s.add(sock, [Buffer.from([k])], '127.0.0.1', rx.address().port), true));
      s.commit();
      assert.deepEqual(calls, [2, 1, 1, 2]);
      const got = await arrived;
      assert.deepEqual(got.map((m) => m[0]), [0, 1, 2, 3, 4, 5]);
      assert.deepEqual(from, seq.map((x) => x.address().port));
    } finally {
      for (const x of [rx, a, b]) x.close();
    }
  });

  it('a full send buffer: the rest goes by node:dgram, and the socket stays its until they left', async () => {
    await withPair(async (rx, tx) => {
      const EAGAIN = 11;
      // The first call sends two of five, the second finds the buffer full.
      let first = true;
      const { sys, calls } = counting((call) => (call === 2 ? EAGAIN : undefined));
      const real = sys.sendmmsg;
      sys.sendmmsg = (fd, vec, vlen) => {
        if (first) { first = false; return real(fd, vec, 2); }
        return real(fd, vec, vlen);
      };
      const s = MmsgSender.withSys(sys);
      const arrived = receiveDatagrams(rx, 6);
      let sent = 0;
      for (let k = 0; k < 5; k++) assert.equal(s.add(tx, [Buffer.from([k])], '127.0.0.1', rx.address().port, () => { sent++; }), true);
      s.commit();
      assert.equal(s.stats.fallbacks, 3);
      // node:dgram may still hold those three: a sixth must queue behind them.
      assert.equal(s.add(tx, [Buffer.from([5])], '127.0.0.1', rx.address().port), false);
      tx.send(Buffer.from([5]), rx.address().port, '127.0.0.1');
      const got = await arrived;
      assert.deepEqual(got.map((m) => m[0]), [0, 1, 2, 3, 4, 5]);
      assert.equal(sent, 5, 'every onSent ran');
      assert.equal(s.add(tx, [Buffer.from([6])], '127.0.0.1', rx.address().port), true, 'direct again once they left');
      s.commit();
      assert.equal(calls.length, 3);
    });
  });

  it('a full send buffer when the batch filled up mid-flush: nothing overtakes what node:dgram queued', async () => {
    await withPair(async (rx, tx) => {
      const EAGAIN = 11;
      const { sys, calls } = counting((call) => (call === 2 ? EAGAIN : undefined));
      const real = sys.sendmmsg;
      let n = 0;
      // The 64-datagram batch: the first call sends 10 of them, the second finds the buffer full.
      sys.sendmmsg = (fd, vec, vlen) => (++n === 1 ? real(fd, vec, 10) : real(fd, vec, vlen));
      const s = MmsgSender.withSys(sys);
      const arrived = receiveDatagrams(rx, 70);
      const byDgram: number[] = [];
      for (let k = 0; k < 70; k++) {
        // As the link does: what the sender does not take goes by node:dgram, in order.
        if (!s.add(tx, [Buffer.from([k])], '127.0.0.1', rx.address().port)) {
          byDgram.push(k);
          tx.send(Buffer.from([k]), rx.address().port, '127.0.0.1');
        }
      }
      s.commit();
      assert.deepEqual(calls, [10, 54], "a call of 64 that sent 10, then EAGAIN for the other 54");
      assert.equal(s.stats.fallbacks, 54);
      assert.deepEqual(byDgram, [64, 65, 66, 67, 68, 69], 'held by node:dgram after the EAGAIN');
      assert.deepEqual((await arrived).map((m) => m[0]), Array.from({ length: 70 }, (_, k) => k));
    });
  });

  it('a refused datagram is counted and lost, its onSent still runs, no error event; the ones after it leave', async () => {
    await withPair(async (rx, tx) => {
      const EPERM = 1;
      const { sys } = counting((call) => (call === 2 ? EPERM : undefined));
      const real = sys.sendmmsg;
      let n = 0;
      // Call 1 sends the first two and stops (as the kernel does before a failing datagram),
      // call 2 refuses the third, call 3 sends the rest.
      sys.sendmmsg = (fd, vec, vlen) => (++n === 1 ? real(fd, vec, 2) : real(fd, vec, vlen));
      const s = MmsgSender.withSys(sys);
      const errors: Error[] = [];
      tx.on('error', (e) => errors.push(e));
      const arrived = receiveDatagrams(rx, 4);
      const sent: number[] = [];
      for (let k = 0; k < 5; k++) assert.equal(s.add(tx, [Buffer.from([k])], '127.0.0.1', rx.address().port, () => sent.push(k)), true);
      s.commit();
      assert.equal(s.stats.errors, 1);
      assert.deepEqual((await arrived).map((m) => m[0]), [0, 1, 3, 4]);
      assert.deepEqual(sent, [0, 1, 2, 3, 4]);
      assert.deepEqual(errors, []);
    });
  });

  it('a socket closed with datagrams staged: they are dropped (counted), their onSent runs, nothing is sent', async () => {
    const tx = await boundUdp('udp4', '127.0.0.1');
    const { sys, calls } = counting();
    const s = MmsgSender.withSys(sys);
    let sent = 0;
    for (let k = 0; k < 3; k++) assert.equal(s.add(tx, [Buffer.from([k])], '127.0.0.1', 9, () => { sent++; }), true);
    tx.close();
    s.commit();
    assert.deepEqual(calls, []);
    assert.equal(s.stats.errors, 3);
    await new Promise((r) => process.nextTick(r));
    assert.equal(sent, 3);
  });

  it('leaves unbound, binding and closed sockets, zoned addresses and the other family to node:dgram', async () => {
    const s = MmsgSender.withSys(counting().sys);
    try {
      const fresh = dgram.createSocket('udp4');
      assert.equal(s.add(fresh, [Buffer.from([1])], '127.0.0.1', 9), false, 'unbound');
      fresh.bind(0, '127.0.0.1');
      fresh.send(Buffer.from([1]), 9, '127.0.0.1'); // queued by node:dgram until the bind is done
      assert.equal(s.add(fresh, [Buffer.from([1])], '127.0.0.1', 9), false, 'binding, with a queued send');
      await once(fresh, 'listening');
      await new Promise((r) => setImmediate(r));
      assert.equal(s.add(fresh, [Buffer.from([1])], 'fe80::1%lo', 9), false, 'zoned address');
      assert.equal(s.add(fresh, [Buffer.from([1])], '::1', 9), false, 'an IPv6 address on a udp4 socket');
      const rx = await boundUdp('udp4', '127.0.0.1');
      const got = receiveDatagrams(rx, 1);
      assert.equal(s.add(fresh, [Buffer.from([2])], '127.0.0.1', rx.address().port), true, 'bound');
      s.commit();
      assert.deepEqual((await got).map((m) => m[0]), [2]);
      rx.close();
      fresh.close();
      assert.equal(s.add(fresh, [Buffer.from([3])], '127.0.0.1', 9), false, 'closed');
    } finally {
    }
  });

  it('sends to IPv6 peers', async () => {
    await withPair(async (rx, tx) => {
      const s = MmsgSender.withSys(counting().sys);
      const big = pattern(4096);
      await stageAll(s, tx, rx, [[Buffer.from('v6'), big.subarray(0, 3000)], [big.subarray(100, 400)]]);
    }, 'udp6');
  });
});
