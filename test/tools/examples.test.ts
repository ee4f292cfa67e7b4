// The README's API tour and SMC example are the files in examples/ (type-checked by the
// build): each runs as written, prints what its comments say, and ends by itself; and the
// README's code blocks are those files, character for character.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import { fileURLToPath } from 'node:url';
import { testRuntimeDir } from '../helpers/runtime-dir.js';

const root = fileURLToPath(new URL('../../../', import.meta.url));
const runtime = testRuntimeDir('examples');

const EXAMPLES: Record<string, RegExp[]> = {
  'verbs-tour': [/^hello over RoCEv2$/m, /^3 2 5 hello$/m, /^EINVAL: MR\.REG attribute 'access_flags': REMOTE_WRITE or REMOTE_ATOMIC requires LOCAL_WRITE$/m],
  smc: [/^SMCD$/m, /^hello \{\n {2}mode: 'SMCD',\n {2}pending: false,/m],
};

function run(name: string): Promise<{ code: number | null; out: string; ended: boolean }> {
  return new Promise((resolve) => {
    const child = execFile(process.execPath, [`${root}dist/examples/${name}.js`], { timeout: 20_000, env: { ...process.env, SOFTRDMA_RUNTIME_DIR: runtime } }, (err, stdout, stderr) => {
      resolve({ code: child.exitCode, out: stdout + stderr, ended: !(err && err.killed) });
    });
  });
}

test('every example is in the list', () => {
  const files = fs.readdirSync(`${root}examples`).filter((f) => f.endsWith('.ts')).map((f) => f.slice(0, -3)).sort();
  assert.deepEqual(files, Object.keys(EXAMPLES).sort());
});

for (const [name, expected] of Object.entries(EXAMPLES)) {
  test(`examples/${name}.ts runs as written and ends by itself`, async () => {
    const r = await run(name);
    assert.equal(r.ended, true, `still running after 20 s:\n${r.out}`);
    assert.equal(r.code, 0, r.out);
    for (const re of expected) assert.match(r.out, re);
  });

  test(`the README shows examples/${name}.ts as it is`, () => {
    const readme = fs.readFileSync(`${root}README.md`, 'utf8');
    const source = fs.readFileSync(`${root}examples/${name}.ts`, 'utf8');
    assert.ok(readme.includes('```ts\n' + source + '```\n'), `README.md has no \`\`\`ts block equal to examples/${name}.ts`);
  });
}
