// A capture of two-process perftest traffic on lo: Wireshark (tshark) must dissect it as
// InfiniBand over RoCEv2, and every packet's ICRC, recomputed here from the captured IP and
// UDP headers (the real IP Identification included), must match the ICRC field.
// Skipped, saying why, without tshark or without the right to capture.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { captureUnavailable, icrcOf, pcapFrames, readFields, startCapture, type Capture } from '../helpers/capture.js';
import { jsonLines, run } from '../helpers/procs.js';
import { connectedSourcePort } from '../../src/providers/rxe/wire/udp-sport.js';

const skip = captureUnavailable();
// A capture on the sending host sees GSO sends before the kernel cuts them (as with TSO):
// the captured runs send packet by packet. They also acknowledge as Linux rxe, one ACK per
// message at once: with deferred and coalesced ACKs (the default) the count of ACKs depends on
// timing, and the second run could send fewer packets than the first one counted.
const NO_GSO = { SOFTRDMA_RXE_GSO: '0', SOFTRDMA_RXE_ACK_DEFER: '0', SOFTRDMA_RXE_ACK_COALESCE: '0' };

test('a perftest capture decodes as InfiniBand in tshark, with every ICRC correct on the wire', { skip, timeout: 120_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'softrdma-cap-'));
  try {
    // Two runs: the first only learns how many packets a run sends (both sides' counters),
    // so the capture can stop by itself after exactly that many (dumpcap drops what it has
    // not read yet when interrupted).
    const once = async (capture?: (udp: string) => Promise<void>) => {
      const server = run(['perftest', 'write_bw', '--bind', '127.0.0.2', '-p', '0', '--udp-port', '0', '--json', '--counters'], { env: NO_GSO });
      const [, tcp, udp] = await server.waitFor(/out-of-band TCP port (\d+), RoCE UDP port (\d+)/);
      await capture?.(udp!);
      const client = run(['perftest', 'write_bw', '--bind', '127.0.0.3', '-p', tcp!, '--udp-port', udp!, '-s', '10000', '-n', '40', '--json', '--counters', '127.0.0.1'], { env: NO_GSO });
      assert.equal(await client.exit(), 0, client.stderr);
      assert.equal(await server.exit(), 0, server.stderr);
      const sent = (p: { stdout: string }) => (jsonLines(p.stdout).find((o) => o.counters)!.counters as { device: { sent_pkts: number } }).device.sent_pkts;
      return { udp: udp!, packets: sent(client) + sent(server) };
    };
    const file = join(dir, 'rxe.pcap');
    const { packets } = await once();
    let cap: Capture | undefined;
    // A retransmit in the second run only adds packets; tshark stops at the first run's count.
    const { udp } = await once(async (port) => {
      cap = await startCapture(`udp port ${port}`, packets, file, ['-F', 'pcap']);
    });
    await cap!.finished();

    // tshark's own dissection: InfiniBand BTH opcodes of an RC WRITE stream and its ACKs.
    const fields = readFields(file, 'infiniband', ['infiniband.bth.opcode', 'ip.id', 'infiniband.invariant.crc', 'udp.srcport', 'infiniband.bth.destqp'], ['-o', `infiniband.rroce.port:${udp}`]);
    const opcodes = new Set(fields.map((f) => Number(f[0])));
    for (const op of [6, 7, 8, 17]) assert.ok(opcodes.has(op), `opcode ${op} missing from tshark view: ${[...opcodes]} ${JSON.stringify(fields.slice(0, 50))}`);
    assert.equal(fields.length, packets, 'tshark dissected every packet as InfiniBand');
    assert.ok(fields.every((f) => f[1] === '0x0000'), 'softrdma sends IPv4 with Identification 0 (DF)');
    // Both QPs send from the port rxe derives from the two QPNs (the destination QPNs seen;
    // two processes may happen to have the same QPN).
    const qpns = [...new Set(fields.map((f) => Number(f[4])))];
    assert.ok(qpns.length === 1 || qpns.length === 2, `two QPs: ${qpns}`);
    const sport = connectedSourcePort(0, qpns[0]!, qpns[1] ?? qpns[0]!);
    assert.deepEqual([...new Set(fields.map((f) => Number(f[3])))], [sport], 'every packet leaves from the QP pair\'s source port');

    // Our own check of each captured ICRC, from the captured headers.
    const { linktype, frames } = pcapFrames(file);
    assert.equal(linktype, 1, 'lo captures as Ethernet');
    let checked = 0;
    for (const f of frames) {
      if (f.readUInt16BE(12) !== 0x0800) continue;
      const { want, got } = icrcOf(f.subarray(14));
      assert.equal(want.toString(16), got.toString(16), `frame ${checked}: ICRC on the wire`);
      checked++;
    }
    assert.equal(checked, fields.length);
  } finally {
    if (!process.env.KEEP_PCAP) rmSync(dir, { recursive: true, force: true });
  }
});
