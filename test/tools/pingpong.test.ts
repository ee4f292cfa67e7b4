// softrdma pingpong against what rdma-core's C tools do (libibverbs/examples/rc_pingpong.c,
// uc_pingpong.c, ud_pingpong.c): ud's real default size (1024: the code, not its --help) and
// its local address line (": GID"); uc; -c's page bytes, which are `i / page_size %
// sizeof(char)`, 0 on every page, checked against a client that does what rc_pingpong's does;
// ud's -c; the hint when the UDP port is taken; strtol-style numbers and refused values.

import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { once } from 'node:events';
import net from 'node:net';
import { test } from 'node:test';
import {
  Access, connectQp, createRxeDevice, initQp, QpType, SendFlags, WcStatus, wcStatusStr, WrOpcode,
} from '../../src/index.js';
import { decodeDest, encodeDest, MSG_BYTES } from '../../src/tools/pingpong.js';
import { run, type Proc } from '../helpers/procs.js';

async function server(args: string[]): Promise<{ srv: Proc; tcp: string; udp: string }> {
  const srv = run(['pingpong', ...args, '--bind', '127.0.0.2', '-p', '0', '--udp-port', '0']);
  const [, tcp, udp] = await srv.waitFor(/listening: TCP port (\d+), UDP port (\d+)/);
  return { srv, tcp: tcp!, udp: udp! };
}

async function pair(serverArgs: string[], clientArgs: string[] = serverArgs) {
  const { srv, tcp, udp } = await server(serverArgs);
  const cli = run(['pingpong', ...clientArgs, '--bind', '127.0.0.3', '-p', tcp, '--udp-port', udp, '127.0.0.1']);
  const [cc, sc] = await Promise.all([cli.exit(30_000), srv.exit(30_000)]);
  assert.equal(cc, 0, cli.stderr);
  assert.equal(sc, 0, srv.stderr);
  return { client: cli.stdout, server: srv.stdout };
}

test("pingpong ud: ud_pingpong.c's default size 1024 and its local line 'PSN 0x...: GID'", async () => {
  const { client, server: srvOut } = await pair(['ud', '-n', '50']);
  for (const out of [client, srvOut]) {
    // ud_pingpong.c: "  local address:  LID 0x%04x, QPN 0x%06x, PSN 0x%06x: GID %s"; the remote line has ", GID".
    assert.match(out, /^ {2}local address: {2}LID 0x0000, QPN 0x[0-9a-f]{6}, PSN 0x[0-9a-f]{6}: GID ::ffff:127\.0\.0\.[23]$/m);
    assert.match(out, /^ {2}remote address: LID 0x0000, QPN 0x[0-9a-f]{6}, PSN 0x[0-9a-f]{6}, GID ::ffff:127\.0\.0\.[23]$/m);
  }
  assert.match(client, new RegExp(`^${1024 * 50 * 2} bytes in [\\d.]+ seconds`, 'm'));
});

test('pingpong uc (ibv_uc_pingpong): a UC QP, rc_pingpong\'s lines, -c clean', async () => {
  const { client, server: srvOut } = await pair(['uc', '-n', '100', '-s', '8192', '-c']);
  for (const out of [client, srvOut]) {
    assert.match(out, /^ {2}local address: {2}LID 0x0000, QPN 0x[0-9a-f]{6}, PSN 0x[0-9a-f]{6}, GID ::ffff:127\.0\.0\.[23]$/m);
    assert.match(out, /^100 iters in [\d.]+ seconds = [\d.]+ usec\/iter$/m);
    assert.doesNotMatch(out, /invalid data/);
  }
  assert.match(client, new RegExp(`^${8192 * 100 * 2} bytes in`, 'm'));
});

/**
 * An RC client that does what rc_pingpong.c's client does with -c: a buffer of 0x7b with
 * `i / page_size % sizeof(char)` (0) at the start of each page, the exchange, then `iters`
 * ping-pongs of `size` bytes.
 */
async function cLikeRcClient(tcp: string, udp: string, size: number, iters: number): Promise<void> {
  const dev = await createRxeDevice({ address: '127.0.0.3', port: Number(udp) });
  const ctx = dev.open();
  const sock = net.connect(Number(tcp), '127.0.0.1');
  try {
    const pd = ctx.allocPd();
    const buf = Buffer.alloc(size, 0x7b);
    const mr = pd.regMr(buf, Access.LOCAL_WRITE);
    const cq = ctx.createCq(2 * iters + 2);
    const qp = pd.createQp({ qpType: QpType.RC, sendCq: cq, recvCq: cq, cap: { maxSendWr: 1, maxRecvWr: iters, maxSendSge: 1, maxRecvSge: 1 } });
    initQp(qp, { access: Access.LOCAL_WRITE });
    for (let i = 0; i < iters; i++) qp.postRecv({ wrId: 1, sgList: [mr.sge(0, size)] });
    const my = { lid: 0, qpn: qp.qpn, psn: 0x123456, gid: ctx.queryGid(1, 0) };
    await once(sock, 'connect');
    let got = Buffer.alloc(0);
    sock.on('data', (d: Buffer) => { got = Buffer.concat([got, d]); });
    sock.write(encodeDest(my));
    while (got.length < MSG_BYTES) await once(sock, 'data');
    const rem = decodeDest(got.subarray(0, MSG_BYTES));
    sock.end(Buffer.from('done\0', 'latin1'));
    connectQp(qp, rem, { psn: my.psn, mtu: 3, hopLimit: 1, maxRdAtomic: 1, maxDestRdAtomic: 1, minRnrTimer: 12, timeout: 14, retryCnt: 7, rnrRetry: 7 });
    for (let i = 0; i < size; i += 4096) buf[i] = 0; // i / page_size % sizeof(char)
    for (let n = 0; n < iters; n++) {
      qp.postSend({ wrId: 2, opcode: WrOpcode.SEND, sendFlags: SendFlags.SIGNALED, sgList: [mr.sge(0, size)] });
      for (let k = 0; k < 2; k++) {
        const wc = await cq.next({ signal: AbortSignal.timeout(10_000) });
        assert.equal(wc.status, WcStatus.SUCCESS, wcStatusStr(wc.status));
      }
    }
  } finally {
    sock.destroy();
    ctx.close();
    await dev.close();
  }
}

test("pingpong rc -c: the server checks what rc_pingpong.c's client writes (0 at every page start, -s 12288)", async () => {
  const { srv, tcp, udp } = await server(['rc', '-n', '20', '-s', '12288', '-c']);
  await cLikeRcClient(tcp, udp, 12288, 20);
  assert.equal(await srv.exit(30_000), 0, srv.stderr);
  assert.match(srv.stdout, /^20 iters in/m);
  assert.doesNotMatch(srv.stdout, /invalid data/);
});

test('pingpong ud -c: the server checks page 0 as ud_pingpong does (a client without -c fails it, one with -c passes)', async () => {
  const without = await pair(['ud', '-n', '20', '-c'], ['ud', '-n', '20']);
  assert.match(without.server, /^invalid data in page 0$/m);
  const withChk = await pair(['ud', '-n', '20', '-c']);
  assert.doesNotMatch(withChk.server, /invalid data/);
});

test('pingpong: a taken UDP port gets the hint for two processes on one host', async () => {
  const taken = dgram.createSocket('udp4');
  taken.bind(4791, '127.0.0.6');
  await once(taken, 'listening');
  try {
    const p = run(['pingpong', 'rc', '--bind', '127.0.0.6', '-p', '0']);
    assert.equal(await p.exit(15_000), 1);
    assert.match(p.stderr, /^softrdma pingpong: UDP port 4791 on 127\.0\.0\.6 is taken .*--bind 127\.0\.0\.2 for the server and --bind 127\.0\.0\.3 for the client/);
  } finally {
    taken.close();
  }
});

test("pingpong's numbers: strtol's forms (0x, octal) are taken; empty, spaced, 1e3 and negative values are refused", async () => {
  for (const [args, re] of [
    [['rc', '-p', ''], /-p\/--port must be an integer from 0 to 65535 .*got ''/],
    [['rc', '-n', ' 5 '], /-n\/--iters must be an integer from 1 to 2147483647 .*got ' 5 '/],
    [['ud', '-s', '1e3'], /-s\/--size must be an integer from 1 to 1073741824 .*got '1e3'/],
    [['rc', '-r', '-1'], /-r\/--rx-depth must be an integer from 1 to 16384 .*got '-1'/],
  ] as const) {
    const p = run(['pingpong', ...args]);
    assert.equal(await p.exit(10_000), 1, `${args.join(' ')}: ${p.stdout}${p.stderr}`); // usage(); return 1
    assert.match(p.stderr, re);
  }
  // 0x hex and a leading-0 octal, as rdma-core's strtol(optarg, NULL, 0): -s 0x200 is 512, -n 010 is 8.
  const { client } = await pair(['rc', '-s', '0x200', '-n', '010']);
  assert.match(client, new RegExp(`^${512 * 8 * 2} bytes in`, 'm'));
  assert.match(client, /^8 iters in/m);
});

test('pingpong ud -m: ud_pingpong.c has no -m ("p:d:i:s:r:n:l:eg:c"), so it is an unknown option, exit 1; rc and uc take it', async () => {
  for (const args of [['ud', '-m', '1024'], ['ud', '--mtu', '1024'], ['ud', '-em', '1024']]) {
    const p = run(['pingpong', ...args, '--bind', '127.0.0.61', '--udp-port', '0', '-p', '0']);
    assert.equal(await p.exit(10_000), 1, `${args.join(' ')}: ${p.stdout}${p.stderr}`);
    assert.match(p.stderr, /^softrdma pingpong: unknown option '(-m|--mtu)'/, args.join(' '));
    assert.equal(p.stdout, '', 'nothing ran');
  }
});

test('pingpong ud -s over the port MTU: pp_init_ctx\'s one line, no usage, exit 1', async () => {
  const p = run(['pingpong', 'ud', '-s', '5000', '--bind', '127.0.0.61', '--udp-port', '0', '-p', '0']);
  assert.equal(await p.exit(10_000), 1, p.stdout + p.stderr);
  assert.match(p.stderr, /^softrdma pingpong: Requested size larger than port MTU \(\d+\)\n$/);
  assert.doesNotMatch(p.stderr, /usage:/);
});

test('pingpong --bind that is no address: a usage error before any device is made, exit 1, promptly', async () => {
  const t0 = Date.now();
  const p = run(['pingpong', 'rc', '--bind=', '-p', '0']);
  assert.equal(await p.exit(10_000), 1, p.stdout + p.stderr);
  assert.match(p.stderr, /^softrdma pingpong: --bind must be an IPv4 or IPv6 address or a host name, got ''\n/);
  assert.ok(Date.now() - t0 < 10_000);
});

test('pingpong srq (ibv_srq_pingpong): -q RC QPs on one SRQ, a local and a remote line per QP, the run counted across them', async () => {
  const { client, server: srvOut } = await pair(['srq', '-q', '4', '-n', '300', '-s', '64']);
  for (const out of [client, srvOut]) {
    const local = out.match(/^ {2}local address: {2}LID 0x0000, QPN 0x([0-9a-f]{6}), PSN 0x[0-9a-f]{6}, GID ::ffff:127\.0\.0\.[23]$/gm) ?? [];
    const remote = out.match(/^ {2}remote address: LID 0x0000, QPN 0x([0-9a-f]{6}), PSN 0x[0-9a-f]{6}, GID ::ffff:127\.0\.0\.[23]$/gm) ?? [];
    assert.equal(local.length, 4, out);
    assert.equal(remote.length, 4, out);
    assert.equal(new Set(local).size, 4, 'four QPs of their own');
    assert.match(out, /^300 iters in [\d.]+ seconds = [\d.]+ usec\/iter$/m);
    assert.match(out, new RegExp(`^${64 * 300 * 2} bytes in`, 'm'));
  }
  // What the client's QPs are, the server's remote lines name (line i for QP i).
  const qpns = (out: string, side: string) => [...out.matchAll(new RegExp(`^ {2}${side} address: +LID 0x0000, QPN 0x([0-9a-f]{6})`, 'gm'))].map((m) => m[1]);
  assert.deepEqual(qpns(srvOut, 'remote'), qpns(client, 'local'));
  assert.deepEqual(qpns(client, 'remote'), qpns(srvOut, 'local'));
});

test("pingpong srq's exchange is srq_pingpong.c's: 256 address lines each way whatever -q is (zeros past it), then the client's done", async () => {
  const { srv, tcp } = await server(['srq', '-q', '2', '-n', '5']);
  const sock = net.connect(Number(tcp), '127.0.0.1');
  try {
    await once(sock, 'connect');
    let got = Buffer.alloc(0);
    sock.on('data', (d: Buffer) => { got = Buffer.concat([got, d]); });
    // A C client's 256 lines (its QPs are never connected: the server only has to answer).
    const v4Gid = Uint8Array.from([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 127, 0, 0, 3]);
    const lines = Array.from({ length: 256 }, (_, i) => encodeDest({ lid: 0, qpn: i < 2 ? 0x100 + i : 0, psn: i < 2 ? 7 : 0, gid: i < 2 ? v4Gid : new Uint8Array(16) }));
    sock.write(Buffer.concat(lines));
    const deadline = Date.now() + 10_000;
    while (got.length < 256 * MSG_BYTES && Date.now() < deadline) await Promise.race([once(sock, 'data'), new Promise((r) => setTimeout(r, 200))]);
    assert.equal(got.length, 256 * MSG_BYTES, 'the server answers with exactly 256 lines');
    const answer = Array.from({ length: 256 }, (_, i) => decodeDest(got.subarray(i * MSG_BYTES, (i + 1) * MSG_BYTES)));
    assert.ok(answer[0]!.qpn > 0 && answer[1]!.qpn > 0 && answer[0]!.qpn !== answer[1]!.qpn, 'two QPs of its own');
    for (const d of answer.slice(2)) assert.deepEqual(d, { lid: 0, qpn: 0, psn: 0, gid: Buffer.alloc(16) });
    assert.equal(got.subarray(2 * MSG_BYTES, 3 * MSG_BYTES).toString('latin1'), '0000:000000:000000:00000000000000000000000000000000\0');
  } finally {
    sock.destroy();
    srv.child.kill();
    await srv.exit(10_000).catch(() => {});
  }
});

test("pingpong srq's options: -q only for srq, -c not for srq, -q up to 256, rx_depth at least -q (srq_pingpong.c's message)", async () => {
  for (const [args, code, re] of [
    [['rc', '-q', '4'], 1, /^softrdma pingpong: unknown option '-q' \(only srq has several QPs\)/],
    [['srq', '-c'], 1, /^softrdma pingpong: unknown option '-c' \(srq_pingpong has no data check\)/],
    [['srq', '-q', '257'], 1, /-q\/--num-qp must be an integer from 1 to 256/],
    [['srq', '-q', '0'], 1, /-q\/--num-qp must be an integer from 1 to 256/],
    [['srq', '-q', '32', '-r', '16'], 1, /^softrdma pingpong: rx_depth 16 is too small for 32 QPs -- must have at least one receive per QP\.$/m],
  ] as const) {
    const p = run(['pingpong', ...args, '--bind', '127.0.0.61', '--udp-port', '0', '-p', '0']);
    assert.equal(await p.exit(10_000), code, `${args.join(' ')}: ${p.stdout}${p.stderr}`);
    assert.match(p.stderr, re, args.join(' '));
    assert.equal(p.stdout, '', 'nothing ran');
  }
});

test('pingpong srq with fewer QPs on the client than on the server: the server connects what the client has and the run completes, as with ibv_srq_pingpong; the other way round the client says why it stops', async () => {
  const { client, server: srvOut } = await pair(['srq', '-q', '8', '-n', '100', '-s', '64'], ['srq', '-q', '2', '-n', '100', '-s', '64']);
  assert.match(client, /^100 iters in/m);
  assert.match(srvOut, /^100 iters in/m);
  // The server prints a remote line for each of its QPs, the spare ones zero.
  assert.equal(srvOut.match(/^ {2}remote address: LID 0x0000, QPN 0x000000, PSN 0x000000, GID ::$/gm)?.length, 6);
  const { srv, tcp, udp } = await server(['srq', '-q', '2', '-n', '100']);
  const cli = run(['pingpong', 'srq', '-q', '4', '-n', '100', '--bind', '127.0.0.3', '-p', tcp, '--udp-port', udp, '127.0.0.1']);
  assert.equal(await cli.exit(30_000), 1);
  assert.match(cli.stderr, /Couldn't post send: QP\[2\] has no peer \(the server runs 2 QPs; give both sides the same -q\)/);
  srv.child.kill();
  await srv.exit(10_000).catch(() => {});
});
