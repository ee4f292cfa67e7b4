// softrdma perftest -R between two processes: the exchange over an rdma_cm connection (SENDs on
// the "comm" QP, no TCP) and the test's QPs connected by the rdma_cm, for every bw and lat test;
// with --perftest-only (only the messages a C perftest sends: binary address structs, the bw
// report as five 8-byte SENDs) and with -q 2 (two connections on one listener).

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { jsonLines, run } from '../helpers/procs.js';

async function pair(name: string, client: string[], server: string[] = []) {
  const srv = run(['perftest', name, '-R', '--bind', '127.0.0.2', '-p', '0', '--udp-port', '0', '--json', ...server]);
  const [, port, udp] = await srv.waitFor(/rdma_cm port (\d+) on 127\.0\.0\.2, RoCE UDP port (\d+)/);
  const cli = run(['perftest', name, '-R', '--bind', '127.0.0.3', '-p', port!, '--udp-port', udp!, '--json', ...client, '127.0.0.2']);
  const [cc, sc] = await Promise.all([cli.exit(), srv.exit()]);
  assert.equal(cc, 0, `client failed:\n${cli.stderr}`);
  assert.equal(sc, 0, `server failed:\n${srv.stderr}`);
  const pick = (text: string) => jsonLines(text).filter((o) => o.test === name);
  return { client: pick(cli.stdout), server: pick(srv.stdout), clientErr: cli.stderr, serverErr: srv.stderr };
}

for (const name of ['write_bw', 'read_bw', 'send_bw', 'atomic_bw']) {
  test(`${name} -R: connected through the rdma_cm, exchange over it, data checked`, async () => {
    const { client, server, clientErr } = await pair(name, ['-n', '100', ...(name === 'atomic_bw' ? [] : ['-s', '4096'])]);
    assert.equal(client.length, 1);
    assert.equal(client[0]!.iterations, 100);
    assert.equal(client[0]!.verified, true);
    assert.equal(server[0]!.verified, true);
    assert.match(clientErr, /rdma_cm QPs\t : ON/);
    assert.match(clientErr, /^ Data ex\. method : rdma_cm$/m);
    assert.match(clientErr, /^softrdma: bound address 127\.0\.0\.3, rdma_cm port \d+; peer perftest 6\.06, softrdma$/m);
  });
}

for (const name of ['write_lat', 'read_lat', 'send_lat']) {
  test(`${name} -R: latency over QPs the rdma_cm connected`, async () => {
    const { client } = await pair(name, ['-n', '200']);
    assert.equal(client.length, 1);
    assert.equal(client[0]!.iterations, 200);
    assert.ok((client[0]!.t_avg as number) > 0);
  });
}

test('write_bw and send_lat -R --perftest-only: only the messages a C perftest sends', async () => {
  const bw = await pair('write_bw', ['--perftest-only', '-n', '100', '-s', '8192'], ['--perftest-only', '-n', '100', '-s', '8192']);
  assert.equal(bw.client[0]!.iterations, 100);
  // The server shows the client's report, which came as five 8-byte SENDs.
  assert.equal(bw.server[0]!.iterations, 100);
  assert.equal(bw.server[0]!.bytes, 8192);
  assert.equal(bw.client[0]!.bw_avg_MBps, bw.server[0]!.bw_avg_MBps);
  assert.match(bw.clientErr, /^softrdma: bound address 127\.0\.0\.3, rdma_cm port \d+; peer perftest 6\.06$/m);
  const lat = await pair('send_lat', ['--perftest-only', '-n', '100'], ['--perftest-only', '-n', '100']);
  assert.equal(lat.client[0]!.iterations, 100);
  assert.equal(lat.server[0]!.iterations, 100);
});

test('send_bw -R -q 2: two rdma_cm connections on one listener, each QP checked', async () => {
  const { client, server, clientErr } = await pair('send_bw', ['-q', '2', '-n', '50', '-s', '2048']);
  assert.equal(client[0]!.iterations, 100);
  assert.equal(client[0]!.verified, true);
  assert.equal(server[0]!.verified, true);
  assert.equal(clientErr.match(/^ local address:/gm)?.length, 2);
});

test('-R towards an address nobody serves fails with the rdma_cm\'s reason', async () => {
  const srv = run(['perftest', 'write_bw', '-R', '--bind', '127.0.0.2', '-p', '0', '--udp-port', '0', '--timeout', '5']);
  const [, port, udp] = await srv.waitFor(/rdma_cm port (\d+) on 127\.0\.0\.2, RoCE UDP port (\d+)/);
  // The server's device answers a REQ for a port nobody listens on with REJ(INVALID_SERVICE_ID).
  const cli = run(['perftest', 'write_bw', '-R', '--bind', '127.0.0.3', '-p', String(Number(port) === 65535 ? 65534 : Number(port) + 1), '--udp-port', udp!, '127.0.0.2']);
  const cc = await cli.exit();
  assert.notEqual(cc, 0);
  assert.match(cli.stderr, /REJECTED, status 8/);
  // As perftest's rdma_server_connect (and our TCP server), the server waits for its client
  // without limit (its --timeout is for the exchange; perftest-peer-run.test.ts waits it out).
  assert.equal(srv.child.exitCode, null, `the server gave up waiting:\n${srv.stderr}`);
  srv.child.kill('SIGTERM');
  await srv.exit(10_000).catch(() => 0);
});

test('-R with a host name: resolved as perftest resolves it (rdma_getaddrinfo), to --bind\'s family; a name that does not resolve is a usage error', async () => {
  const srv = run(['perftest', 'write_bw', '-R', '--bind', '127.0.0.1', '-p', '0', '--udp-port', '0', '--json']);
  const [, port, udp] = await srv.waitFor(/rdma_cm port (\d+) on 127\.0\.0\.1, RoCE UDP port (\d+)/);
  const cli = run(['perftest', 'write_bw', '-R', '--bind', '127.0.0.3', '-p', port!, '--udp-port', udp!, '--json', '-n', '20', '-s', '4096', 'localhost']);
  const [cc, sc] = await Promise.all([cli.exit(), srv.exit()]);
  assert.equal(cc, 0, `client failed:\n${cli.stderr}`);
  assert.equal(sc, 0, `server failed:\n${srv.stderr}`);
  assert.equal(jsonLines(cli.stdout).find((o) => o.test === 'write_bw')?.iterations, 20);
  const bad = run(['perftest', 'write_bw', '-R', '--bind', '127.0.0.3', '-p', port!, 'no-such-host.invalid']);
  assert.equal(await bad.exit(), 1);
  assert.match(bad.stderr, /server-host must be an IPv4 or IPv6 address or a host name that resolves to an IPv4 address, got 'no-such-host\.invalid'/);
});

test('-R -D: a client killed mid-run (no DREQ comes) ends the server\'s wait after -D and --timeout, not never', async () => {
  const srv = run(['perftest', 'write_bw', '-R', '--bind', '127.0.0.2', '-p', '0', '--udp-port', '0', '--timeout', '2']);
  const [, port, udp] = await srv.waitFor(/rdma_cm port (\d+) on 127\.0\.0\.2, RoCE UDP port (\d+)/);
  const cli = run(['perftest', 'write_bw', '-R', '--bind', '127.0.0.3', '-p', port!, '--udp-port', udp!, '-D', '3', '-s', '4096', '127.0.0.2']);
  await cli.waitFor(/#bytes/);
  const killedAt = Date.now();
  cli.child.kill('SIGKILL');
  await cli.exit();
  // The server adopted the client's -D 3; its wait for the end of the run is bounded by 3 s + 2 s.
  const code = await srv.exit(20_000);
  assert.notEqual(code, 0);
  // Killed during the run: the wait for its end gives up after 3 s + 2 s; killed a moment
  // earlier, a plain exchange wait after --timeout's 2 s. Either way, not never.
  assert.match(srv.stderr + srv.stdout, /peer silent for (5000|2000) ms/);
  assert.ok(Date.now() - killedAt < 12_000, `the server ended ${Date.now() - killedAt} ms after the kill`);
});
