// The softrdma side of scripts/interop/smcr-linux.sh (SMC-R against Linux 6.1's own SMC in the
// rxe VM). Runs in the namespace; makes an rxe device on --bind and uses softrdma/smc with
// `smcr: { device, discovery: false }` (a Linux host cannot answer softrdma's SIDR discovery).
// Prints one JSON line per event; the last line is {"done":...,"ok":true|false}.
//
//   node smcr-linux-peer.mjs client --bind 10.77.0.1 --peer 10.77.0.2 --port P --mib 16 --more K
//     one echo of MiB of the xorshift32 pattern (test/helpers/pattern.ts, seed 1) through the
//     Linux echo server, verified byte for byte, then K more: one after another on the same link
//     group, then two at once (link group reuse: no second CONFIRM_LINK; Linux announces no
//     extra rkeys on a one-link group, it only answers our CONFIRM_RKEY when there is a second link)
//   node smcr-linux-peer.mjs server --bind 10.77.0.1 --port P --count N
//     echo server for N connections (the Linux client), prints each one's mode, bytes, FNV-1a
// Both wait LINGER ms (default 2000) after the last connection before the last line, so the
// DELETE_RKEYs Linux sends as it frees its RMBs get their answers; the link groups in that line
// carry their rtoken table size and count of negative CONFIRM_RKEY/DELETE_RKEY answers.

import { parseArgs } from 'node:util';
import { createRxeDevice } from '../../dist/src/index.js';
import * as smc from '../../dist/src/smc/index.js';
import { SmcrLinkGroup } from '../../dist/src/smc/smcr/lgr.js';
import { pattern } from '../../dist/test/helpers/pattern.js';

const { positionals, values } = parseArgs({
  allowPositionals: true,
  options: {
    bind: { type: 'string' }, peer: { type: 'string' }, port: { type: 'string' }, mib: { type: 'string', default: '16' },
    more: { type: 'string', default: '3' }, count: { type: 'string', default: '1' },
  },
});
const role = positionals[0];
const out = (o) => process.stdout.write(`${JSON.stringify(o)}\n`);
const hex = (n) => (n === undefined ? undefined : `0x${(n >>> 0).toString(16).padStart(8, '0')}`);

function fnv1a(h, b) {
  for (let i = 0; i < b.length; i++) { h ^= b[i]; h = Math.imul(h, 16777619) >>> 0; }
  return h >>> 0;
}
const lgrs = () => SmcrLinkGroup.list().map((g) => ({
  role: g.role, conns: g.conns.size, qpn: g.link.qp.qpn, peerQpn: g.link.remote?.qpn, confirmed: g.confirmed, links: g.activeLinks().length,
  rtokens: g.rtokenCount, rkeyNegative: g.rx.rkeyNegative, deleteRkeys: g.llcRx.DELETE_RKEY ?? 0,
}));
const LINGER = Number(process.env.LINGER ?? 2000);
const linger = () => new Promise((r) => setTimeout(r, LINGER));
const infoOf = (sock) => {
  const i = smc.getSmcInfo(sock);
  return { mode: i.mode, fallbackReason: hex(i.fallbackReason), peerDeclineReason: hex(i.peerDeclineReason), bufferSize: i.bufferSize, peerBufferSize: i.peerBufferSize, smcBytesSent: i.smcBytesSent, smcBytesReceived: i.smcBytesReceived };
};

const device = await createRxeDevice({ address: values.bind, port: 4791, name: `rxe_${role}` });
device.unref();

if (role === 'server') {
  const count = Number(values.count);
  let closed = 0, good = 0;
  const server = smc.createServer({ smcr: { device, discovery: false } }, (sock) => {
    let n = 0, h = 2166136261, info;
    const t0 = performance.now();
    sock.on('data', (d) => { if (!info) info = infoOf(sock); n += d.length; h = fnv1a(h, d); });
    sock.pipe(sock);
    sock.on('error', (e) => out({ server: 'error', code: e.code, message: e.message }));
    sock.on('close', async (hadError) => {
      info ??= infoOf(sock);
      const ok = !hadError && info.mode === 'SMCR';
      if (ok) good++;
      out({ server: 'conn', n: closed, bytes: n, fnv1a: h.toString(16).padStart(8, '0'), ms: Math.round(performance.now() - t0), hadError, ...info, lgrs: lgrs() });
      if (++closed === count) {
        server.close();
        await linger();
        out({ done: 'server', ok: good === count, conns: count, smcr: good, lgrs: lgrs() });
        setTimeout(() => process.exit(good === count ? 0 : 1), 200);
      }
    });
  });
  server.listen(Number(values.port), values.bind, () => out({ listening: Number(values.port) }));
} else {
  const bytes = Number(values.mib) << 20;
  const echo = (seed, size = bytes) => new Promise((resolve) => {
    const sock = smc.connect({ host: values.peer, port: Number(values.port), localAddress: values.bind, smcr: { device, discovery: false } });
    const data = pattern(size, seed);
    const got = [];
    let n = 0, info, ended = false;
    const t0 = performance.now();
    sock.on('error', (e) => resolve({ client: 'echo', seed, ok: false, error: `${e.code} ${e.message}`, ...infoOf(sock) }));
    // Odd-sized writes, one per turn of the loop: each becomes its own RDMA WRITE at an offset
    // of the Linux peer's RMB that is no multiple of anything (Linux's RMB addresses are above
    // 2^53, where a number address would have put them at a multiple of 2048).
    const CHUNK = 65536 - 7;
    sock.on('connect', () => {
      let off = 0;
      const next = () => {
        if (off >= data.length || sock.destroyed) return;
        sock.write(data.subarray(off, Math.min(off + CHUNK, data.length)));
        off += CHUNK;
        setImmediate(next);
      };
      next();
    });
    sock.on('data', (d) => {
      got.push(d);
      n += d.length;
      if (n >= data.length && !info) { info = infoOf(sock); sock.end(); }
    });
    sock.on('end', () => { ended = true; });
    sock.on('close', (hadError) => {
      const ms = performance.now() - t0;
      const all = Buffer.concat(got);
      const same = all.equals(data);
      let diffAt;
      if (!same) { diffAt = 0; while (diffAt < all.length && all[diffAt] === data[diffAt]) diffAt++; }
      info ??= infoOf(sock);
      resolve({ client: 'echo', seed, ok: same && !hadError && ended && info.mode === 'SMCR', bytes: n, fnv1a: fnv1a(2166136261, data).toString(16).padStart(8, '0'), same, diffAt, ms: Math.round(ms), mbps: +(2 * size / ms / 1000).toFixed(1), hadError, peerEnded: ended, ...info, lgrs: lgrs() });
    });
  });
  const results = [];
  const r1 = await echo(1);
  out(r1); results.push(r1);
  const more = Number(values.more);
  if (r1.mode === 'SMCR') {
    // Sequential ones, then two at once: all in the first connection's link group.
    const parallel = more >= 2 ? 2 : 0;
    for (let k = 0; k < more - parallel; k++) { const r = await echo(10 + k, 1 << 20); out(r); results.push(r); }
    if (parallel) { const rs = await Promise.all([echo(20, 1 << 20), echo(21, 1 << 20)]); for (const r of rs) { out(r); results.push(r); } }
  }
  await linger();
  const groups = SmcrLinkGroup.list().length;
  const ok = results.length === 1 + more && results.every((r) => r.ok) && groups === 1;
  out({ done: 'client', ok, conns: results.length, smcr: results.filter((r) => r.mode === 'SMCR').length, linkGroups: groups, lgrs: lgrs() });
  setTimeout(() => process.exit(ok ? 0 : 1), 200);
}
