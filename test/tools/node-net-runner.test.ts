// The runner for Node's own test-net-* cases (test/conformance/node-net.ts), against a local
// stand-in for Node's repository: it must fetch only test/common and the test-net-* files of
// the running version's tag, reuse what it fetched, and tell a regression from a case that
// fails on both sides.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { runNode } from '../helpers/procs.js';

const RUNNER = fileURLToPath(new URL('../conformance/node-net.js', import.meta.url));
const TAG = `v${process.versions.node}`;

const FILES: Record<string, string> = {
  'test/common/index.js': "'use strict';\nmodule.exports = { PORT: 0 };\n",
  // A real exchange over node:net; passes on both sides (over SMC-D under the preload).
  'test/parallel/test-net-pingpong.js': `'use strict';
require('../common');
const net = require('net');
const server = net.createServer((s) => s.pipe(s));
server.listen(0, '127.0.0.1', () => {
  const c = net.connect(server.address().port, '127.0.0.1', () => c.end('ping'));
  let got = '';
  c.on('data', (d) => { got += d; });
  c.on('close', () => { server.close(); process.exit(got === 'ping' ? 0 : 1); });
});
`,
  // Passes on plain node only: what a regression looks like to the runner.
  'test/parallel/test-net-binary.js': "'use strict';\nprocess.exit(process.execArgv.includes('--import') ? 1 : 0);\n",
  // Fails on both sides: not the preload's fault.
  'test/parallel/test-net-stream.js': "'use strict';\nprocess.exit(1);\n",
  // Not wanted by the runner: must not be downloaded or checked out.
  'test/parallel/test-http-unrelated.js': "'use strict';\n",
  'lib/net.js': "'use strict';\n",
};

function git(cwd: string, ...args: string[]): void {
  execFileSync('git', ['-c', 'user.email=t@example.invalid', '-c', 'user.name=t', ...args], { cwd, stdio: 'ignore' });
}

function standIn(root: string): string {
  const repo = path.join(root, 'node');
  for (const [f, text] of Object.entries(FILES)) {
    fs.mkdirSync(path.dirname(path.join(repo, f)), { recursive: true });
    fs.writeFileSync(path.join(repo, f), text);
  }
  git(repo, 'init', '-q');
  git(repo, 'add', '-A');
  git(repo, 'commit', '-qm', 'stand-in');
  git(repo, 'tag', TAG);
  git(repo, 'config', 'uploadpack.allowFilter', 'true');
  return repo;
}

interface Report { tests: string; regressions: number; cases: Array<{ name: string; plain: string; smc: string; verdict: string; smcdConns: number }> }

async function runner(args: string[]): Promise<{ code: number; report?: Report; stderr: string }> {
  const p = runNode(RUNNER, args);
  const code = await p.exit(120_000);
  return { code, report: p.stdout.trim() ? JSON.parse(p.stdout) as Report : undefined, stderr: p.stderr };
}

test('node-net runner: fetches the running version\'s tests sparsely, reuses them, and reports a regression', async (t) => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'softrdma-node-net-test-'));
  t.after(() => fs.rmSync(root, { recursive: true, force: true }));
  const repo = standIn(root);
  const cache = path.join(root, 'cache');
  const args = ['--fetch', '--node-repo', `file://${repo}`, '--cache', cache, '--all', '--json', '--timeout', '30'];

  const first = await runner(args);
  assert.equal(first.code, 1, `a regression must fail the run:\n${first.stderr}`);
  const byName = new Map(first.report!.cases.map((c) => [c.name, c]));
  assert.deepEqual([...byName.keys()].sort(), ['test-net-binary', 'test-net-pingpong', 'test-net-stream']);
  assert.equal(byName.get('test-net-pingpong')!.verdict, 'same');
  assert.equal(byName.get('test-net-pingpong')!.smc, 'pass');
  assert.ok(byName.get('test-net-pingpong')!.smcdConns >= 2, 'the pingpong case ran over SMC-D under the preload');
  assert.equal(byName.get('test-net-binary')!.verdict, 'REGRESSION');
  assert.equal(byName.get('test-net-stream')!.verdict, 'same');
  assert.equal(first.report!.regressions, 1);
  assert.match(first.report!.tests, new RegExp(`^${TAG} from file://`));

  // Only what the runner needs was checked out.
  assert.ok(!fs.existsSync(path.join(cache, 'lib')), 'lib/ was checked out');
  assert.ok(!fs.existsSync(path.join(cache, 'test', 'parallel', 'test-http-unrelated.js')), 'a non-net test was checked out');

  // A second run uses what the first fetched: the repository may be gone by then.
  fs.rmSync(repo, { recursive: true, force: true });
  const second = await runner([...args, '--filter', 'pingpong']);
  assert.equal(second.code, 0, second.stderr);
  assert.deepEqual(second.report!.cases.map((c) => c.name), ['test-net-pingpong']);
});

test('node-net runner: a repository it cannot fetch from is exit status 3, and nothing is left behind', async (t) => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'softrdma-node-net-test-'));
  t.after(() => fs.rmSync(root, { recursive: true, force: true }));
  const cache = path.join(root, 'cache');
  const r = await runner(['--fetch', '--node-repo', `file://${path.join(root, 'missing')}`, '--cache', cache]);
  assert.equal(r.code, 3);
  assert.match(r.stderr, /cannot fetch Node's tests/);
  assert.ok(!fs.existsSync(cache), 'a failed fetch left its directory');
});
