import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { Access, QpType, SendFlags, WcStatus, WrOpcode } from '../../src/index.js';
import { makePair, waitCompletions } from '../helpers/pair.js';

function seeded(seed: number) {
  return () => ((seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0) / 2 ** 32);
}

test('RC recovers from drops, duplicates, reordering and corruption in both directions', async () => {
  const { a, b, close } = await makePair(QpType.RC, { timeout: 8 });
  try {
    const plan = { drop: 0.02, duplicate: 0.02, reorder: 0.05, corrupt: 0.01 };
    (a.dev.provider as any).faults = { ...plan, random: seeded(1) };
    (b.dev.provider as any).faults = { ...plan, random: seeded(2) };
    const size = 1 << 20, n = 16;
    const src = randomBytes(size);
    const dst = Buffer.alloc(size * 2);
    const smr = a.pd.regMr(src, 0);
    const dmr = b.pd.regMr(dst, Access.LOCAL_WRITE | Access.REMOTE_WRITE);
    for (let i = 0; i < n; i++) {
      b.qp.postRecv({ wrId: i, sgList: [dmr.sge(size, size)] });
      a.qp.postSend({ wrId: i, opcode: WrOpcode.RDMA_WRITE, sendFlags: SendFlags.SIGNALED, sgList: [smr.sge()], rdma: { remoteAddr: dmr.addr, rkey: dmr.rkey } });
      a.qp.postSend({ wrId: 1000 + i, opcode: WrOpcode.SEND, sendFlags: SendFlags.SIGNALED, sgList: [smr.sge()] });
    }
    const wcs = await waitCompletions(a.cq, 2 * n, 60_000);
    assert.deepEqual(wcs.filter((w) => w.status !== WcStatus.SUCCESS), []);
    assert.deepEqual(wcs.map((w) => w.wrId), Array.from({ length: n }, (_, i) => [i, 1000 + i]).flat()); // in order
    const recvs = await waitCompletions(b.cq, n, 60_000);
    assert.ok(recvs.every((w) => w.status === WcStatus.SUCCESS && w.byteLen === size));
    assert.ok(dst.subarray(0, size).equals(src));
    assert.ok(dst.subarray(size).equals(src));
    const ca = (a.dev.provider as any).counters, cb = (b.dev.provider as any).counters;
    assert.ok(a.qp && (a.dev.provider as any).qps.get(a.qp.qpn).counters.retransmits > 0, 'retransmissions happened');
    assert.ok(ca.fault_dropped > 0 && cb.icrc_errors + ca.icrc_errors > 0, 'faults were injected and corrupt packets dropped');
    assert.ok(cb.duplicate_request > 0, 'duplicates were recognised');
  } finally {
    await close();
  }
});

test('100,000 random and mutated packets at a device with live traffic: counted drops, neighbour unharmed', async () => {
  const { a, b, close } = await makePair(QpType.RC);
  try {
    const dgram = await import('node:dgram');
    const sock = dgram.createSocket('udp4');
    await new Promise<void>((r) => sock.bind(0, '127.0.0.4', () => r()));
    const port = (b.dev.provider as any).port;
    const src = randomBytes(1 << 16);
    const dst = Buffer.alloc(1 << 16);
    const smr = a.pd.regMr(src, 0);
    const dmr = b.pd.regMr(dst, Access.LOCAL_WRITE | Access.REMOTE_WRITE);
    // A template: a valid-looking RC WRITE_ONLY aimed at b's QP.
    const tmpl = Buffer.alloc(12 + 16 + 64 + 4);
    tmpl[0] = 0x0a; tmpl.writeUInt16BE(0xffff, 2); tmpl.writeUInt32BE(b.qp.qpn, 4); tmpl.writeUInt32BE(0x80000200, 8);
    tmpl.writeUInt32BE(dmr.rkey, 20); tmpl.writeUInt32BE(64, 24);
    const rnd = seeded(7);
    let sent = 0;
    const total = 100_000;
    const blast = async () => {
      while (sent < total) {
        for (let i = 0; i < 500 && sent < total; i++, sent++) {
          let p: Buffer;
          const kind = sent % 4;
          if (kind === 0) p = randomBytes(1 + Math.floor(rnd() * 200));
          else if (kind === 1) { p = Buffer.from(tmpl); p[Math.floor(rnd() * p.length)] = Math.floor(rnd() * 256); }
          else if (kind === 2) p = tmpl.subarray(0, Math.floor(rnd() * tmpl.length));
          else { p = Buffer.from(tmpl); p.writeUInt32LE(Math.floor(rnd() * 2 ** 32), p.length - 4); }
          sock.send(p, port, '127.0.0.3');
        }
        await new Promise((r) => setImmediate(r));
      }
    };
    const traffic = (async () => {
      for (let i = 0; i < 50; i++) {
        a.qp.postSend({ wrId: i, opcode: WrOpcode.RDMA_WRITE, sendFlags: SendFlags.SIGNALED, sgList: [smr.sge()], rdma: { remoteAddr: dmr.addr, rkey: dmr.rkey } });
        const [wc] = await waitCompletions(a.cq, 1, 30_000);
        assert.equal(wc!.status, WcStatus.SUCCESS);
      }
    })();
    await Promise.all([blast(), traffic]);
    sock.close();
    assert.ok(dst.equals(src));
    const c = (b.dev.provider as any).counters;
    const drops = c.malformed_drops + c.icrc_errors + c.unknown_qp_drops + c.qp_state_drops;
    assert.ok(drops > 1000, `drops counted: ${drops}`);
    assert.ok(c.icrc_errors > 0);
  } finally {
    await close();
  }
});
