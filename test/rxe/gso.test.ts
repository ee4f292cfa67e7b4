// UDP GSO on the send side: runs of equal-size packets to one peer leave as one send and are
// cut by the kernel. The receiver must see ordinary packets whose ICRCs hold, which for IPv4
// means the sender predicted the Identification the kernel gave each segment (its index).

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Access, Obj, QpType, RxeAttr, RxeMethod, SendFlags, WcStatus, WrOpcode, type Context } from '../../src/index.js';
import { makePair, waitCompletions } from '../helpers/pair.js';
import { jsonLines, run } from '../helpers/procs.js';

const deviceCounters = (ctx: Context) =>
  ctx.invoke(Obj.DEVICE, RxeMethod.DEVICE_QUERY_COUNTERS, {})[RxeAttr.COUNTERS] as Record<string, number>;

type Counters = { device: Record<string, number> };

async function perftestPair(size: number, iters: number, env: NodeJS.ProcessEnv, extra: string[] = []) {
  const server = run(['perftest', 'write_bw', '--bind', '127.0.0.2', '-p', '0', '--udp-port', '0', '--json', '--counters'], { env });
  const [, tcp, udp] = await server.waitFor(/out-of-band TCP port (\d+), RoCE UDP port (\d+)/);
  const client = run(['perftest', 'write_bw', '--bind', '127.0.0.3', '-p', tcp!, '--udp-port', udp!, '-s', String(size), '-n', String(iters), ...extra, '--json', '--counters', '127.0.0.1'], { env });
  assert.equal(await client.exit(60_000), 0, client.stderr + client.stdout);
  assert.equal(await server.exit(60_000), 0, server.stderr + server.stdout);
  const pick = (lines: Record<string, unknown>[]) => ({
    result: lines.find((l) => 'verified' in l) as { verified: boolean | null },
    counters: (lines.find((l) => l.counters)!.counters as Counters).device,
  });
  return { server: pick(jsonLines(server.stdout)), client: pick(jsonLines(client.stdout)) };
}

describe('UDP GSO sends', () => {
  it('64 KiB RDMA WRITEs across processes: segments arrive with valid ICRCs, Identification = segment index', async () => {
    const { server, client } = await perftestPair(65536, 200, {});
    assert.equal(server.result.verified ?? client.result.verified, true, 'the target holds the source bytes');
    const sent = client.counters;
    // A 64 KiB write at MTU 4096: a first packet (with RETH) and 15 more of one size.
    assert.ok(sent.gso_sends! >= 150, `GSO sends: ${sent.gso_sends}`);
    assert.ok(sent.gso_packets! >= sent.gso_sends! * 10, `packets per GSO send: ${sent.gso_packets! / sent.gso_sends!}`);
    const got = server.counters;
    assert.equal(got.icrc_errors ?? 0, 0);
    assert.equal(got.rcvd_pkts, sent.sent_pkts);
    // The first segment of each send carries Identification 0 (an exact ICRC match); every
    // later one matched only as "Identification = its index", none by luck or not at all.
    assert.equal(got.icrc_id_inferred, sent.gso_packets! - sent.gso_sends!);
  });

  it('-q 16: each 64 KiB WRITE leaves whole, its first packet and one run of the other 15 (the shared window never cuts one)', async () => {
    // Sixteen QPs share the window (window.ts), which then varies as QPs go idle and start
    // again; a message cut by it, or by the requester's packet budget, left in two GSO sends.
    const { server, client } = await perftestPair(65536, 200, {}, ['-q', '16']);
    assert.equal(server.result.verified ?? client.result.verified, true);
    const sent = client.counters;
    // Each QP's first message may go packet by packet while its source port's GSO socket
    // binds, and a resend (rare: the QPs' first bursts before they share the window) starts
    // wherever the loss was; every other run is a whole message's 15. Before: 12-13 a send.
    const resent = sent.sent_pkts! - 16 * 200 * 16;
    assert.ok(sent.gso_sends! <= 16 * 200 + resent, `GSO sends: ${sent.gso_sends} for ${16 * 200} messages, ${resent} packets resent`);
    assert.ok(sent.gso_packets! >= 14.5 * sent.gso_sends!, `packets per GSO send: ${sent.gso_packets! / sent.gso_sends!}`);
  });

  it('SOFTRDMA_RXE_GSO=0 sends packet by packet, every ICRC exact', async () => {
    const { server, client } = await perftestPair(65536, 50, { SOFTRDMA_RXE_GSO: '0' });
    assert.equal(client.counters.gso_sends ?? 0, 0);
    assert.equal(server.counters.icrc_id_inferred ?? 0, 0);
    assert.equal(server.counters.icrc_errors ?? 0, 0);
    assert.equal(server.counters.rcvd_pkts, client.counters.sent_pkts);
  });

  it('a UC send completes only once its packets are with the kernel: reusing the buffer then cannot change what arrives', async () => {
    const { a, b, close } = await makePair(QpType.UC);
    try {
      const size = 64 * 1024;
      const src = Buffer.alloc(size, 0x5a);
      const dst = Buffer.alloc(size);
      const smr = a.pd.regMr(src, 0);
      const rmr = b.pd.regMr(dst, Access.LOCAL_WRITE);
      for (let round = 0; round < 4; round++) {
        src.fill(0x5a + round);
        b.qp.postRecv({ wrId: round, sgList: [rmr.sge(0, size)] });
        a.qp.postSend({ wrId: round, opcode: WrOpcode.SEND, sendFlags: SendFlags.SIGNALED, sgList: [smr.sge(0, size)] });
        // UC completes when sent; from then on the application may reuse the buffer.
        const [wc] = await waitCompletions(a.cq, 1);
        assert.equal(wc!.status, WcStatus.SUCCESS, `round ${round}: UC send completed`);
        src.fill(0xee);
        const [r] = await waitCompletions(b.cq, 1);
        assert.equal(r!.status, WcStatus.SUCCESS);
        assert.equal(r!.byteLen, size);
        assert.ok(dst.every((x) => x === 0x5a + round), `round ${round}: the receiver got the bytes as they were at post time`);
      }
      assert.ok(deviceCounters(a.ctx).gso_sends! >= 4, 'the sends went out as GSO runs');
    } finally {
      await close();
    }
  });

  it('an RDMA WRITE and the SEND behind it (SMC-R\'s data and CDC) leave as one GSO send with a short last segment', async () => {
    const { a, b, close } = await makePair(QpType.RC);
    try {
      const src = Buffer.alloc(4096);
      for (let i = 0; i < src.length; i++) src[i] = (i * 7) & 0xff;
      const target = Buffer.alloc(4096);
      const smr = a.pd.regMr(src, 0);
      const tmr = b.pd.regMr(target, Access.LOCAL_WRITE | Access.REMOTE_WRITE);
      const rmr = b.pd.regMr(Buffer.alloc(64), Access.LOCAL_WRITE);
      const before = deviceCounters(a.ctx);
      // One size (GSO sockets are per segment size, opened at a size's first run); the first
      // round opens the socket and goes packet by packet. 29 bytes: the shortest WRITE (64 bytes
      // on the wire) that is no shorter than the 60-byte SEND.
      const len = 29;
      for (let round = 0; round < 5; round++) {
        b.qp.postRecv({ wrId: round, sgList: [rmr.sge()] });
        a.qp.postSend({ wrId: 10 + round, opcode: WrOpcode.RDMA_WRITE, sgList: [smr.sge(0, len)], rdma: { remoteAddr: tmr.addr + 3 * round, rkey: tmr.rkey } });
        a.qp.postSend({ wrId: 20 + round, opcode: WrOpcode.SEND, sendFlags: SendFlags.SIGNALED, sgList: [smr.sge(0, 44)] });
        const [sent] = await waitCompletions(a.cq, 1);
        assert.equal(sent!.status, WcStatus.SUCCESS);
        const [r] = await waitCompletions(b.cq, 1);
        assert.deepEqual([r!.status, r!.byteLen], [WcStatus.SUCCESS, 44]);
        assert.ok(target.subarray(3 * round, 3 * round + len).equals(src.subarray(0, len)), `round ${round}: the WRITE's ${len} bytes`);
      }
      const after = deviceCounters(a.ctx);
      const sends = after.gso_sends! - before.gso_sends!;
      assert.ok(sends >= 3, `WRITE + SEND as one GSO send in ${sends} of the 4 rounds after the first`);
      assert.equal(after.gso_packets! - before.gso_packets!, 2 * sends);
      assert.equal(deviceCounters(b.ctx).icrc_errors ?? 0, 0);
    } finally {
      await close();
    }
  });
});
