// One end of the hostile-input and fault tests on SMC-R (smcr-hostile.test.ts, smcr-faults.test.ts),
// run as its own process inside a network namespace, with its own rxe device. Prints JSON lines
// the test waits on.
//
//   server --bind A --listen echo:P,watch:P,flood:P [--reorder R]
//     echo: echoes; watch: reads nothing and reports, when the connection ends, whether its RMB
//     (and the RMBs of earlier watched connections) still hold what they held at the start;
//     flood: echoes, and on the first SMC-R connection of each link group sends the client 255
//     CONFIRM_RKEY requests for made-up RMBs (as a peer announcing RMBs it never frees would).
//     Every change of the link groups' refusal counters (lgr.rx) and rtoken tables is printed.
//   client --bind B --peer A --port P --test hostile|forge|echo|rtokens|rtokens-full [--mib N] [--reorder R]
//     hostile: the attacker. Two connections keep moving bytes while raw messages go on the
//       link's QP (as the peer's smc stack never would): CDCs for no connection, malformed
//       ones, unknown and short LLC, unsolicited responses, CONFIRM_RKEY/DELETE_RKEY requests,
//       and CDCs whose cursors break the protocol, each aimed at one more connection.
//     forge: RDMA WRITEs into the server's RMB out of bounds, then with a stale rkey (of a link
//       group that is gone), each on a fresh link group since a NAK ends the link.
//     echo: N MiB echoed byte-exact; prints the rxe counters of both the device and the link QP.
//     rtokens: the server's table of this client's RMBs (its lgr->rtokens), seen through its
//       answers: a closed connection's RMB stays until DELETE_RKEY, a reused RMB is one entry,
//       a full table refuses CONFIRM_RKEY and makes the server start a new link group.
//     rtokens-full (against a flood port): the client's own table filled by the server; the
//       next connection declines ERR_RTOK and goes on over TCP.
//
// Reaching the QP goes through the connection's link group (smcState(sock).conn.lgr.link): a
// test-only way to speak for a peer that breaks the rules.

import { parseArgs } from 'node:util';
import { createHash } from 'node:crypto';
import { createRxeDevice, queryRxeCounters, rxeOf } from '../../src/index.js';
import * as smc from '../../src/smc/index.js';
import type { SmcrConnection } from '../../src/smc/smcr/connection.js';
import { SmcrLinkGroup } from '../../src/smc/smcr/lgr.js';
import { smcState } from '../../src/smc/state.js';
import { pattern } from '../helpers/pattern.js';
import { encodeSmcrCdc, type SmcrCdc } from '../../src/smc/wire/cdc-r.js';
import { decodeLlc, encodeLlc, type LlcMessage } from '../../src/smc/wire/llc.js';
import type { Socket } from '../../src/smc/socket.js';
import { remoteAddrPlus, type RemoteAddr } from '../../src/abi/remote-addr.js';

const { positionals, values } = parseArgs({
  allowPositionals: true,
  options: {
    bind: { type: 'string' }, peer: { type: 'string' }, port: { type: 'string' }, listen: { type: 'string' },
    test: { type: 'string' }, mib: { type: 'string', default: '8' }, reorder: { type: 'string' },
  },
});
const role = positionals[0];
const out = (o: Record<string, unknown>) => process.stdout.write(`${JSON.stringify(o)}\n`);

const device = await createRxeDevice({ address: values.bind!, port: 4791, name: `rxe_${role}` });
device.unref();
// --reorder R: the device holds back that share of what it sends behind the next packet (its fault hook).
if (values.reorder) rxeOf(device).faults = { reorder: Number(values.reorder) };

const connOf = (sock: Socket) => smcState(sock)?.conn as SmcrConnection | undefined;
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** Wait for cond() with a bound, looking every 10 ms. */
async function until(cond: () => boolean, what: string, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`no ${what} within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/**
 * LLC requests sent raw on a link group's link (as its smc stack never would), at most 32
 * unanswered at a time, and the peer's answers, decoded, in order. The answers are taken off
 * the link while this runs, so the group's own counters do not see them.
 */
async function ask(lgr: SmcrLinkGroup, msgs: Buffer[]): Promise<LlcMessage[]> {
  const got: LlcMessage[] = [];
  const link = lgr.link;
  const h = link.handlers!;
  const orig = h.message;
  // Only answers of the kinds asked are taken: an answer to the group's own request (its
  // TEST_LINK, say) still reaches the group, and is not counted as one of ours.
  const kinds = new Set(msgs.map((b) => decodeLlc(b).kind));
  h.message = (m) => {
    if (m[0] !== 0xfe) {
      const d = decodeLlc(Buffer.from(m));
      if (d.response && kinds.has(d.kind)) { got.push(d); return; }
    }
    orig(m);
  };
  try {
    for (let i = 0; i < msgs.length; i += 32) {
      const batch = msgs.slice(i, i + 32);
      for (const b of batch) {
        if (!link.canPost(1)) throw new Error('send queue full');
        link.send(b);
      }
      await until(() => got.length >= i + batch.length, `answers to ${i + batch.length} LLC requests`);
    }
  } finally {
    h.message = orig;
  }
  return got;
}

/** CONFIRM_RKEY requests (no rtokens for other links) for made-up RMBs: rkey base + i, address (i + 1) MiB. */
const fakeRkeys = (n: number, base: number): Buffer[] => Array.from({ length: n }, (_, i) => encodeLlc({
  kind: 'CONFIRM_RKEY', version: 2, response: false, negative: false, retry: false, numRkeys: 0, rmbKey: base + i, rmbVaddr: BigInt(i + 1) << 20n, others: [],
}));
const deleteRkeys = (rkeys: number[]): Buffer => encodeLlc({ kind: 'DELETE_RKEY', version: 2, response: false, negative: false, numRkeys: rkeys.length, errMask: 0, rkeys });
/** An answer as the tests compare it. */
const brief = (m: LlcMessage) => ({ kind: m.kind, negative: 'negative' in m ? m.negative : undefined, retry: 'retry' in m ? m.retry : undefined, errMask: 'errMask' in m ? m.errMask : undefined });

if (role === 'server') {
  // The refusal counters of every link group, printed when they change.
  let last = '';
  setInterval(() => {
    const rx = SmcrLinkGroup.list().map((g) => ({ qpn: g.link.qp.qpn, rx: g.rx, dropped: g.dropped, rtokens: g.rtokenCount }));
    const s = JSON.stringify(rx);
    if (s !== last) { last = s; out({ counters: rx }); }
  }, 20).unref();
  /** RMBs of watched connections and what they held at the start (a forged WRITE must change none). */
  const watched: Array<{ buf: Buffer; hash: string }> = [];
  /** Link groups the flood service filled already. */
  const flooded = new WeakSet<SmcrLinkGroup>();
  for (const l of values.listen!.split(',')) {
    const [service, port] = l.split(':');
    const server = smc.createServer({ smcr: true }, (sock) => {
      let bytes = 0;
      sock.on('error', (e: NodeJS.ErrnoException) => out({ server: 'error', service, code: e.code, message: e.message }));
      sock.on('close', () => out({ server: 'close', service, bytes, token: tokenOf }));
      let tokenOf: number | undefined;
      sock.once('smc', (info: smc.SmcInfo) => {
        const conn = connOf(sock as Socket);
        tokenOf = conn?.token;
        if (service === 'watch' && conn) {
          const mine = { buf: conn.rmb.buf, hash: sha(conn.rmb.buf) };
          watched.push(mine);
          sock.once('close', () => out({ server: 'watched', token: tokenOf, same: sha(mine.buf) === mine.hash, allSame: watched.every((w) => sha(w.buf) === w.hash), rmbs: watched.length }));
        }
        out({ server: 'conn', service, mode: info.mode, token: tokenOf, peerDeclineReason: info.peerDeclineReason });
        if (service === 'flood' && conn && !flooded.has(conn.lgr)) {
          flooded.add(conn.lgr);
          void ask(conn.lgr, fakeRkeys(255, 0x5e00_0000)).then((a) => out({
            server: 'flooded', positive: a.filter((m) => m.kind === 'CONFIRM_RKEY' && !m.negative).length,
            negative: a.filter((m) => m.kind === 'CONFIRM_RKEY' && m.negative && m.retry).length,
          }), (e: Error) => out({ server: 'flooded', error: e.message }));
        }
      });
      if (service === 'echo' || service === 'flood') {
        sock.on('data', (d: Buffer) => { bytes += d.length; });
        sock.pipe(sock);
      } else {
        sock.on('data', (d: Buffer) => { bytes += d.length; });
      }
    });
    server.listen(Number(port), values.bind, () => out({ listening: Number(port) }));
  }
} else {
  const connect = () => smc.connect({ host: values.peer!, port: Number(values.port), localAddress: values.bind!, smcr: { device, discovery: false } }) as Socket;
  /** A connection once SMC-R settled on it. */
  const open = () => new Promise<{ sock: Socket; conn: SmcrConnection }>((resolve, reject) => {
    const sock = connect();
    sock.once('error', reject);
    sock.once('smc', (info: smc.SmcInfo) => {
      const conn = connOf(sock);
      if (info.mode !== 'SMCR' || !conn) { reject(new Error(`mode ${info.mode}`)); return; }
      sock.off('error', reject);
      resolve({ sock, conn });
    });
  });
  /** Echo n bytes through sock, resolving with whether they came back byte-exact. */
  const echo = (sock: Socket, n: number, seed: number) => new Promise<{ ok: boolean; bytes: number }>((resolve, reject) => {
    const data = pattern(n, seed);
    const got: Buffer[] = [];
    let m = 0;
    const onData = (d: Buffer) => {
      got.push(d);
      m += d.length;
      if (m >= n) { sock.off('data', onData); sock.off('error', reject); resolve({ ok: Buffer.concat(got).equals(data), bytes: m }); }
    };
    sock.on('data', onData);
    sock.once('error', reject);
    for (let off = 0; off < n; off += 256 * 1024) sock.write(data.subarray(off, Math.min(off + 256 * 1024, n)));
  });
  const errorOf = (sock: Socket) => new Promise<string>((resolve) => {
    sock.once('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
    sock.once('close', () => resolve('closed'));
  });
  const send = (conn: SmcrConnection, msg: Buffer) => {
    const link = conn.lgr.link;
    if (!link.canPost(1)) throw new Error('send queue full');
    link.send(msg);
  };
  const cdcFor = (conn: SmcrConnection, m: Partial<SmcrCdc>): Buffer => {
    // A seqno well after any the connection sent, so it is not dropped as stale.
    const seqno = ((conn as unknown as { seqno: number }).seqno + 100) & 0xffff;
    return encodeSmcrCdc({
      seqno, token: conn.peer.token, prod: { wrap: 0, count: 0 }, cons: { wrap: 0, count: 0 },
      writeBlocked: false, urgDataPending: false, urgDataPresent: false, consCursUpdReq: false, failoverValidation: false,
      peerDoneWriting: false, peerConnClosed: false, peerConnAbort: false, ...m,
    });
  };
  try {
    if (values.test === 'hostile') {
      const by = await open();
      const t1 = await open();
      const t2 = await open();
      const t3 = await open();
      const t4 = await open();
      const lgr = by.conn.lgr;
      out({ client: 'open', sameLgr: [t1, t2, t3, t4].every((t) => t.conn.lgr === lgr) });
      // Answers from the peer's link group, read before ours handles them.
      const answers: Buffer[] = [];
      const h = lgr.link.handlers!;
      const orig = h.message;
      h.message = (m) => { if (m[0] !== 0xfe) answers.push(Buffer.from(m)); orig(m); };
      // t3 moves some bytes first, so its producer cursor has somewhere to go back from.
      const t3Echo = await echo(t3.sock, 100_000, 3);
      // The bystander keeps moving bytes through all that follows.
      const mib = Number(values.mib);
      const bystander = echo(by.sock, mib << 20, 1);
      const errs = [errorOf(t1.sock), errorOf(t2.sock), errorOf(t3.sock), errorOf(t4.sock)];
      const unused = Math.max(...[by, t1, t2, t3, t4].map((c) => c.conn.peer.token)) + 1000;
      const llc44 = (type: number) => { const b = Buffer.alloc(44); b[0] = type; b[1] = 44; return b; };
      // Counted and dropped, nothing answered:
      send(by.conn, cdcFor(by.conn, { token: unused }));                         // cdcNoConn
      send(by.conn, Buffer.from(cdcFor(by.conn, {})).fill(40, 1, 2));             // cdcMalformed: len byte 40
      send(by.conn, llc44(0x0a));                                                 // llcUnknownType
      send(by.conn, llc44(0x05));                                                 // llcUnknownType: v1 REQ_ADD_LINK (Linux has no handler)
      send(by.conn, llc44(0x01).subarray(0, 20));                                 // llcMalformed: 20 bytes
      const rkeyReq = { kind: 'CONFIRM_RKEY', version: 2, negative: false, retry: false, rmbKey: 0x1234_5601, rmbVaddr: 0x10000n } as const;
      send(by.conn, encodeLlc({ ...rkeyReq, response: true, numRkeys: 0, others: [] })); // llcUnexpected: a response nobody asked for
      // Answered:
      send(by.conn, encodeLlc({ ...rkeyReq, response: false, numRkeys: 5, others: [{ linkId: 2, rmbKey: 1, rmbVaddr: 0n }, { linkId: 3, rmbKey: 2, rmbVaddr: 0n }] })); // negative
      send(by.conn, encodeLlc({ ...rkeyReq, response: false, numRkeys: 0, others: [] }));                                                                       // positive
      send(by.conn, encodeLlc({ kind: 'DELETE_RKEY', version: 2, response: false, negative: false, numRkeys: 2, errMask: 0, rkeys: [0x1234_5601, 0x0bad_0bad] })); // one unknown
      // A failover replay is compared, never applied (smc_cdc_msg_validate): with a seqno already
      // seen, its cursors (nonsense here) change nothing and the bystander goes on.
      const bySeq = (by.conn as unknown as { seqno: number }).seqno;
      send(by.conn, cdcFor(by.conn, { failoverValidation: true, seqno: (bySeq - 5) & 0xffff, prod: { wrap: 9, count: 1 } }));
      // Each aborts its connection only:
      const t1Ring = t1.conn.peer.size;
      send(t1.conn, cdcFor(t1.conn, { prod: { wrap: 2, count: 0 } }));                     // producer cursor two rings ahead
      send(t2.conn, cdcFor(t2.conn, { cons: { wrap: 0, count: 5000 } }));                  // acknowledges 5000 bytes never sent
      send(t3.conn, cdcFor(t3.conn, { prod: { wrap: 0, count: 10 }, cons: { wrap: 0, count: 100_000 } })); // producer back from 100,000 to 10
      send(t4.conn, cdcFor(t4.conn, { failoverValidation: true }));                        // a failover replay of messages never received
      const codes = await Promise.race([
        Promise.all(errs),
        new Promise<never>((_, reject) => setTimeout(() => reject(new Error('the targeted connections did not end within 10 s')), 10_000).unref()),
      ]);
      const by1 = await bystander;
      // The bystander once more after all of it, on the same link group.
      const by2 = await echo(by.sock, 1 << 20, 2);
      await until(() => answers.length >= 3, 'three LLC answers', 5000);
      const decoded = answers.map((a) => { const m = decodeLlc(a); return { kind: m.kind, response: m.response, negative: 'negative' in m ? m.negative : undefined, retry: 'retry' in m ? m.retry : undefined, errMask: 'errMask' in m ? m.errMask : undefined }; });
      out({
        client: 'hostile', t3Echo, codes, bystander: by1, bystanderAfter: by2, answers: decoded, t1Ring, lgrDown: lgr.link.isDown,
        lgrRx: lgr.rx, sameLgrAfter: by.conn.lgr === lgr && !lgr.dead,
      });
      by.sock.end();
      by.sock.once('close', () => process.exit(0));
    } else if (values.test === 'forge') {
      const forge = async (rkey: number, addr: RemoteAddr, conn: SmcrConnection) => {
        conn.sndbuf.buf.fill(0xee, 0, 64);
        const link = conn.lgr.link;
        link.write(conn.sndbuf.mr.sge(0, 64), addr, rkey);
        await until(() => link.isDown, 'the link to go down', 10_000);
        return link.downReason;
      };
      const w1 = await open();
      const first = { rkey: w1.conn.peer.rkey, addr: w1.conn.peer.addr, size: w1.conn.peer.size };
      const w1Err = errorOf(w1.sock);
      // 64 bytes at 16 before the end of the RMB: 48 of them outside it.
      const oob = await forge(first.rkey, remoteAddrPlus(first.addr, first.size - 16), w1.conn);
      out({ client: 'forged', what: 'out of bounds', reason: oob, sock: await w1Err });
      const w2 = await open();
      const w2Err = errorOf(w2.sock);
      const fresh = w2.conn.lgr !== w1.conn.lgr;
      // The rkey of the first RMB, deregistered with its link group: stale.
      const stale = await forge(first.rkey, first.addr, w2.conn);
      out({ client: 'forged', what: 'stale rkey', reason: stale, sock: await w2Err, freshLgr: fresh, rkeys: [first.rkey, w2.conn.peer.rkey] });
      process.exit(0);
    } else if (values.test === 'echo') {
      const c = await open();
      const t0 = performance.now();
      const r = await echo(c.sock, Number(values.mib) << 20, 7);
      const ms = Math.round(performance.now() - t0);
      const counters = queryRxeCounters(c.conn.lgr.dev.ctx, c.conn.lgr.link.qp);
      out({ client: 'echo', ...r, ms, staleCdcs: c.conn.staleCdcs, device: counters.device, qp: counters.qp, lgrRx: c.conn.lgr.rx });
      c.sock.end();
      c.sock.once('close', () => process.exit(0));
    } else if (values.test === 'rtokens') {
      // Our RMB as our CLC Confirm named it to the server: its rkey and address on the link.
      const rmbOf = (c: { conn: SmcrConnection }) => { const mr = c.conn.lgr.mrOn(c.conn.rmb, c.conn.link.dev); return { rkey: mr.rkey, addr: mr.addr }; };
      const close = async (c: { sock: Socket }) => { const done = new Promise((r) => c.sock.once('close', r)); c.sock.end(); await done; };
      const c1 = await open();
      const lgr = c1.conn.lgr;
      const k1 = rmbOf(c1);
      const e1 = await echo(c1.sock, 64 * 1024, 11);
      await close(c1);
      // Our RMB goes back to the pool once the server's last CDC for it came (lgr.ts detach).
      const pool = (lgr as unknown as { freeRmbs: Map<number, unknown[]> }).freeRmbs;
      await until(() => (pool.get(c1.conn.rmb.size)?.length ?? 0) > 0, 'the first RMB back in the pool');
      const c2 = await open();
      const k2 = rmbOf(c2);
      const c3 = await open(); // c2 still holds the first RMB: a new one
      const k3 = rmbOf(c3);
      const e3 = await echo(c3.sock, 64 * 1024, 13);
      await close(c3);
      // The server's table: the first RMB (c1's, now c2's) and c3's, though c3 is closed.
      const del = await ask(lgr, [deleteRkeys([k3.rkey]), deleteRkeys([k3.rkey]), deleteRkeys([k1.rkey])]);
      const e2 = await echo(c2.sock, 1 << 20, 12); // its entry went with the last DELETE_RKEY: c2 goes on
      // An empty table takes 255 RMBs and refuses the 256th; one it has is the same entry.
      const fill = await ask(lgr, [...fakeRkeys(256, 0x7e00_0000), ...fakeRkeys(1, 0x7e00_0000)]);
      const c4 = await open(); // the server's table for this group is full: a new link group
      const e4 = await echo(c4.sock, 64 * 1024, 14);
      const freeOne = await ask(lgr, [deleteRkeys([0x7e00_0000])]);
      const c5 = await open(); // room again: the first group
      const e5 = await echo(c5.sock, 64 * 1024, 15);
      out({
        client: 'rtokens', qpn: lgr.link.remote?.qpn, echoes: [e1, e2, e3, e4, e5].map((e) => e.ok),
        reused: k2.rkey === k1.rkey && k2.addr === k1.addr, distinct: k3.rkey !== k1.rkey,
        deletes: del.map(brief), fillPositive: fill.slice(0, 256).filter((m) => !('negative' in m && m.negative)).length,
        fillNegativeAt: fill.flatMap((m, i) => ('negative' in m && m.negative ? [i] : [])),
        fillLast: brief(fill[255]!), fillAgain: brief(fill[256]!),
        newLgr: c4.conn.lgr !== lgr, freeOne: freeOne.map(brief), sameLgr: c5.conn.lgr === lgr,
      });
      for (const c of [c2, c4, c5]) await close(c);
      process.exit(0);
    } else if (values.test === 'rtokens-full') {
      const c1 = await open();
      const lgr = c1.conn.lgr;
      // The server announces 255 made-up RMBs: our table holds its first RMB (the Accept's) and 254 of them.
      await until(() => lgr.rtokenCount === 255 && lgr.rx.rkeyNegative === 1, 'our rtoken table full', 20_000);
      const sock = connect();
      const info = await new Promise<smc.SmcInfo>((resolve, reject) => { sock.once('error', reject); sock.once('smc', resolve); });
      const tcp = await echo(sock, 64 * 1024, 21);
      const after = await echo(c1.sock, 64 * 1024, 22);
      out({
        client: 'rtokens-full', rtokens: lgr.rtokenCount, rkeyNegative: lgr.rx.rkeyNegative, mode: info.mode, fallbackReason: info.fallbackReason,
        tcpEcho: tcp.ok, groupEcho: after.ok, groups: SmcrLinkGroup.list().length,
      });
      sock.end();
      c1.sock.end();
      c1.sock.once('close', () => process.exit(0));
    }
  } catch (e) {
    out({ client: 'fail', message: (e as Error).message, stack: (e as Error).stack });
    process.exit(1);
  }
}
