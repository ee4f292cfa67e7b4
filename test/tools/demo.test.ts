// The README's first command ends in `npm run demo`: softrdma demo, then softrdma smc-demo.
// Both must run with no configuration, exit 0, and show what they claim: data verified over
// rxe, and an SMC-D connection (hash-checked) next to a TCP one.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { run } from '../helpers/procs.js';
import { testRuntimeDir } from '../helpers/runtime-dir.js';

testRuntimeDir('demo');

test('softrdma demo: three lines on what is shown, then the figures in MiB/s; devices only with -v', async () => {
  const p = run(['demo']);
  assert.equal(await p.exit(60_000), 0, p.stderr);
  const lines = p.stdout.split('\n');
  assert.match(lines[0]!, /^softrdma demo: RDMA between two software RoCEv2 devices, rxe_demo_a \(127\.0\.0\.2\) and rxe_demo_b \(127\.0\.0\.3\),$/);
  assert.match(lines[1]!, /^both in this process; every packet between them is a real RoCEv2 datagram \(UDP port \d+\)/);
  assert.match(lines[2]!, /^Below: RDMA WRITE bandwidth/);
  assert.equal(lines[3], '');
  assert.match(p.stdout, /^ {2}RDMA WRITE {4}64 KiB x 1000: [\d.]+ MiB\/s \(\d+ msg\/s\), data verified$/m);
  assert.match(p.stdout, /^ {2}SEND {10}2 B ping-pong x 2000: [\d.]+ us round trip \([\d.]+ us one way\)$/m);
  assert.match(p.stdout, /^ {2}packets {7}rxe_demo_a sent \d+ and received \d+: 0 ICRC errors, 0 malformed$/m);
  assert.doesNotMatch(p.stdout, /MB\/s|hca_id/);
});

test('softrdma demo -v: both devices as ibv_devinfo -v shows them; progress on stderr once a step runs long', async () => {
  const p = run(['demo', '-v'], { env: { SOFTRDMA_PROGRESS_AFTER_MS: '0' } });
  assert.equal(await p.exit(60_000), 0, p.stderr);
  assert.match(p.stdout, /hca_id:\trxe_demo_a\n[^]*GID\[ {2}0\]:\t\t::ffff:127\.0\.0\.2, RoCE v2\n[^]*hca_id:\trxe_demo_b\n/);
  assert.match(p.stdout, /rxe_demo_a counters: .*sent_pkts=\d+/);
  assert.match(p.stderr, /^ {2}RDMA WRITE: \d+% \(\d+\/1000\)$/m);
  assert.match(p.stderr, /^ {2}SEND ping-pong: \d+% \(\d+\/2000\)$/m);
});

test('softrdma smc-demo: SMC-D and TCP side by side, both hash-checked', async () => {
  const p = run(['smc-demo']);
  assert.equal(await p.exit(120_000), 0, p.stderr);
  assert.match(p.stdout, /^softrdma\/smc\s+SMCD\s+yes\s+\d+\s+[\d.]+\s+[\d.]+$/m);
  assert.match(p.stdout, /^node:net\s+TCP\s+yes\s+\d+\s+[\d.]+\s+[\d.]+$/m);
  assert.match(p.stdout, /SMC-D against TCP: [\d.]+x the throughput, [\d.]+x the median round trip/);
  assert.match(p.stdout, /^softrdma smc-demo: the same byte stream over SMC-D/);
  assert.match(p.stderr, /softrdma\/smc: 64 MiB with a sha256 check on both ends\n/); // progress: the run takes ~15 s
});
