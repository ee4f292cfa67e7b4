// One end of the SMC-R discovery tests (smcr-discovery.test.ts), run as its own process in a
// network namespace. Prints JSON lines the test waits on.
//
//   node smcr-discovery-peer.js server --bind A [--device] [--smcr P,...] [--plain P,...] [--plain-bind ADDR]
//       --device: an rxe device on A (UDP 4791); --smcr: softrdma/smc echo servers with smcr;
//       --plain: node:net servers that echo and report every byte they received ({plain, got});
//       --banner: the same, writing "220 hi\n" first (a server that speaks first);
//       A line "swap P" on stdin closes the --smcr server on P and puts a --plain one there.
//       --smcr-reset: softrdma/smc servers with smcr that echo the first data and reset.
//   node smcr-discovery-peer.js client --bind B --plan JSON
//       plan: [{ "to": "host:port" } | { "hold": "host:port" } | { "sleep": ms }, ...]; each
//       connection writes "hello", reads the echo, ends ("hold": stays open until the plan is
//       done), and reports its mode, cause, settle time and the discovery counters ("policyNo":
//       true on a step: the socket's smcPolicy says no; { "try": "host:port" }: a connection
//       expected to fail, reported with its error code; { "named": "host:port" }: a connection
//       to that address given as the name "smc-peer.test", whose lookup answers only at a later
//       { "lookedUp": true } step, which waits for and reports that connection; "stallMs": N on a
//       "to" step blocks the event loop N ms right after its end()).

import net from 'node:net';
import { parseArgs } from 'node:util';
import { createRxeDevice } from '../../src/index.js';
import * as smc from '../../src/smc/index.js';
import { smcrDiscoveryCounters, smcrListenCount } from '../../src/smc/smcr/discovery.js';

const { positionals, values } = parseArgs({
  allowPositionals: true,
  options: {
    bind: { type: 'string' }, device: { type: 'boolean', default: false }, smcr: { type: 'string' }, plain: { type: 'string' },
    'plain-bind': { type: 'string' }, plan: { type: 'string' }, banner: { type: 'string' }, 'policy-no': { type: 'string' }, 'smcr-reset': { type: 'string' },
  },
});
const out = (o: Record<string, unknown>) => process.stdout.write(`${JSON.stringify(o)}\n`);
const ports = (s: string | undefined) => (s ? s.split(',').map(Number) : []);

/** A node:net echo server on port that reports every byte it received ({ plain, got }). */
function plainServer(port: number, banner: boolean, bind: string, listening: () => void): void {
  net.createServer((s) => {
    if (banner) s.write('220 hi\n');
    const got: Buffer[] = [];
    s.on('data', (d: Buffer) => { got.push(d); s.write(d); });
    s.on('end', () => { out({ plain: port, got: Buffer.concat(got).toString('hex') }); s.end(); });
    s.on('error', () => undefined);
  }).listen(port, bind, listening);
}

if (positionals[0] === 'server') {
  if (values.device) (await createRxeDevice({ address: values.bind!, port: 4791, name: 'rxe_srv' })).unref();
  const smcrServers = new Map<number, net.Server>();
  for (const port of ports(values.smcr)) {
    // Each connection's end (the client's closing CDC read; ours leaves with the pipe's end) by the wall clock.
    smcrServers.set(port, smc.createServer({ smcr: true }, (s) => { s.pipe(s); s.on('end', () => out({ ended: port, at: Date.now() })); }).listen(port, values.bind, () => out({ listening: port, smcr: true, sidrListens: smcrListenCount() })));
  }
  process.stdin.on('data', (d: Buffer) => {
    for (const m of d.toString().matchAll(/^swap (\d+)$/gm)) {
      const port = Number(m[1]);
      smcrServers.get(port)!.close();
      plainServer(port, false, values.bind!, () => out({ swapped: port }));
    }
  });
  for (const port of ports(values['smcr-reset'])) {
    smc.createServer({ smcr: true }, (s) => {
      s.on('error', () => undefined);
      s.once('data', (d: Buffer) => s.write(d, () => s.resetAndDestroy()));
    }).listen(port, values.bind, () => out({ listening: port, smcr: true }));
  }
  // --policy-no P: an SMC-R server on P whose policy offers SMC to nobody; reports what it received.
  for (const port of ports(values['policy-no'])) {
    smc.createServer({ smcr: true, smcPolicy: () => false }, (s) => {
      const got: Buffer[] = [];
      s.on('data', (d: Buffer) => { got.push(d); s.write(d); });
      s.on('end', () => { out({ plain: port, got: Buffer.concat(got).toString('hex'), served: smcrDiscoveryCounters() }); s.end(); });
      s.on('error', () => undefined);
    }).listen(port, values.bind, () => out({ listening: port, smcr: true }));
  }
  const banner = ports(values.banner);
  for (const port of [...ports(values.plain), ...banner]) plainServer(port, banner.includes(port), values['plain-bind'] ?? values.bind!, () => out({ listening: port }));
} else {
  const device = await createRxeDevice({ address: values.bind!, port: 4791, name: 'rxe_cli' });
  device.unref();
  const plan = JSON.parse(values.plan!) as Array<{ to?: string; hold?: string; try?: string; named?: string; lookedUp?: true; sleep?: number; line?: true; policyNo?: true; stallMs?: number }>;
  // { line: true }: wait for a line on stdin (the test's go-ahead).
  let lines = 0, waiting: (() => void) | undefined;
  process.stdin.on('data', (d: Buffer) => { lines += d.toString().split('\n').length - 1; waiting?.(); });
  const nextLine = async (): Promise<void> => {
    while (lines === 0) await new Promise<void>((r) => { waiting = r; });
    lines--;
  };
  const held: net.Socket[] = [];
  let named: Promise<Record<string, unknown>> | undefined, answerLookup: (() => void) | undefined;
  const one = (host: string, port: number, hold = false, policyNo = false, slowName = false, stallMs = 0) => new Promise<Record<string, unknown>>((resolve, reject) => {
    // The queries started before connect() and by the TCP handshake's end ('connect'): discovery
    // asks at connect(), beside the SYN, where it will need to.
    const queriesBefore = smcrDiscoveryCounters().queries;
    let queriesAtConnect = -1;
    const lookedUp = slowName ? new Promise<void>((r) => { answerLookup = r; }) : undefined;
    const lookup = (_name: string, o: { all?: boolean }, cb: (...a: unknown[]) => void) => {
      void lookedUp!.then(() => (o.all ? cb(null, [{ address: host, family: 4 }]) : cb(null, host, 4)));
    };
    const sock = smc.connect({ host: slowName ? 'smc-peer.test' : host, port, localAddress: values.bind!, smcr: true,
      ...(slowName ? { lookup: lookup as unknown as net.LookupFunction } : {}), ...(policyNo ? { smcPolicy: () => false } : {}) });
    let connectedAt = 0;
    let settleMs = -1;
    const stall: { start?: number; end?: number } = {};
    let got = '';
    sock.on('error', reject);
    // Before the SMC layer's own 'connect' listener, which may settle at once.
    sock.prependListener('connect', () => { connectedAt = performance.now(); queriesAtConnect = smcrDiscoveryCounters().queries; });
    sock.on('connect', () => { sock.write('hello'); });
    sock.once('smc', () => { settleMs = performance.now() - connectedAt; });
    sock.setEncoding('utf8');
    const report = () => {
      const info = smc.getSmcInfo(sock);
      resolve({ client: `${host}:${port}`, echo: got, mode: info.mode, cause: info.fallbackCause, reason: info.fallbackReason, settleMs, held: hold, queriesBefore, queriesAtConnect, counters: smcrDiscoveryCounters(), stall });
    };
    sock.on('data', (d: string) => {
      got += d;
      if (!got.endsWith('hello')) return;
      if (hold) { held.push(sock); report(); } else {
        sock.end();
        // { stallMs }: the event loop blocks once our closing CDC has left (a turn later), while
        // the peer's answering one comes; reported by the wall clock, as the server's 'ended'.
        if (stallMs > 0) {
          setImmediate(() => {
            stall.start = Date.now();
            const until = performance.now() + stallMs;
            while (performance.now() < until) { /* stalled */ }
            stall.end = Date.now();
          });
        }
      }
    });
    sock.on('close', () => { if (!hold) report(); });
  });
  for (const step of plan) {
    if (step.sleep) await new Promise((r) => setTimeout(r, step.sleep));
    else if (step.line) await nextLine();
    else if (step.named) {
      const [host, port] = step.named.split(':');
      named = one(host!, Number(port), false, false, true);
    } else if (step.lookedUp) {
      answerLookup!();
      out(await named!);
    } else if (step.try) {
      const [host, port] = step.try.split(':');
      const r = await one(host!, Number(port)).then((x) => ({ ...x, error: undefined }), (e: NodeJS.ErrnoException) => ({ client: step.try, error: e.code, counters: smcrDiscoveryCounters() }));
      out(r);
    } else {
      const [host, port] = (step.to ?? step.hold)!.split(':');
      out(await one(host!, Number(port), step.hold !== undefined, step.policyNo === true, false, step.stallMs ?? 0));
    }
  }
  await Promise.all(held.map((s) => new Promise((r) => { s.once('close', r); s.end(); })));
  process.stdin.destroy();
  out({ done: true, counters: smcrDiscoveryCounters() });
}
