// An SmcrConnection over stand-ins for its link and link group, for unit tests of its send
// side: the link records what is posted (WRITEs, and CDCs decoded) and has `room` send-queue
// slots; the link group hands out MRs whose SGEs say where they point and records who waits
// for room.

import { SmcrConnection } from '../../src/smc/smcr/connection.js';
import { decodeSmcrCdc } from '../../src/smc/wire/cdc-r.js';

export type Posted = { kind: 'write'; off: number; len: number; to: number } | { kind: 'cdc'; prod: number; wrap: number };

/** A link that records its posts and takes `room` of them before its send queue is full. */
export function recordingLink(room = Infinity) {
  const ops: Posted[] = [];
  /** Each CDC's close flags, in order: done writing, closed, abort. */
  const closes: string[] = [];
  const link = {
    isDown: false, postedSeq: 0, dev: {}, room,
    canPost(n: number) { return n <= this.room; },
    write(sge: { off: number; len: number }, to: number) { this.postedSeq++; this.room--; ops.push({ kind: 'write', off: sge.off, len: sge.len, to }); },
    send(msg: Buffer) { this.postedSeq++; this.room--; const m = decodeSmcrCdc(msg); ops.push({ kind: 'cdc', prod: m.prod.count, wrap: m.prod.wrap }); closes.push(`${m.peerDoneWriting ? 'done' : ''}${m.peerConnClosed ? 'closed' : ''}${m.peerConnAbort ? 'abort' : ''}`); },
    postFailed(e: unknown) { throw e; },
  };
  return { link, ops, closes };
}

/** A connection whose RMB, send buffer and peer RMB are `ring` bytes, on `link`; `queued`: who asked the group for room. */
export function standInConnection(ring: number, link: object) {
  const queued: unknown[] = [];
  const lgr = { mrOn: () => ({ sge: (off: number, len: number) => ({ off, len }) }), wantsQueue(c: unknown) { queued.push(c); } };
  const buf = () => ({ size: ring, buf: Buffer.alloc(ring) });
  type Ctor = new (...a: unknown[]) => SmcrConnection;
  const conn = new (SmcrConnection as unknown as Ctor)(lgr, buf(), buf(), 1, { token: 2, rkey: 3, addr: 0, wireAddr: 0n, size: ring }, {}, link);
  return { conn, queued };
}
