// softrdma/smc's arguments as a JavaScript caller may get them wrong (a review's findings): the
// smc* options and the module's functions throw node's errors (ERR_INVALID_ARG_TYPE, or
// ERR_OUT_OF_RANGE) naming the option, where some turned SMC on ('no' is truthy), went through
// to a failure deep inside, or broke SMC quietly (a handshake timeout past a Node timer's
// longest fires after 1 ms); enableSmcOnServer takes the options a user has, not the internal
// resolved ones.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import http from 'node:http';
import type net from 'node:net';
import { testRuntimeDir } from '../helpers/runtime-dir.js';

testRuntimeDir('smc-arguments');
const smc = await import('../../src/smc/index.js');
smc.setSmcLearning(false);

test('bad smc* options and arguments: ERR_INVALID_ARG_TYPE or ERR_OUT_OF_RANGE naming them', () => {
  const opts = (o: Record<string, unknown>) => () => new smc.Socket(o as ConstructorParameters<typeof smc.Socket>[0]);
  assert.throws(opts({ smc: 'no' }), { code: 'ERR_INVALID_ARG_TYPE', message: /"options\.smc" property must be of type boolean\. Received type string \('no'\)/ });
  assert.throws(opts({ smcHandshakeTimeout: Infinity }), { code: 'ERR_OUT_OF_RANGE', message: /at most 2147483647 ms/ });
  assert.throws(opts({ smcHandshakeTimeout: 2 ** 31 }), { code: 'ERR_OUT_OF_RANGE' });
  assert.throws(opts({ smcHandshakeTimeout: '100' }), { code: 'ERR_INVALID_ARG_TYPE', message: /smcHandshakeTimeout/ });
  assert.throws(opts({ smcBufferSize: '65536' }), { code: 'ERR_INVALID_ARG_TYPE', message: /smcBufferSize/ });
  assert.throws(opts({ smcPolicy: 'yes' }), { code: 'ERR_INVALID_ARG_TYPE', message: /smcPolicy/ });
  assert.throws(opts({ smcr: { device: undefined } }), { code: 'ERR_INVALID_ARG_TYPE', message: /"options\.smcr" property must be a boolean or \{ device \}/ });
  assert.throws(opts({ smcr: 'on' }), { code: 'ERR_INVALID_ARG_TYPE' });
  assert.throws(() => smc.getSmcInfo(undefined as unknown as net.Socket), { code: 'ERR_INVALID_ARG_TYPE', message: /"sock" argument must be an instance of net\.Socket\. Received undefined/ });
  assert.throws(() => smc.setSmcPolicy('x' as unknown as undefined), { code: 'ERR_INVALID_ARG_TYPE' });
  assert.throws(() => smc.setSmcLearning(1 as unknown as boolean), { code: 'ERR_INVALID_ARG_TYPE' });
  assert.throws(() => smc.setSmcrDefault('false' as unknown as boolean), { code: 'ERR_INVALID_ARG_TYPE' });
  assert.throws(() => smc.enableSmcOnServer({} as net.Server), { code: 'ERR_INVALID_ARG_TYPE' });
  // The largest timer Node takes is fine.
  new smc.Socket({ smcHandshakeTimeout: 2 ** 31 - 1 }).destroy();
});

test('enableSmcOnServer(httpServer): its connections negotiate SMC-D, with no options given', async (t) => {
  const server = http.createServer((req, res) => res.end('hello'));
  smc.enableSmcOnServer(server);
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.after(() => server.close());
  const c = smc.connect({ port: (server.address() as net.AddressInfo).port, host: '127.0.0.1' });
  c.on('error', () => {});
  c.end('GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
  let body = '';
  c.on('data', (d: Buffer) => { body += d.toString(); });
  await once(c, 'close');
  assert.match(body, /^HTTP\/1\.1 200 OK\r\n[\s\S]*\r\n\r\nhello$/);
  assert.equal(smc.getSmcInfo(c).mode, 'SMCD');
});
