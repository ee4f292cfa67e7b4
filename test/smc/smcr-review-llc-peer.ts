// The scenario of smcr-review-llc.test.ts, in a process of its own inside a network namespace
// whose loopback has four addresses in two /24 subnets, an rxe device on each (A1, B1 in the
// first subnet, A2, B2 in the second), so the link group between A1 (client) and B1 (server)
// gets a second link (as smcr-llc-peer.ts; what they share is in smcr-llc-peer-common.ts). Prints
// one JSON line ({ scenario, ... }, or { fail }) and exits.
//
//   node smcr-review-llc-peer.js rkeyclear

import type net from 'node:net';
import { once } from 'node:events';
import type { Device } from '../../src/index.js';
import * as smc from '../../src/smc/index.js';
import type { Rmb } from '../../src/smc/smcr/lgr.js';
import type { SmcrLink } from '../../src/smc/smcr/link.js';
import { listenBehindRelay } from '../helpers/tcp-relay.js';
import { devices, group, runScenario, twoLinks, until, type Name } from './smcr-llc-peer-common.js';

const ADDR = { A1: '10.93.1.1', B1: '10.93.1.2', A2: '10.93.2.1', B2: '10.93.2.2' } as const;

/** An echo server on B1 behind a plain TCP relay (the client reaches the server from A1). */
async function setup(d: Record<Name, Device>) {
  const opts = { smcBufferSize: 65536, smcHandshakeTimeout: 10_000 };
  const server = smc.createServer({ smcr: { device: d.B1 }, ...opts }, (s) => { s.on('error', () => {}); s.pipe(s); });
  const rs = await listenBehindRelay(server, ADDR.B1, ADDR.A1);
  const open = async () => {
    const s = smc.connect({ host: ADDR.B1, port: (rs.address() as net.AddressInfo).port, localAddress: ADDR.A1, smcr: { device: d.A1, discovery: false }, ...opts });
    s.on('error', () => {});
    const info = (await once(s, 'smc'))[0] as { mode: string };
    if (info.mode !== 'SMCR') throw new Error(`a connection settled on ${info.mode}`);
    return s;
  };
  return { open };
}

const scenarios: Record<string, () => Promise<Record<string, unknown>>> = {
  // The client announces an RMB with CONFIRM_RKEY on link 2 and waits for the answer (which
  // the server here never sends); the server then loses link 2 and tells the client with
  // DELETE_LINK, whose handling removes link 2 (clearLink) without it going down at the
  // client: the wait must fail then, as Linux's smc_llc_wait returns when its link is no longer
  // usable, not when its 2 s run out.
  async rkeyclear() {
    const d = await devices(ADDR);
    const env = await setup(d);
    await env.open();
    await until(twoLinks, 'two links');
    const sv = group('server'), cl = group('client');
    (sv as unknown as { confirmRkey(): void }).confirmRkey = () => {}; // no answer
    const [l1, l2] = cl.activeLinks() as [SmcrLink, SmcrLink];
    const mr = { rkey: 0x123456, addr: 0x10000 };
    const rmb = { buf: Buffer.alloc(64), mr, size: 64, access: 0, mrs: new Map([[l2.dev, mr], [l1.dev, { rkey: 0x654321, addr: 0x11000 }]]) } as unknown as Rmb;
    const t0 = performance.now();
    const result = cl.announceRmb(rmb, l2).then(() => ({ r: 'answered', ms: 0 }), (e: Error) => ({ r: e.message, ms: performance.now() - t0 }));
    await until(() => (sv.llcRx.CONFIRM_RKEY ?? 0) > 0, 'the CONFIRM_RKEY at the server');
    const svL2 = sv.links.find((l) => l.id === l2.id)!;
    const tDel = performance.now() - t0;
    svL2.handlers!.down('simulated work request error');
    const { r, ms } = await result;
    return { result: r, deletedAfterMs: Math.round(tDel), failedAfterMs: Math.round(ms), clientDeleteLinkRx: cl.llcRx.DELETE_LINK ?? 0, clientLinks: cl.activeLinks().length };
  },
};

await runScenario(scenarios);
