// SMC-D in worker threads. An ism device made in a worker holds descriptors (its device page,
// its DMBs) that node must know of: closing them warns otherwise, and worker.terminate(),
// which runs none of the thread's exit hooks, would leak them. Node closes the descriptors a
// worker opened through node:fs when the thread ends (trackUnmanagedFds).

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs';
import { describe, it } from 'node:test';
import { Worker } from 'node:worker_threads';
import { testRuntimeDir } from '../helpers/runtime-dir.js';

testRuntimeDir('ism-worker');

const SMC = new URL('../../src/smc/index.js', import.meta.url).href;
const DEVICE = new URL('../../src/ism/device.js', import.meta.url).href;

/**
 * A worker (CommonJS, eval) that makes one SMC-D connection to a server of its own, sends
 * `bytes` through it, posts { ready, mode } once the server has them all, then either closes
 * everything, the ism device last, and posts { closed } (close), or waits to be terminated.
 * Every process warning it sees is posted as { warning }.
 */
const WORKER = `
const { parentPort, workerData } = require('node:worker_threads');
process.on('warning', (w) => parentPort.postMessage({ warning: w.name + ': ' + w.message }));
(async () => {
  const smc = await import(workerData.smc);
  const { openedIsmDevice } = await import(workerData.device);
  smc.setSmcLearning(false);
  let received = 0;
  let serverSide;
  const all = new Promise((resolve) => {
    const srv = smc.createServer((s) => {
      serverSide = s;
      s.on('data', (d) => { received += d.length; if (received >= workerData.bytes) resolve(srv); });
    });
    srv.listen(0, '127.0.0.1', () => {
      const c = smc.connect(srv.address().port, '127.0.0.1');
      c.on('error', () => {});
      c.on('connect', () => c.write(Buffer.alloc(workerData.bytes, 7)));
      srv.client = c;
    });
  });
  const srv = await all;
  const c = srv.client;
  const info = smc.getSmcInfo(c).pending ? (await new Promise((r) => c.once('smc', r))) : smc.getSmcInfo(c);
  parentPort.postMessage({ ready: true, mode: info.mode });
  if (!workerData.close) { setInterval(() => {}, 1000); return; }
  c.destroy();
  serverSide.destroy();
  srv.close();
  await new Promise((r) => setTimeout(r, 50));
  openedIsmDevice()?.close();
  await new Promise((r) => setTimeout(r, 50));
  const fs = require('node:fs');
  const fds = fs.readdirSync('/proc/self/fd').map((fd) => { try { return fs.readlinkSync('/proc/self/fd/' + fd); } catch { return ''; } })
    .filter((l) => l.startsWith('/memfd:softrdma'));
  const maps = fs.readFileSync('/proc/self/maps', 'utf8').split('\\n').filter((l) => l.includes('memfd:softrdma'));
  parentPort.postMessage({ closed: true, left: [...fds, ...maps] });
})().catch((e) => parentPort.postMessage({ failed: String(e && e.stack || e) }));
`;

interface Msg { ready?: boolean; mode?: string; closed?: boolean; left?: string[]; warning?: string; failed?: string }

function startWorker(close: boolean, bytes: number): { worker: Worker; messages: Msg[]; next(pred: (m: Msg) => boolean): Promise<Msg> } {
  const worker = new Worker(WORKER, { eval: true, workerData: { smc: SMC, device: DEVICE, close, bytes } });
  const messages: Msg[] = [];
  const waiters: Array<{ pred: (m: Msg) => boolean; resolve: (m: Msg) => void }> = [];
  worker.on('message', (m: Msg) => {
    messages.push(m);
    for (const w of [...waiters]) if (w.pred(m)) { waiters.splice(waiters.indexOf(w), 1); w.resolve(m); }
  });
  const next = (pred: (m: Msg) => boolean) => {
    const seen = messages.find(pred);
    if (seen) return Promise.resolve(seen);
    return new Promise<Msg>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`worker: no such message within 10 s (${JSON.stringify(messages)})`)), 10_000);
      waiters.push({ pred: (m) => pred(m) || m.failed !== undefined, resolve: (m) => { clearTimeout(t); if (m.failed) reject(new Error(m.failed)); else resolve(m); } });
    });
  };
  return { worker, messages, next };
}

/**
 * A child process whose main thread runs the worker above (terminated once its connection
 * carried `bytes`) and reports the memfds of softrdma it holds, as descriptors and as
 * mappings, before and after the terminate. Its main thread loads softrdma's ism module but
 * opens no device of its own.
 */
const CHILD = `
import fs from 'node:fs';
import { Worker } from 'node:worker_threads';
const memfds = () => fs.readdirSync('/proc/self/fd').map((fd) => { try { return fs.readlinkSync('/proc/self/fd/' + fd); } catch { return ''; } })
  .filter((l) => l.startsWith('/memfd:softrdma'));
const maps = () => fs.readFileSync('/proc/self/maps', 'utf8').split('\\n').filter((l) => l.includes('memfd:softrdma'));
const [code, data] = JSON.parse(process.argv[1]);
// As an application that uses softrdma loads it: its module watches this thread's workers.
await import(data.device);
const w = new Worker(code, { eval: true, workerData: data, execArgv: [] });
const ready = await new Promise((resolve, reject) => {
  w.on('message', (m) => { if (m.ready || m.failed) resolve(m); });
  w.on('error', reject);
});
if (ready.failed) throw new Error(ready.failed);
const before = { fds: memfds(), maps: maps() };
await w.terminate();
await new Promise((r) => setTimeout(r, 100));
console.log(JSON.stringify({ mode: ready.mode, before, after: { fds: memfds(), maps: maps() } }));
`;

interface ChildReport { mode: string; before: { fds: string[]; maps: string[] }; after: { fds: string[]; maps: string[] } }

async function terminatedInChild(bytes: number): Promise<ChildReport> {
  const child = spawn(process.execPath, ['--input-type=module', '-e', CHILD, JSON.stringify([WORKER, { smc: SMC, device: DEVICE, close: false, bytes }])], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  child.stdout.on('data', (d: Buffer) => { out += d; });
  child.stderr.on('data', (d: Buffer) => { err += d; });
  const t = setTimeout(() => child.kill(), 20_000);
  const [code] = await once(child, 'exit') as [number | null];
  clearTimeout(t);
  assert.equal(code, 0, `child: ${err}`);
  return JSON.parse(out.trim().split('\n').at(-1)!) as ChildReport;
}

describe('ism devices in worker threads', () => {
  it('the reaper leaves a running worker\'s mappings alone and unmaps a terminated one\'s', async () => {
    const { reapDeadThreadMappings } = await import('../../src/ism/libc.js');
    const w = startWorker(false, 100_000);
    try {
      assert.equal((await w.next((m) => m.ready === true)).mode, 'SMCD');
      assert.equal(reapDeadThreadMappings(), 0, 'nothing of a live thread is reaped');
    } finally {
      await w.worker.terminate();
    }
    // This thread has not loaded device.ts (no reaping at the worker's 'exit'): the reaper
    // finds the ledger now. The device page, the DMB of each end and the mappings of the
    // peer's (both the worker's), and the ledger's own mapping.
    assert.ok(reapDeadThreadMappings() >= 7);
    assert.equal(reapDeadThreadMappings(), 0, 'a ledger is reaped once');
  });

  it('the reaper unmaps nothing a ledger names that /proc/self/maps does not show exactly so', async () => {
    const koffi = (await import('koffi')).default;
    const libc = await import('../../src/ism/libc.js');
    const memfdCreate = koffi.load('libc.so.6').func('int memfd_create(const char *name, unsigned int flags)') as (n: string, f: number) => number;
    // A mapping of a memfd of softrdma's, as a DMB's.
    const fd = libc.memfdCreate('softrdma-dmb-00000000000000aa');
    fs.ftruncateSync(fd, 65536);
    const m = libc.mapShared(fd, 65536);
    const addr = koffi.address(m.pointer) as bigint;
    const ino = fs.fstatSync(fd, { bigint: true }).ino;
    // A ledger as a thread that no longer runs would leave it, naming that mapping wrongly:
    // too long, too short, another inode, an address inside it, its own mapping at address 0.
    const raw = memfdCreate('softrdma-ledger-999999999-00000000000000bb', 1 /* MFD_CLOEXEC */);
    assert.ok(raw >= 0);
    const size = 64 + 65536 * 32;
    fs.ftruncateSync(raw, size);
    const entries: Array<[bigint, bigint, bigint]> = [
      [addr, 65536n + 4096n, ino], [addr, 4096n, ino], [addr, 65536n, ino + 1n], [addr + 4096n, 61440n, ino],
    ];
    const img = Buffer.alloc(64 + entries.length * 32);
    img.writeBigUInt64LE(0x4752444cn, 0);
    img.writeBigUInt64LE(BigInt(entries.length), 40);
    entries.forEach(([a, l, i], n) => {
      img.writeBigUInt64LE(a, 64 + n * 32);
      img.writeBigUInt64LE(l, 64 + n * 32 + 8);
      img.writeBigUInt64LE(i, 64 + n * 32 + 16);
    });
    fs.writeSync(raw, img, 0, img.length, 0);
    const linkOf = (n: number) => { try { return fs.readlinkSync(`/proc/self/fd/${n}`); } catch { return ''; } };
    assert.match(linkOf(raw), /softrdma-ledger-999999999/);
    try {
      assert.equal(libc.reapDeadThreadMappings(), 0);
      const start = addr.toString(16);
      assert.ok(fs.readFileSync('/proc/self/maps', 'utf8').split('\n').some((l) => l.startsWith(`${start}-`)), 'the mapping is still there');
      const view = new Uint8Array(m.buffer);
      view[100] = 42;
      assert.equal(view[100], 42);
      // The dead thread's ledger itself is done with: its descriptor is closed.
      assert.doesNotMatch(linkOf(raw), /softrdma-ledger-999999999/);
    } finally {
      libc.releaseMapping(m);
      fs.closeSync(fd);
      if (/softrdma-ledger-999999999/.test(linkOf(raw))) fs.closeSync(raw);
    }
  });

  it('a worker that makes an SMC-D connection, then closes its device, sees no warning and keeps no memfd', async () => {
    const w = startWorker(true, 100_000);
    try {
      const ready = await w.next((m) => m.ready === true);
      assert.equal(ready.mode, 'SMCD');
      const closed = await w.next((m) => m.closed === true);
      // Everything the device made went with it, its thread's mapping ledger included (the
      // process's: this file's other workers left nothing behind either).
      assert.deepEqual(closed.left, []);
      // A warning emitted as the descriptors closed comes on a later tick.
      await new Promise((r) => setTimeout(r, 100));
      assert.deepEqual(w.messages.filter((m) => m.warning !== undefined), []);
    } finally {
      await w.worker.terminate();
    }
  });

  it('worker.terminate() leaves no memfd of softrdma open in the process', async () => {
    const r = await terminatedInChild(100_000);
    assert.equal(r.mode, 'SMCD');
    // The worker's device page and the two DMBs of its connection (one per end).
    assert.ok(r.before.fds.length >= 3, `memfds before the terminate: ${r.before.fds.join(', ')}`);
    assert.deepEqual(r.after.fds, []);
  });

  it('worker.terminate() leaves no memfd of softrdma mapped in the process', async () => {
    const r = await terminatedInChild(100_000);
    assert.equal(r.mode, 'SMCD');
    // Each end's device page and DMB, and each end's mapping of the other's (one device here:
    // both ends are the worker's), and the thread's ledger.
    assert.ok(r.before.maps.length >= 3, `mappings before the terminate: ${r.before.maps.join('\n')}`);
    assert.deepEqual(r.after.maps, []);
    assert.deepEqual(r.after.fds, []);
  });
});
