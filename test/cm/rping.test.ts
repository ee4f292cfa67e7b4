// softrdma rping: its buffer format against rping.c's, and a server and a client as two real
// processes (127.0.0.2 ↔ 127.0.0.3, IPv4; ::1 is one address, so IPv6 runs in the VM interop,
// scripts/interop/rping.sh): -C 20 -V -v, a persistent server serving two clients, a client
// towards nobody, usage errors.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { decodeInfo, encodeInfo, pingData, RPING_MIN_BUFSIZE } from '../../src/tools/rping.js';
import { run } from '../helpers/procs.js';

test('ping data as rping_test_client fills it: "rdma-ping-N: " then letters from start, wrapping z → A, NUL at the end', () => {
  const b = Buffer.alloc(64);
  pingData(b, 0, 65);
  assert.equal(b.toString('latin1'), 'rdma-ping-0: ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefghijklmnopqr\0');
  pingData(b, 99, 122);
  assert.equal(b.toString('latin1', 0, 20), 'rdma-ping-99: zABCDE');
  const small = Buffer.alloc(RPING_MIN_BUFSIZE);
  pingData(small, 2147483647, 65);
  assert.equal(small.toString('latin1'), 'rdma-ping-2147483647: ABC\0');
  // struct rping_rdma_info: be64 buf, be32 rkey, be32 size
  const info = encodeInfo(0x1234_5678_9a, 0xdeadbeef, 64);
  assert.equal(info.toString('hex'), '000000123456789a' + 'deadbeef' + '00000040');
  assert.deepEqual(decodeInfo(info), { addr: 0x1234_5678_9a, rkey: 0xdeadbeef, size: 64 });
});

async function server(extra: string[] = []) {
  const s = run(['rping', '-s', '-a', '127.0.0.2', '-p', '0', '--udp-port', '0', '-v', ...extra]);
  const [, port, udp] = await s.waitFor(/listening: port (\d+), RoCE UDP port (\d+)/);
  return { s, port: port!, udp: udp! };
}

test('rping server and client in two processes: -C 20 -V -v, every ping printed on both sides, both exit 0', async () => {
  const { s, port, udp } = await server(['-S', '100']); // both sides need the same -S, as with rping
  const c = run(['rping', '-c', '-a', '127.0.0.2', '-I', '127.0.0.3', '-p', port, '--udp-port', udp, '-C', '20', '-V', '-v', '-S', '100']);
  const [cc, sc] = await Promise.all([c.exit(), s.exit()]);
  assert.equal(cc, 0, c.stderr);
  assert.equal(sc, 0, s.stderr);
  const pings = c.stdout.trim().split('\n');
  assert.equal(pings.length, 20);
  const want = Buffer.alloc(100);
  for (let i = 0; i < 20; i++) {
    pingData(want, i, 65 + i);
    assert.equal(pings[i], `ping data: ${want.toString('latin1', 0, 99)}`);
  }
  assert.match(pings[19]!, /^ping data: rdma-ping-19: TUVW/);
  assert.equal(s.stdout.trim().split('\n').filter((l) => l.startsWith('server ping data: rdma-ping-')).length, 20);
  assert.match(s.stderr, /server DISCONNECT EVENT/);
});

test('rping -P: a persistent server serves one client after another', async () => {
  const { s, port, udp } = await server(['-P']);
  try {
    for (const n of ['3', '5']) {
      const c = run(['rping', '-c', '-a', '127.0.0.2', '-I', '127.0.0.3', '-p', port, '--udp-port', udp, '-C', n, '-V', '-v']);
      assert.equal(await c.exit(), 0, c.stderr);
      assert.equal(c.stdout.trim().split('\n').length, Number(n));
    }
    assert.equal(s.child.exitCode, null);
  } finally {
    s.child.kill();
    await s.exit().catch(() => 0);
  }
  assert.equal(s.stdout.trim().split('\n').filter((l) => l.startsWith('server ping data')).length, 8);
});

test('rping -c towards a port nobody listens on: REJECTED with IB_CM_REJ_INVALID_SERVICE_ID, exit 255 (rping.c exits -1)', async () => {
  const { s, port, udp } = await server();
  const c = run(['rping', '-c', '-a', '127.0.0.2', '-I', '127.0.0.3', '-p', String(Number(port) + 1), '--udp-port', udp, '-C', '1']);
  assert.equal(await c.exit(), 255);
  assert.match(c.stderr, /cma event RDMA_CM_EVENT_REJECTED, error 8 \(IB_CM_REJ_INVALID_SERVICE_ID\)/);
  assert.match(c.stderr, /connect error -1/);
  s.child.kill();
  await s.exit().catch(() => 0);
});

test('rping usage errors exit 22 (EINVAL, as rping.c returns from main)', async () => {
  for (const [args, re] of [
    [['rping'], /give one of -s/],
    [['rping', '-c'], /needs -a/],
    [['rping', '-c', '-a', 'nowhere'], /-a must be an IPv4 or IPv6 address/],
    [['rping', '-s', '-a', '127.0.0.2', '-S', '25'], /-S must be an integer from 26 to 65535/],
    [['rping', '-s'], /the server needs -a/],
  ] as const) {
    const p = run([...args]);
    assert.equal(await p.exit(), 22, `${args.join(' ')}: ${p.stderr}`);
    assert.match(p.stderr, re);
  }
});

test('rping client interrupted (SIGINT, the usual way to stop -C 0): it dies of SIGINT and the server hears the DREQ and exits', async () => {
  const { s, port, udp } = await server();
  const c = run(['rping', '-c', '-a', '127.0.0.2', '-I', '127.0.0.3', '-p', port, '--udp-port', udp, '-v']);
  await c.waitFor(/ping data: rdma-ping-3:/);
  c.child.kill('SIGINT');
  await c.exit(10_000);
  assert.equal(c.child.signalCode, 'SIGINT', c.stderr);
  // Without the exit sweep (a signal with no handler) no DREQ left, and the server waited for ever.
  assert.equal(await s.exit(10_000), 0, s.stderr);
  assert.match(s.stderr, /server DISCONNECT EVENT/);
});
