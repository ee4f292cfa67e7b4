// softrdma linkgroup against smc-tools' linkgroup.c: the headers print_lgr_smcr_header prints,
// rows as show_lgr_smcr_info's printf formats lay them out (%08x, %-8s, %#4x, %6d, %-15s,
// %-.8s, %4d, %-40s), the details block, filter_smcr_item's rules and handle_cmd_params'
// arguments (prefixes, all, LG-ID, ibdev, netdev). Fixed link groups, fixed expected text.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import * as linkgroupModule from '../../src/tools/linkgroup.js';
import { formatLinkgroups, linkgroupHeader, parseLinkgroupArgs } from '../../src/tools/linkgroup.js';
import type { SmcrLinkGroupStatus } from '../../src/smc/smcr/diag.js';
import { gidText } from '../../src/smc/smcr/diag.js';
import { run } from '../helpers/procs.js';
import { testRuntimeDir } from '../helpers/runtime-dir.js';

const runtime = testRuntimeDir('linkgroup');

const G1 = '0000:0000:0000:0000:0000:ffff:0a00:0001';
const G2 = '0000:0000:0000:0000:0000:ffff:0a00:0002';
const groups: SmcrLinkGroupStatus[] = [
  {
    id: 0x12345600, role: 'server', type: 'SINGLE', vlan: 0, pnetId: '', version: 2, conns: 3, sndbufAlloc: 3 << 20, rmbAlloc: 3 << 16,
    peerSystemId: '0102020000000a02', peerGid: G2,
    links: [{ id: 1, uid: 0x12345677, peerUid: 0, state: 'LINK_ACTIVE', conns: 3, ibDev: 'rxe0', ibPort: 1, gid: G1, peerGid: G2, qpn: 17, peerQpn: 18, mtu: 1024, netDev: 'eth0' }],
  },
  {
    id: 0xabcdef00, role: 'client', type: 'NONE', vlan: 0, pnetId: '', version: 2, conns: 0, sndbufAlloc: 0, rmbAlloc: 0,
    peerSystemId: '', peerGid: G1,
    links: [{ id: 1, uid: 0xabcdef42, peerUid: 0, state: 'LINK_ACTIVATING', conns: 0, ibDev: 'rxe_a_long_name', ibPort: 1, gid: G2, peerGid: G1, qpn: 19, peerQpn: 0, mtu: 1024, netDev: 'a-very-long-interface' }],
  },
];
const opts = (args: string[]) => parseLinkgroupArgs(args);
/** show's row ends with " %-16s " of the PNET-ID: 17 blanks when there is none. */
const NO_PNET = ' '.repeat(17);

describe('linkgroup (smc-tools linkgroup.c)', () => {
  it('show: LG-ID %08x, LG-Role and LG-Type %-8s, VLAN %#4x, #Conns %6d, PNET-ID %-16s, with their trailing blanks', () => {
    assert.equal(formatLinkgroups(groups, opts(['show'])), [
      'LG-ID    LG-Role  LG-Type  VLAN  #Conns  PNET-ID ',
      `12345600 SERV     SINGLE      0       3  ${NO_PNET}`,
      `abcdef00 CLNT     NONE        0       0  ${NO_PNET}`,
    ].join('\n'));
    const vlan = formatLinkgroups([{ ...groups[0]!, vlan: 0x1f, pnetId: 'NET1 ' }], opts([]));
    assert.equal(vlan.split('\n')[1], '12345600 SERV     SINGLE   0x1f       3  NET1             ');
  });

  it('link-show: Net-Dev %-15s, Link-State %-15s, #Conns %6d; -d: Link-UID, Peer-UID %08x, IB-Dev %-8s cut to 8, IB-P %4d; -dd: the GIDs', () => {
    assert.equal(formatLinkgroups(groups, opts(['link-show'])), [
      'LG-ID    LG-Role  LG-Type  Net-Dev         Link-State      #Conns  ',
      '12345600 SERV     SINGLE   eth0            LINK_ACTIVE          3  ',
      'abcdef00 CLNT     NONE     a-very-long-int LINK_ACTIVATING      0  ',
    ].join('\n'));
    assert.equal(formatLinkgroups(groups, opts(['-d', 'link-show'])), [
      'LG-ID    LG-Role  LG-Type  Net-Dev         Link-State      #Conns  Link-UID  Peer-UID  IB-Dev    IB-P  ',
      '12345600 SERV     SINGLE   eth0            LINK_ACTIVE          3  12345677  00000000  rxe0         1  ',
      'abcdef00 CLNT     NONE     a-very-long-int LINK_ACTIVATING      0  abcdef42  00000000  rxe_a_lo     1  ',
    ].join('\n'));
    assert.equal(formatLinkgroups(groups, opts(['-dd', 'link-show'])), [
      'LG-ID    LG-Role  LG-Type  Net-Dev         Link-State      #Conns  Link-UID  Peer-UID  IB-Dev    IB-P  Local-GID                                 Peer-GID  ',
      `12345600 SERV     SINGLE   eth0            LINK_ACTIVE          3  12345677  00000000  rxe0         1  ${G1}   ${G2}  `,
      `abcdef00 CLNT     NONE     a-very-long-int LINK_ACTIVATING      0  abcdef42  00000000  rxe_a_lo     1  ${G2}   ${G1}  `,
    ].join('\n'));
    // -dd on show is show's details block, as in linkgroup.c (d_level >= 1).
    assert.equal(linkgroupHeader({ links: false, detail: 2 }), undefined);
  });

  it('-d show: one block per link group, an empty line between them, no header', () => {
    assert.equal(formatLinkgroups(groups, opts(['-d'])), [
      // "PNET-ID  : %s\n" with an empty PNET-ID keeps its blank.
      'LG-ID    : 12345600', 'LG-Role  : SERV', 'LG-Type  : SINGLE', 'VLAN     : 0', 'PNET-ID  : ', 'Version  : 2', '#Conns   : 3', 'Sndbuf   : 3145728 B', 'RMB      : 196608 B',
      '',
      'LG-ID    : abcdef00', 'LG-Role  : CLNT', 'LG-Type  : NONE', 'VLAN     : 0', 'PNET-ID  : ', 'Version  : 2', '#Conns   : 0', 'Sndbuf   : 0 B', 'RMB      : 0 B',
    ].join('\n'));
  });

  it('filters: an LG-ID (or a link UID: the low byte is masked), ibdev and netdev for link-show only; no link groups: nothing at all', () => {
    assert.deepEqual(formatLinkgroups(groups, opts(['show', '12345600'])).split('\n').slice(1), [`12345600 SERV     SINGLE      0       3  ${NO_PNET}`]);
    assert.deepEqual(formatLinkgroups(groups, opts(['abcdef42'])).split('\n').slice(1), [`abcdef00 CLNT     NONE        0       0  ${NO_PNET}`]);
    assert.deepEqual(formatLinkgroups(groups, opts(['show', '0x12345601'])).split('\n').slice(1), [`12345600 SERV     SINGLE      0       3  ${NO_PNET}`]);
    // Not a number: smc-tools takes it as an id that matches nothing; 0 is no filter.
    assert.equal(formatLinkgroups(groups, opts(['show', 'zz'])), 'LG-ID    LG-Role  LG-Type  VLAN  #Conns  PNET-ID ');
    assert.equal(formatLinkgroups(groups, opts(['show', '0'])).split('\n').length, 3);
    assert.equal(formatLinkgroups(groups, opts(['link-show', 'ibdev', 'rxe0'])).split('\n').length, 2);
    assert.equal(formatLinkgroups(groups, opts(['link-show', 'netdev', 'a-very-long-interface'])).split('\n')[1]!.slice(0, 8), 'abcdef00');
    // ibdev with show filters nothing (filter_smcr_item looks at devices for links only).
    assert.equal(formatLinkgroups(groups, opts(['show', 'ibdev', 'rxe9'])).split('\n').length, 3);
    assert.equal(formatLinkgroups([], opts(['show'])), '');
    assert.equal(formatLinkgroups([], opts(['-dd', 'link-show'])), '');
  });

  it('arguments as handle_cmd_params takes them: prefixes, all, one filter, -d/-dd/--details/--ddetails, help', () => {
    assert.deepEqual(opts(['sh', 'all']), { help: false, links: false, detail: 0, lgid: 0, ibdev: '', netdev: '', json: false });
    assert.equal(opts(['l']).links, true);
    assert.equal(opts(['link']).links, true);
    assert.equal(opts(['all']).links, false);
    assert.equal(opts(['-d', 'show']).detail, 1);
    assert.equal(opts(['--details']).detail, 1);
    assert.equal(opts(['-dd', 'l']).detail, 2);
    assert.equal(opts(['--ddetails']).detail, 2);
    assert.equal(opts(['link-show', 'all', 'ibdev', 'rxe0']).ibdev, 'rxe0');
    assert.equal(opts(['show', '1234abcd']).lgid, 0x1234abcd);
    assert.equal(opts(['help']).help, true);
    assert.equal(opts(['show', 'help']).help, true);
    for (const bad of [['show', 'all', '100'], ['show', '100', 'all'], ['link-show', 'ibdev', 'a', 'netdev', 'b'], ['-x'], ['show', 'a', 'b', 'c', 'd']]) {
      assert.throws(() => opts(bad), (e: Error) => e.constructor.name === 'UsageError', bad.join(' '));
    }
  });

  it('ibdev or netdev last without a device: no filter, as handle_cmd_params leaves the name empty', () => {
    assert.deepEqual(opts(['show', 'ibdev']), opts(['show']));
    assert.deepEqual(opts(['link-show', 'ibdev']), opts(['link-show']));
    assert.deepEqual(opts(['link-show', 'netdev']), opts(['link-show']));
    assert.equal(formatLinkgroups(groups, opts(['link-show', 'ibdev'])).split('\n').length, 3);
  });

  it("smc.c's options: -a[bsolute], -ad and -da are taken and leave no details (a later -a undoes -d); an unknown one is smc.c's error", () => {
    for (const a of ['-a', '-ab', '--absolute', '-ad', '-da', '--ad']) assert.equal(opts([a, 'link-show']).detail, 0, a);
    assert.equal(opts(['-d', '-a', 'link-show']).detail, 0);
    assert.equal(opts(['-a', '-dd', 'link-show']).detail, 2);
    assert.equal(opts(['-de']).detail, 1);
    assert.equal(opts(['-dd']).detail, 2);
    for (const [bad, shown] of [['-x', '-x'], ['--frob', '-frob'], ['-dx', '-dx']]) {
      assert.throws(() => opts([bad]), (e: Error) => e.message === `Error: Option "${shown}" is unknown, try "softrdma linkgroup help".`, bad);
    }
    // After '--' everything is an argument: '-d' is an LG-ID there, strtol(16)'s -0xd.
    const after = opts(['--', '-d']);
    assert.equal(after.detail, 0);
    assert.equal(after.lgid, 0xfffffff3);
  });

  it('--json: link-show with ibdev/netdev keeps the groups with a link that passes, with those links only (every link, not the first)', () => {
    const { jsonLinkgroups } = linkgroupModule; // looked up when the test runs
    const two: SmcrLinkGroupStatus = { ...groups[0]!, links: [{ ...groups[0]!.links[0]!, ibDev: 'rxe1', netDev: 'eth1' }, { ...groups[0]!.links[0]!, uid: 0x12345678 }] };
    const both = [two, groups[1]!];
    const byDev = jsonLinkgroups(both, opts(['link-show', 'ibdev', 'rxe0']));
    assert.deepEqual(byDev.map((g) => g.id), [0x12345600]);
    assert.deepEqual(byDev[0]!.links.map((l) => l.uid), [0x12345678]);
    assert.deepEqual(jsonLinkgroups(both, opts(['link-show', 'netdev', 'eth0'])).map((g) => g.links.length), [1]);
    assert.deepEqual(jsonLinkgroups(both, opts(['link-show'])).map((g) => g.links.length), [2, 1]);
    assert.deepEqual(jsonLinkgroups(both, opts(['show', 'abcdef00'])).map((g) => g.id), [0xabcdef00]);
  });

  it('GIDs as smc_gid_be16_convert prints them', () => {
    assert.equal(gidText(Buffer.from('00000000000000000000ffff0a000001', 'hex')), G1);
    assert.equal(gidText(Buffer.from('fe800000000000000211223344556677', 'hex')), 'fe80:0000:0000:0000:0211:2233:4455:6677');
    assert.equal(gidText(undefined), '');
  });

  it('the command: no softrdma process with link groups prints nothing, exit 0; a usage error exits 255 (smc-tools\' exit(-1)); help on stderr, 255', async () => {
    const env = { SOFTRDMA_RUNTIME_DIR: runtime };
    const p = run(['linkgroup', 'link-show'], { env });
    assert.equal(await p.exit(20_000), 0, p.stderr);
    assert.equal(p.stdout, '');
    const q = run(['linkgroup', 'show', 'all', '100'], { env });
    assert.equal(await q.exit(20_000), 255);
    assert.match(q.stderr, /^softrdma linkgroup: unexpected argument '100'\nusage: softrdma linkgroup/);
    const x = run(['linkgroup', '-x'], { env });
    assert.equal(await x.exit(20_000), 255);
    assert.equal(x.stderr, 'Error: Option "-x" is unknown, try "softrdma linkgroup help".\n');
    for (const args of [['help'], ['link-show', 'help']]) {
      const h = run(['linkgroup', ...args], { env });
      assert.equal(await h.exit(20_000), 255, args.join(' '));
      assert.equal(h.stdout, '');
      assert.match(h.stderr, /^usage: softrdma linkgroup /);
    }
    const a = run(['linkgroup', '-ad', 'link-show', 'ibdev'], { env });
    assert.equal(await a.exit(20_000), 0, a.stderr);
  });
});
