// softrdma perftest's server while the client runs, and what a softrdma peer may send it:
// - the server's waits for the end of the client's run take no --timeout (perftest's server
//   blocks in read() however long -D or -n makes the run), over TCP, with --perftest-only (the
//   C binaries' path) and with -R; a -R server waits for its client without a limit too;
// - the server adopts the client's -D and its margin (-f), and an older client's hello without
//   a margin means the default one;
// - a hello that is not a JSON object, or asks for more than the device has, is refused in words.

import assert from 'node:assert/strict';
import { once } from 'node:events';
import net from 'node:net';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { jsonLines, run, type Proc } from '../helpers/procs.js';

async function pair(name: string, server: string[], client: string[]) {
  const srv = run(['perftest', name, '--bind', '127.0.0.2', '-p', '0', '--udp-port', '0', '--json', ...server]);
  const [, tcp, udp] = await srv.waitFor(/out-of-band TCP port (\d+), RoCE UDP port (\d+)/);
  const cli = run(['perftest', name, '--bind', '127.0.0.3', '-p', tcp!, '--udp-port', udp!, '--json', ...client, '127.0.0.1']);
  return finish(name, srv, cli);
}

async function finish(name: string, srv: Proc, cli: Proc) {
  const [cc, sc] = await Promise.all([cli.exit(30_000), srv.exit(30_000)]);
  assert.equal(cc, 0, `client failed:\n${cli.stderr}`);
  assert.equal(sc, 0, `server failed:\n${srv.stderr}`);
  const pick = (text: string) => jsonLines(text).filter((o) => o.test === name);
  return { client: pick(cli.stdout), server: pick(srv.stdout) };
}

// The client runs 2 s (-D 2; margin 0), twice the server's --timeout of 1 s.
test('write_bw: a server with --timeout 1 waits out a client running -D 2 (softrdma exchange)', async () => {
  const { client, server } = await pair('write_bw', ['--timeout', '1'], ['-D', '2', '-s', '64', '--timeout', '10']);
  assert.ok((client[0]!.iterations as number) > 0);
  assert.equal(server[0]!.verified, true);
});

test('write_bw --perftest-only (the C exchange): the server waits out the client\'s -D 2 with --timeout 1', async () => {
  const { server } = await pair('write_bw', ['--timeout', '1', '--perftest-only'], ['-D', '2', '-s', '64', '--timeout', '10', '--perftest-only']);
  assert.ok((server[0]!.iterations as number) > 0); // the client's report, as perftest's server shows it
});

test('read_lat: the server (which only closes) waits out the client\'s -D 2 with --timeout 1', async () => {
  const { client, server } = await pair('read_lat', ['--timeout', '1'], ['-D', '2', '--timeout', '10']);
  assert.ok((client[0]!.iterations as number) > 0);
  assert.equal(server.length, 0);
});

test('-R: the server waits for its client without a limit, then waits out its -D 2, with --timeout 1', async () => {
  const srv = run(['perftest', 'write_bw', '-R', '--bind', '127.0.0.2', '-p', '0', '--udp-port', '0', '--json', '--timeout', '1']);
  const [, port, udp] = await srv.waitFor(/rdma_cm port (\d+) on 127\.0\.0\.2, RoCE UDP port (\d+)/);
  // Longer than its --timeout: the server must still be there (it gave up after 1 s before).
  await sleep(1500);
  assert.equal(srv.child.exitCode, null, `the server gave up waiting for its client:\n${srv.stderr}`);
  const cli = run(['perftest', 'write_bw', '-R', '--bind', '127.0.0.3', '-p', port!, '--udp-port', udp!, '--json', '-D', '2', '-s', '64', '--timeout', '10', '127.0.0.2']);
  const { server } = await finish('write_bw', srv, cli);
  assert.equal(server[0]!.verified, true);
});

test('send_lat: the server takes the client\'s -D 2 and its margin (it was given -D 8: margin 2 would leave nothing)', async () => {
  const { client, server } = await pair('send_lat', ['-D', '8'], ['-D', '2']);
  for (const r of [client[0]!, server[0]!]) assert.ok((r.iterations as number) > 0 && (r.t_avg as number) > 0, JSON.stringify(r));
});

/**
 * A fake softrdma client: the version message with softrdma's mark, then `hello` as it is
 * given (a JSON text); returns the server's answer line and the server process.
 */
async function helloTo(hello: string): Promise<{ answer: string; srv: Proc }> {
  const srv = run(['perftest', 'write_bw', '--bind', '127.0.0.2', '-p', '0', '--udp-port', '0', '--timeout', '5']);
  const [, tcp] = await srv.waitFor(/out-of-band TCP port (\d+), RoCE UDP port (\d+)/);
  const sock = net.connect(Number(tcp), '127.0.0.1');
  await once(sock, 'connect');
  const version = Buffer.alloc(16);
  version.write('6.06');
  version.write('softrdma/1', 5);
  sock.write(version);
  sock.write(hello + '\n');
  let got = Buffer.alloc(0);
  const answer = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no answer from the server:\n${srv.stderr}`)), 10_000);
    const done = (s: string) => { clearTimeout(timer); resolve(s); };
    sock.on('data', (d: Buffer) => {
      got = Buffer.concat([got, d]);
      const nl = got.indexOf(10, 16);
      if (got.length >= 16 && nl >= 0) done(got.subarray(16, nl).toString());
    });
    sock.on('close', () => done(got.subarray(16).toString()));
    sock.on('error', () => {});
  });
  sock.destroy();
  return { answer, srv };
}

const HELLO = { protocol: 'softrdma-perftest/2', test: 'write_bw', sizes: [64], iters: 10, txDepth: 128, qps: 1, bidir: false, all: false };

test('a hello that is not a JSON object (null) is refused in words, not with a TypeError', async () => {
  const { srv } = await helloTo('null');
  assert.equal(await srv.exit(10_000), 1);
  assert.match(srv.stderr, /^softrdma perftest: out-of-band peer sent null where a JSON object was expected$/m);
  assert.doesNotMatch(srv.stderr, /Cannot read properties/);
});

test('a client whose answer to the hello is null: the client says so', async () => {
  const server = net.createServer((c) => {
    c.on('error', () => {});
    const version = Buffer.alloc(16);
    version.write('6.06');
    version.write('softrdma/1', 5);
    c.write(version);
    c.write('null\n');
  });
  server.listen(0, '127.0.0.2');
  await once(server, 'listening');
  try {
    const port = (server.address() as net.AddressInfo).port;
    const cli = run(['perftest', 'write_bw', '--bind', '127.0.0.3', '-p', String(port), '--udp-port', '0', '--timeout', '5', '127.0.0.2']);
    assert.equal(await cli.exit(10_000), 1);
    assert.match(cli.stderr, /out-of-band peer sent null where a JSON object was expected/);
  } finally {
    server.close();
  }
});

test("the server checks the client's -q and -t against its device and says which options", async () => {
  const { answer, srv } = await helloTo(JSON.stringify({ ...HELLO, qps: 64, txDepth: 4096 }));
  assert.match(JSON.parse(answer).error as string, /-q 64 with -t 4096 needs a completion queue of 263168 entries \(64 x \(4096 \+ 16\)\), more than the device's max_cqe 32767/);
  assert.equal(await srv.exit(10_000), 1);
});

test("a hello's margin: none from an older client is the default one; one that leaves no time is refused", async () => {
  const old = await helloTo(JSON.stringify({ ...HELLO, durationSec: 8 }));
  assert.equal(JSON.parse(old.answer).ok, true);
  await old.srv.exit(10_000).catch(() => {});
  const bad = await helloTo(JSON.stringify({ ...HELLO, durationSec: 2, marginSec: 1 }));
  assert.match(JSON.parse(bad.answer).error as string, /bad margin/);
  await bad.srv.exit(10_000).catch(() => {});
});

test('send_bw: a client killed mid-run ends the receiving server at once (its exchange connection closes), not at -D\'s end', async () => {
  const srv = run(['perftest', 'send_bw', '--bind', '127.0.0.2', '-p', '0', '--udp-port', '0']);
  const [, tcp, udp] = await srv.waitFor(/out-of-band TCP port (\d+), RoCE UDP port (\d+)/);
  const cli = run(['perftest', 'send_bw', '--bind', '127.0.0.3', '-p', tcp!, '--udp-port', udp!, '-D', '30', '-s', '4096', '127.0.0.1']);
  await Promise.all([cli.waitFor(/#bytes/), srv.waitFor(/#bytes/)]);
  // Into the run: the server is counting receives, not in an exchange wait (which a closed
  // connection always ended).
  await sleep(1000);
  const killedAt = Date.now();
  cli.child.kill('SIGKILL');
  await cli.exit();
  const code = await srv.exit(20_000);
  assert.notEqual(code, 0);
  assert.match(srv.stderr, /out-of-band peer closed the connection/);
  assert.ok(Date.now() - killedAt < 5000, `the server ended ${Date.now() - killedAt} ms after the kill (-D 30)`);
});
