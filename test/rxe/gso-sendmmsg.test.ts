// GSO runs by sendmmsg (mmsg-sender.ts, link.ts flush): a run of equal-size packets is one
// msghdr with a UDP_SEGMENT control message, staged with the flush's other datagrams for the
// port's own socket, so it leaves in the same system call and in order with them. After
// EAGAIN it goes to node:dgram packet by packet (node:dgram has no UDP_SEGMENT), each packet
// sealed again for a datagram of its own (IPv4 Identification 0, not its segment index); a run the
// kernel refuses as such (EIO: a route without checksum offload) is counted and that size goes
// packet by packet from then on; a run lost for a moment (ENETUNREACH) leaves GSO on.

import { describe, it, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { Access, SendFlags, WcStatus, WrOpcode, rxeOf } from '../../src/index.js';
import { MmsgSender, bindLibc, type SendSys } from '../../src/providers/rxe/mmsg-sender.js';
import { makePair, waitCompletions } from '../helpers/pair.js';
import { boundUdp, receiveDatagrams } from '../helpers/udp-sockets.js';

const libc = bindLibc();
const skip = libc ? false : 'sendmmsg needs Linux on a 64-bit CPU';
const EAGAIN = 11, EIO = 5, ENETUNREACH = 101;

/** Packet k of a run: a copied header, a payload view (by address), a copied tail; `len` bytes in all. */
function packet(k: number, len: number, big: Buffer): Buffer[] {
  return [Buffer.alloc(12, 0xa0 + k), big.subarray(k * 300, k * 300 + len - 16), Buffer.from([k, 1, 2, 3])];
}

/** The C library's sendmmsg behind `answer` (errno for a call, or undefined to make it), counting calls. */
function seam(answer: (call: number) => number | undefined = () => undefined): { sys: SendSys; calls: number[] } {
  const calls: number[] = [];
  let errno = 0;
  const sys: SendSys = {
    sendmmsg(fd, vec, vlen) {
      calls.push(vlen);
      const e = answer(calls.length);
      if (e !== undefined) { errno = e; return -1; }
      errno = 0;
      return libc!.sendmmsg(fd, vec, vlen);
    },
    errno: () => errno || libc!.errno(),
  };
  return { sys, calls };
}

describe('GSO runs in sendmmsg (the sender)', { skip }, () => {
  it('a run between two datagrams leaves in the same call, cut into its packets, in order and byte-exact', async (t) => {
    const rx = await boundUdp(), tx = await boundUdp();
    t.after(() => { rx.close(); tx.close(); });
    const big = Buffer.alloc(4096);
    for (let i = 0; i < big.length; i++) big[i] = (i * 13) & 0xff;
    const run = [packet(0, 200, big), packet(1, 200, big), packet(2, 120, big)];
    const { sys, calls } = seam();
    const s = MmsgSender.withSys(sys);
    let refused = -1, runSent = 0;
    const port = rx.address().port;
    const arrived = receiveDatagrams(rx, 5);
    assert.equal(s.add(tx, [Buffer.from('first')], '127.0.0.1', port), true);
    assert.equal(s.add(tx, run.flat(), '127.0.0.1', port, () => { runSent++; }, { size: 200, packets: run, onRefused: (e) => { refused = e; }, unrun: () => assert.fail('sent as a run') }), true);
    assert.equal(s.add(tx, [Buffer.from('last')], '127.0.0.1', port), true);
    s.commit();
    if (s.stats.errors > 0) { t.skip(`this kernel refuses UDP GSO sends (errno ${refused})`); return; }
    assert.deepEqual(calls, [3], 'one call for the three');
    const got = await arrived;
    assert.deepEqual(got.map((m) => m.toString('latin1')), [Buffer.from('first'), ...run.map((p) => Buffer.concat(p)), Buffer.from('last')].map((m) => m.toString('latin1')));
    await new Promise((r) => process.nextTick(r));
    assert.equal(runSent, 1, "the run's onSent ran once");
    // The slot of the run's msghdr, reused by a plain datagram longer than the run's segment
    // size: it carries no control message now, so it is not cut.
    rx.removeAllListeners('message');
    const whole = receiveDatagrams(rx, 2);
    const long = Buffer.alloc(500, 0x77);
    assert.equal(s.add(tx, [Buffer.from('x')], '127.0.0.1', port), true);
    assert.equal(s.add(tx, [long], '127.0.0.1', port), true);
    s.commit();
    assert.deepEqual((await whole).map((m) => m.length), [1, 500]);
  });

  it('after EAGAIN a run goes to node:dgram packet by packet, in order behind what was before it', async (t) => {
    const rx = await boundUdp(), tx = await boundUdp();
    t.after(() => { rx.close(); tx.close(); });
    const big = Buffer.alloc(4096, 0x42);
    const run = [packet(0, 300, big), packet(1, 300, big), packet(2, 300, big), packet(3, 50, big)];
    // The first call sends the first datagram only; the second finds the send buffer full.
    let n = 0;
    const { sys } = seam((call) => (call === 2 ? EAGAIN : undefined));
    const real = sys.sendmmsg;
    sys.sendmmsg = (fd, vec, vlen) => (++n === 1 ? real(fd, vec, 1) : real(fd, vec, vlen));
    const s = MmsgSender.withSys(sys);
    const port = rx.address().port;
    const arrived = receiveDatagrams(rx, 6);
    let runSent = 0;
    s.add(tx, [Buffer.from('a')], '127.0.0.1', port);
    let unrun = 0;
    s.add(tx, run.flat(), '127.0.0.1', port, () => { runSent++; }, { size: 300, packets: run, onRefused: () => assert.fail('not refused'), unrun: () => { unrun++; } });
    s.add(tx, [Buffer.from('z')], '127.0.0.1', port);
    s.commit();
    assert.equal(s.stats.fallbacks, 5, "the run's four packets and the last datagram, each a node:dgram send");
    assert.equal(s.holds(tx), true, 'node:dgram holds them for now');
    const got = await arrived;
    assert.deepEqual(got.map((m) => m.toString('latin1')), ['a', ...run.map((p) => Buffer.concat(p).toString('latin1')), 'z']);
    assert.equal(runSent, 1, "the run's onSent ran once, when its last packet left");
    assert.equal(unrun, 1, 'the run was told it goes packet by packet');
  });

  it('a refused run is counted and lost, says why, its onSent runs, and the datagram after it leaves', async (t) => {
    const rx = await boundUdp(), tx = await boundUdp();
    t.after(() => { rx.close(); tx.close(); });
    const big = Buffer.alloc(4096, 0x11);
    const run = [packet(0, 100, big), packet(1, 100, big)];
    const { sys, calls } = seam((call) => (call === 1 ? EIO : undefined));
    const s = MmsgSender.withSys(sys);
    const port = rx.address().port;
    const arrived = receiveDatagrams(rx, 1);
    const why: number[] = [];
    let runSent = 0;
    s.add(tx, run.flat(), '127.0.0.1', port, () => { runSent++; }, { size: 100, packets: run, onRefused: (e) => why.push(e), unrun: () => assert.fail('refused, not unrun') });
    s.add(tx, [Buffer.from('after')], '127.0.0.1', port);
    s.commit();
    assert.deepEqual(why, [EIO]);
    assert.equal(s.stats.errors, 1);
    assert.deepEqual(calls, [2, 1], 'the call that refused the run, then the rest');
    assert.deepEqual((await arrived).map((m) => m.toString()), ['after']);
    await new Promise((r) => process.nextTick(r));
    assert.equal(runSent, 1);
  });
});

type Send = (this: dgram.Socket, msg: Buffer | Buffer[], port: number, address: string, cb?: (err: Error | null) => void) => void;

/** node:dgram sends of a run (many buffers, > 5000 bytes): the GSO sockets' path, which these tests must not take. */
function watchDgramRuns(t: TestContext): { runs: number } {
  const seen = { runs: 0 };
  const proto = dgram.Socket.prototype as unknown as { send: Send };
  const orig = proto.send;
  proto.send = function (this: dgram.Socket, msg, port, address, cb) {
    if (Array.isArray(msg) && msg.reduce((n, b) => n + b.length, 0) > 5000) seen.runs++;
    orig.call(this, msg, port, address, cb);
  } as Send;
  t.after(() => { proto.send = orig; });
  return seen;
}

/**
 * The process's shared sender's system call, answered by `refuse` for calls whose first msghdr
 * is a run (it has a control message) instead of the kernel; undone when the test ends.
 */
function refuseRuns(t: TestContext, refuse: () => number | undefined): { refused: number } {
  const mm = MmsgSender.shared() as unknown as { sys: SendSys; view: Buffer; base: number };
  const orig = mm.sys;
  const seen = { refused: 0 };
  let errno = 0;
  mm.sys = {
    sendmmsg(fd, vec, vlen) {
      const controlLen = mm.view.readUInt32LE(vec - mm.base + 40);
      const e = controlLen > 0 ? refuse() : undefined;
      if (e !== undefined) { seen.refused++; errno = e; return -1; }
      errno = 0;
      return orig.sendmmsg(fd, vec, vlen);
    },
    errno: () => errno || orig.errno(),
  };
  t.after(() => { mm.sys = orig; });
  return seen;
}

async function writes(t: TestContext, rounds: number, fill: number) {
  const { a, b, close } = await makePair(undefined, { timeout: 14, retryCnt: 3 });
  t.after(close);
  const size = 256 << 10;
  const src = Buffer.alloc(size, fill), dst = Buffer.alloc(size);
  const lmr = a.pd.regMr(src, Access.LOCAL_WRITE), rmr = b.pd.regMr(dst, Access.LOCAL_WRITE | Access.REMOTE_WRITE);
  const c = rxeOf(a.dev).counters;
  const write = async (wrId: number) => {
    a.qp.postSend({ wrId, opcode: WrOpcode.RDMA_WRITE, sendFlags: SendFlags.SIGNALED, sgList: [lmr.sge()], rdma: { remoteAddr: rmr.addr, rkey: rmr.rkey } });
    assert.equal((await waitCompletions(a.cq, 1, 8000))[0]!.status, WcStatus.SUCCESS, `WRITE ${wrId}`);
  };
  for (let round = 0; round < rounds; round++) await write(round);
  return { c, write, same: () => dst.equals(src) };
}

test('256 KiB RDMA WRITEs: runs go by sendmmsg, none by a GSO socket, byte-exact', { skip }, async (t) => {
  const dg = watchDgramRuns(t);
  const { c, same } = await writes(t, 4, 3);
  assert.ok(same());
  assert.ok(c.gso_sends >= 4 * 4, `GSO sends: ${c.gso_sends}`);
  assert.equal(dg.runs, 0, 'no run went by node:dgram');
  assert.equal(c.send_err, 0);
});

test('a run refused as such (EIO) is counted, and that size then goes packet by packet', { skip }, async (t) => {
  const dg = watchDgramRuns(t);
  const seen = refuseRuns(t, () => EIO);
  const { c, write, same } = await writes(t, 3, 7);
  assert.ok(same());
  assert.ok(seen.refused >= 1, 'a run was tried and refused');
  assert.equal(c.send_err, seen.refused, 'each refused run counted in send_err');
  const refused = seen.refused, runs = c.gso_sends;
  await write(9);
  assert.ok(same());
  assert.equal(seen.refused, refused, 'no more runs of the refused size');
  assert.equal(c.gso_sends, runs, 'none staged');
  assert.equal(dg.runs, 0, 'nor sent by a GSO socket');
});

test('a run lost for a moment (ENETUNREACH) is a lost run, and runs go on', { skip }, async (t) => {
  let first = true;
  const seen = refuseRuns(t, () => { if (!first) return undefined; first = false; return ENETUNREACH; });
  const { c, write, same } = await writes(t, 3, 9);
  assert.equal(seen.refused, 1);
  assert.equal(c.send_err, 1);
  const runs = c.gso_sends;
  await write(9);
  assert.ok(c.gso_sends > runs, 'runs still go as GSO sends');
  assert.ok(same());
});

test('a run that meets a full send buffer goes packet by packet, each packet sealed for a datagram of its own', { skip }, async (t) => {
  // The send buffer fills exactly at each run: the msghdrs before it go, then EAGAIN.
  const mm = MmsgSender.shared() as unknown as { sys: SendSys; view: Buffer; base: number };
  const orig = mm.sys;
  let eagains = 0, errno = 0;
  mm.sys = {
    sendmmsg(fd, vec, vlen) {
      let plain = 0;
      while (plain < vlen && mm.view.readUInt32LE(vec - mm.base + plain * 64 + 40) === 0) plain++;
      errno = 0;
      if (plain > 0) return orig.sendmmsg(fd, vec, plain);
      eagains++;
      errno = EAGAIN;
      return -1;
    },
    errno: () => errno || orig.errno(),
  };
  t.after(() => { mm.sys = orig; });
  const { a, b, close } = await makePair(undefined, { timeout: 14, retryCnt: 3 });
  t.after(close);
  const size = 256 << 10;
  const src = Buffer.alloc(size, 5), dst = Buffer.alloc(size);
  const lmr = a.pd.regMr(src, Access.LOCAL_WRITE), rmr = b.pd.regMr(dst, Access.LOCAL_WRITE | Access.REMOTE_WRITE);
  for (let w = 0; w < 4; w++) {
    a.qp.postSend({ wrId: w, opcode: WrOpcode.RDMA_WRITE, sendFlags: SendFlags.SIGNALED, sgList: [lmr.sge()], rdma: { remoteAddr: rmr.addr, rkey: rmr.rkey } });
    assert.equal((await waitCompletions(a.cq, 1, 20_000))[0]!.status, WcStatus.SUCCESS, `WRITE ${w}`);
  }
  assert.ok(dst.equals(src));
  const ca = rxeOf(a.dev).counters, cb = rxeOf(b.dev).counters;
  assert.ok(eagains >= 4, `runs that met EAGAIN: ${eagains}`);
  assert.equal(cb.gro_datagrams, 0, 'no run arrived whole');
  // A kernel rxe or a NIC checks each packet's ICRC against its own IP header: softrdma's
  // receiver would take a packet sealed for Identification i by inferring i, and counts that.
  assert.equal(cb.icrc_id_inferred, 0, 'every packet sealed for Identification 0');
  assert.equal(ca.gso_sends, 0, 'no run counted as a GSO send');
  assert.equal(ca.send_err, 0);
});
