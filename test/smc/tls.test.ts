// TLS over SMC-D: node:https under the auto preload carries its TLS records through shared
// memory (both ends say so, and the SMC byte counters exceed the body), certificate checks
// and addresses work as over TCP, and either end without the preload still gets plain TLS
// over TCP. connectTls does the same without the preload.

import assert from 'node:assert/strict';
import { once } from 'node:events';
import fs from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { jsonLines, runNode, type Proc } from '../helpers/procs.js';
import { testRuntimeDir } from '../helpers/runtime-dir.js';

const runtime = testRuntimeDir('tls-test');
const env = { SOFTRDMA_RUNTIME_DIR: runtime };
const PEER = fileURLToPath(new URL('../helpers/https-peer.js', import.meta.url));
const AUTO = pathToFileURL(fileURLToPath(new URL('../../src/smc/auto.js', import.meta.url))).href;
const CERT = fs.readFileSync(fileURLToPath(new URL('../../../test/fixtures/tls-cert.pem', import.meta.url)));
const preload = ['--import', AUTO];

async function serve(withPreload: boolean): Promise<{ proc: Proc; port: number }> {
  const proc = runNode(PEER, ['serve'], { env, execArgv: withPreload ? preload : [], stdin: 'pipe' });
  return { proc, port: Number((await proc.waitFor(/"port":(\d+)/))[1]) };
}

async function get(port: number, bytes: number, withPreload: boolean, host?: string): Promise<Record<string, unknown>> {
  const p = runNode(PEER, ['get', String(port), String(bytes), ...(host ? [host] : [])], { env, execArgv: withPreload ? preload : [] });
  assert.equal(await p.exit(60_000), 0, p.stderr);
  return jsonLines(p.stdout).at(-1)!;
}

describe('TLS over SMC-D', () => {
  let smcServer: { proc: Proc; port: number };
  let plainServer: { proc: Proc; port: number };
  before(async () => { [smcServer, plainServer] = await Promise.all([serve(true), serve(false)]); });
  after(async () => {
    for (const s of [smcServer, plainServer]) { s.proc.child.stdin!.end(); await s.proc.exit(10_000); }
  });

  it('https under the preload on both ends carries the TLS records over SMC-D', async () => {
    const size = 3 << 20;
    const r = await get(smcServer.port, size, true);
    assert.equal(r.status, 200);
    assert.equal(r.bytes, size);
    assert.equal(r.sha256Ok, true);
    assert.equal(r.authorized, true, 'the certificate was verified');
    assert.equal(r.clientMode, 'SMCD');
    assert.equal(r.serverMode, 'SMCD');
    // Records, not just the body: TLS framing makes the shared-memory bytes exceed the body.
    assert.ok((r.clientSmcReceived as number) > size, `client received ${String(r.clientSmcReceived)} bytes over SMC-D`);
    assert.ok((r.serverSmcReceived as number) > 100, 'the request reached the server over SMC-D');
    assert.equal(r.clientRemote, '127.0.0.1');
    assert.equal(r.serverSawAddress, '127.0.0.1');
  });

  it('by host name: localhost resolves to the SMC listener too', async () => {
    const r = await get(smcServer.port, 1000, true, 'localhost');
    assert.equal(r.clientMode, 'SMCD');
    assert.equal(r.authorized, true);
  });

  it('a client without the preload gets plain TLS over TCP from an SMC server', async () => {
    const r = await get(smcServer.port, 100_000, false);
    assert.equal(r.sha256Ok, true);
    assert.equal(r.clientMode, 'TCP');
    assert.equal(r.serverMode, 'TCP');
    assert.equal(r.authorized, true);
  });

  it('a client under the preload gets plain TLS over TCP from a server without it', async () => {
    const r = await get(plainServer.port, 100_000, true);
    assert.equal(r.sha256Ok, true);
    assert.equal(r.clientMode, 'TCP');
    assert.equal(r.serverMode, 'TCP');
  });

  it('connectTls, without the preload, runs TLS over SMC-D and checks the certificate', async () => {
    const smc = await import('../../src/smc/index.js');
    const t = smc.connectTls({ host: '127.0.0.1', port: smcServer.port, ca: CERT, servername: 'localhost' });
    await once(t, 'secureConnect');
    assert.equal(t.authorized, true);
    t.write('GET /?bytes=5000 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n');
    const parts: Buffer[] = [];
    t.on('data', (d: Buffer) => parts.push(d));
    await once(t, 'end');
    const text = Buffer.concat(parts).toString('latin1');
    assert.match(text, /^HTTP\/1\.1 200/);
    assert.match(text, /x-smc-mode: SMCD/i);
    assert.equal(smc.getSmcInfo(t).mode, 'SMCD');
    assert.equal(t.remoteAddress, '127.0.0.1');
    t.destroy();
    // A wrong CA fails the handshake as it would over TCP.
    const bad = smc.connectTls({ host: '127.0.0.1', port: smcServer.port, servername: 'localhost' });
    const [err] = (await once(bad, 'error')) as [NodeJS.ErrnoException];
    assert.equal(err.code, 'DEPTH_ZERO_SELF_SIGNED_CERT');
  });
});
