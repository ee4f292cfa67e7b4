// SMC-R as the tools see it: one SMC-R connection between two processes in two network
// namespaces (smcr-status-peer.ts), and from outside both, `softrdma smcss -R` and
// `softrdma linkgroup` (show, link-show, -d, -dd, an LG-ID, ibdev, netdev, --json) print each
// process's connection, link group and link with smc-tools' columns, carrying the values the
// processes report through getSmcInfo(). The expected lines are written out here from those
// values, column by column as smcss.c and linkgroup.c print them. Skipped, saying why, when
// namespaces cannot be made.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { jsonLines, run, runNode, type Proc } from '../helpers/procs.js';
import { testRuntimeDir } from '../helpers/runtime-dir.js';
import { deleteNamespaces, setUpVethPair } from '../helpers/netns.js';
import type { SmcInfo, SmcrLinkGroupStatus } from '../../src/smc/index.js';

testRuntimeDir('smcr-status');

const PEER = fileURLToPath(new URL('./smcr-status-peer.js', import.meta.url));
const tag = `ls${process.pid % 100000}`;
const NS_A = `${tag}a`, NS_B = `${tag}b`;
const ADDR_A = '10.233.11.1', ADDR_B = '10.233.11.2';
const PORT = 7201;
/** The server's device name fits smc-tools' 8-character IB-Dev column; the client's is cut to 8. */
const DEV_A = 'rxe_lgs', DEV_B = 'rxe_lgclient';

const skip = setUpVethPair({ tag, nsA: NS_A, nsB: NS_B, addrA: ADDR_A, addrB: ADDR_B });

const hex8 = (n: number) => n.toString(16).padStart(8, '0');
/** An IPv4 address's RoCEv2 GID (::ffff:a.b.c.d) as Linux prints GIDs: eight %04x groups. */
function gidOf(addr: string): string {
  const [a, b, c, d] = addr.split('.').map(Number) as [number, number, number, number];
  return `0000:0000:0000:0000:0000:ffff:${hex8((a << 8) | b).slice(4)}:${hex8((c << 8) | d).slice(4)}`;
}

async function cli(args: string[]): Promise<string> {
  const p = run(args);
  const code = await p.exit(20_000);
  assert.equal(code, 0, p.stderr);
  assert.equal(p.stderr, '');
  return p.stdout;
}

/** Lines after the header, sorted: the processes answer in no fixed order. Trailing blanks are smcss's and smc-tools'. */
const body = (text: string) => text.replace(/\n$/, '').split('\n').slice(1).sort();

interface Settled { info: SmcInfo; totals: { smcr: number }; localPort: number; peerPort: number }

test('smcss -R and linkgroup show an SMC-R connection, its link group and link in both processes', { skip }, async (t) => {
  const procs: Proc[] = [];
  t.after(async () => {
    for (const p of procs) p.child.kill('SIGKILL');
    await Promise.all(procs.map((p) => p.exit(5000).catch(() => undefined)));
    deleteNamespaces(NS_A, NS_B);
  });
  const srv = runNode(PEER, ['server', '--bind', ADDR_A, '--port', String(PORT), '--name', DEV_A], { netns: NS_A });
  procs.push(srv);
  await srv.waitFor(/"listening"/);
  const cl = runNode(PEER, ['client', '--bind', ADDR_B, '--peer', ADDR_A, '--port', String(PORT), '--name', DEV_B], { netns: NS_B });
  procs.push(cl);
  await cl.waitFor(/"echoed":"hello"/, 30_000);
  const settled = (p: Proc) => p.waitUntil((o) => jsonLines(o).find((l) => l.settled) as Settled | undefined, 'the settled line');
  const c = await settled(cl);
  const s = await settled(srv);

  // getSmcInfo(): SMCR, with the link group and link; each end's view mirrors the other's.
  assert.equal(c.info.mode, 'SMCR');
  assert.equal(s.info.mode, 'SMCR');
  const cr = c.info.smcr!, sr = s.info.smcr!;
  assert.ok(cr && sr, JSON.stringify({ c, s }));
  assert.equal(cr.linkGroup.role, 'client');
  assert.equal(sr.linkGroup.role, 'server');
  for (const r of [cr, sr]) {
    assert.equal(r.linkGroup.type, 'SINGLE');
    assert.equal(r.linkGroup.conns, 1);
    assert.equal(r.linkGroup.id & 0xff, 0, 'a link group id has its low byte clear');
    assert.equal((r.link.uid & 0xffffff00) >>> 0, r.linkGroup.id, 'the link UID names its group');
    assert.equal(r.link.id, 1);
    assert.equal(r.link.state, 'LINK_ACTIVE');
    assert.match(r.linkGroup.peerSystemId, /^[0-9a-f]{16}$/);
    assert.ok([256, 512, 1024, 2048, 4096].includes(r.link.mtu));
  }
  assert.notEqual(cr.linkGroup.id, sr.linkGroup.id);
  assert.equal(cr.link.gid, gidOf(ADDR_B));
  assert.equal(cr.link.peerGid, gidOf(ADDR_A));
  assert.equal(cr.linkGroup.peerGid, gidOf(ADDR_A));
  assert.equal(sr.link.gid, gidOf(ADDR_A));
  assert.equal(sr.link.peerGid, gidOf(ADDR_B));
  assert.equal(sr.linkGroup.peerGid, gidOf(ADDR_B));
  assert.equal(cr.link.peerQpn, sr.link.qpn);
  assert.equal(sr.link.peerQpn, cr.link.qpn);
  assert.equal(cr.link.mtu, sr.link.mtu);
  assert.equal(cr.link.ibDev, DEV_B);
  assert.equal(sr.link.ibDev, DEV_A);
  // smcTotals() counts SMC-R connections.
  assert.equal(c.totals.smcr, 1);
  assert.equal(s.totals.smcr, 1);

  const pid7 = (p: Proc) => String(p.child.pid).padStart(7, '0');
  // ip netns exec runs node in place of itself, so the child's pid is the peer's.
  const clientLocal = `${ADDR_B}:${c.localPort}`, serverLocal = `${ADDR_A}:${PORT}`;

  await t.test('smcss -R: Role, IB-device, Port, Linkid, GID and Peer-GID of both ends', async () => {
    const text = await cli(['smcss', '-R']);
    assert.equal(text.split('\n')[0], 'State          UID   Inode   Local Address           Peer Address            Intf Mode Role IB-device       Port Linkid GID                                      Peer-GID');
    assert.deepEqual(body(text), [
      `ACTIVE         00000 ${pid7(cl)} ${clientLocal.padEnd(23)} ${serverLocal.padEnd(23)} 0000 SMCR CLNT ${DEV_B.padEnd(15)} 01   01     ${gidOf(ADDR_B).padEnd(40)} ${gidOf(ADDR_A)}`,
      `ACTIVE         00000 ${pid7(srv)} ${serverLocal.padEnd(23)} ${clientLocal.padEnd(23)} 0000 SMCR SERV ${DEV_A.padEnd(15)} 01   01     ${gidOf(ADDR_A).padEnd(40)} ${gidOf(ADDR_B)}`,
    ].sort());
    // -D shows SMC-D sockets only: neither; -R -d: -d's columns, then -R's.
    assert.equal(body(await cli(['smcss', '-D'])).length, 0);
    const rd = body(await cli(['smcss', '-R', '-d']));
    assert.equal(rd.length, 2);
    for (const l of rd) assert.match(l, / SMCR  <->  [0-9a-f]{8} (?:[0-9a-f]{8} ){3}.* (?:CLNT|SERV) rxe_lg\S* +01 {3}01 {5}0000:/);
    // -a adds the server's listener (Linux reports a socket without a link group as SMC-R).
    const ra = body(await cli(['smcss', '-R', '-a']));
    assert.ok(ra.includes(`LISTEN         00000 ${pid7(srv)} ${serverLocal.padEnd(23)} `), ra.join('\n'));
  });

  const lgLine = (r: typeof cr, role: string) => `${hex8(r.linkGroup.id)} ${role}     SINGLE      0       1  ${' '.repeat(17)}`;

  await t.test('linkgroup show: LG-ID, LG-Role, LG-Type, VLAN, #Conns, PNET-ID', async () => {
    const text = await cli(['linkgroup', 'show']);
    assert.equal(text.split('\n')[0], 'LG-ID    LG-Role  LG-Type  VLAN  #Conns  PNET-ID ');
    assert.deepEqual(body(text), [lgLine(cr, 'CLNT'), lgLine(sr, 'SERV')].sort());
    // No argument is show; any prefix of show is too.
    assert.equal(await cli(['linkgroup']), text);
    assert.equal(await cli(['linkgroup', 'sh', 'all']), text);
    // An LG-ID, or a link's UID, picks one group; one that is not there leaves the header alone.
    assert.deepEqual(body(await cli(['linkgroup', 'show', hex8(sr.linkGroup.id)])), [lgLine(sr, 'SERV')]);
    assert.deepEqual(body(await cli(['linkgroup', 'show', hex8(cr.link.uid)])), [lgLine(cr, 'CLNT')]);
    const none = (cr.linkGroup.id ^ 0x80000000) === sr.linkGroup.id ? 0x100 : (cr.linkGroup.id ^ 0x80000000) >>> 0;
    assert.equal(await cli(['linkgroup', 'show', hex8(none)]), 'LG-ID    LG-Role  LG-Type  VLAN  #Conns  PNET-ID \n');
  });

  await t.test('linkgroup -d show LG-ID: the details block', async () => {
    const text = await cli(['linkgroup', '-d', 'show', hex8(cr.linkGroup.id)]);
    assert.equal(text, [
      `LG-ID    : ${hex8(cr.linkGroup.id)}`, 'LG-Role  : CLNT', 'LG-Type  : SINGLE', 'VLAN     : 0', 'PNET-ID  : ', 'Version  : 2',
      '#Conns   : 1', `Sndbuf   : ${cr.linkGroup.sndbufAlloc} B`, `RMB      : ${cr.linkGroup.rmbAlloc} B`, '',
    ].join('\n'));
    assert.equal(cr.linkGroup.rmbAlloc, c.info.bufferSize);
    // Both groups: blocks separated by an empty line, no header.
    assert.equal((await cli(['linkgroup', '--details'])).split('\n\n').length, 2);
  });

  /** A link-show row: -d adds Link-UID, Peer-UID (the other end's Link-UID, from its CONFIRM_LINK), IB-Dev, IB-P; -dd the GIDs. */
  const linkLine = (r: typeof cr, role: string, netdev: string, ib: string, dd = true) =>
    `${hex8(r.linkGroup.id)} ${role}     SINGLE   ${netdev.padEnd(15)} LINK_ACTIVE          1  ${hex8(r.link.uid)}  ${hex8((r === cr ? sr : cr).link.uid)}  ${ib.padEnd(8)}     1  ` +
    (dd ? `${r.link.gid.padEnd(40)}  ${r.link.peerGid}  ` : '');

  await t.test('linkgroup link-show, -d, -dd: Net-Dev, Link-State, #Conns, Link-UID, Peer-UID, IB-Dev, IB-P, GIDs; ibdev and netdev', async () => {
    const plain = await cli(['linkgroup', 'link-show']);
    assert.equal(plain.split('\n')[0], 'LG-ID    LG-Role  LG-Type  Net-Dev         Link-State      #Conns  ');
    assert.deepEqual(body(plain), [
      `${hex8(cr.linkGroup.id)} CLNT     SINGLE   ${`${tag}vb`.padEnd(15)} LINK_ACTIVE          1  `,
      `${hex8(sr.linkGroup.id)} SERV     SINGLE   ${`${tag}va`.padEnd(15)} LINK_ACTIVE          1  `,
    ].sort());
    const d = await cli(['linkgroup', '-d', 'link-show']);
    assert.equal(d.split('\n')[0], 'LG-ID    LG-Role  LG-Type  Net-Dev         Link-State      #Conns  Link-UID  Peer-UID  IB-Dev    IB-P  ');
    const dd = await cli(['linkgroup', '-dd', 'link-show']);
    assert.equal(dd.split('\n')[0], 'LG-ID    LG-Role  LG-Type  Net-Dev         Link-State      #Conns  Link-UID  Peer-UID  IB-Dev    IB-P  Local-GID                                 Peer-GID  ');
    const expected = [linkLine(cr, 'CLNT', `${tag}vb`, DEV_B.slice(0, 8)), linkLine(sr, 'SERV', `${tag}va`, DEV_A)].sort();
    assert.deepEqual(body(dd), expected);
    assert.deepEqual(body(d), [linkLine(cr, 'CLNT', `${tag}vb`, DEV_B.slice(0, 8), false), linkLine(sr, 'SERV', `${tag}va`, DEV_A, false)].sort());
    assert.deepEqual(body(await cli(['linkgroup', '-dd', 'link-show', 'ibdev', DEV_A])), [linkLine(sr, 'SERV', `${tag}va`, DEV_A)]);
    assert.deepEqual(body(await cli(['linkgroup', '-dd', 'l', 'netdev', `${tag}vb`])), [linkLine(cr, 'CLNT', `${tag}vb`, DEV_B.slice(0, 8))]);
  });

  await t.test('linkgroup --json: the link groups with their pids and links', async () => {
    const groups = JSON.parse(await cli(['linkgroup', '--json'])) as Array<SmcrLinkGroupStatus & { pid: number }>;
    assert.equal(groups.length, 2);
    const mine = groups.find((g) => g.pid === cl.child.pid)!;
    assert.equal(mine.id, cr.linkGroup.id);
    assert.equal(mine.links[0]!.qpn, cr.link.qpn);
    assert.equal(mine.links[0]!.peerQpn, cr.link.peerQpn);
    assert.equal(mine.links[0]!.netDev, `${tag}vb`);
  });
});
