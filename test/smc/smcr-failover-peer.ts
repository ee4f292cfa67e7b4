// One end of the SMC-R failover test (smcr-failover.test.ts), run in its own network namespace
// with two addresses on two veth pairs: an rxe device on each (UDP 4791 of that address), so
// its link groups can have a second link on the second device (ADD_LINK). Prints JSON lines.
//
//   node smcr-failover-peer.js server --bind A1 --bind2 A2 --port P
//   node smcr-failover-peer.js client --bind B1 --bind2 B2 --peer A1 --port P --mib N --cut DEV --cut-at M [--hold]
//
// --hold: after the second connection, wait for SIGUSR1 before the echo (the test stops its
// capture first), and at the end SIGUSR2 before closing (the test looks at the server first).
// --cut drop: instead of a veth, the first device's fault hook drops everything it sends (a
// one-way loss: the peer's packets still arrive); SIGHUP clears it.
// The client echoes N MiB through the server once its link group has two links; after M MiB
// came back it takes its end of the first veth pair (DEV) down itself (`ip link set DEV down`,
// so the cut falls mid-transfer), and reports the echo (byte-exact or not) and its link group.
// Then it waits for the pair to come back up (the test does that) and for a second link again.

import { createHash } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { parseArgs } from 'node:util';
import { createRxeDevice, rxeOf } from '../../src/index.js';
import * as smc from '../../src/smc/index.js';
import { SmcrLinkGroup } from '../../src/smc/smcr/lgr.js';
import { smcState } from '../../src/smc/state.js';
import type { SmcrConnection } from '../../src/smc/smcr/connection.js';

const { positionals, values } = parseArgs({
  allowPositionals: true,
  options: {
    bind: { type: 'string' }, bind2: { type: 'string' }, peer: { type: 'string' }, port: { type: 'string' },
    mib: { type: 'string', default: '64' }, cut: { type: 'string' }, 'cut-at': { type: 'string', default: '16' }, hold: { type: 'boolean' },
  },
});
const role = positionals[0]!;
const out = (o: Record<string, unknown>) => process.stdout.write(`${JSON.stringify(o)}\n`);

const dev1 = await createRxeDevice({ address: values.bind!, port: 4791, name: `rxe_${role}1` });
const dev2 = await createRxeDevice({ address: values.bind2!, port: 4791, name: `rxe_${role}2` });
dev1.unref();
dev2.unref();
process.on('SIGHUP', () => { rxeOf(dev1).faults = undefined; out({ faults: 'cleared' }); });

function groups() {
  return SmcrLinkGroup.list().map((g) => ({
    role: g.role, maxLinks: g.maxLinks, conns: g.conns.size, dead: g.dead,
    links: g.links.map((l) => ({ id: l.id, address: l.dev.address, active: l.active, down: l.isDown, qpn: l.qp.qpn, peerQpn: l.remote?.qpn })),
    events: g.linkEvents, llcTx: g.llcTx, llcRx: g.llcRx, rx: g.rx,
  }));
}

/** Resolve when some link group has n active links (polled: the test bounds the wait). */
function linksReach(n: number): Promise<void> {
  return new Promise((resolve) => {
    const look = () => {
      if (SmcrLinkGroup.list().some((g) => !g.dead && g.activeLinks().length === n)) resolve();
      else setTimeout(look, 20);
    };
    look();
  });
}

/** Deterministic bytes (xorshift), as smcr-peer.ts. */
function pattern(n: number, seed: number): Buffer {
  const b = Buffer.allocUnsafe(n);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < n; i += 4) {
    x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0;
    b.writeUInt32LE(x, i);
  }
  return b;
}

if (role === 'server') {
  const server = smc.createServer({ smcr: true }, (sock) => {
    sock.on('error', (e: NodeJS.ErrnoException) => out({ server: 'error', code: e.code, message: e.message }));
    sock.on('close', (hadError) => out({ server: 'close', hadError, groups: groups() }));
    sock.pipe(sock);
    sock.once('data', () => out({ server: 'conn', mode: smc.getSmcInfo(sock).mode }));
  });
  server.listen(Number(values.port), values.bind, () => out({ listening: Number(values.port) }));
  // Report the server's link group whenever its number of active links or failed ADD_LINKs changes.
  let last = -1, lastFailed = 0;
  setInterval(() => {
    const g = SmcrLinkGroup.list().find((x) => !x.dead);
    const n = g ? g.activeLinks().length : 0;
    if (n !== last) { last = n; out({ server: 'links', n, groups: groups() }); }
    if (g && g.linkEvents.addFailed !== lastFailed) { lastFailed = g.linkEvents.addFailed; out({ server: 'addFailed', n: lastFailed, reason: g.linkEvents.lastFailure }); }
  }, 20).unref();
} else {
  const cutAt = Number(values['cut-at']) << 20;
  const connect = () => smc.connect({ host: values.peer!, port: Number(values.port), localAddress: values.bind!, smcr: { device: dev1, discovery: false } });
  const errors: string[] = [];
  const open = async (name: string) => {
    const sock = connect();
    sock.on('error', (e: NodeJS.ErrnoException) => { errors.push(`${name}: ${e.code} ${e.message}`); out({ client: 'error', name, code: e.code, message: e.message }); });
    const info = await new Promise<smc.SmcInfo>((resolve) => sock.once('smc', resolve));
    return { sock, info };
  };
  const first = await open('first');
  out({ client: 'settled', mode: first.info.mode });
  const t0 = performance.now();
  await linksReach(2);
  out({ client: 'links', n: 2, ms: Math.round(performance.now() - t0), groups: groups() });
  // A second connection on the group with two links: its RMB's rkey on the other link goes by CONFIRM_RKEY.
  const second = await open('second');
  const go = values.hold ? new Promise<void>((resolve) => process.once('SIGUSR1', () => resolve())) : Promise.resolve();
  out({ client: 'second', mode: second.info.mode, linkIds: [first.sock, second.sock].map((s) => smc.getSmcInfo(s).smcr?.link?.id), groups: groups() });
  await go;
  let cutTime = 0;
  /** Echo `mib` MiB through sock; the first to pass cutAt takes the first pair down. */
  const echo = (sock: typeof first.sock, mib: number, seed: number) => new Promise<Record<string, unknown>>((resolve) => {
    const data = pattern(mib << 20, seed);
    const h = createHash('sha256');
    let n = 0;
    const t1 = performance.now();
    sock.on('data', (d: Buffer) => {
      h.update(d);
      n += d.length;
      if (!cutTime && n >= cutAt && values.cut) {
        if (values.cut === 'drop') rxeOf(dev1).faults = { drop: 1 };
        else execFileSync('ip', ['link', 'set', values.cut, 'down']);
        cutTime = performance.now();
        out({ client: 'cut', at: n, dev: values.cut });
      }
      if (n >= data.length) {
        const conn = smcState(sock)?.conn as SmcrConnection | undefined;
        resolve({
          ok: h.digest('hex') === createHash('sha256').update(data).digest('hex'), bytes: n, ms: Math.round(performance.now() - t1),
          switches: conn?.switches, destroyed: sock.destroyed, mode: smc.getSmcInfo(sock).mode, link: smc.getSmcInfo(sock).smcr?.link,
        });
      }
    });
    for (let off = 0; off < data.length; off += 1 << 20) sock.write(data.subarray(off, off + (1 << 20)));
  });
  const [r1, r2] = await Promise.all([echo(first.sock, Number(values.mib), 11), echo(second.sock, Number(values.mib) / 2, 12)]);
  out({ client: 'echo', first: r1, second: r2, afterCutMs: Math.round(performance.now() - cutTime), errors, groups: groups() });
  // The test brings the pair back up; the server adds a second link again.
  const t2 = performance.now();
  const finish = values.hold ? new Promise<void>((resolve) => process.once('SIGUSR2', () => resolve())) : Promise.resolve();
  await linksReach(2);
  out({ client: 'readded', ms: Math.round(performance.now() - t2), groups: groups() });
  await finish;
  let closed = 0;
  for (const c of [first, second]) {
    c.sock.end();
    c.sock.on('close', () => { if (++closed === 2) { out({ client: 'close', errors }); process.exit(0); } });
  }
}
