// A large write leaves in pieces, each an RDMA WRITE followed by the CDC that makes it readable
// (SmcrConnection.flush): the peer reads the first quarter of its RMB while the rest is still on
// the wire, where one WRITE of the whole send buffer gave it nothing to read until the last
// packet. Unit level: an SmcrConnection over a stand-in link that records its posts.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { recordingLink, standInConnection as connection, type Posted as Op } from '../helpers/smcr-standins.js';

test('a write of a whole 1 MiB RMB leaves as four WRITEs, each followed by its CDC', async () => {
  const ring = 1 << 20;
  const { link, ops } = recordingLink();
  const { conn } = connection(ring, link);
  assert.equal(conn.write(Buffer.alloc(ring, 1)), ring);
  await Promise.resolve(); // the flush microtask
  const q = ring / 4;
  assert.deepEqual(ops, [0, 1, 2, 3].flatMap((i) => [
    { kind: 'write', off: i * q, len: q, to: i * q },
    { kind: 'cdc', prod: i === 3 ? 0 : (i + 1) * q, wrap: i === 3 ? 1 : 0 },
  ]));
});

test('a small RMB is written whole (pieces are at least 64 KiB)', async () => {
  const ring = 64 * 1024;
  const { link, ops } = recordingLink();
  const { conn } = connection(ring, link);
  conn.write(Buffer.alloc(40_000));
  await Promise.resolve();
  assert.deepEqual(ops, [{ kind: 'write', off: 0, len: 40_000, to: 0 }, { kind: 'cdc', prod: 40_000, wrap: 0 }]);
});

test('a full send queue stops the pieces; the rest goes, in order, when it has room', async () => {
  const ring = 1 << 20, q = ring / 4;
  const { link, ops } = recordingLink(5); // two pieces (WRITE + CDC each), then one slot: not enough
  const { conn, queued } = connection(ring, link);
  conn.write(Buffer.alloc(ring));
  await Promise.resolve();
  assert.equal(ops.length, 4);
  assert.deepEqual(ops.at(-1), { kind: 'cdc', prod: 2 * q, wrap: 0 });
  assert.deepEqual(queued, [conn], 'the connection waits for room in the link group queue');
  link.room = Infinity;
  conn.sendable();
  assert.deepEqual(ops.slice(4), [
    { kind: 'write', off: 2 * q, len: q, to: 2 * q }, { kind: 'cdc', prod: 3 * q, wrap: 0 },
    { kind: 'write', off: 3 * q, len: q, to: 3 * q }, { kind: 'cdc', prod: 0, wrap: 1 },
  ]);
});

test('a failover resends what was not confirmed in one piece: no CDC moves the producer cursor back', async () => {
  const ring = 1 << 20;
  const first = recordingLink(), second = recordingLink();
  const { conn } = connection(ring, first.link);
  conn.write(Buffer.alloc(ring - 100));
  await Promise.resolve();
  assert.equal(first.ops.filter((o) => o.kind === 'cdc').length, 4, 'four pieces on the first link');
  // None of them confirmed; the peer may have seen every CDC (the last: ring - 100).
  conn.setPeerKey(second.link as never, { rkey: 4, addr: 0 } as never);
  assert.equal(conn.switchLink(second.link as never), true);
  const cdcs = second.ops.filter((o): o is Extract<Op, { kind: 'cdc' }> => o.kind === 'cdc');
  // The validation CDC (cursors zero, never applied), then the resend: one WRITE of everything, one CDC.
  assert.deepEqual(second.ops.filter((o) => o.kind === 'write'), [{ kind: 'write', off: 0, len: ring - 100, to: 0 }]);
  assert.deepEqual(cdcs.at(-1), { kind: 'cdc', prod: ring - 100, wrap: 0 });
  assert.equal(cdcs.length, 2);
  // New bytes after it go in pieces again.
  conn.write(Buffer.alloc(50));
  await Promise.resolve();
  assert.deepEqual(second.ops.slice(-2), [{ kind: 'write', off: ring - 100, len: 50, to: ring - 100 }, { kind: 'cdc', prod: ring - 50, wrap: 0 }]);
});

test('a close right after a large write rides on the last piece only (the peer would end the stream at an earlier cursor)', async () => {
  for (const close of ['closeWrite', 'closeOrderly'] as const) {
    const ring = 1 << 20;
    const { link, ops, closes } = recordingLink();
    const { conn } = connection(ring, link);
    conn.write(Buffer.alloc(ring));
    conn[close](); // before the flush microtask: the close's CDC flushes the pieces
    await Promise.resolve();
    assert.equal(ops.filter((o) => o.kind === 'write').length, 4, close);
    assert.deepEqual(closes, close === 'closeWrite' ? ['', '', '', 'done'] : ['', '', '', 'doneclosed'], close);
  }
});

test('an abort with pieces unsent rides on the last: no WRITE follows a CDC that frees the peer\'s RMB', async () => {
  const ring = 1 << 20;
  // In the same tick as the write (close.ts: a reset right after write()), and while the send
  // queue is full with pieces owed (the link group's sendable() sends the rest).
  for (const how of ['same tick', 'queue full'] as const) {
    const { link, ops, closes } = recordingLink(how === 'queue full' ? 5 : Infinity);
    const { conn } = connection(ring, link);
    conn.write(Buffer.alloc(ring));
    if (how === 'queue full') await Promise.resolve(); // two pieces go, then the queue is full
    conn.abort();
    link.room = Infinity;
    conn.sendable();
    await Promise.resolve();
    const firstAbort = ops.findIndex((o, i) => o.kind === 'cdc' && closes[ops.slice(0, i).filter((x) => x.kind === 'cdc').length]!.includes('abort'));
    assert.ok(firstAbort >= 0, `${how}: an abort was sent`);
    assert.deepEqual(ops.slice(firstAbort + 1).filter((o) => o.kind === 'write'), [], `${how}: no WRITE after the abort`);
    assert.deepEqual(closes.filter((c) => c.includes('abort')), ['abort'], `${how}: one CDC carries it`);
  }
});
