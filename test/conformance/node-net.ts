// Node's own test/parallel/test-net-* cases, run twice each: once on plain node:net and once
// under `--import softrdma/smc/auto`. The preload must pass exactly the cases plain node
// passes. Node's tests are not part of this repository (they come with Node's source tree
// and need its test/common), so this is a script, not part of `npm test`:
//
//   npm run conformance:node-net -- --fetch [--all] [--filter pingpong] [--json]
//   npm run conformance:node-net -- --node-src ~/src/node [...]
//
// --fetch: take the tests of exactly the running Node version: a shallow, blobless, sparse
// clone of tag v<version> from --node-repo (default Node's GitHub repository) holding only
// test/common and test/parallel/test-net-*.js, kept in --cache (default a directory in the
// system temp dir named after the version) and reused by later runs. Exit status 3 when
// they cannot be had (no git, no network, no such tag).
// --node-src: a Node source checkout (test/common and test/parallel) instead, ideally of
// the same version (default $NODE_SRC). Without --all, the cases below run; the ones that
// exist in that tree. A case's "// Flags:" line is honoured as Node's runner does. Cases
// run one at a time: several use the fixed common.PORT.
//
// For each case the table shows both exit codes, the verdict, and how the preloaded run's
// connections settled (SOFTRDMA_SMC_SUMMARY): SMC-D or TCP, with the fallback reasons.
// Exit status 1 when any case passes on node:net and fails under the preload.

import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { autoModuleUrl } from '../../src/tools/smc-run.js';
import { formatTable } from '../../src/tools/table.js';

/**
 * A representative set: data in both directions, half-close, timeouts, backpressure, byte
 * counters, reconnects, errors. Cases whose server writes first run on TCP by design (the
 * server commits to TCP); the others carry their data over SMC-D under the preload.
 */
const DEFAULT_CASES = [
  'test-net-after-close', 'test-net-allow-half-open', 'test-net-binary', 'test-net-buffersize',
  'test-net-bytes-read', 'test-net-bytes-stats', 'test-net-bytes-written-large', 'test-net-connect-buffer',
  'test-net-connect-options-allowhalfopen', 'test-net-connect-paused-connection', 'test-net-end-close',
  'test-net-end-destroyed', 'test-net-keepalive', 'test-net-large-string', 'test-net-local-address-port',
  'test-net-pingpong', 'test-net-reconnect', 'test-net-remote-address-port', 'test-net-server-close',
  'test-net-server-max-connections', 'test-net-settimeout', 'test-net-socket-byteswritten',
  'test-net-socket-close-after-end', 'test-net-socket-destroy-twice', 'test-net-socket-end-callback',
  'test-net-socket-ready-without-cb', 'test-net-socket-timeout', 'test-net-stream', 'test-net-sync-cork',
  'test-net-throttle', 'test-net-write-after-close', 'test-net-write-cb-on-destroy-before-connect',
  'test-net-write-connect-write', 'test-net-write-fully-async-buffer', 'test-net-write-slow',
];

const { values } = parseArgs({
  options: {
    'node-src': { type: 'string' },
    fetch: { type: 'boolean' },
    'node-repo': { type: 'string', default: 'https://github.com/nodejs/node.git' },
    cache: { type: 'string' },
    all: { type: 'boolean' },
    filter: { type: 'string' },
    json: { type: 'boolean' },
    timeout: { type: 'string', default: '60' },
  },
});

const USAGE = 'usage: node-net (--fetch [--node-repo URL] [--cache DIR] | --node-src DIR) [--all] [--filter s] [--json] [--timeout SECONDS]';
const hasTests = (dir: string) => fs.existsSync(path.join(dir, 'test', 'common', 'index.js'));

/**
 * Node's tests for this very version, cloned once into dir: only test/common and the
 * test-net-* cases are checked out, and only their blobs are downloaded.
 */
function fetchNodeTests(repo: string, tag: string, dir: string): string {
  const stamp = path.join(dir, '.softrdma-tag');
  if (hasTests(dir) && fs.existsSync(stamp) && fs.readFileSync(stamp, 'utf8') === tag) return dir;
  fs.rmSync(dir, { recursive: true, force: true });
  const git = (args: string[], cwd?: string) => {
    const r = spawnSync('git', args, { cwd, encoding: 'utf8', timeout: 300_000, env: { ...process.env, GIT_TERMINAL_PROMPT: '0' } });
    if (r.error || r.status !== 0) {
      fs.rmSync(dir, { recursive: true, force: true });
      const lines = r.stderr?.trim().split('\n') ?? [];
      const why = r.error ? r.error.message : (lines.find((l) => l.startsWith('fatal:')) ?? lines.pop() ?? `exit ${r.status}`);
      console.error(`cannot fetch Node's tests (${tag} from ${repo}): git ${args[0]}: ${why}`);
      process.exit(3);
    }
  };
  git(['clone', '--quiet', '--depth', '1', '--branch', tag, '--filter=blob:none', '--no-checkout', repo, dir]);
  git(['sparse-checkout', 'set', '--no-cone', '/test/common/', '/test/parallel/test-net-*.js'], dir);
  git(['checkout', '--quiet'], dir);
  fs.writeFileSync(stamp, tag);
  return dir;
}

if (values.fetch && values['node-src']) {
  console.error(`--fetch and --node-src exclude each other\n${USAGE}`);
  process.exit(2);
}
const tag = `v${process.versions.node}`;
const src = values.fetch
  ? fetchNodeTests(values['node-repo']!, tag, values.cache ?? path.join(os.tmpdir(), `softrdma-node-tests-${tag}`))
  : values['node-src'] ?? process.env.NODE_SRC;
if (!src || !hasTests(src)) {
  console.error(USAGE);
  process.exit(2);
}
const parallel = path.join(src, 'test', 'parallel');
const present = fs.readdirSync(parallel).filter((f) => /^test-net-.*\.js$/.test(f)).map((f) => f.slice(0, -3));
let cases = values.all ? present : DEFAULT_CASES.filter((c) => present.includes(c));
if (values.filter) cases = cases.filter((c) => c.includes(values.filter!));
const missing = values.all ? [] : DEFAULT_CASES.filter((c) => !present.includes(c));
const TIMEOUT_MS = Number(values.timeout) * 1000;
const AUTO = autoModuleUrl();
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'softrdma-node-net-'));

interface Outcome { code: number | null; signal: string | null; timedOut: boolean; output: string }

function flagsOf(file: string): string[] {
  const head = fs.readFileSync(file, 'utf8').slice(0, 1500);
  const m = /\/\/ Flags: (.*)/.exec(head);
  return m ? m[1]!.trim().split(/\s+/) : [];
}

function run(file: string, execArgv: string[], env: NodeJS.ProcessEnv): Promise<Outcome> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [...execArgv, file], { cwd: parallel, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    const keep = (d: Buffer) => { output = (output + d.toString()).slice(-4000); };
    child.stdout.on('data', keep);
    child.stderr.on('data', keep);
    let timedOut = false;
    const timer = setTimeout(() => { timedOut = true; child.kill('SIGKILL'); }, TIMEOUT_MS);
    child.on('close', (code, signal) => { clearTimeout(timer); resolve({ code, signal, timedOut, output }); });
  });
}

interface Summary { smcd: number; tcp: number; failed: number; fallbackReasons: Record<string, number> }

function readSummary(file: string): Summary {
  const total: Summary = { smcd: 0, tcp: 0, failed: 0, fallbackReasons: {} };
  if (!fs.existsSync(file)) return total;
  for (const line of fs.readFileSync(file, 'utf8').split('\n').filter(Boolean)) {
    const s = JSON.parse(line) as Summary;
    total.smcd += s.smcd;
    total.tcp += s.tcp;
    total.failed += s.failed;
    for (const [k, v] of Object.entries(s.fallbackReasons)) total.fallbackReasons[k] = (total.fallbackReasons[k] ?? 0) + v;
  }
  return total;
}

const status = (o: Outcome) => (o.timedOut ? 'timeout' : o.signal ? o.signal : o.code === 0 ? 'pass' : `fail(${o.code})`);
const passed = (o: Outcome) => !o.timedOut && o.code === 0;

interface Row { name: string; plain: string; smc: string; verdict: string; smcdConns: number; tcpConns: number; reasons: Record<string, number>; smcOutput?: string }
const rows: Row[] = [];
// Node's tmpdir helper lives beside test/common; tests that do not refresh it still expect it.
fs.mkdirSync(path.join(src, 'test', '.tmp.0'), { recursive: true });

for (const name of cases) {
  const file = path.join(parallel, `${name}.js`);
  const flags = flagsOf(file);
  const runtime = fs.mkdtempSync(path.join(work, 'rt-'));
  const summary = path.join(runtime, 'summary.jsonl');
  const base = { ...process.env, NODE_SKIP_FLAG_CHECK: '1', SOFTRDMA_RUNTIME_DIR: runtime };
  const plain = await run(file, flags, base);
  const smc = await run(file, [...flags, '--import', AUTO], { ...base, SOFTRDMA_SMC_SUMMARY: summary });
  const sum = readSummary(summary);
  const verdict = passed(plain) === passed(smc) ? 'same' : passed(plain) ? 'REGRESSION' : 'better';
  const row: Row = { name, plain: status(plain), smc: status(smc), verdict, smcdConns: sum.smcd, tcpConns: sum.tcp, reasons: sum.fallbackReasons };
  if (verdict === 'REGRESSION') row.smcOutput = smc.output;
  rows.push(row);
  if (!values.json) process.stderr.write(`${name}: ${row.plain} / ${row.smc}\n`);
}
fs.rmSync(work, { recursive: true, force: true });

const regressions = rows.filter((r) => r.verdict === 'REGRESSION');
if (values.json) {
  console.log(JSON.stringify({ node: process.version, tests: values.fetch ? `${tag} from ${values['node-repo']}` : src, cases: rows, missing, regressions: regressions.length }, null, 2));
} else {
  const shortReason = (k: string) => k.replace(/^SMC_CLC_DECL_/, '').replace(/ \(0x[0-9a-f]+\)$/, '');
  console.log(formatTable([
    ['case', 'node:net', 'preload', 'verdict', 'SMC-D ends', 'TCP ends (fallback reasons)'],
    ...rows.map((r) => [r.name, r.plain, r.smc, r.verdict, String(r.smcdConns),
      `${r.tcpConns}${r.tcpConns ? ` (${Object.entries(r.reasons).map(([k, v]) => `${shortReason(k)} ${v}`).join(', ')})` : ''}`]),
  ]));
  const bothPass = rows.filter((r) => r.plain === 'pass' && r.smc === 'pass').length;
  console.log(`\nnode ${process.version}, tests ${values.fetch ? `of ${tag} from ${values['node-repo']}` : `from ${src}`}: ${rows.length} cases, ${bothPass} pass on both, ${regressions.length} regressions` +
    (missing.length ? `; not in this tree: ${missing.join(', ')}` : ''));
  for (const r of regressions) console.log(`\n--- ${r.name} under the preload:\n${r.smcOutput}`);
}
process.exitCode = regressions.length ? 1 : 0;
