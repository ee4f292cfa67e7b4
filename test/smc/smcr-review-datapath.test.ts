// SMC-R's data path and connection ends against what Linux's net/smc does (review findings):
// an application callback that throws inside the link's completion handling, an RMB whose
// peer's close was only inferred, CDCs held for a handshake not joined yet (failover
// validation among them), a Linux sender's urgent byte (send(MSG_OOB)), and a half-closed
// peer keeping its end open while the other end's link group would linger out. One process,
// no namespaces (smcr-relay-harness.ts); the throwing handler runs in a child process of its
// own, since the exception must reach its 'uncaughtException'.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { testRuntimeDir } from '../helpers/runtime-dir.js';
import { jsonLines, runNode } from '../helpers/procs.js';

testRuntimeDir('smcr-review-datapath');
process.env.SOFTRDMA_SMC_LEARN = '0'; // every connection tries SMC, however short
const { setup, settled, smcrConnection, until, sleep, within } = await import('./smcr-relay-harness.js');
const { setSmcrLingerMs } = await import('../../src/smc/smcr/lgr.js');
const { SmcrConnection } = await import('../../src/smc/smcr/connection.js');
const { encodeSmcrCdc } = await import('../../src/smc/wire/cdc-r.js');
const { smcState } = await import('../../src/smc/state.js');
const { rxeOf } = await import('../../src/index.js');
type Conn = InstanceType<typeof SmcrConnection>;
type Cdc = Parameters<typeof encodeSmcrCdc>[0];

/** What the link group does with a message its link received (private: the tests feed it CDCs as if they came). */
const feed = (lgr: object, link: object, cdc: Cdc) => (lgr as { onMessage(l: object, m: Buffer): void }).onMessage(link, encodeSmcrCdc(cdc));

const cdcBase: Omit<Cdc, 'seqno' | 'token'> = {
  prod: { wrap: 0, count: 0 }, cons: { wrap: 0, count: 0 }, writeBlocked: false, urgDataPending: false, urgDataPresent: false,
  consCursUpdReq: false, failoverValidation: false, peerDoneWriting: false, peerConnClosed: false, peerConnAbort: false,
};

test('an application callback that throws does not stall the link: the group\'s other connection still echoes, the exception reaches uncaughtException', { timeout: 30_000 }, async () => {
  const p = runNode(fileURLToPath(new URL('./smcr-review-throw-peer.js', import.meta.url)), []);
  const r = await p.waitUntil((o) => jsonLines(o).at(-1), 'the scenario\'s line', 20_000);
  await p.exit(5000).catch(() => undefined);
  assert.equal(r.fail, undefined, `${String(r.fail)}\n${p.stderr}`);
  assert.deepEqual(r.modes, ['SMCR', 'SMCR']);
  assert.deepEqual(r.before, ['ok', 'ok']);
  assert.deepEqual(r.thrown, ['application bug in a data handler'], 'thrown again on its own tick');
  assert.equal(r.after, 'ok', 'the other connection of the link group still echoes');
  assert.equal(r.again, 'ok', 'and the one whose handler threw goes on, as over node:net');
  assert.equal(r.serverLinkDown, false);
});

test('a close only inferred (the peer\'s TCP ended, no closing CDC) quarantines the RMB: a late WRITE of the peer cannot land in the next connection', async (t) => {
  let got = 0;
  const env = await setup(t, (s) => { s.on('data', (d: Buffer) => { got += d.length; }); }); // reads, never writes
  const c1 = env.connect();
  assert.equal((await settled(c1, 'the first client settles')).mode, 'SMCR');
  c1.allowHalfOpen = true; // the client's end stays: it sends no closing CDC after the server's end
  c1.write('one');
  await until(() => got === 3, 3000, 'the first bytes at the server');
  const lgr = env.serverLgr();
  const s1 = [...lgr.conns.values()][0]!;
  // What close.ts does when the server's TCP connection ends with no closing CDC seen: it asks
  // the peer over the link, and without an answer (the client's RoCE packets are lost here, as
  // from a dead process) takes the peer as closed (orderly: nothing of ours is unconsumed); the
  // server's socket ends and is released.
  rxeOf(env.a).faults = { drop: 1 };
  s1.peerTcpEnded();
  await until(() => s1.released, 3000, 'the server\'s end released');
  rxeOf(env.a).faults = undefined;
  assert.equal(s1.peerGone, false, 'no closing CDC came');
  assert.equal(c1.destroyed, false);
  assert.equal(lgr.quarantinedCount, 1, 'the RMB waits for the peer (Linux frees it only after the peer\'s closing CDC)');
  const c2 = env.connect();
  assert.equal((await settled(c2, 'the second client settles')).mode, 'SMCR');
  await until(() => lgr.conns.size === 1, 3000, 'the second connection at the server');
  const s2 = [...lgr.conns.values()][0]!;
  assert.notEqual(s2.rmb, s1.rmb, 'the new connection has an RMB of its own');
  // A WRITE of the first client's that was posted before its close but arrives late: on its link, with the key it has.
  const before = Buffer.from(s2.rmb.buf.subarray(0, 32));
  const cc1 = smcState(c1)!.conn as Conn;
  const src = cc1.lgr.takeSndbuf(4096);
  src.buf.fill(0x58, 0, 16);
  cc1.link.write(cc1.lgr.mrOn(src, cc1.link.dev).sge(0, 16), cc1.peer.addr, cc1.peer.rkey);
  await until(() => s1.rmb.buf.readUInt32BE(0) === 0x58585858, 3000, 'the late WRITE in the quarantined RMB');
  assert.deepEqual(s2.rmb.buf.subarray(0, 32), before, 'nothing landed in the new connection\'s ring');
  // The peer's closing CDC, when it comes, frees it for reuse.
  c1.destroy();
  await until(() => lgr.quarantinedCount === 0, 3000, 'the RMB released by the peer\'s closing CDC');
});

test('CDCs held for a handshake not joined yet: a failover-validation CDC is never held, the highest seqno is kept', async (t) => {
  const env = await setup(t);
  await smcrConnection(env, 'first contact');
  const lgr = env.serverLgr();
  const link = lgr.link;
  /** A connection of the group for `token`, joined after the CDCs were fed, as a server's handshake joins at its Confirm. */
  const join = (token: number, cdcs: Cdc[]) => {
    const rmb = lgr.takeRmb(65536);
    const sndbuf = lgr.takeSndbuf(65536);
    lgr.expect(token, link, rmb);
    for (const c of cdcs) feed(lgr, link, c);
    const errors: string[] = [];
    const h = { data: () => true, peerDone() {}, peerAbort() {}, writable() {}, protocolError: (m: string, c?: string) => { errors.push(`${c ?? 'EPROTO'} ${m}`); } };
    const conn = new SmcrConnection(lgr, rmb, sndbuf, token, { token: 1, rkey: 1, addr: 0, wireAddr: 0n, size: 65536 }, h, link);
    assert.equal(lgr.attach(conn), true);
    conn.start();
    conn.settled();
    return { conn, errors };
  };
  const data = (seqno: number, token: number, count: number): Cdc => ({ ...cdcBase, seqno, token, prod: { wrap: 0, count } });
  const validation = (seqno: number, token: number): Cdc => ({ ...cdcBase, seqno, token, failoverValidation: true });

  // The client wrote 100 bytes (seqno 1), then its link failed over: the replay (seqno 1) is only compared.
  const a = join(0x7fff0001, [data(1, 0x7fff0001, 100), validation(1, 0x7fff0001)]);
  assert.deepEqual(a.errors, []);
  assert.equal(a.conn.readable, 100);
  // A CDC arriving after a later one (seqno 1 after 2) is stale: the later one is kept.
  const b = join(0x7fff0002, [data(2, 0x7fff0002, 200), data(1, 0x7fff0002, 100)]);
  assert.deepEqual(b.errors, []);
  assert.equal(b.conn.readable, 200);
  // A validation beyond any CDC seen means CDCs were lost: the connection aborts as it joins (smc_cdc_msg_validate), and takes nothing after it.
  const c = join(0x7fff0003, [data(1, 0x7fff0003, 100), validation(3, 0x7fff0003), data(4, 0x7fff0003, 300)]);
  assert.equal(c.errors.length, 1, JSON.stringify(c.errors));
  assert.match(c.errors[0]!, /^EPROTO failover validation: seqno 3 beyond 1/);
  assert.equal(c.conn.readable, 100);
  for (const x of [a, b, c]) x.conn.release();
});

test('a Linux sender\'s urgent byte (send(MSG_OOB)) is skipped as a TCP socket without SO_OOBINLINE skips it, and the consumer update goes at once', async (t) => {
  let got = '';
  const env = await setup(t, (s) => { s.on('data', (d: Buffer) => { got += d.toString('latin1'); }); });
  const c1 = env.connect();
  assert.equal((await settled(c1, 'the client settles')).mode, 'SMCR');
  c1.write('warmup');
  await until(() => got === 'warmup', 3000, 'the first bytes at the server');
  const cc = smcState(c1)!.conn as Conn;
  assert.ok(cc.unconsumed > 0, 'the server has not sent its consumer cursor for those yet (below its update limit)');
  // The next CDC of this connection carries what a Linux sender's send("ab!U", MSG_OOB) sets:
  // urg_data_pending | urg_data_present, the last byte ('U') urgent.
  const link = cc.link as unknown as { send(m: Buffer): void };
  const send = link.send.bind(link);
  let marked = false;
  link.send = (m: Buffer) => {
    if (!marked && m[0] === 0xfe && m.readUInt32BE(4) === cc.peer.token && m.readUInt32BE(12) !== 0) {
      marked = true;
      m[24]! |= 0x60;
    }
    send(m);
  };
  c1.write('ab!U');
  await until(() => marked, 3000, 'the urgent CDC sent');
  // The server's forced consumer update says it consumed everything, the urgent byte included
  // (smc_rx_update_consumer); by then the bytes before it were delivered.
  await until(() => cc.unconsumed === 0, 3000, 'the consumer cursor past the urgent byte');
  assert.equal(got, 'warmupab!', 'the urgent byte is not in the stream');
  link.send = send;
  c1.write('more');
  await until(() => got === 'warmupab!more', 3000, 'the stream goes on');
});

test('a peer keeping its half-closed end open keeps the other end\'s link group: no linger, no ECONNABORTED', async (t) => {
  const was = setSmcrLingerMs(200);
  t.after(() => { setSmcrLingerMs(was); });
  const env = await setup(t);
  const c1 = await smcrConnection(env, 'one');
  c1.allowHalfOpen = true; // our end stays open after the peer's end, as node:net lets an application do
  const errors: string[] = [];
  c1.on('error', (e: NodeJS.ErrnoException) => errors.push(`${e.code} ${e.message}`));
  const ended = new Promise((r) => c1.once('end', r));
  const lgr = env.serverLgr();
  env.accepted[0]!.destroy();
  await ended;
  await sleep(1000); // five lingers
  assert.deepEqual(errors, []);
  assert.equal(c1.destroyed, false);
  assert.equal(lgr.dead, false, 'the server\'s group stays while the peer has not closed');
  assert.equal(lgr.quarantinedCount, 1);
  // Once the peer closes, the group is unused and lingers out.
  c1.destroy();
  await until(() => lgr.dead, 3000, 'the server\'s group lingering out after the peer\'s close');
  assert.deepEqual(errors, []);
});

test('a write waiting for room fails with ECONNRESET when the peer closes having read everything (its closing CDC moves no cursor), as smc_tx_wait on any close; it waited for ever', async (t) => {
  const N = 3 << 20;
  let got = 0;
  const env = await setup(t, (s) => {
    s.on('data', (d: Buffer) => {
      got += d.length;
      // Everything that arrived is read (and its consumer cursor sent) before the close.
      if (got >= N && !s.destroyed) setImmediate(() => s.destroy());
    });
  });
  const c = env.connect();
  assert.equal((await settled(c, 'the client settles')).mode, 'SMCR');
  const errors: string[] = [];
  c.on('error', (e: NodeJS.ErrnoException) => errors.push(String(e.code)));
  const written = new Promise<string>((resolve) => c.write(Buffer.alloc(64 << 20, 7), (e) => resolve(e ? String((e as NodeJS.ErrnoException).code) : 'ok')));
  await within(new Promise((r) => c.once('close', r)), 5000, 'the client\'s close');
  assert.deepEqual(errors, ['ECONNRESET']);
  // The write's callback comes as for any write destroy() cut short (node's onWriteComplete on a destroyed stream: no error).
  await within(written, 1000, 'the write\'s callback');
  assert.ok(got >= N);
});

/**
 * The client's RoCE packets are lost for `ms` (RC resends them after), while TCP goes on: a
 * closing CDC reaches the server well after the TCP FIN that followed it.
 */
function roceOutage(env: { a: Parameters<typeof rxeOf>[0] }, ms: number): void {
  const dev = rxeOf(env.a);
  dev.faults = { drop: 1 };
  setTimeout(() => { dev.faults = undefined; }, ms);
}

test('a half-close whose peer_done_writing comes 450 ms after the FIN stays a half-close: the server\'s answer after \'end\' reaches the client (a close inferred after 300 ms dropped it)', async (t) => {
  const env = await setup(t, (s) => {
    let req = '';
    s.on('data', (d: Buffer) => { req += d.toString(); });
    s.on('end', () => s.end(`answer to ${req}`));
  }, { allowHalfOpen: true });
  const c = env.connect({ allowHalfOpen: true });
  assert.equal((await settled(c, 'the client settles')).mode, 'SMCR');
  let answer = '';
  c.on('data', (d: Buffer) => { answer += d.toString(); });
  const errors: string[] = [];
  c.on('error', (e: NodeJS.ErrnoException) => errors.push(String(e.code)));
  c.write('request');
  await until(() => env.accepted.length === 1 && env.accepted[0]!.bytesRead > 0, 3000, 'the request at the server');
  roceOutage(env, 450);
  c.end();
  await within(new Promise((r) => c.once('end', r)), 5000, 'the server\'s end at the client');
  assert.equal(answer, 'answer to request');
  assert.deepEqual(errors, []);
  const sErrors: string[] = [];
  env.accepted[0]!.on('error', (e: NodeJS.ErrnoException) => sErrors.push(String(e.code)));
  assert.deepEqual(sErrors, []);
});

test('an orderly close whose closing CDC comes 450 ms after the FIN is an orderly end at the server, not an abort (our bytes it read but had not yet confirmed)', async (t) => {
  const events: string[] = [];
  const env = await setup(t, (s) => {
    s.on('error', (e: NodeJS.ErrnoException) => events.push(`error ${String(e.code)}`));
    s.on('end', () => events.push('end'));
    s.on('close', () => events.push('close'));
    s.once('data', () => s.write('hello from the server'));
  });
  const c = env.connect();
  assert.equal((await settled(c, 'the client settles')).mode, 'SMCR');
  c.write('hi');
  let got = '';
  c.on('data', (d: Buffer) => { got += d.toString(); });
  await until(() => got === 'hello from the server', 3000, 'the server\'s bytes at the client');
  roceOutage(env, 450);
  c.destroy();
  await until(() => events.includes('close'), 5000, 'the server socket\'s close');
  assert.deepEqual(events, ['end', 'close']);
});

test("the server's end() during a RoCE outage: its TCP FIN waits for its closing CDC, so the client gets every byte and then its end (the FIN went first, and the client took the server as gone a second later)", async (t) => {
  const env: { b?: Awaited<ReturnType<typeof setup>>['b'] } = {};
  const reply = Buffer.alloc(1 << 20, 0x61);
  let restore: NodeJS.Timeout | undefined;
  t.after(() => clearTimeout(restore));
  const e = await setup(t, (s) => {
    s.once('data', () => {
      // The server's RoCE packets are lost from now on for 2.5 s (TCP goes on): its reply and
      // closing CDC wait for the path; its FIN must wait for them.
      rxeOf(env.b!).faults = { drop: 1 };
      s.end(reply);
      restore = setTimeout(() => { rxeOf(env.b!).faults = undefined; }, 2500);
    });
  });
  env.b = e.b;
  const c = e.connect();
  assert.equal((await settled(c, 'the client settles')).mode, 'SMCR');
  let got = 0, ended = false, error: Error | undefined;
  c.on('data', (d: Buffer) => { got += d.length; });
  c.on('end', () => { ended = true; });
  c.on('error', (err: Error) => { error = err; });
  c.write('request');
  await until(() => ended || error !== undefined, 20_000, "the client's end");
  assert.equal(error, undefined);
  assert.equal(got, reply.length, 'every byte of the reply before the end');
});
