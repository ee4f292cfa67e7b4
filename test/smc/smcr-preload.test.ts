// node:http under the auto preload between two network namespaces, with no code change and no
// rxe device created by either program: SMC-R is on by default, each side brings up its device,
// the client discovers the server, and the requests run over SMC-R. The preload's summary line
// (SOFTRDMA_SMC_SUMMARY) says how each process's connections settled. Skipped, saying why,
// when namespaces cannot be made.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { execFileSync } from 'node:child_process';
import { runNode, type Proc } from '../helpers/procs.js';
import { waitFor } from '../helpers/pair.js';
import { testRuntimeDir } from '../helpers/runtime-dir.js';
import { deleteNamespaces, setUpVethPair } from '../helpers/netns.js';

testRuntimeDir('smcr-preload-test');

const PEER = fileURLToPath(new URL('./smcr-preload-peer.js', import.meta.url));
const AUTO = pathToFileURL(fileURLToPath(new URL('../../src/smc/auto.js', import.meta.url))).href;
const tag = `sp${process.pid % 100000}`;
const NS_A = `${tag}a`, NS_B = `${tag}b`;
const A = '10.233.13.1', B = '10.233.13.2';

const skip = setUpVethPair({ tag, nsA: NS_A, nsB: NS_B, addrA: A, addrB: B });

test('node:http across two namespaces under --import softrdma/smc/auto: SMC-R, byte-exact', { skip }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'smcr-preload-'));
  const summary = join(dir, 'summary.jsonl');
  // Each connection waits for the device and the discovery answer (instead of about one round
  // trip, which a busy machine exceeds), so every request's mode is determined.
  const env = { SOFTRDMA_SMC_SUMMARY: summary, SOFTRDMA_SMCR_DISCOVERY_WAIT_MS: '5000' };
  const procs: Proc[] = [];
  t.after(async () => {
    for (const p of procs) if (p.child.exitCode === null) p.child.kill('SIGTERM');
    await Promise.all(procs.map((p) => p.exit(5000).catch(() => undefined)));
    deleteNamespaces(NS_A, NS_B);
    rmSync(dir, { recursive: true, force: true });
  });
  const server = runNode(PEER, ['server', '7401'], { netns: NS_A, env, execArgv: ['--import', AUTO] });
  procs.push(server);
  await server.waitFor(/"listening"/);
  // The server's device comes up after listen(): a query before it would be answered by
  // nobody (and cached as no). Wait, with a bound, for its UDP 4791 in the namespace.
  await waitFor('the server\'s UDP 4791', () => execFileSync('ip', ['netns', 'exec', NS_A, 'ss', '-H', '-uln', 'sport = :4791'], { encoding: 'utf8' }).includes(A));
  const client = runNode(PEER, ['client', A, '7401', '5'], { netns: NS_B, env, execArgv: ['--import', AUTO] });
  procs.push(client);
  const r = await client.waitFor(/"ok":(true|false)/, 60_000);
  assert.equal(r[1], 'true', client.stdout + client.stderr);
  assert.equal(await client.exit(10_000), 0);
  const lines = readFileSync(summary, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { smcr?: number; tcp: number; fallbackReasons: Record<string, number> });
  assert.equal(lines.length, 1, 'the client wrote its summary at exit');
  assert.equal(lines[0]!.smcr, 5, `every request's connection on SMC-R: ${JSON.stringify(lines[0])}`);
  assert.equal(lines[0]!.tcp, 0);
});
