// What the LLC scenario processes (smcr-llc-peer.ts, smcr-review-llc-peer.ts) share: four rxe
// devices on a namespace's loopback addresses in two /24 subnets (A1, B1 in the first, A2, B2
// in the second), so the link group between A1 (client) and B1 (server) gets a second link;
// waits, the live link groups, and running the scenario named on the command line, which
// prints one JSON line ({ scenario, ... }, or { scenario, fail }) and exits.

import { createRxeDevice, type Device } from '../../src/index.js';
import { SmcrLinkGroup } from '../../src/smc/smcr/lgr.js';

export type Name = 'A1' | 'B1' | 'A2' | 'B2';

/** Wait until cond() holds, looking every 5 ms; throws after ms. */
export async function until(cond: () => boolean, what: string, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`no ${what} within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** An rxe device (port 4791, unref'd) on each of the four addresses. */
export async function devices(addr: Readonly<Record<Name, string>>): Promise<Record<Name, Device>> {
  const d = {} as Record<Name, Device>;
  for (const n of ['A1', 'B1', 'A2', 'B2'] as Name[]) {
    d[n] = await createRxeDevice({ address: addr[n], port: 4791, name: `rxe_${n}` });
    d[n].unref();
  }
  return d;
}

export const groups = () => SmcrLinkGroup.list().filter((g) => !g.dead);
export const group = (role: 'client' | 'server') => groups().find((g) => g.role === role)!;
export const twoLinks = () => groups().length === 2 && groups().every((g) => g.activeLinks().length === 2);

/** Run the scenario argv[2] names; print its findings (or its failure) as one JSON line and exit. */
export async function runScenario(scenarios: Record<string, () => Promise<Record<string, unknown>>>): Promise<void> {
  const out = (o: Record<string, unknown>) => process.stdout.write(`${JSON.stringify(o)}\n`);
  const scenario = process.argv[2] ?? '';
  try {
    const run = scenarios[scenario];
    if (!run) throw new Error(`no scenario ${scenario}`);
    out({ scenario, ...await run() });
    process.exit(0);
  } catch (e) {
    out({ scenario, fail: (e as Error).stack ?? String(e) });
    process.exit(1);
  }
}
