// An SMC listener whose process stalls right after it started listening: clients find its
// registry entry and propose, the kernel completes their TCP connections, and no Proposal is
// answered. Says {"port":N} (stdout, a pipe: written at once), then blocks in a read of stdin
// until a line (or the end) comes; exits when stdin ends.

import * as smc from '../../src/smc/index.js';
import { stallUntilStdin } from './stall-until-stdin.js';

const srv = smc.createServer((s) => { s.on('error', () => {}); });
srv.listen(0, '127.0.0.1', () => {
  process.stdout.write(`${JSON.stringify({ port: (srv.address() as { port: number }).port })}\n`);
  stallUntilStdin();
});
