// What packets nobody vouches for can make the ICRC check keep or compute. Every source
// address and port is a flow with cached prefix CRCs, made before the ICRC is checked: the
// link bounds flows and cached prefixes across all peers (link.ts MAX_FLOWS, MAX_PREFIXES),
// a packet that fails the check caches nothing, and inferring an IPv4 Identification costs
// a few matrix-vector products whatever the packet's length (no matrix powers per length).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Access, QpType, SendFlags, WcStatus, WrOpcode, createRxeDevice, rxeOf } from '../../src/index.js';
import { connect, openSide, waitCompletions } from '../helpers/pair.js';
import { ipv4Bytes } from '../../src/abi/inet.js';
import { IcrcFlow, inferIpv4Id } from '../../src/providers/rxe/wire/icrc.js';
import type { RxeLink } from '../../src/providers/rxe/link.js';

const PEER = '127.0.0.9';

/** Flows and cached prefix CRCs the link holds, counted from its table (so this also runs against builds without icrcState). */
function held(link: RxeLink): { flows: number; prefixes: number } {
  const table = (link as unknown as { flows: Map<string, { flows: Map<number, IcrcFlow> }> }).flows;
  let flows = 0, prefixes = 0;
  for (const peer of table.values()) {
    for (const f of peer.flows.values()) {
      flows++;
      const x = f as unknown as { cached?: number; prefixCrc?: Map<number, number> };
      prefixes += x.cached ?? x.prefixCrc?.size ?? 0;
    }
  }
  return { flows, prefixes };
}

/** An RC SEND ONLY of `len` bytes to QP 0x11 (ICRC field left zero). */
function sendOnly(len: number): Buffer {
  const b = Buffer.alloc(len);
  b[0] = 0x04;
  b[1] = 0; // TVer 0
  b.writeUInt16BE(0xffff, 2);
  b.writeUInt32BE(0x11, 4);
  return b;
}

async function device() {
  const dev = await createRxeDevice({ address: '127.0.0.2', port: 0 });
  return { dev, link: rxeOf(dev).link };
}

test('packets that fail the ICRC check leave no cached prefix behind, from any number of ports and lengths', async (t) => {
  const { dev, link } = await device();
  t.after(() => dev.close());
  let bad = 0;
  for (let port = 20000; port < 22000; port++) {
    for (let k = 0; k < 40; k++) {
      const pkt = sendOnly(32 + 4 * k);
      pkt.writeUInt32LE((port * 40 + k) >>> 0, pkt.length - 4); // a made-up ICRC
      if (link.flow(PEER, false, port).check(pkt) === 'bad') bad++;
    }
  }
  assert.ok(bad > 79_000, `${bad} of 80000 made-up ICRCs failed (16 of 32 bits are checked)`);
  const h = held(link);
  assert.ok(h.prefixes <= 1000, `${h.prefixes} prefix CRCs cached for packets that failed (one per one that passed by chance at most)`);
  assert.ok(h.flows <= 65_536, `${h.flows} flows`);
});

test('the flow table stays bounded however many addresses and ports send', async (t) => {
  const { dev, link } = await device();
  t.after(() => dev.close());
  for (const addr of [PEER, '127.0.0.8']) for (let port = 1; port <= 40_000; port++) link.flow(addr, false, port);
  const h = held(link);
  assert.ok(h.flows <= 65_536 && h.flows > 0, `${h.flows} flows after 80000`);
});

test('flows and cached prefixes stay bounded across all peers and ports, also for packets whose ICRC holds', async (t) => {
  const { dev, link } = await device();
  t.after(() => dev.close());
  const peer = ipv4Bytes(PEER), local = ipv4Bytes('127.0.0.2');
  let ok = 0;
  for (let port = 30000; port < 33000; port++) {
    const sender = new IcrcFlow(4, peer, local, port, link.port);
    for (let k = 0; k < 30; k++) {
      const pkt = sendOnly(32 + 4 * k);
      sender.seal(pkt);
      if (link.flow(PEER, false, port).check(pkt) === 'ok') ok++;
    }
  }
  assert.equal(ok, 90_000);
  const h = held(link);
  assert.ok(h.prefixes <= 65_536, `${h.prefixes} prefix CRCs cached`);
  assert.ok(h.flows <= 65_536, `${h.flows} flows`);
  assert.deepEqual(link.icrcState, h, 'the link counts what it holds');
});

test('connections made and torn down by the thousand leave no flows behind but their ports\' (the pool\'s)', async (t) => {
  // As the rdma_cm makes and drops connections. Each QP used to send from a port of its own,
  // two new flows a side per connection, which stayed until the table held 65,536 (tens of MB,
  // old enough for the collector to copy); the QPs now share their device's pool of ports.
  const a = await openSide('127.0.0.2', 0);
  const b = await openSide('127.0.0.3', rxeOf(a.dev).port);
  t.after(async () => { await a.dev.close(); await b.dev.close(); });
  const la = rxeOf(a.dev).link, lb = rxeOf(b.dev).link;
  const sbuf = Buffer.from('sixteen bytes...'), rbuf = Buffer.alloc(64);
  const smr = a.pd.regMr(sbuf, Access.LOCAL_WRITE), rmr = b.pd.regMr(rbuf, Access.LOCAL_WRITE);
  const base = { a: held(la).flows, b: held(lb).flows };
  const cap = { maxSendWr: 4, maxRecvWr: 4, maxSendSge: 1, maxRecvSge: 1 };
  let most = 0;
  for (let i = 0; i < 200; i++) {
    const qa = a.pd.createQp({ qpType: QpType.RC, sendCq: a.cq, recvCq: a.cq, cap });
    const qb = b.pd.createQp({ qpType: QpType.RC, sendCq: b.cq, recvCq: b.cq, cap });
    connect(qa, { qpn: qb.qpn, gid: b.ctx.queryGid() }, { psn: 1, remotePsn: 2 });
    connect(qb, { qpn: qa.qpn, gid: a.ctx.queryGid() }, { psn: 2, remotePsn: 1 });
    qb.postRecv({ wrId: 1n, sgList: [rmr.sge()] });
    qa.postSend({ wrId: 2n, opcode: WrOpcode.SEND, sendFlags: SendFlags.SIGNALED, sgList: [smr.sge()] });
    const [sent] = await waitCompletions(a.cq, 1);
    const [got] = await waitCompletions(b.cq, 1);
    assert.equal(sent!.status, WcStatus.SUCCESS);
    assert.equal(got!.status, WcStatus.SUCCESS);
    // While the pair lives, its flows are there (the SEND, and the ACK back).
    most = Math.max(most, held(la).flows - base.a, held(lb).flows - base.b);
    qa.destroy();
    qb.destroy();
  }
  assert.ok(most >= 1, 'a live pair has flows of its own');
  const after = { a: held(la).flows - base.a, b: held(lb).flows - base.b };
  // Out to the peer from each of our 8 ports, in from each of its 8.
  assert.ok(after.a <= 16 && after.b <= 16, `flows left after 200 pairs came and went: ${JSON.stringify(after)} (each pair made two a side; 398 were left before 2026-12-05)`);
  assert.deepEqual(la.icrcState, held(la), 'the link counts what it holds');
  assert.deepEqual(lb.icrcState, held(lb), 'the link counts what it holds');
});

test('flows nobody uses are swept: a peer sending from a new port per connection (Linux rxe) leaves at most ~2048, and a flow in use stays the same object', async (t) => {
  const dev = await createRxeDevice({ address: '127.0.0.2', port: 0 });
  t.after(() => dev.close());
  const link = rxeOf(dev).link;
  const base = held(link).flows;
  const live = link.flow(PEER, false, 0xc001);
  let most = 0;
  for (let port = 0; port < 20_000; port++) {
    link.flow('127.0.0.10', false, 1024 + port);
    if (port % 100 === 0) assert.equal(link.flow(PEER, false, 0xc001), live, `the flow in use survived ${port} others`);
    most = Math.max(most, held(link).flows - base);
  }
  assert.ok(most <= 2 * 1024 + 64, `at most ${most} flows held at once`);
  assert.deepEqual(link.icrcState, held(link), 'the link counts what it holds');
});

test('the sweeps stay ahead of the table with flows in use: 200 live flows and 200,000 made and left never fill it', async (t) => {
  // Each sweep keeps what was made since the one before; sized from that alone, the next sweep
  // came later and later until the full table's reset (every live flow dropped) took over.
  const dev = await createRxeDevice({ address: '127.0.0.2', port: 0 });
  t.after(() => dev.close());
  const link = rxeOf(dev).link;
  const live = Array.from({ length: 200 }, (_, i) => link.flow(PEER, false, 0xc000 + i));
  let most = 0;
  for (let n = 0; n < 200_000; n++) {
    link.flow('127.0.0.10', false, 1024 + (n % 60_000), 0xc000 + (n / 60_000 | 0));
    if (n % 50 === 0) {
      for (let i = 0; i < live.length; i++) assert.equal(link.flow(PEER, false, 0xc000 + i), live[i], `live flow ${i} kept its object at ${n}`);
    }
    most = Math.max(most, held(link).flows);
  }
  assert.ok(most <= 4096, `at most ${most} flows held at once`);
});

test('inferring the Identification costs microseconds for any length, not a matrix power per length', () => {
  // Correct for lengths never seen (wire.test.ts checks every Identification on a few).
  for (const len of [100, 1234, 5000, 65_000]) {
    const pkt = Buffer.alloc(len, 0x5a);
    pkt[0] = 0x04;
    pkt[1] = 0;
    new IcrcFlow(4, ipv4Bytes('10.0.0.1'), ipv4Bytes('10.0.0.2'), 0xc000, 4791, 0xbeef).seal(pkt);
    assert.equal(new IcrcFlow(4, ipv4Bytes('10.0.0.1'), ipv4Bytes('10.0.0.2'), 0xc000, 4791).check(pkt), 0xbeef);
  }
  inferIpv4Id(1, 100); // its table of images is built once
  let best = Infinity;
  for (let round = 0; round < 3; round++) {
    const t0 = performance.now();
    for (let k = 0; k < 2000; k++) inferIpv4Id((k * 0x9e3779b1) >>> 0, 40 + 4 * k + round * 8000);
    best = Math.min(best, performance.now() - t0);
  }
  // ~2-5 us each here, against 50-90 us each with a matrix power per new length.
  assert.ok(best < 40, `2000 inferences for new lengths took ${best.toFixed(1)} ms`);
});
