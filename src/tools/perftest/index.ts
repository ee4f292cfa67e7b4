// `softrdma perftest <test>`: perftest's ib_*_bw / ib_*_lat over an rxe device.

import { runBw } from './bw.js';
import { runLat } from './lat.js';
import { parsePerftestArgs, PERFTEST_USAGE } from './options.js';
import { bwHeader, bwLine, latHeader, latLine, RESULT_LINE, TITLES, withPerftestKeys, type BwResult, type LatResult } from './report.js';
import { Session } from './session.js';

export { PERFTEST_USAGE };

/** Runs one perftest side; returns the results (also printed). Throws UsageError on bad options. */
export async function perftest(argv: string[]): Promise<(BwResult | LatResult)[]> {
  const o = parsePerftestArgs(argv);
  const s = new Session(o);
  const results: (BwResult | LatResult)[] = [];
  try {
    await s.open();
    const lat = o.test.endsWith('_lat');
    s.say(s.describe(TITLES[o.test]!));
    if (!o.json) s.say(lat ? latHeader() : bwHeader(o.gbits));
    for (const size of o.sizes) {
      const r = lat ? await runLat(s, size) : await runBw(s, size);
      results.push(r);
      if (o.json) process.stdout.write(JSON.stringify({ ...withPerftestKeys(r, o.gbits), role: s.isServer ? 'server' : 'client' }) + '\n');
      else s.say(lat ? latLine(r as LatResult) : bwLine(r as BwResult, o.gbits));
      if ('verified' in r && r.verified === false) throw new Error(`data check failed at ${size} bytes: the target's bytes differ from the source's`);
    }
    if (!o.json) s.say(RESULT_LINE);
    if (o.counters) {
      const c = s.counters();
      const nonzero = (r: Record<string, number>) => Object.fromEntries(Object.entries(r).filter(([, v]) => v !== 0));
      if (o.json) process.stdout.write(JSON.stringify({ counters: c, role: s.isServer ? 'server' : 'client' }) + '\n');
      else s.say(` device counters: ${JSON.stringify(nonzero(c.device))}\n QP counters:     ${JSON.stringify(nonzero(c.qp))}`);
    }
    return results;
  } finally {
    await s.close();
  }
}

