// The ism device (in one process, two devices) and the SMC-D ring over it: bounds, tokens,
// seals, doorbell arming, and a property test of the CDC ring under random write sizes and
// reader pauses, plus a peer that writes nonsense cursors.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import { after, describe, it } from 'node:test';
import fc from 'fast-check';
import { testRuntimeDir } from '../helpers/runtime-dir.js';

testRuntimeDir('ism-test');
const { IsmDevice, IsmError } = await import('../../src/ism/device.js');
const { SmcdConnection } = await import('../../src/smc/smcd-connection.js');
const { packCursor, unpackCursor, cursorWord, readCursorInto, CdcArea } = await import('../../src/smc/cdc.js');

const a = IsmDevice.open({ slots: 64 });
const b = IsmDevice.open({ slots: 64 });
after(() => { a.close(); b.close(); });

function code(fn: () => unknown): string | undefined {
  try { fn(); } catch (e) { assert.ok(e instanceof IsmError, String(e)); return e.code; }
  return undefined;
}

describe('ism device', () => {
  it('a peer attaches by token and writes within bounds only', () => {
    const dmb = a.registerDmb(4096);
    const r = b.attachDmb(a.gid, dmb.token);
    r.write(10, Uint8Array.of(1, 2, 3));
    assert.deepEqual([...dmb.bytes.subarray(10, 13)], [1, 2, 3]);
    assert.equal(code(() => r.write(4094, Uint8Array.of(1, 2, 3))), 'EINVAL');
    assert.equal(code(() => r.write(-1, Uint8Array.of(1))), 'EINVAL');
    r.detach();
    a.unregisterDmb(dmb);
    assert.equal(code(() => b.attachDmb(a.gid, dmb.token)), 'ENOENT');
  });

  it('unknown tokens and devices are typed errors', () => {
    assert.equal(code(() => b.attachDmb(a.gid, 12345n)), 'ENOENT');
    assert.equal(code(() => b.attachDmb(0xdeadbeefn, 12345n)), 'ENODEV');
    assert.equal(code(() => a.registerDmb(10)), 'EINVAL');
  });

  it('a failed first attach to a peer leaves it lingering out, not mapped for the life of the process', () => {
    const c = IsmDevice.open({ slots: 8 });
    try {
      assert.equal(code(() => c.attachDmb(a.gid, 54321n)), 'ENOENT');
      const peer = (c as unknown as { peers: Map<bigint, { linger?: NodeJS.Timeout }> }).peers.get(a.gid);
      assert.ok(peer?.linger, 'the peer mapped for the attach has its linger timer');
    } finally { c.close(); }
  });

  it('DMBs are sealed against resizing, so a peer cannot SIGBUS us', () => {
    const dmb = a.registerDmb(8192);
    const fd = fs.openSync(`/proc/self/fd/${dmb.fd}`, 'r+');
    assert.throws(() => fs.ftruncateSync(fd, 100), /EPERM/);
    fs.closeSync(fd);
    a.unregisterDmb(dmb);
  });

  it('the doorbell rings only when the owner armed the DMB', async () => {
    const dmb = a.registerDmb(4096);
    const r = b.attachDmb(a.gid, dmb.token);
    assert.equal(r.signal(), false);
    const rang = new Promise<void>((resolve) => { dmb.onSignal = resolve; });
    dmb.arm();
    assert.equal(r.signal(), true);
    assert.equal(r.signal(), false, 'a ring disarms');
    // Doorbell sockets are unref'd (an SMC connection's TCP socket keeps a process alive);
    // hold the loop open while we wait.
    const keep = setTimeout(() => {}, 5000);
    await rang;
    clearTimeout(keep);
    r.detach();
    a.unregisterDmb(dmb);
  });

  it('a detached mapping is reused for the same DMB, never for a re-registered slot', () => {
    const dmb = a.registerDmb(4096);
    const r1 = b.attachDmb(a.gid, dmb.token);
    r1.detach();
    const before = b.stats.attachReused;
    const r2 = b.attachDmb(a.gid, dmb.token);
    assert.equal(b.stats.attachReused, before + 1);
    r2.write(0, Uint8Array.of(7));
    assert.equal(dmb.bytes[0], 7, 'the kept mapping is the same memory');
    r2.detach();
    // The owner lets the DMB go and registers others, which may land in the same slot: the
    // kept mapping must not be handed out for them.
    a.unregisterDmb(dmb);
    const fresh = Array.from({ length: 8 }, () => a.registerDmb(4096));
    for (const f of fresh) {
      const r = b.attachDmb(a.gid, f.token);
      r.write(1, Uint8Array.of(9));
      assert.equal(f.bytes[1], 9);
      r.detach();
    }
    assert.equal(b.stats.attachReused, before + 1);
    for (const f of fresh) a.unregisterDmb(f);
  });

  it('slots are reused after unregister', () => {
    const many = Array.from({ length: 64 }, () => a.registerDmb(64));
    assert.equal(code(() => a.registerDmb(64)), 'ENOSPC');
    for (const d of many) a.unregisterDmb(d);
    a.unregisterDmb(a.registerDmb(64));
  });
});

function pair(size: number) {
  const rxA = a.registerDmb(size);
  const rxB = b.registerDmb(size);
  const txA = a.attachDmb(b.gid, rxB.token);
  const txB = b.attachDmb(a.gid, rxA.token);
  const got: Buffer[] = [];
  const log = { errors: [] as string[], done: 0, writable: 0, paused: false };
  const mk = (rx: typeof rxA, tx: typeof txA, sink: boolean) => new SmcdConnection(rx, tx, {
    data: (c) => { if (sink) got.push(c); return !log.paused; },
    peerDone: () => { log.done++; }, peerAbort: () => {}, writable: () => { log.writable++; },
    protocolError: (m) => { log.errors.push(m); },
  });
  const ca = mk(rxA, txA, false);
  const cb = mk(rxB, txB, true);
  const release = () => { ca.release((d) => a.unregisterDmb(d)); cb.release((d) => b.unregisterDmb(d)); };
  return { ca, cb, got, log, rxB, release };
}

describe('SMC-D ring', () => {
  it('delivers exactly what was written, whatever the write sizes and reader pauses (property)', () => {
    fc.assert(fc.property(fc.array(fc.integer({ min: 1, max: 40_000 }), { minLength: 1, maxLength: 30 }), fc.array(fc.boolean(), { minLength: 1, maxLength: 30 }), (sizes, pauses) => {
      const { ca, cb, got, log, release } = pair(16384);
      try {
        const sent: Buffer[] = [];
        let step = 0;
        for (const n of sizes) {
          const data = Buffer.alloc(n, (step * 7) & 0xff);
          if (n >= 4) data.writeUInt32LE(step, 0);
          sent.push(data);
          let off = 0;
          while (off < n) {
            off += ca.write(data.subarray(off));
            log.paused = pauses[step++ % pauses.length]!;
            cb.process();
            if (!log.paused) cb.resume();
            ca.process();
            if (log.paused) { log.paused = false; cb.resume(); ca.process(); }
          }
        }
        ca.closeWrite();
        cb.process();
        assert.deepEqual(Buffer.concat(got), Buffer.concat(sent));
        assert.equal(log.done, 1);
        assert.deepEqual(log.errors, []);
      } finally {
        release();
      }
    }), { numRuns: 200 });
  });

  it('a producer cursor beyond the free space is refused at close too (unreadNow, consumeArrived)', () => {
    const { ca, cb, log, rxB, release } = pair(16384 + 32);
    try {
      ca.write(Buffer.alloc(100, 1));
      cb.process();
      // The peer (A) writes a producer cursor three wraps ahead into B's DMB.
      new CdcArea(rxB.bytes).storeProd(packCursor(3, 100, 0, 0));
      assert.equal(cb.unreadNow(), cb.readable, 'the bogus cursor counts nothing as unread');
      cb.consumeArrived();
      assert.equal(cb.bytesReceived, 100, 'only what really arrived is counted');
      assert.equal(log.errors.length, 1, 'and the connection fails');
      assert.match(log.errors[0]!, /producer cursor/);
      ca.process();
      assert.ok(ca.peerAborted, 'the peer that broke the protocol gets an abort, not an orderly close');
    } finally {
      release();
    }
  });

  it('a view of a peer DMB kept after detach writes nowhere the peer sees, then or after the DMB is handed out again', () => {
    const rx = a.registerDmb(4096);
    try {
      const tx = b.attachDmb(a.gid, rx.token);
      const kept = tx.bytes;
      tx.detach();
      kept[100] = 0x5a;
      assert.equal(rx.view[100], 0, 'not in the owner\'s DMB');
      const again = b.attachDmb(a.gid, rx.token);
      kept[101] = 0x5b;
      assert.equal(rx.view[101], 0, 'nor once it is attached again');
      again.detach();
    } finally {
      a.unregisterDmb(rx);
    }
  });

  it("the data path's cursor words are packCursor's and unpackCursor's, every field at its edges", () => {
    const out = { wrap: 0, count: 0, prodFlags: 0, connFlags: 0 };
    const area = new CdcArea(new Uint8Array(32));
    for (const wrap of [0, 1, 0x7fff, 0xffff]) {
      for (const count of [0, 1, 0xffff, 0x10000, 0x7fffffff, 0x80000000, 0xffffffff]) {
        for (const [pf, cf] of [[0, 0], [0x80, 0x40], [0xff, 0xff], [0x10, 0x20]] as const) {
          const w = cursorWord(wrap, count, pf, cf);
          assert.equal(w, BigInt.asIntN(64, packCursor(wrap, count, pf, cf)));
          assert.deepEqual(readCursorInto(w, out), unpackCursor(w));
          area.storeProd(w);
          assert.equal(area.loadProdFlags(), pf);
        }
      }
    }
  });

  it('a peer that writes impossible cursors is a protocol error, not a crash', () => {
    for (const bad of [packCursor(0, 20000), packCursor(3, 10), packCursor(0xffff, 0)]) {
      const { cb, log, rxB, release } = pair(16384);
      try {
        new BigInt64Array(rxB.bytes.buffer, rxB.bytes.byteOffset, 4)[1] = bad;
        cb.process();
        assert.equal(log.errors.length, 1);
        assert.equal(cb.process(), false, 'a failed connection stays failed');
      } finally {
        release();
      }
    }
  });
});
