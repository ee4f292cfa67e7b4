// No code change: node:http servers and clients under `--import softrdma/smc/auto` (and under
// `softrdma smc-run`) talk SMC-D; without the preload on one side they stay TCP. smcss lists
// live connections from another process.

import assert from 'node:assert/strict';
import { once } from 'node:events';
import fs from 'node:fs';
import type net from 'node:net';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { jsonLines, run, runNode, type Proc } from '../helpers/procs.js';
import { testRuntimeDir } from '../helpers/runtime-dir.js';

const runtime = testRuntimeDir('preload-test');
const { pidNamespaceTag } = await import('../../src/ism/runtime-dir.js');
/** A main thread's status socket name (src/smc/status.ts): pid and pid namespace. */
const statusName = (pid: number | undefined) => `${pid}.${pidNamespaceTag()}.sock`;
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

  it('a node:cluster program: workers serve the primary\'s port over SMC-D (their own doorbells, not the primary\'s)', async () => {
    const CLUSTER = fileURLToPath(new URL('../helpers/cluster-echo.js', import.meta.url));
    // --require: with --import the event loop turns before a worker's main script runs (docs/smc.md).
    const r = await result(runNode(CLUSTER, [], { env, execArgv: ['--require', fileURLToPath(AUTO)] }));
    assert.deepEqual(r.results, [0, 1, 2, 3].map((i) => ({ mode: 'SMCD', echo: `echo ping ${i}` })));
  });

  it("a node:cluster primary with the preload and workers without it: no Proposal reaches the workers' application (the primary's round-robin server is no SMC listener)", async () => {
    const CLUSTER = fileURLToPath(new URL('../helpers/cluster-echo.js', import.meta.url));
    const r = await result(runNode(CLUSTER, [], { env: { ...env, CLUSTER_WORKERS: 'plain' }, execArgv: ['--require', fileURLToPath(AUTO)] }));
    assert.deepEqual(r.results, [0, 1, 2, 3].map((i) => ({ mode: 'TCP', echo: `echo ping ${i}` })));
  });

  it('softrdma smc-run -- node … enables it for an unmodified program', async () => {
    const p = run(['smc-run', '--', process.execPath, PEER, 'client', '--api', 'net', '--test', 'http', '--port', String(port), '--seconds', '0.3'], { env });
    const r = await result(p);
    assert.deepEqual(r.modes, ['SMCD']);
  });
});

describe('smcss', () => {
  /** smcss --json as rows; it asks every process at once, so no waiting for a refresh. */
  async function smcss(args: string[] = [], runEnv: NodeJS.ProcessEnv = env): Promise<{ rows: Array<Record<string, unknown>>; stderr: string }> {
    const p = run(['smcss', '--json', ...args], { env: runEnv });
    assert.equal(await p.exit(10_000), 0, p.stderr);
    return { rows: JSON.parse(p.stdout) as Array<Record<string, unknown>>, stderr: p.stderr };
  }

  /** An SMC test server process and an SMC-D connection to it from this process; both closed afterwards, pass or fail. */
  async function withSmcConnection(test: (srv: Proc, port: number, s: net.Socket) => Promise<void>): Promise<void> {
    const srv = runNode(SERVER, [], { env, stdin: 'pipe' });
    let s: net.Socket | undefined;
    try {
      const port = Number((await srv.waitFor(/"port":(\d+)/))[1]);
      const smc = await import('../../src/smc/index.js');
      s = smc.connect(port, '127.0.0.1');
      await once(s, 'smc');
      await test(srv, port, s);
    } finally {
      s?.destroy();
      if (srv.child.exitCode === null && srv.child.signalCode === null) srv.child.stdin!.end();
      await srv.exit(10_000);
    }
  }

  it('lists live SMC-D connections of both processes, as they are at that moment, and the listener with -a', () => withSmcConnection(async (srv, port, s) => {
    s.write('Exyz');
    await once(s, 'data');
    const { rows } = await smcss(['-a']);
    const mine = rows.find((r) => r.peerPort === port && r.role === 'client');
    assert.ok(mine, JSON.stringify(rows));
    assert.equal(mine.pid, process.pid);
    assert.equal(mine.state, 'ACTIVE');
    assert.equal(mine.mode, 'SMCD');
    assert.equal(mine.bufferSize, 1 << 20);
    assert.equal(mine.bytesSent, 4);
    const theirs = rows.find((r) => r.localPort === port && r.role === 'server');
    assert.ok(theirs, JSON.stringify(rows));
    assert.equal(theirs.pid, srv.child.pid);
    assert.equal(theirs.bytesReceived, 4);
    assert.equal(theirs.bytesSent, 3);
    assert.ok(rows.some((r) => r.state === 'LISTEN' && r.localPort === port));
    const text = run(['smcss', '-d'], { env });
    assert.equal(await text.exit(10_000), 0);
    assert.match(text.stdout, /State\s+UID\s+Inode\s+Local Address\s+Peer Address\s+Intf\s+Mode\s+Shutd\s+Token\s+Sndbuf/);
    assert.match(text.stdout, new RegExp(`127\\.0\\.0\\.1:${port}\\s+0000 SMCD  <->  [0-9a-f]{8} `));
    // Closed is gone at once: nothing is cached.
    s.destroy();
    await once(s, 'close');
    assert.ok(!(await smcss()).rows.some((r) => r.peerPort === port && r.role === 'client'));
  }));

  it('lists a connection that fell back to TCP with its reason, like smc-tools (TCP 0x03010000/0x00000000)', async () => {
    const net = await import('node:net');
    const smc = await import('../../src/smc/index.js');
    const plain = net.createServer((c) => c.on('error', () => {}));
    await new Promise<void>((r) => plain.listen(0, '127.0.0.1', r));
    const port = (plain.address() as net.AddressInfo).port;
    const s = smc.connect(port, '127.0.0.1');
    try {
      await once(s, 'smc');
      const { rows } = await smcss();
      const row = rows.find((r) => r.peerPort === port);
      assert.ok(row, JSON.stringify(rows));
      assert.equal(row.mode, 'TCP');
      assert.match(String(row.fallbackReason), /PEERNOSMC \(0x03010000\)/);
      const text = run(['smcss'], { env });
      assert.equal(await text.exit(10_000), 0);
      assert.match(text.stdout, new RegExp(`127\\.0\\.0\\.1:${port}\\s+0000 TCP 0x03010000$`, 'm')); // smcss: /peer only when the peer declined
    } finally {
      s.destroy();
      plain.close();
    }
  });

  it('lists the connections of a worker thread next to the main thread\'s (each thread answers for its own)', () => withSmcConnection(async (_srv, port, s) => {
    const { Worker } = await import('node:worker_threads');
    let worker: InstanceType<typeof Worker> | undefined;
    try {
      // The worker opens its own SMC connection to the same server and reports its local port.
      const url = new URL('../../src/smc/index.js', import.meta.url).href;
      worker = new Worker(`
        const { parentPort } = require('node:worker_threads');
        import(${JSON.stringify(url)}).then((smc) => {
          const c = smc.connect(${port}, '127.0.0.1');
          c.on('smc', () => parentPort.postMessage(c.localPort));
          parentPort.on('message', () => { c.destroy(); parentPort.close(); });
        });`, { eval: true });
      const [workerPort] = (await once(worker, 'message')) as [number];
      const { rows } = await smcss();
      const clients = rows.filter((r) => r.peerPort === port && r.role === 'client');
      assert.deepEqual(clients.map((r) => r.localPort).sort(), [s.localPort, workerPort].sort(), JSON.stringify(rows));
      assert.ok(clients.every((r) => r.pid === process.pid && r.mode === 'SMCD'));
    } finally {
      worker?.postMessage('stop');
      if (worker) await once(worker, 'exit');
    }
  }));

  it('a process whose status socket could not be made at first use is listed once it can be', async () => {
    // Its own runtime directory, where 'status' is a file: the first SMC socket cannot make
    // its status socket there.
    const dir = fs.mkdtempSync(path.join(runtime, 'late-'));
    fs.writeFileSync(path.join(dir, 'status'), '');
    const smcUrl = pathToFileURL(fileURLToPath(new URL('../../src/smc/index.js', import.meta.url))).href;
    const code = `import net from 'node:net'; import * as smc from '${smcUrl}';
      const srv = net.createServer((c) => c.on('error', () => {})).listen(0, '127.0.0.1', () => {
        const s = smc.connect(srv.address().port, '127.0.0.1');
        s.on('smc', (i) => console.log('settled', i.mode));
        process.stdin.on('end', () => { s.destroy(); srv.close(); });
        process.stdin.resume();
      });`;
    const p = runNode(code, [], { env: { SOFTRDMA_RUNTIME_DIR: dir }, execArgv: ['--input-type=module', '-e'], stdin: 'pipe' });
    try {
      await p.waitFor(/settled TCP/);
      const sockFile = path.join(dir, 'status', statusName(p.child.pid));
      fs.rmSync(path.join(dir, 'status'));
      // The endpoint retries every 2 s; wait for the socket, with a bound.
      const deadline = Date.now() + 8000;
      while (!fs.existsSync(sockFile)) {
        assert.ok(Date.now() < deadline, 'no status socket 8 s after its directory could be made');
        await new Promise((r) => setTimeout(r, 50));
      }
      const all = (await smcss([], { SOFTRDMA_RUNTIME_DIR: dir })).rows;
      const rows = all.filter((r) => r.pid === p.child.pid);
      assert.equal(rows.length, 1, JSON.stringify(all));
      assert.equal(rows[0]!.mode, 'TCP');
    } finally {
      p.child.stdin!.end();
      await p.exit(10_000);
    }
  });

  it('removes the status socket a killed process left behind, without a warning', () => withSmcConnection(async (srv, _port, s) => {
    s.on('error', () => {});
    const closed = new Promise((r) => s.on('close', r)); // after an error (ECONNRESET), which once() would reject on
    const left = path.join(runtime, 'status', statusName(srv.child.pid!));
    assert.ok(fs.existsSync(left));
    srv.child.kill('SIGKILL');
    await srv.exit(10_000).catch(() => {});
    await closed;
    const { rows, stderr } = await smcss();
    assert.equal(stderr, '');
    assert.ok(!rows.some((r) => r.pid === srv.child.pid));
    assert.ok(!fs.existsSync(left), 'the dead process\'s status socket is removed');
  }));
});
