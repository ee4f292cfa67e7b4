// An SMC client whose event loop stalls right after its Proposal went out: the server's Accept
// stays unread, so the server's end of the connection is held in the handshake (srv-accepting)
// for as long as a test needs it there. Says 'proposed' (stdout, a pipe: written at once), then
// blocks in a read of stdin until a line (or the end) comes; exits when stdin ends.

import { parseArgs } from 'node:util';
import * as smc from '../../src/smc/index.js';
import { stallUntilStdin } from './stall-until-stdin.js';

const { values } = parseArgs({ options: { port: { type: 'string' } } });
smc.setSmcLearning(false);
const c = smc.connect(Number(values.port), '127.0.0.1');
c.on('error', () => {});
// After softrdma's own 'connect' listener, which wrote the Proposal.
c.on('connect', () => {
  process.stdout.write(`${JSON.stringify({ event: 'proposed', pending: smc.getSmcInfo(c).pending })}\n`);
  stallUntilStdin();
});
