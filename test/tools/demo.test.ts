// The README's first command ends in `npm run demo`: softrdma demo, then softrdma smc-demo.
// Both must run with no configuration, exit 0, and show what they claim: data verified over
// rxe, and an SMC-D connection (hash-checked) next to a TCP one.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { run } from '../helpers/procs.js';
import { testRuntimeDir } from '../helpers/runtime-dir.js';

testRuntimeDir('demo');

test('softrdma demo: RDMA WRITE and SEND between two rxe devices, data verified', async () => {
  const p = run(['demo']);
  assert.equal(await p.exit(60_000), 0, p.stderr);
  assert.match(p.stdout, /RDMA WRITE 65536 B x \d+: [\d.]+ MB\/s .*data verified/);
  assert.match(p.stdout, /SEND ping-pong 2 B x \d+: [\d.]+ us round trip/);
  assert.match(p.stdout, /icrc_errors=0 malformed_drops=0/);
});

test('softrdma smc-demo: SMC-D and TCP side by side, both hash-checked', async () => {
  const p = run(['smc-demo']);
  assert.equal(await p.exit(120_000), 0, p.stderr);
  assert.match(p.stdout, /^softrdma\/smc\s+SMCD\s+yes\s+\d+\s+[\d.]+\s+[\d.]+$/m);
  assert.match(p.stdout, /^node:net\s+TCP\s+yes\s+\d+\s+[\d.]+\s+[\d.]+$/m);
  assert.match(p.stdout, /SMC-D against TCP: [\d.]+x the throughput, [\d.]+x the median round trip/);
});
