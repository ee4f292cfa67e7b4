// A doorbell ring that cannot be delivered: the writer clears the sleeping receiver's armed
// flag before it rings, so a ring lost on the way (the doorbell's file removed by a tmp
// cleaner; a failed or refused connect) left the receiver asleep for good, and the writer's
// later writes, seeing it disarmed, rang no more. The receiver's poller now looks at its
// sleeping connections now and then, and a device that finds data its ring never brought
// makes its doorbell again. The receiver is a process of its own (smcd-stall-peer.ts echo).

import assert from 'node:assert/strict';
import { once } from 'node:events';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { jsonLines, runNode } from '../helpers/procs.js';
import { testRuntimeDir } from '../helpers/runtime-dir.js';
import type { SmcInfo } from '../../src/smc/index.js';
import type { SmcdConnection } from '../../src/smc/smcd-connection.js';

const rt = testRuntimeDir('smcd-lost-ring');
const smc = await import('../../src/smc/index.js');
const { smcState } = await import('../../src/smc/state.js');
const { openedIsmDevice } = await import('../../src/ism/device.js');
smc.setSmcLearning(false);

const PEER = fileURLToPath(new URL('./smcd-stall-peer.js', import.meta.url));

/** Resolves once check() holds (looked at every millisecond); rejects after ms. */
function until(what: string, check: () => boolean, ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  return new Promise((resolve, reject) => {
    const look = () => {
      if (check()) resolve();
      else if (Date.now() > deadline) reject(new Error(`no ${what} within ${ms} ms`));
      else setTimeout(look, 1);
    };
    look();
  });
}

/** Whether the peer has armed the DMB conn writes into (it sleeps until rung). */
function peerArmed(conn: SmcdConnection): boolean {
  const table = (conn.tx as unknown as { peer: { table: { i32: Int32Array; armedIndex(i: number): number } } }).peer.table;
  return Atomics.load(table.i32, table.armedIndex(conn.tx.index)) === 1;
}

test('a ring lost because the doorbell file was removed: the sleeping receiver still gets the data, and its doorbell comes back', async (t) => {
  const p = runNode(PEER, ['echo']);
  t.after(() => p.child.kill('SIGKILL'));
  const { port, pid } = await p.waitUntil((out) => jsonLines(out).find((l) => 'port' in l), 'the port') as { port: number; pid: number };
  const c = smc.connect({ port, host: '127.0.0.1' });
  t.after(() => c.destroy());
  c.on('error', () => {});
  const [info] = await once(c, 'smc') as [SmcInfo];
  assert.equal(info.mode, 'SMCD');
  let got = '';
  c.setEncoding('utf8');
  c.on('data', (d: string) => { got += d; });

  // The echo server's ism device, by its registry entry: the doorbell file is named there.
  const dir = path.join(rt, 'ism');
  const entry = fs.readdirSync(dir).filter((f) => f.endsWith('.json'))
    .map((f) => JSON.parse(fs.readFileSync(path.join(dir, f), 'utf8')) as { pid: number; bell: string })
    .find((e) => e.pid === pid);
  assert.ok(entry, 'the echo server has no ism entry');
  const bell = path.join(dir, entry.bell);
  const conn = smcState(c)!.conn as SmcdConnection;
  const stats = openedIsmDevice()!.stats;
  const lostBefore = stats.signalsLost;
  await until('sleeping echo server', () => peerArmed(conn), 10_000);
  // Before anything rang it: no doorbell connection to it exists yet.
  fs.rmSync(bell);

  // Each round writes to the sleeping server; its ring is lost while the file is missing.
  for (let round = 0; ; round++) {
    const word = `round ${round}`;
    got = '';
    c.write(word);
    await until(`echo of ${JSON.stringify(word)} (got ${JSON.stringify(got)})`, () => got === word, 5000);
    if (fs.existsSync(bell)) break;
    assert.ok(round < 20, 'the doorbell file was not made again');
    await until('sleeping echo server', () => peerArmed(conn), 10_000);
  }
  assert.ok(stats.signalsLost > lostBefore, 'no ring was lost: the test did not test');
  // The doorbell works again: a ring now reaches the sleeping server.
  await until('sleeping echo server', () => peerArmed(conn), 10_000);
  const [sent, lost] = [stats.signalsSent, stats.signalsLost];
  got = '';
  c.write('rung');
  await until('echo of "rung"', () => got === 'rung', 5000);
  assert.ok(stats.signalsSent > sent, 'the server was not rung');
  assert.equal(stats.signalsLost, lost, 'the ring was lost again');
});
