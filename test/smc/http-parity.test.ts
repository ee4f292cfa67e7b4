// node:http under the auto preload sees exactly what it sees on plain node: the same responses,
// errors and closes, for every request/response pattern in test/helpers/http-patterns.ts, and
// the process ends by itself. Under the preload the connections must really be SMC-D.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { runNode } from '../helpers/procs.js';
import { testRuntimeDir } from '../helpers/runtime-dir.js';

const runtime = testRuntimeDir('http-parity');
const PATTERNS = fileURLToPath(new URL('../helpers/http-patterns.js', import.meta.url));
const AUTO = pathToFileURL(fileURLToPath(new URL('../../src/smc/auto.js', import.meta.url))).href;

async function patterns(preload: boolean): Promise<{ results: Record<string, string[]>; summary?: Record<string, unknown> }> {
  const summaryFile = path.join(runtime, `summary-${preload}.jsonl`);
  const p = runNode(PATTERNS, [], {
    execArgv: preload ? ['--import', AUTO] : [],
    env: { SOFTRDMA_RUNTIME_DIR: runtime, SOFTRDMA_SMC_SUMMARY: summaryFile },
  });
  // No exit is asked for: the process must end once nothing is left to do.
  assert.equal(await p.exit(30_000), 0, p.stderr);
  const results = JSON.parse(p.stdout.trim().split('\n').at(-1)!) as Record<string, string[]>;
  const summary = preload ? JSON.parse(fs.readFileSync(summaryFile, 'utf8').trim()) as Record<string, unknown> : undefined;
  return summary ? { results, summary } : { results };
}

describe('node:http under the preload', () => {
  it('every pattern ends as on plain node, over SMC-D, and the process exits by itself', async () => {
    const plain = await patterns(false);
    const smc = await patterns(true);
    for (const name of Object.keys(plain.results)) {
      assert.deepEqual(smc.results[name], plain.results[name], `${name}: preload ${JSON.stringify(smc.results[name])} vs plain ${JSON.stringify(plain.results[name])}`);
    }
    assert.deepEqual(Object.keys(smc.results), Object.keys(plain.results));
    // Both ends of every connection are in this process; all but none should be SMC-D.
    const smcd = Number(smc.summary!.smcd ?? 0);
    assert.ok(smcd >= 20, `SMC-D ends: ${JSON.stringify(smc.summary)}`);
  });
});
