// The tools' option values, read by one parser (src/tools/usage.ts) the way each original
// reads them: perftest, pingpong and devinfo take C's strtol(..., 0) forms (decimal, 0x hex,
// 0-prefixed octal: '010' is 8), rping, cmatose and smc-chk decimal digits; none takes an empty
// value, spaces, 1e3, 0b101 or 0o7; every value is range-checked and the message names the
// option as written. As getopt, an option's value may start with '-' ('-C -1' is refused for
// its range, not as a missing value). perftest's -s takes K and M; an option given twice is
// takes its last value (perftest 4.5-0.17); --output and the resource checks of -q/-s/-t are parse
// errors. rping and cmatose take host names, as their getaddrinfo does.

import assert from 'node:assert/strict';
import { describe, it, test } from 'node:test';
import { devinfoCommand } from '../../src/cli/devinfo.js';
import { cmatose } from '../../src/tools/cmatose.js';
import { cqModeration, cqModWarning, parsePerftestArgs } from '../../src/tools/perftest/options.js';
import { rping } from '../../src/tools/rping.js';
import { smcChk } from '../../src/tools/smc-chk.js';
import * as usage from '../../src/tools/usage.js';
import { isUsageError, usageErrorLine } from '../../src/tools/usage.js';
import { run } from '../helpers/procs.js';

// The parser's own functions, looked up when a test runs (a build without one fails that test only).
const { getoptArgs, intOption, parseIntText } = usage;

/** The one line the CLI prints for a usage error thrown by `p`. */
async function usageLine(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (err) {
    assert.ok(isUsageError(err), `not a usage error: ${(err as Error).stack}`);
    return usageErrorLine(err as Error);
  }
  assert.fail('no usage error');
}

describe('the shared integer parser', () => {
  it("C's strtol base 0: decimal, 0x hex, 0-prefixed octal; decimal: digits", () => {
    for (const [text, c, dec] of [['0', 0, 0], ['42', 42, 42], ['0x1F', 31, NaN], ['010', 8, 10], ['0777', 511, 777]] as const) {
      assert.equal(parseIntText(text, 'c'), c, text);
      assert.ok(Object.is(parseIntText(text, 'decimal'), dec), text);
    }
    for (const bad of ['', ' ', ' 5 ', '5 ', '1e3', '0b101', '0o7', '08', '0x', '-1', '+1', '1.5', '1_000', 'Infinity']) {
      assert.ok(Number.isNaN(parseIntText(bad, 'c')), `c: '${bad}'`);
      if (bad !== '08') assert.ok(Number.isNaN(parseIntText(bad, 'decimal')), `decimal: '${bad}'`);
    }
  });

  it('names the option as given, with its range; the default when absent', () => {
    assert.equal(intOption('--udp-port', undefined, 4791, 0, 65535), 4791);
    assert.throws(() => intOption('--udp-port', '', 4791, 0, 65535), /: --udp-port must be an integer from 0 to 65535, got ''$/);
    assert.throws(() => intOption('-C', '-1', 0, 0, 10), /: -C must be an integer from 0 to 10, got '-1'$/);
  });

  it("getopt's way: the value of an option is the next argument, even when it starts with '-'", () => {
    const opts = { C: { type: 'string', short: 'C' }, v: { type: 'boolean', short: 'v' }, 'udp-port': { type: 'string' } } as const;
    assert.deepEqual(getoptArgs(['-C', '-1', '-v', '--udp-port', '-5', '-vC', '-2', '--', '-C', '-3'], opts),
      ['-C-1', '-v', '--udp-port=-5', '-vC-2', '--', '-C', '-3']);
    assert.deepEqual(getoptArgs(['-C', '', '-v', '-C5'], opts), ['-C', '', '-v', '-C5']);
  });
});

describe('perftest (strtol base 0, as perftest_parameters.c)', () => {
  const parse = (...a: string[]) => parsePerftestArgs(['write_bw', ...a]);

  it("refuses what Number() took: '' (which was port 0: a random port), spaces, 1e3, 0b, 0o, fractions", () => {
    for (const [args, re] of [
      [['-p', ''], /^-p\/--port must be an integer from 0 to 65535 .*got ''$/],
      [['--udp-port', ' '], /^--udp-port must be an integer/],
      [['-n', ' 5 '], /^-n\/--iters must be an integer/],
      [['-n', '1e3'], /^-n\/--iters must be/],
      [['-s', '0b101'], /^-s\/--size must be/],
      [['-q', '0o7'], /^-q\/--qp must be/],
      [['-D', '1.5'], /^-D\/--duration must be an integer from 1 to 86400/],
      [['-D', '4', '-f', ''], /^-f\/--margin must be/],
      [['-m', '1e3'], /^-m\/--mtu must be/],
      [['-x', '-1'], /^-x\/--gid-index must be an integer from 0 to 64 .*got '-1'$/],
    ] as const) {
      assert.throws(() => parse(...args), (e: Error) => re.test(e.message), args.join(' '));
    }
  });

  it("takes strtol's forms: -n 010 is 8, 0x10 is 16; -m 0x400 is 1024", () => {
    assert.equal(parse('-n', '010').iters, 8);
    assert.equal(parse('-n', '0x10').iters, 16);
    assert.equal(parse('-m', '0x400').mtu, 1024);
    assert.equal(parse('-D', '0x4').marginSec, 1);
  });

  it('-s takes K (x 1024) and M (x 1048576), as perftest: 64K, 8M, 0x10K; not k, K alone or beyond UINT_MAX / 2', () => {
    assert.deepEqual(parse('-s', '64K').sizes, [65536]);
    assert.deepEqual(parse('-s', '8M').sizes, [8388608]);
    assert.deepEqual(parse('-s', '0x10K').sizes, [16384]);
    for (const bad of ['1k', '2048M', 'K', '1KM', '1.5K', '2147483648']) assert.throws(() => parse('-s', bad), /-s\/--size must be an integer from 1 to 2147483647/, bad);
  });

  it("-s above perftest's MAX_SIZE (8 MiB, which bounds only -a): up to UINT_MAX / 2, what the buffer cannot hold refused naming -s", () => {
    assert.deepEqual(parse('-s', '9M').sizes, [9437184]);
    assert.deepEqual(parse('-s', '512M').sizes, [536870912]);
    assert.throws(() => parse('-s', '1024M'), /: -q 1 with -s 1073741824 needs a buffer of 2048 MiB .*lower -q or the size$/);
    assert.throws(() => parse('-s', '2147483647'), /: -q 1 with -s 2147483647 needs a buffer of 4096 MiB/);
    assert.equal(Math.max(...parse('-a').sizes), 8388608);
  });

  it("-Q/--cq-mod and the CQ moderation perftest uses (force_dependecies): 100, 1 over 8192 bytes unless -a or -Q, at most the TX depth", () => {
    const at = (size: number, ...args: string[]) => cqModeration(parse(...args), size);
    assert.equal(at(8192), 100);
    assert.equal(at(8193), 1);
    assert.equal(at(65536), 1); // perftest's default bw size: every WR signalled
    assert.equal(at(65536, '-a'), 100);
    assert.equal(at(65536, '-Q', '16'), 16);
    assert.equal(at(64, '-t', '32'), 32);
    assert.equal(at(64, '-n', '20'), 20); // tx_depth = min(-t, -n), and cq_mod at most that
    assert.equal(at(64, '-n', '20', '-D', '2'), 100); // -D: no -n to bound the TX depth
    assert.equal(parse('--cq-mod', '1024').cqMod, 1024);
    assert.throws(() => parse('-Q', '0'), /-Q\/--cq-mod must be an integer from 1 to 1024/);
    assert.throws(() => parse('-Q', '1025'), /-Q\/--cq-mod must be an integer from 1 to 1024/);
    assert.equal(parse().cqMod, undefined);
    assert.match(cqModWarning(parse('-Q', '4', '-s', '65536'))!, /\nWarning: Large message requested and CQ moderation enabled\nWarning: It can lead to inaccurate results$/);
    assert.equal(cqModWarning(parse('-s', '65536')), undefined);
    assert.equal(cqModWarning(parse('-Q', '4', '-s', '8192')), undefined);
  });

  it('an option given twice takes its last value, whatever the spelling (perftest 4.5-0.17\'s getopt_long loop; "Duplicated argument" is 23.04\'s)', () => {
    assert.deepEqual(parse('-s', '64', '--size', '128').sizes, [128]);
    assert.equal(parse('-n', '5', '-n', '6').iters, 6);
    assert.equal(parse('--report_gbits', '--report_gbits').gbits, true);
  });

  it('--output: bandwidth or message_rate for bw tests, latency for lat tests, as perftest', () => {
    assert.equal(parse('--output=bandwidth').output, 'bandwidth');
    assert.equal(parsePerftestArgs(['send_lat', '--output', 'latency']).output, 'latency');
    assert.throws(() => parse('--output=latency'), /Output verbosity level for BW can be: bandwidth, message_rate/);
    assert.throws(() => parsePerftestArgs(['send_lat', '--output=bandwidth']), /Output verbosity level for LAT can be: latency/);
    assert.throws(() => parse('--output=fast'), /Invalid verbosity level output flag/);
    assert.equal(parse('--out_json').jsonFile, 'perftest_out.json');
    assert.equal(parsePerftestArgs(['write_bw', '--out_json', '--out_json_file=/tmp/x.json']).jsonFile, '/tmp/x.json');
    assert.equal(parse('--out_json_file=/tmp/x.json').jsonFile, undefined, 'alone it only names the file (perftest_parameters.c)');
    assert.equal(parse().jsonFile, undefined);
  });

  it('-q with -s/-a and -t: a buffer or a CQ the run could not have is refused before anything starts, naming the options', () => {
    assert.throws(() => parse('-q', '200', '-s', '8388608'), /: -q 200 with -s 8388608 needs a buffer of 3200 MiB .*lower -q or the size$/);
    assert.throws(() => parse('-q', '256', '-a'), /: -q 256 with -a \(sizes up to 8388608\) needs a buffer of 4096 MiB/);
    assert.throws(() => parse('-q', '64', '-t', '4096'), /: -q 64 with -t 4096 needs a completion queue of 263168 entries \(64 x \(4096 \+ 16\)\), more than the device's max_cqe 32767: lower -q or -t$/);
    assert.equal(parse('-q', '64', '-t', '495').qps, 64); // 64 x (495 + 16) = 32704 fits
    // A SEND test's queue holds its receives too (perftest's receive CQ): 64 x (128 + 16 + 512 + 16) does not fit.
    assert.throws(() => parsePerftestArgs(['send_bw', '-q', '64']), /: -q 64 with -t 128 needs a completion queue of 43008 entries \(64 x \(128 \+ 16 \+ 512 \+ 16\)\)/);
    assert.equal(parsePerftestArgs(['send_bw', '-q', '48']).qps, 48); // 48 x 672 = 32256
  });
});

describe('pingpong, devinfo, rping, cmatose and smc-chk through the one parser', () => {
  it('devinfo -i: strtol forms, a port from 1; --udp-port refuses what Number() took', async () => {
    assert.match(await usageLine(devinfoCommand(['-i', ' 1'])), /^-i\/--ib-port must be an integer from 1 to 255 .*got ' 1'$/);
    assert.match(await usageLine(devinfoCommand(['-i', '0'])), /^-i\/--ib-port must be/);
    assert.match(await usageLine(devinfoCommand(['--udp-port', ''])), /^--udp-port must be an integer from 0 to 65535/);
  });

  it("rping: '-C -1' is refused for its range (not 'needs a value'), and '-C' alone names '-C', not '-C, --C'", async () => {
    assert.equal(await usageLine(rping(['-c', '-a', '127.0.0.1', '-C', '-1'])), "-C must be an integer from 0 to 2147483647, got '-1'");
    assert.equal(await usageLine(rping(['-s', '-a', '127.0.0.1', '-C'])), "option '-C' needs a value");
    assert.equal(await usageLine(rping(['-s', '-a', '127.0.0.1', '-p', '0x10'])), "-p must be an integer from 0 to 65535, got '0x10'");
  });

  it('cmatose: --udp-port and --timeout named as given; -c -1 refused for its range', async () => {
    assert.equal(await usageLine(cmatose(['-b', '127.0.0.2', '--udp-port', ''])), "--udp-port must be an integer from 0 to 65535, got ''");
    assert.equal(await usageLine(cmatose(['-b', '127.0.0.2', '--timeout', '0'])), "--timeout must be an integer from 1 to 2147483, got '0'");
    assert.equal(await usageLine(cmatose(['-b', '127.0.0.2', '-c', '-1'])), "-c must be an integer from 1 to 10000, got '-1'");
  });

  it('smc-chk: -t within what a timer takes (1e9 was a TimeoutOverflowWarning), decimal ports', async () => {
    assert.equal(await usageLine(smcChk(['-t', '1e9', '127.0.0.1', '1'])), "-t/--timeout must be an integer from 1 to 2147483, got '1e9'");
    assert.equal(await usageLine(smcChk(['-t', '2147484', '127.0.0.1', '1'])), "-t/--timeout must be an integer from 1 to 2147483, got '2147484'");
    assert.equal(await usageLine(smcChk(['127.0.0.1', ' 80'])), "the port must be an integer from 0 to 65535, got ' 80'");
    assert.equal(await usageLine(smcChk(['-C', '127.0.0.1', '-p', ''])), "-p/--port must be an integer from 0 to 65535, got ''");
  });

  it('rping and cmatose: a name that does not resolve is a usage error saying so', async () => {
    assert.match(await usageLine(cmatose(['-s', 'no-such-host.invalid'])), /^-s must be an IPv4 or IPv6 address or a host name that resolves, got 'no-such-host\.invalid' \(ENOTFOUND\)$/);
    assert.match(await usageLine(rping(['-c', '-a', 'no-such-host.invalid', '-I', '127.0.0.3'])), /^-a must be an IPv4 or IPv6 address or a host name that resolves to an IPv4 address/);
  });
});

test('perftest -p \'\' is a usage error (it listened on a random port), exit 1 (perftest\'s parser failure)', async () => {
  const p = run(['perftest', 'write_bw', '-p', '']);
  assert.equal(await p.exit(10_000), 1, p.stdout + p.stderr);
  assert.match(p.stderr, /^softrdma perftest: -p\/--port must be an integer from 0 to 65535/);
});

test('cmatose by host name: -s localhost reaches a server on 127.0.0.1 (resolved as cmatose\'s getaddrinfo does)', async () => {
  const srv = run(['cmatose', '-b', '127.0.0.1', '-p', '0', '--udp-port', '0', '-c', '2', '-C', '2']);
  const [, port, udp] = await srv.waitFor(/listening: port (\d+), RoCE UDP port (\d+)/);
  const cli = run(['cmatose', '-s', 'localhost', '-b', '127.0.0.3', '-p', port!, '--udp-port', udp!, '-c', '2', '-C', '2']);
  const [cc, sc] = await Promise.all([cli.exit(30_000), srv.exit(30_000)]);
  assert.equal(cc, 0, cli.stdout + cli.stderr);
  assert.equal(sc, 0, srv.stdout + srv.stderr);
  assert.match(cli.stdout, /^data transfers complete$/m);
});

test('rping by host name: -a localhost with -I 127.0.0.3 (the IPv4 answer, as -I is IPv4)', async () => {
  const srv = run(['rping', '-s', '-a', '127.0.0.1', '-p', '0', '--udp-port', '0']);
  const [, port, udp] = await srv.waitFor(/listening: port (\d+), RoCE UDP port (\d+)/);
  const cli = run(['rping', '-c', '-a', 'localhost', '-I', '127.0.0.3', '-p', port!, '--udp-port', udp!, '-C', '3', '-V', '-v']);
  const [cc, sc] = await Promise.all([cli.exit(30_000), srv.exit(30_000)]);
  assert.equal(cc, 0, cli.stdout + cli.stderr);
  assert.equal(sc, 0, srv.stdout + srv.stderr);
  assert.equal(cli.stdout.trim().split('\n').length, 3);
});
