// One end of smcr-preload.test.ts: plain node:http, no softrdma import; the test runs it under
// `--import softrdma/smc/auto` in a network namespace with no rxe device of its own.
//
//   node --import .../auto.js smcr-preload-peer.js server PORT [HOST]
//       an http server on HOST:PORT (default 0.0.0.0) answering each POST with the sha256 of its body.
//   https-server / https-client: the same over node:https (test/fixtures' localhost certificate).
//   node --import .../auto.js smcr-preload-peer.js client HOST PORT N
//       N requests, each on a new connection (agent: false) with a 256 KiB body; checks each
//       answer and prints { ok, n } at the end.

import http from 'node:http';
import https from 'node:https';
import { readFileSync } from 'node:fs';
import { createHash, randomBytes } from 'node:crypto';

const [role, a, b, c] = process.argv.slice(2);
const out = (o: Record<string, unknown>) => process.stdout.write(`${JSON.stringify(o)}\n`);
const fixture = (f: string) => readFileSync(new URL(`../../../test/fixtures/${f}`, import.meta.url));
const tlsOpts = { key: fixture('tls-key.pem'), cert: fixture('tls-cert.pem') };
const secure = role === 'https-server' || role === 'https-client';
const lib = secure ? https : http;

if (role === 'server' || role === 'https-server') {
  const handler = (req: http.IncomingMessage, res: http.ServerResponse) => {
    const h = createHash('sha256');
    req.on('data', (d: Buffer) => h.update(d));
    req.on('end', () => res.end(h.digest('hex')));
  };
  (secure ? https.createServer(tlsOpts, handler) : http.createServer(handler)).listen(Number(a), b ?? '0.0.0.0', () => out({ listening: Number(a) }));
} else {
  const one = () => new Promise<boolean>((resolve, reject) => {
    const body = randomBytes(256 * 1024);
    // The certificate names localhost: checked against that name, trusted as its own CA.
    const req = lib.request({ host: a, port: Number(b), method: 'POST', agent: false, ...(secure ? { ca: tlsOpts.cert, servername: 'localhost' } : {}) }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => { text += d; });
      res.on('end', () => resolve(text === createHash('sha256').update(body).digest('hex')));
    });
    req.on('error', reject);
    req.end(body);
  });
  let ok = true;
  for (let i = 0; i < Number(c); i++) {
    ok = (await one()) && ok;
    // A TLS client takes SMC-R only once discovery said yes (smc/tls.ts): its first connection
    // started the question. Wait for the answer (bounded) before the next connection.
    if (secure && i === 0) {
      const { smcrDiscoveryCounters } = await import('../../src/smc/smcr/discovery.js');
      const until = Date.now() + 10_000;
      while (Date.now() < until) {
        const k = smcrDiscoveryCounters();
        if (k.answers_positive + k.answers_negative + k.timeouts > 0) break;
        await new Promise((r) => setTimeout(r, 5));
      }
    }
  }
  const discovery = secure ? (await import('../../src/smc/smcr/discovery.js')).smcrDiscoveryCounters() : undefined;
  out({ ok, n: Number(c), discovery });
}
