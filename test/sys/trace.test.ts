// The trace points: published on softrdma:<section>:<event> only while someone subscribes,
// printed by NODE_DEBUG=<section>, and silent (inactive) otherwise.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import dc from 'node:diagnostics_channel';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { tracer } from '../../src/sys/trace.js';

test('a subscriber gets the fields; without one the trace is inactive', () => {
  const t = tracer('cm', 'test-event');
  assert.equal(t.active, false);
  const got: unknown[] = [];
  const onMessage = (m: unknown) => got.push(m);
  dc.subscribe('softrdma:cm:test-event', onMessage);
  try {
    assert.equal(t.active, true);
    t({ a: 1 });
  } finally {
    dc.unsubscribe('softrdma:cm:test-event', onMessage);
  }
  t({ a: 2 });
  assert.deepEqual(got, [{ a: 1 }]);
  assert.equal(t.active, false);
});

test('NODE_DEBUG=<section> prints the event on stderr, other sections do not', () => {
  const mod = fileURLToPath(new URL('../../src/sys/trace.js', import.meta.url));
  const script = `import(${JSON.stringify(mod)}).then(({ tracer }) => tracer('rxe', 'demo')({ psn: 7 }))`;
  const stderr = (debug: string) => spawnSync(process.execPath, ['-e', script], { env: { ...process.env, NODE_DEBUG: debug }, encoding: 'utf8' }).stderr;
  assert.match(stderr('rxe'), /^RXE \d+: demo \{ psn: 7 \}$/m);
  assert.equal(stderr('smc'), '');
});
