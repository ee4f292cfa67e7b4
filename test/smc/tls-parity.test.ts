// node:tls under the auto preload behaves as without it (Node's test-tls-* cases found the
// differences): a TLS socket over SMC-D is not half-open unless asked to be, so a series of
// connections to one server does not hang after the first; and tls.connect({ socket }) runs
// TLS over the socket it is given, also when that socket already negotiated SMC-D or is
// still negotiating. Each scenario runs in a process of its own with and without the preload
// (test/helpers/tls-parity-peer.ts); both must print the same and end by themselves.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { jsonLines, runNode } from '../helpers/procs.js';
import { testRuntimeDir } from '../helpers/runtime-dir.js';

const runtime = testRuntimeDir('tls-parity');
const PEER = fileURLToPath(new URL('../helpers/tls-parity-peer.js', import.meta.url));
const AUTO = pathToFileURL(fileURLToPath(new URL('../../src/smc/auto.js', import.meta.url))).href;

interface Out { result: unknown; modes: string[] }

/** Run a scenario program (plain node or under the preload); its last JSON line. */
async function runScenario(file: string, args: string[], name: string, preload: boolean): Promise<Out> {
  const p = runNode(file, args, { env: { SOFTRDMA_RUNTIME_DIR: runtime }, execArgv: preload ? ['--import', AUTO] : [] });
  // On plain node each scenario takes well under a second; a hang is what is tested for.
  const code = await p.exit(15_000).catch((e: Error) => assert.fail(`${name}${preload ? ' under the preload' : ''} did not end: ${e.message}`));
  assert.equal(code, 0, p.stderr);
  return jsonLines(p.stdout).at(-1) as unknown as Out;
}

/** The scenario on plain node and under the preload at once: the application saw the same; the SMC side's record. */
async function parityOf(name: string, run: (preload: boolean) => Promise<Out>): Promise<Out> {
  const [plain, smc] = await Promise.all([run(false), run(true)]);
  assert.deepEqual(smc.result, plain.result, `${name}: what the application saw differs under the preload`);
  assert.ok(plain.modes.every((m) => m === 'TCP'));
  return smc;
}

const parity = (name: string): Promise<Out> => parityOf(name, (preload) => runScenario(PEER, [name], name, preload));

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

// Scenarios from Node's own test-tls-* cases that failed or hung under the preload, each
// reduced to what differed. Their scripts are written here (ES modules in a temporary
// directory) and run as the ones above: with and without the preload, the same output, and
// an end by themselves.

/** The repository's test/fixtures, however deep the build directory lies. */
function fixturesDir(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const f = path.join(dir, 'test', 'fixtures');
    if (fs.existsSync(path.join(f, 'tls-key.pem'))) return f;
    const up = path.dirname(dir);
    if (up === dir) throw new Error('test/fixtures/tls-key.pem not found');
    dir = up;
  }
}

const PRELUDE = `
import fs from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';
import { getSmcInfo } from ${JSON.stringify(pathToFileURL(fileURLToPath(new URL('../../src/smc/index.js', import.meta.url))).href)};
const key = fs.readFileSync(${JSON.stringify(path.join(fixturesDir(), 'tls-key.pem'))});
const cert = fs.readFileSync(${JSON.stringify(path.join(fixturesDir(), 'tls-cert.pem'))});
const modes = [];
const mode = (t) => { modes.push(getSmcInfo(t).mode); };
const report = (result) => { console.log(JSON.stringify({ result, modes })); };
const listen = (s) => new Promise((resolve) => s.listen(0, '127.0.0.1', () => resolve(s.address().port)));
// A TLS 1.2 client that renegotiates at the first data it gets (the data and its steps in out);
// then(c) runs right after renegotiate() returns.
const renegotiatingClient = (port, out, onRenegotiated, then = () => {}) => {
  const c = tls.connect({ port, host: '127.0.0.1', rejectUnauthorized: false, maxVersion: 'TLSv1.2' }, () => mode(c));
  let asked = false;
  c.on('data', (d) => {
    out.data += d;
    if (asked) return;
    asked = true;
    out.client.push('renegotiate ' + c.renegotiate({ rejectUnauthorized: false }, onRenegotiated));
    then(c);
  });
  c.on('error', (e) => { out.client.push('error ' + e.code); });
  return c;
};
`;

const SCENARIOS: Record<string, string> = {
  // test-tls-onread-static-buffer: tls.connect({ onread }) delivers the cleartext into the
  // application's buffer, never as 'data' (node:tls honours onread only for a connection it
  // makes itself; under the preload it is handed a stream).
  'onread': `
    const s = tls.createServer({ key, cert }, (c) => { c.end('hello world'); });
    const port = await listen(s);
    const out = { fixed: { calls: [], data: 0 }, gen: { calls: [], data: 0, gens: 0 } };
    const buf = Buffer.alloc(4);
    const pool = [Buffer.alloc(3), Buffer.alloc(3)];
    let i = 0;
    const a = tls.connect({ port, host: '127.0.0.1', rejectUnauthorized: false,
      onread: { buffer: buf, callback: (n, b) => { out.fixed.calls.push(b === buf ? b.toString('latin1', 0, n) : 'another buffer'); } } },
      () => mode(a));
    const b = tls.connect({ port, host: '127.0.0.1', rejectUnauthorized: false,
      onread: { buffer: () => { out.gen.gens++; return pool[i++ % 2]; }, callback: (n, b) => { out.gen.calls.push(b.toString('latin1', 0, n)); } } },
      () => mode(b));
    for (const [c, o] of [[a, out.fixed], [b, out.gen]]) c.on('data', () => { o.data++; }).on('end', () => { o.end = true; });
    await Promise.all([a, b].map((c) => new Promise((resolve) => c.on('close', resolve))));
    s.close();
    report(out);
  `,
  // test-tls-disable-renegotiation: renegotiate() writes an empty buffer, which TLSWrap passes
  // down; records that arrive before that write completes make TLSWrap write again while it
  // is under way (JSStreamSocket's doWrite asserted: ERR_INTERNAL_ASSERTION). Here the two
  // records of the server arrive together, and the client renegotiates at the first.
  'renegotiate-while-reading': `
    const s = tls.createServer({ key, cert, maxVersion: 'TLSv1.2' }, (c) => {
      c.write('a');
      c.write('b');
      c.on('data', (d) => { if (String(d) === 'done') c.end('bye'); });
    });
    const port = await listen(s);
    const out = { client: [], data: '' };
    const c = renegotiatingClient(port, out, (err) => {
      out.client.push('renegotiated ' + (err ? err.code : 'ok'));
      c.write('done');
    });
    await new Promise((resolve) => c.on('close', resolve));
    s.close();
    report(out);
  `,
  // The same with the client's end() right after renegotiate(): TLSWrap may shut down from
  // inside the empty write's completion while records it wrote meanwhile wait. This run does
  // not hit that timing reliably; the order itself is tested on Node's JSStreamSocket in
  // tls-queue-writes.test.ts. Here: the application sees what it sees over TCP.
  'renegotiate-then-end': `
    const s = tls.createServer({ key, cert, maxVersion: 'TLSv1.2' }, (c) => {
      c.write('a');
      c.write('b');
      c.resume();
      c.on('end', () => c.end());
      c.on('error', () => {});
    });
    const port = await listen(s);
    const out = { client: [], data: '' };
    const c = renegotiatingClient(port, out, () => {}, (t) => t.end());
    c.on('finish', () => { out.client.push('finish'); });
    await new Promise((resolve) => c.on('close', resolve));
    s.close();
    report(out);
  `,
  // test-tls-inception: a client writing after its peer closed the connection (its close_notify
  // among them): over TCP the failed write is TLSWrap's to judge (ignored once TLS shut its
  // side down), never an 'error' of the TLS socket, and its shutdown completes ('finish');
  // the SMC socket's failed write surfaced as one (EPIPE).
  'write-after-peer-closed': `
    const s = tls.createServer({ key, cert }, (c) => { c.write('hello', () => c.destroy()); });
    const port = await listen(s);
    const ev = [];
    const c = tls.connect({ port, host: '127.0.0.1', rejectUnauthorized: false, allowHalfOpen: true }, () => mode(c));
    c.on('data', (d) => { ev.push('data ' + d); });
    c.on('end', () => { ev.push('end'); c.write('x', (e) => { ev.push('write ' + (e ? e.code : 'ok')); }); c.end(); });
    c.on('finish', () => { ev.push('finish'); });
    c.on('error', (e) => { ev.push('error ' + e.code); });
    await new Promise((resolve) => c.on('close', resolve));
    ev.push('close');
    s.close();
    report(ev);
  `,
  // A client whose writes fail while the peer's end is not yet read (paused): the TLS
  // socket's 'error' as over TCP, not a quiet close.
  'write-fails-unread-end': `
    const s = tls.createServer({ key, cert }, (c) => { c.write('x', () => c.destroy()); });
    const port = await listen(s);
    const ev = [];
    const c = tls.connect({ port, host: '127.0.0.1', rejectUnauthorized: false }, () => {
      mode(c);
      c.pause();
      setTimeout(() => {
        c.write('a', (e) => { ev.push('write a ' + (e ? e.code : 'ok')); });
        c.write('b', (e) => { ev.push('write b ' + (e ? e.code : 'ok')); });
      }, 100);
    });
    c.on('error', (e) => { ev.push('error'); });
    await new Promise((resolve) => c.on('close', resolve));
    ev.push('close');
    s.close();
    report(ev.filter((e, i) => e !== 'error' || ev.indexOf('error') === i));
  `,
  // test-tls-server-parent-constructor-options: a TLS server with pauseOnConnect: node:net
  // makes its sockets not reading, node:tls reads them all the same; the server waited for
  // the client's first bytes for ever.
  'pause-on-connect': `
    const out = {};
    const s = tls.createServer({ key, cert, pauseOnConnect: true, allowHalfOpen: true }, (c) => {
      mode(c);
      out.server = { paused: c.isPaused(), allowHalfOpen: c.allowHalfOpen };
      c.on('data', (d) => { out.server.data = String(d); });
      c.on('end', () => { out.server.end = true; c.end('bye'); });
      c.resume();
    });
    const port = await listen(s);
    const c = tls.connect({ port, host: '127.0.0.1', rejectUnauthorized: false }, () => c.end('hi'));
    let data = '';
    c.on('data', (d) => { data += d; });
    await new Promise((resolve) => c.on('close', resolve));
    out.client = data;
    s.close();
    report(out);
  `,
  // test-tls-cli-min-version-1.3 (test-tls-min-max-version under --tls-min-v1.3): a client
  // whose handshake fails as it starts (no protocol its options allow). node:tls starts it
  // once the TCP connection is up, so the server gets its alert (tlsClientError); under the
  // preload it started before there was a connection, and the server saw nothing.
  'handshake-fails-at-start': `
    tls.DEFAULT_MIN_VERSION = 'TLSv1.3';
    const out = {};
    let settle;
    const both = new Promise((resolve) => { settle = () => { if (out.client && out.server) resolve(); }; });
    const s = tls.createServer({ key, cert, secureProtocol: 'TLSv1_method', ciphers: 'ALL@SECLEVEL=0' }, () => { out.server = 'secure'; settle(); });
    s.on('tlsClientError', (e) => { out.server = e.code; settle(); });
    const port = await listen(s);
    const c = tls.connect({ port, host: '127.0.0.1', rejectUnauthorized: false, secureProtocol: 'SSLv23_method', ciphers: 'ALL@SECLEVEL=0' });
    c.on('error', (e) => { out.client = e.code; settle(); });
    // The server's answer comes at once over TCP; without one, what was seen by then.
    await Promise.race([both, new Promise((resolve) => setTimeout(resolve, 3000).unref())]);
    s.close();
    report(out);
  `,
  // test-tls-writewrap-leak: a server that destroys the connection at once, a client that
  // revives its TLS socket in its 'error' listener (_undestroy): its pending write is
  // cancelled (ECANCELED) as the TLS socket's handle closes. Over an SmcStream the stream's
  // 'close' destroyed the revived socket again, and the write succeeded.
  'revived-after-error': `
    const s = net.createServer((c) => { c.destroy(); });
    const port = await listen(s);
    const ev = [];
    const c = tls.connect({ port, host: '127.0.0.1' });
    c.on('error', (e) => { ev.push('error ' + e.code); c._undestroy(); });
    c.on('close', () => { ev.push('close'); });
    await new Promise((resolve) => c.write('hello', (err) => { ev.push('write ' + (err ? err.code : 'ok')); resolve(); }));
    s.close();
    await new Promise((resolve) => setTimeout(resolve, 200));
    report(ev);
  `,
};

const scripts = fs.mkdtempSync(path.join(os.tmpdir(), 'softrdma-tls-parity-'));
after(() => fs.rmSync(scripts, { recursive: true, force: true }));

/** A scenario of SCENARIOS, written out once as its own program. */
function scriptParity(name: string): Promise<Out> {
  const file = path.join(scripts, `${name}.mjs`);
  if (!fs.existsSync(file)) fs.writeFileSync(file, `${PRELUDE}\n${SCENARIOS[name]}`);
  return parityOf(name, (preload) => runScenario(file, [], name, preload));
}

describe("node:tls parity under the preload: Node's test-tls-* cases", () => {
  it('tls.connect({ onread }) over SMC-D: the cleartext goes to the onread buffer, no data events (test-tls-onread-static-buffer)', async () => {
    const smc = await scriptParity('onread');
    assert.deepEqual((smc.result as { fixed: { calls: string[] } }).fixed.calls, ['hell', 'o wo', 'rld']);
    assert.deepEqual(smc.modes, ['SMCD', 'SMCD']);
  });

  it('renegotiate() while records arrive: TLSWrap writes one at a time through the SMC stream (test-tls-disable-renegotiation)', async () => {
    const smc = await scriptParity('renegotiate-while-reading');
    assert.deepEqual(smc.result, { client: ['renegotiate true', 'renegotiated ok'], data: 'abbye' });
    assert.deepEqual(smc.modes, ['SMCD']);
  });

  it('renegotiate() then end() while records arrive: the shutdown waits for the queued writes', async () => {
    const smc = await scriptParity('renegotiate-then-end');
    assert.deepEqual(smc.modes, ['SMCD']);
  });

  it("writes after the peer closed fail to TLSWrap, not as the TLS socket's 'error' (test-tls-inception)", async () => {
    const smc = await scriptParity('write-after-peer-closed');
    assert.deepEqual(smc.result, ['data hello', 'end', 'write ok', 'finish', 'close']);
    assert.deepEqual(smc.modes, ['SMCD']);
  });

  it("writes that fail before the peer's end was read: the TLS socket's 'error', as over TCP", async () => {
    const smc = await scriptParity('write-fails-unread-end');
    assert.ok((smc.result as string[]).includes('error'), JSON.stringify(smc.result));
  });

  it('a TLS server with pauseOnConnect answers (test-tls-server-parent-constructor-options)', async () => {
    const smc = await scriptParity('pause-on-connect');
    assert.deepEqual(smc.result, { server: { paused: true, allowHalfOpen: true, data: 'hi', end: true }, client: 'bye' });
  });

  it("a client handshake that fails as it starts: it starts once connected, the server's tlsClientError as over TCP (test-tls-cli-min-version-1.3)", async () => {
    const smc = await scriptParity('handshake-fails-at-start');
    // (The client closes during the SMC handshake, which falls back: its alert goes over TCP.)
    assert.deepEqual(smc.result, { client: 'ERR_SSL_NO_PROTOCOLS_AVAILABLE', server: 'ERR_SSL_UNEXPECTED_MESSAGE' });
  });

  it("a TLS socket revived in its 'error' listener is not destroyed again: its pending write is cancelled (test-tls-writewrap-leak)", async () => {
    const smc = await scriptParity('revived-after-error');
    assert.deepEqual(smc.result, ['error ECONNRESET', 'write ECANCELED', 'close', 'error ECANCELED', 'close']);
  });
});
