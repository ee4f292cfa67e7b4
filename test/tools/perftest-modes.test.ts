// softrdma perftest between two processes in the modes perftest users reach for after the
// basics: -q (each QP does -n, the table counts them all), -b (both sides send; the table
// shows the sum), -D on send_bw and send_lat, and --perftest-only, where both sides speak
// only the C binaries' exchange (the path a C peer takes; no data check, no option hand-over).

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { jsonLines, run } from '../helpers/procs.js';

async function pair(name: string, client: string[], server: string[] = []) {
  const srv = run(['perftest', name, '--bind', '127.0.0.2', '-p', '0', '--udp-port', '0', '--json', ...server]);
  const [, tcp, udp] = await srv.waitFor(/out-of-band TCP port (\d+), RoCE UDP port (\d+)/);
  const cli = run(['perftest', name, '--bind', '127.0.0.3', '-p', tcp!, '--udp-port', udp!, '--json', ...client, '127.0.0.1']);
  const [cc, sc] = await Promise.all([cli.exit(), srv.exit()]);
  assert.equal(cc, 0, `client failed:\n${cli.stderr}`);
  assert.equal(sc, 0, `server failed:\n${srv.stderr}`);
  const pick = (text: string) => jsonLines(text).filter((o) => o.test === name);
  return { client: pick(cli.stdout), server: pick(srv.stdout), clientErr: cli.stderr, serverErr: srv.stderr };
}

for (const name of ['write_bw', 'send_bw']) {
  test(`${name} -q 4: four QPs, -n each, every QP's data checked`, async () => {
    const { client, server, clientErr } = await pair(name, ['-q', '4', '-n', '50', '-s', '4096']);
    assert.equal(client[0]!.iterations, 200);
    assert.equal(client[0]!.verified, true);
    assert.equal(server[0]!.verified, true);
    assert.equal(server[0]!.iterations, 200);
    assert.equal(clientErr.match(/^ local address:/gm)?.length, 4);
    assert.equal(clientErr.match(/^ remote address:/gm)?.length, 4);
  });
}

for (const name of ['write_bw', 'read_bw', 'send_bw', 'atomic_bw']) {
  test(`${name} -b: both directions, data checked both ways, the same summed line on both sides`, async () => {
    const { client, server } = await pair(name, ['-b', '-n', '60', ...(name === 'atomic_bw' ? [] : ['-s', '8192'])]);
    assert.equal(client[0]!.verified, true);
    assert.equal(server[0]!.verified, true);
    assert.equal(client[0]!.iterations, 60);
    assert.equal(client[0]!.bw_avg_MBps, server[0]!.bw_avg_MBps);
  });
}

test('send_bw -D 1 and send_lat -D 1: timed runs end on both sides, the data still checked', async () => {
  const t0 = Date.now();
  const bw = await pair('send_bw', ['-D', '1', '-s', '4096']);
  assert.ok(Date.now() - t0 >= 1000);
  assert.ok((bw.client[0]!.iterations as number) > 10);
  assert.equal(bw.client[0]!.verified, true);
  assert.ok((bw.server[0]!.iterations as number) > 10);
  const lat = await pair('send_lat', ['-D', '1']);
  for (const r of [lat.client[0]!, lat.server[0]!]) {
    assert.ok((r.iterations as number) > 10, JSON.stringify(r));
    assert.ok((r.tps_average as number) > 0 && (r.t_avg as number) > 0);
  }
});

test('send_lat -D 1 prints perftest\'s timed table (t_avg, tps average)', async () => {
  const srv = run(['perftest', 'send_lat', '--bind', '127.0.0.2', '-p', '0', '--udp-port', '0']);
  const [, tcp, udp] = await srv.waitFor(/out-of-band TCP port (\d+), RoCE UDP port (\d+)/);
  const cli = run(['perftest', 'send_lat', '--bind', '127.0.0.3', '-p', tcp!, '--udp-port', udp!, '-D', '1', '127.0.0.1']);
  assert.equal(await cli.exit(), 0, cli.stderr);
  assert.equal(await srv.exit(), 0, srv.stderr);
  for (const p of [cli, srv]) {
    assert.match(p.stdout, /^ #bytes {8}#iterations {7}t_avg\[usec\] {4}tps average$/m);
    assert.match(p.stdout, /^ 2 {7}\s+\d+ +\d+\.\d\d +\d+\.\d\d/m);
  }
});

for (const name of ['write_bw', 'read_bw', 'send_bw', 'atomic_bw', 'write_lat', 'read_lat', 'send_lat']) {
  test(`--perftest-only ${name}: the C binaries' exchange alone carries a run`, async () => {
    const args = ['--perftest-only', '-n', '100', ...(name === 'atomic_bw' ? [] : ['-s', name.endsWith('_lat') ? '64' : '4096'])];
    const { client, server, clientErr } = await pair(name, args, args);
    assert.match(clientErr, /^softrdma: bound address 127\.0\.0\.3, TCP port \d+; peer perftest 6\.06$/m); // not ', softrdma'
    assert.equal(client[0]!.iterations, 100);
    assert.equal(client[0]!.bytes, name === 'atomic_bw' ? 8 : name.endsWith('_lat') ? 64 : 4096);
    if (name.endsWith('_bw')) assert.equal(client[0]!.verified, null); // nothing to check against without the extension
    // perftest's servers: the client's report for one-way RDMA bw, their own for send and the
    // ping-pongs, nothing for read_lat.
    if (name === 'read_lat') assert.equal(server.length, 0);
    else assert.equal(server[0]!.iterations, 100);
  });
}

test('atomic_lat (ib_atomic_lat): the client times 8-byte atomics, the server prints no table; -A picks the operation', async () => {
  for (const type of ['FETCH_AND_ADD', 'CMP_AND_SWAP']) {
    const { client, server, clientErr } = await pair('atomic_lat', ['-n', '100', ...(type === 'CMP_AND_SWAP' ? ['-A', type] : [])]);
    assert.equal(client.length, 1);
    assert.equal(client[0]!.bytes, 8);
    assert.equal(client[0]!.iterations, 100);
    assert.ok((client[0]!.t_min_us as number) > 0);
    assert.equal(server.length, 0, 'read_lat\'s and atomic_lat\'s servers report nothing');
    assert.match(clientErr, new RegExp(`^ {20}Atomic ${type} Latency Test$`, 'm'));
    assert.match(clientErr, /^ Outstand reads {2}: \d+$/m);
  }
});

test('atomic_bw -A CMP_AND_SWAP: compare with 0 and swap in 0, so the target does not move (checked on both sides)', async () => {
  const { client, server, clientErr } = await pair('atomic_bw', ['-n', '200', '-A', 'CMP_AND_SWAP']);
  assert.equal(client[0]!.verified, true);
  assert.equal(server[0]!.verified, true);
  assert.match(clientErr, /^ {20}Atomic CMP_AND_SWAP BW Test$/m);
});
