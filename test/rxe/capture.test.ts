// A capture of two-process perftest traffic on lo: Wireshark (tshark) must dissect it as
// InfiniBand over RoCEv2, and every packet's ICRC, recomputed here from the captured IP and
// UDP headers (the real IP Identification included), must match the ICRC field.
// Skipped, saying why, without tshark or without the right to capture.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, mkdtempSync, rmSync } from 'node:fs';
import { crc32 } from 'node:zlib';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { captureUnavailable, readFields, startCapture, type Capture } from '../helpers/capture.js';
import { jsonLines, run } from '../helpers/procs.js';

/** RoCEv2 ICRC over the captured bytes from the IPv4 header on (IBA A17.8: masked fields as ones). */
function icrcOf(ipAndRest: Buffer): { want: number; got: number } {
  const ihl = (ipAndRest[0]! & 0x0f) * 4;
  const ip = Buffer.from(ipAndRest.subarray(0, ihl));
  ip[1] = 0xff; // TOS
  ip[8] = 0xff; // TTL
  ip.writeUInt16BE(0xffff, 10); // header checksum
  const udp = Buffer.from(ipAndRest.subarray(ihl, ihl + 8));
  udp.writeUInt16BE(0xffff, 6); // UDP checksum
  const ib = Buffer.from(ipAndRest.subarray(ihl + 8));
  const want = ib.readUInt32LE(ib.length - 4);
  ib[4] = 0xff; // BTH resv8a
  const got = crc32(ib.subarray(0, ib.length - 4), crc32(udp, crc32(ip, crc32(Buffer.alloc(8, 0xff))))) >>> 0;
  return { want, got };
}

/** Frames of a classic pcap file (what tshark -F pcap writes). */
function pcapFrames(file: string): { linktype: number; frames: Buffer[] } {
  const b = readFileSync(file);
  const le = b.readUInt32LE(0) === 0xa1b2c3d4;
  const u32 = (o: number) => (le ? b.readUInt32LE(o) : b.readUInt32BE(o));
  const frames: Buffer[] = [];
  for (let o = 24; o + 16 <= b.length; ) {
    const incl = u32(o + 8);
    frames.push(b.subarray(o + 16, o + 16 + incl));
    o += 16 + incl;
  }
  return { linktype: u32(20), frames };
}

const skip = captureUnavailable();

test('a perftest capture decodes as InfiniBand in tshark, with every ICRC correct on the wire', { skip, timeout: 120_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'softrdma-cap-'));
  try {
    // Two runs: the first only learns how many packets a run sends (both sides' counters),
    // so the capture can stop by itself after exactly that many (dumpcap drops what it has
    // not read yet when interrupted).
    const once = async (capture?: (udp: string) => Promise<void>) => {
      const server = run(['perftest', 'write_bw', '--bind', '127.0.0.2', '-p', '0', '--udp-port', '0', '--json', '--counters']);
      const [, tcp, udp] = await server.waitFor(/out-of-band TCP port (\d+), RoCE UDP port (\d+)/);
      await capture?.(udp!);
      const client = run(['perftest', 'write_bw', '--bind', '127.0.0.3', '-p', tcp!, '--udp-port', udp!, '-s', '10000', '-n', '40', '--json', '--counters', '127.0.0.1']);
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
    const fields = readFields(file, 'infiniband', ['infiniband.bth.opcode', 'ip.id', 'infiniband.invariant.crc'], ['-o', `infiniband.rroce.port:${udp}`]);
    const opcodes = new Set(fields.map((f) => Number(f[0])));
    for (const op of [6, 7, 8, 17]) assert.ok(opcodes.has(op), `opcode ${op} missing from tshark view: ${[...opcodes]} ${JSON.stringify(fields.slice(0, 50))}`);
    assert.equal(fields.length, packets, 'tshark dissected every packet as InfiniBand');
    assert.ok(fields.every((f) => f[1] === '0x0000'), 'softrdma sends IPv4 with Identification 0 (DF)');

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
