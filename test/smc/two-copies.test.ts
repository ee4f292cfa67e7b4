// Two copies of softrdma in one process (an application's own dependency and the one smc-run
// preloads) agree about every socket: the per-socket state, the smcss status socket and the
// totals are shared through global symbols, so a connection one copy made is SMC-D to the
// other copy's getSmcInfo too, and smcTotals() counts it once, whichever copy is asked.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { testRuntimeDir } from '../helpers/runtime-dir.js';

const root = fileURLToPath(new URL('../../../', import.meta.url));
const runtime = testRuntimeDir('two-copies');

/** An installed copy of the package: its package.json and dist/src, koffi from ours. */
function installCopy(dir: string): string {
  const pkg = path.join(dir, 'node_modules', 'softrdma');
  fs.mkdirSync(path.join(pkg, 'dist'), { recursive: true });
  fs.copyFileSync(path.join(root, 'package.json'), path.join(pkg, 'package.json'));
  fs.cpSync(path.join(root, 'dist', 'src'), path.join(pkg, 'dist', 'src'), { recursive: true });
  fs.symlinkSync(path.join(root, 'node_modules'), path.join(pkg, 'node_modules'));
  return pkg;
}

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'softrdma-two-copies-'));
test.after(() => fs.rmSync(tmp, { recursive: true, force: true }));
const copyA = installCopy(path.join(tmp, 'a'));
const copyB = installCopy(path.join(tmp, 'b'));
const smcA = path.join(copyA, 'dist', 'src', 'smc', 'index.js');
const smcB = path.join(copyB, 'dist', 'src', 'smc', 'index.js');

function runScript(source: string, execArgv: string[] = []): Promise<Record<string, unknown>> {
  const file = path.join(tmp, `script-${Math.random().toString(36).slice(2)}.mjs`);
  fs.writeFileSync(file, source);
  return new Promise((resolve, reject) => {
    execFile(process.execPath, [...execArgv, file], { env: { ...process.env, SOFTRDMA_RUNTIME_DIR: runtime }, timeout: 30_000 }, (err, stdout, stderr) => {
      if (err) return reject(new Error(`${err.message}\n${stdout}\n${stderr}`));
      try { resolve(JSON.parse(stdout.trim().split('\n').pop()!)); } catch { reject(new Error(`no JSON line:\n${stdout}\n${stderr}`)); }
    });
  });
}

test('two copies of softrdma: one connects, the other reports', async () => {
  assert.notEqual(smcA, smcB);
  const out = await runScript(`
    import { once } from 'node:events';
    const A = await import(${JSON.stringify(smcA)});
    const B = await import(${JSON.stringify(smcB)});
    if (A.Socket === B.Socket) throw new Error('one copy, not two');
    const accepted = [];
    const server = A.createServer((s) => { accepted.push(s); s.pipe(s); });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const sock = A.connect(server.address().port, '127.0.0.1');
    const [event] = await once(sock, 'smc');
    sock.write('x');
    await once(sock, 'data');
    const result = {
      event: event.mode,
      clientByB: B.getSmcInfo(sock).mode,
      serverByB: B.getSmcInfo(accepted[0]).mode,
      isSocketOfB: sock instanceof B.Socket,
      totalsA: A.smcTotals(),
      totalsB: B.smcTotals(),
    };
    sock.destroy();
    server.close();
    console.log(JSON.stringify(result));
  `);
  assert.equal(out.event, 'SMCD');
  assert.equal(out.clientByB, 'SMCD');
  assert.equal(out.serverByB, 'SMCD');
  assert.equal(out.isSocketOfB, true);
  assert.deepEqual(out.totalsB, out.totalsA);
  assert.equal((out.totalsB as { smcd: number }).smcd, 2, 'client and server side, each counted once');
});

test('the preload of one copy and the API of another', async () => {
  // smc-run's situation: copy A is preloaded, the application uses copy B's API on plain
  // node:net sockets and on copy B's own server.
  const out = await runScript(`
    import net from 'node:net';
    import { once } from 'node:events';
    const B = await import(${JSON.stringify(smcB)});
    const results = {};
    for (const kind of ['node:net', 'copy B']) {
      const server = kind === 'node:net' ? net.createServer((s) => s.pipe(s)) : B.createServer((s) => s.pipe(s));
      server.listen(0, '127.0.0.1');
      await once(server, 'listening');
      const sock = net.connect(server.address().port, '127.0.0.1');
      const [event] = await once(sock, 'smc');
      sock.write('x');
      await once(sock, 'data');
      results[kind] = { event: event.mode, byB: B.getSmcInfo(sock).mode };
      sock.destroy();
      server.close();
    }
    results.totalsB = B.smcTotals();
    console.log(JSON.stringify(results));
  `, ['--require', path.join(copyA, 'dist', 'src', 'smc', 'auto.js')]);
  assert.deepEqual(out['node:net'], { event: 'SMCD', byB: 'SMCD' });
  assert.deepEqual(out['copy B'], { event: 'SMCD', byB: 'SMCD' });
  assert.equal((out.totalsB as { smcd: number }).smcd, 4);
});
