// `softrdma perftest <test>`: perftest's ib_*_bw / ib_*_lat over an rxe device, speaking
// perftest's own out-of-band exchange so that either side may be the C binary.

import { runBwTest } from './bw.js';
import { runLatTest } from './lat.js';
import { parsePerftestArgs, PERFTEST_USAGE } from './options.js';
import {
  bwHeader, bwLine, latDurHeader, latDurLine, latHeader, latLine, RESULT_LINE, TITLES, withPerftestKeys, type BwResult, type LatResult,
} from './report.js';
import { Session } from './session.js';

export { PERFTEST_USAGE };

/** Runs one perftest side; returns the results (also printed). Throws UsageError on bad options. */
export async function perftest(argv: string[]): Promise<(BwResult | LatResult)[]> {
  const o = parsePerftestArgs(argv);
  const s = new Session(o);
  try {
    await s.open();
    const lat = o.test.endsWith('_lat');
    s.say(s.describe(TITLES[o.test]!));
    // perftest's read_lat server prints no table, only the closing line.
    const table = !(o.test === 'read_lat' && s.isServer);
    if (!o.json && table) s.say(lat ? (o.durationSec ? latDurHeader() : latHeader()) : bwHeader(o.gbits));
    const role = s.isServer ? 'server' : 'client';
    let failed: string | undefined;
    const emit = (r: BwResult | LatResult) => {
      if (o.json) process.stdout.write(JSON.stringify({ ...withPerftestKeys(r, o.gbits), role }) + '\n');
      else s.say(lat ? (o.durationSec ? latDurLine(r as LatResult) : latLine(r as LatResult)) : bwLine(r as BwResult, o.gbits));
      if ('verified' in r && r.verified === false) failed ??= `data check failed at ${r.bytes} bytes: the target's bytes differ from the source's`;
    };
    const results = lat ? await runLatTest(s, emit) : await runBwTest(s, emit);
    if (!o.json) s.say(RESULT_LINE);
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
