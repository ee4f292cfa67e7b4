// node:http's request/response patterns in one process: keep-alive and not, Connection: close,
// HTTP/1.0, aborts on either side, pipelining, upgrades, a large body, a server closing with
// idle keep-alive connections. Prints one JSON object: per pattern, what both ends saw. Run on
// plain node and under the auto preload (test/smc/http-parity.test.ts), the two must agree.
// The process is never told to exit: it must end by itself once nothing is left to do.

import { once } from 'node:events';
import http from 'node:http';
import net from 'node:net';

type Log = string[];
const results: Record<string, Log> = {};

async function withServer(name: string, handler: (req: http.IncomingMessage, res: http.ServerResponse, log: Log) => void,
  body: (port: number, log: Log) => Promise<void>, setup?: (srv: http.Server, log: Log) => void): Promise<void> {
  const log: Log = [];
  results[name] = log;
  const srv = http.createServer((req, res) => handler(req, res, log));
  srv.on('clientError', (e: NodeJS.ErrnoException) => log.push(`server clientError ${e.code}`));
  srv.on('connection', (s: net.Socket) => s.on('error', (e: NodeJS.ErrnoException) => log.push(`server socket error ${e.code}`)));
  setup?.(srv, log);
  srv.listen(0, '127.0.0.1');
  await once(srv, 'listening');
  try {
    await body((srv.address() as net.AddressInfo).port, log);
  } catch (e) {
    log.push(`failed: ${(e as Error).message}`);
  } finally {
    srv.closeAllConnections?.();
    srv.close();
  }
}

function get(port: number, opts: http.RequestOptions, log: Log, label: string, payload?: Buffer): Promise<string> {
  return new Promise((resolve) => {
    const req = http.request({ host: '127.0.0.1', port, ...opts }, (res) => {
      let n = 0;
      res.on('data', (d: Buffer) => { n += d.length; });
      res.on('end', () => { log.push(`${label} ${res.statusCode} ${n}B end`); resolve('end'); });
      res.on('error', (e: NodeJS.ErrnoException) => { log.push(`${label} res error ${e.code}`); resolve('error'); });
    });
    req.on('error', (e: NodeJS.ErrnoException) => { log.push(`${label} req error ${e.code}`); resolve('error'); });
    req.end(payload);
  });
}

/** A raw TCP exchange: write, read until the server closes. */
async function raw(port: number, text: string, log: Log, label: string, end = false): Promise<string> {
  const s = net.connect(port, '127.0.0.1');
  s.on('error', (e: NodeJS.ErrnoException) => log.push(`${label} error ${e.code}`));
  if (end) s.end(text);
  else s.write(text);
  let got = '';
  s.setEncoding('latin1').on('data', (d: string) => { got += d; });
  await new Promise<void>((r) => s.once('close', () => r()));
  log.push(`${label} closed after ${(got.match(/HTTP\/1\.[01] \d+/g) ?? []).join(',')}`);
  return got;
}

const hello = (_req: http.IncomingMessage, res: http.ServerResponse) => { res.end('hello'); };

await withServer('keep-alive agent, 5 requests', hello, async (port, log) => {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  for (let i = 0; i < 5; i++) await get(port, { agent }, log, `#${i}`);
  agent.destroy();
});

await withServer('agent without keep-alive, 5 requests', hello, async (port, log) => {
  const agent = new http.Agent({ keepAlive: false });
  for (let i = 0; i < 5; i++) await get(port, { agent }, log, `#${i}`);
});

await withServer('server answers Connection: close', (_req, res) => { res.setHeader('Connection', 'close'); res.end('bye'); }, async (port, log) => {
  for (let i = 0; i < 3; i++) await get(port, { agent: false }, log, `#${i}`);
});

await withServer('HTTP/1.0 request', hello, async (port, log) => {
  await raw(port, 'GET / HTTP/1.0\r\nHost: x\r\n\r\n', log, 'http/1.0');
});

await withServer('pipelined requests', hello, async (port, log) => {
  await raw(port, 'GET /1 HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/1.1\r\nHost: x\r\n\r\nGET /3 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n', log, 'pipelined');
});

await withServer('client aborts while the server is still answering', (req, res, log) => {
  req.on('close', () => log.push('server req close'));
  res.on('close', () => log.push(`server res close, finished ${res.writableFinished}`));
  setTimeout(() => res.end('too late'), 200);
}, async (port, log) => {
  await new Promise<void>((resolve) => {
    const req = http.request({ host: '127.0.0.1', port, agent: false });
    req.on('error', (e: NodeJS.ErrnoException) => { log.push(`client req error ${e.code}`); });
    req.on('close', () => resolve());
    req.end();
    setTimeout(() => req.destroy(), 50);
  });
  await new Promise((r) => setTimeout(r, 400));
});

await withServer('client destroys the response after its headers', (_req, res) => {
  res.write('part one');
  setTimeout(() => res.end('part two'), 100);
}, async (port, log) => {
  await new Promise<void>((resolve) => {
    const req = http.request({ host: '127.0.0.1', port, agent: false }, (res) => {
      log.push(`client status ${res.statusCode}`);
      res.on('error', (e: NodeJS.ErrnoException) => log.push(`client res error ${e.code}`));
      res.destroy();
    });
    req.on('error', (e: NodeJS.ErrnoException) => log.push(`client req error ${e.code}`));
    req.on('close', () => resolve());
    req.end();
  });
  await new Promise((r) => setTimeout(r, 300));
});

await withServer('server destroys the socket mid-response', (_req, res) => {
  res.write('part');
  setTimeout(() => res.socket?.destroy(), 20);
}, async (port, log) => {
  await get(port, { agent: false }, log, 'client');
});

await withServer('request and FIN together, answered in the request\'s end handler', (req, res) => {
  req.on('end', () => res.end('answered'));
  req.resume();
}, async (port, log) => {
  // The client half-closes with its request (node:http's server gives up on answering at
  // the socket's 'end', which must come after the request's 'end' handler has run).
  const got = await raw(port, 'POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n' + `2;${'A'.repeat(10000)}=bar\r\nAA\r\n`.repeat(3) + '0\r\n\r\n', log, 'half-closed', true);
  log.push(`answer ${got.includes('answered') ? 'received' : 'missing'}`);
});

await withServer('POST of 1 MiB', (req, res) => {
  let n = 0;
  req.on('data', (d: Buffer) => { n += d.length; });
  req.on('end', () => res.end(String(n)));
}, async (port, log) => {
  await get(port, { method: 'POST', agent: false }, log, 'post', Buffer.alloc(1 << 20, 7));
});

await withServer('upgrade to an echo protocol', hello, async (port, log) => {
  await new Promise<void>((resolve) => {
    const req = http.request({ host: '127.0.0.1', port, headers: { Connection: 'Upgrade', Upgrade: 'echo' } });
    req.on('upgrade', (_res, sock: net.Socket) => {
      log.push('client upgraded');
      sock.end('ping');
      let got = '';
      sock.setEncoding('utf8').on('data', (d: string) => { got += d; });
      sock.on('end', () => log.push(`client got ${got}`));
      sock.on('close', () => resolve());
    });
    req.on('error', (e: NodeJS.ErrnoException) => { log.push(`client error ${e.code}`); resolve(); });
    req.end();
  });
}, (srv, log) => {
  srv.on('upgrade', (_req, sock: net.Socket) => {
    log.push('server upgrade');
    sock.write('HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n');
    sock.pipe(sock);
  });
});

await withServer('server.close() with an idle keep-alive connection', hello, async (port, log) => {
  const agent = new http.Agent({ keepAlive: true });
  await get(port, { agent }, log, 'first');
  await get(port, { agent }, log, 'second');
  agent.destroy();
});

process.stdout.write(`${JSON.stringify(results)}\n`);
