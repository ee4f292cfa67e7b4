// perftest and pingpong between two real processes on 127.0.0.2 and 127.0.0.3: every test
// type, data checked end to end, and the rdma-core exchange format.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { jsonLines, run } from '../helpers/procs.js';
import { decodeDest, encodeDest, MSG_BYTES } from '../../src/tools/pingpong.js';

async function perftest(name: string, extra: string[]) {
  const server = run(['perftest', name, '--bind', '127.0.0.2', '-p', '0', '--udp-port', '0', '--json']);
  const [, tcp, udp] = await server.waitFor(/out-of-band TCP port (\d+), RoCE UDP port (\d+)/);
  const client = run(['perftest', name, '--bind', '127.0.0.3', '-p', tcp!, '--udp-port', udp!, '--json', '--counters', ...extra, '127.0.0.1']);
  const [cc, sc] = await Promise.all([client.exit(), server.exit()]);
  assert.equal(cc, 0, `client failed:\n${client.stderr}`);
  assert.equal(sc, 0, `server failed:\n${server.stderr}`);
  return { client: jsonLines(client.stdout), server: jsonLines(server.stdout) };
}

for (const name of ['write_bw', 'read_bw', 'send_bw', 'atomic_bw']) {
  test(`perftest ${name} across two processes: data verified on both sides`, async () => {
    const { client, server } = await perftest(name, ['-n', '300']);
    const r = client.find((o) => o.test === name)!;
    assert.equal(r.iterations, 300);
    assert.equal(r.verified, true);
    assert.ok((r.bw_avg_MBps as number) > 0 && (r.bw_peak_MBps as number) >= (r.bw_avg_MBps as number));
    assert.equal(server.find((o) => o.test === name)!.verified, true);
    const counters = client.find((o) => o.counters)!.counters as { qp: Record<string, number> };
    const perMsg = name === 'write_bw' || name === 'send_bw' ? 16 : 1; // 64 KiB at MTU 4096
    assert.ok(counters.qp.sent_pkts! >= 300 * perMsg, `sent ${counters.qp.sent_pkts} packets`);
  });
}

for (const name of ['write_lat', 'read_lat', 'send_lat']) {
  test(`perftest ${name} across two processes`, async () => {
    const { client } = await perftest(name, ['-n', '200', '-s', '100']);
    const r = client.find((o) => o.test === name)!;
    assert.equal(r.bytes, 100);
    assert.equal(r.iterations, 200);
    assert.ok((r.t_min_us as number) > 0);
    assert.ok((r.t_min_us as number) <= (r.t_typical_us as number) && (r.t_typical_us as number) <= (r.p99_us as number));
  });
}

test('perftest --all covers 2 B to 8 MiB, multi-packet messages verified at every size', async () => {
  const { client } = await perftest('write_bw', ['-a', '-n', '5']);
  const sizes = client.filter((o) => o.test === 'write_bw').map((o) => o.bytes);
  assert.deepEqual(sizes, Array.from({ length: 23 }, (_, i) => 2 << i));
  assert.ok(client.filter((o) => o.test).every((o) => o.verified === true));
});

test('perftest: a client asking for another test is refused with a reason, on both sides', async () => {
  const server = run(['perftest', 'write_bw', '--bind', '127.0.0.2', '-p', '0', '--udp-port', '0']);
  const [, tcp, udp] = await server.waitFor(/out-of-band TCP port (\d+), RoCE UDP port (\d+)/);
  const client = run(['perftest', 'read_bw', '--bind', '127.0.0.3', '-p', tcp!, '--udp-port', udp!, '127.0.0.1']);
  const [cc, sc] = await Promise.all([client.exit(), server.exit()]);
  assert.notEqual(cc, 0);
  assert.notEqual(sc, 0);
  assert.match(client.stderr, /server refused: server runs write_bw, client asked for read_bw/);
});

test('perftest: bad options are usage errors naming the option, exit 1 (perftest\'s parser returns FAILURE)', async () => {
  const p = run(['perftest', 'write_bw', '--size', '0']);
  assert.equal(await p.exit(), 1);
  assert.match(p.stderr, /--size must be an integer/);
  const q = run(['perftest', 'atomic_bw', '-s', '16']);
  assert.equal(await q.exit(), 1);
  assert.match(q.stderr, /Message size cannot be changed for Atomic tests/); // perftest's force_dependecies
});

test('pingpong message: the rdma-core layout, 52 bytes with the NUL', () => {
  const gid = Buffer.from('00000000000000000000ffff7f000002', 'hex');
  const msg = encodeDest({ lid: 0, qpn: 0x11, psn: 0xabcdef, gid });
  assert.equal(msg.length, MSG_BYTES);
  assert.equal(msg.toString('latin1'), '0000:000011:abcdef:00000000000000000000ffff7f000002\0');
  assert.deepEqual(decodeDest(msg), { lid: 0, qpn: 0x11, psn: 0xabcdef, gid });
  assert.throws(() => decodeDest(Buffer.from('0000:000011:abcdef:zz\0')), /malformed peer address/);
});

for (const [kind, extra] of [['rc', []], ['ud', []], ['rc', ['-e']]] as const) {
  test(`pingpong ${kind}${extra.length ? ` ${extra.join(' ')}` : ''} across two processes`, async () => {
    const args = [...(kind === 'rc' ? ['-n', '300', '-c'] : ['-n', '300']), ...extra];
    const server = run(['pingpong', kind, '--bind', '127.0.0.2', '-p', '0', '--udp-port', '0', ...args]);
    const [, tcp, udp] = await server.waitFor(/listening: TCP port (\d+), UDP port (\d+)/);
    const client = run(['pingpong', kind, '--bind', '127.0.0.3', '-p', tcp!, '--udp-port', udp!, ...args, '127.0.0.1']);
    const [cc, sc] = await Promise.all([client.exit(), server.exit()]);
    assert.equal(cc, 0, client.stderr);
    assert.equal(sc, 0, server.stderr);
    for (const p of [client, server]) {
      // ud_pingpong.c has a colon before the GID in the local line, rc_pingpong.c a comma.
      assert.match(p.stdout, /local address: {2}LID 0x0000, QPN 0x[0-9a-f]{6}, PSN 0x[0-9a-f]{6}[,:] GID ::ffff:127\.0\.0\.[23]/);
      assert.match(p.stdout, /300 iters in [\d.]+ seconds = [\d.]+ usec\/iter/);
      assert.doesNotMatch(p.stdout, /invalid data/);
    }
    const size = kind === 'rc' ? 4096 : 1024; // rdma-core's defaults (ud_pingpong.c's code says 1024, its --help 2048)
    assert.match(client.stdout, new RegExp(`${size * 300 * 2} bytes in`));
  });
}
