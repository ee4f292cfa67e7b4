// An SMC listener whose process stalls right after it started listening: clients find its
// registry entry and propose, the kernel completes their TCP connections, and no Proposal is
// answered. Says {"port":N} (stdout, a pipe: written at once), then blocks in a read of stdin
// until a line (or the end) comes; exits when stdin ends.

import fs from 'node:fs';
import * as smc from '../../src/smc/index.js';

const srv = smc.createServer((s) => { s.on('error', () => {}); });
srv.listen(0, '127.0.0.1', () => {
  process.stdout.write(`${JSON.stringify({ port: (srv.address() as { port: number }).port })}\n`);
  const b = Buffer.alloc(64);
  for (;;) {
    try {
      fs.readSync(0, b);
      break;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EAGAIN') throw e;
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 5); // a non-blocking stdin: poll it
    }
  }
  process.stdin.resume();
  process.stdin.on('end', () => process.exit(0));
});
