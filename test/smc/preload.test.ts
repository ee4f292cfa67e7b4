// No code change: node:http servers and clients under `--import softrdma/smc/auto` (and under
// `softrdma smc-run`) talk SMC-D; without the preload on one side they stay TCP. smcss lists
// live connections from another process.

import assert from 'node:assert/strict';
import { once } from 'node:events';
import type net from 'node:net';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { jsonLines, run, runNode, type Proc } from '../helpers/procs.js';
import { testRuntimeDir } from '../helpers/runtime-dir.js';

const runtime = testRuntimeDir('preload-test');
const env = { SOFTRDMA_RUNTIME_DIR: runtime };
const PEER = fileURLToPath(new URL('../../src/tools/smc-peer.js', import.meta.url));
const AUTO = pathToFileURL(fileURLToPath(new URL('../../src/smc/auto.js', import.meta.url))).href;
const SERVER = fileURLToPath(new URL('../helpers/smc-test-server.js', import.meta.url));

async function result(p: Proc): Promise<Record<string, unknown>> {
  assert.equal(await p.exit(60_000), 0, p.stderr);
  return jsonLines(p.stdout).at(-1)!;
}

describe('auto preload', () => {
  let http: Proc;
  let port = 0;
  before(async () => {
    http = runNode(PEER, ['serve', '--http'], { env, execArgv: ['--import', AUTO], stdin: 'pipe' });
    port = Number((await http.waitFor(/"port":(\d+)/))[1]);
  });
  after(async () => { http.child.stdin!.end(); await http.exit(10_000); });

  it('node:http client and server under --import softrdma/smc/auto use SMC-D', async () => {
    const r = await result(runNode(PEER, ['client', '--api', 'net', '--test', 'http', '--port', String(port), '--seconds', '0.5'], { env, execArgv: ['--import', AUTO] }));
    assert.deepEqual(r.modes, ['SMCD']);
    assert.ok((r.requests as number) > 10);
  });

  it('a client without the preload talks plain HTTP to the same server', async () => {
    const r = await result(runNode(PEER, ['client', '--api', 'net', '--test', 'http', '--port', String(port), '--seconds', '0.3'], { env }));
    assert.deepEqual(r.modes, ['TCP']);
    assert.ok((r.requests as number) > 10);
  });

  it('softrdma smc-run -- node … enables it for an unmodified program', async () => {
    const p = run(['smc-run', '--', process.execPath, PEER, 'client', '--api', 'net', '--test', 'http', '--port', String(port), '--seconds', '0.3'], { env });
    const r = await result(p);
    assert.deepEqual(r.modes, ['SMCD']);
  });
});

describe('smcss', () => {
  it('lists a live SMC-D connection of another process, and its listener with -a', async () => {
    const srv = runNode(SERVER, [], { env, stdin: 'pipe' });
    let s: net.Socket | undefined;
    try {
      const port = Number((await srv.waitFor(/"port":(\d+)/))[1]);
      const smc = await import('../../src/smc/index.js');
      s = smc.connect(port, '127.0.0.1');
      await once(s, 'smc');
      s.write('E');
      s.write('x');
      await once(s, 'data');
      let rows: Array<Record<string, unknown>> = [];
      // The status file is rewritten within 200 ms of a change; poll smcss for it, bounded.
      for (let i = 0; i < 50 && !rows.some((r) => r.state === 'ACTIVE' && r.peerPort === port); i++) {
        const p = run(['smcss', '-a', '--json'], { env });
        assert.equal(await p.exit(10_000), 0, p.stderr);
        rows = JSON.parse(p.stdout) as Array<Record<string, unknown>>;
        if (!rows.some((r) => r.peerPort === port)) await new Promise((r) => setTimeout(r, 100));
      }
      const mine = rows.find((r) => r.peerPort === port && r.role === 'client');
      assert.ok(mine, JSON.stringify(rows));
      assert.equal(mine.mode, 'SMCD');
      assert.equal(mine.bufferSize, 1 << 20);
      assert.ok(rows.some((r) => r.state === 'LISTEN' && r.localPort === port));
      const text = run(['smcss', '-d'], { env });
      assert.equal(await text.exit(10_000), 0);
      assert.match(text.stdout, /State\s+Pid\s+Local Address\s+Peer Address\s+Mode\s+Sndbuf/);
      assert.match(text.stdout, new RegExp(`127\\.0\\.0\\.1:${port}\\s+SMCD`));
    } finally {
      s?.destroy();
      srv.child.stdin!.end();
      await srv.exit(10_000);
    }
  });
});
