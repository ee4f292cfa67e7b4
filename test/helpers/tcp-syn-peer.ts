// A plain node:net peer for the SMC TCP option tests (test/sys/smc-tcp-option.test.ts):
//   listen ADDR PORT          listen, print {"listening":PORT,"pid":N}, accept until killed
//   connect FROM ADDR PORT... connect from address FROM to each port in turn, one at a time,
//                             print {"connected":PORT} for each, then exit 0
// It sets no option itself: whatever option its SYNs carry, the kernel put there.

import net from 'node:net';
import { once } from 'node:events';

const [mode, a, b, ...rest] = process.argv.slice(2);
if (mode === 'listen') {
  const server = net.createServer((s) => { s.on('error', () => {}); s.end(); });
  server.listen(Number(b), a, () => console.log(JSON.stringify({ listening: Number(b), pid: process.pid })));
} else if (mode === 'connect') {
  for (const port of rest.map(Number)) {
    const s = net.connect({ host: b!, port, localAddress: a! });
    await once(s, 'connect');
    console.log(JSON.stringify({ connected: port }));
    s.on('error', () => {});
    s.end();
    await once(s, 'close');
  }
} else {
  console.error('usage: tcp-syn-peer listen ADDR PORT | connect FROM ADDR PORT...');
  process.exitCode = 2;
}
