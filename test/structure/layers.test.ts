// The dependency rule of docs/architecture.md, checked on the code: which layer of src/ may
// import which, and no import cycle at run time. The layer rule reads the TypeScript sources
// (an `import type` is a dependency too, though the compiler erases it); the cycle check reads
// the compiled JavaScript, where only imports of values remain.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
const srcDir = join(root, 'src');
const distSrcDir = join(root, 'dist/src');

/** Who may import whom: each layer may import itself and the layers listed. */
const ALLOWED: Record<string, readonly string[]> = {
  // The shared vocabulary (the kernel-headers' role): the bottom. sys (the one libc handle, bpf(2))
  // throws abi's errors.
  abi: [],
  sys: ['abi'],
  uapi: ['abi'],
  // The public verbs API reaches providers only through what index.ts wires up.
  verbs: ['abi', 'uapi'],
  // A provider implements uapi's provider interface; rxe also sets socket options through sys.
  'providers/rxe': ['abi', 'uapi', 'sys'],
  // The shared-memory device: errors from abi, memfd/mmap through sys.
  ism: ['abi', 'sys'],
  // The connection manager: wire codecs and state machines over abi; the GSI through verbs.
  cm: ['abi', 'sys', 'verbs'],
  // SMC uses ism (SMC-D), verbs (SMC-R) and cm (SMC-R discovery: a SIDR query through the
  // device's CM agent, as DESIGN.md's layer diagram has it), never a provider's internals.
  // SMC-R brings up the rxe devices it needs through the public verbs entry point
  // (createRxeDevice), as an application would, imported lazily (smc/smcr/auto-device.ts).
  smc: ['abi', 'ism', 'sys', 'verbs', 'cm', 'index'],
  // src/index.ts, the composition root of the verbs entry point: the one place that names a provider.
  index: ['abi', 'uapi', 'verbs', 'providers/rxe'],
  tools: ['index', 'abi', 'verbs', 'ism', 'smc', 'sys', 'cm'],
  cli: ['index', 'abi', 'verbs', 'ism', 'smc', 'sys', 'cm', 'tools'],
};

/**
 * Runtime import cycles tolerated for now, each as its files (relative to src/, sorted). None
 * are left (rxe's qp/requester/completer and smc's socket/status went in the 2026-12-03
 * restructure). The test fails on any other cycle, and on an entry here that no longer exists.
 */
const KNOWN_CYCLES: readonly string[][] = [];

/** The layer of a file under src/ (path relative to src/, with / separators). */
function layerOf(rel: string): string {
  const parts = rel.split('/');
  if (parts.length === 1) return parts[0]!.replace(/\.(ts|js)$/, '');
  if (parts[0] === 'providers') return `providers/${parts[1]}`;
  return parts[0]!;
}

function walk(dir: string, ext: string): string[] {
  const out: string[] = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...walk(p, ext));
    else if (e.name.endsWith(ext) && !e.name.endsWith('.d.ts')) out.push(p);
  }
  return out;
}

interface Import { spec: string; dynamic: boolean }

/** The module specifiers a file imports: static imports and re-exports (type-only ones too), and dynamic import(). */
function importsOf(code: string): Import[] {
  const text = code.replace(/\/\*[\s\S]*?\*\//g, '').replace(/^\s*\/\/.*$/gm, '');
  const out: Import[] = [];
  for (const m of text.matchAll(/^\s*(?:import|export)\b[^'";]*?\bfrom\s*['"]([^'"]+)['"]/gm)) out.push({ spec: m[1]!, dynamic: false });
  for (const m of text.matchAll(/^\s*import\s*['"]([^'"]+)['"]/gm)) out.push({ spec: m[1]!, dynamic: false });
  for (const m of text.matchAll(/\bimport\(\s*['"]([^'"]+)['"]\s*\)/g)) out.push({ spec: m[1]!, dynamic: true });
  return out;
}

/** Edges between files of src/ (relative paths, .js names), from the sources under `dir`. */
function graph(dir: string, ext: string): Map<string, Array<{ to: string; dynamic: boolean }>> {
  const g = new Map<string, Array<{ to: string; dynamic: boolean }>>();
  for (const file of walk(dir, ext)) {
    const from = relative(dir, file).split('\\').join('/').replace(/\.ts$/, '.js');
    const edges: Array<{ to: string; dynamic: boolean }> = [];
    for (const { spec, dynamic } of importsOf(readFileSync(file, 'utf8'))) {
      if (!spec.startsWith('.')) continue; // node: builtins and packages
      const to = relative(dir, resolve(dirname(file), spec)).split('\\').join('/');
      assert.ok(!to.startsWith('..'), `${from} imports ${spec}, outside src/`);
      edges.push({ to, dynamic });
    }
    g.set(from, edges);
  }
  return g;
}

test('each layer of src/ imports only the layers below it (type-only imports included)', () => {
  const violations: string[] = [];
  const seen = new Set<string>();
  for (const [from, edges] of graph(srcDir, '.ts')) {
    const a = layerOf(from);
    seen.add(a);
    const allowed = ALLOWED[a];
    assert.ok(allowed, `src/${from} is in a layer the rule does not know (${a}): add it to ALLOWED`);
    for (const { to } of edges) {
      const b = layerOf(to);
      if (b !== a && !allowed.includes(b)) violations.push(`src/${from.replace(/\.js$/, '.ts')} (${a}) imports src/${to.replace(/\.js$/, '.ts')} (${b})`);
    }
  }
  assert.deepEqual(violations, [], 'imports across the layer rule');
  for (const layer of ['abi', 'uapi', 'verbs', 'providers/rxe', 'ism', 'smc', 'sys', 'index', 'tools', 'cli']) assert.ok(seen.has(layer), `no files in ${layer}`);
});

/** The strongly connected components of more than one file (or a file importing itself). */
function cycles(g: Map<string, string[]>): string[][] {
  let index = 0;
  const idx = new Map<string, number>(), low = new Map<string, number>(), onStack = new Set<string>(), stack: string[] = [];
  const found: string[][] = [];
  const visit = (v: string) => {
    idx.set(v, index);
    low.set(v, index++);
    stack.push(v);
    onStack.add(v);
    for (const w of g.get(v) ?? []) {
      if (!idx.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (onStack.has(w)) {
        low.set(v, Math.min(low.get(v)!, idx.get(w)!));
      }
    }
    if (low.get(v) === idx.get(v)) {
      const scc: string[] = [];
      let w: string;
      do { w = stack.pop()!; onStack.delete(w); scc.push(w); } while (w !== v);
      if (scc.length > 1 || (g.get(v) ?? []).includes(v)) found.push(scc.sort());
    }
  };
  for (const v of g.keys()) if (!idx.has(v)) visit(v);
  return found;
}

test('no runtime import cycles in the compiled code (beyond the known ones being removed)', () => {
  assert.ok(existsSync(distSrcDir), 'dist/src is missing: run npm run build');
  const g = new Map<string, string[]>();
  // A dynamic import() runs after its module has loaded, so it cannot take part in a load cycle.
  // Only files that still have a source: tsc leaves the output of deleted sources in dist/.
  const current = (rel: string) => existsSync(join(srcDir, rel.replace(/\.js$/, '.ts')));
  for (const [from, edges] of graph(distSrcDir, '.js')) {
    if (current(from)) g.set(from, edges.filter((e) => !e.dynamic && current(e.to)).map((e) => e.to));
  }
  const found = cycles(g).map((c) => c.join(' -> '));
  const known = KNOWN_CYCLES.map((c) => [...c].sort().join(' -> '));
  assert.deepEqual(found.filter((c) => !known.includes(c)), [], 'new import cycles');
  assert.deepEqual(known.filter((c) => !found.includes(c)), [], 'cycles in KNOWN_CYCLES that are gone: delete their entries');
});

/** The files a module loads before it runs: its static imports, transitively (the compiled code). */
function staticClosure(entry: string): Set<string> {
  const g = graph(distSrcDir, '.js');
  const seen = new Set<string>();
  const stack = [entry];
  while (stack.length) {
    const f = stack.pop()!;
    if (seen.has(f)) continue;
    seen.add(f);
    for (const e of g.get(f) ?? []) if (!e.dynamic) stack.push(e.to);
  }
  return seen;
}

test('the softrdma command loads a tool only when it runs it, and perftest loads the rdma_cm only for -R', () => {
  assert.ok(existsSync(distSrcDir), 'dist/src is missing: run npm run build');
  // Each module costs a cold start ~1 ms (~150 of them took `softrdma devinfo` from node's ~60 ms to ~250).
  const main = [...staticClosure('cli/main.js')].filter((f) => f !== 'cli/main.js').sort();
  assert.deepEqual(main, ['tools/usage.js', 'tools/version.js'], 'cli/main.js imports, before it knows the command');
  const perftest = [...staticClosure('tools/perftest/index.js')];
  assert.deepEqual(perftest.filter((f) => /^(cm|smc|ism)\//.test(f)), [], 'perftest without -R loads these');
  assert.ok(perftest.includes('providers/rxe/device.js'), 'the closure walk found rxe (a check that cannot see imports passes anything)');
});
