// rxe devices on IPv6 addresses: two processes in a private network namespace whose lo has
// two IPv6 addresses. Every perftest bandwidth test moves verified data between them, the GID
// is the IPv6 address itself (not IPv4-mapped), and, where tshark may capture, every packet
// on the wire carries the ICRC a receiver computes with the IPv6 masking rules (traffic
// class, flow label and hop limit as ones), recomputed here from the captured headers.
// Skipped, saying why, where namespaces cannot be made.

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { captureUnavailable, icrcOf, pcapFrames, readFields, startCapture, type Capture } from '../helpers/capture.js';
import { jsonLines, run } from '../helpers/procs.js';

const NS = `sr6${process.pid % 100000}`;
const A = 'fd00:5e::1';
const B = 'fd00:5e::2';

function ip(...args: string[]): void { execFileSync('ip', args, { stdio: ['ignore', 'ignore', 'pipe'] }); }

function setUp(): string | undefined {
  if (process.getuid?.() !== 0) return 'needs root to create a network namespace';
  try { execFileSync('ip', ['-V'], { stdio: 'ignore' }); } catch { return 'iproute2 (ip) is not installed'; }
  try {
    ip('netns', 'add', NS);
    ip('-n', NS, 'link', 'set', 'lo', 'up');
    // nodad: usable at once, without duplicate address detection's delay.
    for (const a of [A, B]) ip('-n', NS, '-6', 'addr', 'add', `${a}/128`, 'dev', 'lo', 'nodad');
    return undefined;
  } catch (err) {
    tearDown();
    return `this machine forbids the namespace setup: ${(err as { stderr?: Buffer }).stderr?.toString().trim() || (err as Error).message}`;
  }
}

function tearDown(): void {
  try { ip('netns', 'del', NS); } catch { /* already gone */ }
}

const skip = setUp();
process.on('exit', tearDown);
if (skip) console.log(`IPv6 device test skipped: ${skip}`);

/** One perftest run between A (server) and B (client) in the namespace; both JSON outputs. */
// A capture on the sending host sees GSO sends before the kernel cuts them (as with TSO):
// capture runs send packet by packet.
async function perftest(test: string, size: number, iters: number, beforeClient?: () => Promise<void>, env: NodeJS.ProcessEnv = {}): Promise<{ server: Record<string, unknown>[]; client: Record<string, unknown>[] }> {
  const server = run(['perftest', test, '--bind', A, '-p', '0', '--json', '--counters'], { netns: NS, env });
  const [, tcp] = await server.waitFor(/out-of-band TCP port (\d+)/);
  await beforeClient?.();
  const client = run(['perftest', test, '--bind', B, '-p', tcp!, '-s', String(size), '-n', String(iters), '--json', '--counters', A], { netns: NS, env });
  assert.equal(await client.exit(), 0, client.stderr + client.stdout);
  assert.equal(await server.exit(), 0, server.stderr + server.stdout);
  return { server: jsonLines(server.stdout), client: jsonLines(client.stdout) };
}

describe('rxe over IPv6', { skip }, () => {
  after(tearDown);

  it('the GID of a device on an IPv6 address is that address', async () => {
    const p = run(['devinfo', '--bind', A, '-v'], { netns: NS });
    assert.equal(await p.exit(), 0, p.stderr);
    assert.match(p.stdout, /GID\[  0\]:\t\tfd00:5e::1, RoCE v2/);
  });

  for (const test of ['write_bw', 'read_bw', 'send_bw', 'atomic_bw']) {
    it(`perftest ${test} between two IPv6 devices moves verified data`, async () => {
      const { client } = await perftest(test, test === 'atomic_bw' ? 8 : 65536, 200);
      const r = client.find((o) => o.test === test)!;
      assert.ok(r, JSON.stringify(client));
      assert.equal(r.verified, true);
      const c = client.find((o) => o.counters)!.counters as { device: Record<string, number> };
      assert.equal(c.device.icrc_errors, 0);
      assert.ok(c.device.sent_pkts! >= 200);
    });
  }

  it('every packet on the wire carries the ICRC computed with the IPv6 masks', { skip: captureUnavailable() }, async () => {
    const dir = mkdtempSync(join(tmpdir(), 'softrdma-cap6-'));
    try {
      const sent = (lines: Record<string, unknown>[]) => (lines.find((o) => o.counters)!.counters as { device: { sent_pkts: number } }).device.sent_pkts;
      // The first run learns how many packets a run sends, so the capture can stop by count.
      // Packet by packet, one ACK per message: a count that does not depend on timing (as capture.test.ts).
      const noGso = { SOFTRDMA_RXE_GSO: '0', SOFTRDMA_RXE_ACK_DEFER: '0', SOFTRDMA_RXE_ACK_COALESCE: '0' };
      const first = await perftest('write_bw', 10000, 40, undefined, noGso);
      const packets = sent(first.client) + sent(first.server);
      const file = join(dir, 'rxe6.pcap');
      let cap: Capture | undefined;
      await perftest('write_bw', 10000, 40, async () => { cap = await startCapture('udp port 4791', packets, file, ['-F', 'pcap'], NS); }, noGso);
      await cap!.finished();
      const fields = readFields(file, 'infiniband', ['infiniband.bth.opcode', 'ipv6.src']);
      assert.equal(fields.length, packets, 'tshark dissected every packet as InfiniBand over IPv6');
      assert.ok(fields.every((f) => f[1] === A || f[1] === B), JSON.stringify(fields.slice(0, 5)));
      let checked = 0;
      for (const f of pcapFrames(file).frames) {
        if (f.readUInt16BE(12) !== 0x86dd) continue;
        const { want, got } = icrcOf(f.subarray(14));
        assert.equal(want.toString(16), got.toString(16), `frame ${checked}: ICRC on the wire`);
        checked++;
      }
      assert.equal(checked, packets);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
