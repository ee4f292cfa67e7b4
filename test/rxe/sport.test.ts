// UDP source ports per QP, as Linux rxe chooses them: the formulas against values from a C
// transcription of the kernel's (hash_32, rdma_calc_flow_label, rdma_flow_label_to_udp_sport),
// and the ports packets really leave from, seen by the receiving device.

import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { describe, it } from 'node:test';
import { randomBytes } from 'node:crypto';
import fc from 'fast-check';
import { Access, QpType, SendFlags, WrOpcode, createRxeDevice, rxeOf, type QP } from '../../src/index.js';
import { connectedSourcePort, flowLabelOf, initialSourcePort, sourcePortOfFlowLabel } from '../../src/providers/rxe/wire/udp-sport.js';
import { DEFAULT_SOURCE_PORTS, groupBySender } from '../../src/providers/rxe/link.js';
import { connect, makePair as makeAnyPair, waitCompletions, type Side } from '../helpers/pair.js';

// Addresses of this file's own: the source ports follow from the QPNs, so another test's pair
// on 127.0.0.2 could hold the very port a test here checks is free (seen under npm test's two
// files at a time, when every device handed out QPN 0x11 first; rarer now that each starts
// at random, but possible).
const A = '127.0.0.46', B = '127.0.0.47';
const makePair = (qpType: number, device = {}) => makeAnyPair(qpType, { addresses: [A, B], device });

describe('source port formulas', () => {
  it('match the kernel\'s for fixed QPNs', () => {
    const init: Array<[number, number]> = [[0x11, 0xdf94], [0x12, 0xf806], [0x13, 0xd078], [0x3f, 0xc416], [0x1234, 0xfd8b], [0xabcdef, 0xe3ca], [0xffffff, 0xf94d]];
    for (const [qpn, port] of init) assert.equal(initialSourcePort(qpn).toString(16), port.toString(16), `qpn ${qpn.toString(16)}`);
    const conn: Array<[number, number, number, number]> = [
      [0x11, 0x12, 0x132, 0xc132], [0x11, 0x11, 0x121, 0xc121], [0xabcdef, 0x123456, 0xac3e3, 0xc3c8], [0xffffff, 0xffffff, 0xfff1e, 0xff21],
    ];
    for (const [l, r, fl, port] of conn) {
      assert.equal(flowLabelOf(l, r).toString(16), fl.toString(16));
      assert.equal(connectedSourcePort(0, l, r).toString(16), port.toString(16));
    }
    assert.equal(sourcePortOfFlowLabel(0x12345).toString(16), 'e341');
    assert.equal(connectedSourcePort(0x12345, 0x11, 0x12).toString(16), 'e341', 'an AV flow label wins over the QPNs');
  });

  it('are symmetric for a QP pair and stay in the dynamic range (property)', () => {
    fc.assert(fc.property(fc.integer({ min: 1, max: 0xffffff }), fc.integer({ min: 1, max: 0xffffff }), fc.integer({ min: 0, max: 0xfffff }), (l, r, fl) => {
      assert.equal(connectedSourcePort(0, l, r), connectedSourcePort(0, r, l));
      for (const p of [initialSourcePort(l), connectedSourcePort(fl, l, r)]) assert.ok(p >= 0xc000 && p <= 0xffff, `port ${p}`);
    }));
  });
});

/** Record the UDP source port of every packet a device receives. */
function recordPorts(dev: Parameters<typeof rxeOf>[0]): Set<number> {
  const link = rxeOf(dev).link;
  const seen = new Set<number>();
  const inner = link.onPacket;
  link.onPacket = (pkt, from, port, seg) => { seen.add(port); inner(pkt, from, port, seg); };
  return seen;
}

describe('packets on the wire', () => {
  it('an RC pair sends from one port derived from both QPNs, requests and ACKs alike, GSO runs included', async () => {
    const { a, b, close } = await makePair(QpType.RC);
    try {
      const want = connectedSourcePort(0, a.qp.qpn, b.qp.qpn);
      const atB = recordPorts(b.dev);
      const atA = recordPorts(a.dev);
      const src = randomBytes(512 << 10);
      const dst = Buffer.alloc(src.length);
      const smr = a.pd.regMr(src, 0);
      const rmr = b.pd.regMr(dst, Access.LOCAL_WRITE | Access.REMOTE_WRITE | Access.REMOTE_READ);
      for (let i = 0; i < 4; i++) {
        a.qp.postSend({ wrId: i, opcode: WrOpcode.RDMA_WRITE, sendFlags: SendFlags.SIGNALED, sgList: [smr.sge()], rdma: { remoteAddr: rmr.addr, rkey: rmr.rkey } });
      }
      await waitCompletions(a.cq, 4);
      assert.ok(dst.equals(src));
      assert.deepEqual([...atB], [want], 'requests at B');
      assert.deepEqual([...atA], [want], 'ACKs at A');
      assert.ok(rxeOf(a.dev).counters.gso_sends > 0, 'the runs went out as GSO sends');
      assert.deepEqual(rxeOf(a.dev).link.sourcePorts, [want], 'the port from create was given up for the connected one');
      assert.deepEqual(rxeOf(a.dev).link.boundSourcePorts, [want], 'a QP that sent has its socket');
      a.qp.destroy();
      assert.deepEqual(rxeOf(a.dev).link.sourcePorts, [], 'destroying the QP gives its port up (its socket stays in the pool)');
    } finally { await close(); }
  });

  it('an RC QP binds its port a turn after RTR (or at its first send): none for one that never gets there, the Linux port for one that does; device close closes them', async () => {
    const { a, b, close } = await makePair(QpType.RC);
    let closed = false;
    try {
      const want = connectedSourcePort(0, a.qp.qpn, b.qp.qpn);
      const la = rxeOf(a.dev).link, lb = rxeOf(b.dev).link;
      assert.deepEqual(la.sourcePorts, [want], 'the connected port is taken');
      assert.deepEqual(la.boundSourcePorts, [], 'but not bound in the turn of the move to RTR');
      assert.deepEqual(lb.boundSourcePorts, []);
      // A QP created and destroyed without reaching RTR never opens a socket.
      const spare = a.pd.createQp({ qpType: QpType.RC, sendCq: a.cq, recvCq: a.cq, cap: { maxSendWr: 1, maxRecvWr: 1 } });
      // It takes a port of the pool: a slot of its own, or the connected QP's (then shared).
      const ownSlot = initialSourcePort(spare.qpn) % DEFAULT_SOURCE_PORTS !== want % DEFAULT_SOURCE_PORTS;
      assert.equal(la.sourcePorts.length, ownSlot ? 2 : 1);
      await new Promise((r) => setImmediate(r));
      assert.deepEqual(la.boundSourcePorts, [want], 'the connected QP bound its port a turn after RTR, the one in RESET did not');
      assert.deepEqual(lb.boundSourcePorts, [want], 'and the peer, which will send its ACKs from it');
      spare.destroy();
      const smr = a.pd.regMr(Buffer.from('first'), 0);
      const rmr = b.pd.regMr(Buffer.alloc(64), Access.LOCAL_WRITE);
      b.qp.postRecv({ wrId: 1, sgList: [rmr.sge()] });
      a.qp.postSend({ wrId: 2, opcode: WrOpcode.SEND, sendFlags: SendFlags.SIGNALED, sgList: [smr.sge()] });
      const [wc] = await waitCompletions(a.cq, 1);
      assert.equal(wc!.status, 0);
      assert.deepEqual(la.boundSourcePorts, [want], 'the sender bound its port');
      assert.deepEqual(lb.boundSourcePorts, [want], 'and the responder, for its ACK');
      // The socket really sits on the Linux-computed port: binding it again without SO_REUSEADDR fails.
      const probe = dgram.createSocket('udp4');
      const err = await new Promise<NodeJS.ErrnoException | undefined>((resolve) => {
        probe.once('error', resolve);
        probe.bind({ address: A, port: want }, () => resolve(undefined));
      });
      probe.close();
      assert.equal(err?.code, 'EADDRINUSE', `port ${want} is held by the QP's socket`);
      // Closing the device closes the port's socket although the QP still holds it.
      await close();
      closed = true;
      assert.deepEqual(la.boundSourcePorts, []);
      await new Promise((r) => setImmediate(r));
      const again = dgram.createSocket('udp4');
      await new Promise<void>((resolve, reject) => { again.once('error', reject); again.bind({ address: A, port: want }, () => resolve()); });
      again.close();
    } finally { if (!closed) await close(); }
  });

  it('a UD QP sends from its create-time port; with per-QP ports off, everything leaves from the device port', async () => {
    const { a, b, close } = await makePair(QpType.UD);
    try {
      const atB = recordPorts(b.dev);
      const ah = a.pd.createAh({ grh: { dgid: b.ctx.queryGid(), hopLimit: 64 } });
      const rmr = b.pd.regMr(Buffer.alloc(4096), Access.LOCAL_WRITE);
      b.qp.postRecv({ wrId: 1, sgList: [rmr.sge()] });
      const smr = a.pd.regMr(Buffer.from('from my own port'), 0);
      a.qp.postSend({ wrId: 7, opcode: WrOpcode.SEND, sendFlags: SendFlags.SIGNALED, sgList: [smr.sge()], ud: { ah, remoteQpn: b.qp.qpn, remoteQkey: 0x11111111 } });
      await waitCompletions(b.cq, 1);
      assert.deepEqual([...atB], [initialSourcePort(a.qp.qpn)]);
    } finally { await close(); }
    process.env.SOFTRDMA_RXE_SPORT = '0';
    const off = await makePair(QpType.RC).finally(() => { delete process.env.SOFTRDMA_RXE_SPORT; });
    try {
      const atB = recordPorts(off.b.dev);
      const smr = off.a.pd.regMr(Buffer.from('x'), 0);
      off.b.qp.postRecv({ wrId: 1, sgList: [] });
      off.a.qp.postSend({ wrId: 1, opcode: WrOpcode.SEND, sendFlags: SendFlags.SIGNALED | SendFlags.INLINE, sgList: [smr.sge(0, 0)] });
      await waitCompletions(off.a.cq, 1);
      assert.deepEqual([...atB], [rxeOf(off.a.dev).port]);
      assert.deepEqual(rxeOf(off.a.dev).link.sourcePorts, []);
    } finally { await off.close(); }
  });

  it('a port another socket holds is counted, and the QP sends from the device port instead', async () => {
    // The pair's port is bound at its first send: hold it before that, without SO_REUSEADDR.
    const { a, b, close } = await makePair(QpType.RC);
    const holder = dgram.createSocket('udp4');
    try {
      const taken = connectedSourcePort(0, a.qp.qpn, b.qp.qpn);
      assert.deepEqual(rxeOf(a.dev).link.boundSourcePorts, [], 'no socket before the first send');
      await new Promise<void>((resolve, reject) => { holder.once('error', reject); holder.bind({ address: A, port: taken }, () => resolve()); });
      const atB = recordPorts(b.dev);
      const smr = a.pd.regMr(randomBytes(20_000), 0);
      const rmr = b.pd.regMr(Buffer.alloc(20_000), Access.LOCAL_WRITE);
      b.qp.postRecv({ wrId: 1, sgList: [rmr.sge()] });
      a.qp.postSend({ wrId: 1, opcode: WrOpcode.SEND, sendFlags: SendFlags.SIGNALED, sgList: [smr.sge()] });
      const [wc] = await waitCompletions(a.cq, 1);
      assert.equal(wc!.status, 0, 'the send completes although its first packets were lost with the refused socket');
      assert.ok(atB.has(rxeOf(a.dev).port), `packets from the device port: ${[...atB]}`);
      assert.equal(rxeOf(a.dev).counters.sport_unavailable, 1);
    } finally {
      holder.close();
      await close();
    }
  });
});

/** n more connected RC QP pairs on a pair's devices. */
function morePairs(a: Side, b: Side, n: number): Array<[QP, QP]> {
  const cap = { maxSendWr: 16, maxRecvWr: 16, maxSendSge: 1, maxRecvSge: 1 };
  const out: Array<[QP, QP]> = [];
  for (let i = 0; i < n; i++) {
    const qa = a.pd.createQp({ qpType: QpType.RC, sendCq: a.cq, recvCq: a.cq, cap });
    const qb = b.pd.createQp({ qpType: QpType.RC, sendCq: b.cq, recvCq: b.cq, cap });
    connect(qa, { qpn: qb.qpn, gid: b.ctx.queryGid() });
    connect(qb, { qpn: qa.qpn, gid: a.ctx.queryGid() });
    out.push([qa, qb]);
  }
  return out;
}

/** One SEND from each pair's first QP to its second; resolves when all have completed at both ends. */
async function sendOnEach(a: Side, b: Side, pairs: Array<[QP, QP]>): Promise<void> {
  const smr = a.pd.regMr(Buffer.from('pooled'), 0);
  const rmr = b.pd.regMr(Buffer.alloc(64), Access.LOCAL_WRITE);
  for (const [qa, qb] of pairs) {
    qb.postRecv({ wrId: 1, sgList: [rmr.sge()] });
    qa.postSend({ wrId: 1, opcode: WrOpcode.SEND, sendFlags: SendFlags.SIGNALED, sgList: [smr.sge()] });
  }
  const wcs = [...await waitCompletions(a.cq, pairs.length), ...await waitCompletions(b.cq, pairs.length)];
  assert.ok(wcs.every((wc) => wc.status === 0), 'every SEND completed');
}

describe('the pool of source ports', () => {
  it('QPs share the device\'s pool: 24 QPs send from at most its 4 ports, which stay open for the next QPs (no bind per QP)', async () => {
    const { a, b, close } = await makePair(QpType.RC, { sourcePorts: 4 });
    try {
      const la = rxeOf(a.dev).link, lb = rxeOf(b.dev).link;
      const atB = recordPorts(b.dev);
      // Enough pairs that their ports fill all four slots (ports follow from the QPNs, which
      // are handed out in order: 24 pairs can leave a slot empty).
      const first = morePairs(a, b, 24);
      const slots = () => new Set(first.map(([qa, qb]) => connectedSourcePort(0, qa.qpn, qb.qpn) % 4));
      while (slots().size < 4 && first.length < 400) first.push(...morePairs(a, b, 1));
      assert.equal(slots().size, 4, 'the pairs cover every slot');
      await sendOnEach(a, b, first);
      const pool = [...la.boundSourcePorts].sort();
      assert.ok(pool.length >= 1 && pool.length <= 4, `at most 4 sockets, got ${pool.length}`);
      assert.deepEqual([...atB].sort(), pool, 'every packet left from a pool port');
      assert.ok(pool.every((p) => p >= 0xc000 && p <= 0xffff), `ports in rxe's range: ${pool}`);
      assert.equal(new Set(pool.map((p) => p % 4)).size, pool.length, 'one port per slot');
      assert.ok(lb.boundSourcePorts.length <= 4, 'the responder\'s ACKs too');
      for (const [qa, qb] of first) { qa.destroy(); qb.destroy(); }
      assert.deepEqual(la.sourcePorts.filter((p) => p !== connectedSourcePort(0, a.qp.qpn, b.qp.qpn)), [], 'no QP of those holds a port now');
      assert.deepEqual([...la.boundSourcePorts].sort(), pool, 'the sockets stay in the pool');
      atB.clear();
      const next = morePairs(a, b, 24);
      await sendOnEach(a, b, next);
      assert.deepEqual([...la.boundSourcePorts].sort(), pool, 'the next QPs use the same sockets');
      assert.ok([...atB].every((p) => pool.includes(p)), `from the pool's ports: ${[...atB]}`);
      await close();
      assert.deepEqual(la.boundSourcePorts, [], 'closing the device closes the pool');
    } finally { await close(); }
  });

  it('a QP alone in its slot sends from its Linux port; QP1 keeps 55410 whatever the pool holds', async () => {
    const dev = await createRxeDevice({ address: A, port: 0, sourcePorts: 1 });
    try {
      const link = rxeOf(dev).link;
      const gsi = dev.openGsi(1);
      // With one slot every QP shares it; QP1's port is apart from the pool, exactly Linux's.
      const ctx = dev.open();
      const pd = ctx.allocPd();
      const cq = ctx.createCq(16);
      const qp = pd.createQp({ qpType: QpType.UD, sendCq: cq, recvCq: cq, cap: { maxSendWr: 1, maxRecvWr: 1 } });
      assert.deepEqual([...link.sourcePorts].sort(), [initialSourcePort(1), initialSourcePort(qp.qpn)].sort());
      gsi.close();
      assert.deepEqual(link.sourcePorts, [initialSourcePort(qp.qpn)], 'QP1\'s port closes with it, the QP\'s stays');
    } finally { await dev.close(); }
  });

  it('a slot held by an RC QP\'s port from create (not connected yet) is bound to the port of the connected QP that sends first', async () => {
    // One slot: every QP of the device shares it.
    const { a, b, close } = await makePair(QpType.RC, { sourcePorts: 1 });
    try {
      // The pair's own QPs never sent: destroyed, they leave the slot empty.
      a.qp.destroy();
      b.qp.destroy();
      assert.deepEqual(rxeOf(a.dev).link.sourcePorts, []);
      const pending = a.pd.createQp({ qpType: QpType.RC, sendCq: a.cq, recvCq: a.cq, cap: { maxSendWr: 1, maxRecvWr: 1 } });
      const [[qa, qb]] = morePairs(a, b, 1) as [[QP, QP]];
      const atB = recordPorts(b.dev);
      await sendOnEach(a, b, [[qa, qb]]);
      const linux = connectedSourcePort(0, qa.qpn, qb.qpn);
      assert.deepEqual([...atB], [linux], `from ${[...atB]}: the connected QP's Linux port ${linux}, not the pending QP's ${initialSourcePort(pending.qpn)}`);
      pending.destroy();
    } finally { await close(); }
  });

  it('sourcePorts is checked: an integer from 0 to 256, named in the error; 0 sends from the device port', async () => {
    for (const bad of [-1, 1.5, 257, '8', Number.NaN]) {
      await assert.rejects(createRxeDevice({ address: A, port: 0, sourcePorts: bad as number }), (e: NodeJS.ErrnoException & { attr?: string }) => e.code === 'EINVAL' && /sourcePorts/.test(e.message));
    }
    await assert.rejects(createRxeDevice({ address: A, port: 0, sourcePorts: 4, perQpSourcePort: false }), (e: NodeJS.ErrnoException) => e.code === 'EINVAL' && /perQpSourcePort/.test(e.message));
    const { a, b, close } = await makePair(QpType.RC, { sourcePorts: 0 });
    try {
      const atB = recordPorts(b.dev);
      await sendOnEach(a, b, [[a.qp, b.qp]]);
      assert.deepEqual([...atB], [rxeOf(a.dev).port]);
      assert.deepEqual(rxeOf(a.dev).link.boundSourcePorts, []);
    } finally { await close(); }
  });
});

describe('a flush in runs by socket', () => {
  type Q = Parameters<typeof groupBySender>[0];
  const port = (name: string, pooled = true) => ({ name, pooled, get sender() { return this; } });
  const pkt = (src: ReturnType<typeof port>, n: number) => ({ src, n }) as unknown as Q[number];
  const shape = (q: Q) => q.map((o) => `${(o.src as unknown as { name: string }).name}${(o as unknown as { n: number }).n}`).join(' ');

  it('groups interleaved ports by first appearance, each port\'s packets in their order; leaves runs alone', () => {
    const a = port('a'), b = port('b'), c = port('c');
    const q = [pkt(a, 1), pkt(b, 1), pkt(a, 2), pkt(c, 1), pkt(b, 2), pkt(a, 3), pkt(c, 2)];
    groupBySender(q);
    assert.equal(shape(q), 'a1 a2 a3 b1 b2 c1 c2');
    const runs = [pkt(b, 1), pkt(b, 2), pkt(a, 1), pkt(c, 1), pkt(c, 2)];
    const before = [...runs];
    groupBySender(runs);
    assert.deepEqual(runs, before, 'already in runs: untouched');
    // QP1's port (apart from the pool) or the device port: a DREQ stays behind the data before it.
    const qp1 = port('q', false);
    const withCm = [pkt(a, 1), pkt(qp1, 1), pkt(b, 1), pkt(a, 2)];
    const cmBefore = [...withCm];
    groupBySender(withCm);
    assert.deepEqual(withCm, cmBefore, 'a queue with a packet from outside the pool: untouched');
  });

  it('keeps every packet and each port\'s order (property)', () => {
    fc.assert(fc.property(fc.array(fc.integer({ min: 0, max: 4 }), { minLength: 1, maxLength: 60 }), (which) => {
      const ports = [0, 1, 2, 3, 4].map((i) => port(`p${i}`));
      const q = which.map((w, i) => pkt(ports[w]!, i));
      const before = [...q];
      groupBySender(q);
      assert.equal(q.length, before.length);
      assert.deepEqual(new Set(q), new Set(before));
      for (const p of ports) {
        const mine = (x: Q) => x.filter((o) => o.src === (p as unknown)).map((o) => (o as unknown as { n: number }).n);
        assert.deepEqual(mine(q), mine(before));
      }
      let switches = 0;
      for (let i = 1; i < q.length; i++) if (q[i]!.src !== q[i - 1]!.src) switches++;
      assert.equal(switches, new Set(which).size - 1, 'one run per port');
    }));
  });
});
