// The registry of SMC listeners: which destinations a client may propose to.

import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs';
import { describe, it, mock } from 'node:test';
import { Worker } from 'node:worker_threads';
import { waitFor } from '../helpers/pair.js';
import { testRuntimeDir } from '../helpers/runtime-dir.js';

testRuntimeDir('discovery-test');
const { ListenerRegistration, clearDiscoveryCache, isSmcListener } = await import('../../src/smc/discovery.js');
const { keepPresent, subdir } = await import('../../src/ism/runtime-dir.js');

/** Run `check` while a listener entry for (address, port) exists, with a fresh cache. */
function withListener(address: string, port: number, check: () => void): void {
  const reg = new ListenerRegistration(address, port);
  try {
    clearDiscoveryCache();
    check();
  } finally {
    reg.remove();
  }
}

describe('listener discovery', () => {

  it('matches the registered address and port only, whatever was asked before', () => {
    const port = 40000 + (process.pid % 20000);
    withListener('127.0.0.2', port, () => {
      assert.equal(isSmcListener('127.0.0.2', port), true);
      // Same port, other address: answered from the same cached directory scan, and no.
      assert.equal(isSmcListener('127.0.0.3', port), false);
      assert.equal(isSmcListener('::ffff:127.0.0.2', port), true, 'an IPv4-mapped peer address');
      assert.equal(isSmcListener('127.0.0.2', port + 1), false);
      let asked = 0;
      assert.equal(isSmcListener(() => { asked++; return '127.0.0.2'; }, port + 1), false);
      assert.equal(asked, 0, 'no listener on the port: the address is never asked for');
      assert.equal(isSmcListener(() => { asked++; return '127.0.0.2'; }, port), true);
      assert.equal(asked, 1);
    });
    clearDiscoveryCache();
    assert.equal(isSmcListener('127.0.0.2', port), false, 'gone once removed');
  });

  it('a wildcard listener matches local destinations of its family, never a remote one', () => {
    const port = 40001 + (process.pid % 20000);
    withListener('0.0.0.0', port, () => {
      assert.equal(isSmcListener('127.0.0.9', port), true);
      assert.equal(isSmcListener('::1', port), false, 'an IPv4 wildcard does not take IPv6');
      assert.equal(isSmcListener('192.0.2.1', port), false, 'not an address of this host');
    });
  });
});

describe('entries kept present', () => {
  it('share one timer, survive a check that throws, and stop when asked', () => {
    mock.timers.enable({ apis: ['setInterval'] });
    try {
      const runs = { a: 0, b: 0 };
      const stopA = keepPresent(() => { runs.a++; throw new Error('a failing check'); });
      const stopB = keepPresent(() => { runs.b++; });
      mock.timers.tick(2000);
      assert.deepEqual(runs, { a: 1, b: 1 });
      mock.timers.tick(2000);
      assert.deepEqual(runs, { a: 2, b: 2 }, 'a check that threw runs again, and the others still run');
      stopA();
      mock.timers.tick(2000);
      assert.deepEqual(runs, { a: 2, b: 3 });
      stopB();
      mock.timers.tick(10_000);
      assert.deepEqual(runs, { a: 2, b: 3 }, 'nothing runs once every check stopped');
    } finally {
      mock.timers.reset();
    }
  });

  it('a listener entry removed under a live registration is written again on the next round', () => {
    mock.timers.enable({ apis: ['setInterval'] });
    const port = 40002 + (process.pid % 20000);
    const reg = new ListenerRegistration('127.0.0.2', port);
    try {
      const dir = subdir('listeners');
      const mine = () => fs.readdirSync(dir).filter((n) => n.startsWith(`${port}.${process.pid}.`));
      const [name] = mine();
      assert.ok(name, 'registered');
      fs.rmSync(`${dir}/${name}`);
      assert.deepEqual(mine(), []);
      mock.timers.tick(2000);
      assert.deepEqual(mine(), [name]);
      reg.remove();
      mock.timers.tick(2000);
      assert.deepEqual(mine(), [], 'a removed registration stays removed');
    } finally {
      reg.remove();
      mock.timers.reset();
    }
  });
});

describe('a \'::\' listener and IPv4 destinations', () => {
  it('dual-stack: a listener for both; ipv6Only: for IPv6 destinations only (no Proposal to whoever holds 0.0.0.0 on that port)', async () => {
    const smc = await import('../../src/smc/index.js');
    for (const ipv6Only of [false, true]) {
      const srv = smc.createServer(() => {});
      await new Promise<void>((r) => srv.listen({ port: 0, host: '::', ipv6Only }, r));
      try {
        clearDiscoveryCache();
        const port = (srv.address() as { port: number }).port;
        assert.equal(isSmcListener('::1', port), true, `ipv6Only ${ipv6Only}, ::1`);
        assert.equal(isSmcListener('127.0.0.1', port), !ipv6Only, `ipv6Only ${ipv6Only}, 127.0.0.1`);
      } finally { srv.close(); }
    }
  });
});

describe('listeners that went away without their exit hook', () => {
  const discoveryUrl = new URL('../../src/smc/discovery.js', import.meta.url).href;

  it('a listener killed with SIGKILL gets no Proposal once gone, even while the cached answer is fresh', async () => {
    const { listenersStillRunning } = await import('../../src/smc/discovery.js');
    const port = 42000 + (process.pid % 20000);
    // A process that registers a listener entry (as an SMC server does) and waits to be killed.
    const child = spawn(process.execPath, ['--input-type=module', '-e',
      `const { ListenerRegistration } = await import(${JSON.stringify(discoveryUrl)}); new ListenerRegistration('127.0.0.1', ${port}); console.log('up'); setInterval(() => {}, 1000);`],
    { stdio: ['ignore', 'pipe', 'inherit'] });
    const exited = once(child, 'exit');
    try {
      await once(child.stdout!, 'data');
      clearDiscoveryCache();
      assert.equal(isSmcListener('127.0.0.1', port), true);
      assert.equal(listenersStillRunning(port), true);
      child.kill('SIGKILL');
      await exited;
      // kill -9 changed no file: the cached answer is still the old one, younger than a second.
      assert.equal(isSmcListener('127.0.0.1', port), true, 'the cached answer (the check comes before a Proposal)');
      assert.equal(listenersStillRunning(port), false, 'the listener\'s process is gone');
      assert.equal(isSmcListener('127.0.0.1', port), false, 'asked again: the directory says no');
    } finally {
      child.kill('SIGKILL');
    }
  });

  it('a listener killed and not yet reaped (a zombie) gets no Proposal while the cached answer is fresh', async () => {
    const { listenersStillRunning } = await import('../../src/smc/discovery.js');
    const port = 43000 + (process.pid % 20000);
    // sh starts the listener, then becomes a sleep that never reaps it: killed, it stays a zombie.
    const script = `const { ListenerRegistration } = await import(${JSON.stringify(discoveryUrl)}); new ListenerRegistration('127.0.0.1', ${port}); console.log(process.pid); setInterval(() => {}, 1000);`;
    const sh = spawn('sh', ['-c', `"${process.execPath}" --input-type=module -e "$0" & exec sleep 30`, script], { stdio: ['ignore', 'pipe', 'inherit'] });
    let pid = 0;
    try {
      const [out] = await once(sh.stdout!, 'data') as [Buffer];
      pid = Number(out.toString().trim());
      clearDiscoveryCache();
      assert.equal(isSmcListener('127.0.0.1', port), true);
      assert.equal(listenersStillRunning(port), true, 'checked once while it runs (its stat file stays open)');
      process.kill(pid, 'SIGKILL');
      await waitFor('the listener to be a zombie', () => /\) Z /.test(fs.readFileSync(`/proc/${pid}/stat`, 'latin1')), 5000);
      assert.doesNotThrow(() => process.kill(pid, 0), 'a zombie still takes signal 0');
      assert.equal(isSmcListener('127.0.0.1', port), true, 'the cached answer, younger than a second');
      assert.equal(listenersStillRunning(port), false, 'the zombie is no listener');
    } finally {
      if (pid) try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ }
      sh.kill('SIGKILL');
    }
  });

  it('a zombie (exited, not yet reaped) is not alive', async () => {
    const { isAlive, processStartTime } = await import('../../src/ism/runtime-dir.js');
    // sh starts a short sleep, then becomes a long one that never reaps it.
    const sh = spawn('sh', ['-c', 'sleep 0.3 & echo $!; exec sleep 30'], { stdio: ['ignore', 'pipe', 'inherit'] });
    try {
      const [out] = await once(sh.stdout!, 'data') as [Buffer];
      const pid = Number(out.toString().trim());
      const start = processStartTime(pid);
      assert.ok(start, 'the short sleep runs');
      assert.equal(isAlive(pid, start), true);
      await waitFor('the sleep to be a zombie', () => /\) Z /.test(fs.readFileSync(`/proc/${pid}/stat`, 'latin1')), 5000);
      assert.equal(isAlive(pid, start), false);
    } finally {
      sh.kill('SIGKILL');
    }
  });

  it('a worker thread\'s listener is gone once the worker is terminated (it runs no exit hook)', async () => {
    const smcUrl = new URL('../../src/smc/index.js', import.meta.url).href;
    const w = new Worker(`const smc = await import(${JSON.stringify(smcUrl)});
      const { parentPort } = await import('node:worker_threads');
      const srv = smc.createServer(() => {});
      srv.listen(0, '127.0.0.1', () => parentPort.postMessage(srv.address().port));`, { eval: true });
    const { listenersStillRunning } = await import('../../src/smc/discovery.js');
    let port: number;
    try {
      [port] = await once(w, 'message') as [number];
      clearDiscoveryCache();
      assert.equal(isSmcListener('127.0.0.1', port), true);
    } finally {
      await w.terminate();
    }
    // The cached answer is still fresh; the check before a Proposal sees the thread gone.
    assert.equal(listenersStillRunning(port), false, 'no Proposal to whoever takes the port next');
    assert.equal(isSmcListener('127.0.0.1', port), false);
    // The entry itself is removed by the next reader.
    assert.deepEqual(fs.readdirSync(subdir('listeners')).filter((n) => n.startsWith(`${port}.`)), []);
  });

  it('entry and status socket names carry the pid namespace (containers sharing the directory keep apart)', async () => {
    const { pidNamespaceTag } = await import('../../src/ism/runtime-dir.js');
    const { statusSocketAnchor } = await import('../../src/smc/status.js');
    const tag = pidNamespaceTag();
    assert.match(tag, /^\d+$/);
    // A status socket left by a killed process of this namespace is swept when a status socket
    // opens; one of another namespace is left alone.
    const dead = spawn(process.execPath, ['-e', '']);
    await once(dead, 'exit');
    const dir = subdir('status');
    fs.writeFileSync(`${dir}/${dead.pid}.${tag}.sock`, '');
    fs.writeFileSync(`${dir}/${dead.pid}.1.sock`, '');
    const anchor = statusSocketAnchor();
    assert.equal(anchor, `${process.pid}.${tag}.sock`);
    assert.ok(fs.existsSync(`${dir}/${anchor}`));
    assert.equal(fs.existsSync(`${dir}/${dead.pid}.${tag}.sock`), false, 'a dead process\'s status socket is swept');
    assert.equal(fs.existsSync(`${dir}/${dead.pid}.1.sock`), true, 'another namespace\'s is not');
    fs.rmSync(`${dir}/${dead.pid}.1.sock`);
    const reg = new ListenerRegistration('127.0.0.1', 9);
    try {
      const names = fs.readdirSync(subdir('listeners')).filter((n) => n.startsWith('9.'));
      assert.equal(names.length, 1);
      assert.match(names[0]!, new RegExp(`^9\\.${process.pid}\\.0\\.${tag}\\.\\d+\\.json$`), 'port, pid, thread, pid namespace, serial');
    } finally {
      reg.remove();
    }
  });
});

describe('where the runtime directory is', () => {
  it('$SOFTRDMA_RUNTIME_DIR, else $XDG_RUNTIME_DIR/softrdma, else /run/user/<uid>/softrdma if the user has one, else <tmpdir>/softrdma-<uid>', async (t) => {
    const { runtimeDirName } = await import('../../src/ism/runtime-dir.js');
    const saved = { s: process.env.SOFTRDMA_RUNTIME_DIR, x: process.env.XDG_RUNTIME_DIR };
    try {
      assert.equal(runtimeDirName(), saved.s);
      delete process.env.SOFTRDMA_RUNTIME_DIR;
      process.env.XDG_RUNTIME_DIR = '/somewhere';
      assert.equal(runtimeDirName(), '/somewhere/softrdma');
    } finally {
      process.env.SOFTRDMA_RUNTIME_DIR = saved.s;
      if (saved.x === undefined) delete process.env.XDG_RUNTIME_DIR; else process.env.XDG_RUNTIME_DIR = saved.x;
    }
    // /run/user/<uid> is looked at in a mount namespace of its own (a tmpfs on /run/user), so
    // that other tests running meanwhile keep seeing the machine's.
    if (process.geteuid!() !== 0) { t.skip('needs root (a private mount namespace)'); return; }
    const url = new URL('../../src/ism/runtime-dir.js', import.meta.url).href;
    const script = [
      'set -e', 'mount -t tmpfs none /run/user', 'ask() { env -u SOFTRDMA_RUNTIME_DIR -u XDG_RUNTIME_DIR TMPDIR=/tmp "$0" --input-type=module -e "const m = await import(\'$1\'); console.log(m.runtimeDirName())"; }',
      'ask "$1"', 'mkdir -m 0700 /run/user/0', 'ask "$1"', 'chmod 0755 /run/user/0', 'ask "$1"',
    ].join('\n');
    const r = spawnSync('unshare', ['--mount', '--propagation', 'private', 'sh', '-c', script, process.execPath, url], { encoding: 'utf8' });
    if (r.error || (r.status !== 0 && /unshare|mount/.test(r.stderr))) { t.skip(`no private mount namespace here: ${r.error?.message ?? r.stderr.trim()}`); return; }
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(r.stdout.trim().split('\n'), ['/tmp/softrdma-0', '/run/user/0/softrdma', '/tmp/softrdma-0'], 'none; the user\'s own 0700 directory; one of another mode is not used');
  });
});
