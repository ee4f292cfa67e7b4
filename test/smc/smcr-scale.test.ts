// SMC-R at size, between two network namespaces (each process with its own device, brought up
// by `smcr: true`): 256 MiB echoed byte-exact over one connection, and 200 connections at once
// packed into one link group. Skipped, saying why, when namespaces cannot be made.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { jsonLines, runNode, type Proc } from '../helpers/procs.js';
import { testRuntimeDir } from '../helpers/runtime-dir.js';
import { deleteNamespaces, setUpVethPair } from '../helpers/netns.js';

testRuntimeDir('smcr-scale-test');

const PEER = fileURLToPath(new URL('./smcr-scale-peer.js', import.meta.url));
const tag = `sz${process.pid % 100000}`;
const NS_A = `${tag}a`, NS_B = `${tag}b`;
const A = '10.233.14.1', B = '10.233.14.2';
// Each connection waits for discovery's first answer rather than about a round trip: its mode is then determined.
const env = { SOFTRDMA_SMCR_DISCOVERY_WAIT_MS: '5000' };

const skip = setUpVethPair({ tag, nsA: NS_A, nsB: NS_B, addrA: A, addrB: B });

test('SMC-R at size across two namespaces', { skip }, async (t) => {
  const procs: Proc[] = [];
  t.after(async () => {
    for (const p of procs) if (p.child.exitCode === null) p.child.kill('SIGKILL');
    await Promise.all(procs.map((p) => p.exit(5000).catch(() => undefined)));
    deleteNamespaces(NS_A, NS_B);
  });
  const srv = runNode(PEER, ['server', '--bind', A, '--port', '7501'], { netns: NS_A, env });
  procs.push(srv);
  await srv.waitFor(/"listening"/);
  const client = async (args: string[], key: string) => {
    const c = runNode(PEER, ['client', '--bind', B, '--peer', A, '--port', '7501', ...args], { netns: NS_B, env });
    procs.push(c);
    const r = await c.waitUntil((o) => jsonLines(o).find((l) => l.client === key), `the ${key} result`, 120_000);
    assert.equal(await c.exit(10_000), 0, c.stdout + c.stderr);
    return r;
  };

  await t.test('256 MiB echoed over one SMC-R connection, sha256 equal both ways', async () => {
    const r = await client(['--test', 'bulk', '--mib', '256'], 'bulk');
    assert.equal(r.mode, 'SMCR', JSON.stringify(r));
    assert.equal(r.ok, true, JSON.stringify(r));
    assert.equal(r.smcBytesSent, 256 << 20);
  });

  await t.test('200 connections at once: all SMC-R, in one link group, each echo byte-exact', async () => {
    const r = await client(['--test', 'many', '--conns', '200'], 'many');
    assert.equal(r.smcr, 200, JSON.stringify(r));
    assert.deepEqual(r.groups, [200], 'one link group holding all 200');
    assert.equal(r.ok, true);
  });
});
