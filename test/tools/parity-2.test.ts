// The tools against their originals, second round: what a user who knows perftest 4.5-0.17
// (Debian 12's, the version docs/tools.md names), rdma-core's devinfo.c, rping.c and cmatose.c
// and smc-tools 1.8.5 sees differently. Each test below failed before its fix:
//  1. perftest -V / -h exit 1 (its mains return FAILURE after VERSION_EXIT / HELP_EXIT);
//  2. read_lat's server prints the closing dashed line once (read_lat.c), not twice;
//  3. read and atomic tests use the device's max_qp_rd_atom as perftest's ctx_set_out_reads
//     (header and OUT), -o overrides it;
//  4. no "WARNING: BW peak" line and no "Duplicated argument" (both from later perftests);
//  5. long options by any unambiguous prefix, as getopt_long; an ambiguous one named so;
//  6. smcss -av: the version (smcss's getopt "aldDRhvW");
//  7. devinfo -l acts when it is read: -l -x and -l -i 0 list (devinfo.c's case 'l');
//  8. rping's server ends with "wait for RDMA_READ_ADV state 10" (rping_test_server);
//  9. rping's usage says -a is required for the server;
// 10. linkgroup -vers, -he (smc.c's contains() prefixes);
// 11. perftest's ranges: -q up to MAX_QP_NUM, -x up to MAX_GID_IX, atomic_bw -a refused;
// 12. cmatose -P tcp, -f name|ip.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import { describe, it, test } from 'node:test';
import { parsePerftestArgs } from '../../src/tools/perftest/options.js';
import * as usage from '../../src/tools/usage.js';
import { run } from '../helpers/procs.js';
import { testRuntimeDir } from '../helpers/runtime-dir.js';

testRuntimeDir('parity-2');
const LINE = '-'.repeat(87);
const version = (JSON.parse(fs.readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string }).version;

async function out(args: string[], ms = 20_000): Promise<{ code: number; stdout: string; stderr: string }> {
  const p = run(args);
  const code = await p.exit(ms);
  return { code, stdout: p.stdout, stderr: p.stderr };
}

/** A perftest server on 127.0.0.2 and a client on 127.0.0.3, both to their end. */
async function perftestPair(name: string, client: string[], server: string[] = []) {
  const srv = run(['perftest', name, '--bind', '127.0.0.2', '-p', '0', '--udp-port', '0', ...server]);
  const [, port, udp] = await srv.waitFor(/out-of-band TCP port (\d+), RoCE UDP port (\d+)/);
  const cli = run(['perftest', name, '--bind', '127.0.0.3', '-p', port!, '--udp-port', udp!, ...client, '127.0.0.1']);
  const [cc, sc] = await Promise.all([cli.exit(), srv.exit()]);
  assert.equal(cc, 0, cli.stdout + cli.stderr);
  assert.equal(sc, 0, srv.stdout + srv.stderr);
  return { client: cli, server: srv };
}

describe('1. perftest -V and -h exit 1, as perftest', () => {
  for (const a of ['-V', '--version', '-h', '--help']) {
    it(`perftest write_bw ${a}`, async () => {
      const r = await out(['perftest', 'write_bw', a]);
      assert.equal(r.code, 1, r.stderr);
      // perftest 4.5-0.17 prints the version of its exchange (VERSION_EXIT: "Version: %s").
      if (a.includes('V') || a.includes('version')) assert.equal(r.stdout, 'Version: 6.06\n');
      else assert.match(r.stdout, /^usage: softrdma perftest /);
    });
  }
});

test('2. read_lat: the server prints the closing dashed line once after the address lines', async () => {
  const { server, client } = await perftestPair('read_lat', ['-n', '100'], ['-n', '100']);
  assert.match(server.stdout, /\n remote address: [^\n]*\n GID: [\d:]+\n-{87}\n$/);
  assert.ok(!server.stdout.includes(`${LINE}\n${LINE}`), server.stdout);
  // The client: the block's line, the table, one closing line.
  assert.match(client.stdout, /\n GID: [\d:]+\n-{87}\n #bytes #iterations[^\n]*\n[^\n]+\n-{87}\n$/);
});

describe("3. read and atomic tests: out_reads is the device's max_qp_rd_atom (perftest's ctx_set_out_reads), -o overrides", () => {
  it('read_bw: Outstand reads and OUT are what devinfo -v calls max_qp_rd_atom', async () => {
    const dev = await out(['devinfo', '-v', '--bind', '127.0.0.4']);
    const max = Number(/\tmax_qp_rd_atom:\t+(\d+)\n/.exec(dev.stdout)![1]);
    assert.equal(max, 128); // Linux rxe's RXE_MAX_QP_RD_ATOM
    const { client, server } = await perftestPair('read_bw', ['-n', '50', '-s', '4096']);
    for (const p of [client, server]) {
      assert.match(p.stdout, new RegExp(`^ Outstand reads  : ${max}$`, 'm'));
      assert.match(p.stdout, new RegExp(`^ local address: .* OUT 0x${max.toString(16).padStart(2, '0')} `, 'm'));
      assert.doesNotMatch(p.stdout, /Outstand reads {2}: 16$/m);
    }
  });

  it('atomic_bw -o 4 on the client: its header says 4 and its address message carries 4', async () => {
    const { client, server } = await perftestPair('atomic_bw', ['-n', '50', '-o', '4']);
    assert.match(client.stdout, /^ Outstand reads {2}: 4$/m);
    assert.match(server.stdout, /^ Outstand reads {2}: 128$/m);
  });

  it('-o is for read and atomic tests only; above the device max it is capped, as perftest', () => {
    assert.throws(() => parsePerftestArgs(['write_bw', '-o', '4']), /Setting Outstanding reads only available on READ verb/);
    assert.equal(parsePerftestArgs(['read_lat', '--outs', '8']).outReads, 8);
  });
});

describe('4. perftest 4.5-0.17: no BW peak warning, no "Duplicated argument"', () => {
  it("send_bw's receiving server measures no peak, silently", async () => {
    const { server } = await perftestPair('send_bw', ['-n', '50', '-s', '4096']);
    assert.doesNotMatch(server.stdout + server.stderr, /WARNING: BW peak/);
    assert.match(server.stdout, /^ 4096\s+50\s+0\.00\s+\d/m);
  });

  it('an option given twice takes its last value, as getopt_long', () => {
    assert.deepEqual(parsePerftestArgs(['write_bw', '-s', '64', '--size', '128']).sizes, [128]);
    assert.equal(parsePerftestArgs(['write_bw', '-n', '5', '-n', '7']).iters, 7);
    assert.equal(parsePerftestArgs(['write_bw', '--report_gbits', '--report_gbits']).gbits, true);
  });

  it('-i 1 and -c RC are taken (the values a script passes explicitly); -a runs every size whatever -s says, as perftest', () => {
    assert.equal(parsePerftestArgs(['write_bw', '-i', '1', '-c', 'RC', '--ib-port=1', '--connection=RC']).test, 'write_bw');
    const all = parsePerftestArgs(['write_bw', '-a', '-s', '4096']);
    assert.equal(all.sizes.length, 23);
    assert.equal(all.sizes[0], 2);
    assert.throws(() => parsePerftestArgs(['write_bw', '-a', '-s', '0']), /-s\/--size must be an integer/);
  });
});

describe('5. long options by any unambiguous prefix (getopt_long)', () => {
  it('the rule: exact wins, a unique prefix expands, several are ambiguous', () => {
    const opts = { out_json: { type: 'boolean' }, out_json_file: { type: 'string' }, output: { type: 'string' }, iters: { type: 'string', short: 'n' } } as const;
    assert.equal(usage.longOptionName('out_json', opts), 'out_json');
    assert.equal(usage.longOptionName('it', opts), 'iters');
    assert.equal(usage.longOptionName('vers', opts), 'version');
    assert.equal(usage.longOptionName('bogus', opts), undefined);
    assert.throws(() => usage.longOptionName('out', opts), /^Error: option '--out' is ambiguous; possibilities: '--out_json' '--out_json_file' '--output'$/);
    assert.deepEqual(usage.getoptArgs(['--it', '5', '--out_json_f', '-x'], opts), ['--iters=5', '--out_json_file=-x']);
  });

  it('perftest --iter, pingpong --it, devinfo --verb, smcss --listen/--wid/--deb/--vers', async () => {
    assert.equal(parsePerftestArgs(['write_bw', '--iter', '7']).iters, 7);
    const p = await out(['perftest', 'write_bw', '--iter', '2']);
    assert.equal(p.code, 1);
    assert.match(p.stderr, /^softrdma perftest: -n\/--iters must be an integer from 5 /);
    const pp = await out(['pingpong', 'rc', '--it', '0']);
    assert.equal(pp.code, 1);
    assert.match(pp.stderr, /^softrdma pingpong: -n\/--iters must be an integer/);
    const d = await out(['devinfo', '--verb', '--bind', '127.0.0.4']);
    assert.equal(d.code, 0, d.stderr);
    assert.match(d.stdout, /\tmax_qp_rd_atom:/);
    for (const a of ['--listen', '--wid', '--deb']) {
      const r = await out(['smcss', a]);
      assert.equal(r.code, 0, `${a}: ${r.stderr}`);
      assert.match(r.stdout, /^State +UID +Inode/, a);
    }
    assert.equal((await out(['smcss', '--vers'])).stdout, `smcss utility, softrdma-${version}\n`);
    assert.equal((await out(['perftest', 'write_bw', '--he'])).code, 1);
  });

  it("an ambiguous prefix: getopt's message, the command's usage exit status", async () => {
    const r = await out(['smcss', '--ver']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /^softrdma smcss: option '--ver' is ambiguous; possibilities: '--verbose' '--version'\n/);
    // softrdma's added --version comes after the original's options: devinfo's --ver is
    // --verbose, as devinfo.c reads it.
    const d = await out(['devinfo', '--ver', '--bind', '127.0.0.2']);
    assert.equal(d.code, 0, d.stderr);
    assert.match(d.stdout, /\tmax_qp_wr:/);
  });
});

test('6. smcss -av: the version (v in a group, as getopt reads "aldDRhvW"), exit 0', async () => {
  for (const a of ['-av', '-dv', '-aV']) {
    const r = await out(['smcss', a]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, `smcss utility, softrdma-${version}\n`, a);
  }
});

test('7. devinfo -l lists as soon as it is read: -l -x and -l -i 0 list; -x -l and -i 0 -l do not', async () => {
  for (const args of [['-l', '-x'], ['-l', '-i', '0'], ['-vl', '--bogus']]) {
    const r = await out(['devinfo', ...args, '--bind', '127.0.0.4']);
    assert.equal(r.code, 0, `${args.join(' ')}: ${r.stderr}`);
    assert.equal(r.stdout, '1 HCA found:\n\trxe0\n\n');
  }
  assert.equal((await out(['devinfo', '-x', '-l'])).code, 255);
  assert.equal((await out(['devinfo', '-i', '0', '-l'])).code, 1);
});

test('8. rping: the server ends with "wait for RDMA_READ_ADV state 10" on stderr and exit 0', async () => {
  const srv = run(['rping', '-s', '-a', '127.0.0.2', '-p', '0', '--udp-port', '0']);
  const [, port, udp] = await srv.waitFor(/listening: port (\d+), RoCE UDP port (\d+)/);
  const cli = run(['rping', '-c', '-a', '127.0.0.2', '-I', '127.0.0.3', '-p', port!, '--udp-port', udp!, '-C', '3', '-V']);
  const [cc, sc] = await Promise.all([cli.exit(30_000), srv.exit(30_000)]);
  assert.equal(cc, 0, cli.stderr);
  assert.equal(sc, 0, srv.stderr);
  assert.match(srv.stderr, /^server DISCONNECT EVENT\.\.\.\nwait for RDMA_READ_ADV state 10\n$/m);
  assert.equal(srv.stdout, ''); // without -v
});

test('9. rping: the usage says the server needs -a', async () => {
  const h = await out(['rping', '--help']);
  assert.match(h.stdout, /^usage: softrdma rping -s \[-vVd\] \[-S size\] \[-C count\] -a addr \[-p port\] \[-P\]$/m);
  const top = await out(['--help']);
  assert.match(top.stdout, /^ {2}rping -s\|-c -a ADDR \[options\] /m);
  const s = await out(['rping', '-s']);
  assert.equal(s.code, 22);
  assert.match(s.stderr, /^usage: softrdma rping -s .* -a addr /m);
});

test('10. linkgroup: -vers, --vers, -he, --he (smc.c matches -version and -help by prefix)', async () => {
  for (const a of ['-vers', '--vers', '-version']) {
    const r = await out(['linkgroup', a]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, `softrdma linkgroup ${version}\n`, a);
  }
  for (const a of ['-he', '--he', '-help']) {
    const r = await out(['linkgroup', a]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^usage: softrdma linkgroup /, a);
  }
  // -a and -d come before -v and -h in smc.c's order; an unknown option is still refused.
  assert.equal((await out(['linkgroup', '-vx'])).code, 255);
});

describe("11. perftest's ranges", () => {
  it('-q up to MAX_QP_NUM (16384), as many as the completion queue holds', async () => {
    // 227 x (128 + 16) = 32688 entries fit rxe's max_cqe of 32767; 228 do not.
    assert.equal(parsePerftestArgs(['write_bw', '-q', '227']).qps, 227);
    assert.throws(() => parsePerftestArgs(['write_bw', '-q', '228']), /-q 228 with -t 128 needs a completion queue of 32832 entries/);
    assert.throws(() => parsePerftestArgs(['write_bw', '-q', '16385']), /-q\/--qp must be an integer from 1 to 16384/);
    assert.throws(() => parsePerftestArgs(['write_bw', '-q', '16384', '-s', '64']), /needs a completion queue of .* more than the device's max_cqe 32767/);
  });

  it('-x 0 to 64 (MAX_GID_IX)', () => {
    assert.equal(parsePerftestArgs(['write_bw', '-x', '64']).gidIndex, 64);
    assert.throws(() => parsePerftestArgs(['write_bw', '-x', '65']), /-x\/--gid-index must be an integer from 0 to 64/);
  });

  it('atomic_bw -a: "Message size cannot be changed for Atomic tests", exit 1', async () => {
    const r = await out(['perftest', 'atomic_bw', '-a']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /^softrdma perftest: Message size cannot be changed for Atomic tests$/m);
    assert.throws(() => parsePerftestArgs(['atomic_bw', '-s', '16']), /Message size cannot be changed for Atomic tests/);
    assert.deepEqual(parsePerftestArgs(['atomic_bw', '-s', '8']).sizes, [8]);
  });

  it("atomic_lat takes atomic_bw's size rule; -A names the operation, only in an atomic test", () => {
    assert.throws(() => parsePerftestArgs(['atomic_lat', '-s', '16']), /Message size cannot be changed for Atomic tests/);
    assert.throws(() => parsePerftestArgs(['atomic_lat', '-a']), /Message size cannot be changed for Atomic tests/);
    assert.deepEqual(parsePerftestArgs(['atomic_lat']).sizes, [8]);
    assert.equal(parsePerftestArgs(['atomic_lat']).atomicType, 'FETCH_AND_ADD');
    assert.equal(parsePerftestArgs(['atomic_bw', '-A', 'CMP_AND_SWAP']).atomicType, 'CMP_AND_SWAP');
    assert.equal(parsePerftestArgs(['atomic_lat', '--atomic_type=CMP_AND_SWAP']).atomicType, 'CMP_AND_SWAP');
    assert.throws(() => parsePerftestArgs(['atomic_lat', '-A', 'cmp_and_swap']), /-A\/--atomic_type must be CMP_AND_SWAP or FETCH_AND_ADD, got 'cmp_and_swap'/);
    assert.throws(() => parsePerftestArgs(['read_lat', '-A', 'FETCH_AND_ADD']), /-A\/--atomic_type is for the atomic tests, not read_lat/);
    assert.throws(() => parsePerftestArgs(['atomic_lat', '-q', '2']), /-q\/--qp is for the bw tests/);
    assert.equal(parsePerftestArgs(['atomic_lat', '-o', '4']).outReads, 4);
  });
});

describe('12. cmatose -P tcp and -f name|ip', () => {
  it('a run with -P tcp on both sides, -f name on the server and -f ip on the client', async () => {
    const srv = run(['cmatose', '-b', '127.0.0.2', '-p', '0', '--udp-port', '0', '-P', 'tcp', '-f', 'name', '-c', '2', '-C', '2']);
    const [, port, udp] = await srv.waitFor(/listening: port (\d+), RoCE UDP port (\d+)/);
    const cli = run(['cmatose', '-s', '127.0.0.2', '-b', '127.0.0.3', '-p', port!, '--udp-port', udp!, '-P', 'TCP', '-f', 'ip', '-c', '2', '-C', '2']);
    const [cc, sc] = await Promise.all([cli.exit(30_000), srv.exit(30_000)]);
    assert.equal(cc, 0, cli.stdout + cli.stderr);
    assert.equal(sc, 0, srv.stdout + srv.stderr);
    assert.match(cli.stdout, /^data transfers complete$/m);
  });

  it('-P ib, -f gid and a host name with -f ip are refused; an unknown word is the original\'s warning', async () => {
    for (const [args, re] of [[['-P', 'ib'], /-P ib: softrdma\/cm has no RDMA_PS_IB port space/], [['-f', 'gid'], /-f gid: softrdma\/cm has no AF_IB/],
      [['-f', 'ip', '-s', 'localhost'], /-s must be a numeric IPv4 or IPv6 address with -f ip, got 'localhost'/], [['--ud', '-P', 'ipoib'], /no IPoIB port space/]] as const) {
      const r = await out(['cmatose', ...args]);
      assert.equal(r.code, 1, r.stderr);
      assert.match(r.stderr, re);
    }
    // A server without -b: the usage error comes after the warning, as cmatose warns while parsing.
    const w = await out(['cmatose', '-P', 'sdp']);
    assert.match(w.stderr, /^Warning: unknown port space format\n/);
  });
});
