// The ism device's lifetime: a close() with SMC-D connections open (they end with an error,
// nothing faults, and the process's default device is opened again), views kept after their
// memory went, a worker thread that ends (it gives back its mappings and descriptors), what
// killed processes and terminated threads leave in the runtime directory (swept when a device
// opens), and a peer descriptor that is not the memfd it should be (checked before it is
// opened). Each case runs in a child process of its own: on a fault, the child dies, not the
// test runner.

import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import { after, describe, it } from 'node:test';
import koffi from 'koffi';
import { testRuntimeDir } from '../helpers/runtime-dir.js';

const rt = testRuntimeDir('ism-lifecycle');
const { netNamespace, selfStamp } = await import('../../src/ism/runtime-dir.js');

const url = (p: string) => new URL(`../../src/${p}`, import.meta.url).href;
const SMC = url('smc/index.js');
const ISM = url('ism/index.js');
const DEVICE = url('ism/device.js');
const LIBC = url('ism/libc.js');

/** What the child printed, and how it ended. */
interface Ended { code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }

interface Child {
  child: ChildProcess;
  /** The first line matching re (its match), once printed; rejects on exit or after ms. */
  line(re: RegExp, ms?: number): Promise<RegExpMatchArray>;
  /** Resolves when the child ends; kills it and rejects after ms. */
  ended(ms?: number): Promise<Ended>;
}

/** An ES module as a child process (code may import SMC, ISM, DEVICE). */
/** Every child, killed when the file's tests end (a failed assertion leaves none running). */
const spawned: ChildProcess[] = [];
after(() => { for (const c of spawned) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL'); });

function child(code: string, opts: { detached?: boolean; execArgv?: string[] } = {}): Child {
  const c = spawn(process.execPath, [...(opts.execArgv ?? []), '--input-type=module', '-e', code], {
    stdio: ['ignore', 'pipe', 'pipe'], env: process.env, detached: opts.detached ?? false,
  });
  spawned.push(c);
  let stdout = '';
  let stderr = '';
  c.stdout!.setEncoding('utf8').on('data', (d: string) => { stdout += d; });
  c.stderr!.setEncoding('utf8').on('data', (d: string) => { stderr += d; });
  const closed = new Promise<Ended>((resolve) => c.once('close', (code, signal) => resolve({ code, signal, stdout, stderr })));
  return {
    child: c,
    line(re, ms = 20_000) {
      return new Promise((resolve, reject) => {
        const check = () => {
          const m = stdout.match(re);
          if (m) { done(); resolve(m); }
        };
        const timer = setTimeout(() => { done(); reject(new Error(`no ${re} within ${ms} ms:\n${stdout}${stderr}`)); }, ms);
        const onClose = () => { done(); reject(new Error(`child ended before printing ${re}:\n${stdout}${stderr}`)); };
        const done = () => { clearTimeout(timer); c.stdout!.off('data', check); c.off('close', onClose); };
        c.stdout!.on('data', check);
        c.once('close', onClose);
        check();
      });
    },
    ended(ms = 30_000) {
      let timer: NodeJS.Timeout | undefined;
      const limit = new Promise<never>((_, reject) => {
        timer = setTimeout(() => { c.kill('SIGKILL'); reject(new Error(`child still running after ${ms} ms:\n${stdout}${stderr}`)); }, ms);
      });
      return Promise.race([closed, limit]).finally(() => clearTimeout(timer));
    },
  };
}

/** The JSON a child printed on its last line that starts with `result `. */
function result<T>(e: Ended): T {
  const line = e.stdout.split('\n').filter((l) => l.startsWith('result ')).pop();
  assert.ok(line, `no result (exit ${e.code}, signal ${e.signal}):\n${e.stdout}${e.stderr}`);
  return JSON.parse(line.slice('result '.length)) as T;
}

/** What a child printed, for an assertion's message. */
function output(e: Ended): string {
  return `the child printed:\n${e.stdout}${e.stderr}`;
}

function assertCleanExit(e: Ended): void {
  assert.equal(e.signal, null, `the child died of ${e.signal}:\n${e.stdout}${e.stderr}`);
  assert.equal(e.code, 0, `the child exited ${e.code}:\n${e.stdout}${e.stderr}`);
}

const ismDir = `${rt}/ism`;
const ismFiles = () => (fs.existsSync(ismDir) ? fs.readdirSync(ismDir).sort() : []);

describe('ism device lifetime', () => {
  it('close() with SMC-D connections open: they end with an error (the peer sees the abort), no fault, and the default device opens again', async () => {
    const server = child(`
      const smc = await import(${JSON.stringify(SMC)});
      smc.setSmcLearning(false);
      const srv = smc.createServer({ smcHandshakeTimeout: 20_000 }, (c) => {
        c.on('error', (e) => console.log('server-conn-error ' + e.code));
        c.on('close', () => console.log('server-conn-close'));
        c.pipe(c);
      });
      srv.listen(0, '127.0.0.1', () => console.log('port ' + srv.address().port));
    `);
    try {
      const port = (await server.line(/port (\d+)/))[1];
      const client = child(`
        const smc = await import(${JSON.stringify(SMC)});
        const { defaultIsmDevice } = await import(${JSON.stringify(ISM)});
        smc.setSmcLearning(false);
        const once = (em, ev) => new Promise((resolve) => em.once(ev, resolve));
        const s = smc.connect({ port: ${port}, host: '127.0.0.1', smcHandshakeTimeout: 20_000 });
        const err = new Promise((resolve) => s.on('error', resolve));
        const closed = once(s, 'close');
        const info = await once(s, 'smc');
        // Not on SMC-D: nothing below would happen (no abort to wait for); say why at once.
        if (info.mode !== 'SMCD') { console.log('result ' + JSON.stringify({ mode: info.mode, cause: info.fallbackCause })); process.exit(0); }
        s.write('a');
        await once(s, 'data');
        const first = defaultIsmDevice();
        first.close();
        s.write('after close');
        const e = await err;
        await closed;
        // The closed device is not the default any more: the next connection gets a new one.
        const second = defaultIsmDevice();
        const s2 = smc.connect({ port: ${port}, host: '127.0.0.1', smcHandshakeTimeout: 20_000 });
        s2.on('error', (e) => console.log('s2 error ' + e.message));
        const info2 = await once(s2, 'smc');
        const closed2 = once(s2, 'close');
        s2.write('again');
        const echo = String(await once(s2, 'data'));
        s2.end();
        await closed2;
        console.log('result ' + JSON.stringify({
          mode: info.mode, code: e.code, message: e.message, firstClosed: first.isClosed,
          fresh: second !== first && !second.isClosed, mode2: info2.mode, echo,
        }));
        process.exit(0);
      `);
      const ended = await client.ended();
      assertCleanExit(ended);
      const r = result<{ mode: string; code: string; message: string; firstClosed: boolean; fresh: boolean; mode2: string; echo: string }>(ended);
      assert.equal(r.mode, 'SMCD', output(ended));
      assert.equal(r.code, 'ECONNABORTED', 'as Linux when an ISM device goes away (smc_conn_kill)');
      assert.match(r.message, /ism device was closed/);
      assert.equal(r.firstClosed, true);
      assert.equal(r.fresh, true, 'defaultIsmDevice() after close() is a new, open device');
      assert.equal(r.mode2, 'SMCD', 'a connection after the close uses SMC-D again');
      assert.equal(r.echo, 'again');
      // The peer read the abort the closing device wrote into its DMB: ECONNRESET, as Linux's.
      await server.line(/server-conn-error ECONNRESET/);
      await server.line(/server-conn-close/);
    } finally {
      server.child.kill();
      await server.ended();
    }
  });

  it('close() of the default device with no connection: defaultIsmDevice() then opens a new one, and SMC-D works again', async () => {
    const c = child(`
      const smc = await import(${JSON.stringify(SMC)});
      const { defaultIsmDevice } = await import(${JSON.stringify(ISM)});
      smc.setSmcLearning(false);
      const first = defaultIsmDevice();
      first.close();
      const second = defaultIsmDevice();
      const srv = smc.createServer({ smcHandshakeTimeout: 20_000 }, (c) => { c.on('error', () => {}); c.pipe(c); });
      await new Promise((resolve) => srv.listen(0, '127.0.0.1', resolve));
      const s = smc.connect({ port: srv.address().port, host: '127.0.0.1', smcHandshakeTimeout: 20_000 });
      const mode = await new Promise((resolve) => s.once('smc', (i) => resolve(i.mode)));
      s.end();
      srv.close();
      console.log('result ' + JSON.stringify({ same: second === first, gidChanged: second.gid !== first.gid, mode }));
      process.exit(0);
    `);
    const e = await c.ended();
    assertCleanExit(e);
    assert.deepEqual(result(e), { same: false, gidChanged: true, mode: 'SMCD' }, output(e));
  });

  it('views kept after unregisterDmb, detach, a dropped parked mapping or close() read zeros instead of faulting', async () => {
    const c = child(`
      const fs = await import('node:fs');
      const { IsmDevice, IsmError } = await import(${JSON.stringify(ISM)});
      const a = IsmDevice.open({ slots: 16 });
      const b = IsmDevice.open({ slots: 16 });
      const shared = (token) => fs.readFileSync('/proc/self/maps', 'utf8').includes('softrdma-dmb-' + token.toString(16).padStart(16, '0'));
      const out = {};
      // unregisterDmb, and the peer's detach (parked), then the parked mapping dropped.
      const d = a.registerDmb(4096);
      const view = d.bytes;
      const r = b.attachDmb(a.gid, d.token);
      const rview = r.bytes;
      rview.set([7, 8, 9], 100);
      out.before = [view[100], view[101], view[102]];
      r.detach();
      a.unregisterDmb(d);
      out.afterUnregister = view[100];
      view[100] = 1; // a write lands in private memory
      out.writeKept = view[100];
      // The next detach drops parked mappings whose token left the owner's table.
      const d2 = a.registerDmb(4096);
      const r2 = b.attachDmb(a.gid, d2.token);
      r2.detach();
      out.parkedDropped = rview[101];
      // Neither the owner's mapping nor the peer's is a mapping of the DMB's memfd any more.
      out.memfdUnmapped = !shared(d.token) || 'still mapped';
      rview.fill(3);
      // close(): the DMBs and the attached peer DMBs of both devices.
      const d3 = a.registerDmb(8192);
      const v3 = d3.bytes;
      const r3 = b.attachDmb(a.gid, d3.token);
      const rv3 = r3.bytes;
      rv3[5] = 42;
      out.d3before = v3[5];
      b.close();
      out.attachedAfterPeerClose = rv3[5];
      try { r3.write(0, Uint8Array.of(1)); out.write = 'no error'; } catch (e) { out.write = e instanceof IsmError ? e.code : String(e); }
      a.close();
      out.d3after = v3[5];
      out.closed = d3.isClosed && r3.isDetached;
      out.d3bytes = d3.bytes.length;
      out.noSharedLeft = !fs.readFileSync('/proc/self/maps', 'utf8').includes('memfd:softrdma');
      console.log('result ' + JSON.stringify(out));
    `);
    const ended = await c.ended();
    assertCleanExit(ended);
    assert.deepEqual(result(ended), {
      before: [7, 8, 9], afterUnregister: 0, writeKept: 1, parkedDropped: 0, memfdUnmapped: true,
      d3before: 42, attachedAfterPeerClose: 0, write: 'ENODEV', d3after: 0, closed: true, d3bytes: 0, noSharedLeft: true,
    }, output(ended));
  });

  it('the zeroed memory left under a kept view is unmapped once the view is garbage collected', async () => {
    const c = child(`
      const fs = await import('node:fs');
      const { IsmDevice } = await import(${JSON.stringify(ISM)});
      const { placeholderCount } = await import(${JSON.stringify(LIBC)});
      const a = IsmDevice.open({ slots: 8 });
      const maps = () => fs.readFileSync('/proc/self/maps', 'utf8').split('\\n').filter(Boolean)
        .map((l) => { const [r, , , , inode, path] = l.split(/ +/); const [s, e] = r.split('-').map((x) => BigInt('0x' + x)); return { s, e, inode, path }; });
      let d = a.registerDmb(3 * 1024 * 1024 + 7 * 4096);
      const name = 'softrdma-dmb-' + d.token.toString(16).padStart(16, '0');
      const own = maps().find((m) => (m.path ?? '').includes(name));
      let view = d.bytes;
      view[0] = 1;
      const counted = [placeholderCount()];
      a.unregisterDmb(d);
      counted.push(placeholderCount());
      // The same addresses, now private anonymous memory (perhaps merged with a neighbour).
      const under = maps().find((m) => m.s <= own.s && m.e >= own.e);
      const anonymous = !!under && under.inode === '0' && !under.path;
      const zero = view[0];
      d = undefined;
      view = undefined;
      for (let i = 0; i < 100 && placeholderCount() > 0; i++) {
        globalThis.gc();
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
      counted.push(placeholderCount());
      console.log('result ' + JSON.stringify({ anonymous, zero, counted }));
      a.close();
    `, { execArgv: ['--expose-gc'] });
    const e = await c.ended();
    assertCleanExit(e);
    assert.deepEqual(result(e), { anonymous: true, zero: 0, counted: [0, 1, 0] }, output(e));
  });

  it('a worker thread that used SMC-D gives back its mappings, descriptors and entry when it ends (process.exit or its last handle)', async () => {
    const c = child(`
      const fs = await import('node:fs');
      const { Worker } = await import('node:worker_threads');
      const dir = process.env.SOFTRDMA_RUNTIME_DIR + '/ism';
      const count = () => ({
        maps: fs.readFileSync('/proc/self/maps', 'utf8').split('\\n').filter((l) => l.includes('memfd:softrdma')).length,
        fds: fs.readdirSync('/proc/self/fd').filter((f) => { try { return fs.readlinkSync('/proc/self/fd/' + f).includes('memfd:softrdma'); } catch { return false; } }).length,
        // Entries of this process (killed processes of other tests may have left theirs).
        ism: (() => { try { return fs.readdirSync(dir); } catch { return []; } })()
          .filter((f) => f.endsWith('.json') && JSON.parse(fs.readFileSync(dir + '/' + f, 'utf8')).pid === process.pid).length,
      });
      const body = (end) => \`
        const { parentPort } = await import('node:worker_threads');
        const smc = await import(${JSON.stringify(SMC)});
        smc.setSmcLearning(false);
        const srv = smc.createServer({ smcHandshakeTimeout: 20_000 }, (c) => { c.on('error', () => {}); c.pipe(c); });
        srv.listen(0, '127.0.0.1', () => {
          const s = smc.connect({ port: srv.address().port, host: '127.0.0.1', smcHandshakeTimeout: 20_000 });
          let mode;
          s.once('smc', (i) => { mode = i.mode; });
          s.on('connect', () => s.write('x'));
          s.once('data', () => {
            parentPort.postMessage(mode);
            \${end}
          });
        });
      \`;
      const ends = {
        exit: 'process.exit(0);',
        natural: 's.end(); s.on("close", () => srv.close());',
      };
      const out = { before: count(), after: {} };
      for (const [name, end] of Object.entries(ends)) {
        const w = new Worker(body(end), { eval: true, type: 'module' });
        let mode;
        w.on('message', (m) => { mode = m; });
        const code = await new Promise((resolve, reject) => { w.on('exit', resolve); w.on('error', reject); });
        out.after[name] = { mode, code, ...count() };
      }
      console.log('result ' + JSON.stringify(out));
    `);
    const ended = await c.ended(60_000);
    assertCleanExit(ended);
    const none = { maps: 0, fds: 0, ism: 0 };
    assert.deepEqual(result(ended), {
      before: none,
      after: { exit: { mode: 'SMCD', code: 0, ...none }, natural: { mode: 'SMCD', code: 0, ...none } },
    }, output(ended));
  });

  it('opening a device sweeps the entries and doorbells of killed processes and terminated threads, and stale temporary files, and leaves those of other pid namespaces', async () => {
    fs.mkdirSync(ismDir, { recursive: true, mode: 0o700 });
    for (const f of ismFiles()) fs.rmSync(`${ismDir}/${f}`);
    // Processes killed with their devices open (SIGKILL and SIGTERM run no exit hook). Both
    // open before either dies: an open sweeps.
    const signals = ['SIGKILL', 'SIGTERM'] as const;
    const killed = signals.map(() => child(`
      const { IsmDevice } = await import(${JSON.stringify(DEVICE)});
      const d = IsmDevice.open({ slots: 8 });
      console.log('gid ' + d.gid.toString(16).padStart(16, '0'));
      setInterval(() => {}, 1000);
    `));
    const dead: Array<{ gid: string; bell: string; pid: number }> = [];
    for (const c of killed) {
      const gid = (await c.line(/gid ([0-9a-f]{16})/))[1]!;
      const entry = JSON.parse(fs.readFileSync(`${ismDir}/${gid}.json`, 'utf8')) as { bell: string; pid: number };
      dead.push({ gid, bell: entry.bell, pid: entry.pid });
    }
    for (const [i, c] of killed.entries()) {
      c.child.kill(signals[i]);
      assert.equal((await c.ended()).signal, signals[i]);
    }
    for (const d of dead) {
      assert.ok(fs.existsSync(`${ismDir}/${d.gid}.json`), 'a killed process leaves its entry');
      assert.ok(fs.existsSync(`${ismDir}/${d.bell}`), 'and its doorbell');
    }
    // The same dead pid as seen from another pid namespace: not ours to judge.
    const foreignGid = randomBytes(8).toString('hex');
    const foreignBell = `${randomBytes(8).toString('hex')}.sock`;
    const foreign = JSON.parse(fs.readFileSync(`${ismDir}/${dead[0]!.gid}.json`, 'utf8')) as Record<string, unknown>;
    Object.assign(foreign, { gid: foreignGid, pidns: 'pid:[1]', bell: foreignBell });
    fs.writeFileSync(`${ismDir}/${foreignGid}.json`, JSON.stringify(foreign), { mode: 0o600 });
    fs.writeFileSync(`${ismDir}/${foreignBell}`, '', { mode: 0o600 });
    // Entries of this live process naming its main thread (tid = pid): one with the thread's
    // start time (it runs: kept), one with another start time, as when a thread that wrote it
    // ended and a later thread got its tid (not the writer: swept).
    const threadEntry = (tidStart: string) => {
      const g = randomBytes(8).toString('hex');
      fs.writeFileSync(`${ismDir}/${g}.json`, JSON.stringify({ ...foreign, gid: g, ...selfStamp(), tid: process.pid, tidStart, bell: undefined }), { mode: 0o600 });
      return `${g}.json`;
    };
    const liveThread = threadEntry(selfStamp().start);
    const reusedTid = threadEntry(String(Number(selfStamp().start) + 1));
    // writeEntry's temporary files: a dead pid's (old, and fresh: perhaps another namespace's
    // write in progress), and an old one of a live pid.
    const old = new Date(Date.now() - 5 * 60_000);
    const tmp = (pid: number, age: Date | undefined) => {
      const f = `${randomBytes(8).toString('hex')}.json.${pid}.tmp`;
      fs.writeFileSync(`${ismDir}/${f}`, '{"gid":', { mode: 0o600 });
      if (age) fs.utimesSync(`${ismDir}/${f}`, age, age);
      return f;
    };
    const staleTmp = tmp(dead[0]!.pid, old);
    const freshTmp = tmp(dead[1]!.pid, undefined);
    const liveTmp = tmp(process.pid, old);

    // A worker thread terminated with its device open (no exit hook runs in it either); then
    // a device of the same process opens, and sweeps.
    const c = child(`
      const fs = await import('node:fs');
      const { Worker } = await import('node:worker_threads');
      const w = new Worker(\`
        const { parentPort } = await import('node:worker_threads');
        const fs = await import('node:fs');
        const { IsmDevice } = await import(${JSON.stringify(DEVICE)});
        const d = IsmDevice.open({ slots: 8 });
        const tid = fs.readlinkSync('/proc/thread-self').split('/').pop();
        parentPort.postMessage({ gid: d.gid.toString(16).padStart(16, '0'), tid });
        setInterval(() => {}, 1000);
      \`, { eval: true, type: 'module' });
      const { gid, tid } = await new Promise((resolve) => w.once('message', resolve));
      await w.terminate();
      // 'exit' follows the thread's join, which may come just before /proc stops listing the
      // thread (the sweep judges a thread by /proc/self/task/<tid>): wait for that, bounded.
      for (let i = 0; i < 200 && fs.existsSync('/proc/self/task/' + tid); i++) await new Promise((resolve) => setTimeout(resolve, 10));
      const dir = process.env.SOFTRDMA_RUNTIME_DIR + '/ism';
      const present = () => fs.readdirSync(dir).includes(gid + '.json');
      const before = present();
      const { IsmDevice } = await import(${JSON.stringify(DEVICE)});
      const d = IsmDevice.open({ slots: 8 });
      console.log('result ' + JSON.stringify({ before, after: present() }));
      d.close();
    `);
    const e = await c.ended();
    assertCleanExit(e);
    const left = ismFiles();
    for (const d of dead) {
      assert.ok(!left.includes(`${d.gid}.json`), `the entry of killed pid ${d.pid} is swept`);
      assert.ok(!left.includes(d.bell), `the doorbell of killed pid ${d.pid} is swept`);
    }
    assert.ok(!left.includes(staleTmp), 'an old temporary file of a dead pid is swept');
    assert.ok(!left.includes(reusedTid), 'an entry whose thread start time is not its tid\'s is swept');
    assert.deepEqual(left, [`${foreignGid}.json`, foreignBell, freshTmp, liveTmp, liveThread].sort());
    assert.deepEqual(result(e), { before: true, after: false }, `the terminated thread's entry is swept by the next device of its process; ${output(e)}`);
    for (const f of left) fs.rmSync(`${ismDir}/${f}`);
  });

  it('a peer fd number that now names a terminal is refused before it is opened (no controlling terminal taken, nothing left open)', async (t) => {
    const so = koffi.load('libc.so.6');
    const posixOpenpt = so.func('int posix_openpt(int flags)') as (f: number) => number;
    const grantpt = so.func('int grantpt(int fd)') as (fd: number) => number;
    const unlockpt = so.func('int unlockpt(int fd)') as (fd: number) => number;
    const ptsname = so.func('const char *ptsname(int fd)') as (fd: number) => string | null;
    const master = posixOpenpt(fs.constants.O_RDWR | fs.constants.O_NOCTTY);
    if (master < 0) { t.skip('no pseudo-terminals here'); return; }
    let slave = -1;
    let gid: string | undefined;
    try {
      const name = grantpt(master) === 0 && unlockpt(master) === 0 ? ptsname(master) : null;
      if (!name) { t.skip('no pseudo-terminal slave'); return; }
      slave = fs.openSync(name, fs.constants.O_RDWR | fs.constants.O_NOCTTY);
      // An entry of this (live) process whose device page fd is the terminal, as after the
      // page's fd number was closed and reused.
      fs.mkdirSync(ismDir, { recursive: true, mode: 0o700 });
      gid = randomBytes(8).toString('hex');
      const entry = {
        gid, chid: 0xffff, ...selfStamp(), netns: netNamespace(), pageFd: slave, slots: 8,
        bell: `${randomBytes(8).toString('hex')}.sock`, key: randomBytes(32).toString('hex'),
      };
      fs.writeFileSync(`${ismDir}/${gid}.json`, JSON.stringify(entry), { mode: 0o600 });
      // The attacher leads a session of its own with no controlling terminal: a terminal it
      // opens without O_NOCTTY becomes its controlling terminal.
      const c = child(`
        const fs = await import('node:fs');
        const { IsmDevice } = await import(${JSON.stringify(DEVICE)});
        const tty = () => { const s = fs.readFileSync('/proc/self/stat', 'latin1'); return Number(s.slice(s.lastIndexOf(')') + 2).split(' ')[4]); };
        // The fds naming the terminal: a count of all fds would move with whatever the
        // runtime opens or closes meanwhile (seen on Node 24).
        const onTerminal = () => fs.readdirSync('/proc/self/fd').filter((f) => {
          try { return fs.readlinkSync('/proc/self/fd/' + f) === ${JSON.stringify(name)}; } catch { return false; }
        });
        const d = IsmDevice.open({ slots: 8 });
        const ttyBefore = tty();
        const onTerminalBefore = onTerminal();
        let code;
        try { d.attachDmb(0x${gid}n, 2n); code = 'attached'; } catch (e) { code = e.code; }
        console.log('result ' + JSON.stringify({ ttyBefore, ttyAfter: tty(), code, onTerminalBefore, onTerminalAfter: onTerminal() }));
        d.close();
      `, { detached: true });
      const e = await c.ended();
      assertCleanExit(e);
      const r = result<{ ttyBefore: number; ttyAfter: number; code: string; onTerminalBefore: string[]; onTerminalAfter: string[] }>(e);
      assert.equal(r.ttyBefore, 0);
      assert.equal(r.ttyAfter, 0, 'the terminal was opened (and became the controlling terminal)');
      assert.equal(r.code, 'ENOENT');
      assert.deepEqual(r.onTerminalBefore, []);
      assert.deepEqual(r.onTerminalAfter, [], 'an fd on the terminal was left open');
    } finally {
      if (gid) fs.rmSync(`${ismDir}/${gid}.json`, { force: true });
      if (slave >= 0) fs.closeSync(slave);
      fs.closeSync(master);
    }
  });
});
