// No runtime import cycle among the SMC modules (DESIGN.md's dependency rule): the compiled
// dist/src/smc/*.js are read, their static relative imports followed (into other directories
// of dist/src too, so a cycle through ism/ counts), and any cycle through an smc module
// fails the test with its path. Type-only imports are gone from the compiled files, as they
// are at run time.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const smcDir = fileURLToPath(new URL('../../src/smc/', import.meta.url));
const srcDir = path.dirname(smcDir);

// `import x from './a.js'`, `import { a as b } from '../b.js'`, `import * as n from`,
// `import './c.js'`, `export { a } from './d.js'`, `export * from`: each at a line start, as tsc
// writes them. Dynamic import() is not a static edge.
const STATIC = /^(?:import|export)\s+(?:[\w$*{},\s]+?\s+from\s+)?['"](\.{1,2}\/[^'"]+)['"]/gm;

function importsOf(file: string): string[] {
  const text = fs.readFileSync(file, 'utf8');
  return [...text.matchAll(STATIC)].map((m) => path.resolve(path.dirname(file), m[1]!));
}

/** The import graph of everything reachable from the smc modules. */
function graph(): Map<string, string[]> {
  const g = new Map<string, string[]>();
  const todo = fs.readdirSync(smcDir).filter((f) => f.endsWith('.js')).map((f) => path.join(smcDir, f));
  while (todo.length) {
    const f = todo.pop()!;
    if (g.has(f) || !fs.existsSync(f)) continue;
    const deps = importsOf(f);
    g.set(f, deps);
    todo.push(...deps);
  }
  return g;
}

/** Every cycle a depth-first search closes (one per back edge), as lists of files. */
function cycles(g: Map<string, string[]>): string[][] {
  const found: string[][] = [];
  const state = new Map<string, 'open' | 'done'>();
  const stack: string[] = [];
  const visit = (f: string): void => {
    state.set(f, 'open');
    stack.push(f);
    for (const d of g.get(f) ?? []) {
      const st = state.get(d);
      if (st === 'open') found.push([...stack.slice(stack.indexOf(d)), d]);
      else if (st === undefined && g.has(d)) visit(d);
    }
    stack.pop();
    state.set(f, 'done');
  };
  for (const f of [...g.keys()].sort()) if (!state.has(f)) visit(f);
  return found;
}

const rel = (f: string) => path.relative(srcDir, f);

test('the compiled smc modules import each other without a cycle', () => {
  const g = graph();
  // The parser must see the imports it is there to check, or the test passes for nothing.
  const indexDeps = (g.get(path.join(smcDir, 'index.js')) ?? []).map(rel);
  assert.ok(indexDeps.includes(path.join('smc', 'socket.js')) && indexDeps.includes(path.join('smc', 'server.js')), `index.js's imports: ${indexDeps.join(', ')}`);
  const smcCycles = cycles(g).filter((c) => c.some((f) => f.startsWith(smcDir)));
  assert.deepEqual(smcCycles.map((c) => c.map(rel).join(' -> ')), [], 'runtime import cycles');
});

test('the cycle check finds a cycle when there is one', () => {
  const a = path.join(smcDir, 'a.js');
  const b = path.join(smcDir, 'b.js');
  const c = path.join(smcDir, 'c.js');
  assert.deepEqual(cycles(new Map([[a, [b]], [b, [c]], [c, [a]]])).map((x) => x.map(rel)), [[a, b, c, a].map(rel)]);
  assert.deepEqual(cycles(new Map([[a, [b, c]], [b, [c]], [c, []]])), []);
});
