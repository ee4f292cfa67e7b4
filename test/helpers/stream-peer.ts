// One end of a byte-exact RC stream test, run as its own process (the netns test starts one
// in each namespace). The sender moves `--mib` MiB as 1 MiB chunks, by RDMA WRITE_WITH_IMM
// into a ring of slots or by SEND into posted receives; the receiver checks every chunk
// against the same AES-CTR keystream and returns a credit per chunk. Prints one JSON line.
//
//   node stream-peer.js recv --bind A --mode write|send
//   node stream-peer.js send --bind B --mode write|send --peer A --tcp PORT --udp PORT --mib 256

import { createCipheriv } from 'node:crypto';
import { parseArgs } from 'node:util';
import {
  Access, connectQp, createRxeDevice, initQp, gidFromAddress, gidToString, QpType, queryRxeCounters, rxeOf, SendFlags, WcOpcode, WcStatus,
  wcStatusStr, WrOpcode, type QP, type WorkCompletion,
} from '../../src/index.js';
import { oobAccept, oobConnect } from '../../src/tools/oob.js';

const { positionals, values } = parseArgs({
  allowPositionals: true,
  options: { faults: { type: 'string' }, bind: { type: 'string' }, mode: { type: 'string' }, peer: { type: 'string' }, tcp: { type: 'string' }, udp: { type: 'string' }, mib: { type: 'string', default: '256' } },
});
const role = positionals[0];
const write = values.mode === 'write';
const CHUNK = 1 << 20, SLOTS = 8;
const KEY = Buffer.alloc(16, 7);

function expected(i: number, out: Buffer) {
  const iv = Buffer.alloc(16);
  iv.writeUInt32BE(i, 0);
  const c = createCipheriv('aes-128-ctr', KEY, iv);
  const ks = c.update(Buffer.alloc(CHUNK));
  ks.copy(out);
}

const dev = await createRxeDevice({ address: values.bind!, port: role === 'recv' ? 0 : Number(values.udp) });
// --faults drop,duplicate,reorder: the same impairments from the device's own fault hook,
// for kernels without sch_netem.
if (values.faults) {
  const [drop, duplicate, reorder] = values.faults.split(',').map(Number);
  rxeOf(dev).faults = { drop, duplicate, reorder };
}
const ctx = dev.open();
const pd = ctx.allocPd();
const cq = ctx.createCq(4 * SLOTS + 16);
const qp: QP = pd.createQp({ qpType: QpType.RC, sendCq: cq, recvCq: cq, cap: { maxSendWr: 2 * SLOTS, maxRecvWr: 2 * SLOTS, maxSendSge: 1, maxRecvSge: 1, maxInlineData: 64 } });
initQp(qp);
const ring = Buffer.alloc(SLOTS * CHUNK);
const ringMr = pd.regMr(ring, Access.LOCAL_WRITE | Access.REMOTE_WRITE);
const credit = Buffer.alloc(4 * SLOTS);
const creditMr = pd.regMr(credit, Access.LOCAL_WRITE);
const deadline = Date.now() + 240_000;

async function next(): Promise<WorkCompletion> {
  for (;;) {
    const [wc] = cq.poll(1);
    if (wc) {
      if (wc.status !== WcStatus.SUCCESS) throw new Error(`completion ${wcStatusStr(wc.status)} (wr ${wc.wrId})`);
      return wc;
    }
    if (Date.now() > deadline) throw new Error('stream timed out');
    await new Promise((r) => setImmediate(r));
  }
}

const counters = () => queryRxeCounters(ctx, qp);

const mib = Number(values.mib);
const t0 = Date.now();
if (role === 'recv') {
  // Receives first: a credit-bearing SEND or a WRITE_WITH_IMM each consume one.
  for (let s = 0; s < SLOTS; s++) qp.postRecv({ wrId: s, sgList: write ? [] : [ringMr.sge(s * CHUNK, CHUNK)] });
  const oob = await oobAccept(0, { timeoutMs: 60_000, onListening: (port) => console.log(JSON.stringify({ listening: port, udp: rxeOf(dev).port })) });
  const peer = await oob.recv<{ qpn: number; psn: number; gid: string; mib: number }>();
  oob.send({ qpn: qp.qpn, psn: 0x123456, gid: gidToString(ctx.queryGid()), rkey: ringMr.rkey, addr: ringMr.addr });
  connectQp(qp, { qpn: peer.qpn, psn: peer.psn, gid: gidFromAddress(peer.gid) }, { psn: 0x123456, mtu: ctx.queryPort().activeMtu, timeout: 8 });
  const want = Buffer.alloc(CHUNK);
  let bad = 0;
  for (let i = 0; i < peer.mib; i++) {
    let wc: WorkCompletion;
    do wc = await next(); while (wc.opcode === WcOpcode.SEND); // our credits completing
    const slot = i % SLOTS;
    if (write ? wc.immData !== i : wc.byteLen !== CHUNK) throw new Error(`chunk ${i}: imm ${wc.immData}, ${wc.byteLen} bytes`);
    expected(i, want);
    if (!ring.subarray(slot * CHUNK, (slot + 1) * CHUNK).equals(want)) bad++;
    qp.postRecv({ wrId: slot, sgList: write ? [] : [ringMr.sge(slot * CHUNK, CHUNK)] });
    credit.writeUInt32LE(i, 4 * slot);
    qp.postSend({ wrId: 1000 + i, opcode: WrOpcode.SEND, sendFlags: SendFlags.SIGNALED | SendFlags.INLINE, sgList: [creditMr.sge(4 * slot, 4)] });
  }
  await oob.barrier('done');
  console.log(JSON.stringify({ role, chunks: peer.mib, bad, secs: (Date.now() - t0) / 1e3, counters: counters() }));
  oob.close();
} else {
  for (let s = 0; s < SLOTS; s++) qp.postRecv({ wrId: s, sgList: [creditMr.sge(4 * s, 4)] });
  const oob = await oobConnect(values.peer!, Number(values.tcp), 60_000);
  oob.send({ qpn: qp.qpn, psn: 0x654321, gid: gidToString(ctx.queryGid()), mib });
  const peer = await oob.recv<{ qpn: number; psn: number; gid: string; rkey: number; addr: number }>();
  connectQp(qp, { qpn: peer.qpn, psn: peer.psn, gid: gidFromAddress(peer.gid) }, { psn: 0x654321, mtu: ctx.queryPort().activeMtu, timeout: 8 });
  const src = Buffer.alloc(SLOTS * CHUNK);
  const srcMr = pd.regMr(src, Access.LOCAL_WRITE);
  let credits = SLOTS;
  for (let i = 0; i < mib; i++) {
    while (credits === 0) {
      const wc = await next();
      if (wc.opcode === WcOpcode.RECV) { credits++; qp.postRecv({ wrId: wc.wrId, sgList: [creditMr.sge(4 * Number(wc.wrId), 4)] }); }
    }
    const slot = i % SLOTS;
    expected(i, src.subarray(slot * CHUNK, (slot + 1) * CHUNK));
    credits--;
    qp.postSend(write
      ? { wrId: i, opcode: WrOpcode.RDMA_WRITE_WITH_IMM, immData: i, sendFlags: SendFlags.SIGNALED, sgList: [srcMr.sge(slot * CHUNK, CHUNK)], rdma: { remoteAddr: peer.addr + slot * CHUNK, rkey: peer.rkey } }
      : { wrId: i, opcode: WrOpcode.SEND, sendFlags: SendFlags.SIGNALED, sgList: [srcMr.sge(slot * CHUNK, CHUNK)] });
  }
  await oob.barrier('done');
  console.log(JSON.stringify({ role, chunks: mib, secs: (Date.now() - t0) / 1e3, counters: counters() }));
  oob.close();
}
ctx.close();
await dev.close();
