// The header softrdma perftest prints is perftest 6.06's ctx_print_test_info (perftest_parameters.c)
// line for line, in its order and on its conditions, as a C perftest prints it on a Linux rxe:
// Dual-port/Device, qps/transport, connection/SRQ, PCIe relax order, ibv_wr* API, TX depth
// (client or -b; min(-t, -n)), RX depth (the SEND receiver; min(512, -n), made even), CQ
// Moderation (bw), Mtu, Link type, GID index, Max inline data (0 on rxe) or Outstand reads
// (READ, atomics), rdma_cm QPs, Data ex. method, and with -R on the server perftest's "Waiting for
// client rdma_cm QP to connect". Then ctx_print_pingpong_data: OUT for READ only, RKey/VAddr for
// READ and WRITE (not atomics). softrdma's own facts go to stderr, after the block.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { run } from '../helpers/procs.js';

const LINE = '-'.repeat(87);

async function pair(name: string, client: string[], server: string[] = [], cm = false) {
  const srv = run(['perftest', name, ...(cm ? ['-R'] : []), '--bind', '127.0.0.2', '-p', '0', '--udp-port', '0', ...server]);
  const [, port, udp] = await srv.waitFor(cm ? /rdma_cm port (\d+) on 127\.0\.0\.2, RoCE UDP port (\d+)/ : /out-of-band TCP port (\d+), RoCE UDP port (\d+)/);
  const cli = run(['perftest', name, ...(cm ? ['-R'] : []), '--bind', '127.0.0.3', '-p', port!, '--udp-port', udp!, ...client, cm ? '127.0.0.2' : '127.0.0.1']);
  const [cc, sc] = await Promise.all([cli.exit(), srv.exit()]);
  assert.equal(cc, 0, cli.stderr);
  assert.equal(sc, 0, srv.stderr);
  return { client: cli, server: srv, port: port! };
}

/** The test-info block: from the first dashed line to the next one, both left out. */
function block(stdout: string): string[] {
  const lines = stdout.split('\n');
  const from = lines.indexOf(LINE);
  assert.ok(from >= 0, stdout);
  const to = lines.indexOf(LINE, from + 1);
  return lines.slice(from + 1, to);
}

const common = (title: string) => [
  `                    ${title}`,
  ' Dual-port       : OFF\t\tDevice         : rxe0',
  ' Number of qps   : 1\t\tTransport type : IB',
  ' Connection type : RC\t\tUsing SRQ      : OFF',
  ' PCIe relax order: Unsupported',
  ' ibv_wr* API     : OFF',
];
const tail = (mtu: string, last: string, cm = false) => [
  ` Mtu             : ${mtu}[B]`,
  ' Link type       : Ethernet',
  ' GID index       : 0',
  last,
  ` rdma_cm QPs\t : ${cm ? 'ON' : 'OFF'}`,
  ` Data ex. method : ${cm ? 'rdma_cm' : 'Ethernet'}`,
];

test("write_bw: perftest's block (TX depth min(-t, -n) on the client only, CQ Moderation at most it), RKey/VAddr without OUT; extras on stderr", async () => {
  const { client, server, port } = await pair('write_bw', ['-n', '50', '-s', '4096']);
  const mtu = / Mtu {13}: (\d+)\[B\]/.exec(client.stdout)![1]!;
  assert.deepEqual(block(client.stdout), [...common('RDMA_Write BW Test'), ' TX depth        : 50', ' CQ Moderation   : 50', ...tail(mtu, ' Max inline data : 0[B]')]);
  // The server: no TX depth (not the client, no -b).
  assert.deepEqual(block(server.stdout), [...common('RDMA_Write BW Test'), ' CQ Moderation   : 50', ...tail(mtu, ' Max inline data : 0[B]')]);
  assert.match(client.stdout, /^ local address: LID 0000 QPN 0x[0-9a-f]{4,6} PSN 0x[0-9a-f]{4,6} RKey 0x[0-9a-f]{6,8} VAddr 0x[0-9a-f]{14,16}$/m);
  for (const p of [client, server]) {
    assert.doesNotMatch(p.stdout, /Bound address|TCP port|softrdma/);
    assert.match(p.stdout, /^\n\*{36}\n\* Waiting for client to connect\.\.\. \*\n\*{36}\n|^-{87}\n/);
  }
  assert.match(client.stderr, new RegExp(`^softrdma: bound address 127\\.0\\.0\\.3, TCP port ${port}; peer perftest 6\\.06, softrdma$`, 'm'));
  assert.match(server.stderr, new RegExp(`^softrdma: bound address 127\\.0\\.0\\.2, TCP port ${port}; peer perftest 6\\.06, softrdma$`, 'm'));
});

test('send_bw: RX depth on the receiving server (min(512, -n), made even as perftest), CQ Moderation 1 over 8192 bytes; no RKey', async () => {
  const { client, server } = await pair('send_bw', ['-n', '51', '-s', '16384']);
  const mtu = / Mtu {13}: (\d+)\[B\]/.exec(client.stdout)![1]!;
  assert.deepEqual(block(client.stdout), [...common('Send BW Test'), ' TX depth        : 51', ' CQ Moderation   : 1', ...tail(mtu, ' Max inline data : 0[B]')]);
  assert.deepEqual(block(server.stdout), [...common('Send BW Test'), ' RX depth        : 52', ' CQ Moderation   : 1', ...tail(mtu, ' Max inline data : 0[B]')]);
  assert.match(server.stdout, /^ local address: LID 0000 QPN 0x[0-9a-f]{4,6} PSN 0x[0-9a-f]{4,6}$/m);
});

test('atomic_bw: Outstand reads, and address lines without OUT, RKey or VAddr (ctx_print_pingpong_data prints those for READ and WRITE)', async () => {
  const { client } = await pair('atomic_bw', ['-n', '200']);
  const mtu = / Mtu {13}: (\d+)\[B\]/.exec(client.stdout)![1]!;
  assert.deepEqual(block(client.stdout), [...common('Atomic FETCH_AND_ADD BW Test'), ' TX depth        : 128', ' CQ Moderation   : 100', ...tail(mtu, ' Outstand reads  : 128')]); // the device's max_qp_rd_atom (ctx_set_out_reads)
  assert.match(client.stdout, /^ local address: LID 0000 QPN 0x[0-9a-f]{4,6} PSN 0x[0-9a-f]{4,6}$/m);
  assert.match(client.stdout, /^ remote address: LID 0000 QPN 0x[0-9a-f]{4,6} PSN 0x[0-9a-f]{4,6}$/m);
  assert.doesNotMatch(client.stdout, /RKey|OUT 0x/);
});

test("write_lat -R: TX depth 1 on the client, no CQ Moderation; the server's block ends with perftest's rdma_cm lines", async () => {
  const { client, server } = await pair('write_lat', ['-n', '100'], [], true);
  const mtu = / Mtu {13}: (\d+)\[B\]/.exec(client.stdout)![1]!;
  assert.deepEqual(block(client.stdout), [...common('RDMA_Write Latency Test'), ' TX depth        : 1', ...tail(mtu, ' Max inline data : 0[B]', true)]);
  assert.deepEqual(block(server.stdout), [...common('RDMA_Write Latency Test'), ...tail(mtu, ' Max inline data : 0[B]', true)]);
  assert.ok(server.stdout.includes(`${tail(mtu, '', true).at(-1)}\n${LINE}\n Waiting for client rdma_cm QP to connect\n Please run the same command with the IB/RoCE interface IP\n${LINE}\n local address:`), server.stdout);
  assert.doesNotMatch(client.stdout, /Waiting for client rdma_cm/);
  assert.match(client.stdout, /^ local address: LID 0000 QPN 0x[0-9a-f]{4,6} PSN 0x[0-9a-f]{4,6} RKey 0x[0-9a-f]{6,8} VAddr 0x[0-9a-f]{14,16}$/m);
  assert.match(client.stderr, /^softrdma: bound address 127\.0\.0\.3, rdma_cm port \d+; peer perftest 6\.06, softrdma$/m);
});
