// SMC-R between two processes in two network namespaces joined by a veth pair: each process
// has its own rxe device on its address (UDP 4791 of its namespace) and softrdma/smc sockets
// with `smcr: { device }`. The byte stream goes by RDMA WRITE + CDC (src/smc/smcr/); the
// TCP connection carries only the CLC handshake. Skipped, saying why, when namespaces cannot be
// made (not root, no iproute2, a sandbox that forbids them).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { jsonLines, run, runNode, type Proc } from '../helpers/procs.js';
import { DECLINE } from '../../src/smc/clc.js';
import type { SmcInfo } from '../../src/smc/index.js';
import { resolveSmcOptions, smcrOf } from '../../src/smc/options.js';
import { readFields } from '../helpers/capture.js';
import { testRuntimeDir } from '../helpers/runtime-dir.js';
import { deleteNamespaces, ip, setUpVethPair } from '../helpers/netns.js';

// A runtime directory of this file's own (the listeners its processes register), inherited by them.
testRuntimeDir('smcr-test');
const smc = await import('../../src/smc/index.js');

const PEER = fileURLToPath(new URL('./smcr-peer.js', import.meta.url));
const tag = `sm${process.pid % 100000}`;
const NS_A = `${tag}a`, NS_B = `${tag}b`;
const ADDR_A = '10.233.7.1', ADDR_B = '10.233.7.2';
/** A second address in A, for the process the kill test ends (each process has its own rxe device on UDP 4791 of its address). */
const ADDR_A2 = '10.233.7.3';
/** A third, for a server whose device drops everything it sends (a RoCE path that does not work). */
const ADDR_A3 = '10.233.7.4';

function setUp(): string | undefined {
  return setUpVethPair({
    tag, nsA: NS_A, nsB: NS_B, addrA: ADDR_A, addrB: ADDR_B,
    extra: () => {
      ip('-n', NS_A, 'addr', 'add', `${ADDR_A2}/24`, 'dev', `${tag}va`);
      ip('-n', NS_A, 'addr', 'add', `${ADDR_A3}/24`, 'dev', `${tag}va`);
    },
  });
}

function tearDown() {
  deleteNamespaces(NS_A, NS_B);
}

test('the smcr option: on by default, off by smcr: false or the per-process switch, checked, inherited by accepted sockets', () => {
  assert.equal(smcrOf(resolveSmcOptions(undefined)), true, 'on by default');
  assert.equal(smcrOf(resolveSmcOptions({ smc: true })), true);
  assert.equal(smcrOf(resolveSmcOptions({ smcr: false })), undefined);
  assert.equal(smcrOf(resolveSmcOptions({ smcr: true })), true);
  assert.equal(smcrOf(resolveSmcOptions(undefined, resolveSmcOptions({ smcr: false }))), undefined, 'an accepted socket keeps its server\'s smcr: false');
  assert.throws(() => resolveSmcOptions({ smcr: 'yes' as never }), TypeError);
  smc.setSmcrDefault(false);
  try {
    assert.equal(smcrOf(resolveSmcOptions(undefined)), undefined, 'the switch turns the default off');
    assert.equal(smcrOf(resolveSmcOptions({ smcr: true })), true, 'a socket that asks still has it');
  } finally {
    smc.setSmcrDefault(true);
  }
  assert.throws(() => smc.setSmcrDefault('no' as never), TypeError);
});

function captureMissing(): string | undefined {
  for (const tool of ['tcpdump', 'tshark']) {
    try { execFileSync(tool, ['--version'], { stdio: 'ignore' }); } catch { return `${tool} is not installed`; }
  }
  return undefined;
}

test('a socket with smcr still gets SMC-D from a local SMC listener (no device needed)', async () => {
  smc.setSmcLearning(false);
  const server = smc.createServer((sock) => sock.pipe(sock));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  try {
    const sock = smc.connect({ host: '127.0.0.1', port: (server.address() as { port: number }).port, smcr: true });
    const info = await new Promise<SmcInfo>((resolve, reject) => { sock.once('smc', resolve); sock.once('error', reject); });
    assert.equal(info.mode, 'SMCD');
    sock.write('ping');
    const [got] = await Promise.race([
      new Promise<Buffer[]>((resolve) => sock.once('data', (d: Buffer) => resolve([d]))),
      new Promise<never>((_, reject) => setTimeout(() => reject(new Error('no echo within 10 s')), 10_000).unref()),
    ]);
    assert.equal(got!.toString(), 'ping');
    sock.destroy();
  } finally {
    server.close();
  }
});

const skip = setUp();
const procs: Proc[] = [];

/** TEST_LINK after 500 ms without traffic (Linux's default is 30 s), so a dead RoCE path is seen quickly. */
const env = { SOFTRDMA_SMCR_TESTLINK_MS: '500' };

function server(bind: string, listen: string, extra: string[] = [], extraEnv: Record<string, string> = {}): Proc {
  const p = runNode(PEER, ['server', '--bind', bind, '--listen', listen, ...extra], { netns: NS_A, env: { ...env, ...extraEnv } });
  procs.push(p);
  return p;
}

function client(port: number, t: string, mib = 4, peer = ADDR_A, extra: string[] = []): Proc {
  const p = runNode(PEER, ['client', '--bind', ADDR_B, '--peer', peer, '--port', String(port), '--test', t, '--mib', String(mib), ...extra], { netns: NS_B, env });
  procs.push(p);
  return p;
}

/** The first JSON line with key === value, waited for with a bound. */
async function line(p: Proc, key: string, value: unknown, ms = 30_000): Promise<Record<string, unknown>> {
  return p.waitUntil((out) => jsonLines(out).find((l) => l[key] === value), `a line with ${key}=${String(value)}`, ms);
}

test('SMC-R across two network namespaces', { skip }, async (t) => {
  t.after(async () => {
    for (const p of procs) if (p.child.exitCode === null) p.child.kill('SIGKILL');
    await Promise.all(procs.map((p) => p.exit(5000).catch(() => undefined)));
    tearDown();
  });
  const srv = server(ADDR_A, 'echo:7101,count:7102,reset:7105,plain-echo:7104');
  await srv.waitUntil((out) => (jsonLines(out).filter((l) => l.listening).length === 4 ? true : undefined), 'four listeners');
  const echo = srv, count = srv;

  await t.test('8 MiB echo is byte-exact both ways, and both ends report SMCR', async () => {
    const c = client(7101, 'echo', 8);
    const r = await line(c, 'client', 'echo', 60_000);
    assert.equal(r.ok, true, JSON.stringify(r));
    assert.equal(r.mode, 'SMCR');
    assert.equal(r.bytes, 8 << 20);
    assert.equal(r.smcBytesSent, 8 << 20);
    assert.equal(r.bufferSize, 1024 * 1024, 'the RMB is the socket buffer size (default 1 MiB)');
    assert.equal(r.peerBufferSize, 1024 * 1024);
    assert.ok((r.wrapWrites as number) > 0, `writes that wrapped the ring (two RDMA WRITEs): ${String(r.wrapWrites)}`);
    assert.equal(r.hadError, false);
    assert.equal(await c.exit(10_000), 0, c.stdout + c.stderr);
    const s = await line(echo, 'server', 'conn');
    assert.equal(s.mode, 'SMCR');
  });

  await t.test('softrdma smc-chk from the other namespace: "Success, using SMC-R", exit 0', async () => {
    // A fresh process: its device comes up and discovery asks first (allowed 1 s, as the bench).
    const p = run(['smc-chk', ADDR_A, '7101'], { netns: NS_B, env: { ...env, SOFTRDMA_SMCR_DISCOVERY_WAIT_MS: '1000' } });
    procs.push(p);
    assert.equal(await p.exit(30_000), 0, p.stdout + p.stderr);
    assert.match(p.stdout, new RegExp(`^Test with target IP ${ADDR_A.replace(/\./g, '\\.')} and port 7101\n  Live test \\(SMC-D and SMC-R\\)\n     Success, using SMC-R\n     \\(buffers: \\d+ bytes to receive, \\d+ bytes at the peer; link 1 on \\S+, QP 0x[0-9a-f]+ to 0x[0-9a-f]+\\)`));
  });

  await t.test('later connections to the same peer reuse the link group, also in parallel', async () => {
    const c = client(7101, 'two', 2);
    const second = await c.waitUntil((out) => jsonLines(out).find((l) => l.client === 'echo' && l.lgrsBefore), 'the second echo', 60_000);
    assert.equal(second.ok, true);
    assert.equal(second.mode, 'SMCR');
    const before = second.lgrsBefore as Array<Record<string, unknown>>;
    const after = second.lgrsAfter as Array<Record<string, unknown>>;
    assert.equal(before.length, 1, 'one link group after the first connection');
    assert.equal(after.length, 1, 'still one: the second connection joined it');
    assert.equal(after[0]!.qpn, before[0]!.qpn);
    const par = await line(c, 'client', 'parallel', 60_000);
    assert.equal(par.ok, true, JSON.stringify(par));
    assert.equal((par.lgrs as unknown[]).length, 1);
    assert.equal(await c.exit(10_000), 0, c.stdout + c.stderr);
  });

  await t.test('half-close: end() is the peer\'s end after all data; the peer can still answer', async () => {
    const c = client(7102, 'halfclose', 3);
    const r = await line(c, 'client', 'halfclose', 60_000);
    assert.equal(r.mode, 'SMCR');
    assert.equal(r.reply, r.expected, 'the server counted and hashed every byte before its end');
    // Our 'finish' waits for the TCP shutdown's completion in a later poll phase; the server's
    // answer and end (it saw our end: the reply counts every byte) can be read in that same
    // phase first, as over TCP, where 'finish' is not ordered before the peer's end either.
    const events = r.events as string[];
    assert.deepEqual([...events.slice(0, 2)].sort(), ['end', 'finish'], JSON.stringify(events));
    assert.deepEqual(events.slice(2), ['close false']);
    const s = await line(count, 'server', 'end');
    assert.equal(s.mode, 'SMCR');
    assert.equal(s.bytes, 3 << 20);
  });

  await t.test('a server without smcr declines (SMC_CLC_DECL_NOSMCRDEV) and the connection is TCP, byte-exact', async () => {
    const c = client(7104, 'echo', 1);
    const r = await line(c, 'client', 'echo', 60_000);
    assert.equal(r.ok, true);
    assert.equal(r.mode, 'TCP');
    assert.equal(r.peerDeclineReason, DECLINE.NOSMCRDEV);
    assert.equal(r.fallbackReason, DECLINE.PEERDECL);
  });

  await t.test('a RoCE path that carries nothing: CONFIRM_LINK does not come, the handshake declines and the connection is TCP, byte-exact', async () => {
    const dead = server(ADDR_A3, 'echo:7106', ['--drop', '1']);
    await dead.waitFor(/"listening"/);
    try {
      const c = client(7106, 'echo', 1, ADDR_A3);
      const r = await line(c, 'client', 'echo', 30_000);
      assert.equal(r.ok, true, JSON.stringify(r));
      assert.equal(r.mode, 'TCP');
      assert.ok(r.fallbackReason === DECLINE.TIMEOUT_CL || r.peerDeclineReason === DECLINE.TIMEOUT_CL, JSON.stringify(r));
      // Nothing of the failed first contact keeps the client alive (its device is unref()'d).
      assert.equal(await c.exit(10_000), 0, c.stdout + c.stderr);
    } finally {
      // Its device holds UDP 4791 on ADDR_A3, which the TEST_LINK test's server needs.
      dead.child.kill('SIGKILL');
      await dead.exit(5000).catch(() => undefined);
    }
  });

  await t.test('a capture of a connection decodes in tshark: SMC-Rv2 CLC on TCP, CDC in the RoCEv2 SENDs, nothing malformed', { skip: captureMissing() }, async () => {
    const dir = mkdtempSync(join(tmpdir(), 'smcr-cap-'));
    const file = join(dir, 'smcr.pcap');
    try {
      // tcpdump -U writes each packet as it comes, so stopping it with SIGINT loses nothing.
      const cap = spawn('ip', ['netns', 'exec', NS_A, 'tcpdump', '-U', '-i', `${tag}va`, '-w', file, 'tcp port 7101 or udp port 4791'], { stdio: ['ignore', 'ignore', 'pipe'] });
      let err = '';
      const closed = new Promise<void>((resolve) => cap.once('close', () => resolve()));
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => { cap.kill(); reject(new Error(`tcpdump did not start: ${err}`)); }, 10_000);
        cap.stderr.setEncoding('utf8').on('data', (d: string) => { err += d; if (/listening on/.test(err)) { clearTimeout(timer); resolve(); } });
      });
      const c = client(7101, 'echo', 1);
      const r = await line(c, 'client', 'echo', 30_000);
      assert.equal(r.mode, 'SMCR');
      assert.equal(await c.exit(10_000), 0);
      cap.kill('SIGINT');
      await closed;
      // Wireshark 4.0's RPC-over-RDMA heuristic claims the v2 LLC messages (first byte 0x21, as
      // Linux sends them in SMC-Rv2 link groups) and fails on them; it is turned off here.
      const opts = ['--disable-heuristic', 'rpcrdma_infiniband'];
      const bad = readFields(file, '_ws.malformed || _ws.expert.severity >= "warning" && !tcp', ['frame.number', '_ws.expert.message'], opts);
      assert.deepEqual(bad, [], `malformed or warned: ${JSON.stringify(bad)}`);
      const clc = readFields(file, 'smc.clc_msg', ['smc.clc_msg', 'smc.proposal.eid'], opts);
      assert.deepEqual(clc.map((x) => x[0]), ['1', '2', '3'], JSON.stringify(clc));
      assert.equal(clc[0]![1], 'SOFTRDMA-SMCR'.padEnd(32, ' '));
      const cdc = readFields(file, 'smc.llc_msg == 254', ['smc.rmbe.ctrl.alert.token'], opts);
      assert.ok(cdc.length >= 4, `CDC messages seen: ${cdc.length}`);
      const writes = readFields(file, 'infiniband.bth.opcode == 6', ['frame.number'], opts);
      assert.ok(writes.length > 0, 'RDMA WRITE First packets');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  await t.test('closing with bytes unread in the RMB is an abort: the writer gets ECONNRESET', async () => {
    const c = client(7105, 'stream');
    assert.equal((await line(c, 'client', 'settled')).mode, 'SMCR');
    const d = await line(srv, 'server', 'destroying');
    assert.ok((d.unread as number) > 0);
    const err = await line(c, 'client', 'error', 5000);
    assert.equal(err.code, 'ECONNRESET');
    assert.equal(err.message, 'read ECONNRESET'); // node:net's; SMC's reason in smcCause
    assert.match(err.smcCause as string, /aborted/);
    await line(c, 'client', 'close', 5000);
  });

  await t.test('the RoCE path dies while TCP stays up: TEST_LINK goes unanswered and the writer gets an error', async () => {
    const cut = server(ADDR_A3, 'sink:7108');
    await cut.waitFor(/"listening"/);
    const c = client(7108, 'stream', 0, ADDR_A3);
    assert.equal((await line(c, 'client', 'settled')).mode, 'SMCR');
    await cut.waitUntil((out) => jsonLines(out).find((l) => l.server === 'sink' && (l.bytes as number) > 1 << 20), 'bytes at the sink');
    const cutAt = Date.now();
    cut.child.kill('SIGUSR2');
    await line(cut, 'roce', 'cut');
    // 500 ms without a packet from the peer, then 2 s for the TEST_LINK response. Both ends hear
    // nothing from the moment of the cut and test their links on the same clock: the client's
    // own TEST_LINK goes unanswered (ECONNABORTED), or the server's does first, and it resets the
    // TCP connection as it aborts (as Linux's smc_conn_kill, tcp_abort: ECONNRESET here).
    const err = await line(c, 'client', 'error', 10_000);
    if (err.code === 'ECONNRESET') assert.match(err.smcCause as string, /peer aborted/, JSON.stringify(err));
    else {
      assert.equal(err.code, 'ECONNABORTED', JSON.stringify(err));
      assert.match(err.message as string, /TEST_LINK/);
    }
    assert.ok((err.at as number) - cutAt < 5000, `error ${(err.at as number) - cutAt} ms after the cut`);
    cut.child.kill('SIGKILL');
  });

  await t.test('a peer killed mid-transfer: the writer gets an error within 2 s', async () => {
    const sink = server(ADDR_A2, 'sink:7103');
    await sink.waitFor(/"listening"/);
    const c = client(7103, 'stream', 0, ADDR_A2, ['--freed']);
    const settled = await line(c, 'client', 'settled');
    assert.equal(settled.mode, 'SMCR');
    // Bytes are moving (the sink reports what it received).
    await sink.waitUntil((out) => jsonLines(out).find((l) => l.server === 'sink' && (l.bytes as number) > 1 << 20), 'bytes at the sink');
    const killedAt = Date.now();
    sink.child.kill('SIGKILL');
    const err = await line(c, 'client', 'error', 5000);
    const elapsed = (err.at as number) - killedAt;
    assert.ok(elapsed < 2000, `error ${elapsed} ms after the kill`);
    assert.equal(err.code, 'ECONNRESET');
    await line(c, 'client', 'close', 5000);
    // Its link group went down: the QP destroyed and the buffers deregistered.
    const freed = await line(c, 'client', 'freed', 15_000);
    assert.equal(freed.lgrs, 0, JSON.stringify(freed));
    assert.deepEqual({ qps: freed.qps, keys: freed.keys }, freed.base, JSON.stringify(freed));
  });

  await t.test('a client killed mid-transfer: the server\'s socket ends as over TCP, and its link group is freed', async () => {
    const sink = server(ADDR_A2, 'sink:7109', ['--freed']);
    await sink.waitFor(/"listening"/);
    const c = client(7109, 'stream', 0, ADDR_A2);
    assert.equal((await line(c, 'client', 'settled')).mode, 'SMCR');
    await sink.waitUntil((out) => jsonLines(out).find((l) => l.server === 'sink' && (l.bytes as number) > 1 << 20), 'bytes at the sink');
    const killedAt = Date.now();
    c.child.kill('SIGKILL');
    // The writer's TCP connection ends with a FIN (it had nothing unread), with no closing CDC:
    // an orderly end for the reader, as TCP gives it when a writer dies (close.ts).
    const closed = await line(sink, 'server', 'close', 5000);
    assert.ok(Date.now() - killedAt < 2500, `closed ${Date.now() - killedAt} ms after the kill (as the test saw it)`);
    assert.equal(closed.hadError, false);
    // The group's peer is dead: TEST_LINK goes unanswered (or the linger ends) and it goes.
    const freed = await line(sink, 'server', 'freed', 25_000);
    assert.equal(freed.lgrs, 0, JSON.stringify(freed));
    assert.deepEqual({ qps: freed.qps, keys: freed.keys }, freed.base, JSON.stringify(freed));
    sink.child.kill('SIGKILL');
    await sink.exit(10_000).catch(() => undefined);
  });

  await t.test('SMC-R buffer memory is bounded: over SOFTRDMA_SMCR_MAX_MEM a server declines MEM and the connection stays TCP', async () => {
    // 1 MiB buffers: each connection takes an RMB and a send buffer of the client's RMB size
    // (2 MiB) at the server; a 5 MiB bound holds two. A peer names its RMB size, so this bound
    // is what stops a peer's CLC messages from making a process allocate without end.
    const srv = server(ADDR_A2, 'echo:7110', [], { SOFTRDMA_SMCR_MAX_MEM: String(5 << 20) });
    await srv.waitFor(/"listening"/);
    const c = client(7110, 'held', 4, ADDR_A2);
    const r = await line(c, 'client', 'held', 60_000);
    const modes = r.modes as Array<{ mode: string; echo: boolean; cause?: string }>;
    assert.deepEqual(modes.map((m) => [m.mode, m.echo]), [['SMCR', true], ['SMCR', true], ['TCP', true], ['TCP', true]], JSON.stringify(modes));
    for (const m of modes.slice(2)) assert.match(m.cause ?? '', /SMC_CLC_DECL_MEM|0x01010000/);
    assert.equal(await c.exit(10_000), 0, c.stdout + c.stderr);
    srv.child.kill('SIGKILL');
  });
});
