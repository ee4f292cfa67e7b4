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
import { deleteNamespaces, ip, setUpVethPair } from '../helpers/netns.js';

testRuntimeDir('smcr-preload-test');

const PEER = fileURLToPath(new URL('./smcr-preload-peer.js', import.meta.url));
const AUTO = pathToFileURL(fileURLToPath(new URL('../../src/smc/auto.js', import.meta.url))).href;
const tag = `sp${process.pid % 100000}`;
const NS_A = `${tag}a`, NS_B = `${tag}b`;
const A = '10.233.13.1', B = '10.233.13.2';
/** The https server's: UDP 4791 on A is the http server process's (one device per address and host). */
const A2 = '10.233.13.3';

const skip = setUpVethPair({ tag, nsA: NS_A, nsB: NS_B, addrA: A, addrB: B, extra: () => ip('-n', NS_A, 'addr', 'add', `${A2}/24`, 'dev', `${tag}va`) });

/** Does a process in NS_A hold UDP 4791 on addr (its rxe device is up)? */
const udp4791 = (addr: string) => execFileSync('ip', ['netns', 'exec', NS_A, 'ss', '-H', '-uln', 'sport = :4791'], { encoding: 'utf8' }).includes(`${addr}:4791`);

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
  const server = runNode(PEER, ['server', '7401', A], { netns: NS_A, env, execArgv: ['--import', AUTO] });
  procs.push(server);
  await server.waitFor(/"listening"/);
  // The server's device comes up after listen(): a query before it would be answered by
  // nobody (and cached as no). Wait, with a bound, for its UDP 4791 in the namespace.
  await waitFor('the server\'s UDP 4791', () => udp4791(A));
  const client = runNode(PEER, ['client', A, '7401', '5'], { netns: NS_B, env, execArgv: ['--import', AUTO] });
  procs.push(client);
  const r = await client.waitFor(/"ok":(true|false)/, 60_000);
  assert.equal(r[1], 'true', client.stdout + client.stderr);
  assert.equal(await client.exit(10_000), 0);
  const lines = readFileSync(summary, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { smcr?: number; tcp: number; fallbackReasons: Record<string, number> });
  assert.equal(lines.length, 1, 'the client wrote its summary at exit');
  assert.equal(lines[0]!.smcr, 5, `every request's connection on SMC-R: ${JSON.stringify(lines[0])}`);
  assert.equal(lines[0]!.tcp, 0);

  await t.test('node:https: the first connection is node:tls\'s own and asks; the next ones are TLS over SMC-R', async () => {
    rmSync(summary, { force: true });
    const hs = runNode(PEER, ['https-server', '7402'], { netns: NS_A, env, execArgv: ['--import', AUTO] });
    procs.push(hs);
    await hs.waitFor(/"listening"/);
    // Its wildcard listener brings up a device on A2; A's UDP 4791 is the http server's, so that
    // bring-up fails (one device per address and host), and the https server is found on A2.
    await waitFor('the https server\'s UDP 4791', () => udp4791(A2));
    const hc = runNode(PEER, ['https-client', A2, '7402', '4'], { netns: NS_B, env, execArgv: ['--import', AUTO] });
    procs.push(hc);
    const rr = await hc.waitFor(/"ok":(true|false)/, 60_000);
    assert.equal(rr[1], 'true', hc.stdout + hc.stderr);
    assert.equal(await hc.exit(10_000), 0);
    const sum = JSON.parse(readFileSync(summary, 'utf8').trim().split('\n')[0]!) as { smcr?: number; tcp: number };
    // The first is node:tls's own socket, which the preload does not count; the other three SMC-R.
    assert.equal(sum.smcr, 3, `${JSON.stringify(sum)} ${hc.stdout}`);
    assert.equal(sum.tcp, 0, JSON.stringify(sum));
  });
});
