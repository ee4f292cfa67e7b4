// RDMA WRITEs between two perftest processes on loopback, and what their device counters say
// about UDP GSO runs arriving whole under GRO (test/rxe/gro.test.ts, recvmmsg.test.ts).

import assert from 'node:assert/strict';
import { jsonLines, run } from './procs.js';

export type DeviceCounters = Record<string, number>;

/** `write_bw` of 64 KiB messages, server 127.0.0.2, client 127.0.0.3: each side's device counters. */
export async function writeBwCounters(opts: { iters: number; qps?: number; env?: NodeJS.ProcessEnv }): Promise<{ got: DeviceCounters; sent: DeviceCounters }> {
  const env = opts.env ?? {};
  const server = run(['perftest', 'write_bw', '--bind', '127.0.0.2', '-p', '0', '--udp-port', '0', '--json', '--counters'], { env });
  const [, tcp, udp] = await server.waitFor(/out-of-band TCP port (\d+), RoCE UDP port (\d+)/);
  const client = run(['perftest', 'write_bw', '--bind', '127.0.0.3', '-p', tcp!, '--udp-port', udp!, '-s', '65536', '-n', String(opts.iters),
    ...(opts.qps ? ['-q', String(opts.qps)] : []), '--json', '--counters', '127.0.0.1'], { env });
  assert.equal(await client.exit(60_000), 0, client.stderr + client.stdout);
  assert.equal(await server.exit(60_000), 0, server.stderr + server.stdout);
  const counters = (out: string) => (jsonLines(out).find((l) => l.counters)!.counters as { device: DeviceCounters }).device;
  return { got: counters(server.stdout), sent: counters(client.stdout) };
}

/** Every GSO send arrived as one datagram and was cut into valid packets (loopback). */
export function assertRunsArrivedWhole(got: DeviceCounters, sent: DeviceCounters, minSends: number): void {
  assert.ok(sent.gso_sends! >= minSends, `GSO sends: ${sent.gso_sends}`);
  assert.equal(got.gro_datagrams, sent.gso_sends, 'each GSO send arrived as one datagram (loopback)');
  assert.equal(got.gro_packets, sent.gso_packets);
  assert.equal(got.rcvd_pkts, sent.sent_pkts);
  assert.equal(got.icrc_errors ?? 0, 0);
  assert.equal(got.malformed_drops ?? 0, 0);
}
