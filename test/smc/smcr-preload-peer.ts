// One end of smcr-preload.test.ts: plain node:http, no softrdma import; the test runs it under
// `--import softrdma/smc/auto` in a network namespace with no rxe device of its own.
//
//   node --import .../auto.js smcr-preload-peer.js server PORT
//       an http server on 0.0.0.0:PORT answering each POST with the sha256 of its body.
//   node --import .../auto.js smcr-preload-peer.js client HOST PORT N
//       N requests, each on a new connection (agent: false) with a 256 KiB body; checks each
//       answer and prints { ok, n } at the end.

import http from 'node:http';
import { createHash, randomBytes } from 'node:crypto';

const [role, a, b, c] = process.argv.slice(2);
const out = (o: Record<string, unknown>) => process.stdout.write(`${JSON.stringify(o)}\n`);

if (role === 'server') {
  http.createServer((req, res) => {
    const h = createHash('sha256');
    req.on('data', (d: Buffer) => h.update(d));
    req.on('end', () => res.end(h.digest('hex')));
  }).listen(Number(a), '0.0.0.0', () => out({ listening: Number(a) }));
} else {
  const one = () => new Promise<boolean>((resolve, reject) => {
    const body = randomBytes(256 * 1024);
    const req = http.request({ host: a, port: Number(b), method: 'POST', agent: false }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => { text += d; });
      res.on('end', () => resolve(text === createHash('sha256').update(body).digest('hex')));
    });
    req.on('error', reject);
    req.end(body);
  });
  let ok = true;
  for (let i = 0; i < Number(c); i++) ok = (await one()) && ok;
  out({ ok, n: Number(c) });
}
