// The rxe provider has no runtime import cycle (DESIGN.md: "No runtime import cycles"). The
// requester, completer and responder reach each other through the QP, as Linux rxe's tasks
// do, and share memory and window helpers from leaf modules (mem.ts, window.ts). This reads
// the compiled JavaScript, where type-only imports are gone, and follows every static
// `import ... from` / `export ... from` with a relative path inside the provider.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('../../src/providers/rxe/', import.meta.url));

function jsFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? jsFiles(join(dir, e.name)) : e.name.endsWith('.js') ? [join(dir, e.name)] : []);
}

/** Static import/export-from specifiers, side-effect imports included; dynamic import() is not a load-time edge. */
const STATIC_IMPORT = /^\s*(?:import|export)\s+(?:[^'";]*?\bfrom\s*)?['"]([^'"]+)['"]/gm;

/** Each module's relative imports that stay inside the provider. */
function importGraph(root: string): Map<string, string[]> {
  const graph = new Map<string, string[]>();
  for (const file of jsFiles(root)) {
    const deps: string[] = [];
    for (const m of readFileSync(file, 'utf8').matchAll(STATIC_IMPORT)) {
      const spec = m[1]!;
      if (!spec.startsWith('.')) continue;
      const target = resolve(dirname(file), spec);
      if (!relative(root, target).startsWith('..')) deps.push(target);
    }
    graph.set(file, deps);
  }
  return graph;
}

/** Every cycle found by a depth-first walk (each reported once, from where the walk met it). */
function findCycles(graph: Map<string, string[]>): string[][] {
  const cycles: string[][] = [];
  const state = new Map<string, 'active' | 'done'>();
  const stack: string[] = [];
  const visit = (node: string) => {
    state.set(node, 'active');
    stack.push(node);
    for (const dep of graph.get(node) ?? []) {
      const s = state.get(dep);
      if (s === 'active') cycles.push([...stack.slice(stack.indexOf(dep)), dep]);
      else if (s === undefined) visit(dep);
    }
    stack.pop();
    state.set(node, 'done');
  };
  for (const node of graph.keys()) if (!state.has(node)) visit(node);
  return cycles;
}

test('the cycle finder finds a cycle and reports its path', () => {
  const g = new Map([['a', ['b']], ['b', ['c']], ['c', ['a', 'd']], ['d', []]]);
  assert.deepEqual(findCycles(g), [['a', 'b', 'c', 'a']]);
  assert.deepEqual(findCycles(new Map([['a', ['b']], ['b', []]])), []);
});

test('the compiled rxe provider has no runtime import cycle', () => {
  const graph = importGraph(ROOT);
  assert.ok(graph.size > 10, `found the compiled provider in ${ROOT}`);
  // The parse sees the imports that made the old cycle's edges, so an empty result means something.
  const qp = graph.get(join(ROOT, 'qp.js'))!.map((f) => relative(ROOT, f));
  assert.ok(qp.includes('requester.js'), `qp.js imports requester.js (got ${qp.join(', ')})`);
  const cycles = findCycles(graph).map((c) => c.map((f) => relative(ROOT, f)).join(' -> '));
  assert.deepEqual(cycles, [], `runtime import cycles:\n  ${cycles.join('\n  ')}`);
});
