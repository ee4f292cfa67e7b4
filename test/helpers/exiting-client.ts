// A client process for the exit tests: connects (node:net or softrdma/smc), sends 'req', says
// 'got' once a reply arrives (reading it all, or leaving it unread with --unread), and exits
// with process.exit(0) when a line arrives on stdin: the kernel, not the application, closes.

import net from 'node:net';
import { parseArgs } from 'node:util';
import * as smc from '../../src/smc/index.js';

const { values } = parseArgs({ options: { port: { type: 'string' }, api: { type: 'string', default: 'smc' }, unread: { type: 'boolean' } } });
const c = (values.api === 'smc' ? smc : net).connect(Number(values.port), '127.0.0.1');
c.write('req');
let said = false;
c.on('readable', () => {
  if (!values.unread) while (c.read() !== null);
  if (!said) { said = true; process.stdout.write('got\n'); }
});
process.stdin.on('data', () => process.exit(0));
