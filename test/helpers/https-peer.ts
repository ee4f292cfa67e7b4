// node:https peers for the TLS-over-SMC tests; the tests run them with or without the auto
// preload. `serve` answers every request with the body size it was asked for, and reports in
// headers how its end of the connection carries the TLS records. `get` fetches and prints
// one JSON line: what both ends saw.
//   https-peer serve            prints {"port":N}; stops when stdin closes
//   https-peer get PORT BYTES [HOST]

import { createHash } from 'node:crypto';
import fs from 'node:fs';
import https from 'node:https';
import type net from 'node:net';
import { fileURLToPath } from 'node:url';
import { getSmcInfo } from '../../src/smc/index.js';

const FIXTURES = fileURLToPath(new URL('../../../test/fixtures/', import.meta.url));
const key = fs.readFileSync(`${FIXTURES}tls-key.pem`);
const cert = fs.readFileSync(`${FIXTURES}tls-cert.pem`);

const [role, ...args] = process.argv.slice(2);
if (role === 'serve') {
  const server = https.createServer({ key, cert }, (req, res) => {
    const n = Number(new URL(req.url ?? '/', 'https://x').searchParams.get('bytes') ?? 0);
    const sock = req.socket as net.Socket;
    const info = getSmcInfo(sock);
    const body = Buffer.alloc(n, 0x61);
    res.setHeader('x-smc-mode', info.mode);
    res.setHeader('x-smc-received', String(info.smcBytesReceived));
    res.setHeader('x-remote-address', String(sock.remoteAddress));
    res.setHeader('x-body-sha256', createHash('sha256').update(body).digest('hex'));
    res.end(body);
  });
  server.listen(0, '127.0.0.1', () => console.log(JSON.stringify({ port: (server.address() as net.AddressInfo).port })));
  process.stdin.resume();
  process.stdin.on('end', () => { server.close(); server.closeAllConnections(); });
} else if (role === 'get') {
  const [port, bytes, host = '127.0.0.1'] = args;
  const req = https.get({ host, port: Number(port), path: `/?bytes=${bytes}`, ca: cert, agent: false }, (res) => {
    const h = createHash('sha256');
    let n = 0;
    res.on('data', (d: Buffer) => { n += d.length; h.update(d); });
    res.on('end', () => {
      const sock = res.socket as net.Socket;
      const info = getSmcInfo(sock);
      console.log(JSON.stringify({
        status: res.statusCode, bytes: n, sha256Ok: h.digest('hex') === res.headers['x-body-sha256'],
        serverMode: res.headers['x-smc-mode'], serverSmcReceived: Number(res.headers['x-smc-received']),
        serverSawAddress: res.headers['x-remote-address'],
        clientMode: info.mode, clientSmcReceived: info.smcBytesReceived, clientRemote: sock.remoteAddress,
        clientLocalPort: sock.localPort, authorized: (sock as unknown as { authorized: boolean }).authorized,
      }));
    });
  });
  req.on('error', (e) => { console.error(e); process.exit(1); });
} else {
  console.error('usage: https-peer serve | get PORT BYTES [HOST]');
  process.exit(2);
}
