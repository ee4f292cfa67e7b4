// One end of the SMC-R tests (smcr.test.ts), run as its own process inside a network namespace.
// Each creates an rxe device on its address (UDP 4791 of its own namespace) and uses
// softrdma/smc sockets with `smcr: { device }`. Prints JSON lines the test waits on.
//
//   node smcr-peer.js server --bind A --listen SERVICE:PORT,... (echo, count, sink, reset; plain-echo: a server with smcr: false) [--drop P]
//   node smcr-peer.js client --bind B --peer A --port P --test echo|halfclose|stream|two|held [--mib N]
//   node smcr-peer.js self --bind A --listen SERVICE:PORT --peer A --port P --test ...: both in one process (one device)

import { createHash } from 'node:crypto';
import { parseArgs } from 'node:util';
import { createRxeDevice, rxeOf } from '../../src/index.js';
import * as smc from '../../src/smc/index.js';
import { SmcrLinkGroup } from '../../src/smc/smcr/lgr.js';
import { smcState } from '../../src/smc/state.js';
import { pattern } from '../helpers/pattern.js';

const { positionals, values } = parseArgs({
  allowPositionals: true,
  options: {
    bind: { type: 'string' }, peer: { type: 'string' }, port: { type: 'string' }, listen: { type: 'string' },
    test: { type: 'string' }, mib: { type: 'string', default: '4' }, drop: { type: 'string' }, freed: { type: 'boolean' },
  },
});
const role = positionals[0];
const out = (o: Record<string, unknown>) => process.stdout.write(`${JSON.stringify(o)}\n`);

const device = await createRxeDevice({ address: values.bind!, port: 4791, name: `rxe_${role}` });
device.unref();
// --drop P: the device drops that share of the packets it sends (its fault hook); 1 cuts the RoCE path.
if (values.drop) rxeOf(device).faults = { drop: Number(values.drop) };
// SIGUSR2: from now on the device sends nothing (the RoCE path dies; TCP stays up).
process.on('SIGUSR2', () => { rxeOf(device).faults = { drop: 1 }; out({ roce: 'cut' }); });

/** The device's QPs and memory keys before any connection: what a torn-down link group leaves. */
const objects = () => ({ qps: rxeOf(device).qps.size, keys: rxeOf(device).keys.size });
const base = objects();

/**
 * Once no link group is left and the device holds what it held before any connection (a group
 * leaves the list before its QP and buffers are gone), or after 20 s, say what is left.
 */
function reportFreed(who: 'client' | 'server', then?: () => void): void {
  const t0 = Date.now();
  const look = () => {
    const o = objects();
    const done = SmcrLinkGroup.list().length === 0 && o.qps === base.qps && o.keys === base.keys;
    if (!done && Date.now() - t0 < 20_000) return void setTimeout(look, 10);
    out({ [who]: 'freed', lgrs: SmcrLinkGroup.list().length, ...objects(), base, ms: Date.now() - t0 });
    then?.();
  };
  look();
}

function lgrs() {
  return SmcrLinkGroup.list().map((g) => ({ conns: g.conns.size, qpn: g.link.qp.qpn, peerQpn: g.link.remote?.qpn, confirmed: g.confirmed, sends: g.link.stats.sends, writes: g.link.stats.writes }));
}

function serve(service: string, port: number): Promise<void> {
  const plain = service.startsWith('plain-');
  if (plain) service = service.slice(6);
  // smcr: true finds the device by the connection's local address (the client names its device).
  const server = smc.createServer({ smcr: !plain }, (sock) => {
    const info = () => smc.getSmcInfo(sock);
    sock.on('error', (e: NodeJS.ErrnoException) => out({ server: 'error', code: e.code, message: e.message }));
    sock.on('close', (hadError) => {
      out({ server: 'close', hadError, lgrs: lgrs() });
      // --freed: the peer was killed; its link group must go (bounded wait), with what it held.
      if (values.freed) reportFreed('server');
    });
    if (service === 'echo') {
      sock.pipe(sock);
      sock.once('data', () => out({ server: 'conn', mode: info().mode, lgrs: lgrs() }));
    } else if (service === 'count') {
      let n = 0;
      const h = createHash('sha256');
      sock.on('data', (d: Buffer) => { n += d.length; h.update(d); });
      sock.on('end', () => {
        out({ server: 'end', bytes: n, mode: info().mode });
        sock.end(`${n} ${h.digest('hex')}\n`);
      });
    } else if (service === 'reset') {
      // Read one chunk, stop reading, and close once bytes wait unread in the RMB: TCP's rule
      // makes that an abort (peer_conn_abort), the peer's ECONNRESET.
      sock.once('data', () => {
        sock.pause();
        const deadline = Date.now() + 10_000;
        const look = () => {
          const unread = smcState(sock)?.conn?.unreadNow() ?? 0;
          if (unread > 0 || Date.now() > deadline) {
            out({ server: 'destroying', unread, mode: info().mode });
            sock.destroy();
          } else setImmediate(look);
        };
        look();
      });
    } else {
      let n = 0;
      sock.on('data', (d: Buffer) => { n += d.length; });
      sock.once('data', () => out({ server: 'conn', mode: info().mode }));
      setInterval(() => out({ server: 'sink', bytes: n }), 200).unref();
    }
  });
  return new Promise<void>((resolve) => server.listen(port, values.bind, () => { out({ listening: port }); resolve(); }));
}

if (role === 'server' || role === 'self') {
  const listening: Array<Promise<unknown>> = [];
  for (const l of values.listen!.split(',')) {
    const [service, port] = l.split(':');
    listening.push(serve(service!, Number(port)));
  }
  await Promise.all(listening);
}
if (role !== 'server') {
  const mib = Number(values.mib);
  // discovery: false proposes without the SIDR query first (smcr-discovery.test.ts tests that):
  // these tests are about the handshake and the data path, including a server that declines and
  // a RoCE path that carries nothing, which discovery would keep from ever seeing a Proposal.
  const connect = () => smc.connect({ host: values.peer!, port: Number(values.port), localAddress: values.bind!, smcr: { device, discovery: false } });
  const fail = (e: Error) => { out({ client: 'fail', message: e.message, stack: e.stack }); process.exit(1); };
  const echo = (seed: number) => new Promise<Record<string, unknown>>((resolve, reject) => {
    const sock = connect();
    const data = pattern(mib << 20, seed);
    const got: Buffer[] = [];
    let n = 0;
    const t0 = performance.now();
    sock.on('error', reject);
    // First 100,000 bytes alone, then the rest: the cursors are then off the ring's power-of-two
    // boundaries, so writes wrap the ring (two RDMA WRITEs each) at both ends.
    const FIRST = 100_000;
    let rest = false;
    sock.on('connect', () => { sock.write(data.subarray(0, FIRST)); });
    sock.on('data', (d: Buffer) => {
      got.push(d);
      n += d.length;
      if (!rest && n >= FIRST) {
        rest = true;
        for (let off = FIRST; off < data.length; off += 256 * 1024) sock.write(data.subarray(off, Math.min(off + 256 * 1024, data.length)));
      }
      if (n >= data.length) {
        const ms = performance.now() - t0;
        const all = Buffer.concat(got);
        const ok = all.equals(data);
        // Where a wrong stream first differs, and its bytes there: what a failure report needs.
        let diffAt: number | undefined;
        if (!ok) { diffAt = 0; while (diffAt < all.length && all[diffAt] === data[diffAt]) diffAt++; }
        const diff = diffAt === undefined ? undefined : { at: diffAt, got: all.subarray(diffAt, diffAt + 48).toString('hex') };
        const info = smc.getSmcInfo(sock);
        const wrapWrites = (smcState(sock)?.conn as { wrapWrites?: number } | undefined)?.wrapWrites;
        sock.end();
        sock.on('close', (hadError) => resolve({ client: 'echo', ok, bytes: n, ms: Math.round(ms), mode: info.mode, fallbackReason: info.fallbackReason, peerDeclineReason: info.peerDeclineReason, bufferSize: info.bufferSize, peerBufferSize: info.peerBufferSize, smcBytesSent: info.smcBytesSent, wrapWrites, hadError, diff }));
      }
    });
  });
  try {
    if (values.test === 'echo') {
      out(await echo(1));
    } else if (values.test === 'two') {
      // A second connection to the same peer reuses the link group (no second CONFIRM_LINK).
      out(await echo(2));
      const before = lgrs();
      out({ ...(await echo(3)), lgrsBefore: before, lgrsAfter: lgrs() });
      const both = await Promise.all([echo(4), echo(5)]);
      out({ client: 'parallel', ok: both.every((r) => r.ok && r.mode === 'SMCR'), lgrs: lgrs() });
    } else if (values.test === 'halfclose') {
      const sock = connect();
      const data = pattern(mib << 20, 9);
      const events: string[] = [];
      let reply = '';
      sock.setEncoding('utf8');
      sock.on('error', (e) => events.push(`error ${(e as NodeJS.ErrnoException).code}`));
      sock.on('data', (d: string) => { reply += d; });
      sock.on('end', () => events.push('end'));
      sock.on('finish', () => events.push('finish'));
      sock.on('connect', () => { sock.write(data); sock.end(); });
      sock.on('close', (hadError) => {
        events.push(`close ${hadError}`);
        out({ client: 'halfclose', reply: reply.trim(), expected: `${data.length} ${createHash('sha256').update(data).digest('hex')}`, events, mode: smc.getSmcInfo(sock).mode });
      });
    } else if (values.test === 'held') {
      // --mib N connections opened one after the other, each kept open: how each settled (the
      // combined Proposal's server chooses SMC-D, or SMC-R once its DMBs for us are used up).
      const socks: smc.Socket[] = [];
      const modes: Array<{ mode: string; echo: boolean; cause?: string; lgrRole?: string }> = [];
      for (let i = 0; i < mib; i++) {
        const sock = connect();
        socks.push(sock);
        modes.push(await new Promise<{ mode: string; echo: boolean; cause?: string; lgrRole?: string }>((resolve, reject) => {
          sock.once('error', reject);
          sock.once('connect', () => sock.write(`held ${i}`));
          sock.once('data', (d: Buffer) => resolve({ mode: smc.getSmcInfo(sock).mode, echo: d.toString() === `held ${i}`, ...(smc.getSmcInfo(sock).fallbackCause ? { cause: smc.getSmcInfo(sock).fallbackCause } : {}),
            ...((smcState(sock)?.conn as { lgr?: SmcrLinkGroup } | undefined)?.lgr ? { lgrRole: (smcState(sock)!.conn as unknown as { lgr: SmcrLinkGroup }).lgr.role } : {}) }));
        }));
      }
      out({ client: 'held', modes, lgrs: lgrs() });
      await Promise.all(socks.map((sock) => new Promise((resolve) => { sock.on('close', resolve); sock.end(); })));
      process.exit(0);
    } else if (values.test === 'stream') {
      // Write until the peer goes away; report how the socket learnt of it.
      const sock = connect();
      const chunk = pattern(64 * 1024, 7);
      let sent = 0;
      sock.once('smc', (info: smc.SmcInfo) => out({ client: 'settled', mode: info.mode }));
      sock.on('connect', () => {
        const pump = () => { while (sock.write(chunk)) { sent += chunk.length; if (sock.destroyed) return; } sent += chunk.length; };
        sock.on('drain', pump);
        pump();
      });
      sock.on('error', (e: NodeJS.ErrnoException & { smcCause?: string }) => out({ client: 'error', code: e.code, message: e.message, smcCause: e.smcCause, sent, at: Date.now() }));
      sock.on('close', (hadError) => {
        out({ client: 'close', hadError, at: Date.now() });
        // --freed: the peer was killed; wait (bounded) for the link group to go, and say what is left.
        if (values.freed) reportFreed('client', () => process.exit(0));
        else process.exit(0);
      });
    }
  } catch (e) {
    fail(e as Error);
  }
}
