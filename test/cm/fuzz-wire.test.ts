// Malformed MADs against a live device with listeners (rdma_cm, TCP and UDP port spaces):
// 100,000 through the MAD layer's receive entry point (what QP1 hands it) and 100,000 over the
// real UDP path, as RoCEv2 UD packets to QP1 with a correct ICRC from a hostile device (its link
// builds the packets as any peer's would). They are random bytes, random bodies under a CM
// header, mutated valid CM messages (base version, class, class version, method, attribute id,
// status, lengths in the body, private data, the RDMA CM header of REQs to the listener, single
// byte flips), messages for unknown comm ids (REJ, DREQ, REP, RTU, MRA, DREP), SIDR_REQs; over
// UDP also payloads of another size and another Q_Key. Then: the process is up, every MAD is in
// exactly one counter, a normal connection still connects and disconnects, and the CM's tables,
// the ids and the comm ids are empty once the listeners are gone. Seeded: a failure names its seed.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { createRxeDevice, rxeOf, type Device } from '../../src/index.js';
import { createEventChannel, createId, type RdmaCmEvent, type RdmaCmId } from '../../src/cm/index.js';
import { cmDevices } from '../../src/cm/rdma-cm/cm-device.js';
import { MadLayer } from '../../src/cm/mad-layer.js';
import { CM_KINDS, blankCm, encodeCmMad, type CmKind, type CmMessage } from '../../src/cm/wire/cm-messages.js';
import { encodeCmaHeader, serviceIdFor, PortSpace } from '../../src/cm/wire/cma-header.js';
import type { GsiSource } from '../../src/verbs/api.js';
import { waitFor } from '../helpers/pair.js';
import { udToQp1 } from '../helpers/qp1-packet.js';

const SEED = Number(process.env.FUZZ_SEED ?? Date.now() % 1e9);
const N_ENTRY = Number(process.env.FUZZ_ENTRY ?? 100_000);
const N_WIRE = Number(process.env.FUZZ_WIRE ?? 100_000);

/** mulberry32: a small seeded generator. */
function rng(seed: number) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return { next, int: (n: number) => Math.floor(next() * n), bytes: (n: number) => Buffer.from(Array.from({ length: n }, () => Math.floor(next() * 256))) };
}

type Rng = ReturnType<typeof rng>;

/** One malformed (or hostile) MAD of 256 bytes. */
function fuzzMad(r: Rng, target: { port: number; udpPort: number; addr: string }): Buffer {
  const pick = r.int(100);
  if (pick < 10) return r.bytes(256);
  if (pick < 30) {
    // a CM header (base 1, class 7, version 2, SEND) over a random body and attribute id
    const b = r.bytes(256);
    b[0] = 1; b[1] = 7; b[2] = 2; b[3] = 3;
    b.writeUInt16BE(0x10 + r.int(12), 16);
    return b;
  }
  const kind = CM_KINDS[r.int(CM_KINDS.length)]! as CmKind;
  const msg = { ...blankCm(kind), localCommId: r.int(2 ** 32), remoteCommId: r.int(2 ** 32) } as CmMessage & Record<string, unknown>;
  if (msg.kind === 'REQ' || msg.kind === 'SIDR_REQ') {
    // often at the listeners, with an RDMA CM header that may or may not name them
    const atListener = r.int(2) === 0;
    (msg as Record<string, unknown>).serviceId = atListener ? serviceIdFor(msg.kind === 'REQ' ? PortSpace.TCP : PortSpace.UDP, msg.kind === 'REQ' ? target.port : target.udpPort) : BigInt(r.int(2 ** 32)) << BigInt(r.int(33));
    const pd = Buffer.alloc(msg.kind === 'REQ' ? 92 : 216);
    const hdr = encodeCmaHeader({ ipVersion: 4, srcPort: r.int(65536), srcAddr: '127.0.0.4', dstAddr: r.int(3) === 0 ? '127.0.0.9' : target.addr });
    hdr.copy(pd);
    if (r.int(3) === 0) pd[r.int(36)] ^= 1 << r.int(8); // a broken RDMA CM header
    (msg as Record<string, unknown>).privateData = pd;
    if (msg.kind === 'REQ') Object.assign(msg, { localQpn: r.int(1 << 24), startingPsn: r.int(1 << 24), pathMtu: r.int(8), primaryLocalLid: r.int(65536) });
  } else if (msg.kind === 'REJ') {
    Object.assign(msg, { reason: r.int(40), rejectedInfoLength: r.int(128), messageRejected: r.int(4) });
  } else if (msg.kind === 'MRA') {
    Object.assign(msg, { messageMraed: r.int(4) });
  } else if (msg.kind === 'SIDR_REP') {
    Object.assign(msg, { status: r.int(8), additionalInfoLength: r.int(256) });
  }
  let b: Buffer;
  try {
    b = encodeCmMad(msg, BigInt(r.int(2 ** 32)) << 32n | BigInt(r.int(2 ** 32)));
  } catch {
    b = r.bytes(256); // a field the encoder refused: random instead
  }
  // then the mutation
  switch (r.int(10)) {
    case 0: b[0] = r.int(256); break; // base version
    case 1: b[1] = r.int(256); break; // management class
    case 2: b[2] = r.int(256); break; // class version
    case 3: b[3] = r.int(256); break; // method
    case 4: b.writeUInt16BE(r.int(65536), 16); break; // attribute id
    case 5: b.writeUInt16BE(r.int(65536), 4); break; // status
    case 6: for (let i = 0, n = 1 + r.int(4); i < n; i++) b[r.int(256)] ^= 1 << r.int(8); break;
    case 7: r.bytes(232).copy(b, 24); break; // the whole body
    default: break; // as encoded: a message for an unknown comm id, a REQ at the listener, ...
  }
  return b;
}


async function devices(): Promise<{ v: Device; c: Device; h: Device }> {
  for (let attempt = 0; ; attempt++) {
    const v = await createRxeDevice({ address: '127.0.0.2', port: 0 });
    try {
      const port = rxeOf(v).port;
      return { v, c: await createRxeDevice({ address: '127.0.0.3', port }), h: await createRxeDevice({ address: '127.0.0.4', port }) };
    } catch (err) {
      await v.close();
      if ((err as { code?: string }).code !== 'EADDRINUSE' || attempt > 5) throw err;
    }
  }
}

test(`${N_ENTRY} malformed MADs at the MAD layer and ${N_WIRE} over UDP: counted, no crash, a connection still works, nothing left (seed ${SEED})`, { timeout: 120_000 }, async () => {
  const t0 = Date.now();
  const r = rng(SEED);
  const { v, c, h } = await devices();
  const ch = createEventChannel();
  const timing = { packetLifeTime: 1, cmResponseTimeout: 14, maxCmRetries: 2 };
  const lt = createId(ch, 'tcp', timing);
  lt.bindAddr('127.0.0.2', 0);
  lt.listen(16);
  const lu = createId(ch, 'udp', timing);
  lu.bindAddr('127.0.0.2', 0);
  lu.listen(16);
  const target = { port: lt.localAddr!.port, udpPort: lu.localAddr!.port, addr: '127.0.0.2' };
  // A fuzzed REQ that makes it to the listener is refused, as an application would.
  let requests = 0;
  let fuzzing = true;
  const fuzzIds = new Set<RdmaCmId>();
  ch.on('event', (e: RdmaCmEvent) => {
    if (fuzzing && e.event === 'CONNECT_REQUEST' && (e.listenId === lt || e.listenId === lu)) {
      requests++;
      try { e.id.reject(); } catch { /* already gone */ }
      e.id.destroyId();
      fuzzIds.add(e.id);
    }
  });
  const layer = MadLayer.of(v);
  const agent = cmDevices().find((d) => d.device === v)!.agent;
  const lc = layer.counters, ac = agent.counters, rc = rxeOf(v).counters;
  const sum = (o: Record<string, number>) => Object.values(o).reduce((a, b) => a + b, 0);
  const placed = () => lc.invalid_drops + lc.unclaimed_drops + lc.unmatched_response_drops + lc.unsupported_answered + lc.agent_errors + ac.rx_malformed + sum(ac.rx_msgs);
  try {
    // 1. the MAD layer's receive entry point (QP1's onMad), 10^5
    const src: GsiSource = { sgid: Buffer.from(h.open().queryGid()), address: '127.0.0.4', dgid: Buffer.from(layer.gid), srcQp: 1, pkeyIndex: 0, udpSourcePort: 0xc000 } as GsiSource;
    const receive = (layer as unknown as { receive(b: Buffer, s: GsiSource): void }).receive.bind(layer);
    const rcvd0 = lc.rcvd, placed0 = placed();
    for (let i = 0; i < N_ENTRY; i++) {
      receive(fuzzMad(r, target), src);
      if (i % 2000 === 1999) await new Promise((res) => setImmediate(res)); // let the answers go out
    }
    assert.equal(lc.rcvd - rcvd0, N_ENTRY);
    assert.equal(placed() - placed0, N_ENTRY, `every MAD in one counter: ${JSON.stringify({ lc, malformed: ac.rx_malformed, msgs: ac.rx_msgs })}`);
    assert.equal(lc.agent_errors, 0, 'no handler threw');
    const entryMs = Date.now() - t0;

    // 2. over UDP from the hostile device: RoCEv2 packets to QP1, ICRC by its link; paced so no
    //    datagram is lost in a socket buffer (each batch received before the next goes)
    const link = rxeOf(h).link;
    const w0 = { mads: rc.gsi_rcvd_mads, size: rc.gsi_malformed_drops, qkey: rc.gsi_qkey_drops, rcvd: lc.rcvd, placed: placed() };
    const t1 = Date.now();
    let sent = 0, badSize = 0, badQkey = 0;
    while (sent < N_WIRE) {
      const batch = Math.min(200, N_WIRE - sent);
      for (let i = 0; i < batch; i++) {
        const k = r.int(100);
        let mad = fuzzMad(r, target);
        let qkey = 0x80010000;
        if (k === 0) { mad = Buffer.concat([mad, r.bytes(4 * (1 + r.int(8)))]); badSize++; } else if (k === 1) { mad = mad.subarray(0, 4 * r.int(64)); badSize++; } else if (k === 2) { qkey = r.int(2 ** 32) | 1; badQkey++; }
        link.send(udToQp1(mad, qkey), '127.0.0.2');
      }
      sent += batch;
      await waitFor(`batch ending at ${sent}`, () => rc.gsi_rcvd_mads - w0.mads + rc.gsi_malformed_drops - w0.size + rc.gsi_qkey_drops - w0.qkey >= sent);
    }
    const wireMs = Date.now() - t1;
    assert.equal(rc.gsi_malformed_drops - w0.size, badSize);
    assert.equal(rc.gsi_qkey_drops - w0.qkey, badQkey);
    assert.equal(rc.gsi_rcvd_mads - w0.mads, N_WIRE - badSize - badQkey);
    assert.equal(lc.rcvd - w0.rcvd, N_WIRE - badSize - badQkey);
    assert.equal(placed() - w0.placed, N_WIRE - badSize - badQkey);
    assert.equal(rc.gsi_handler_errors, 0);
    assert.equal(lc.agent_errors, 0);

    // 3. a normal connection still works
    fuzzing = false;
    const cch = createEventChannel();
    const id = createId(cch, 'tcp', timing);
    id.resolveAddr({ address: '127.0.0.2', port: target.port }, '127.0.0.3');
    await cch.next('ADDR_RESOLVED', 5000, id);
    id.resolveRoute();
    await cch.next('ROUTE_RESOLVED', 5000, id);
    const served = new Promise<RdmaCmId>((resolve) => ch.on('event', (e: RdmaCmEvent) => {
      if (e.event === 'CONNECT_REQUEST' && !fuzzIds.has(e.id) && e.conn?.privateData?.[0] === 0x42) resolve(e.id);
    }));
    const withQp = (x: RdmaCmId) => {
      const pd = x.verbs!.allocPd();
      const cq = x.verbs!.createCq(8);
      x.createQp(pd, { sendCq: cq, recvCq: cq, cap: { maxSendWr: 2, maxRecvWr: 2, maxSendSge: 1, maxRecvSge: 1 } });
      return () => { x.destroyQp(); cq.destroy(); pd.dealloc(); };
    };
    const freeA = withQp(id);
    id.connect({ privateData: Buffer.from([0x42]) });
    const child = await Promise.race([served, cch.next(['REJECTED', 'UNREACHABLE', 'CONNECT_ERROR'], 10_000, id).then((e) => { throw new Error(`the client got ${e.event} (status ${e.status}) before its request reached the listener`); })]);
    const freeB = withQp(child);
    child.accept();
    const est = await cch.next(undefined, 10_000, id);
    assert.equal(est.event, 'ESTABLISHED', `status ${est.status}`);
    id.disconnect();
    assert.equal((await cch.next('DISCONNECTED', 10_000, id)).event, 'DISCONNECTED');
    freeA();
    freeB();
    id.destroyId();
    child.destroyId();
    cch.close();

    // 4. nothing left once the listeners are gone (time-wait here is short: packet life 1)
    lt.destroyId();
    lu.destroyId();
    await waitFor('empty CM tables', () => cmDevices().every((d) => { const s = d.census(); return s.commIds === 0 && s.ids === 0 && s.agentConnections === 0; }), 20_000);
    process.stderr.write(`fuzz: seed ${SEED}; ${N_ENTRY} at the MAD layer in ${entryMs} ms, ${N_WIRE} over UDP in ${wireMs} ms (${Math.round(N_WIRE / (wireMs / 1000))}/s); ${requests} fuzzed REQs reached a listener and were refused; ` +
      `CM: ${JSON.stringify({ malformed: ac.rx_malformed, msgs: ac.rx_msgs, unexpected: ac.rx_unexpected, noListener: ac.rx_no_listener, stale: ac.rx_stale })}; MAD layer: ${JSON.stringify(lc)}\n`);
  } finally {
    ch.close();
    await v.close();
    await c.close();
    await h.close();
  }
});
