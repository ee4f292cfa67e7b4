// Node's own test/parallel cases (test-net-* by default; test-http-*, test-https-*,
// test-tls-*, test-cluster-*, test-child-process-fork-net* with --prefix), run twice each: once on plain node and once under the preload
// as smc-run gives it (`--require softrdma/smc/auto` where Node can require() an ES module,
// else `--import`; --preload require|import chooses). The preload must pass exactly the cases
// plain node passes.
// Node's tests are not part of this repository (they come with Node's source and need its
// test/common), so this is a script, not part of `npm test`:
//
//   npm run conformance:node-net -- --fetch [--all] [--prefix test-tls-] [--filter s] [--json]
//   npm run conformance:node-net -- --node-src ~/src/node [...]
//
// --fetch: Node's tests from Debian's `nodejs` source package (trixie: Node 20), through
// scripts/node-tests.sh, which downloads it once per machine with `apt-get source` and keeps
// only test/common, test/fixtures and the cases this runner can use in a cache directory
// (--cache, default /var/cache/softrdma/node-tests or ~/.cache/softrdma/node-tests). Exit
// status 3 when they cannot be had (no apt-get, no network).
// --node-src: a Node source tree (test/common and test/parallel) instead (default $NODE_SRC).
// Without --all or --prefix, the DEFAULT_CASES below run (those that exist in the tree);
// with them, every case whose name starts with one of the prefixes (default test-net-).
// A case's "// Flags:" line is honoured as Node's runner does. --jobs cases run at once
// (default 2), each with its own TEST_THREAD_ID (Node's tmpdir) and SMC runtime directory;
// a case's two runs follow each other. A case that passes on plain node and fails under the
// preload is run again, alone, on both sides: only a second such result is a regression
// (else it is reported as flaky).
//
// --known-failures FILE (default known-failures.json beside this runner's source): the cases
// that fail on plain node too, each with its reason. A plain failure that is not listed, or a
// listed case that passes on plain node, is reported (so the list stays true) but does not
// change the exit status.
//
// For each case the table shows both outcomes, the verdict, and how the preloaded run's
// connections settled (SOFTRDMA_SMC_SUMMARY): SMC-D or TCP, with the fallback reasons.
// Exit status 1 when any case passes on plain node and fails under the preload.

import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { autoModuleUrl, canRequireEsm } from '../../src/tools/smc-run.js';
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

const HERE = path.dirname(fileURLToPath(import.meta.url));
/** The repository root, from dist/test/conformance (compiled) or test/conformance (source). */
const ROOT = [path.resolve(HERE, '../../..'), path.resolve(HERE, '../..')].find((d) => fs.existsSync(path.join(d, 'scripts', 'node-tests.sh')))
  ?? path.resolve(HERE, '../../..');
const FETCH_SCRIPT = path.join(ROOT, 'scripts', 'node-tests.sh');
const DEFAULT_KNOWN = path.join(ROOT, 'test', 'conformance', 'known-failures.json');

const { values } = parseArgs({
  options: {
    'node-src': { type: 'string' },
    fetch: { type: 'boolean' },
    cache: { type: 'string' },
    all: { type: 'boolean' },
    prefix: { type: 'string', multiple: true },
    filter: { type: 'string' },
    jobs: { type: 'string', default: '2' },
    json: { type: 'boolean' },
    timeout: { type: 'string', default: '60' },
    'known-failures': { type: 'string' },
    preload: { type: 'string' },
  },
});

const USAGE = 'usage: node-net (--fetch [--cache DIR] | --node-src DIR) [--all] [--prefix test-net-]... [--filter s] [--jobs N] [--timeout SECONDS] [--known-failures FILE] [--preload require|import] [--json]';
const hasTests = (dir: string) => fs.existsSync(path.join(dir, 'test', 'common', 'index.js'));

/** Node's tests through scripts/node-tests.sh (cached per machine): the tree's path. */
function fetchNodeTests(cache: string | undefined): { dir: string; source: string } {
  const env = { ...process.env, ...(cache ? { SOFTRDMA_NODE_TESTS_CACHE: cache } : {}) };
  const r = spawnSync('bash', [FETCH_SCRIPT], { env, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], timeout: 600_000 });
  if (r.error || r.status !== 0) {
    console.error(`cannot fetch Node's tests: ${r.error ? r.error.message : `${path.relative(ROOT, FETCH_SCRIPT)} exited ${r.status}`}`);
    process.exit(r.status === 2 ? 2 : 3);
  }
  const dir = r.stdout.trim().split('\n').pop()!;
  const stamp = path.join(dir, '.softrdma-source');
  return { dir, source: fs.existsSync(stamp) ? fs.readFileSync(stamp, 'utf8').trim() : dir };
}

if (values.fetch && values['node-src']) {
  console.error(`--fetch and --node-src exclude each other\n${USAGE}`);
  process.exit(2);
}
const fetched = values.fetch ? fetchNodeTests(values.cache) : undefined;
const src = fetched?.dir ?? values['node-src'] ?? process.env.NODE_SRC;
if (!src || !hasTests(src)) {
  console.error(USAGE);
  process.exit(2);
}
const testsFrom = fetched?.source ?? src;
const parallel = path.join(src, 'test', 'parallel');
const prefixes = values.prefix?.length ? values.prefix : ['test-net-'];
const present = fs.readdirSync(parallel)
  .filter((f) => f.endsWith('.js') && prefixes.some((p) => f.startsWith(p)))
  .map((f) => f.slice(0, -3)).sort();
const everything = values.all || values.prefix?.length;
let cases = everything ? present : DEFAULT_CASES.filter((c) => present.includes(c));
if (values.filter) cases = cases.filter((c) => c.includes(values.filter!));
const missing = everything ? [] : DEFAULT_CASES.filter((c) => !present.includes(c));
const TIMEOUT_MS = Number(values.timeout) * 1000;
const JOBS = Math.max(1, Number(values.jobs) || 1);
const AUTO = autoModuleUrl();
if (values.preload !== undefined && values.preload !== 'require' && values.preload !== 'import') {
  console.error(`--preload must be require or import, got ${values.preload}\n${USAGE}`);
  process.exit(2);
}
/** How the preloaded runs load softrdma/smc/auto: as smc-run does, unless --preload says. */
const PRELOAD = (values.preload ?? (canRequireEsm() ? 'require' : 'import')) === 'require'
  ? ['--require', fileURLToPath(AUTO)] : ['--import', AUTO];
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'softrdma-node-net-'));

/**
 * Cases that fail on plain node too, with the reason: { "cases": { "<name>": "<why>" } }; and
 * cases that fail under the preload by design (what the preload cannot do, as docs/smc.md
 * says), with the reason: { "unsupported": { "<name>": "<why>" } }.
 */
const knownFile = values['known-failures'] ?? DEFAULT_KNOWN;
const knownLists = fs.existsSync(knownFile)
  ? JSON.parse(fs.readFileSync(knownFile, 'utf8')) as { cases?: Record<string, string>; unsupported?: Record<string, string> }
  : {};
const known: Record<string, string> = knownLists.cases ?? {};
const unsupported: Record<string, string> = knownLists.unsupported ?? {};

interface Outcome { code: number | null; signal: string | null; timedOut: boolean; output: string; ms: number }

function flagsOf(file: string): string[] {
  const head = fs.readFileSync(file, 'utf8').slice(0, 1500);
  const m = /\/\/ Flags: (.*)/.exec(head);
  return m ? m[1]!.trim().split(/\s+/) : [];
}

/** Process groups of the cases running now: ended with the runner (e.g. by CI's timeout). */
const running = new Set<number>();
for (const sig of ['SIGTERM', 'SIGINT'] as const) {
  process.once(sig, () => {
    for (const pid of running) { try { process.kill(-pid, 'SIGKILL'); } catch { /* gone */ } }
    fs.rmSync(work, { recursive: true, force: true });
    process.exit(sig === 'SIGTERM' ? 143 : 130);
  });
}

function run(file: string, execArgv: string[], env: NodeJS.ProcessEnv): Promise<Outcome> {
  return new Promise((resolve) => {
    const t0 = Date.now();
    // Its own process group, so a timeout also ends the children a case started.
    const child = spawn(process.execPath, [...execArgv, file], { cwd: parallel, env, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    running.add(child.pid!);
    let output = '';
    const keep = (d: Buffer) => { output = (output + d.toString()).slice(-4000); };
    child.stdout.on('data', keep);
    child.stderr.on('data', keep);
    let timedOut = false;
    const kill = () => { try { process.kill(-child.pid!, 'SIGKILL'); } catch { child.kill('SIGKILL'); } };
    const timer = setTimeout(() => { timedOut = true; kill(); }, TIMEOUT_MS);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      // Whatever the case left running in its group (a forked server) goes with it.
      try { process.kill(-child.pid!, 'SIGKILL'); } catch { /* all gone */ }
      running.delete(child.pid!);
      resolve({ code, signal, timedOut, output, ms: Date.now() - t0 });
    });
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

type Verdict = 'same' | 'REGRESSION' | 'flaky' | 'better' | 'unsupported';
interface Row {
  name: string; plain: string; smc: string; verdict: Verdict; seconds: number;
  smcdConns: number; tcpConns: number; reasons: Record<string, number>;
  knownFailure?: string; plainOutput?: string; smcOutput?: string;
}

/** Both runs of one case: plain node, then under the preload, in a fresh runtime directory. */
async function runCase(name: string, slot: number): Promise<{ plain: Outcome; smc: Outcome; sum: Summary }> {
  const file = path.join(parallel, `${name}.js`);
  const flags = flagsOf(file);
  const runtime = fs.mkdtempSync(path.join(work, 'rt-'));
  const summary = path.join(runtime, 'summary.jsonl');
  const base: NodeJS.ProcessEnv = {
    ...process.env, NODE_SKIP_FLAG_CHECK: '1', SOFTRDMA_RUNTIME_DIR: runtime,
    TEST_THREAD_ID: String(slot), NODE_COMMON_PORT: String(12346 + 1000 * slot),
  };
  delete base.NODE_OPTIONS;
  delete base.SOFTRDMA_SMC_SUMMARY;
  // Node's tmpdir helper lives beside test/common; tests that do not refresh it still expect it.
  fs.mkdirSync(path.join(src!, 'test', `.tmp.${slot}`), { recursive: true });
  const plain = await run(file, flags, base);
  const smc = await run(file, [...flags, ...PRELOAD], { ...base, SOFTRDMA_SMC_SUMMARY: summary });
  const sum = readSummary(summary);
  fs.rmSync(runtime, { recursive: true, force: true });
  return { plain, smc, sum };
}

function rowOf(name: string, r: { plain: Outcome; smc: Outcome; sum: Summary }): Row {
  let verdict: Verdict = passed(r.plain) === passed(r.smc) ? 'same' : passed(r.plain) ? 'REGRESSION' : 'better';
  if (verdict === 'REGRESSION' && unsupported[name] !== undefined) verdict = 'unsupported';
  const row: Row = {
    name, plain: status(r.plain), smc: status(r.smc), verdict, seconds: Math.round((r.plain.ms + r.smc.ms) / 100) / 10,
    smcdConns: r.sum.smcd, tcpConns: r.sum.tcp, reasons: r.sum.fallbackReasons,
  };
  if (known[name] !== undefined) row.knownFailure = known[name];
  if (!passed(r.plain)) row.plainOutput = r.plain.output;
  if (verdict === 'REGRESSION' || verdict === 'unsupported') row.smcOutput = r.smc.output;
  return row;
}

const t0 = Date.now();
const rows = new Map<string, Row>();
let next = 0;
await Promise.all(Array.from({ length: Math.min(JOBS, cases.length) }, async (_, slot) => {
  while (next < cases.length) {
    const name = cases[next++]!;
    const row = rowOf(name, await runCase(name, slot));
    rows.set(name, row);
    if (!values.json) process.stderr.write(`${name}: ${row.plain} / ${row.smc}${row.verdict === 'same' ? '' : ` ${row.verdict}`}\n`);
  }
}));
// A regression found while another case ran beside it is checked once more, alone.
for (const row of [...rows.values()].filter((r) => r.verdict === 'REGRESSION')) {
  const again = rowOf(row.name, await runCase(row.name, 0));
  if (again.verdict !== 'REGRESSION') {
    row.verdict = 'flaky';
    row.smc += `, then ${again.plain} / ${again.smc}`;
  }
  if (!values.json) process.stderr.write(`${row.name} again: ${again.plain} / ${again.smc} -> ${row.verdict}\n`);
}
fs.rmSync(work, { recursive: true, force: true });

const all = cases.map((c) => rows.get(c)!);
const regressions = all.filter((r) => r.verdict === 'REGRESSION');
const plainFails = all.filter((r) => r.plain !== 'pass');
const unlisted = plainFails.filter((r) => r.knownFailure === undefined).map((r) => r.name);
const stale = all.filter((r) => r.plain === 'pass' && r.knownFailure !== undefined).map((r) => r.name);
const nowSupported = all.filter((r) => r.smc === 'pass' && unsupported[r.name] !== undefined).map((r) => r.name);
const counts = {
  cases: all.length,
  passBoth: all.filter((r) => r.plain === 'pass' && r.smc === 'pass').length,
  failBoth: all.filter((r) => r.plain !== 'pass' && r.smc !== 'pass').length,
  regressions: regressions.length,
  flaky: all.filter((r) => r.verdict === 'flaky').length,
  better: all.filter((r) => r.verdict === 'better').length,
  unsupported: all.filter((r) => r.verdict === 'unsupported').length,
  seconds: Math.round((Date.now() - t0) / 1000),
};
if (values.json) {
  console.log(JSON.stringify({ node: process.version, tests: testsFrom, prefixes, counts, cases: all, missing, regressions: regressions.length, unlistedPlainFailures: unlisted, staleKnownFailures: stale, passingUnsupported: nowSupported }, null, 2));
} else {
  const shortReason = (k: string) => k.replace(/^SMC_CLC_DECL_/, '').replace(/ \(0x[0-9a-f]+\)$/, '');
  console.log(formatTable([
    ['case', 'node', 'preload', 'verdict', 's', 'SMC-D ends', 'TCP ends (fallback reasons)'],
    ...all.map((r) => [r.name, r.plain, r.smc, r.verdict + (r.plain !== 'pass' && r.knownFailure !== undefined ? ' (known)' : ''), String(r.seconds), String(r.smcdConns),
      `${r.tcpConns}${r.tcpConns ? ` (${Object.entries(r.reasons).map(([k, v]) => `${shortReason(k)} ${v}`).join(', ')})` : ''}`]),
  ]));
  console.log(`\nnode ${process.version}, tests from ${testsFrom}: ${counts.cases} cases (${prefixes.join(' ')}) in ${counts.seconds} s, ` +
    `${counts.passBoth} pass on both, ${counts.failBoth} fail on both, ${counts.regressions} regressions, ${counts.flaky} flaky, ${counts.better} better, ${counts.unsupported} unsupported` +
    (missing.length ? `; not in this tree: ${missing.join(', ')}` : ''));
  if (unlisted.length) console.log(`fail on plain node but not in ${path.relative(process.cwd(), knownFile)}: ${unlisted.join(', ')}`);
  if (stale.length) console.log(`listed in ${path.relative(process.cwd(), knownFile)} but pass on plain node: ${stale.join(', ')}`);
  if (nowSupported.length) console.log(`listed as unsupported in ${path.relative(process.cwd(), knownFile)} but pass under the preload: ${nowSupported.join(', ')}`);
  for (const r of all.filter((x) => x.verdict === 'unsupported')) console.log(`unsupported: ${r.name}: ${unsupported[r.name]}`);
  for (const r of regressions) console.log(`\n--- ${r.name} under the preload:\n${r.smcOutput}`);
}
process.exitCode = regressions.length ? 1 : 0;
