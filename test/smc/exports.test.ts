// softrdma/smc stands in for node:net in an import: a default export, as node:net has, and
// every export node:net has on the running Node, delegated where SMC changes nothing.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as nodeNet from 'node:net';
import smcNet from 'softrdma/smc';
import * as smcNs from 'softrdma/smc';

/** What softrdma/smc replaces; every other export of node:net must be node:net's own. */
const REPLACED = new Set(['default', 'Server', 'Socket', 'Stream', 'connect', 'createConnection', 'createServer']);

test('softrdma/smc has every export node:net has', () => {
  const ours = new Set(Object.keys(smcNs));
  const missing = Object.keys(nodeNet).filter((k) => !ours.has(k));
  assert.deepEqual(missing, [], `node:net ${process.version} exports that softrdma/smc lacks`);
  const missingDefault = Object.keys((nodeNet as unknown as { default: object }).default).filter((k) => !(k in smcNet));
  assert.deepEqual(missingDefault, [], 'keys of node:net\'s default export that ours lacks');
  for (const k of Object.keys(nodeNet)) {
    if (REPLACED.has(k)) continue;
    assert.equal((smcNs as Record<string, unknown>)[k], (nodeNet as Record<string, unknown>)[k], `${k} is node:net's`);
  }
});

test('the default export is the module\'s exports in one object, as node:net\'s', () => {
  for (const k of Object.keys(smcNs)) {
    if (k === 'default') continue;
    assert.ok(k in smcNet, `default export has ${k}`);
    assert.equal((smcNet as Record<string, unknown>)[k], (smcNs as Record<string, unknown>)[k], `default.${k}`);
  }
  assert.equal(smcNet.Stream, smcNet.Socket, 'Stream is Socket, as in node:net');
  assert.ok(new smcNet.Socket() instanceof nodeNet.Socket);
});

test('import net from \'softrdma/smc\' connects', async () => {
  const server = smcNet.createServer((s) => s.pipe(s));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as nodeNet.AddressInfo;
  const sock = smcNet.connect(port, '127.0.0.1');
  sock.write('hello');
  const [data] = await new Promise<[Buffer]>((resolve, reject) => { sock.once('data', (d: Buffer) => resolve([d])); sock.once('error', reject); });
  assert.equal(data.toString(), 'hello');
  assert.equal(smcNet.getSmcInfo(sock).pending, false);
  sock.destroy();
  await new Promise((resolve) => server.close(resolve));
});
