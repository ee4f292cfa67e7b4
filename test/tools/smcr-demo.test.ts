// The README's SMC-R example, scripts/smcr-demo.sh, as a newcomer runs it: it must make its
// namespaces, move the bytes over SMC-R and then TCP, check them, and leave nothing behind.
// Skipped, saying why, where namespaces cannot be made (not root).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const SCRIPT = fileURLToPath(new URL('../../../scripts/smcr-demo.sh', import.meta.url));

const skip = process.getuid?.() !== 0 ? 'needs root to make network namespaces' : undefined;

test('scripts/smcr-demo.sh: SMC-R then TCP between two namespaces, both byte-exact, namespaces gone', { skip }, () => {
  const r = spawnSync('bash', [SCRIPT], { encoding: 'utf8', timeout: 180_000 });
  assert.equal(r.status, 0, r.stdout + r.stderr);
  const lines = r.stdout.split('\n');
  const smcr = lines.find((l) => l.startsWith('SMC-R (the default)'));
  const tcp = lines.find((l) => l.startsWith('TCP (SOFTRDMA_SMCR=0)'));
  assert.ok(smcr && tcp, r.stdout);
  assert.match(smcr, /SMCR 2, SMCD 0, TCP 0/, 'both of its connections over SMC-R');
  assert.match(tcp, /SMCR 0, SMCD 0, TCP 2/);
  for (const l of [smcr, tcp]) assert.match(l, /"sha256ok":true/);
  // Its namespaces (named in its first line) are gone; other tests' may come and go meanwhile.
  const ns = [...r.stdout.matchAll(/\b(smd\d+[ab])\b/g)].map((m) => m[1]!);
  assert.ok(ns.length >= 2, r.stdout);
  const left = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' }).split('\n').map((l) => l.split(' ')[0]);
  assert.deepEqual(ns.filter((n) => left.includes(n)), [], 'the namespaces were removed');
});
