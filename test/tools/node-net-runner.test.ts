// The runner for Node's own test/parallel cases (test/conformance/node-net.ts) and the script
// that fetches them (scripts/node-tests.sh), against a local stand-in for Debian's archive:
// a file:// deb-src archive with a `nodejs` source package whose upstream tarball holds a few
// cases. The runner must fetch through apt-get source, extract only test/common and the
// cases it runs, reuse what it fetched, tell a regression from a case that fails on both
// sides (listed in the known-failures file or not), and confirm a regression alone.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { runNode } from '../helpers/procs.js';

const RUNNER = fileURLToPath(new URL('../conformance/node-net.js', import.meta.url));
const VERSION = '20.0.0+dfsg';

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
  'test/parallel/test-net-binary.js': "'use strict';\nprocess.exit(process.execArgv.includes('--import') || process.execArgv.includes('--require') ? 1 : 0);\n",
  // Fails on both sides, and is listed as such.
  'test/parallel/test-net-stream.js': "'use strict';\nprocess.exit(1);\n",
  // Fails on both sides, not listed: reported, not a failure of the run.
  'test/parallel/test-net-unlisted.js': "'use strict';\nprocess.exit(2);\n",
  // Another prefix the runner can be asked for.
  'test/parallel/test-tls-noop.js': "'use strict';\n",
  // Not wanted: must not be extracted.
  'test/parallel/test-fs-unrelated.js': "'use strict';\n",
  'lib/net.js': "'use strict';\n",
};

const KNOWN = {
  cases: {
    'test-net-stream': 'fails on purpose',
    'test-net-pingpong': 'a stale entry: passes on plain node',
  },
};

const sha = (alg: string, f: string) => crypto.createHash(alg).update(fs.readFileSync(f)).digest('hex');

/** A deb-src archive at root/archive with nodejs VERSION-1 (unsigned: used with Trusted: yes). */
function standInArchive(root: string): string {
  const top = path.join(root, 'src', `node-v${VERSION.split('+')[0]}`);
  for (const [f, text] of Object.entries(FILES)) {
    fs.mkdirSync(path.dirname(path.join(top, f)), { recursive: true });
    fs.writeFileSync(path.join(top, f), text);
  }
  const archive = path.join(root, 'archive');
  const pool = path.join(archive, 'pool', 'main', 'n', 'nodejs');
  const srcDir = path.join(archive, 'dists', 'trixie', 'main', 'source');
  fs.mkdirSync(pool, { recursive: true });
  fs.mkdirSync(srcDir, { recursive: true });
  const orig = `nodejs_${VERSION}.orig.tar.xz`;
  execFileSync('tar', ['-cJf', path.join(pool, orig), '-C', path.dirname(top), path.basename(top)]);
  const o = path.join(pool, orig);
  const size = fs.statSync(o).size;
  fs.writeFileSync(path.join(srcDir, 'Sources'), [
    'Package: nodejs', 'Binary: nodejs', `Version: ${VERSION}-1`, 'Maintainer: t <t@example.invalid>',
    'Architecture: any', 'Format: 3.0 (quilt)', 'Directory: pool/main/n/nodejs',
    'Files:', ` ${sha('md5', o)} ${size} ${orig}`, 'Checksums-Sha256:', ` ${sha('sha256', o)} ${size} ${orig}`, '', '',
  ].join('\n'));
  const sources = path.join(srcDir, 'Sources');
  fs.writeFileSync(path.join(archive, 'dists', 'trixie', 'Release'), [
    'Suite: trixie', 'Codename: trixie', 'Components: main', 'Architectures: source',
    'SHA256:', ` ${sha('sha256', sources)} ${fs.statSync(sources).size} main/source/Sources`, '',
  ].join('\n'));
  return archive;
}

interface Report {
  tests: string; regressions: number; unlistedPlainFailures: string[]; staleKnownFailures: string[];
  counts: { cases: number; passBoth: number; failBoth: number; regressions: number };
  cases: Array<{ name: string; plain: string; smc: string; verdict: string; smcdConns: number; knownFailure?: string }>;
}

async function runner(args: string[], env: NodeJS.ProcessEnv): Promise<{ code: number; report?: Report; stderr: string }> {
  const p = runNode(RUNNER, args, { env });
  const code = await p.exit(120_000);
  return { code, report: p.stdout.trim() ? JSON.parse(p.stdout) as Report : undefined, stderr: p.stderr };
}

const noApt = spawnSync('apt-get', ['--version']).error !== undefined;

test('node-net runner: fetches Node\'s tests with apt-get source, extracts only what it runs, reuses them, reports a regression', { skip: noApt && 'no apt-get' }, async (t) => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'softrdma-node-net-test-'));
  t.after(() => fs.rmSync(root, { recursive: true, force: true }));
  const archive = standInArchive(root);
  const cache = path.join(root, 'cache');
  const known = path.join(root, 'known.json');
  fs.writeFileSync(known, JSON.stringify(KNOWN));
  const env = { SOFTRDMA_NODE_TESTS_MIRROR: `file://${archive}`, SOFTRDMA_NODE_TESTS_TRUSTED: '1' };
  const args = ['--fetch', '--cache', cache, '--all', '--json', '--timeout', '30', '--jobs', '2', '--known-failures', known];

  const first = await runner(args, env);
  assert.equal(first.code, 1, `a regression must fail the run:\n${first.stderr}`);
  const r = first.report!;
  const byName = new Map(r.cases.map((c) => [c.name, c]));
  assert.deepEqual([...byName.keys()], ['test-net-binary', 'test-net-pingpong', 'test-net-stream', 'test-net-unlisted']);
  assert.equal(byName.get('test-net-pingpong')!.verdict, 'same');
  assert.equal(byName.get('test-net-pingpong')!.smc, 'pass');
  assert.ok(byName.get('test-net-pingpong')!.smcdConns >= 2, 'the pingpong case ran over SMC-D under the preload');
  assert.equal(byName.get('test-net-binary')!.verdict, 'REGRESSION', 'confirmed when run again alone');
  assert.equal(byName.get('test-net-stream')!.verdict, 'same');
  assert.equal(byName.get('test-net-stream')!.knownFailure, 'fails on purpose');
  assert.deepEqual(r.unlistedPlainFailures, ['test-net-unlisted']);
  assert.deepEqual(r.staleKnownFailures, ['test-net-pingpong']);
  assert.deepEqual(r.counts, { ...r.counts, cases: 4, passBoth: 1, failBoth: 2, regressions: 1 });
  assert.match(r.tests, new RegExp(`^nodejs ${VERSION.replace('+', '\\+')}-1 \\(trixie\\), nodejs_`));

  // Only what the runner uses was extracted, under the cache, and nothing of apt's is left.
  const tree = path.join(cache, 'trixie');
  assert.ok(fs.existsSync(path.join(tree, 'test', 'common', 'index.js')));
  assert.ok(fs.existsSync(path.join(tree, 'test', 'parallel', 'test-tls-noop.js')));
  assert.ok(!fs.existsSync(path.join(tree, 'lib')), 'lib/ was extracted');
  assert.ok(!fs.existsSync(path.join(tree, 'test', 'parallel', 'test-fs-unrelated.js')), 'an unrelated case was extracted');
  assert.deepEqual(fs.readdirSync(cache), ['trixie']);

  // A second run uses what the first fetched: the archive may be gone by then. --prefix picks
  // other cases.
  fs.rmSync(archive, { recursive: true, force: true });
  const second = await runner(['--fetch', '--cache', cache, '--prefix', 'test-tls-', '--json', '--known-failures', known], env);
  assert.equal(second.code, 0, second.stderr);
  assert.deepEqual(second.report!.cases.map((c) => [c.name, c.verdict]), [['test-tls-noop', 'same']]);
  const third = await runner(['--node-src', tree, '--filter', 'pingpong', '--json', '--known-failures', known], {});
  assert.equal(third.code, 0, third.stderr);
  assert.deepEqual(third.report!.cases.map((c) => c.name), ['test-net-pingpong']);
});

test('node-net runner: an archive it cannot fetch from is exit status 3, and nothing is left behind', { skip: noApt && 'no apt-get' }, async (t) => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'softrdma-node-net-test-'));
  t.after(() => fs.rmSync(root, { recursive: true, force: true }));
  const cache = path.join(root, 'cache');
  const r = await runner(['--fetch', '--cache', cache], { SOFTRDMA_NODE_TESTS_MIRROR: `file://${path.join(root, 'missing')}`, SOFTRDMA_NODE_TESTS_TRUSTED: '1' });
  assert.equal(r.code, 3);
  assert.match(r.stderr, /cannot fetch Node's tests/);
  assert.deepEqual(fs.existsSync(cache) ? fs.readdirSync(cache) : [], [], 'a failed fetch left something in the cache');
});
