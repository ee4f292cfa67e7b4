// node:tls under the auto preload behaves as without it (Node's test-tls-* cases found the
// differences): a TLS socket over SMC-D is not half-open unless asked to be, so a series of
// connections to one server does not hang after the first; and tls.connect({ socket }) runs
// TLS over the socket it is given, also when that socket already negotiated SMC-D or is
// still negotiating. Each scenario runs in a process of its own with and without the preload
// (test/helpers/tls-parity-peer.ts); both must print the same and end by themselves.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { jsonLines, runNode } from '../helpers/procs.js';
import { testRuntimeDir } from '../helpers/runtime-dir.js';

const runtime = testRuntimeDir('tls-parity');
const PEER = fileURLToPath(new URL('../helpers/tls-parity-peer.js', import.meta.url));
const AUTO = pathToFileURL(fileURLToPath(new URL('../../src/smc/auto.js', import.meta.url))).href;

interface Out { result: unknown; modes: string[] }

async function scenario(name: string, preload: boolean): Promise<Out> {
  const p = runNode(PEER, [name], { env: { SOFTRDMA_RUNTIME_DIR: runtime }, execArgv: preload ? ['--import', AUTO] : [] });
  // On plain node each scenario takes well under a second; a hang is what is tested for.
  const code = await p.exit(15_000).catch((e: Error) => assert.fail(`${name}${preload ? ' under the preload' : ''} did not end: ${e.message}`));
  assert.equal(code, 0, p.stderr);
  return jsonLines(p.stdout).at(-1) as unknown as Out;
}

async function parity(name: string): Promise<Out> {
  const [plain, smc] = await Promise.all([scenario(name, false), scenario(name, true)]);
  assert.deepEqual(smc.result, plain.result, `${name}: what the application saw differs under the preload`);
  assert.ok(plain.modes.every((m) => m === 'TCP'));
  return smc;
}

describe('node:tls parity under the preload', () => {
  it('a series of TLS connections to one server: each closes when the server ends it (not half-open)', async () => {
    const smc = await parity('series');
    assert.deepEqual((smc.result as { serverAllowHalfOpen: boolean[] }).serverAllowHalfOpen, [false, false, false]);
    assert.ok(smc.modes.length === 6 && smc.modes.every((m) => m === 'SMCD'), `over SMC-D: ${smc.modes.join(' ')}`);
  });

  it('a client that ends first: the server ends in turn and both close', async () => {
    const smc = await parity('client-ends-first');
    assert.deepEqual(smc.modes, ['SMCD']);
  });

  it('tls.connect({ socket }) over an already connected socket', async () => {
    const smc = await parity('given-connected');
    assert.deepEqual(smc.modes, ['SMCD']);
  });

  it('tls.connect with options node:tls rejects throws, and leaves no connection behind', async () => {
    const smc = await parity('bad-options');
    assert.deepEqual(smc.result, { code: 'ERR_SSL_NO_CIPHER_MATCH' });
  });

  it('new tls.TLSSocket(accepted, { isServer: true }) on an accepted socket: TLS over its SMC-D connection', async () => {
    const smc = await parity('tls-socket-on-accepted');
    assert.deepEqual(smc.modes, ['SMCD']);
  });

  it("tlsServer.emit('connection', accepted) from a plain server: TLS over its SMC-D connection, socket.server as over TCP", async () => {
    const smc = await parity('tls-server-emit-connection');
    assert.deepEqual(smc.modes, ['SMCD']);
  });

  it("an ES module importing TLSSocket and connect by name from 'node:tls' gets the preload's too", async () => {
    const smc = await parity('named-imports');
    assert.deepEqual(smc.modes, ['SMCD']);
  });

  it("a client that ends at 'connect', before its handshake: node:tls's later writes fail quietly, no 'error'", async () => {
    const smc = await parity('end-at-connect');
    assert.deepEqual(smc.result, { client: ['secureConnect', 'end()', 'close'] });
    // Over SMC-D: on TCP node:tls has the handle and this stream's write is never used.
    assert.deepEqual(smc.modes, ['SMCD']);
  });

  it('tls.connect({ socket }) over a socket still connecting', async () => {
    const smc = await parity('given-connecting');
    assert.deepEqual(smc.modes, ['SMCD']);
  });
});
