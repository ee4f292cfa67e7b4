// Who may speak for a QP: a connected (RC/UC) QP accepts packets only from its path's
// address, as Linux rxe's check_addr does. A third party that knows the QPN, the expected
// PSN and a valid rkey sends a well-formed RDMA WRITE (correct ICRC) from another address:
// it must be dropped silently and counted, and the real requester's next WRITE at that
// PSN must land byte-exact. UD QPs stay open to any sender.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { randomBytes } from 'node:crypto';
import { networkInterfaces } from 'node:os';
import { Access, QpType, SendFlags, WcStatus, WrOpcode, rxeOf, queryRxeCounters, type QP } from '../../src/index.js';
import { writeBth, reth, deth } from '../../src/providers/rxe/wire/headers.js';
import { ICRC_BYTES, OPCODES, OpCode } from '../../src/providers/rxe/wire/opcodes.js';
import { IcrcFlow } from '../../src/providers/rxe/wire/icrc.js';
import { ipv4Bytes, ipv6Bytes } from '../../src/abi/inet.js';
import { connect, makePair, openSide, waitCompletions, waitFor, type Side } from '../helpers/pair.js';

async function bindSocket(address: string): Promise<dgram.Socket> {
  const sock = dgram.createSocket(address.includes(':') ? 'udp6' : 'udp4');
  await new Promise<void>((resolve, reject) => { sock.once('error', reject); sock.bind({ address, port: 0 }, () => resolve()); });
  return sock;
}

/** A RoCEv2 packet (BTH, extension headers by `fill`, payload, ICRC) sealed for the path from `sock` to (to, port). */
function packet(sock: dgram.Socket, to: string, port: number, opcode: number, destQp: number, psn: number, payload: Buffer,
  fill: (buf: Buffer) => void): Buffer {
  const info = OPCODES[opcode]!;
  const pad = (4 - (payload.length & 3)) & 3;
  const buf = Buffer.alloc(info.length + payload.length + pad + ICRC_BYTES);
  writeBth(buf, { opcode, padCount: pad, destQp, ackReq: true, psn });
  fill(buf);
  payload.copy(buf, info.length);
  const from = sock.address();
  const v6 = from.family === 'IPv6';
  const bytes = v6 ? ipv6Bytes : ipv4Bytes;
  new IcrcFlow(v6 ? 6 : 4, bytes(from.address), bytes(to), from.port, port).seal(buf);
  return buf;
}

function forgedWrite(sock: dgram.Socket, to: string, port: number, qp: QP, va: number, rkey: number, payload: Buffer): Buffer {
  const psn = qp.query().rqPsn; // the responder's expected PSN: the one the real requester uses next
  const info = OPCODES[OpCode.RC_RDMA_WRITE_ONLY]!;
  return packet(sock, to, port, OpCode.RC_RDMA_WRITE_ONLY, qp.qpn, psn, payload, (b) => reth.write(b, info.reth, va, rkey, payload.length));
}

const send = (sock: dgram.Socket, buf: Buffer, to: string, port: number) =>
  new Promise<void>((resolve, reject) => sock.send(buf, port, to, (err) => (err ? reject(err) : resolve())));

/** The forged WRITE from `forger` is dropped and counted; then a's real WRITE at that PSN lands. */
async function forgeThenWrite(a: Side, b: Side, forger: dgram.Socket): Promise<void> {
  const bDev = rxeOf(b.dev);
  const dst = Buffer.alloc(4096);
  const rmr = b.pd.regMr(dst, Access.LOCAL_WRITE | Access.REMOTE_WRITE);
  const psnBefore = b.qp.query().rqPsn;
  const before = { ...bDev.counters };
  const forged = forgedWrite(forger, bDev.address, bDev.port, b.qp, rmr.addr, rmr.rkey, Buffer.alloc(256, 0xee));
  await send(forger, forged, bDev.address, bDev.port);
  await waitFor('the forged packet to reach the responder', () => bDev.counters.rcvd_pkts > before.rcvd_pkts, 5000);
  // Nothing else may have explained a drop: the packet was well-formed and its ICRC good.
  assert.equal(bDev.counters.icrc_errors, before.icrc_errors, 'the forged packet has a valid ICRC');
  assert.equal(bDev.counters.malformed_drops, before.malformed_drops);
  assert.ok(dst.every((x) => x === 0), 'the forged bytes did not land');
  assert.equal(b.qp.query().rqPsn, psnBefore, 'the responder PSN did not move');
  assert.equal(bDev.counters.addr_mismatch_drops, before.addr_mismatch_drops + 1, 'the drop is counted on the device');
  assert.equal(queryRxeCounters(b.ctx, b.qp).qp.addr_mismatch_drops, 1, 'and on the QP');
  assert.equal(bDev.counters.sent_pkts, before.sent_pkts, 'no NAK or ACK went anywhere');

  // The real requester's WRITE at the same PSN lands byte-exact and completes.
  const src = randomBytes(256);
  const smr = a.pd.regMr(src, 0);
  a.qp.postSend({ wrId: 7, opcode: WrOpcode.RDMA_WRITE, sendFlags: SendFlags.SIGNALED, sgList: [smr.sge()], rdma: { remoteAddr: rmr.addr, rkey: rmr.rkey } });
  const [wc] = await waitCompletions(a.cq, 1);
  assert.deepEqual([wc!.wrId, wc!.status], [7, WcStatus.SUCCESS]);
  assert.ok(dst.subarray(0, 256).equals(src), 'the real WRITE landed byte-exact');
  assert.ok(dst.subarray(256).every((x) => x === 0));
  assert.equal(b.qp.query().rqPsn, (psnBefore + 1) & 0xffffff);
  assert.equal(b.qp.query().qpState, a.qp.query().qpState, 'both QPs still in RTS');
}

test('RC: a WRITE forged from another address (right PSN, valid rkey) is dropped and counted; the real WRITE lands', async () => {
  const { a, b, close } = await makePair(QpType.RC);
  const forger = await bindSocket('127.0.0.9');
  try {
    await forgeThenWrite(a, b, forger);
    // The requester side is guarded too: a forged ACK for the outstanding PSN is dropped.
    const aDev = rxeOf(a.dev);
    const drops = aDev.counters.addr_mismatch_drops;
    const info = OPCODES[OpCode.RC_ACKNOWLEDGE]!;
    const ack = packet(forger, aDev.address, aDev.port, OpCode.RC_ACKNOWLEDGE, a.qp.qpn, a.qp.query().sqPsn, Buffer.alloc(0),
      (buf) => { buf.writeUInt32BE(0x1f000000, info.aeth); });
    await send(forger, ack, aDev.address, aDev.port);
    await waitFor('the forged ACK to be dropped', () => aDev.counters.addr_mismatch_drops === drops + 1, 5000);
  } finally {
    forger.close();
    await close();
  }
});

test('UC: a WRITE forged from another address is dropped and counted; the real WRITE lands', async () => {
  const { a, b, close } = await makePair(QpType.UC);
  const forger = await bindSocket('127.0.0.9');
  try {
    const bDev = rxeOf(b.dev);
    const dst = Buffer.alloc(1024);
    const rmr = b.pd.regMr(dst, Access.LOCAL_WRITE | Access.REMOTE_WRITE);
    const info = OPCODES[OpCode.UC_RDMA_WRITE_ONLY]!;
    const before = bDev.counters.addr_mismatch_drops;
    const forged = packet(forger, bDev.address, bDev.port, OpCode.UC_RDMA_WRITE_ONLY, b.qp.qpn, b.qp.query().rqPsn, Buffer.alloc(64, 0xee),
      (buf) => reth.write(buf, info.reth, rmr.addr, rmr.rkey, 64));
    await send(forger, forged, bDev.address, bDev.port);
    await waitFor('the forged UC WRITE to be dropped', () => bDev.counters.addr_mismatch_drops === before + 1, 5000);
    assert.ok(dst.every((x) => x === 0));
    const src = randomBytes(64);
    const smr = a.pd.regMr(src, 0);
    a.qp.postSend({ wrId: 1, opcode: WrOpcode.RDMA_WRITE, sendFlags: SendFlags.SIGNALED, sgList: [smr.sge()], rdma: { remoteAddr: rmr.addr, rkey: rmr.rkey } });
    await waitCompletions(a.cq, 1);
    await waitFor('the real UC WRITE to land', () => dst.subarray(0, 64).equals(src), 5000);
  } finally {
    forger.close();
    await close();
  }
});

test('UD is not restricted: a SEND from any address with the right Q_Key is received', async () => {
  const { b, close } = await makePair(QpType.UD, { qkey: 0x1234 });
  const forger = await bindSocket('127.0.0.9');
  try {
    const bDev = rxeOf(b.dev);
    const buf = Buffer.alloc(40 + 64);
    const rmr = b.pd.regMr(buf, Access.LOCAL_WRITE);
    b.qp.postRecv({ wrId: 5, sgList: [rmr.sge()] });
    const qkey = b.qp.query().qkey;
    const info = OPCODES[OpCode.UD_SEND_ONLY]!;
    const payload = randomBytes(64);
    const pkt = packet(forger, bDev.address, bDev.port, OpCode.UD_SEND_ONLY, b.qp.qpn, 0, payload, (x) => deth.write(x, info.deth, qkey, 0x42));
    await send(forger, pkt, bDev.address, bDev.port);
    const [wc] = await waitCompletions(b.cq, 1, 5000);
    assert.deepEqual([wc!.wrId, wc!.status, wc!.byteLen, wc!.srcQp], [5, WcStatus.SUCCESS, 40 + 64, 0x42]);
    assert.ok(buf.subarray(40).equals(payload));
    assert.equal(bDev.counters.addr_mismatch_drops, 0);
  } finally {
    forger.close();
    await close();
  }
});

/** A local IPv6 address other than ::1 (and not link-local), if this host has one. */
function secondIpv6(): string | undefined {
  for (const list of Object.values(networkInterfaces())) {
    for (const i of list ?? []) if (i.family === 'IPv6' && !i.internal && !i.address.startsWith('fe80')) return i.address;
  }
  return undefined;
}

const v6 = secondIpv6();
test('IPv6 RC: a WRITE forged from another address is dropped and counted; the real WRITE lands', { skip: v6 ? false : 'this host has no IPv6 address besides ::1' }, async () => {
  // The real requester on the host's other IPv6 address, the responder and the forger on ::1.
  const a0 = await openSide(v6!, 0);
  const b0 = await openSide('::1', rxeOf(a0.dev).port).catch(async (err) => { await a0.dev.close(); throw err; });
  const cap = { maxSendWr: 16, maxRecvWr: 16 };
  const qa = a0.pd.createQp({ qpType: QpType.RC, sendCq: a0.cq, recvCq: a0.cq, cap });
  const qb = b0.pd.createQp({ qpType: QpType.RC, sendCq: b0.cq, recvCq: b0.cq, cap });
  connect(qa, { qpn: qb.qpn, gid: b0.ctx.queryGid() }, { psn: 0x300, remotePsn: 0x400 });
  connect(qb, { qpn: qa.qpn, gid: a0.ctx.queryGid() }, { psn: 0x400, remotePsn: 0x300 });
  const forger = await bindSocket('::1');
  try {
    await forgeThenWrite({ ...a0, qp: qa }, { ...b0, qp: qb }, forger);
  } finally {
    forger.close();
    await a0.dev.close();
    await b0.dev.close();
  }
});
