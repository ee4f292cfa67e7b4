// SMC-R writes that wait for room in the peer's RMB after the peer's end() was read, between two
// processes in two network namespaces joined by veth, neither with an rxe device of its own
// (`smcr: true` brings up one, unref()'d). Once the peer's end was read libuv stops reading the
// TCP connection, the device keeps nothing alive, and a write blocked on the peer's consumer
// cursor has no work request outstanding: unless the blocked write holds the event loop, as a
// pending TCP write does, the writer's process exits mid-upload and the peer sees a clean end of
// a truncated stream. And a peer killed meanwhile must still end the wait (TEST_LINK), not hold
// the process for ever. Skipped, saying why, when namespaces cannot be made.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { jsonLines, runNode, type Proc } from '../helpers/procs.js';
import { testRuntimeDir } from '../helpers/runtime-dir.js';
import { deleteNamespaces, ip, setUpVethPair } from '../helpers/netns.js';

testRuntimeDir('smcr-blocked-writer');

const PEER = fileURLToPath(new URL('./smcr-blocked-writer-peer.js', import.meta.url));
const tag = `bw${process.pid % 100000}`;
const NS_A = `${tag}a`, NS_B = `${tag}b`;
/** A: the slow reader; A2: the reader that is killed (each server process has its own device, on its own address). */
const A = '10.233.41.1', B = '10.233.41.2', A2 = '10.233.41.3';

const skip = setUpVethPair({
  tag, nsA: NS_A, nsB: NS_B, addrA: A, addrB: B,
  extra: () => ip('-n', NS_A, 'addr', 'add', `${A2}/24`, 'dev', `${tag}va`),
});
const procs: Proc[] = [];

// Each connection's outcome is determined: the device and discovery's answer are waited for.
const env = { SOFTRDMA_SMCR_DISCOVERY_WAIT_MS: '5000' };
/** The dead-peer test's TEST_LINK interval (Linux's default is 30 s). */
const TESTLINK_MS = 1000;

function peer(ns: string, args: string[], extraEnv: Record<string, string> = {}): Proc {
  const p = runNode(PEER, args, { netns: ns, env: { ...env, ...extraEnv } });
  procs.push(p);
  return p;
}

/** The first JSON line with key === value (value undefined: any line with key), waited for with a bound. */
function line(p: Proc, key: string, value?: unknown, ms = 30_000): Promise<Record<string, unknown>> {
  return p.waitUntil((out) => jsonLines(out).find((l) => key in l && (value === undefined || l[key] === value)), `a line with ${key}`, ms);
}

test('SMC-R: a write blocked on the peer\'s consumer cursor after its end()', { skip }, async (t) => {
  t.after(async () => {
    for (const p of procs) if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill('SIGKILL');
    await Promise.all(procs.map((p) => p.exit(5000).catch(() => undefined)));
    deleteNamespaces(NS_A, NS_B);
  });
  // A 64 KiB RMB and a reader that pauses 5 ms per chunk: the writer waits, again and again,
  // each time far longer than SMC-R's traffic keeps the event loop awake (300 us).
  const srv = peer(NS_A, ['server', '--bind', A, '--port', '7401', '--buffer', String(64 << 10), '--pause', '5']);
  await line(srv, 'ready', true, 20_000);
  const total = 16 << 20;

  /** The server's line for its nth connection's close. */
  const closed = (n: number) => srv.waitUntil((out) => jsonLines(out).filter((l) => l.server === 'closed')[n], `the server's close #${n}`, 60_000);

  await t.test('node:net: the client stays until all 16 MiB are written, and the server reads them all', async () => {
    const c = peer(NS_B, ['client', '--bind', B, '--peer', A, '--port', '7401', '--bytes', String(total), '--api', 'net']);
    assert.equal(await c.exit(60_000), 0, c.stdout + c.stderr);
    const lines = jsonLines(c.stdout);
    assert.ok(lines.some((l) => l.waiting), `no write ever waited: ${c.stdout}`);
    assert.deepEqual(lines.find((l) => 'exit' in l), { exit: true, sent: total, finished: true, writableLength: 0, destroyed: true, mode: 'TCP' }, c.stdout);
    const s = await closed(0);
    assert.deepEqual(s, { server: 'closed', received: total, events: ['end', 'close'], mode: 'TCP' });
  });

  await t.test('SMC-R: the same, the blocked write keeping the client alive; the hold goes with the write', async () => {
    const c = peer(NS_B, ['client', '--bind', B, '--peer', A, '--port', '7401', '--bytes', String(total)]);
    assert.equal(await c.exit(60_000), 0, c.stdout + c.stderr);
    // What the server saw, before judging the client: a short clean end is the failure's signature.
    const s = await closed(1);
    const lines = jsonLines(c.stdout);
    const seen = `client: ${c.stdout}${c.stderr}server: ${JSON.stringify(s)}`;
    assert.equal(lines.find((l) => l.client === 'end')?.mode, 'SMCR', seen);
    assert.ok(lines.some((l) => l.waiting), `no write ever waited: ${seen}`);
    assert.deepEqual(lines.find((l) => 'exit' in l), { exit: true, sent: total, finished: true, writableLength: 0, destroyed: true, mode: 'SMCR', waitingWriters: 0 },
      `the client exited before its upload was done: ${seen}`);
    assert.deepEqual(s, { server: 'closed', received: total, events: ['end', 'close'], mode: 'SMCR' });
  });

  await t.test('SMC-R: with nothing left to write (no end()), the process exits on its own once the last write is in', async () => {
    const c = peer(NS_B, ['client', '--bind', B, '--peer', A, '--port', '7401', '--bytes', String(4 << 20), '--no-end']);
    assert.equal(await c.exit(30_000), 0, c.stdout + c.stderr);
    const s = await closed(2);
    const seen = `client: ${c.stdout}${c.stderr}server: ${JSON.stringify(s)}`;
    assert.ok(jsonLines(c.stdout).some((l) => l.waiting), `no write ever waited: ${seen}`);
    assert.deepEqual(jsonLines(c.stdout).find((l) => 'exit' in l), { exit: true, sent: 4 << 20, finished: false, writableLength: 0, destroyed: false, mode: 'SMCR', waitingWriters: 0 }, seen);
    // Its exit closed the connection with nothing unread on its side: an orderly end after all it wrote.
    assert.deepEqual(s, { server: 'closed', received: 4 << 20, events: ['end', 'close'], mode: 'SMCR' });
  });

  await t.test('SMC-R, a peer killed after its end() while our write waits: TEST_LINK ends the wait (ECONNABORTED), bounded', async () => {
    const dead = peer(NS_A, ['server', '--bind', A2, '--port', '7402', '--stall']);
    await line(dead, 'ready', true, 20_000);
    const c = peer(NS_B, ['client', '--bind', B, '--peer', A2, '--port', '7402', '--bytes', String(total)], { SOFTRDMA_SMCR_TESTLINK_MS: String(TESTLINK_MS) });
    assert.equal((await line(c, 'client', 'end')).mode, 'SMCR', c.stdout);
    await line(c, 'waiting', true);
    // The write has waited longer than TEST_LINK's interval: a live peer that only reads nothing is no dead one.
    await new Promise((r) => setTimeout(r, TESTLINK_MS + 2500));
    assert.equal(c.child.exitCode, null, `the client exited while its write waited for a live peer: ${c.stdout}${c.stderr}`);
    assert.ok(!jsonLines(c.stdout).some((l) => 'error' in l), c.stdout);
    const killedAt = Date.now();
    dead.child.kill('SIGKILL');
    const err = await line(c, 'error', undefined, 20_000);
    assert.equal(err.error, 'ECONNABORTED', JSON.stringify(err));
    assert.match(err.message as string, /TEST_LINK/);
    const ms = (err.at as number) - killedAt;
    // Nothing received since the kill: TEST_LINK after its interval, then 2 s for its response.
    assert.ok(ms < TESTLINK_MS + 2000 + 3000, `the wait ended ${ms} ms after the kill`);
    t.diagnostic(`the blocked write failed ${ms} ms after the peer was killed (TEST_LINK every ${TESTLINK_MS} ms + 2 s)`);
    assert.equal(await c.exit(10_000), 0, c.stdout + c.stderr);
    const exit = jsonLines(c.stdout).find((l) => 'exit' in l)!;
    assert.equal(exit.finished, false);
    assert.equal(exit.destroyed, true);
    assert.equal(exit.waitingWriters, 0, 'the failed write holds nothing');
  });
});
