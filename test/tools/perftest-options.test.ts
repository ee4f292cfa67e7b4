// softrdma perftest with the options perftest users reach for first (-D, -x, -F,
// --report_gbits; -q and -b where perftest has them), perftest's table labels
// (4.5-0.17's RESULT_FMT: MB/sec, 2^20 bytes, or Gb/sec) and address lines (BASIC_ADDR_FMT, RDMA_FMT, PERF_GID_FMT),
// the keys of perftest's --out_json report, and a clear hint when the UDP port is taken.

import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { once } from 'node:events';
import { describe, it } from 'node:test';
import { jsonLines, run } from '../helpers/procs.js';

async function pair(name: string, client: string[], server: string[] = []) {
  const srv = run(['perftest', name, '--bind', '127.0.0.2', '-p', '0', '--udp-port', '0', ...server]);
  const [, tcp, udp] = await srv.waitFor(/out-of-band TCP port (\d+), RoCE UDP port (\d+)/);
  const cli = run(['perftest', name, '--bind', '127.0.0.3', '-p', tcp!, '--udp-port', udp!, ...client, '127.0.0.1']);
  const [cc, sc] = await Promise.all([cli.exit(), srv.exit()]);
  assert.equal(cc, 0, cli.stderr);
  assert.equal(sc, 0, srv.stderr);
  return { client: cli, server: srv };
}

describe('perftest as perftest users know it', () => {
  it("tables: perftest 4.5-0.17's labels (MB/sec; Gb/sec with --report_gbits), address lines and GID index; -F accepted", async () => {
    const { client, server } = await pair('write_bw', ['-n', '200', '-s', '4096', '-x', '0', '-F', '--report_gbits'], ['-F']);
    assert.match(server.stdout, /^ #bytes {5}#iterations {4}BW peak\[MB\/sec\] {4}BW average\[MB\/sec\] {3}MsgRate\[Mpps\]$/m);
    assert.match(client.stdout, /^ #bytes {5}#iterations {4}BW peak\[Gb\/sec\] {4}BW average\[Gb\/sec\] {3}MsgRate\[Mpps\]$/m);
    // REPORT_FMT, or REPORT_FMT_EXT (six decimals) where the average is under 0.1 Gb/sec (a
    // loaded machine's fresh process can be that slow).
    assert.match(client.stdout, /^ 4096 {7}200( {14}\d+\.\d\d +\d+\.\d\d *\t\t {3}\d\.\d{6}| +\d+\.\d{6} +\d+\.\d{6} +\d\.\d{6})$/m);
    assert.match(client.stdout, /^ GID index {7}: 0$/m);
    // perftest's %#06x, %#08x, %#016Lx: a minimum width with the 0x counted, so a random PSN
    // below 0x100000 has five digits, not six.
    assert.match(client.stdout, /^ local address: LID 0000 QPN 0x[0-9a-f]{4,6} PSN 0x[0-9a-f]{4,6} RKey 0x[0-9a-f]{6,8} VAddr 0x[0-9a-f]{14,16}$/m);
    assert.match(client.stdout, /^ GID: 00:00:00:00:00:00:00:00:00:00:255:255:127:00:00:03$/m);
    assert.match(client.stdout, /^ GID: 00:00:00:00:00:00:00:00:00:00:255:255:127:00:00:02$/m);
    // The same run in both units: Gb/sec = MiB/sec / 119.2.
    const gb = Number(/^ 4096 +200 +([\d.]+)/m.exec(client.stdout)![1]);
    const mib = Number(/^ 4096 +200 +([\d.]+)/m.exec(server.stdout)![1]);
    assert.ok(Math.abs(gb - mib / 119.2) < 0.02 + gb * 0.01, `${gb} Gb/s vs ${mib} MiB/s`);
  });

  it("--json carries perftest's report keys (MsgSize, n_iterations, BW_peak, BW_average, MsgRate; t_min ... percentile_99.9)", async () => {
    const bw = jsonLines((await pair('read_bw', ['-n', '100', '-s', '8192', '--json'], ['--json'])).client.stdout).find((o) => o.test === 'read_bw')!;
    assert.equal(bw.MsgSize, 8192);
    assert.equal(bw.n_iterations, 100);
    assert.equal(bw.BW_average, bw.bw_avg_MBps);
    assert.ok((bw.BW_peak as number) >= (bw.BW_average as number) && (bw.MsgRate as number) > 0);
    const lat = jsonLines((await pair('send_lat', ['-n', '100', '--json'], ['--json'])).client.stdout).find((o) => o.test === 'send_lat')!;
    for (const k of ['MsgSize', 'n_iterations', 't_min', 't_max', 't_typical', 't_avg', 't_stdev', 'percentile_99', 'percentile_99.9']) assert.ok(k in lat, k);
    assert.equal(lat.t_typical, lat.t_typical_us);
    assert.equal(lat['percentile_99.9'], lat.p999_us);
  });

  it('-D runs for a time instead of -n, and the data is still checked (write_bw, atomic_bw)', async () => {
    for (const name of ['write_bw', 'atomic_bw']) {
      const t0 = Date.now();
      const { client, server } = await pair(name, ['-D', '1', '-s', name === 'atomic_bw' ? '8' : '4096', '--json'], ['--json']);
      const r = jsonLines(client.stdout).find((o) => o.test === name)!;
      assert.ok((r.n_iterations as number) > 10, JSON.stringify(r));
      assert.equal(r.verified, true);
      assert.equal(jsonLines(server.stdout).find((o) => o.test === name)!.verified, true);
      assert.ok(Date.now() - t0 >= 1000);
    }
  });

  it('-x names a GID the device has; -q (even -q 1) and -b on latency tests, -D with -a, -i other than 1, -c other than RC and -n over 10^8 are refused in words', async () => {
    const x = run(['perftest', 'write_bw', '-x', '1', '-p', '0', '--udp-port', '0']);
    assert.equal(await x.exit(), 1);
    assert.match(x.stderr, /^softrdma perftest: no GID at index 1 on rxe0: its GID table has index 0 only/);
    for (const [test, args, re] of [['send_lat', ['-q', '4'], /-q\/--qp is for the bw tests, not send_lat/],
      ['write_lat', ['-q', '1'], /-q\/--qp is for the bw tests, not write_lat \(perftest: Multiple QPs only available on bw tests\)/],
      ['write_bw', ['-i', '2'], /-i\/--ib-port must be an integer from 1 to 1/],
      ['write_bw', ['-c', 'UD'], /-c UD: softrdma's perftest runs RC connections only/],
      ['write_bw', ['-c', 'rc'], /-c\/--connection must be one of RC, UC, UD, XRC, DC, SRD/],
      ['write_bw', ['-n', '100000001'], /-n\/--iters must be an integer from 5 to 100000000/],
      ['write_lat', ['-b'], /-b \(bidirectional\) is for the bw tests, not write_lat/],
      ['send_bw', ['-D', '2', '-a'], /--duration and --all exclude each other/],
      ['write_bw', ['-q', '0'], /-q\/--qp must be an integer from 1 to 16384/]] as const) {
      const p = run(['perftest', test, ...args]);
      assert.equal(await p.exit(), 1); // perftest's parser: FAILURE
      assert.match(p.stderr, re);
    }
  });

  it('a UDP port already taken on the address: the hint for two processes on one host', async () => {
    const taken = dgram.createSocket('udp4');
    taken.bind(4791, '127.0.0.5');
    await once(taken, 'listening');
    try {
      const p = run(['perftest', 'write_bw', '--bind', '127.0.0.5', '-p', '0']);
      assert.equal(await p.exit(), 1);
      assert.match(p.stderr, /^softrdma perftest: UDP port 4791 on 127\.0\.0\.5 is taken .*--bind 127\.0\.0\.2 for the server and --bind 127\.0\.0\.3 for the client/);
    } finally {
      taken.close();
    }
  });
});
