// `softrdma perftest <test>`: perftest's ib_*_bw / ib_*_lat over an rxe device, speaking
// perftest's own out-of-band exchange so that either side may be the C binary.

import { lookup } from 'node:dns/promises';
import { writeFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { UsageError } from '../usage.js';
import { runBwTest } from './bw.js';
import { runLatTest } from './lat.js';
import { cqModWarning, parsePerftestArgs, peakNotMeasured, PERFTEST_OPTIONS, PERFTEST_USAGE, type PerftestOptions } from './options.js';
import {
  bwHeader, bwLine, latDurHeader, latDurLine, latHeader, latLine, RESULT_LINE, title, toGbits, withPerftestKeys, type BwResult, type LatResult,
} from './report.js';
import { Session } from './session.js';
import { VERSION as PERFTEST_VERSION } from './exchange.js';

export { PERFTEST_OPTIONS, PERFTEST_USAGE, PERFTEST_VERSION };

/** --output: the one figure perftest prints ("%lf": six decimals), in the table's unit. */
export function outputFigure(o: Pick<PerftestOptions, 'output' | 'gbits'>, r: BwResult | LatResult): string {
  if (o.output === 'latency') return (r as LatResult).t_avg_us.toFixed(6);
  const b = r as BwResult;
  if (o.output === 'message_rate') return b.msg_rate_Mpps.toFixed(6);
  return (o.gbits ? toGbits(b.bw_avg_MBps) : b.bw_avg_MBps).toFixed(6);
}

/**
 * -R: the rdma_cm resolves addresses, not names; perftest calls rdma_getaddrinfo on the host.
 * A name resolves to the family of --bind (the device's address).
 */
async function resolveCmHost(host: string, bind: string): Promise<string> {
  if (isIP(host) !== 0) return host;
  const family = isIP(bind) || 4;
  try {
    return (await lookup(host, { family })).address;
  } catch (err) {
    throw new UsageError(`server-host must be an IPv4 or IPv6 address or a host name that resolves to an IPv${family} address, got '${host}' (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
  }
}

/** Runs one perftest side; returns the results (also printed). Throws UsageError on bad options. */
export async function perftest(argv: string[]): Promise<(BwResult | LatResult)[]> {
  const o = parsePerftestArgs(argv);
  if (o.rdmaCm && o.host !== undefined) o.host = await resolveCmHost(o.host, o.bind);
  const s = new Session(o);
  try {
    // force_dependecies' warning, from perftest's parser: before anything else.
    const warning = cqModWarning(o);
    if (warning) s.say(warning);
    await s.open();
    const lat = o.test.endsWith('_lat');
    // perftest 4.5-0.17 turns noPeak on silently (the " WARNING: BW peak won't be measured in
    // this run." line is perftest 24.01's and later).
    const noPeak = peakNotMeasured(o, s.isServer);
    s.say(s.describe(title(o)));
    // softrdma's own facts, after perftest's block and on stderr (see Session.headerExtra).
    s.extra(s.headerExtra());
    // perftest's read_lat and atomic_lat servers print no table, only the closing line.
    const table = !((o.test === 'read_lat' || o.test === 'atomic_lat') && s.isServer);
    if (!o.json && table) s.say(lat ? (o.durationSec ? latDurHeader() : latHeader()) : bwHeader(o.gbits));
    const role = s.isServer ? 'server' : 'client';
    let failed: string | undefined;
    const fileLines: string[] = [];
    const emit = (r: BwResult | LatResult) => {
      if (noPeak && 'bw_peak_MBps' in r) r = { ...r, bw_peak_MBps: 0 };
      const json = JSON.stringify({ ...withPerftestKeys(r, o.gbits), role }) + '\n';
      if (o.json) process.stdout.write(json);
      else if (o.output) process.stdout.write(outputFigure(o, r) + '\n');
      else s.say(lat ? (o.durationSec ? latDurLine(r as LatResult) : latLine(r as LatResult)) : bwLine(r as BwResult, o.gbits));
      if (o.jsonFile) {
        // perftest rewrites its file for each report; ours holds every size so far. As perftest,
        // a file that cannot be written is said on stderr and the run goes on.
        fileLines.push(json);
        try {
          writeFileSync(o.jsonFile, fileLines.join(''));
        } catch (err) {
          process.stderr.write(`failed to open ${o.jsonFile}: ${(err as Error).message}\n`);
        }
      }
      if ('verified' in r && r.verified === false) failed ??= `data check failed at ${r.bytes} bytes: the target's bytes differ from the source's`;
    };
    const results = lat ? await runLatTest(s, emit) : await runBwTest(s, emit);
    // After the table; read_lat's and atomic_lat's servers have none, and its one closing line ends describe()'s block.
    if (!o.json && table) s.say(RESULT_LINE);
    if (o.counters) {
      const c = s.counters();
      const nonzero = (r: Record<string, number>) => Object.fromEntries(Object.entries(r).filter(([, v]) => v !== 0));
      if (o.json) process.stdout.write(JSON.stringify({ counters: c, role }) + '\n');
      else s.say(` device counters: ${JSON.stringify(nonzero(c.device))}\n QP counters:     ${JSON.stringify(nonzero(c.qp))}`);
    }
    if (failed) throw new Error(failed);
    return results;
  } finally {
    await s.close();
  }
}
