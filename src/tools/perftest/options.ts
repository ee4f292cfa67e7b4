// Command-line options of `softrdma perftest`, following perftest's names and defaults.

import { parseArgs } from 'node:util';
import { UsageError } from '../usage.js';

export const TESTS = ['write_bw', 'read_bw', 'send_bw', 'atomic_bw', 'write_lat', 'read_lat', 'send_lat'] as const;
export type TestName = (typeof TESTS)[number];

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
  /** --report_gbits: Gb/sec (10^9 bits) instead of MiB/sec. */
  gbits: boolean;
  /** -R: connect the QPs through the rdma_cm and run the exchange over an rdma_cm connection, not TCP. */
  rdmaCm: boolean;
  /** Whether -s/-n were given (the server adopts the client's choice otherwise). */
  explicit: { size: boolean; iters: boolean };
}

export const PERFTEST_USAGE = `usage: softrdma perftest <test> [options] [server-host]

tests: ${TESTS.join(', ')}
Run the server without a host, then the client with the server's host.

  -d, --ib-dev NAME    device name (default rxe0)
      --bind ADDR      local IP address the rxe device binds (default 127.0.0.1)
      --udp-port N     RoCEv2 UDP port, the same on both sides (default 4791; 0 on a
                       server picks a free one and prints it)
  -p, --port N         TCP port of the out-of-band exchange (default 18515)
  -s, --size N         message size in bytes (default 65536 for bw, 2 for lat, 8 for atomic)
  -n, --iters N        iterations (default 5000 for bw, 1000 for lat)
  -a, --all            every size from 2 to 2^23 (atomic_bw: 8 only)
  -D, --duration SEC   run for SEC seconds instead of -n iterations (not with -a); as perftest,
                       results count only between the margins
  -f, --margin SEC     with -D: seconds left out at the start and the end (default SEC/4,
                       rounded down, as perftest)
  -x, --gid-index N    local GID index (default 0, the device's only GID: its address)
  -q, --qp N           number of QPs, each doing -n iterations (bw tests; default 1)
  -b, --bidirectional  both sides send and the table shows the sum (bw tests)
  -F, --CPU-freq       accepted (no cpufreq warning to silence)
  -R, --rdma_cm        connect the QPs through the rdma_cm (softrdma/cm) as perftest's -R does:
                       the exchange runs as SENDs on an rdma_cm connection to the server's
                       address and -p port (no TCP); give the server's device address as host
      --report_gbits   report bandwidth in Gb/sec (10^9 bits) instead of MiB/sec
  -t, --tx-depth N     outstanding work requests in bw tests (default 128)
  -m, --mtu N          path MTU: 256, 512, 1024, 2048 or 4096 (default: the port's active MTU)
      --json           one JSON object per size on stdout instead of the table (perftest's
                       --out_json keys: MsgSize, n_iterations, BW_peak, BW_average, MsgRate;
                       t_min ... percentile_99.9)
      --counters       print the device's and the QP's rxe counters at the end
      --timeout SEC    give up if the peer is silent this long (default 30)
      --perftest-only  speak perftest's exchange only, as the C ib_* binaries do, even to a
                       softrdma peer: no data check; the server uses its own -s, -n, -D, -q, -b

The out-of-band exchange is perftest's (version 6.06: TCP, or with -R the rdma_cm), so
either side may be the C ib_write_bw, ib_read_bw, ib_send_bw, ib_atomic_bw, ib_write_lat,
ib_read_lat or ib_send_lat on a Linux rxe (give it -x with a RoCEv2 GID index). Between two
softrdma sides the server takes the client's sizes, -n, -D, -q and -b, and every bw run
checks the data that moved.`;


function intOpt(name: string, v: string | undefined, dflt: number, min: number, max: number): number {
  if (v === undefined) return dflt;
  const n = Number(v);
  if (!Number.isInteger(n) || n < min || n > max) throw new UsageError(`--${name} must be an integer in [${min}, ${max}], got '${v}'`);
  return n;
}

export function parsePerftestArgs(argv: string[]): PerftestOptions {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
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
    },
  });
  const [test, host, ...extra] = positionals;
  if (!test || !(TESTS as readonly string[]).includes(test)) throw new UsageError(`unknown or missing test '${test ?? ''}'`);
  if (extra.length) throw new UsageError(`unexpected argument '${extra[0]}'`);
  const t = test as TestName;
  const lat = t.endsWith('_lat');
  const atomic = t === 'atomic_bw';
  const maxSize = 1 << 23;
  let sizes: number[];
  if (atomic) {
    if (values.size !== undefined && values.size !== '8') throw new UsageError('atomic_bw moves 8 bytes per operation; --size must be 8');
    sizes = [8];
  } else if (values.all) {
    if (values.size !== undefined) throw new UsageError('--all and --size exclude each other');
    sizes = [];
    for (let s = 2; s <= maxSize; s *= 2) sizes.push(s);
  } else {
    sizes = [intOpt('size', values.size, lat ? 2 : 65536, 1, maxSize)];
  }
  const qps = intOpt('qp', values.qp, 1, 1, 256);
  // perftest's latency loops use one QP and one direction; its parser refuses the rest too.
  if (lat && qps > 1) throw new UsageError(`-q ${qps}: more than one QP is for the bw tests, not ${t}`);
  if (lat && values.bidirectional) throw new UsageError(`-b (bidirectional) is for the bw tests, not ${t}`);
  let durationSec: number | undefined;
  if (values.duration !== undefined) {
    durationSec = Number(values.duration);
    if (!(durationSec > 0) || durationSec > 86400) throw new UsageError(`--duration must be a number of seconds in (0, 86400], got '${values.duration}'`);
    if (values.all) throw new UsageError('--duration and --all exclude each other (perftest: duration mode does not run all sizes)');
  }
  let marginSec = durationSec !== undefined ? Math.floor(durationSec / 4) : 0;
  if (values.margin !== undefined) {
    marginSec = Number(values.margin);
    if (durationSec === undefined) throw new UsageError('--margin applies to --duration runs only');
    if (!(marginSec >= 0)) throw new UsageError(`--margin must be a number of seconds >= 0, got '${values.margin}'`);
  }
  if (durationSec !== undefined && !(durationSec > 2 * marginSec)) {
    throw new UsageError(`--duration ${durationSec} must be more than twice --margin ${marginSec}`);
  }
  const mtu = values.mtu === undefined ? undefined : Number(values.mtu);
  if (mtu !== undefined && ![256, 512, 1024, 2048, 4096].includes(mtu)) throw new UsageError(`--mtu must be 256, 512, 1024, 2048 or 4096, got '${values.mtu}'`);
  return {
    test: t,
    host,
    ibDev: values['ib-dev'] ?? 'rxe0',
    bind: values.bind ?? '127.0.0.1',
    udpPort: intOpt('udp-port', values['udp-port'], 4791, 0, 65535),
    port: intOpt('port', values.port, 18515, 0, 65535),
    sizes,
    iters: intOpt('iters', values.iters, lat ? 1000 : 5000, 1, 1e9),
    txDepth: intOpt('tx-depth', values['tx-depth'], 128, 1, 8192),
    mtu,
    json: values.json ?? false,
    counters: values.counters ?? false,
    timeoutMs: intOpt('timeout', values.timeout, 30, 1, 86400) * 1000,
    durationSec,
    marginSec,
    all: values.all ?? false,
    qps,
    bidir: values.bidirectional ?? false,
    perftestOnly: values['perftest-only'] ?? false,
    gidIndex: intOpt('gid-index', values['gid-index'], 0, 0, 255),
    gbits: values.report_gbits ?? false,
    rdmaCm: values.rdma_cm ?? false,
    explicit: { size: values.size !== undefined || !!values.all, iters: values.iters !== undefined },
  };
}
