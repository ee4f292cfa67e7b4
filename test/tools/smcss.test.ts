// smcss -D and -d on a real SMC-D connection between two processes: the columns smc-tools'
// smcss.c prints (GIDs and DMB tokens as %016llx, the link id as %08x; the connection token,
// sizes and flags as %08x / %02x:%02x, cursors as %04x:%08x) carry the values each process
// holds for the connection, read from the processes themselves, and each end's -D row
// mirrors the other's. One end half-closes, so the flags and Shutd are not all zeros.

import assert from 'node:assert/strict';
import { once } from 'node:events';
import { test } from 'node:test';
import { run, runNode } from '../helpers/procs.js';
import { testRuntimeDir } from '../helpers/runtime-dir.js';
import net from '../../src/smc/index.js';
import { defaultIsmDevice } from '../../src/ism/index.js';
import { smcState } from '../../src/smc/state.js';
import type { SmcdConnection } from '../../src/smc/smcd-connection.js';
import type { ConnectionStatus } from '../../src/smc/status.js';

testRuntimeDir('smcss');

const hex64 = (v: bigint) => v.toString(16).padStart(16, '0');
const hex8 = (n: number) => n.toString(16).padStart(8, '0');

/** The server end in its own process: echoes, keeps its write side open after the client's end, and prints its GID and tokens. */
const SERVER = `
  const { default: net } = await import(${JSON.stringify(new URL('../../src/smc/index.js', import.meta.url).href)});
  const { defaultIsmDevice } = await import(${JSON.stringify(new URL('../../src/ism/index.js', import.meta.url).href)});
  const { smcState } = await import(${JSON.stringify(new URL('../../src/smc/state.js', import.meta.url).href)});
  const hex = (v) => v.toString(16).padStart(16, '0');
  const server = net.createServer({ allowHalfOpen: true }, (s) => {
    s.on('smc', (info) => {
      const c = smcState(s).conn;
      console.log(JSON.stringify({ mode: info.mode, port: s.remotePort, gid: hex(defaultIsmDevice().gid), token: hex(c.rx.token), peerGid: hex(c.tx.peerGid), peerToken: hex(c.tx.token) }));
    });
    s.on('data', (d) => s.write(d));
    s.on('end', () => console.log('peer ended'));
  });
  server.listen(0, '127.0.0.1', () => console.log('port ' + server.address().port));
`;

async function smcss(args: string[]): Promise<string> {
  const p = run(['smcss', ...args]);
  const code = await p.exit(20_000);
  assert.equal(code, 0, p.stderr);
  return p.stdout;
}

/** The row of the connection whose local port is `port`, split into columns (its trailing blank, smcss.c's, left out). */
function row(text: string, port: number): string[] {
  const line = text.split('\n').find((l) => new RegExp(`^\\S+ +\\d{5} \\d{7} (::ffff:)?127\\.0\\.0\\.1:${port} `).test(l));
  assert.ok(line, `no row for local port ${port} in\n${text}`);
  assert.ok(line.endsWith(' '), `smcss.c ends -D and -d rows with a blank: ${JSON.stringify(line)}`);
  return line.trimEnd().split(/ +/);
}

test('smcss -D and -d show the GIDs, DMB tokens, connection token, sizes, cursors and flags of a live SMC-D connection', async (t) => {
  const srv = runNode('-e', [SERVER], { execArgv: ['--input-type=module'] });
  t.after(async () => { srv.child.kill(); await srv.exit(); });
  const [, portText] = await srv.waitFor(/^port (\d+)$/m);

  const sock = net.connect(Number(portText), '127.0.0.1');
  t.after(() => sock.destroy());
  const [info] = await once(sock, 'smc') as [{ mode: string }];
  assert.equal(info.mode, 'SMCD');
  const peer = JSON.parse((await srv.waitFor(/^\{"mode".*\}$/m))[0]) as Record<string, string | number>;
  assert.equal(peer.mode, 'SMCD');
  assert.equal(peer.port, sock.localPort);

  // 5 bytes there and back, then the client finishes writing: peer_done_writing in its CDC.
  sock.write('hello');
  await once(sock, 'data');
  sock.end();
  await srv.waitFor(/^peer ended$/m);

  // The SMC-D transport's own fields: the DMBs it was built on.
  const conn = smcState(sock)!.conn as SmcdConnection;
  const mine = { gid: hex64(defaultIsmDevice().gid), token: hex64(conn.rx.token), peerGid: hex64(conn.tx.peerGid), peerToken: hex64(conn.tx.token) };
  // Two processes, two devices; each end's view is the other's mirrored.
  assert.notEqual(mine.gid, mine.peerGid);
  assert.deepEqual({ gid: peer.gid, token: peer.token, peerGid: peer.peerGid, peerToken: peer.peerToken },
    { gid: mine.peerGid, token: mine.peerToken, peerGid: mine.gid, peerToken: mine.token });

  // -D: smcss.c's header, then per row: ... Mode, GID, Token, Peer-GID, Peer-Token, Linkid.
  const d = await smcss(['-D']);
  assert.match(d.split('\n')[0]!, /^State {10}UID {3}Inode {3}Local Address {11}Peer Address {12}Intf Mode GID {14}Token {12}Peer-GID {9}Peer-Token {7}Linkid$/);
  const client = row(d, sock.localPort!);
  const server = row(d, Number(portText));
  // Linux's state names for the half-close: we finished writing first, the server saw it.
  assert.equal(client[0], 'PEERCLOSEWAIT1');
  assert.equal(server[0], 'APPCLOSEWAIT1');
  assert.deepEqual(client.slice(6), ['SMCD', mine.gid, mine.token, mine.peerGid, mine.peerToken, '00000000']);
  assert.deepEqual(server.slice(6), ['SMCD', mine.peerGid, mine.peerToken, mine.gid, mine.token, '00000000']);
  assert.equal(client[2], String(process.pid).padStart(7, '0'));
  assert.equal(server[2], String(srv.child.pid).padStart(7, '0'));

  // -d: Shutd, Token, Sndbuf, Rcvbuf, Peerbuf, rxprod, rxcons, rxFlags, txprod, txcons, txFlags, txprep, txsent, txfin.
  const dd = await smcss(['-d']);
  const c = row(dd, sock.localPort!).slice(7);
  const s = row(dd, Number(portText)).slice(7);
  const five = '0000:00000005';
  // The client: shut for writing (<-W), sent peer_done_writing (tx conn flags 0x80), all 5 bytes acknowledged both ways.
  assert.deepEqual([c[0], ...c.slice(2)], ['<-W', hex8(conn.txRing), hex8(conn.rxRing), hex8(conn.txRing), five, five, '00:00', five, five, '00:80', five, five, five]);
  // The server: the peer finished writing (R->), received peer_done_writing (rx conn flags 0x80).
  assert.deepEqual([s[0], ...s.slice(2)], ['R->', hex8(conn.rxRing), hex8(conn.txRing), hex8(conn.rxRing), five, five, '00:80', five, five, '00:00', five, five, five]);
  assert.match(c[1]!, /^[0-9a-f]{8}$/);
  assert.notEqual(c[1], '00000000');
  // -e (--extended): smc-tools' later name for the same columns.
  assert.deepEqual(row(await smcss(['-e']), sock.localPort!).slice(7, 9), c.slice(0, 2));

  // --json: the same, by name, for scripts; the token stays the connection's from one look to the next.
  const rows = JSON.parse(await smcss(['--json'])) as Array<ConnectionStatus & { pid: number }>;
  const j = rows.find((r) => r.pid === process.pid && r.localPort === sock.localPort)!;
  assert.deepEqual(j.dmbinfo, { ...mine, linkId: 0 });
  assert.equal(j.shutdown, 2);
  assert.equal(hex8(j.conninfo!.token), c[1]);
  assert.deepEqual(j.conninfo!.txFlags, ['peer_done_writing']);
  assert.deepEqual(j.conninfo!.rxFlags, []);
  const js = rows.find((r) => r.pid === srv.child.pid)!;
  assert.deepEqual(js.conninfo!.rxFlags, ['peer_done_writing']);
  assert.equal(js.shutdown, 1);

  // -D -d together: smcss.c prints -d's columns, then -D's.
  const both = row(await smcss(['-D', '-d']), sock.localPort!);
  assert.deepEqual(both.slice(-5), [mine.gid, mine.token, mine.peerGid, mine.peerToken, '00000000']);
  assert.equal(both[8], c[1]);
});
