// SMC-R's own devices (src/smc/smcr/auto-device.ts): processes that create no rxe device and
// pass `smcr: true` get one on the TCP connection's local address when they first need it,
// across two network namespaces joined by veth. Where UDP 4791 is taken on the address, the
// connection is TCP with Linux's "no SMC-R device" reason, byte-exact, and the bring-up is not
// retried for every connection. Skipped, saying why, when namespaces cannot be made.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { jsonLines, runNode, type Proc } from '../helpers/procs.js';
import { testRuntimeDir } from '../helpers/runtime-dir.js';
import { deleteNamespaces, ip, setUpVethPair } from '../helpers/netns.js';
import { DECLINE } from '../../src/smc/clc.js';
import { autoDeviceAllowed } from '../../src/smc/smcr/auto-device.js';

testRuntimeDir('smcr-auto-test');

const PEER = fileURLToPath(new URL('./smcr-auto-peer.js', import.meta.url));
const tag = `sa${process.pid % 100000}`;
const NS_A = `${tag}a`, NS_B = `${tag}b`;
const A = '10.233.11.1', B = '10.233.11.2', B2 = '10.233.11.3';

test('devices are brought up only on IPv4 addresses that are not loopback', () => {
  assert.equal(autoDeviceAllowed('10.1.2.3'), true);
  assert.equal(autoDeviceAllowed('127.0.0.1'), false, 'a loopback peer is on this host: SMC-D');
  assert.equal(autoDeviceAllowed('0.0.0.0'), false);
  assert.equal(autoDeviceAllowed('fe80::1'), false, 'SMC-Rv2 is AF_INET only');
});

const skip = setUpVethPair({
  tag, nsA: NS_A, nsB: NS_B, addrA: A, addrB: B,
  extra: () => ip('-n', NS_B, 'addr', 'add', `${B2}/24`, 'dev', `${tag}vb`),
});
const procs: Proc[] = [];

// A connection waits for the device and the answer this long rather than about one round trip
// (20 ms at most), which a busy machine exceeds: so each connection's outcome is determined.
const env = { SOFTRDMA_SMCR_DISCOVERY_WAIT_MS: '5000' };

function peer(ns: string, args: string[], extraEnv: Record<string, string> = {}): Proc {
  const p = runNode(PEER, args, { netns: ns, env: { ...env, ...extraEnv } });
  procs.push(p);
  return p;
}

async function client(bind: string, port: number, n: number, extra: string[] = [], extraEnv: Record<string, string> = {}): Promise<{ conns: Array<Record<string, unknown>>; done: Record<string, unknown> }> {
  const c = peer(NS_B, ['client', '--bind', bind, '--peer', A, '--port', String(port), '--n', String(n), ...extra], extraEnv);
  const done = await c.waitUntil((out) => jsonLines(out).find((l) => l.done), 'the client done', 60_000);
  assert.equal(await c.exit(10_000), 0, c.stdout + c.stderr);
  return { conns: jsonLines(c.stdout).filter((l) => l.client === 'echo'), done };
}

test('SMC-R brings up its own rxe devices', { skip }, async (t) => {
  t.after(async () => {
    for (const p of procs) if (p.child.exitCode === null) p.child.kill('SIGKILL');
    await Promise.all(procs.map((p) => p.exit(5000).catch(() => undefined)));
    deleteNamespaces(NS_A, NS_B);
  });
  const srv = peer(NS_A, ['server', '--bind', A, '--port', '7301', '--wildcard', '7302']);
  const ready = await srv.waitUntil((out) => jsonLines(out).find((l) => l.ready), 'the server\'s SIDR listens', 20_000);
  assert.deepEqual(ready.devices, [{ name: 'smc_rxe0', driver: 'rxe' }], 'one device on A serves both the specific and the wildcard listener');
  assert.equal((ready.auto as Record<string, number>).created, 1);

  await t.test('a client with no device of its own gets SMC-R on its first connection, and one device for all', async () => {
    const { conns, done } = await client(B, 7301, 3);
    for (const c of conns) assert.equal(c.ok, true, JSON.stringify(c));
    assert.deepEqual(conns.map((c) => c.mode), ['SMCR', 'SMCR', 'SMCR'], JSON.stringify(conns));
    assert.deepEqual(done.devices, [{ name: 'smc_rxe0', driver: 'rxe' }]);
    assert.equal((done.auto as Record<string, number>).created, 1, 'one bring-up for all three connections');
  });

  await t.test('the wildcard listener is discovered and served on the same device', async () => {
    const { conns } = await client(B, 7302, 2);
    assert.ok(conns.every((c) => c.ok), JSON.stringify(conns));
    assert.deepEqual(conns.map((c) => c.mode), ['SMCR', 'SMCR'], JSON.stringify(conns));
  });

  await t.test('short connections to an SMC-R peer are learned: after 8 short ones, TCP at once', async () => {
    // The suite runs with learning off (SOFTRDMA_SMC_LEARN=0); this client has it on, and counts
    // a connection as short by its bytes alone (a loaded machine can take 100 ms over one).
    const { conns } = await client(B, 7301, 12, ['--bytes', '14'], { SOFTRDMA_SMC_LEARN: '1', SOFTRDMA_SMC_LEARN_SHORT_MS: '60000' });
    assert.ok(conns.every((c) => c.ok), JSON.stringify(conns));
    assert.deepEqual(conns.slice(0, 8).map((c) => c.mode), Array(8).fill('SMCR'), JSON.stringify(conns));
    for (const c of conns.slice(8)) {
      assert.equal(c.mode, 'TCP', JSON.stringify(c));
      assert.match(c.cause as string, /learned/);
    }
  });

  await t.test('UDP 4791 taken on the local address: TCP with NOSMCRDEV, byte-exact, and no bring-up per connection', async () => {
    const holder = peer(NS_B, ['holder', '--bind', B2]);
    await holder.waitFor(/"holding"/);
    const { conns, done } = await client(B2, 7301, 3);
    for (const c of conns) {
      assert.equal(c.ok, true);
      assert.equal(c.mode, 'TCP');
      assert.equal(c.reason, DECLINE.NOSMCRDEV, JSON.stringify(c));
      assert.match(c.cause as string, /UDP 4791 is taken/);
    }
    const auto = done.auto as Record<string, number>;
    assert.equal(auto.failed, 1, 'tried once');
    assert.equal(auto.refused, 2, 'the later connections were refused from the memory of it');
    assert.deepEqual(done.devices, []);
  });
});
