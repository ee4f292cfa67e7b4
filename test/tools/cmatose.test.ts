// softrdma cmatose across two processes: cmatose's RC run (-c connections at once, -C messages
// each way, the server disconnects them all) and udaddy's UD run (--ud: SIDR, datagrams WITH_IMM,
// a reply AH from the GRH), with every output line checked; a client towards a port nobody
// serves; usage errors.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { run } from '../helpers/procs.js';

async function pair(common: string[]) {
  const srv = run(['cmatose', '-b', '127.0.0.2', '-p', '0', '--udp-port', '0', ...common]);
  const [, port, udp] = await srv.waitFor(/listening: port (\d+), RoCE UDP port (\d+)/);
  const cli = run(['cmatose', '-s', '127.0.0.2', '-b', '127.0.0.3', '-p', port!, '--udp-port', udp!, ...common]);
  const [cc, sc] = await Promise.all([cli.exit(), srv.exit()]);
  assert.equal(cc, 0, `client failed:\n${cli.stdout}${cli.stderr}`);
  assert.equal(sc, 0, `server failed:\n${srv.stdout}${srv.stderr}`);
  return { client: cli.stdout.trim().split('\n'), server: srv.stdout.trim().split('\n') };
}

test('cmatose -c 40 -C 20 -S 1000: 40 RC connections at once, 20 messages each way, all disconnected', async () => {
  const { client, server } = await pair(['-c', '40', '-C', '20', '-S', '1000']);
  assert.deepEqual(server, ['cmatose: starting server', 'initiating data transfers', 'completing sends', 'receiving data transfers',
    'data transfers complete', 'cmatose: disconnecting', 'disconnected', 'test complete', 'return status 0']);
  assert.deepEqual(client, ['cmatose: starting client', 'cmatose: connecting', 'receiving data transfers', 'sending replies',
    'data transfers complete', 'test complete', 'return status 0']);
});

test('cmatose -C 0: connections only', async () => {
  const { server } = await pair(['-c', '10', '-C', '0']);
  assert.deepEqual(server, ['cmatose: starting server', 'cmatose: disconnecting', 'disconnected', 'test complete', 'return status 0']);
});

test('cmatose --ud -c 16 -C 10: udaddy over SIDR, datagrams both ways on every id', async () => {
  const { client, server } = await pair(['--ud', '-c', '16', '-C', '10', '-S', '512']);
  assert.deepEqual(server, ['udaddy: starting server', 'receiving data transfers', 'sending replies', 'data transfers complete', 'test complete', 'return status 0']);
  assert.deepEqual(client, ['udaddy: starting client', 'udaddy: connecting', 'initiating data transfers', 'receiving data transfers',
    'data transfers complete', 'test complete', 'return status 0']);
});

test('a client towards a port nobody serves: REJECTED, error 8, return status 8 and exit 8 (cma_handler: ret = event->status)', async () => {
  const srv = run(['cmatose', '-b', '127.0.0.2', '-p', '0', '--udp-port', '0', '--timeout', '5']);
  const [, port, udp] = await srv.waitFor(/listening: port (\d+), RoCE UDP port (\d+)/);
  const other = String(Number(port) === 65535 ? 65534 : Number(port) + 1);
  const cli = run(['cmatose', '-s', '127.0.0.2', '-b', '127.0.0.3', '-p', other, '--udp-port', udp!, '-c', '3']);
  assert.equal(await cli.exit(), 8);
  assert.deepEqual(cli.stdout.trim().split('\n'), ['cmatose: starting client', 'cmatose: connecting', 'cmatose: event: RDMA_CM_EVENT_REJECTED, error: 8',
    'test complete', 'return status 8']);
  assert.equal(cli.stderr, '', 'nothing beyond cmatose\'s own lines');
  assert.equal(await srv.exit(30_000), 1);
});

test('usage errors exit 1, as cmatose\'s usage; a bad -c is named before a missing -b', async () => {
  for (const [args, re] of [[['-c', 'x', '-b', '127.0.0.2'], /-c must be an integer/], [[], /the server needs -b/], [['-s', 'nohost'], /-s must be an IPv4 or IPv6 address/],
    [['-c', 'abc'], /^softrdma cmatose: -c must be an integer from 1 to 10000, got 'abc'$/m], [['--ud', '--bogus'], /unknown option '--bogus'/]] as const) {
    const p = run(['cmatose', ...args]);
    assert.equal(await p.exit(), 1, p.stderr);
    assert.match(p.stderr, re);
  }
});

test('cmatose -S 0: no message size, no messages (create_message sets message_count 0): connections only, status 0', async () => {
  const { client, server } = await pair(['-c', '2', '-S', '0']);
  assert.deepEqual(server, ['cmatose: starting server', 'cmatose: disconnecting', 'disconnected', 'test complete', 'return status 0']);
  assert.deepEqual(client, ['cmatose: starting client', 'cmatose: connecting', 'test complete', 'return status 0']);
});
