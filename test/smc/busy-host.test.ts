// The pollers on a busy host: with one CPU-bound process per CPU, an SMC-D ping-pong between
// two processes must notice that spinning takes the CPU from others (its yields come back a
// scheduler slice later) and fall back to sleeping until the doorbell, and keep working.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import os from 'node:os';
import { fileURLToPath } from 'node:url';
import * as smc from '../../src/smc/index.js';
import { pollerContention } from '../../src/smc/poller.js';
import { runNode } from '../helpers/procs.js';
import { testRuntimeDir } from '../helpers/runtime-dir.js';

testRuntimeDir('busy-host');
const SERVER = fileURLToPath(new URL('../helpers/smc-test-server.js', import.meta.url));

test('with every CPU busy, the poller enters its busy-CPU mode and the ping-pong goes on', async () => {
  const srv = runNode(SERVER, [], { stdin: 'pipe' });
  const loops: ChildProcess[] = [];
  try {
    const [, port] = await srv.waitFor(/"port":(\d+)/);
    // Eight connections in flight at once, as an HTTP client keeps them: some poll nearly
    // always finds something, so fruitless yields alone would never tell the host is busy.
    const socks = await Promise.all(Array.from({ length: 8 }, async () => {
      const s = smc.connect(Number(port), '127.0.0.1');
      s.write('E');
      const [info] = (await once(s, 'smc')) as [smc.SmcInfo];
      assert.equal(info.mode, 'SMCD');
      return s;
    }));
    const sock = socks[0]!;
    for (const _ of os.cpus()) loops.push(spawn(process.execPath, ['-e', 'for (;;) {}'], { stdio: 'ignore' }));
    const before = pollerContention().entered;
    // Round trips until the poller has noticed (bounded: a host where yields never come back
    // late is not busy, and then this fails saying so).
    let rounds = 0;
    const deadline = Date.now() + 20_000;
    const pingPong = async (s: typeof sock) => {
      s.write('ping');
      let got = 0;
      while (got < 4) got += ((await once(s, 'data')) as [Buffer])[0].length;
    };
    while (pollerContention().entered === before && Date.now() < deadline) {
      await Promise.all(socks.map(pingPong));
      rounds++;
    }
    assert.ok(pollerContention().entered > before, `no busy-CPU mode after ${rounds} round trips with ${loops.length} busy loops`);
    // And the connection still works, over SMC-D, in that mode.
    sock.write('still there');
    let echoed = '';
    while (echoed.length < 11) echoed += String(((await once(sock, 'data')) as [Buffer])[0]);
    assert.equal(echoed, 'still there');
    assert.equal(smc.getSmcInfo(sock).mode, 'SMCD');
    for (const s of socks) s.destroy();
  } finally {
    for (const l of loops) l.kill('SIGKILL');
    srv.child.stdin!.end();
    await srv.exit(10_000);
  }
});
