// What softrdma perftest prints and keeps, as perftest does:
// - --output=bandwidth|message_rate|latency: one figure per size ("%lf"), nothing else on
//   stdout (print_full_bw_report / print_report_lat); --out_json_file writes the JSON objects;
// - -b: the title "RDMA_Write Bidirectional BW Test" (ctx_print_test_info);
// - -D: a timed run keeps what its report needs in constant memory (a -D 3600 run used to keep
//   8 bytes per operation): the bandwidth counts between the margins, the latency summary.

import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { WcOpcode, WcStatus, type SendWr, type WorkCompletion } from '../../src/index.js';
import { sendLoop } from '../../src/tools/perftest/bw.js';
import * as report from '../../src/tools/perftest/report.js';
import type { Session } from '../../src/tools/perftest/session.js';
import { peakNotMeasured } from '../../src/tools/perftest/options.js';
import { outputFigure } from '../../src/tools/perftest/index.js';

// Looked up when a test runs (a build without the -D summaries fails those tests only).
const { bwResult, LatSummary, latResult, WindowedCount } = report;
import { jsonLines, run } from '../helpers/procs.js';

async function pair(name: string, server: string[], client: string[]) {
  const srv = run(['perftest', name, '--bind', '127.0.0.2', '-p', '0', '--udp-port', '0', ...server]);
  const [, tcp, udp] = await srv.waitFor(/out-of-band TCP port (\d+), RoCE UDP port (\d+)/);
  const cli = run(['perftest', name, '--bind', '127.0.0.3', '-p', tcp!, '--udp-port', udp!, ...client, '127.0.0.1']);
  const [cc, sc] = await Promise.all([cli.exit(30_000), srv.exit(30_000)]);
  assert.equal(cc, 0, `client failed:\n${cli.stderr}`);
  assert.equal(sc, 0, `server failed:\n${srv.stderr}`);
  return { client: cli, server: srv };
}

test("--output prints perftest's %lf of the unrounded figure, not one rounded to 0.01 first", () => {
  // 3 ms for one 4096-byte WRITE: 4096 / 0.003 / 2^20 = 1.3020833... MiB/sec.
  const bw = bwResult('write_bw', 4096, 0, Float64Array.from([3e6]), null);
  assert.equal(outputFigure({ output: 'bandwidth', gbits: false }, bw), '1.302083');
  assert.equal(outputFigure({ output: 'bandwidth', gbits: true }, bw), (1.3020833333333333 * 2 ** 20 * 8 / 1e9).toFixed(6));
  assert.equal(outputFigure({ output: 'message_rate', gbits: false }, bw), '0.000333');
  // The table still rounds (%.2lf), and the JSON as perftest's --out_json (%.2lf).
  assert.match(report.bwLine(bw), /^ 4096 {7}1 {16}1\.30 /);
  assert.equal(report.withPerftestKeys(bw, false).BW_average, 1.3);
  // Gaps of 10 us and one of 15 (the two largest left out): t_avg = (1000 x 10 + 15) / 1001 us.
  const gaps = Float64Array.from([...Array<number>(1000).fill(10), 15, 500, 2000]);
  const lat = latResult('read_lat', 2, gaps);
  assert.equal(outputFigure({ output: 'latency', gbits: false }, lat), (10015 / 1001).toFixed(6));
  assert.equal((10015 / 1001).toFixed(6), '10.004995');
  assert.equal(report.withPerftestKeys(lat, false).t_avg, 10);
});

test('--output: only the figure perftest prints ("%lf"), in the table\'s unit; --out_json_file gets the JSON', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'perftest-out-'));
  try {
    const file = join(dir, 'report.json');
    const bw = await pair('write_bw', ['--output=message_rate'], ['--output=bandwidth', '-n', '100', '-s', '4096', '--out_json', `--out_json_file=${file}`]);
    assert.match(bw.client.stdout, /^\d+\.\d{6}\n$/);
    assert.match(bw.server.stdout, /^\d+\.\d{6}\n$/);
    assert.match(bw.client.stderr, /RDMA_Write BW Test/); // the rest goes to stderr
    const [r] = jsonLines(readFileSync(file, 'utf8'));
    assert.equal(r!.test, 'write_bw');
    assert.equal(r!.MsgSize, 4096);
    // The JSON rounds as perftest's (%.2lf); --output prints the unrounded figure (%lf).
    assert.ok(Math.abs(Number(bw.client.stdout) - (r!.BW_average as number)) <= 0.005 + 1e-9, `${bw.client.stdout} vs ${String(r!.BW_average)}`);
    assert.equal(Number(bw.server.stdout), r!.MsgRate);
    const lat = await pair('send_lat', ['--output=latency'], ['--output=latency', '-n', '50']);
    for (const p of [lat.client, lat.server]) assert.match(p.stdout, /^\d+\.\d{6}\n$/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('-b: the title is perftest\'s "RDMA_Write Bidirectional BW Test"', async () => {
  const { client, server } = await pair('write_bw', [], ['-b', '-n', '50', '-s', '4096']);
  for (const p of [client, server]) assert.match(p.stdout, /^ {20}RDMA_Write Bidirectional BW Test$/m);
});

test('-D bandwidth: the windowed count gives bwResult\'s average from counts alone, and leaves out the margins', () => {
  const from = 1e9, to = 3e9;
  const w = new WindowedCount(from, to);
  const times: number[] = [];
  w.push(from - 1, 64); // warm-up: left out
  for (let t = from + 1e6; t <= to; t += 1e6) { w.push(t, 64); for (let k = 0; k < 64; k++) times.push(t); }
  w.push(to + 1, 64); // wind-down: left out
  const r = w.result('write_bw', 4096)!;
  const exact = bwResult('write_bw', 4096, from, Float64Array.from(times), null);
  assert.equal(r.iterations, exact.iterations);
  assert.equal(r.bw_avg_MBps, exact.bw_avg_MBps);
  assert.equal(r.msg_rate_Mpps, exact.msg_rate_Mpps);
  assert.ok(r.bw_peak_MBps >= r.bw_avg_MBps);
  assert.equal(new WindowedCount(from, to).result('write_bw', 4096), undefined);
});

test('-D bandwidth: the average is over the whole window, as perftest\'s (a stall inside it counts)', () => {
  const from = 1e9, to = 3e9;
  const w = new WindowedCount(from, to);
  // Completions in the window's first half only, then nothing.
  for (let t = from + 1e6; t <= from + 1e9; t += 1e6) w.push(t, 1);
  const r = w.result('write_bw', 1 << 20)!;
  assert.equal(r.iterations, 1000);
  assert.equal(r.bw_avg_MBps, 500, '1000 MiB over the 2 s window, not over the 1 s until the last completion');
});

test('no BW peak where perftest measures none (noPeak): -N, -D, -n over 20000, send_bw\'s receiving server', () => {
  const o = { test: 'write_bw' as const, noPeak: false, durationSec: undefined, iters: 5000, bidir: false };
  assert.equal(peakNotMeasured(o, false), false);
  assert.equal(peakNotMeasured({ ...o, noPeak: true }, false), true);
  assert.equal(peakNotMeasured({ ...o, durationSec: 8 }, false), true);
  assert.equal(peakNotMeasured({ ...o, iters: 20000 }, false), false);
  assert.equal(peakNotMeasured({ ...o, iters: 20001 }, false), true);
  assert.equal(peakNotMeasured({ ...o, test: 'send_bw' }, true), true);
  assert.equal(peakNotMeasured({ ...o, test: 'send_bw', bidir: true }, true), false);
  assert.equal(peakNotMeasured({ ...o, test: 'send_bw' }, false), false);
  assert.equal(peakNotMeasured({ ...o, test: 'send_lat', durationSec: 8 }, false), false);
});

test('-N and -n over 20000: 0.00 in the peak column, no warning (perftest 4.5-0.17 drops the peak silently; the warning is 24.01\'s)', async () => {
  const { client } = await pair('write_bw', [], ['-N', '-n', '50', '-s', '4096']);
  assert.doesNotMatch(client.stdout, /WARNING: BW peak/);
  const { client: many } = await pair('write_bw', [], ['-n', '20001', '-s', '64']);
  assert.doesNotMatch(many.stdout + many.stderr, /WARNING: BW peak/);
  assert.match(many.stdout, /^ 64\s+20001\s+0\.00\s+\d/m);
  assert.match(client.stdout, /^ 4096\s+50\s+0\.00\s+\d/m);
});

test('-D latency: the summary gives latResult\'s figures (percentiles to 4 significant digits) without keeping samples', () => {
  let seed = 7;
  const rnd = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
  const samples = Float64Array.from({ length: 20_000 }, () => 2 + rnd() * 40 + (rnd() < 0.01 ? 500 * rnd() : 0));
  const sum = new LatSummary();
  for (const x of samples) sum.add(x);
  const got = sum.result('send_lat', 2)!, want = latResult('send_lat', 2, samples);
  for (const k of ['iterations', 't_min_us', 't_max_us', 't_avg_us', 't_stdev_us'] as const) assert.ok(Math.abs(got[k] - want[k]) <= 0.01, `${k}: ${got[k]} vs ${want[k]}`);
  for (const k of ['t_typical_us', 'p99_us', 'p999_us'] as const) assert.ok(Math.abs(got[k] - want[k]) <= Math.max(0.01, want[k] * 0.001), `${k}: ${got[k]} vs ${want[k]}`);
  assert.equal(new LatSummary().result('send_lat', 2), undefined);
});

/** A session whose work requests complete as soon as they are posted (as perftest-sendloop.test.ts's). */
function instantSession(durationSec: number, probe: () => void): Session {
  const done: WorkCompletion[] = [];
  const qp = {
    postSend(wr: SendWr): void {
      if (wr.sendFlags! & 2) done.push({ wrId: wr.wrId, status: WcStatus.SUCCESS, opcode: WcOpcode.RDMA_WRITE, byteLen: 0 } as unknown as WorkCompletion);
    },
  };
  let polls = 0;
  return {
    o: { test: 'write_bw', iters: 1000, txDepth: 128, durationSec, marginSec: 0 },
    nq: 1, qps: [qp], remote: [{ rkey: 2 }],
    mr: { sge: (addr: number, length: number) => ({ addr, length, lkey: 1 }) },
    sendOff: () => 0,
    remoteAddr: () => 0n,
    async poll(want: number, onWc: (wc: WorkCompletion) => void, deadlineNs = Infinity): Promise<number> {
      if (++polls % 256 === 0) probe();
      let got = 0;
      for (;;) {
        while (done.length && got < want) { onWc(done.shift()!); got++; }
        if (got >= want) return got;
        if (Number(process.hrtime.bigint()) >= deadlineNs) return got;
        await new Promise((r) => setImmediate(r));
      }
    },
  } as unknown as Session;
}

test('-D bandwidth: the sender\'s memory does not grow with the number of operations', async () => {
  const base = process.memoryUsage().arrayBuffers;
  let peak = base;
  const r = await sendLoop(instantSession(1.5, () => { peak = Math.max(peak, process.memoryUsage().arrayBuffers); }), 64, undefined);
  const ops = r.counts[0]!;
  assert.ok(ops > 300_000, `only ${ops} operations: too few to tell`);
  // A timestamp per operation was 8 bytes each (and twice that while the array doubled).
  assert.ok(peak - base < ops * 2, `array buffers grew by ${peak - base} bytes over ${ops} operations`);
  assert.ok(r.result.iterations > 0 && r.result.iterations <= ops);
});
