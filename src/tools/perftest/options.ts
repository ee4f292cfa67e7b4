// Command-line options of `softrdma perftest`, following perftest's names and defaults.

import { parseArgs } from 'node:util';
import { RXE_DEFAULT_LIMITS } from '../../index.js';
import { getoptArgs, intOption, MAX_TIMER_SEC, parseIntText, UsageError } from '../usage.js';

export const TESTS = ['write_bw', 'read_bw', 'send_bw', 'atomic_bw', 'write_lat', 'read_lat', 'send_lat', 'atomic_lat'] as const;
export type TestName = (typeof TESTS)[number];

/** perftest's atomicTypesStr: -A's values (FETCH_AND_ADD the default). */
export const ATOMIC_TYPES = ['CMP_AND_SWAP', 'FETCH_AND_ADD'] as const;
export type AtomicType = (typeof ATOMIC_TYPES)[number];

export const isAtomic = (t: string): boolean => t === 'atomic_bw' || t === 'atomic_lat';
/** The tests whose QPs issue RDMA READs or atomics (perftest's out_reads, the header's "Outstand reads"). */
export const readsOrAtomics = (t: string): boolean => t === 'read_bw' || t === 'read_lat' || isAtomic(t);

export interface PerftestOptions {
  test: TestName;
  /** The server's host for the out-of-band exchange; absent on the server. */
  host: string | undefined;
  ibDev: string;
  bind: string;
  udpPort: number;
  port: number;
  sizes: number[];
  iters: number;
  txDepth: number;
  mtu: number | undefined;
  json: boolean;
  /** --out_json / --out_json_file: also write the JSON objects to this file (perftest's perftest_out.json). */
  jsonFile: string | undefined;
  /** --output: print only this figure of each result, as perftest does. */
  output: 'bandwidth' | 'latency' | 'message_rate' | undefined;
  counters: boolean;
  timeoutMs: number;
  /** -D: run for this many seconds instead of -n iterations. */
  durationSec: number | undefined;
  /** -f: with -D, seconds left out at the start and at the end (perftest: duration/4 by default). */
  marginSec: number;
  /** -a: every size (perftest's RUN_ALL, which changes where the two sides sync). */
  all: boolean;
  /** -q: QPs (bw tests); each QP does -n iterations, as in perftest. */
  qps: number;
  /** -b: both sides send (bw tests). */
  bidir: boolean;
  /** --perftest-only: no softrdma extension even when the peer is softrdma (as a C peer would be). */
  perftestOnly: boolean;
  /** -x: the local GID index (an rxe device of softrdma has one GID: index 0). */
  gidIndex: number;
  /** --report_gbits: Gb/sec (10^9 bits) instead of MB/sec (2^20 bytes). */
  gbits: boolean;
  /** -R: connect the QPs through the rdma_cm and run the exchange over an rdma_cm connection, not TCP. */
  rdmaCm: boolean;
  /** Whether -s/-n were given (the server adopts the client's choice otherwise). */
  explicit: { size: boolean; iters: boolean };
  /** -N: no BW peak (perftest also leaves it out by itself: see peakNotMeasured). */
  noPeak: boolean;
  /** -Q: the CQ moderation asked for (perftest's req_cq_mod); undefined: perftest's default (see cqModeration). */
  cqMod?: number | undefined;
  /**
   * -o: the outstanding READs/atomics asked for (perftest's out_reads); undefined or 0: the
   * device's max_qp_rd_atom, as perftest's ctx_set_out_reads (see outReads()).
   */
  outReads?: number | undefined;
  /** -A: the atomic tests' operation (CMP_AND_SWAP compares with 0 and swaps in 0, as perftest). */
  atomicType: AtomicType;
}

/** perftest's MAX_QP_NUM (perftest_parameters.h): -q goes up to it. */
export const MAX_QP_NUM = 16384;
/** perftest's MAX_GID_IX: -x goes up to it ("Gid index should be between 0 and 64"). */
export const MAX_GID_IX = 64;

/** -o: read and atomic tests only, as perftest ("Setting Outstanding reads only available on READ verb"). */
function outReadsOpt(t: TestName, v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  if (!readsOrAtomics(t)) throw new UsageError('Setting Outstanding reads only available on READ verb');
  return intOption(label('outs'), v, 0, 0, 2 ** 31 - 1, 'c');
}

/**
 * perftest's out_reads after check_link_and_mtu: for READ and atomic tests ctx_set_out_reads
 * (-o, or the device's max_qp_rd_atom when -o is not given or not positive; above it, the max,
 * with perftest's message on stderr); 1 for the other tests. What the header's "Outstand reads"
 * and the address messages' OUT show, and what the QPs get (max_dest_rd_atomic: ours; max_rd_atomic: the peer's).
 */
export function outReads(o: Pick<PerftestOptions, 'test' | 'outReads'>, deviceMax: number, warn: (line: string) => void = () => {}): number {
  if (!readsOrAtomics(o.test)) return 1;
  const asked = o.outReads ?? 0;
  if (asked > deviceMax) {
    warn(` Number of outstanding reads is above max = ${deviceMax}\n Changing to that max value`);
    return deviceMax;
  }
  return asked <= 0 ? deviceMax : asked;
}

/** perftest's DEF_DURATION: the duration its -f is checked against when -D is not given. */
export const DEF_DURATION = 5;

/**
 * -n's default, perftest's (init_perftest_params): DEF_ITERS_WB (5000) for write_bw (its
 * tst == BW && verb == WRITE), DEF_ITERS (1000) for every other test. Both sides of a C pair
 * must run the same count, so a default that differs from perftest's makes the pair fail.
 */
export function defaultIters(test: TestName): number {
  return test === 'write_bw' ? 5000 : 1000;
}

/** perftest's DEFAULT_JSON_FILE_NAME, in the working directory. */
export const DEFAULT_JSON_FILE = 'perftest_out.json';

export const PERFTEST_USAGE = `usage: softrdma perftest <test> [options] [server-host]

tests: ${TESTS.join(', ')}
Run the server without a host, then the client with the server's host.

  -d, --ib-dev NAME    device name (default rxe0)
      --bind ADDR      local IP address the rxe device binds (default 127.0.0.1)
      --udp-port N     RoCEv2 UDP port, the same on both sides (default 4791; 0 on a
                       server picks a free one and prints it)
  -p, --port N         TCP port of the out-of-band exchange (default 18515)
  -s, --size N         message size in bytes, 1 to 2147483647 as perftest (default 65536 for bw,
                       2 for lat, 8 for atomic); -q x 2 areas of the size must fit in a 2 GiB
                       buffer; as perftest, K and M multiply by 1024 and 1048576 (-s 64K)
  -n, --iters N        iterations, 5 to 100000000 (default 5000 for write_bw, 1000 for the
                       other tests, as perftest)
  -a, --all            every size from 2 to 2^23 (not atomic tests, as perftest: their size is 8);
                       -s is then not used, as perftest
  -D, --duration SEC   run for SEC (whole) seconds instead of -n iterations (not with -a); as
                       perftest, results count only between the margins
  -f, --margin SEC     with -D: seconds left out at the start and the end (default SEC/4,
                       rounded down, as perftest); without -D accepted and unused, as perftest
  -x, --gid-index N    local GID index, 0 to 64 as perftest (default 0, the device's only GID:
                       its address)
  -i, --ib-port N      the device's port: 1 (an rxe device has one)
  -c, --connection T   the connection type: RC (the only one softrdma's perftest runs)
  -q, --qp N           number of QPs, each doing -n iterations (bw tests; default 1; 1 to 16384
                       as perftest, as many as the device's completion queue holds: see -t)
  -o, --outs N         read and atomic tests: outstanding READs/atomics per QP (default, or 0:
                       the device's max_qp_rd_atom, 128, as perftest; at most that)
  -A, --atomic_type T  atomic tests: CMP_AND_SWAP (compare with 0, swap in 0) or FETCH_AND_ADD
                       (add 1; the default), as perftest
  -b, --bidirectional  both sides send and the table shows the sum (bw tests)
  -N, --noPeak         do not measure the BW peak (0.00 in the table); perftest also leaves it
                       out with -D, with -n over 20000, and on send_bw's receiving side
  -F, --CPU-freq       accepted (no cpufreq warning to silence)
  -R, --rdma_cm        connect the QPs through the rdma_cm (softrdma/cm) as perftest's -R does:
                       the exchange runs as SENDs on an rdma_cm connection to the server's
                       address and -p port (no TCP); give the server's device address as host
      --report_gbits   report bandwidth in Gb/sec (10^9 bits) instead of MB/sec (2^20 bytes)
  -t, --tx-depth N     outstanding work requests in bw tests (default 128, at most -n as perftest;
                       -q x (-t + 16), + 528 in SEND tests, must fit the device's max_cqe ${RXE_DEFAULT_LIMITS.maxCqe})
  -Q, --cq-mod N       bw tests: signal one work request in N, 1 to 1024 (perftest's default 100,
                       at most -t; 1 for sizes over 8192 unless -a or -Q)
  -m, --mtu N          path MTU: 256, 512, 1024, 2048 or 4096 (default: the port's active MTU)
      --json           one JSON object per size on stdout instead of the table (perftest's
                       --out_json keys: MsgSize, n_iterations, BW_peak, BW_average, MsgRate;
                       t_min ... percentile_99.9; with -D t_avg, tps_average)
      --out_json       the table as usual, and the same JSON objects (one per size) written to
                       perftest_out.json in the working directory (perftest's file has its
                       own layout: one test_info/results document)
      --out_json_file=PATH  the file --out_json writes (alone it writes nothing, as perftest)
      --output=WHAT    print only one figure per size, as perftest: bandwidth or message_rate
                       (bw tests), latency (lat tests: t_avg); the rest goes to stderr
      --counters       print the device's and the QP's rxe counters at the end
      --timeout SEC    give up if the peer is silent this long (default 30); not while the
                       peer is running its test (as perftest, a server waits for the client's
                       run however long it is; a closed connection still ends the wait)
      --perftest-only  speak perftest's exchange only, as the C ib_* binaries do, even to a
                       softrdma peer: no data check; the server uses its own -s, -n, -D, -q, -b

Numbers may be written as perftest's strtol reads them: decimal, 0x hex, 0-prefixed octal.
As in perftest 4.5-0.17 (getopt_long): a long option may be abbreviated (--iter), and an option
given twice takes its last value. -h and -V (which prints perftest's "Version: 6.06") exit 1, as
perftest's mains return FAILURE after them.

The out-of-band exchange is perftest's (version 6.06: TCP, or with -R the rdma_cm), so
either side may be the C ib_write_bw, ib_read_bw, ib_send_bw, ib_atomic_bw, ib_write_lat,
ib_read_lat, ib_send_lat or ib_atomic_lat on a Linux rxe (give it -x with a RoCEv2 GID
index). Between two
softrdma sides the server takes the client's sizes, -n, -D, -f, -q and -b, and every bw run
checks the data that moved.`;


/** Receive queue depth for SENDs (perftest's rx_depth is 512 for bw). */
export const RX_DEPTH = 512;
/** Work requests each queue has beyond what the test keeps in flight. */
export const WR_SLACK = 16;
/** What we say in check_sys_data: a 4 KiB page as the cycle buffer, 64-byte cache lines. */
export const CYCLE_BUFFER = 4096;
export const CACHE_LINE = 64;
/** The largest size of -a (perftest's MAX_SIZE, 8 MiB). */
export const MAX_MSG = 1 << 23;
/** The largest -s (perftest's case 's': UINT_MAX / 2); what memory cannot hold, resourceProblem refuses. */
export const MAX_SIZE_OPT = 2 ** 31 - 1;
/** perftest's DEF_CQ_MOD: the bw tests signal one work request in this many. */
export const DEF_CQ_MOD = 100;
/** perftest's MSG_SIZE_CQ_MOD_LIMIT: above this size (without -a), every work request is signalled. */
export const MSG_SIZE_CQ_MOD_LIMIT = 8192;

/**
 * perftest's cq_mod (force_dependecies): DEF_CQ_MOD or -Q; 1 (DISABLED_CQ_MOD_VALUE) for a size
 * over MSG_SIZE_CQ_MOD_LIMIT unless -a or -Q; then at most the TX depth (txDepth()).
 */
export function cqModeration(o: Pick<PerftestOptions, 'txDepth' | 'iters' | 'durationSec'> & { all?: boolean; cqMod?: number | undefined }, size: number): number {
  let cq = o.cqMod ?? DEF_CQ_MOD;
  if (size > MSG_SIZE_CQ_MOD_LIMIT && !o.all && o.cqMod === undefined) cq = 1;
  return Math.max(1, Math.min(cq, txDepth(o)));
}

/** perftest's tx_depth after force_dependecies: -t, at most -n in a counted (-n) run. */
export function txDepth(o: Pick<PerftestOptions, 'txDepth' | 'iters' | 'durationSec'>): number {
  return o.durationSec ? o.txDepth : Math.min(o.txDepth, o.iters);
}

/** perftest's warning (force_dependecies) when -Q keeps moderation on for a size over 8192, or undefined. */
export function cqModWarning(o: Pick<PerftestOptions, 'test' | 'sizes' | 'all' | 'cqMod'>): string | undefined {
  if (o.all || o.cqMod === undefined || o.cqMod <= 1 || !(Math.max(...o.sizes) > MSG_SIZE_CQ_MOD_LIMIT)) return undefined;
  return `${'-'.repeat(87)}\nWarning: Large message requested and CQ moderation enabled\nWarning: It can lead to inaccurate results`;
}
/**
 * The largest buffer a run may have: crypto.randomBytes, which fills the bw tests' buffer,
 * takes no more (2 GiB - 1).
 */
export const MAX_BUFFER_BYTES = 2 ** 31 - 1;

/** Bytes per area (each QP has a send and a target area): the largest message and the cycle buffer, in cache lines. */
export function areaBytes(maxSize: number, cycle = CYCLE_BUFFER, line = CACHE_LINE): number {
  return Math.ceil(Math.max(maxSize, 8, cycle) / line) * line;
}

/** Whether a test posts receives (SEND tests: perftest makes a receive CQ for them alone). */
export const postsReceives = (test: string): boolean => test === 'send_bw' || test === 'send_lat';

/**
 * The completion queue a run creates: per QP its send queue (-t + 16), and its receive queue
 * (512 + 16) in a test that posts receives, as perftest's send and receive CQs
 * (create_reg_cqs: tx_depth x QPs, and rx_depth x QPs only where there are receives).
 */
export function cqEntries(qps: number, txDepth: number, receives: boolean): number {
  return qps * (txDepth + WR_SLACK + (receives ? RX_DEPTH + WR_SLACK : 0));
}

/**
 * What -q, -s (or -a) and -t ask of memory and of the device, checked before anything is
 * opened (and by a server on the options a softrdma client sends): the buffer of two areas
 * per QP, and the completion queue. Returns what is wrong, naming the options, or undefined.
 */
export function resourceProblem(x: { test: string; qps: number; sizes: readonly number[]; txDepth: number; all: boolean }, maxCqe: number = RXE_DEFAULT_LIMITS.maxCqe): string | undefined {
  const maxSize = Math.max(...x.sizes);
  const area = areaBytes(maxSize);
  const buf = 2 * x.qps * area;
  if (buf > MAX_BUFFER_BYTES) {
    const size = x.all ? `-a (sizes up to ${maxSize})` : `-s ${maxSize}`;
    return `-q ${x.qps} with ${size} needs a buffer of ${(buf / 2 ** 20).toFixed(0)} MiB (a send and a target area of ${area} bytes per QP), ` +
      `more than the ${Math.floor(MAX_BUFFER_BYTES / 2 ** 20)} MiB a buffer can have: lower -q or the size`;
  }
  const receives = postsReceives(x.test);
  const cqe = cqEntries(x.qps, x.txDepth, receives);
  if (cqe > maxCqe) {
    return `-q ${x.qps} with -t ${x.txDepth} needs a completion queue of ${cqe} entries (${x.qps} x (${x.txDepth} + ${WR_SLACK}${receives ? ` + ${RX_DEPTH} + ${WR_SLACK}` : ''})), ` +
      `more than the device's max_cqe ${maxCqe}: lower -q or -t`;
  }
  return undefined;
}

/** The connection types perftest's -c names (change_conn_type). */
const CONNECTION_TYPES = ['RC', 'UC', 'UD', 'XRC', 'DC', 'SRD'];

export const PERFTEST_OPTIONS = {
  'ib-dev': { type: 'string', short: 'd' },
  bind: { type: 'string' },
  'udp-port': { type: 'string' },
  port: { type: 'string', short: 'p' },
  size: { type: 'string', short: 's' },
  iters: { type: 'string', short: 'n' },
  all: { type: 'boolean', short: 'a' },
  'tx-depth': { type: 'string', short: 't' },
  mtu: { type: 'string', short: 'm' },
  json: { type: 'boolean' },
  out_json: { type: 'boolean' },
  out_json_file: { type: 'string' },
  output: { type: 'string' },
  counters: { type: 'boolean' },
  timeout: { type: 'string' },
  duration: { type: 'string', short: 'D' },
  margin: { type: 'string', short: 'f' },
  'gid-index': { type: 'string', short: 'x' },
  qp: { type: 'string', short: 'q' },
  bidirectional: { type: 'boolean', short: 'b' },
  'perftest-only': { type: 'boolean' },
  'CPU-freq': { type: 'boolean', short: 'F' },
  report_gbits: { type: 'boolean' },
  rdma_cm: { type: 'boolean', short: 'R' },
  noPeak: { type: 'boolean', short: 'N' },
  'cq-mod': { type: 'string', short: 'Q' },
  outs: { type: 'string', short: 'o' },
  'ib-port': { type: 'string', short: 'i' },
  connection: { type: 'string', short: 'c' },
  atomic_type: { type: 'string', short: 'A' },
} as const;
const OPTIONS = PERFTEST_OPTIONS;

function shortOf(name: string): string | undefined {
  return (OPTIONS as Record<string, { short?: string }>)[name]?.short;
}

/** How an option is named in messages: '-s/--size', or '--json' for one without a short form. */
function label(name: keyof typeof OPTIONS): string {
  const short = shortOf(name);
  return short ? `-${short}/--${name}` : `--${name}`;
}

/** An integer option, written as perftest's strtol(..., 0) takes it. */
function intOpt(name: keyof typeof OPTIONS, v: string | undefined, dflt: number, min: number, max: number): number {
  return intOption(label(name), v, dflt, min, max, 'c');
}

/** -s: an integer (strtol base 0), or with perftest's suffix K (x 1024) or M (x 1024 * 1024). */
function sizeOpt(v: string, max: number): number {
  const m = /^(.+?)([KM]?)$/.exec(v);
  const n = m ? parseIntText(m[1]!, 'c') * (m[2] === 'K' ? 1024 : m[2] === 'M' ? 1 << 20 : 1) : NaN;
  if (!(n >= 1 && n <= max)) throw new UsageError(`${label('size')} must be an integer from 1 to ${max} (decimal, 0x hex or 0-prefixed octal; K: x 1024, M: x 1048576), got '${v}'`);
  return n;
}

export function parsePerftestArgs(argv: string[]): PerftestOptions {
  // As perftest 4.5-0.17's getopt_long loop: an option given twice takes its last value
  // (perftest 23.04 and later refuse it: "Duplicated argument").
  const { values, positionals } = parseArgs({ args: getoptArgs(argv, OPTIONS), allowPositionals: true, options: OPTIONS });
  const [test, host, ...extra] = positionals;
  if (!test || !(TESTS as readonly string[]).includes(test)) throw new UsageError(`unknown or missing test '${test ?? ''}'`);
  if (extra.length) throw new UsageError(`unexpected argument '${extra[0]}'`);
  const t = test as TestName;
  const lat = t.endsWith('_lat');
  const atomic = isAtomic(t);
  let sizes: number[];
  if (atomic) {
    // force_dependecies: -a sets the size to MAX_SIZE, and an atomic test takes DEF_SIZE_ATOMIC (8) only.
    if (values.all || (values.size !== undefined && sizeOpt(values.size, MAX_SIZE_OPT) !== 8)) throw new UsageError('Message size cannot be changed for Atomic tests');
    sizes = [8];
  } else if (values.all) {
    // As perftest: -a runs every size, and -s is not used.
    if (values.size !== undefined) sizeOpt(values.size, MAX_SIZE_OPT);
    sizes = [];
    for (let s = 2; s <= MAX_MSG; s *= 2) sizes.push(s);
  } else {
    sizes = [values.size === undefined ? (lat ? 2 : 65536) : sizeOpt(values.size, MAX_SIZE_OPT)];
  }
  // perftest's latency loops use one QP and one direction; its parser refuses -q there, even -q 1.
  if (lat && values.qp !== undefined) throw new UsageError(`-q/--qp is for the bw tests, not ${t} (perftest: Multiple QPs only available on bw tests)`);
  // perftest's MIN_QP_NUM..MAX_QP_NUM; what the device cannot hold, resourceProblem refuses.
  const qps = intOpt('qp', values.qp, 1, 1, MAX_QP_NUM);
  if (lat && values.bidirectional) throw new UsageError(`-b (bidirectional) is for the bw tests, not ${t}`);
  if (lat && values.noPeak) throw new UsageError('NoPeak only valid for BW tests');
  let durationSec: number | undefined;
  if (values.duration !== undefined) {
    // perftest's -D and -f are whole seconds (CHECK_VALUE_POSITIVE / _NON_NEGATIVE on an int).
    durationSec = intOpt('duration', values.duration, 0, 1, 86400);
    if (values.all) throw new UsageError('--duration and --all exclude each other (perftest: duration mode does not run all sizes)');
  }
  let marginSec = durationSec !== undefined ? Math.floor(durationSec / 4) : 0;
  if (values.margin !== undefined) {
    const margin = intOpt('margin', values.margin, 0, 0, 86400);
    if (durationSec !== undefined) marginSec = margin;
    // perftest takes -f without -D and leaves it unused, but still checks it against its
    // default duration (DEF_DURATION, 5 s): "please check that DURATION > 2*MARGIN".
    else if (!(DEF_DURATION > 2 * margin)) throw new UsageError(`--margin ${margin} without --duration: perftest's default duration ${DEF_DURATION} must be more than twice the margin`);
  }
  if (durationSec !== undefined && !(durationSec > 2 * marginSec)) {
    throw new UsageError(`--duration ${durationSec} must be more than twice --margin ${marginSec}`);
  }
  const mtu = values.mtu === undefined ? undefined : intOpt('mtu', values.mtu, 0, 256, 4096);
  if (mtu !== undefined && ![256, 512, 1024, 2048, 4096].includes(mtu)) throw new UsageError(`--mtu must be 256, 512, 1024, 2048 or 4096, got '${values.mtu}'`);
  let output: PerftestOptions['output'];
  if (values.output !== undefined) {
    if (!['bandwidth', 'latency', 'message_rate'].includes(values.output)) throw new UsageError(`Invalid verbosity level output flag '${values.output}'. Please use bandwidth, latency, message_rate`);
    output = values.output as PerftestOptions['output'];
    if (!lat && output === 'latency') throw new UsageError('Output verbosity level for BW can be: bandwidth, message_rate');
    if (lat && output !== 'latency') throw new UsageError('Output verbosity level for LAT can be: latency');
    if (values.json) throw new UsageError('--output and --json exclude each other (one prints a number, the other JSON)');
  }
  // perftest's MIN_TX..MAX_TX (the device's 16384 work requests a QP hold more).
  const txDepth = intOpt('tx-depth', values['tx-depth'], 128, 1, 15000);
  // perftest's MIN_CQ_MOD..MAX_CQ_MOD; its latency tests take -Q and do not use it.
  const cqMod = values['cq-mod'] === undefined ? undefined : intOpt('cq-mod', values['cq-mod'], 0, 1, 1024);
  // -i: the rxe device has one port. -c: RC is what softrdma's perftest runs.
  if (values['ib-port'] !== undefined) intOpt('ib-port', values['ib-port'], 1, 1, 1);
  if (values.connection !== undefined && values.connection !== 'RC') {
    if (!CONNECTION_TYPES.includes(values.connection)) throw new UsageError(`-c/--connection must be one of ${CONNECTION_TYPES.join(', ')} (perftest's names), got '${values.connection}'`);
    throw new UsageError(`-c ${values.connection}: softrdma's perftest runs RC connections only`);
  }
  // perftest's case 'A': the type's name exactly, and only in an atomic test.
  let atomicType: AtomicType = 'FETCH_AND_ADD';
  if (values.atomic_type !== undefined) {
    if (!atomic) throw new UsageError(`-A/--atomic_type is for the atomic tests, not ${t} (perftest: You are not running the atomic_lat/bw test!)`);
    if (!(ATOMIC_TYPES as readonly string[]).includes(values.atomic_type)) throw new UsageError(`-A/--atomic_type must be CMP_AND_SWAP or FETCH_AND_ADD, got '${values.atomic_type}' (perftest: Invalid Atomic type!)`);
    atomicType = values.atomic_type as AtomicType;
  }
  const problem = resourceProblem({ test: t, qps, sizes, txDepth, all: !!values.all });
  if (problem) throw new UsageError(problem);
  return {
    test: t,
    host,
    ibDev: values['ib-dev'] ?? 'rxe0',
    bind: values.bind ?? '127.0.0.1',
    udpPort: intOpt('udp-port', values['udp-port'], 4791, 0, 65535),
    port: intOpt('port', values.port, 18515, 0, 65535),
    sizes,
    // perftest 4.5-0.17's MIN_ITER and MAX_ITER (perftest_parameters.h).
    iters: intOpt('iters', values.iters, defaultIters(t), 5, 1e8),
    txDepth,
    mtu,
    json: values.json ?? false,
    jsonFile: values.out_json ? (values.out_json_file ?? DEFAULT_JSON_FILE) : undefined,
    output,
    counters: values.counters ?? false,
    timeoutMs: intOpt('timeout', values.timeout, 30, 1, MAX_TIMER_SEC) * 1000,
    durationSec,
    marginSec,
    all: values.all ?? false,
    qps,
    bidir: values.bidirectional ?? false,
    perftestOnly: values['perftest-only'] ?? false,
    // perftest's MIN_GID_IX..MAX_GID_IX; the device has index 0 only (Session.open says so).
    gidIndex: intOpt('gid-index', values['gid-index'], 0, 0, MAX_GID_IX),
    outReads: outReadsOpt(t, values.outs),
    gbits: values.report_gbits ?? false,
    rdmaCm: values.rdma_cm ?? false,
    explicit: { size: values.size !== undefined || !!values.all, iters: values.iters !== undefined },
    noPeak: values.noPeak ?? false,
    cqMod,
    atomicType,
  };
}

/**
 * perftest's noPeak (perftest_parameters.c): a bw test measures no peak with -N, with -D, with
 * -n over 20000 and on send_bw's receiving server (not -b); it says so, and prints 0.00. Asked
 * once the options are final (a softrdma server adopts the client's).
 */
export function peakNotMeasured(o: Pick<PerftestOptions, 'test' | 'noPeak' | 'durationSec' | 'iters' | 'bidir'>, isServer: boolean): boolean {
  if (o.test.endsWith('_lat')) return false;
  return o.noPeak || !!o.durationSec || o.iters > 20000 || (o.test === 'send_bw' && isServer && !o.bidir);
}
