// The awake loop SMC-R polls with (src/smc/poller.ts): SMC-R's data arrive as UDP datagrams,
// so while a connection has traffic the event loop is kept from sleeping in epoll; once the
// traffic stops it must stop within the idle bound (an idle process costs no CPU), and with
// every CPU busy it must notice (its yields come back a scheduler slice late) and give up.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import os from 'node:os';
import { pollerAwake, pollerContention, smcrActivity } from '../../src/smc/poller.js';

const turn = () => new Promise<void>((r) => setImmediate(r));

async function until(cond: () => boolean, ms: number): Promise<boolean> {
  const deadline = performance.now() + ms;
  while (!cond()) {
    if (performance.now() > deadline) return false;
    await new Promise((r) => setTimeout(r, 1));
  }
  return true;
}

test('SMC-R traffic keeps the loop awake, and the loop sleeps again once the traffic stops', async () => {
  assert.equal(pollerAwake(), false, 'nothing keeps the loop awake at the start');
  smcrActivity();
  assert.equal(pollerAwake(), true, 'activity keeps the loop awake');
  // Traffic for a while: an arrival every turn.
  // (A turn longer than the 300 us idle bound, on a loaded machine, lets the loop stop until
  // the next arrival: so count the turns after which it was awake.)
  // At least 20 turns (a loaded machine once gave a single turn of over 20 ms), 2 s at most.
  const t0 = performance.now();
  let turns = 0, awakeTurns = 0;
  while ((performance.now() - t0 < 20 || turns < 20) && performance.now() - t0 < 2000) {
    smcrActivity();
    await turn();
    turns++;
    if (pollerAwake()) awakeTurns++;
  }
  // (Unless this host's CPUs are busy right now: then the loop rightly sleeps.)
  assert.ok(awakeTurns > 0 || pollerContention().contended, `asleep after all ${turns} turns of traffic on a host that is not busy`);
  // Then quiet: the loop stops within the idle bound (300 us by default) plus a timer's slack.
  const quiet = performance.now();
  assert.ok(await until(() => !pollerAwake(), 1000), 'still awake 1 s after the last activity');
  const stoppedAfter = performance.now() - quiet;
  // (The bound is loose for a loaded test machine: the loop stops in the first turn after 300 us.)
  assert.ok(stoppedAfter < 500, `stopped ${stoppedAfter.toFixed(1)} ms after the last activity`);
  // Asleep means no CPU: 200 ms of an idle loop take (next to) none; a loop kept awake would
  // take most of them.
  const c0 = process.cpuUsage();
  await new Promise((r) => setTimeout(r, 200));
  const c = process.cpuUsage(c0);
  assert.equal(pollerAwake(), false);
  assert.ok(c.user + c.system < 50_000, `an idle process used ${(c.user + c.system) / 1000} ms of CPU in 200 ms`);
});

test('with every CPU busy, the awake loop notices and stops keeping the loop awake', async () => {
  const loops: ChildProcess[] = [];
  try {
    for (const _ of os.cpus()) loops.push(spawn(process.execPath, ['-e', 'for (;;) {}'], { stdio: 'ignore' }));
    const before = pollerContention().entered;
    // Traffic with nothing arriving: each turn's yield hands the CPU to a busy loop.
    const deadline = performance.now() + 20_000;
    while (pollerContention().entered === before && performance.now() < deadline) {
      smcrActivity();
      await turn();
    }
    assert.ok(pollerContention().entered > before, `no busy-CPU mode within 20 s with ${loops.length} busy loops`);
    assert.equal(pollerContention().contended, true);
    // In that mode activity no longer keeps the loop awake beyond the turn it is in.
    smcrActivity();
    assert.ok(await until(() => !pollerAwake(), 1000), 'the loop stays awake on busy CPUs');
  } finally {
    for (const l of loops) l.kill('SIGKILL');
  }
});
